//! courier's gob codec (`courier::codec::gob`) against Go's own
//! `encoding/gob` and `net/rpc`: `tests/go/gob_roundtrip` (standard library
//! only) decodes what Rust encoded and compares it with Go values, encodes
//! the same values for Rust to decode, and runs a real net/rpc client and
//! server against gob streams written and read here.
//!
//! The fixtures are the same on both sides, in the same order:
//! `shared()` here, `shared()` in main.go.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use courier::Codec;
use courier::codec::gob::{Complex, Limits, StreamDecoder, StreamEncoder};
use courier_tests::go::{self, GoBinary, GoOutput};
use courier_tests::within;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(400);
const RUN: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Args {
    a: i64,
    b: i64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Request {
    service_method: String,
    seq: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Response {
    service_method: String,
    seq: u64,
    error: String,
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Inner {
    label: String,
    count: i64,
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
enum Color {
    #[default]
    Red,
    Green,
}

/// Go's `Everything`, with Rust names: `i8` is Go's `I8`, `p_inner` its
/// `PInner`, `user_name` its `UserName`; two fields keep Go's
/// initialisms by rename. Go has `GoOnly` (skipped here), Rust has
/// `rust_only` (ignored by Go).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Everything {
    bool: bool,
    i8: i8,
    i16: i16,
    i32: i32,
    i64: i64,
    i: i64,
    u8: u8,
    u16: u16,
    u32: u32,
    u64: u64,
    u: u64,
    ptr: usize,
    f32: f32,
    f64: f64,
    c64: Complex,
    c128: Complex,
    s: String,
    bs: Vec<u8>,
    nested: Inner,
    p_inner: Option<Inner>,
    p_int: Option<i64>,
    nil: Option<Inner>,
    list: Vec<Inner>,
    strings: Vec<String>,
    scores: BTreeMap<String, i64>,
    #[serde(rename = "ByID")]
    by_id: BTreeMap<i64, Inner>,
    grid: [i64; 3],
    #[serde(rename = "UserID")]
    user_id: u64,
    user_name: String,
    color: Color,
    rust_only: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Item {
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Node {
    value: i64,
    next: Option<Box<Node>>,
}

fn inner(label: &str, count: i64) -> Inner {
    Inner { label: label.into(), count }
}

fn everything() -> Everything {
    Everything {
        bool: true,
        i8: -8,
        i16: -16,
        i32: -32,
        i64: i64::MIN,
        i: -1,
        u8: 8,
        u16: 16,
        u32: 32,
        u64: u64::MAX,
        u: 7,
        ptr: 0xdead,
        f32: 1.5,
        f64: -2.25,
        c64: Complex { re: 1.5, im: -0.5 },
        c128: Complex { re: -3.0, im: 4.25 },
        s: "héllo".into(),
        bs: vec![0, 1, 255],
        nested: inner("in", 3),
        p_inner: Some(inner("", 4)),
        p_int: Some(5),
        nil: None,
        list: vec![inner("a", 0), inner("", 2), Inner::default()],
        strings: vec!["x".into(), String::new()],
        scores: [("a".to_owned(), 1), ("zero".to_owned(), 0)].into(),
        by_id: [(-1, inner("neg", 0)), (1, Inner::default())].into(),
        grid: [1, 0, 3],
        user_id: 42,
        user_name: "ada".into(),
        color: Color::Green,
        rust_only: String::new(),
    }
}

fn items() -> Vec<Item> {
    vec![
        Item { name: "a".into(), tags: Vec::new(), score: None },
        Item { name: String::new(), tags: vec!["x".into()], score: Some(0.5) },
    ]
}

fn list() -> Node {
    let three = Node { value: 3, next: None };
    let two = Node { value: 2, next: Some(Box::new(three)) };
    Node { value: 1, next: Some(Box::new(two)) }
}

/// Asserts that a message decodes (in Rust) to one value.
type Check = Box<dyn Fn(&[u8])>;

/// One shared fixture: its name, the message Rust encodes for it, and a
/// check that a message decodes to it.
struct Fixture {
    name: &'static str,
    message: Vec<u8>,
    check: Check,
}

fn fixture<T>(name: &'static str, value: T) -> Fixture
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
{
    let mut message = BytesMut::new();
    Codec::Gob.encode(&value, &mut message).unwrap_or_else(|err| panic!("encode {name}: {err}"));
    let check = Box::new(move |bytes: &[u8]| {
        let decoded: T = Codec::Gob.decode(bytes).unwrap_or_else(|err| panic!("decode {name}: {err}"));
        assert_eq!(decoded, value, "{name}");
        // deserialize_any reads it too.
        let _: serde_json::Value =
            Codec::Gob.decode(bytes).unwrap_or_else(|err| panic!("{name} as JSON: {err}"));
    });
    Fixture { name, message: message.to_vec(), check }
}

/// The fixtures of main.go's `shared()`, in its order.
fn shared() -> Vec<Fixture> {
    vec![
        fixture("args", Args { a: 7, b: 8 }),
        fixture("reply", 56_i64),
        fixture("request", Request { service_method: "Arith.Multiply".into(), seq: 1 }),
        fixture(
            "response",
            Response { service_method: "Arith.Multiply".into(), seq: 1, error: String::new() },
        ),
        fixture(
            "error-response",
            Response { service_method: "Arith.Divide".into(), seq: 2, error: "divide by zero".into() },
        ),
        fixture("everything", everything()),
        fixture("zero", Everything::default()),
        fixture("items", items()),
        fixture("args-again", Args { a: 1, b: 2 }),
        fixture("list", list()),
        fixture("empty", Vec::<i64>::new()),
        fixture("map", BTreeMap::from([("a".to_owned(), 1_i64), ("b".to_owned(), 2)])),
        fixture("bytes", b"raw".to_vec()),
        fixture("floats", [0.25_f64, -1.0]),
    ]
}

async fn gob_roundtrip() -> GoBinary {
    go::build(&go::program("gob_roundtrip")).await.unwrap_or_else(|err| panic!("{err}"))
}

async fn run(binary: &GoBinary, args: &[&str]) -> GoOutput {
    let output = binary.run(args, RUN).await.unwrap_or_else(|err| panic!("{err}"));
    assert!(
        output.status.success() && !output.stdout.contains("FAIL"),
        "gob_roundtrip {args:?} failed ({}):\n{}\n{}",
        output.status,
        output.stdout,
        output.stderr
    );
    output
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("a UTF-8 path").to_owned()
}

/// Every value of a stream, as self-contained messages.
fn values(stream: &[u8]) -> Vec<Bytes> {
    let mut decoder = StreamDecoder::new(Limits::default());
    let mut buf = BytesMut::from(stream);
    let mut values = Vec::new();
    while let Some(value) = decoder.next_value(&mut buf).expect("a valid gob stream") {
        values.push(value);
    }
    assert!(buf.is_empty(), "{} bytes after the last value", buf.len());
    values
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|window| *window == needle).count()
}

#[tokio::test]
async fn values_encoded_in_rust_decode_in_go_as_the_same_go_values() {
    within(LIMIT, "rust to go", async {
        let binary = gob_roundtrip().await;
        let fixtures = shared();
        let mut encoder = StreamEncoder::new();
        let mut stream = BytesMut::new();
        for fixture in &fixtures {
            encoder.write_value(&fixture.message, &mut stream).expect("a self-contained message");
        }
        // Args is defined once although two values (each message its own
        // definition) have it.
        assert_eq!(occurrences(&stream, b"\x04Args"), 1);
        let dir = tempfile::tempdir().expect("temp dir");
        let file = path(dir.path(), "from-rust.gob");
        std::fs::write(&file, &stream).expect("write");
        let output = run(&binary, &["check", &file]).await;
        let ok: Vec<&str> = output.stdout.lines().filter_map(|line| line.strip_prefix("ok ")).collect();
        let names: Vec<&str> = fixtures.iter().map(|fixture| fixture.name).collect();
        assert_eq!(ok, names, "{}", output.stdout);

        // A fresh stream's first value is the self-contained message as it
        // is (Go's decoder reads either).
        let mut buf = BytesMut::new();
        StreamEncoder::new().write_value(&fixtures[0].message, &mut buf).expect("first");
        assert_eq!(&buf[..], &fixtures[0].message[..]);
    })
    .await;
}

#[tokio::test]
async fn values_encoded_in_go_decode_in_rust_as_the_same_rust_values() {
    within(LIMIT, "go to rust", async {
        let binary = gob_roundtrip().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let file = path(dir.path(), "from-go.gob");
        run(&binary, &["emit", &file]).await;
        let stream = std::fs::read(&file).expect("read");
        let values = values(&stream);
        let fixtures = shared();
        assert_eq!(values.len(), fixtures.len() + 4, "shared and Go-only values");
        for (fixture, value) in fixtures.iter().zip(&values) {
            (fixture.check)(value);
        }

        // Go-only: interface values and a GobEncoder (time.Time).
        let go_only = &values[fixtures.len()..];
        #[derive(Debug, PartialEq, Deserialize)]
        struct WithStruct {
            name: String,
            value: Option<Inner>,
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct WithInts {
            name: String,
            value: Vec<i64>,
        }
        #[derive(Debug, Deserialize)]
        struct Stamp {
            when: Vec<u8>,
            n: i64,
        }
        let decode_any = |bytes: &[u8]| -> serde_json::Value { Codec::Gob.decode(bytes).expect("any") };
        assert_eq!(
            Codec::Gob.decode::<WithStruct>(&go_only[0]).expect("any-struct"),
            WithStruct { name: "s".into(), value: Some(inner("dyn", 9)) }
        );
        assert_eq!(decode_any(&go_only[0]), json!({"Name": "s", "Value": {"Label": "dyn", "Count": 9}}));
        assert_eq!(
            Codec::Gob.decode::<WithInts>(&go_only[1]).expect("any-ints"),
            WithInts { name: "i".into(), value: vec![4, 5] }
        );
        assert_eq!(
            Codec::Gob.decode::<WithStruct>(&go_only[2]).expect("any-nil"),
            WithStruct { name: "nil".into(), value: None }
        );
        let stamp: Stamp = Codec::Gob.decode(&go_only[3]).expect("stamp");
        assert_eq!((stamp.when.len(), stamp.n), (15, 1), "time.Time's binary form, version 1");

        write_seed("seed-go-fixtures", &stream);
    })
    .await;
}

#[tokio::test]
async fn a_go_rpc_client_reads_rust_responses_and_its_requests_decode_in_rust() {
    within(LIMIT, "net/rpc client", async {
        let binary = gob_roundtrip().await;
        let dir = tempfile::tempdir().expect("temp dir");
        // What a courier net/rpc server would write: header, then body.
        let mut encoder = StreamEncoder::new();
        let mut responses = BytesMut::new();
        let mut write = |value: &dyn erased::Encode| {
            let message = value.message();
            encoder.write_value(&message, &mut responses).expect("write");
        };
        write(&Response { service_method: "Arith.Multiply".into(), seq: 0, error: String::new() });
        write(&56_i64);
        // An error reply's body is an empty struct, as Go's server sends.
        write(&Response { service_method: "Arith.Divide".into(), seq: 1, error: "divide by zero".into() });
        write(&());
        let (input, output) = (path(dir.path(), "responses.gob"), path(dir.path(), "requests.gob"));
        std::fs::write(&input, &responses).expect("write");
        let out = run(&binary, &["client", &input, &output]).await;
        assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["ok multiply", "ok divide"]);

        let sent = std::fs::read(&output).expect("read");
        write_seed("seed-go-rpc-client", &sent);
        let values = values(&sent);
        assert_eq!(values.len(), 4, "two headers, two bodies");
        let header = |i: usize| Codec::Gob.decode::<Request>(&values[i]).expect("a request header");
        let body = |i: usize| Codec::Gob.decode::<Args>(&values[i]).expect("a request body");
        assert_eq!(header(0), Request { service_method: "Arith.Multiply".into(), seq: 0 });
        assert_eq!(body(1), Args { a: 7, b: 8 });
        assert_eq!(header(2), Request { service_method: "Arith.Divide".into(), seq: 1 });
        assert_eq!(body(3), Args { a: 1, b: 0 });
        // Go defined Request and Args once, on the first call: the second
        // pair's messages carry the definitions again (self-contained).
        assert!(occurrences(&sent, b"Request") == 1 && occurrences(&values[2], b"Request") == 1);
    })
    .await;
}

#[tokio::test]
async fn a_go_rpc_server_answers_requests_encoded_in_rust() {
    within(LIMIT, "net/rpc server", async {
        let binary = gob_roundtrip().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut encoder = StreamEncoder::new();
        let mut requests = BytesMut::new();
        let calls = [("Arith.Multiply", 7, Args { a: 7, b: 8 }), ("Arith.Divide", 8, Args { a: 1, b: 0 })];
        let calls = calls.into_iter().chain([("Arith.Nope", 9, Args { a: 1, b: 1 })]);
        for (method, seq, args) in calls {
            let header = Request { service_method: method.into(), seq };
            for message in [erased::Encode::message(&header), erased::Encode::message(&args)] {
                encoder.write_value(&message, &mut requests).expect("write");
            }
        }
        let (input, output) = (path(dir.path(), "requests.gob"), path(dir.path(), "responses.gob"));
        std::fs::write(&input, &requests).expect("write");
        run(&binary, &["serve", &input, &output]).await;

        let answers = std::fs::read(&output).expect("read");
        write_seed("seed-go-rpc-server", &answers);
        let values = values(&answers);
        assert_eq!(values.len(), 6, "three headers, three bodies");
        // Calls run concurrently: answers come in any order.
        let mut seen = BTreeMap::new();
        for pair in values.chunks(2) {
            let header: Response = Codec::Gob.decode(&pair[0]).expect("a response header");
            let body = if header.error.is_empty() {
                json!(Codec::Gob.decode::<i64>(&pair[1]).expect("a reply"))
            } else {
                // Go's server sends an empty struct after an error.
                Codec::Gob.decode::<()>(&pair[1]).expect("the empty body of an error");
                json!(null)
            };
            seen.insert(header.seq, (header.service_method, header.error, body));
        }
        assert_eq!(seen[&7], ("Arith.Multiply".to_owned(), String::new(), json!(56)));
        assert_eq!(seen[&8], ("Arith.Divide".to_owned(), "divide by zero".to_owned(), json!(null)));
        let (method, error, _) = &seen[&9];
        assert_eq!(method, "Arith.Nope");
        assert!(error.contains("can't find method"), "{error}");
    })
    .await;
}

fn corpus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/gob_decoder")
}

/// With `COURIER_WRITE_CORPUS=1`, keep a stream Go wrote as a seed of the
/// `gob_decoder` fuzz target.
fn write_seed(name: &str, stream: &[u8]) {
    if std::env::var_os("COURIER_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(corpus_dir()).expect("corpus dir");
        std::fs::write(corpus_dir().join(name), stream).expect("write seed");
    }
}

/// The fuzz target's seeds are Go streams: every value in them decodes
/// (into `serde_json::Value`), and a few garbled versions of them fail
/// cleanly. Needs no Go.
#[test]
fn the_go_seeds_of_the_fuzz_corpus_decode() {
    let mut seeds = 0;
    for entry in std::fs::read_dir(corpus_dir()).expect("fuzz/corpus/gob_decoder") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_owned();
        if !name.starts_with("seed-go-") {
            continue;
        }
        seeds += 1;
        let stream = std::fs::read(&path).expect("read");
        for value in values(&stream) {
            let _: serde_json::Value =
                Codec::Gob.decode(&value).unwrap_or_else(|err| panic!("a value of {name}: {err}"));
        }
        let small = Limits { max_message: 256, max_types: 4, max_depth: 4 };
        for cut in (0..stream.len()).step_by(7) {
            let mut garbled = stream.clone();
            garbled[cut] ^= 0x5a;
            let mut decoder = StreamDecoder::new(small);
            let mut buf = BytesMut::from(&garbled[..cut.max(1)]);
            while let Ok(Some(value)) = decoder.next_value(&mut buf) {
                let _ = Codec::Gob.decode::<serde_json::Value>(&value);
            }
        }
    }
    assert!(seeds >= 3, "fuzz/corpus/gob_decoder/ holds {seeds} Go seeds: run with COURIER_WRITE_CORPUS=1");
}

/// Encoding values of different types through one closure.
mod erased {
    use bytes::BytesMut;
    use courier::Codec;
    use serde::Serialize;

    pub(crate) trait Encode {
        fn message(&self) -> Vec<u8>;
    }

    impl<T: Serialize> Encode for T {
        fn message(&self) -> Vec<u8> {
            let mut out = BytesMut::new();
            Codec::Gob.encode(self, &mut out).expect("encode");
            out.to_vec()
        }
    }
}
