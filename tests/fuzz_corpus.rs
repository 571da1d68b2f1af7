//! The decoders are fuzzed (`fuzz/`, cargo-fuzz); this replays every fuzz
//! target's corpus (`fuzz/corpus/<target>/`) and every crash found so far
//! (`fuzz/artifacts/<target>/`, when present) through the very body the
//! target runs, so a normal test run (and CI) catches a regression on any
//! input that ever mattered, without nightly or libfuzzer.
//!
//! The seed corpus is built here from courier's own encoders (valid frames
//! and messages, then truncated, oversized and garbled ones): run with
//! `COURIER_WRITE_CORPUS=1` to write it after changing a wire format. The
//! test fails if a seed is missing from the committed corpus, so the
//! corpus cannot silently drift away from what the encoders produce.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use courier::Codec;
use courier::protocol::native::{
    FrameEncoder, FrameKind, GoAway, PREFACE, RequestHead, ResponseHead, encode_half_close, encode_message,
    encode_ping, encode_window_update,
};

#[path = "../fuzz/bodies/native_decoder.rs"]
mod native_decoder;

#[path = "../fuzz/bodies/grpc_decoder.rs"]
mod grpc_decoder;

#[path = "../fuzz/bodies/json_protocols.rs"]
mod json_protocols;

#[path = "../fuzz/bodies/gob_decoder.rs"]
mod gob_decoder;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file directly in `dir`, sorted; none if it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Run `body` over the corpus and the artifacts of `target`; the inputs
/// that panicked, named by file.
fn replay(target: &str, body: fn(&[u8])) -> (usize, Vec<String>) {
    let corpus = files_in(&fuzz_dir().join("corpus").join(target));
    assert!(
        corpus.len() >= seeds(target).len(),
        "fuzz/corpus/{target}/ holds {} files: write the seeds with COURIER_WRITE_CORPUS=1",
        corpus.len()
    );
    let inputs: Vec<_> =
        corpus.into_iter().chain(files_in(&fuzz_dir().join("artifacts").join(target))).collect();
    let mut panicked = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    (inputs.len(), panicked)
}

fn check(target: &str, body: fn(&[u8])) {
    let (replayed, panicked) = replay(target, body);
    eprintln!("{target}: replayed {replayed} inputs");
    assert!(panicked.is_empty(), "{target} panicked on {} input(s): {panicked:#?}", panicked.len());
}

#[test]
fn the_native_decoder_survives_its_corpus_and_crashes() {
    check("native_decoder", native_decoder::run);
}

#[test]
fn the_grpc_decoder_survives_its_corpus_and_crashes() {
    check("grpc_decoder", grpc_decoder::run);
}

#[test]
fn the_json_protocols_survive_their_corpus_and_crashes() {
    check("json_protocols", json_protocols::run);
}

#[test]
fn the_gob_decoder_survives_its_corpus_and_crashes() {
    // Its seeds are streams Go wrote (tests/gob_codec.rs writes them).
    check("gob_decoder", gob_decoder::run);
}

#[test]
fn the_committed_seed_corpus_is_what_the_encoders_produce() {
    let write = std::env::var_os("COURIER_WRITE_CORPUS").is_some();
    for target in ["native_decoder", "grpc_decoder", "json_protocols"] {
        let dir = fuzz_dir().join("corpus").join(target);
        for (name, data) in seeds(target) {
            let path = dir.join(format!("seed-{name}"));
            if write {
                std::fs::create_dir_all(&dir).expect("create the corpus directory");
                std::fs::write(&path, &data).expect("write a seed");
                continue;
            }
            let committed = std::fs::read(&path).unwrap_or_else(|err| {
                panic!("{}: {err}; write the seeds with COURIER_WRITE_CORPUS=1", path.display())
            });
            assert!(committed == data, "{} differs from what the encoders produce now", path.display());
        }
    }
}

/// The seed inputs of `target`, by name.
fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "native_decoder" => native_seeds(),
        "grpc_decoder" => grpc_seeds(),
        "json_protocols" => json_seeds(),
        // Written by Go (tests/gob_codec.rs), not by courier's encoders.
        "gob_decoder" => Vec::new(),
        other => panic!("no fuzz target {other}"),
    }
}

fn native_frame(kind: FrameKind, call_id: u32, meta: impl FnOnce(&mut BytesMut), body: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let mut frame = FrameEncoder::begin(&mut buf, kind, Codec::Binary.id(), call_id);
    meta(&mut buf);
    frame.end_meta(&buf);
    buf.extend_from_slice(body);
    frame.finish(&mut buf, usize::MAX).expect("a small frame");
    buf.to_vec()
}

fn native_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut args = BytesMut::new();
    Codec::Binary.encode(&(10_i64, 20_i64), &mut args).expect("encode");
    let request = native_frame(
        FrameKind::Request,
        1,
        |buf| {
            RequestHead::encode(
                buf,
                "Calculator.Add",
                Some(std::time::Duration::from_secs(5)),
                [("tenant", "acme")].into_iter(),
            )
        },
        &args,
    );
    let one_way = native_frame(
        FrameKind::OneWay,
        2,
        |buf| RequestHead::encode(buf, "Probe.Record", None, std::iter::empty()),
        &args,
    );
    let ok = native_frame(FrameKind::Response, 1, ResponseHead::encode_ok, &args);
    let error = native_frame(
        FrameKind::Response,
        3,
        |buf| ResponseHead::encode(buf, 5, true, "no such user", b"details", [("retry", "no")].into_iter()),
        b"",
    );
    let goaway = native_frame(
        FrameKind::GoAway,
        0,
        |buf| GoAway { last_call_id: 7, code: 13, message: "restarting" }.encode(buf),
        b"",
    );
    let mut ping = BytesMut::new();
    encode_ping(&mut ping, FrameKind::Ping, *b"keepaliv");
    // A stream: opened, two messages (the last ending the client's half),
    // a grant, a half-close.
    let stream_open = native_frame(
        FrameKind::StreamOpen,
        9,
        |buf| RequestHead::encode(buf, "Feed.Shout", None, std::iter::empty()),
        b"",
    );
    let mut stream = BytesMut::new();
    encode_message(&mut stream, 9, Codec::Json.id(), br#""hello""#, false, 1 << 20).expect("small");
    encode_message(&mut stream, 9, Codec::Json.id(), br#""bye""#, true, 1 << 20).expect("small");
    encode_window_update(&mut stream, 9, 32 * 1024);
    encode_half_close(&mut stream, 9);
    let mut zero_grant = BytesMut::new();
    encode_window_update(&mut zero_grant, 9, 1);
    let last = zero_grant.len() - 1;
    zero_grant[last] = 0; // an increment of zero

    let with_preface = |frames: &[&[u8]]| {
        let mut out = PREFACE.to_vec();
        for frame in frames {
            out.extend_from_slice(frame);
        }
        out
    };
    let mut huge = request.clone();
    huge[..4].copy_from_slice(&(3_u32 << 30).to_be_bytes()); // a payload length of 3 GiB
    let mut meta_past_end = request.clone();
    meta_past_end[12..16].copy_from_slice(&u32::MAX.to_be_bytes()); // metadata longer than the frame
    let mut unknown_kind = ping.to_vec();
    unknown_kind[4] = 0xEE;
    let mut other_version = PREFACE.to_vec();
    other_version[5] = 9;
    let mut garbage = vec![0u8; 512];
    fastrand::Rng::with_seed(0xC0FFEE).fill(&mut garbage);

    vec![
        ("empty", Vec::new()),
        ("preface", PREFACE.to_vec()),
        ("preface-truncated", PREFACE[..5].to_vec()),
        ("preface-other-version", other_version),
        ("request", request.clone()),
        ("request-after-preface", with_preface(&[&request])),
        ("request-truncated", request[..request.len() - 3].to_vec()),
        ("header-only", request[..16].to_vec()),
        ("one-way", one_way.clone()),
        ("response-ok", ok.clone()),
        ("response-error", error),
        ("goaway", goaway.clone()),
        ("ping", ping.to_vec()),
        ("several-frames", [request.clone(), one_way, ok, goaway, ping.to_vec()].concat()),
        ("stream", [stream_open.clone(), stream.to_vec()].concat()),
        ("stream-open", stream_open),
        ("window-update-zero", zero_grant.to_vec()),
        ("payload-3gib", huge),
        ("metadata-past-end", meta_past_end),
        ("unknown-kind", unknown_kind),
        ("garbage", garbage),
        ("all-ff", vec![0xFF; 64]),
    ]
}

fn grpc_message(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    courier::protocol::grpc::encode_message(&mut buf, compressed, message).expect("a small message");
    buf.to_vec()
}

fn grpc_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use courier::protocol::grpc::gzip;
    let json = grpc_message(false, br#"{"a":1,"b":2}"#);
    let gzipped = grpc_message(true, &gzip(br#"{"message":"hello","payload":"AAEC"}"#));
    // 1 MiB of zeros in a few hundred bytes: over the body's 64 KiB limit.
    let bomb = grpc_message(true, &gzip(&vec![0u8; 1 << 20]));
    let mut huge = json.clone();
    huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut bad_flag = json.clone();
    bad_flag[0] = 7;
    vec![
        ("empty", Vec::new()),
        ("message-json", json.clone()),
        ("message-gzip", gzipped),
        ("message-gzip-bomb", bomb),
        ("message-not-gzip", grpc_message(true, b"plain text, not gzip")),
        ("two-messages", [json.clone(), grpc_message(false, b"")].concat()),
        ("message-truncated", json[..json.len() - 2].to_vec()),
        ("prefix-only", json[..3].to_vec()),
        ("length-4gib", huge),
        ("unknown-flag", bad_flag),
        ("timeout-ms", b"100m".to_vec()),
        ("timeout-hours", b"99999999H".to_vec()),
        ("timeout-bad-unit", b"12Q".to_vec()),
        ("content-type-json", b"application/grpc+json".to_vec()),
        ("content-type-proto", b"application/grpc;charset=utf-8".to_vec()),
        ("percent-encoded-message", b"caf%C3%A9 %E2%9C%93 %zz %".to_vec()),
        ("invalid-utf8", vec![0xC3, 0x28, 0xFF, 0xFE]),
    ]
}

fn json_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let deep = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000));
    vec![
        ("empty", Vec::new()),
        ("request", br#"{"method":"Calculator.Add","params":[{"a":1,"b":2}],"id":1}"#.to_vec()),
        ("request-bare-param", br#"{"method":"Kv.Get","params":["k1"],"id":"x"}"#.to_vec()),
        ("notification", br#"{"method":"Probe.Record","params":[3],"id":null}"#.to_vec()),
        (
            "requests-pipelined",
            b"{\"method\":\"A.B\",\"params\":[],\"id\":1}\n{\"method\":\"A.C\",\"params\":[{}],\"id\":2}\n"
                .to_vec(),
        ),
        ("request-truncated", br#"{"method":"Calculator.Add","params":[{"a":1,"#.to_vec()),
        ("strings-with-braces", br#"{"method":"A.B","params":["}{\"\\"],"id":1}"#.to_vec()),
        ("go-style-args", br#"{"A":1,"NAME":"x","List":[{"k":1.5},{"j":-2e300}]}"#.to_vec()),
        ("args-wrong-types", br#"{"a":"1","name":7,"list":{}}"#.to_vec()),
        ("deep-nesting", deep.into_bytes()),
        (
            "object-over-limit",
            format!(r#"{{"method":"A.B","params":["{}"],"id":1}}"#, "x".repeat(5_000)).into_bytes(),
        ),
        ("http1", b"POST /Calculator/Add HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_vec()),
        ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("native-preface", PREFACE.to_vec()),
        ("invalid-utf8", b"{\"method\":\"\xff\xfe\",\"id\":1}".to_vec()),
        ("numbers", br#"[1e999,-0,0.0000001,18446744073709551616,-9223372036854775809]"#.to_vec()),
    ]
}
