//! One port, every protocol: the same services over the native protocol,
//! gRPC, JSON-RPC and HTTP/JSON, at once; malformed input in each protocol
//! costs only its own connection or call; protocols can be switched off.
//! (Peers in other languages are in `polyglot.rs`.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier::{Channel, Code, Codec, Protocol};
use courier_tests::interop::{EchoRequest, InteropClient};
use courier_tests::{Bystander, CalcError, CalculatorClient, ProbeClient, start_server};
use http::{HeaderMap, Request};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn grpc_channel(addr: SocketAddr) -> Channel {
    Channel::builder(addr.to_string()).grpc().connect().await.expect("gRPC connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serde_services_answer_over_grpc_json() {
    let (server, state) = start_server(|b| b).await;
    let channel = grpc_channel(server.local_addr()).await;
    let calc = CalculatorClient::new(channel.clone());
    assert_eq!(calc.add(10, 50).await.expect("add"), 60);
    let err = calc.div(1.0, 0.0).await.expect_err("division by zero");
    assert_eq!(err.app_error::<CalcError>(), Some(&CalcError::DivisionByZero), "{err}");
    let probe = ProbeClient::new(channel);
    assert_eq!(
        probe.with_metadata("x-token", "abc").header("x-token".into()).await.expect("header"),
        Some("abc".into())
    );
    // Metadata HTTP/2 cannot carry (connection-specific headers) is left
    // out rather than failing the call, or the connection.
    let probe_keep_alive = probe.with_metadata("keep-alive", "timeout=5");
    assert_eq!(probe_keep_alive.header("keep-alive".into()).await.expect("still called"), None);
    let err = probe.fail(5, "no such thing".into()).await.expect_err("fails");
    assert_eq!((err.code(), err.message()), (Code::NotFound, "no such thing"));
    let err = probe.with_timeout(Duration::from_millis(50)).sleep(2000).await.expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(state.wait_until(Duration::from_secs(2), |s| s.dropped() == 1).await, "the handler was dropped");
    let big = probe.sized(4 << 20).await.expect("4 MiB");
    assert_eq!(big.len(), 4 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proto_service_answers_natively_and_over_grpc_in_protobuf_and_json() {
    let (server, _) = start_server(|b| b).await;
    let addr = server.local_addr();
    let native = InteropClient::connect(addr.to_string()).await.expect("connect");
    let grpc = InteropClient::new(grpc_channel(addr).await);
    for client in [native.clone(), native.with_codec(Codec::Json), grpc.clone(), grpc.with_codec(Codec::Json)]
    {
        let reply = client
            .with_metadata("x-k", "v")
            .echo(EchoRequest { message: "m".into(), payload: vec![1, 2], echo_metadata: vec!["x-k".into()] })
            .await
            .expect("echo");
        assert_eq!((reply.message.as_str(), reply.payload.as_slice()), ("m", &[1u8, 2][..]));
        assert_eq!(reply.metadata.get("x-k").map(String::as_str), Some("v"));
    }
    // A serde service refuses protobuf with a clear reason.
    let err = ProbeClient::connect(addr.to_string())
        .await
        .expect("connect")
        .with_codec(Codec::Protobuf)
        .echo("x".into())
        .await
        .expect_err("protobuf is for .proto services");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}

/// A JSON-RPC connection driven by hand.
struct JsonRpc {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl JsonRpc {
    async fn connect(addr: SocketAddr) -> JsonRpc {
        JsonRpc { stream: TcpStream::connect(addr).await.expect("connect"), buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next reply, or `None` once the server closes.
    async fn reply(&mut self) -> Option<Value> {
        loop {
            let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            if let Some(Ok(value)) = values.next() {
                let end = values.byte_offset();
                self.buf.drain(..end);
                return Some(value);
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("the server answers or closes within 5 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn call(&mut self, method: &str, params: Value, id: u64) -> Value {
        let request = json!({"method": method, "params": [params], "id": id}).to_string();
        self.send(request.as_bytes()).await;
        self.reply().await.expect("a reply")
    }
}

/// One HTTP/1.1 request on a kept-alive connection, by hand.
async fn http_post(stream: &mut TcpStream, path: &str, body: &str) -> (u16, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        assert!(n > 0, "the server closed a kept-alive connection");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some((head, rest)) = text.split_once("\r\n\r\n") else { continue };
        let length: usize = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse().ok())
            .expect("a content-length");
        if rest.len() >= length {
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
            return (status, rest[..length].to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_four_protocols_at_once_on_one_port() {
    let (server, _) = start_server(|b| b).await;
    let addr = server.local_addr();
    const CALLS: i64 = 200;
    let native = tokio::spawn(async move {
        let calc = CalculatorClient::connect(addr.to_string()).await.expect("connect");
        for i in 0..CALLS {
            assert_eq!(calc.add(i, 1).await.expect("native add"), i + 1);
        }
    });
    let grpc = tokio::spawn(async move {
        let calc = CalculatorClient::new(grpc_channel(addr).await);
        for i in 0..CALLS {
            assert_eq!(calc.add(i, 2).await.expect("gRPC add"), i + 2);
        }
    });
    let jsonrpc = tokio::spawn(async move {
        let mut rpc = JsonRpc::connect(addr).await;
        for i in 0..CALLS {
            let reply = rpc.call("Calculator.Add", json!({"a": i, "b": 3}), i as u64).await;
            assert_eq!(reply, json!({"id": i, "result": i + 3, "error": null}));
        }
    });
    let http = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        for i in 0..CALLS {
            let (status, body) =
                http_post(&mut stream, "/Calculator/Add", &format!(r#"{{"a":{i},"b":4}}"#)).await;
            assert_eq!((status, body), (200, (i + 4).to_string()));
        }
    });
    for task in [native, grpc, jsonrpc, http] {
        task.await.expect("every call of every protocol succeeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_bad_requests_cost_one_reply_and_bad_streams_one_connection() {
    let (server, _) = start_server(|b| b).await;
    let addr = server.local_addr();
    let bystander = Bystander::start(addr).await;
    let mut rpc = JsonRpc::connect(addr).await;
    // A complete object that is not valid JSON: an error reply, and the
    // connection goes on.
    rpc.send(br#"{"method": Calculator.Add, "id": 1}"#).await;
    let reply = rpc.reply().await.expect("an error reply");
    assert_eq!(reply["id"], Value::Null);
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("invalid JSON")), "{reply}");
    assert_eq!(rpc.call("Calculator.Add", json!({"a": 1, "b": 2}), 2).await["result"], 3);
    // No method: an error with the request's id.
    rpc.send(br#"{"params": [1], "id": 3}"#).await;
    assert_eq!(rpc.reply().await.expect("reply")["id"], 3);
    // Not an object at all: the stream cannot be resynchronised.
    rpc.send(b"]]] not json").await;
    let reply = rpc.reply().await.expect("an error reply before the close");
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("expected a JSON object")), "{reply}");
    assert!(rpc.reply().await.is_none(), "then the connection closes");
    bystander.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_answers_what_go_clients_can_read() {
    let (server, state) = start_server(|b| b).await;
    let mut rpc = JsonRpc::connect(server.local_addr()).await;
    // Go's client fails a reply whose result is null and whose error is
    // null; a method returning nothing answers `{}`.
    let reply = rpc.call("Probe.Record", json!(7), 2).await;
    assert_eq!(reply, json!({"id": 2, "result": {}, "error": null}));
    assert!(state.wait_until(Duration::from_secs(5), |s| s.recorded() == [7]).await);
    let reply = rpc.call("Probe.Fail", json!({"code": 5, "message": "no such thing"}), 3).await;
    assert_eq!(reply, json!({"id": 3, "result": null, "error": "no such thing"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_rpc_client_that_stops_reading_holds_no_call_slots_and_is_let_go() {
    // A client asks for 3,000 replies of 16 KiB and reads none. Buffers
    // take a few MiB of them; the rest wait. Waiting replies must not keep
    // the server's call slots (1,100 here) from other clients, the server
    // must stop reading the client's requests once 1,024 replies wait, and
    // once its replies have not moved for a keepalive interval the client
    // is disconnected.
    let (server, _) =
        start_server(|b| b.max_concurrent_calls(1100).keepalive_interval(Some(Duration::from_secs(1)))).await;
    let addr = server.local_addr();
    let bystander = Bystander::start(addr).await;
    // A small receive buffer (loopback's can otherwise grow to 32 MiB and
    // hold every reply).
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    const ASKS: usize = 3000;
    let asking = tokio::spawn(async move {
        for id in 0..ASKS {
            let request = format!(r#"{{"method":"Probe.Sized","params":[16384],"id":{id}}}"#);
            if write.write_all(request.as_bytes()).await.is_err() {
                return id;
            }
        }
        ASKS
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe = ProbeClient::connect(addr.to_string()).await.expect("connect");
    for i in 0..20 {
        let text = format!("meanwhile {i}");
        assert_eq!(probe.echo(text.clone()).await.expect("the server still has slots"), text);
    }
    // The stalled connection is closed: what it can still read ends.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server let the stalled connection go");
    let replies = received.iter().filter(|&&b| b == b'\n').count();
    assert!(replies < ASKS, "{replies} replies: the server kept answering a client that did not read");
    let _ = asking.await;
    bystander.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http_connection_stays_usable_past_the_handshake_timeout() {
    let (server, _) = start_server(|b| b.handshake_timeout(Duration::from_millis(300))).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.expect("connect");
    assert_eq!(http_post(&mut stream, "/Calculator/Add", r#"{"a":1,"b":2}"#).await, (200, "3".to_owned()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(http_post(&mut stream, "/Calculator/Add", r#"{"a":2,"b":2}"#).await, (200, "4".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_in_every_protocol() {
    let (server, _) = start_server(|b| b.max_frame_size(64 * 1024)).await;
    let addr = server.local_addr();
    let bystander = Bystander::start(addr).await;
    let big = "x".repeat(100 * 1024);

    // gRPC: the call fails, the connection lives on.
    let grpc =
        Channel::builder(addr.to_string()).grpc().max_frame_size(1 << 20).connect().await.expect("connect");
    let probe = ProbeClient::new(grpc);
    let err = probe.echo(big.clone()).await.expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert_eq!(probe.echo("small".into()).await.expect("the connection still works"), "small");

    // JSON-RPC: an error, then the close.
    let mut rpc = JsonRpc::connect(addr).await;
    rpc.send(format!(r#"{{"method":"Probe.Echo","params":["{big}"],"id":1}}"#).as_bytes()).await;
    let reply = rpc.reply().await.expect("an error reply");
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("exceeds the limit")), "{reply}");
    assert!(rpc.reply().await.is_none());

    // HTTP: 413.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let (status, body) = http_post(&mut stream, "/Probe/Echo", &format!("\"{big}\"")).await;
    assert_eq!(status, 413, "{body}");
    bystander.finish().await;
}

/// A bare HTTP/2 client, to send what courier's own client never would.
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Send one gRPC request with `body` as its raw bytes; returns the
/// response headers, the body bytes and the trailers.
async fn raw_grpc(
    client: &h2::client::SendRequest<Bytes>,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (http::response::Parts, Bytes, HeaderMap) {
    let mut request = Request::builder().method("POST").uri(format!("http://test{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(()).expect("request");
    let mut client = client.clone().ready().await.expect("ready");
    let (response, mut stream) = client.send_request(request, false).expect("send");
    // The server may answer, and close the stream, before reading the body
    // (an unknown method, a content type it does not speak): then sending
    // fails and the answer is still there to read.
    let _ = stream.send_data(body, true);
    let response =
        tokio::time::timeout(Duration::from_secs(5), response).await.expect("in time").expect("response");
    let (parts, mut recv) = response.into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("chunk");
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await.expect("trailers").unwrap_or_default();
    (parts, data.freeze(), trailers)
}

fn grpc_status(parts: &http::response::Parts, trailers: &HeaderMap) -> (u32, String) {
    let headers = if parts.headers.contains_key("grpc-status") { &parts.headers } else { trailers };
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("grpc-status");
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (code, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_fails_the_call_or_the_connection_only() {
    let (server, _) = start_server(|b| b).await;
    let addr = server.local_addr();
    let bystander = Bystander::start(addr).await;
    let grpc_bystander = ProbeClient::new(grpc_channel(addr).await);
    let client = h2_client(addr).await;
    let json = [("content-type", "application/grpc+json")];

    // A message prefix cut short.
    let (parts, _, trailers) = raw_grpc(&client, "/Probe/Echo", &json, Bytes::from_static(&[0, 0, 0])).await;
    let (code, message) = grpc_status(&parts, &trailers);
    assert_eq!(code, Code::Internal.as_u32(), "{message}");
    assert!(message.contains("short"), "{message}");
    // A prefix declaring more than the limit.
    let (parts, _, trailers) =
        raw_grpc(&client, "/Probe/Echo", &json, Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff])).await;
    assert_eq!(grpc_status(&parts, &trailers).0, Code::ResourceExhausted.as_u32());
    // A flag that is neither 0 nor 1.
    let (parts, _, trailers) =
        raw_grpc(&client, "/Probe/Echo", &json, Bytes::from_static(&[9, 0, 0, 0, 2, b'"', b'"'])).await;
    assert_eq!(grpc_status(&parts, &trailers).0, Code::Internal.as_u32());
    // Invalid JSON in a valid frame.
    let (parts, _, trailers) =
        raw_grpc(&client, "/Probe/Echo", &json, Bytes::from_static(&[0, 0, 0, 0, 3, b'{', b'{', b'{'])).await;
    assert_eq!(grpc_status(&parts, &trailers).0, Code::InvalidArgument.as_u32());
    // An unsupported compression.
    let headers = [("content-type", "application/grpc+json"), ("grpc-encoding", "br")];
    let (parts, _, trailers) =
        raw_grpc(&client, "/Probe/Echo", &headers, Bytes::from_static(&[0, 0, 0, 0, 0])).await;
    assert_eq!(grpc_status(&parts, &trailers).0, Code::Unimplemented.as_u32());
    // Not gRPC at all.
    let (parts, _, _) =
        raw_grpc(&client, "/Probe/Echo", &[("content-type", "text/html")], Bytes::new()).await;
    assert_eq!(parts.status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // An unknown method, and a path that is not a method.
    let (parts, _, trailers) =
        raw_grpc(&client, "/Probe/Nope", &json, Bytes::from_static(&[0, 0, 0, 0, 0])).await;
    assert_eq!(grpc_status(&parts, &trailers).0, Code::Unimplemented.as_u32());
    let (parts, _, trailers) = raw_grpc(&client, "/nothing", &json, Bytes::new()).await;
    assert_eq!(grpc_status(&parts, &trailers).0, Code::Unimplemented.as_u32());
    // The same connection still works after all that.
    let (parts, body, trailers) =
        raw_grpc(&client, "/Probe/Echo", &json, Bytes::from_static(&[0, 0, 0, 0, 4, b'"', b'o', b'k', b'"']))
            .await;
    assert_eq!(grpc_status(&parts, &trailers).0, 0);
    assert_eq!(&body[5..], b"\"ok\"");

    // Bad HTTP/2 frames: the connection ends, and nothing else.
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
    // A SETTINGS frame one byte long (settings come in sixes): a
    // connection error in HTTP/2.
    raw.write_all(&[0, 0, 1, 4, 0, 0, 0, 0, 0, 7]).await.expect("garbage");
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the server closes a connection sending bad frames");
    assert_eq!(
        grpc_bystander.echo("still here".into()).await.expect("other gRPC clients go on"),
        "still here"
    );
    bystander.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_lists_services_and_health_watch_ends_at_shutdown() {
    let (server, _) = start_server(|b| b).await;
    let addr = server.local_addr();
    let client = h2_client(addr).await;
    let proto = [("content-type", "application/grpc")];
    // ServerReflectionRequest { list_services: "" } is field 7, empty.
    let (parts, body, trailers) = raw_grpc(
        &client,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        &proto,
        Bytes::from_static(&[0, 0, 0, 0, 2, 0x3a, 0]),
    )
    .await;
    assert_eq!(grpc_status(&parts, &trailers).0, 0);
    let text = String::from_utf8_lossy(&body);
    for service in
        ["interop.Interop", "Calculator", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]
    {
        assert!(text.contains(service), "{service} in {text:?}");
    }

    // Health.Watch: SERVING now, NOT_SERVING when the shutdown begins, then
    // the stream ends so the drain does not wait for it.
    let request = Request::builder()
        .method("POST")
        .uri("http://test/grpc.health.v1.Health/Watch")
        .header("content-type", "application/grpc")
        .body(())
        .expect("request");
    let mut sender = client.clone().ready().await.expect("ready");
    let (response, mut stream) = sender.send_request(request, false).expect("send");
    stream.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true).expect("body");
    let mut recv = response.await.expect("response").into_body();
    let first = recv.data().await.expect("a message").expect("data");
    assert_eq!(&first[..], &[0, 0, 0, 0, 2, 0x08, 1], "SERVING");
    // And a reflection stream a tool holds open: it ends UNAVAILABLE.
    let request = Request::builder()
        .method("POST")
        .uri("http://test/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        .header("content-type", "application/grpc")
        .body(())
        .expect("request");
    let mut sender = client.clone().ready().await.expect("ready");
    let (reflection, mut asking) = sender.send_request(request, false).expect("send");
    asking.send_data(Bytes::from_static(&[0, 0, 0, 0, 2, 0x3a, 0]), false).expect("ask");
    let mut reflection = reflection.await.expect("response").into_body();
    let answer = reflection.data().await.expect("an answer").expect("data");
    assert!(answer.len() > 5, "a list of services");
    let started = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    while let Some(chunk) = reflection.data().await {
        chunk.expect("data");
    }
    let trailers = reflection.trailers().await.expect("trailers").expect("some");
    assert_eq!(trailers["grpc-status"], "14", "UNAVAILABLE: {trailers:?}");
    let mut rest = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        rest.extend_from_slice(&chunk.expect("data"));
    }
    assert_eq!(&rest[..], &[0, 0, 0, 0, 2, 0x08, 2], "NOT_SERVING");
    let trailers = recv.trailers().await.expect("trailers").expect("some");
    assert_eq!(trailers["grpc-status"], "0");
    shutdown.await.expect("join").expect("graceful shutdown");
    assert!(started.elapsed() < Duration::from_secs(5), "the watch did not hold up the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_that_asks_without_reading_gets_no_more_than_its_window() {
    // A reflection stream asked 300,000 times by a client that never reads
    // an answer: the server must stop taking requests once the client's
    // window is full of answers, not buffer 300,000 answers.
    let (server, _) = start_server(|b| b).await;
    let addr = server.local_addr();
    let bystander = Bystander::start(addr).await;
    // h2 guards against peers sending many small frames the application
    // leaves unread; this client leaves them unread on purpose.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) =
        h2::client::Builder::new().data_frame_budget(1 << 30).handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::builder()
        .method("POST")
        .uri("http://test/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        .header("content-type", "application/grpc")
        .body(())
        .expect("request");
    let mut sender = client.clone().ready().await.expect("ready");
    let (response, mut stream) = sender.send_request(request, false).expect("send");
    let mut response = Some(response);
    const ASKS: usize = 300_000;
    let batch: Bytes = [0u8, 0, 0, 0, 2, 0x3a, 0].repeat(1000).into();
    let mut sent = 0;
    let mut stalled = false;
    while sent < ASKS {
        stream.reserve_capacity(batch.len());
        let granted = tokio::time::timeout(Duration::from_secs(1), async {
            while stream.capacity() < batch.len() {
                match std::future::poll_fn(|task| stream.poll_capacity(task)).await {
                    Some(Ok(_)) => {}
                    other => {
                        let response = response.take().expect("once").await.expect("response");
                        let (parts, mut body) = response.into_parts();
                        while let Some(Ok(_)) = body.data().await {}
                        panic!("the stream failed: {other:?} {parts:?} {:?}", body.trailers().await)
                    }
                }
            }
        })
        .await;
        if granted.is_err() {
            stalled = true;
            break;
        }
        stream.send_data(batch.clone(), false).expect("send");
        sent += 1000;
    }
    assert!(stalled, "the server kept reading requests while no answer could be sent");
    assert!(sent * 7 <= 2 << 20, "{sent} requests were taken in before the server stopped");
    // Once the client reads, every request taken in is answered.
    let mut recv = response.expect("unread").await.expect("response").into_body();
    let mut answers = 0;
    let mut decoder = BytesMut::new();
    while answers < sent {
        let chunk = tokio::time::timeout(Duration::from_secs(10), recv.data())
            .await
            .expect("answers keep coming")
            .expect("more data")
            .expect("data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        decoder.extend_from_slice(&chunk);
        while decoder.len() >= 5 {
            let len = u32::from_be_bytes([decoder[1], decoder[2], decoder[3], decoder[4]]) as usize;
            if decoder.len() < 5 + len {
                break;
            }
            let _ = decoder.split_to(5 + len);
            answers += 1;
        }
    }
    assert_eq!(answers, sent);
    bystander.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocols_can_be_switched_off_and_strangers_are_closed() {
    let (server, _) =
        start_server(|b| b.disable_protocol(Protocol::JsonRpc).handshake_timeout(Duration::from_millis(300)))
            .await;
    let addr = server.local_addr();
    let mut rpc = JsonRpc::connect(addr).await;
    rpc.send(br#"{"method":"Calculator.Add","params":[{"a":1,"b":2}],"id":1}"#).await;
    assert!(rpc.reply().await.is_none(), "JSON-RPC is off: closed without an answer");
    let calc = CalculatorClient::connect(addr.to_string()).await.expect("native is on");
    assert_eq!(calc.add(1, 2).await.expect("add"), 3);

    // A client that says nothing is closed after the handshake timeout…
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut sink)).await.expect("closed").ok();
    assert!(started.elapsed() < Duration::from_secs(2), "closed after {:?}", started.elapsed());
    // …and one speaking something else at once.
    let mut stranger = TcpStream::connect(addr).await.expect("connect");
    stranger.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.expect("write");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), stranger.read_to_end(&mut sink)).await.expect("closed").ok();
    assert!(started.elapsed() < Duration::from_millis(250));

    let (grpc_only, _) = start_server(|b| b.protocols([Protocol::Grpc])).await;
    assert!(CalculatorClient::connect(grpc_only.local_addr().to_string()).await.is_err(), "native is off");
    let calc = CalculatorClient::new(grpc_channel(grpc_only.local_addr()).await);
    assert_eq!(calc.add(2, 2).await.expect("gRPC is on"), 4);
}

/// A bare HTTP/2 server whose first connection says GOAWAY (last stream 0:
/// nothing processed) at once, and whose later connections echo gRPC
/// messages. Returns its address and a count of connections accepted.
async fn goaway_first_server() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else { return };
                if first {
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                }
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let mut body = request.into_body();
                        let mut echoed = BytesMut::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            echoed.extend_from_slice(&chunk);
                        }
                        let response = http::Response::builder()
                            .header("content-type", "application/grpc+json")
                            .body(())
                            .expect("response");
                        let Ok(mut stream) = respond.send_response(response, false) else { return };
                        let _ = stream.send_data(echoed.freeze(), false);
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let _ = stream.send_trailers(trailers);
                    });
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_client_moves_a_call_refused_by_goaway_to_a_new_connection() {
    let (addr, accepted) = goaway_first_server().await;
    for round in 0..2 {
        let probe = ProbeClient::new(grpc_channel(addr).await);
        let reply = probe.echo(format!("round {round}")).await.expect("the call moves to a fresh connection");
        assert_eq!(reply, format!("round {round}"));
        // The client kept using the working connection.
        assert_eq!(probe.echo("again".into()).await.expect("again"), "again");
    }
    // Round 0: the refusing connection and its replacement; round 1: one.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_reply_the_client_grants_no_window_for_is_reset_after_a_keepalive_interval() {
    let (server, _) = start_server(|b| b.keepalive_interval(Some(Duration::from_millis(500)))).await;
    let client = h2_client(server.local_addr()).await;
    let request = Request::builder()
        .method("POST")
        .uri("http://test/Probe/Sized")
        .header("content-type", "application/grpc+json")
        .body(())
        .expect("request");
    let mut sender = client.clone().ready().await.expect("ready");
    let (response, mut stream) = sender.send_request(request, false).expect("send");
    // 1 MiB asked for; the client's 64 KiB window is never given back.
    stream
        .send_data(Bytes::from_static(&[0, 0, 0, 0, 7, b'1', b'0', b'4', b'8', b'5', b'7', b'6']), true)
        .expect("body");
    let mut body = response.await.expect("response").into_body();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut received = 0;
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match body.data().await {
                Some(Ok(chunk)) => received += chunk.len(),
                Some(Err(err)) => break Err(err),
                None => break Ok(()),
            }
        }
    })
    .await
    .expect("the server reset the stream rather than waiting for window forever");
    let err = outcome.expect_err("the stream was reset");
    assert_eq!(err.reason(), Some(h2::Reason::CANCEL), "{err}");
    assert!(received < 1 << 20, "{received} bytes arrived");
}
