//! Go's default `net/rpc` against courier, both ways, with real Go programs
//! (standard library only, Debian's `golang-go`):
//!
//! - `netrpc_client`: `rpc.Dial` and `rpc.DialHTTP` clients calling a
//!   courier server: `client.Call`, `client.Go`, 100 goroutines x 100
//!   calls on one client, a struct of every kind of value echoed, errors as
//!   `rpc.ServerError` strings, unknown services and methods.
//! - `netrpc_server`: a Go server (`rpc.ServeConn`, `rpc.HandleHTTP`,
//!   `jsonrpc.ServeConn`) that courier's client calls over gob, gob over
//!   HTTP and JSON-RPC.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use courier::codec::gob::Complex;
use courier::{Channel, Code, Status};
use courier_tests::go::{self, GoBinary};
use serde::{Deserialize, Serialize};

/// Every test, the first Go build included: a hang fails its test.
const LIMIT: Duration = Duration::from_secs(300);

/// Go's `Args{X, Y int}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Args {
    x: i64,
    y: i64,
}

/// Go's `Inner`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Inner {
    name: String,
    tags: Vec<String>,
}

/// Go's `Everything`: nested structs, slices, maps, pointers (`Option`)
/// and every basic type; field names as Rust writes them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Everything {
    b: bool,
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
    uptr: u64,
    f32: f32,
    f64: f64,
    c64: Complex,
    c128: Complex,
    s: String,
    bytes: Vec<u8>,
    inner: Inner,
    ptr: Option<Inner>,
    nums: Vec<i64>,
    inners: Vec<Inner>,
    map: HashMap<String, i64>,
    nested: HashMap<String, Vec<Inner>>,
    nil: Option<Inner>,
}

/// What Go's `full()` builds, in Rust.
fn full() -> Everything {
    let inner = |name: &str, tags: &[&str]| Inner {
        name: name.to_owned(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    };
    Everything {
        b: true,
        i8: -8,
        i16: -1600,
        i32: -320_000,
        i64: -1 << 62,
        i: -42,
        u8: 255,
        u16: 65535,
        u32: 1 << 31,
        u64: u64::MAX,
        u: 7,
        uptr: 0xdead_beef,
        f32: 1.5,
        f64: -2.25e300,
        c64: Complex { re: 1.5, im: -2.0 },
        c128: Complex { re: -3.25, im: 4e100 },
        s: "héllo, 世界".to_owned(),
        bytes: vec![0, 1, 2, 255],
        inner: inner("in", &["a", "b"]),
        ptr: Some(inner("pointed", &["p"])),
        nums: vec![1, -2, 3, 0],
        inners: vec![inner("first", &[]), inner("", &["only tags"]), inner("third", &["x", ""])],
        map: [("one".to_owned(), 1), ("zero".to_owned(), 0), ("minus".to_owned(), -1)].into(),
        nested: [("k".to_owned(), vec![inner("n1", &[]), inner("n2", &["t"])])].into(),
        nil: None,
    }
}

/// The classic `ServiceA`, served by courier to Go's clients.
#[courier::service(name = "ServiceA")]
pub trait ServiceA {
    /// `X + Y`.
    async fn add(&self, args: Args) -> i64;
    /// `X / Y`, or Go's error string.
    async fn divide(&self, args: Args) -> Result<i64, Status>;
    /// The value it was sent.
    async fn echo(&self, value: Everything) -> Everything;
}

struct ServiceAImpl;

impl ServiceA for ServiceAImpl {
    async fn add(&self, args: Args) -> i64 {
        args.x.wrapping_add(args.y)
    }

    async fn divide(&self, args: Args) -> Result<i64, Status> {
        args.x.checked_div(args.y).ok_or_else(|| Status::invalid_argument("division by zero"))
    }

    async fn echo(&self, value: Everything) -> Everything {
        value
    }
}

/// Go's reply to `Divide`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quotient {
    quo: i64,
    rem: i64,
}

/// The Go server's `ServiceA`, as courier's client sees it.
#[courier::service(name = "ServiceA")]
pub trait GoServiceA {
    /// `X + Y`.
    async fn add(&self, args: Args) -> i64;
    /// `X / Y` and `X % Y`.
    async fn divide(&self, args: Args) -> Result<Quotient, Status>;
    /// The value it was sent.
    async fn echo(&self, value: Everything) -> Everything;
    /// Go's `%+v` of the value it decoded.
    async fn describe(&self, value: Everything) -> String;
    /// Not on the Go server.
    async fn nope(&self, args: Args) -> i64;
}

async fn build(name: &str) -> GoBinary {
    go::build(&go::program(name)).await.unwrap_or_else(|err| panic!("{err}"))
}

async fn courier_server() -> courier::ServerHandle {
    courier::Server::builder()
        .add_service(ServiceAServer::new(ServiceAImpl))
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start()
}

/// Run the Go client against a courier server in `mode`, and check it
/// passed every check.
async fn go_client_calls_courier(mode: &str) {
    let (client, server) = tokio::join!(build("netrpc_client"), courier_server());
    let addr = server.local_addr().to_string();
    let out = client.run(&["-addr", &addr, "-mode", mode], Duration::from_secs(120)).await.expect("run");
    assert!(out.status.success(), "the Go client ({mode}) failed:\n{}\n{}", out.stdout, out.stderr);
    for check in ["call", "go", "concurrent", "echo", "errors", "done"] {
        assert!(out.stdout.lines().any(|line| line == format!("ok {check}")), "{check} in:\n{}", out.stdout);
    }
    // Unknown names are said in Go's words, with what the server offers.
    assert!(out.stdout.contains("unknown method: rpc: can't find method ServiceA.Nope"), "{}", out.stdout);
    assert!(out.stdout.contains("Add, Divide, Echo"), "the offered methods are named: {}", out.stdout);
    assert!(out.stdout.contains("unknown service: rpc: can't find service Nope.Add"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_rpc_dial_client_calls_courier_over_gob() {
    tokio::time::timeout(LIMIT, go_client_calls_courier("tcp")).await.expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_rpc_dial_http_client_calls_courier_after_connect() {
    tokio::time::timeout(LIMIT, go_client_calls_courier("http")).await.expect("within the limit");
}

/// The Go server's address for each of its wires.
async fn go_server(binary: &GoBinary) -> (go::GoProcess, HashMap<String, String>) {
    let mut process = binary.spawn(&[]).expect("start the Go server");
    let mut addrs = HashMap::new();
    loop {
        let line = process.next_line(Duration::from_secs(30)).await.expect("a line").expect("not closed");
        if line == "ready" {
            return (process, addrs);
        }
        let (wire, addr) = line.split_once(' ').expect("`<wire> <addr>`");
        addrs.insert(wire.to_owned(), addr.to_owned());
    }
}

/// Calls every method of the Go server over `channel`.
async fn call_the_go_server(channel: Channel, wire: &str, everything: bool) {
    let client = GoServiceAClient::new(channel);
    assert_eq!(client.add(Args { x: 7, y: 8 }).await.expect("add"), 15, "{wire}");
    assert_eq!(client.add(Args { x: 0, y: 0 }).await.expect("add zeros"), 0, "{wire}");
    assert_eq!(
        client.divide(Args { x: 17, y: 5 }).await.expect("divide"),
        Quotient { quo: 3, rem: 2 },
        "{wire}"
    );
    let err = client.divide(Args { x: 1, y: 0 }).await.expect_err("division by zero");
    assert_eq!((err.code(), err.message()), (Code::Unknown, "division by zero"), "{wire}: Go's own error");
    let err = client.nope(Args { x: 1, y: 1 }).await.expect_err("no such method");
    assert_eq!(err.code(), Code::Unimplemented, "{wire}: {err}");
    assert!(err.message().starts_with("rpc: can't find method ServiceA.Nope"), "{wire}: {err}");
    // Many calls in flight at once, on the channel's connections.
    let client = Arc::new(client);
    let tasks: Vec<_> = (0..100)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    assert_eq!(client.add(Args { x: task, y: i }).await.expect("concurrent add"), task + i);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("no task failed");
    }
    if everything {
        for sent in [
            full(),
            Everything::default(),
            Everything { s: "only".into(), nums: vec![0], ..Default::default() },
        ] {
            assert_eq!(
                client.echo(sent.clone()).await.expect("echo"),
                sent,
                "{wire}: the value came back whole"
            );
        }
        // Go's own reading of what Rust sent, to rule out a symmetric bug.
        let described = client.describe(full()).await.expect("describe");
        for part in
            ["B:true", "I8:-8", "U64:18446744073709551615", "C128:(-3.25+4e+100i)", "Bytes:[0 1 2 255]"]
        {
            assert!(described.contains(part), "{part} in Go's view: {described}");
        }
        assert!(described.contains("ptr=&{Name:pointed Tags:[p]}"), "{described}");
        assert!(described.contains("Nil:<nil>"), "{described}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_calls_a_go_net_rpc_server_over_gob_gob_over_http_and_jsonrpc() {
    tokio::time::timeout(LIMIT, async {
        let binary = build("netrpc_server").await;
        let (_server, addrs) = go_server(&binary).await;
        let gob = Channel::builder(addrs["gob"].clone()).go_rpc().connect().await.expect("connect over gob");
        assert_eq!(gob.target(), format!("gorpc://{}", addrs["gob"]));
        call_the_go_server(gob, "gob", true).await;
        let http = Channel::builder(addrs["http"].clone()).go_rpc_http().connect().await.expect("CONNECT");
        call_the_go_server(http, "gob over HTTP", true).await;
        // JSON has no complex numbers and writes []byte as base64: the
        // values every JSON-RPC client can send.
        let json = Channel::builder(addrs["jsonrpc"].clone()).go_jsonrpc().connect().await.expect("connect");
        call_the_go_server(json, "jsonrpc", false).await;
        // Gob over HTTP to a port that is not Go's HTTP handler fails at
        // the handshake, saying why.
        let connected = Channel::builder(addrs["gob"].clone())
            .go_rpc_http()
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await;
        let Err(err) = connected else { panic!("a plain gob port completed an HTTP handshake") };
        assert!(err.to_string().contains("no answer to `CONNECT /_goRPC_`"), "{err}");
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_or_oversized_gob_stream_closes_its_connection_only() {
    tokio::time::timeout(LIMIT, async {
        let (client, server) = tokio::join!(build("netrpc_client"), courier_server());
        let addr = server.local_addr();
        let raw = move |bytes: Vec<u8>| {
            tokio::task::spawn_blocking(move || {
                let mut stream = std::net::TcpStream::connect(addr).expect("connect");
                stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                stream.write_all(&bytes).expect("write");
                let mut answer = Vec::new();
                // The server closes: read to the end.
                let _ = stream.read_to_end(&mut answer);
                answer
            })
        };
        // A gob stream's start (the definition of Go's rpc.Request), then
        // a message that claims 2^40 bytes: refused before any is buffered.
        let mut oversized = b"\x2f\xff\x81\x03\x01\x01\x07Request\x01\xff\x82\x00\x01\x02\x01\x0dServiceMethod\x01\x0c\x00\x01\x03Seq\x01\x06\x00\x00\x00".to_vec();
        oversized.extend_from_slice(&[0xfa, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00]);
        // The same start, then bytes that are not gob.
        let mut garbage = oversized[..oversized.len() - 7].to_vec();
        garbage.extend_from_slice(&[0x05, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let (oversized, garbage) = tokio::join!(raw(oversized), raw(garbage));
        // Go's server says nothing to such a stream; neither does courier.
        assert_eq!(oversized.expect("closed"), b"", "nothing is answered to an oversized stream");
        assert_eq!(garbage.expect("closed"), b"", "nothing is answered to garbage");
        // Everyone else is still served.
        let out = client.run(&["-addr", &addr.to_string(), "-mode", "tcp"], Duration::from_secs(120)).await.expect("run");
        assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    })
    .await
    .expect("within the limit");
}
