//! A server protects itself, whatever its peers do: a cap on connections,
//! progress timeouts for requests that stop arriving (on every protocol),
//! and a memory budget across every request being received and every call
//! in flight. Each test also checks that the peers who behave keep being
//! served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier::protocol::native::{Frame, FrameDecoder, FrameKind, GoAway, PREFACE, ResponseHead};
use courier::{Code, Codec};
use courier_tests::{ChildServer, ProbeClient, h2_client, start_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;

/// A native frame header.
fn header(kind: FrameKind, payload_len: u32, call_id: u32, meta_len: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(&[kind as u8, 0, Codec::Binary.id(), 0]);
    out.extend_from_slice(&call_id.to_be_bytes());
    out.extend_from_slice(&meta_len.to_be_bytes());
    out
}

/// The start of a native request to `Probe.Echo` whose body will be
/// `body_len` bytes: the header and the metadata, none of the body.
fn request_start(call_id: u32, body_len: usize) -> Vec<u8> {
    let mut meta = BytesMut::new();
    courier::protocol::native::RequestHead::encode(&mut meta, "Probe.Echo", None, std::iter::empty());
    let payload = u32::try_from(meta.len() + body_len).expect("fits");
    let mut out = header(FrameKind::Request, payload, call_id, u32::try_from(meta.len()).expect("fits"));
    out.extend_from_slice(&meta);
    out
}

/// A raw connection, for peers that misbehave on purpose.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Raw { stream, buf: BytesMut::new() }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(Duration::from_secs(30), self.stream.write_all(bytes))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Read until the server closes, up to `timeout`; the bytes it sent, or
    /// `None` if it was still open.
    async fn until_closed(&mut self, timeout: Duration) -> Option<Bytes> {
        let closed = tokio::time::timeout(timeout, async {
            loop {
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        closed.ok().map(|()| self.buf.split().freeze())
    }

    /// The next native frame within `timeout` (the server's preface
    /// skipped), or `None` if none came.
    async fn frame(&mut self, timeout: Duration) -> Option<Frame> {
        let decoder = FrameDecoder::new(32 * MIB);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.buf.starts_with(&PREFACE) {
                let _ = self.buf.split_to(PREFACE.len());
            }
            if (self.buf.len() >= PREFACE.len() || !PREFACE.starts_with(&self.buf))
                && let Some(frame) = decoder.decode(&mut self.buf).expect("valid frames")
            {
                return Some(frame);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }
}

fn goaway_of(bytes: &[u8]) -> Option<(u32, String)> {
    let mut buf = BytesMut::from(bytes);
    if buf.starts_with(&PREFACE) {
        let _ = buf.split_to(PREFACE.len());
    }
    let decoder = FrameDecoder::new(MIB);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        if frame.header.kind == FrameKind::GoAway {
            let goaway = GoAway::decode(&frame.meta).expect("goaway metadata");
            return Some((goaway.code, goaway.message.to_owned()));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_connection_cap_a_server_closes_new_connections_at_once_and_serves_the_open_ones() {
    let (server, _) = start_server(|b| b.max_connections(10)).await;
    let addr = server.local_addr();
    let probe = ProbeClient::connect(addr.to_string()).await.expect("connect");
    assert_eq!(probe.echo("first".into()).await.expect("call"), "first");
    // Nine more, established and quiet (a native preface, then nothing).
    let mut quiet = Vec::new();
    for _ in 0..9 {
        let mut raw = Raw::connect(addr).await;
        raw.send(&PREFACE).await.expect("preface");
        quiet.push(raw);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats().connections_open < 10 {
        assert!(Instant::now() < deadline, "10 connections open: {:?}", server.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // At the cap: new connections are closed at once, not left hanging.
    for _ in 0..5 {
        let mut extra = Raw::connect(addr).await;
        let _ = extra.send(&PREFACE).await;
        let started = Instant::now();
        assert!(
            extra.until_closed(Duration::from_secs(3)).await.is_some(),
            "a connection over the cap is closed at once"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    assert!(server.stats().connections_refused >= 5, "{:?}", server.stats());
    // The open ones are still served.
    for i in 0..20 {
        assert_eq!(probe.echo(format!("again {i}")).await.expect("still served"), format!("again {i}"));
    }
    // Below the cap again, new clients are served.
    drop(quiet);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stats().connections_open > 1 {
        assert!(Instant::now() < deadline, "the quiet connections closed: {:?}", server.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let later = ProbeClient::connect(addr.to_string()).await.expect("connect below the cap");
    assert_eq!(later.echo("later".into()).await.expect("served"), "later");
}

/// A server with short request timeouts: a 300 ms stall, 1.5 s in all (a
/// high minimum rate, so a trickle earns no extra time).
async fn impatient_server() -> courier::ServerHandle {
    start_server(|b| {
        b.request_stall_timeout(Duration::from_millis(300))
            .request_timeout(Duration::from_millis(1500))
            .request_min_rate(1 << 30)
    })
    .await
    .0
}

/// Send `bytes` one at a time, `every` apart, until the server closes the
/// connection; how long that took, or `None` if it never did (all sent).
async fn trickle(raw: &mut Raw, bytes: &[u8], every: Duration) -> Option<Duration> {
    let started = Instant::now();
    for byte in bytes {
        if raw.stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            return Some(started.elapsed());
        }
        let mut scratch = [0u8; 4096];
        match tokio::time::timeout(every, raw.stream.read(&mut scratch)).await {
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(n)) => raw.buf.extend_from_slice(&scratch[..n]),
            Err(_) => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_request_that_stops_or_trickles_closes_its_connection_and_idle_ones_stay() {
    let server = impatient_server().await;
    let addr = server.local_addr();
    let probe = ProbeClient::connect(addr.to_string()).await.expect("connect");

    // Half a request, then nothing: closed after the stall timeout.
    let mut stalled = Raw::connect(addr).await;
    stalled.send(&PREFACE).await.expect("preface");
    let mut half = request_start(1, 100);
    half.extend_from_slice(&[0; 10]);
    stalled.send(&half).await.expect("half a request");
    let started = Instant::now();
    let sent = stalled.until_closed(Duration::from_secs(10)).await.expect("closed");
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the stall timeout");
    let (code, message) = goaway_of(&sent).expect("a goaway says why");
    assert_eq!(code, Code::DeadlineExceeded.as_u32(), "{message}");
    assert!(message.contains("no byte of the request arrived"), "{message}");

    // A byte every 100 ms never stalls, but is cut off near 1.5 s in all.
    let mut trickling = Raw::connect(addr).await;
    trickling.send(&PREFACE).await.expect("preface");
    let mut slow = request_start(2, 1000);
    slow.extend(std::iter::repeat_n(0u8, 1000));
    let took = trickle(&mut trickling, &slow, Duration::from_millis(100)).await.expect("cut off");
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(10), "{took:?}");
    let rest = trickling.until_closed(Duration::from_secs(5)).await.unwrap_or_default();
    trickling.buf.extend_from_slice(&rest);
    let (_, message) = goaway_of(&trickling.buf).expect("a goaway says why");
    assert!(message.contains("still incomplete after"), "{message}");

    // Idle between requests is not limited: a quiet connection long past
    // both timeouts still answers.
    let mut idle = Raw::connect(addr).await;
    idle.send(&PREFACE).await.expect("preface");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut whole = request_start(3, 2);
    whole.extend_from_slice(&[1, b'x']); // postcard "x"
    idle.send(&whole).await.expect("a request after idling");
    let reply = idle.frame(Duration::from_secs(5)).await.expect("answered after idling");
    assert_eq!(reply.header.kind, FrameKind::Response);
    assert_eq!(ResponseHead::decode(&reply.meta).expect("head").code, 0);

    assert_eq!(probe.echo("bystander".into()).await.expect("served throughout"), "bystander");
    assert!(server.stats().requests_timed_out >= 2, "{:?}", server.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_rpc_request_that_stops_or_trickles_is_refused_and_idle_ones_stay() {
    let server = impatient_server().await;
    let addr = server.local_addr();

    let mut stalled = Raw::connect(addr).await;
    stalled.send(br#"{"method":"Probe.Echo","params":["#).await.expect("half a request");
    let sent = stalled.until_closed(Duration::from_secs(10)).await.expect("closed");
    let reply: serde_json::Value =
        serde_json::from_slice(sent.split(|b| *b == b'\n').next().unwrap_or_default()).expect("a JSON reply");
    assert!(reply["id"].is_null(), "{reply}");
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("no byte of the request arrived")), "{reply}");

    let mut trickling = Raw::connect(addr).await;
    let slow = format!(r#"{{"method":"Probe.Echo","params":["{}"],"id":1}}"#, "x".repeat(200));
    let took = trickle(&mut trickling, slow.as_bytes(), Duration::from_millis(100)).await.expect("cut off");
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(10), "{took:?}");

    // A Go client's idle connection (a newline after each request).
    let mut idle = Raw::connect(addr).await;
    idle.send(b"{\"method\":\"Probe.Echo\",\"params\":[\"a\"],\"id\":1}\n").await.expect("request");
    tokio::time::sleep(Duration::from_secs(2)).await;
    idle.send(b"{\"method\":\"Probe.Echo\",\"params\":[\"b\"],\"id\":2}\n").await.expect("request");
    let mut replies = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while replies.lines().count() < 2 {
        let mut scratch = [0u8; 1024];
        let n = tokio::time::timeout_at(deadline, idle.stream.read(&mut scratch))
            .await
            .expect("both answered")
            .expect("read");
        assert!(n > 0, "the idle connection was closed: {replies}");
        replies.push_str(&String::from_utf8_lossy(&scratch[..n]));
    }
    assert!(replies.contains(r#""result":"b""#), "{replies}");
    assert!(server.stats().requests_timed_out >= 2, "{:?}", server.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_whose_head_or_body_stops_is_closed() {
    let server = impatient_server().await;
    let addr = server.local_addr();

    // Half a head.
    let mut head = Raw::connect(addr).await;
    head.send(b"POST /Probe/Echo HTTP/1.1\r\nHost: x\r\n").await.expect("half a head");
    let started = Instant::now();
    head.until_closed(Duration::from_secs(10)).await.expect("closed");
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the stall timeout");

    // The head, then half the body.
    let mut body = Raw::connect(addr).await;
    body.send(b"POST /Probe/Echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n\"0123")
        .await
        .expect("send");
    let sent = body.until_closed(Duration::from_secs(10)).await.expect("closed");
    let text = String::from_utf8_lossy(&sent);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("no byte of the request arrived"), "{text}");

    // A trickled body is cut off near the timeout.
    let mut trickling = Raw::connect(addr).await;
    trickling
        .send(b"POST /Probe/Echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .expect("head");
    let took = trickle(&mut trickling, &[b'x'; 1000], Duration::from_millis(100)).await.expect("cut off");
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(10), "{took:?}");
    assert!(String::from_utf8_lossy(&trickling.buf).contains("still incomplete after"));

    // Kept alive and idle between requests: fine.
    let mut idle = Raw::connect(addr).await;
    let request = b"POST /Probe/Echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n\"a\"";
    idle.send(request).await.expect("request");
    tokio::time::sleep(Duration::from_secs(2)).await;
    idle.send(request).await.expect("a second request after idling");
    let mut answers = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while answers.matches("HTTP/1.1 200").count() < 2 {
        let mut scratch = [0u8; 1024];
        let n = tokio::time::timeout_at(deadline, idle.stream.read(&mut scratch))
            .await
            .expect("both answered")
            .expect("read");
        assert!(n > 0, "closed while idle: {answers}");
        answers.push_str(&String::from_utf8_lossy(&scratch[..n]));
    }
    assert!(server.stats().requests_timed_out >= 3, "{:?}", server.stats());
}

/// Start a gRPC call to `Probe.Echo` (JSON) whose one message declares
/// `declared` bytes; the stream is left open.
async fn grpc_start(
    client: &h2::client::SendRequest<Bytes>,
    declared: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let request = http::Request::builder()
        .method("POST")
        .uri("http://test/Probe/Echo")
        .header("content-type", "application/grpc+json")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let mut ready = client.clone().ready().await.expect("ready");
    let (response, mut stream) = ready.send_request(request, false).expect("send");
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&u32::try_from(declared).expect("fits").to_be_bytes());
    stream.send_data(Bytes::from(prefix), false).expect("prefix");
    (response, stream)
}

/// The gRPC status of a finished response.
async fn grpc_status(response: h2::client::ResponseFuture) -> (u32, String) {
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("answered in time");
    let response = match response {
        Ok(response) => response,
        Err(err) => return (u32::MAX, format!("stream error: {err}")),
    };
    let (parts, mut body) = response.into_parts();
    let mut headers = parts.headers;
    if !headers.contains_key("grpc-status") {
        while let Some(chunk) = body.data().await {
            if let Ok(chunk) = chunk {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
        }
        headers = body.trailers().await.ok().flatten().unwrap_or_default();
    }
    let code = headers.get("grpc-status").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(u32::MAX);
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (code, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_request_body_that_stops_resets_its_stream_and_the_connection_carries_on() {
    let server = impatient_server().await;
    let addr = server.local_addr();
    let client = h2_client(addr).await;
    // The h2 client answers the server's pings by itself: the connection
    // is alive, only the request is stuck.
    let (response, mut stream) = grpc_start(&client, 100).await;
    stream.send_data(Bytes::from_static(b"\"0123"), false).expect("part of the message");
    let started = Instant::now();
    let (code, message) = grpc_status(response).await;
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the stall timeout");
    assert_eq!(code, Code::DeadlineExceeded.as_u32(), "{message}");
    assert!(message.contains("no byte of the request arrived"), "{message}");

    // The same connection serves a whole call afterwards.
    let (response, mut stream) = grpc_start(&client, 3).await;
    stream.send_data(Bytes::from_static(b"\"a\""), true).expect("the message");
    assert_eq!(grpc_status(response).await.0, 0);
    assert!(server.stats().requests_timed_out >= 1, "{:?}", server.stats());
}

/// `len` bytes of JSON string content, sent in chunks within the stream's
/// flow-control window; stops early (`false`) if the server resets it.
async fn grpc_send(stream: &mut h2::SendStream<Bytes>, len: usize) -> bool {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut left = len;
    while left > 0 {
        let want = left.min(chunk.len());
        stream.reserve_capacity(want);
        let granted = match tokio::time::timeout(
            Duration::from_secs(30),
            std::future::poll_fn(|cx| stream.poll_capacity(cx)),
        )
        .await
        {
            Ok(Some(Ok(granted))) => granted,
            _ => return false,
        };
        if granted == 0 {
            continue;
        }
        if stream.send_data(chunk.slice(..granted.min(want)), false).is_err() {
            return false;
        }
        left -= granted.min(want);
    }
    true
}

const BUDGET: usize = 160 * MIB;
const MESSAGE: usize = 15 * MIB;

/// A server in its own process (so its memory can be measured) with a
/// 160 MiB budget and request timeouts too long to interfere.
fn budgeted_server() -> ChildServer {
    let binary = env!("CARGO_BIN_EXE_courier-test-server");
    ChildServer::start_with(
        binary,
        "127.0.0.1:0".parse().expect("addr"),
        &[
            "--memory-budget",
            &BUDGET.to_string(),
            "--request-stall-ms",
            "60000",
            "--request-timeout-ms",
            "600000",
        ],
    )
}

/// With the flood held: a well-behaved client is served, the server stayed
/// inside its budget; once the flood goes, a 15 MiB call fits again.
async fn check_budget_held(child: &ChildServer, side: &ProbeClient, baseline_kib: u64, flood: impl Send) {
    for i in 0..50 {
        assert_eq!(side.echo(format!("during {i}")).await.expect("served"), format!("during {i}"));
    }
    let grown_kib = child.rss_kib().saturating_sub(baseline_kib);
    eprintln!(
        "with the flood held, the server grew by {} MiB (budget {} MiB)",
        grown_kib / 1024,
        BUDGET / MIB
    );
    let allowed_kib = (BUDGET + 64 * MIB) as u64 / 1024;
    assert!(grown_kib < allowed_kib, "the server grew by {grown_kib} KiB, over its budget");
    drop(flood);
    let big = "y".repeat(MESSAGE - 64);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match side.echo(big.clone()).await {
            Ok(echoed) => {
                assert_eq!(echoed.len(), big.len());
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("a 15 MiB call after the flood: {status}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_connections_holding_unfinished_15_mib_requests_stay_within_the_memory_budget() {
    let child = budgeted_server();
    let addr = child.addr;
    let side = ProbeClient::connect(addr.to_string()).await.expect("connect");
    assert_eq!(side.echo("before".into()).await.expect("call"), "before");
    let baseline_kib = child.rss_kib();

    // 100 connections, each sending all but the last byte of a 15 MiB
    // request: 40 native, 30 JSON-RPC, 30 HTTP/JSON.
    let payload = Bytes::from(vec![b'x'; MESSAGE]);
    let mut senders = tokio::task::JoinSet::new();
    for i in 0..100u32 {
        let payload = payload.clone();
        senders.spawn(async move {
            let mut raw = Raw::connect(addr).await;
            let native = i % 10 < 4;
            let jsonrpc = (4..7).contains(&(i % 10));
            let start: Vec<u8> = if native {
                let mut start = PREFACE.to_vec();
                start.extend_from_slice(&request_start(1, MESSAGE));
                start
            } else if jsonrpc {
                br#"{"method":"Probe.Echo","params":[""#.to_vec()
            } else {
                format!("POST /Probe/Echo HTTP/1.1\r\nHost: x\r\nContent-Length: {MESSAGE}\r\n\r\n\"")
                    .into_bytes()
            };
            // The body is one byte short of complete.
            let rest = if native { MESSAGE - 1 } else { MESSAGE - 2 };
            let sent = raw.send(&start).await.is_ok() && raw.send(&payload[..rest]).await.is_ok();
            // Refused: an error reply (native: for its call, and the
            // connection goes on; JSON-RPC and HTTP then close). Held: silence.
            let refused = if native {
                match raw.frame(Duration::from_secs(3)).await {
                    Some(frame) => {
                        assert_eq!(frame.header.kind, FrameKind::Response);
                        let head = ResponseHead::decode(&frame.meta).expect("head");
                        assert_eq!(head.code, Code::ResourceExhausted.as_u32(), "{}", head.message);
                        assert!(head.message.contains("memory budget"), "{}", head.message);
                        true
                    }
                    None => false,
                }
            } else {
                match raw.until_closed(Duration::from_secs(3)).await {
                    // A refusal closes the connection; its reply is lost
                    // only if our writing was cut short by the close.
                    Some(bytes) => {
                        let text = String::from_utf8_lossy(&bytes);
                        assert!(text.contains("memory budget") || !sent, "{text}");
                        true
                    }
                    None => false,
                }
            };
            (refused, raw)
        });
    }
    let mut held = 0;
    let mut flood = Vec::new();
    while let Some(joined) = senders.join_next().await {
        let (refused, raw) = joined.expect("sender");
        if !refused {
            held += 1;
        }
        flood.push(raw);
    }
    let fits = BUDGET / MESSAGE;
    eprintln!("{held} of 100 connections' requests held, the rest refused");
    assert!((3..=fits).contains(&held), "{held} of 100 requests held; {fits} fit the budget");
    check_budget_held(&child, &side, baseline_kib, flood).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_grpc_streams_holding_unfinished_15_mib_messages_stay_within_the_memory_budget() {
    let child = budgeted_server();
    let addr = child.addr;
    let side = ProbeClient::connect(addr.to_string()).await.expect("connect");
    assert_eq!(side.echo("before".into()).await.expect("call"), "before");
    let baseline_kib = child.rss_kib();

    let client = h2_client(addr).await;
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let client = client.clone();
        streams.spawn(async move {
            let (response, mut stream) = grpc_start(&client, MESSAGE).await;
            let sent_all = grpc_send(&mut stream, MESSAGE - 1).await;
            (response, stream, sent_all)
        });
    }
    let mut held = Vec::new();
    while let Some(joined) = streams.join_next().await {
        let (response, stream, sent_all) = joined.expect("stream task");
        if sent_all {
            held.push((response, stream));
        } else {
            let (code, message) = grpc_status(response).await;
            assert_eq!(code, Code::ResourceExhausted.as_u32(), "{message}");
            assert!(message.contains("memory budget"), "{message}");
        }
    }
    let fits = BUDGET / MESSAGE;
    eprintln!("{} of 100 streams held, the rest refused", held.len());
    assert!((3..=fits).contains(&held.len()), "{} of 100 streams held; {fits} fit the budget", held.len());
    check_budget_held(&child, &side, baseline_kib, (held, client)).await;
}

/// The test server in a child process under `ulimit -n files`, its log
/// (stderr) written to a file; killed when dropped.
struct LimitedChild {
    child: std::process::Child,
    addr: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl LimitedChild {
    fn start(files: u32, extra: &[&str]) -> LimitedChild {
        use std::io::BufRead;
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let mut child = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_courier-test-server"))
            .arg("127.0.0.1:0")
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(log.reopen().expect("the log file"))
            .spawn()
            .expect("spawn the test server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let addr = line.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            panic!("the server did not start: {line:?}");
        };
        LimitedChild { child, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for LimitedChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connect a new client and make one call, within `timeout`.
async fn fresh_call(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let client = ProbeClient::connect(addr.to_string()).await.map_err(|err| err.to_string())?;
        client.echo("fresh".into()).await.map_err(|status| status.to_string())?;
        Ok(())
    };
    tokio::time::timeout(timeout, attempt).await.unwrap_or_else(|_| Err("no answer in time".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_stalled_connections_under_a_low_open_file_limit_locks_nobody_out_for_long() {
    // 256 descriptors; by default the cap leaves some spare (224 here).
    let child = LimitedChild::start(256, &["--request-stall-ms", "5000", "--request-timeout-ms", "8000"]);
    let addr = child.addr;
    let side = ProbeClient::connect(addr.to_string()).await.expect("connect");
    assert_eq!(side.echo("before".into()).await.expect("call"), "before");

    // 300 connections that send `{` and nothing more.
    let flooded = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..300 {
        let mut raw = Raw::connect(addr).await;
        let _ = raw.send(b"{").await;
        flood.push(raw);
    }
    // What follows must happen while the flood holds (its requests stall
    // for 5 s before they are closed).
    assert!(flooded.elapsed() < Duration::from_secs(3), "the flood took {:?} to start", flooded.elapsed());
    // While they hold the server at its cap: the open connection is served,
    // and a new client is refused at once rather than left hanging.
    for i in 0..10 {
        assert_eq!(side.echo(format!("during {i}")).await.expect("still served"), format!("during {i}"));
    }
    let started = Instant::now();
    let refused = fresh_call(addr, Duration::from_secs(10)).await;
    assert!(refused.is_err(), "a new client during the flood is refused");
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once, not after {:?}", started.elapsed());
    let log = child.log();
    assert!(log.contains("at its connection cap"), "the refusals are logged: {log}");

    // The stalled requests are closed within the request timeouts; then
    // every new client is served.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut served = 0;
    while served < 10 {
        assert!(Instant::now() < deadline, "only {served} of 10 new clients served");
        match fresh_call(addr, Duration::from_secs(5)).await {
            Ok(()) => served += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(child.log().contains("no byte of the request arrived"), "the timeouts are logged");
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_server_says_so_refuses_at_once_and_serves_the_open_connections() {
    // A cap above what the descriptors allow: accept itself fails (EMFILE).
    let child = LimitedChild::start(64, &["--max-connections", "10000"]);
    let addr = child.addr;
    let side = ProbeClient::connect(addr.to_string()).await.expect("connect");
    assert_eq!(side.echo("before".into()).await.expect("call"), "before");
    let mut quiet = Vec::new();
    for _ in 0..80 {
        let mut raw = Raw::connect(addr).await;
        let _ = raw.send(&PREFACE).await;
        quiet.push(raw);
    }
    // Connections past the descriptors are closed at once (with the
    // descriptor kept in reserve), not left in the listen queue.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed = 0;
    for raw in &mut quiet {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(50));
        if raw.until_closed(left.min(Duration::from_millis(500))).await.is_some() {
            closed += 1;
        }
    }
    assert!(closed >= 10, "only {closed} of 80 connections were closed");
    for i in 0..10 {
        assert_eq!(side.echo(format!("during {i}")).await.expect("still served"), format!("during {i}"));
    }
    let log = child.log();
    assert!(log.contains("out of file descriptors"), "accept errors are logged: {log}");
    // Give the descriptors back: new clients are served again.
    drop(quiet);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fresh_call(addr, Duration::from_secs(5)).await.is_err() {
        assert!(Instant::now() < deadline, "no new client served after the flood");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
