//! `courier-bench gob`: courier's gob codec against the `gobwire` crate on
//! the same values, as a connection carries them (type definitions once,
//! then values): nanoseconds per value to encode and to decode, medians of
//! several runs, in this process.
//!
//! courier's path is the one its Go net/rpc adapters take per value: serde
//! into a self-contained message (`Codec::Gob`), then the connection's
//! `StreamEncoder` (definitions it has sent are dropped, ids renumbered);
//! reading, the connection's `StreamDecoder` cuts a self-contained message
//! and `Codec::Gob` decodes it into the serde type. gobwire encodes and
//! decodes its own derive's types straight on the stream.

use std::time::Instant;

use bytes::BytesMut;
use courier::Codec;
use courier::codec::gob::{Limits, StreamDecoder, StreamEncoder};
use gobwire::Gob;
use serde::{Deserialize, Serialize};

use crate::systems::BoxError;

/// Go's `Args{X, Y int}`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Gob)]
struct Args {
    #[gob(name = "X")]
    x: i64,
    #[gob(name = "Y")]
    y: i64,
}

/// A record of the usual shapes.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Gob)]
struct Record {
    #[gob(name = "Id")]
    id: i64,
    #[gob(name = "Name")]
    name: String,
    #[gob(name = "Tags")]
    tags: Vec<String>,
    #[gob(name = "Scores")]
    scores: Vec<f64>,
    #[gob(name = "Inner")]
    inner: Args,
    #[gob(name = "Data")]
    data: Vec<u8>,
}

fn record(n: i64) -> Record {
    Record {
        id: n,
        name: format!("record number {n}"),
        tags: vec!["alpha".into(), "beta".into(), "gamma".into()],
        scores: vec![1.5, 2.25, -3.0, 1e9],
        inner: Args { x: n, y: -n },
        data: vec![7; 64],
    }
}

/// Values per run, and runs per measurement.
const VALUES: usize = 20_000;
const RUNS: usize = 7;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// courier: ns per value to encode, to decode.
fn courier<T>(values: &[T]) -> Result<(f64, f64), BoxError>
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let (mut encode, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut encoder = StreamEncoder::new();
        let mut stream = BytesMut::new();
        let mut message = BytesMut::new();
        for value in values {
            message.clear();
            Codec::Gob.encode(value, &mut message)?;
            encoder.write_value(&message, &mut stream)?;
        }
        encode.push(started.elapsed().as_nanos() as f64 / values.len() as f64);
        let started = Instant::now();
        let mut decoder = StreamDecoder::new(Limits::default());
        let mut decoded = 0;
        while let Some(message) = decoder.next_value(&mut stream)? {
            let value: T = Codec::Gob.decode(&message)?;
            if decoded == 0 && value != values[0] {
                return Err(format!("courier decoded {value:?}").into());
            }
            decoded += 1;
        }
        decode.push(started.elapsed().as_nanos() as f64 / values.len() as f64);
        if decoded != values.len() {
            return Err(format!("courier decoded {decoded} of {} values", values.len()).into());
        }
    }
    Ok((median(encode), median(decode)))
}

/// gobwire: ns per value to encode, to decode.
fn gobwire<T>(values: &[T]) -> Result<(f64, f64), BoxError>
where
    T: gobwire::Encode + gobwire::Decode + Default + PartialEq + std::fmt::Debug,
{
    let (mut encode, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut encoder = gobwire::Encoder::new();
        let mut stream = Vec::new();
        for value in values {
            encoder.encode_into(value, &mut stream)?;
        }
        encode.push(started.elapsed().as_nanos() as f64 / values.len() as f64);
        let started = Instant::now();
        let mut decoder = gobwire::Decoder::new();
        let mut rest = &stream[..];
        let mut decoded = 0;
        while let Some((width, len)) = gobwire::parse_length_prefix(rest)? {
            let body = rest.get(width..width + len).ok_or("truncated")?;
            rest = &rest[width + len..];
            if decoder.push_message(body)? == gobwire::Progress::Ready {
                let value: T = decoder.decode()?;
                if decoded == 0 && value != values[0] {
                    return Err(format!("gobwire decoded {value:?}").into());
                }
                decoded += 1;
            }
        }
        decode.push(started.elapsed().as_nanos() as f64 / values.len() as f64);
        if decoded != values.len() {
            return Err(format!("gobwire decoded {decoded} of {} values", values.len()).into());
        }
    }
    Ok((median(encode), median(decode)))
}

/// The Markdown table.
pub(crate) fn run() -> Result<String, BoxError> {
    let args: Vec<Args> = (0..VALUES as i64).map(|n| Args { x: n, y: n * 3 }).collect();
    let records: Vec<Record> = (0..VALUES as i64).map(record).collect();
    let mut out = String::from(
        "ns per value, median of 7 runs of 20,000 values on one stream\n\n\
         | value | courier encode | gobwire encode | courier decode | gobwire decode |\n|---|---:|---:|---:|---:|\n",
    );
    for (name, ours, theirs) in [
        ("Args{X, Y int}", courier(&args)?, gobwire(&args)?),
        ("Record (strings, slices, nested struct, bytes)", courier(&records)?, gobwire(&records)?),
    ] {
        out.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            ours.0, theirs.0, ours.1, theirs.1
        ));
    }
    Ok(out)
}
