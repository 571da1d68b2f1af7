//! One port, every protocol: the same services over the native protocol,
//! gRPC, JSON-RPC and HTTP/JSON, at once; malformed input in each protocol
//! costs only its own connection or call; protocols can be switched off.
//! (Peers in other languages are in `polyglot.rs`.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use courier::{Channel, Code, Codec, Protocol};
use courier_tests::interop::{EchoRequest, InteropClient};
use courier_tests::{
    Bystander, CalcError, CalculatorClient, JsonRpc, ProbeClient, ProbeState, eventually, h2_client,
    http_post, start_server, within,
};
use http::{HeaderMap, Request};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test as a whole: a regression fails its test instead of hanging
/// the suite (the awaits inside have tighter limits of their own).
const TEST_LIMIT: Duration = Duration::from_secs(120);

async fn grpc_channel(addr: SocketAddr) -> Channel {
    within(Duration::from_secs(5), "gRPC connect", Channel::builder(addr.to_string()).grpc().connect())
        .await
        .expect("gRPC connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serde_services_answer_over_grpc_json() {
    within(TEST_LIMIT, "serde_services_answer_over_grpc_json", async {
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
        assert!(
            state.wait_until(Duration::from_secs(5), |s| s.dropped() == 1).await,
            "the handler was dropped"
        );
        let big = probe.sized(4 << 20).await.expect("4 MiB");
        assert_eq!(big.len(), 4 << 20);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proto_service_answers_natively_and_over_grpc_in_protobuf_and_json() {
    within(TEST_LIMIT, "a_proto_service_answers_natively_and_over_grpc_in_protobuf_and_json", async {
        let (server, _) = start_server(|b| b).await;
        let addr = server.local_addr();
        let native = InteropClient::connect(addr.to_string()).await.expect("connect");
        let grpc = InteropClient::new(grpc_channel(addr).await);
        for client in
            [native.clone(), native.with_codec(Codec::Json), grpc.clone(), grpc.with_codec(Codec::Json)]
        {
            let reply = client
                .with_metadata("x-k", "v")
                .echo(EchoRequest {
                    message: "m".into(),
                    payload: vec![1, 2],
                    echo_metadata: vec!["x-k".into()],
                })
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_four_protocols_at_once_on_one_port() {
    within(TEST_LIMIT, "all_four_protocols_at_once_on_one_port", async {
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_bad_requests_cost_one_reply_and_bad_streams_one_connection() {
    within(TEST_LIMIT, "json_rpc_bad_requests_cost_one_reply_and_bad_streams_one_connection", async {
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_answers_what_go_clients_can_read() {
    within(TEST_LIMIT, "json_rpc_answers_what_go_clients_can_read", async {
        let (server, state) = start_server(|b| b).await;
        let mut rpc = JsonRpc::connect(server.local_addr()).await;
        // Go's client fails a reply whose result is null and whose error is
        // null; a method returning nothing answers `{}`.
        let reply = rpc.call("Probe.Record", json!(7), 2).await;
        assert_eq!(reply, json!({"id": 2, "result": {}, "error": null}));
        assert!(state.wait_until(Duration::from_secs(5), |s| s.recorded() == [7]).await);
        let reply = rpc.call("Probe.Fail", json!({"code": 5, "message": "no such thing"}), 3).await;
        assert_eq!(reply, json!({"id": 3, "result": null, "error": "no such thing"}));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_pipelined_calls_beyond_the_limit_are_refused_at_once() {
    within(TEST_LIMIT, "json_rpc_pipelined_calls_beyond_the_limit_are_refused_at_once", async {
        // 80 pipelined 2 s sleeps against a limit of 50: 50 run, 30 are refused
        // at once (never queued), and no more than 50 ever start.
        const LIMIT: usize = 50;
        const ASKS: usize = 80;
        let (server, state) = start_server(|b| b.max_concurrent_calls(LIMIT)).await;
        let mut rpc = JsonRpc::connect(server.local_addr()).await;
        let requests: String =
            (0..ASKS).map(|id| format!(r#"{{"method":"Probe.Sleep","params":[2000],"id":{id}}}"#)).collect();
        rpc.send(requests.as_bytes()).await;
        let mut refused = 0;
        let mut answered = 0;
        for _ in 0..ASKS {
            let reply = rpc.reply().await.expect("every request is answered");
            if reply["result"] == 2000 {
                answered += 1;
            } else {
                let error = reply["error"].as_str().unwrap_or_default();
                assert!(error.contains("at its limit of 50 concurrent calls"), "{reply}");
                // Refusals come at once, before any sleep has finished.
                assert_eq!(state.finished(), 0, "a refusal waited for a slot: {reply}");
                refused += 1;
            }
        }
        assert_eq!((answered, refused), (LIMIT, ASKS - LIMIT));
        assert_eq!(state.started(), LIMIT, "no more handlers started than the limit");
        assert_eq!(server.stats().calls_refused, (ASKS - LIMIT) as u64);
    })
    .await;
}

/// A JSON-RPC client that asks for 16 KiB replies and reads none: after it
/// returns, the server has stopped reading its requests. Returns the
/// connection's halves, the requests sent, and the handler starts (the
/// requests the server took in).
async fn stall_a_json_rpc_client(
    addr: SocketAddr,
    state: &ProbeState,
) -> (tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf, usize, usize) {
    // A small receive buffer (loopback's can otherwise grow to 32 MiB and
    // hold every reply).
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    let receive_buffer = socket.recv_buffer_size().expect("SO_RCVBUF") as usize;
    let stream = within(Duration::from_secs(5), "connect", socket.connect(addr)).await.expect("connect");
    let (read, mut write) = stream.into_split();
    // Sent in batches of 20, each taken in before the next is sent, so the
    // client never has more calls running than half the server's limit:
    // nothing is refused, and every request taken in starts a handler.
    // The stall is the first batch the server does not take in.
    const BATCH: usize = 20;
    const MOST: usize = 4000;
    let mut sent = 0;
    loop {
        let requests: String = (sent..sent + BATCH)
            .map(|id| format!(r#"{{"method":"Probe.Sized","params":[{REPLY}],"id":{id}}}"#))
            .collect();
        within(Duration::from_secs(5), "sending requests", write.write_all(requests.as_bytes()))
            .await
            .expect("write");
        sent += BATCH;
        // Generous: on a loaded machine 25 tiny handlers may take a while.
        if !state.wait_until(Duration::from_secs(3), |s| s.sized_started() >= sent).await {
            break;
        }
        assert!(sent < MOST, "the server took in {sent} requests while none of their replies was read");
    }
    let taken = state.sized_started();
    // What the server can have taken in when it stops: 1,024 replies
    // waiting in its queue, one write's batch (256 KiB) and what the
    // kernel buffers hold (the server's send buffer, at most tcp_wmem's
    // maximum, and ours), plus half a MiB of slack for how the kernel
    // counts them (measured here: 1,300 taken against 1,307 without it; a
    // server reading on would take all 4,000).
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|text| text.split_whitespace().nth(2).and_then(|max| max.parse().ok()))
        .expect("tcp_wmem");
    let bound = 1024 + (256 << 10) / REPLY + 1 + (wmem_max + receive_buffer + (512 << 10)) / REPLY;
    assert!(
        (1024..=bound).contains(&taken),
        "{taken} requests taken in, of {sent}: the server should stop reading once 1,024 replies wait \
         (and their bytes fill the socket buffers: at most {bound})"
    );
    eprintln!("JSON-RPC client not reading: {taken} of {sent} requests taken in (bound {bound})");
    (read, write, sent, taken)
}

/// Bytes of each reply `stall_a_json_rpc_client` asks for.
const REPLY: usize = 16 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_rpc_client_that_stops_reading_is_no_longer_read_and_holds_no_call_slots() {
    within(
        TEST_LIMIT,
        "a_json_rpc_client_that_stops_reading_is_no_longer_read_and_holds_no_call_slots",
        async {
            // No keepalive: the stalled connection is kept, so its replies can be
            // drained afterwards.
            let (server, state) = start_server(|b| b.max_concurrent_calls(50).keepalive_interval(None)).await;
            let addr = server.local_addr();
            let bystander = Bystander::start(addr).await;
            let (mut read, write, sent, taken) = stall_a_json_rpc_client(addr, &state).await;
            // Over a thousand replies wait; none of them holds one of the 50 call
            // slots, so other clients are served, more calls than there are slots.
            let probe = ProbeClient::connect(addr.to_string()).await.expect("connect");
            for i in 0..60 {
                let text = format!("meanwhile {i}");
                let echoed = within(Duration::from_secs(5), "an echo", probe.echo(text.clone())).await;
                assert_eq!(echoed.expect("the server still has slots"), text);
            }
            assert_eq!(server.stats().calls_refused, 0, "no call was refused");
            assert_eq!(state.sized_started(), taken, "still not reading the stalled client");
            // Once the client reads, everything it sent is answered.
            drop(write);
            let mut ids = vec![false; sent];
            let mut decoder = Vec::new();
            let mut chunk = vec![0u8; 256 * 1024];
            let mut replies = 0;
            while replies < sent {
                let n = within(Duration::from_secs(10), "the replies keep coming", read.read(&mut chunk))
                    .await
                    .expect("read");
                assert!(n > 0, "the server closed after {replies} of {sent} replies");
                decoder.extend_from_slice(&chunk[..n]);
                let mut values = serde_json::Deserializer::from_slice(&decoder).into_iter::<Value>();
                let mut end = 0;
                while let Some(Ok(reply)) = values.next() {
                    end = values.byte_offset();
                    let id = reply["id"].as_u64().expect("an id") as usize;
                    assert_eq!(reply["result"].as_str().map(str::len), Some(REPLY), "reply {id}");
                    assert!(!std::mem::replace(&mut ids[id], true), "reply {id} twice");
                    replies += 1;
                }
                decoder.drain(..end);
            }
            assert_eq!(state.sized_started(), sent);
            bystander.finish().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_rpc_connection_whose_replies_stop_moving_is_closed() {
    within(TEST_LIMIT, "a_json_rpc_connection_whose_replies_stop_moving_is_closed", async {
        let (server, _) = start_server(|b| b.keepalive_interval(Some(Duration::from_secs(1)))).await;
        let addr = server.local_addr();
        let bystander = Bystander::start(addr).await;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
        let stream = within(Duration::from_secs(5), "connect", socket.connect(addr)).await.expect("connect");
        let (mut read, mut write) = stream.into_split();
        // 3,000 replies of 16 KiB asked for (48 MiB), none read.
        const ASKS: usize = 3000;
        let asking = tokio::spawn(async move {
            let requests: String = (0..ASKS)
                .map(|id| format!(r#"{{"method":"Probe.Sized","params":[{REPLY}],"id":{id}}}"#))
                .collect();
            // The server may close before it has read them all.
            let _ = write.write_all(requests.as_bytes()).await;
            write
        });
        assert!(
            eventually(Duration::from_secs(5), || server.stats().connections_open == 2).await,
            "the stalled connection was accepted"
        );
        // Replies that have not moved for a keepalive interval: the server
        // closes the connection (the bystander's stays), throwing away what
        // could not be sent.
        assert!(
            eventually(Duration::from_secs(15), || server.stats().connections_open == 1).await,
            "the server still holds the stalled connection: {:?}",
            server.stats()
        );
        let mut received = Vec::new();
        let ended = within(Duration::from_secs(10), "reading to the close", async {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match read.read(&mut chunk).await {
                    Ok(0) => return "closed",
                    Err(_) => return "reset",
                    Ok(n) => received.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        let replies = received.iter().filter(|&&b| b == b'\n').count();
        assert!(replies < ASKS, "{replies} replies, then {ended}: the server answered everything");
        drop(within(Duration::from_secs(5), "the asking task", asking).await);
        bystander.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http_connection_stays_usable_past_the_handshake_timeout() {
    within(TEST_LIMIT, "an_idle_http_connection_stays_usable_past_the_handshake_timeout", async {
        let (server, _) = start_server(|b| b.handshake_timeout(Duration::from_millis(300))).await;
        let mut stream = TcpStream::connect(server.local_addr()).await.expect("connect");
        assert_eq!(
            http_post(&mut stream, "/Calculator/Add", r#"{"a":1,"b":2}"#).await,
            (200, "3".to_owned())
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            http_post(&mut stream, "/Calculator/Add", r#"{"a":2,"b":2}"#).await,
            (200, "4".to_owned())
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_in_every_protocol() {
    within(TEST_LIMIT, "oversized_messages_are_refused_in_every_protocol", async {
        let (server, _) = start_server(|b| b.max_frame_size(64 * 1024)).await;
        let addr = server.local_addr();
        let bystander = Bystander::start(addr).await;
        let big = "x".repeat(100 * 1024);

        // gRPC: the call fails, the connection lives on.
        let grpc = Channel::builder(addr.to_string())
            .grpc()
            .max_frame_size(1 << 20)
            .connect()
            .await
            .expect("connect");
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
    })
    .await;
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
    within(TEST_LIMIT, "malformed_grpc_fails_the_call_or_the_connection_only", async {
        let (server, _) = start_server(|b| b).await;
        let addr = server.local_addr();
        let bystander = Bystander::start(addr).await;
        let grpc_bystander = ProbeClient::new(grpc_channel(addr).await);
        let client = h2_client(addr).await;
        let json = [("content-type", "application/grpc+json")];

        // A message prefix cut short.
        let (parts, _, trailers) =
            raw_grpc(&client, "/Probe/Echo", &json, Bytes::from_static(&[0, 0, 0])).await;
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
            raw_grpc(&client, "/Probe/Echo", &json, Bytes::from_static(&[0, 0, 0, 0, 3, b'{', b'{', b'{']))
                .await;
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
        let (parts, body, trailers) = raw_grpc(
            &client,
            "/Probe/Echo",
            &json,
            Bytes::from_static(&[0, 0, 0, 0, 4, b'"', b'o', b'k', b'"']),
        )
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_v1_lists_services_and_health_watch_ends_at_shutdown() {
    within(TEST_LIMIT, "reflection_v1_lists_services_and_health_watch_ends_at_shutdown", async {
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
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_that_asks_without_reading_gets_no_more_than_its_window() {
    within(TEST_LIMIT, "a_grpc_client_that_asks_without_reading_gets_no_more_than_its_window", async {
        // A reflection stream asked a million times by a client that reads
        // answers but never gives the window back: the server must stop taking
        // requests once the client's window is full of answers, not buffer a
        // million answers.
        let (server, _) = start_server(|b| b).await;
        let addr = server.local_addr();
        let bystander = Bystander::start(addr).await;
        // h2 guards against peers sending many small frames the application
        // leaves unread; this client leaves them unread on purpose.
        let tcp = within(Duration::from_secs(5), "connect", TcpStream::connect(addr)).await.expect("connect");
        let (client, connection) = within(
            Duration::from_secs(5),
            "the h2 handshake",
            h2::client::Builder::new().data_frame_budget(1 << 30).handshake(tcp),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::builder()
            .method("POST")
            .uri("http://test/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
            .header("content-type", "application/grpc")
            .body(())
            .expect("request");
        let mut sender =
            within(Duration::from_secs(5), "ready", client.clone().ready()).await.expect("ready");
        let (response, mut stream) = sender.send_request(request, false).expect("send");
        // ServerReflectionRequest { list_services: "" }: 7 bytes framed.
        const ASK: &[u8] = &[0, 0, 0, 0, 2, 0x3a, 0];
        const ASKS: usize = 1_000_000;
        const BATCH: usize = 1000;
        // Ask as fast as the server's flow control lets us, in a task that
        // reports how far it got and whether it is waiting for window.
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waiting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let asking = tokio::spawn({
            let (sent, waiting, stop) = (sent.clone(), waiting.clone(), stop.clone());
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                let batch: Bytes = ASK.repeat(BATCH).into();
                while sent.load(SeqCst) < ASKS && !stop.load(SeqCst) {
                    stream.reserve_capacity(batch.len());
                    while stream.capacity() < batch.len() {
                        waiting.store(true, SeqCst);
                        let granted = std::future::poll_fn(|task| stream.poll_capacity(task)).await;
                        waiting.store(false, SeqCst);
                        if !matches!(granted, Some(Ok(_))) {
                            return Err(format!("the stream failed: {granted:?}"));
                        }
                    }
                    if stop.load(SeqCst) {
                        break;
                    }
                    stream.send_data(batch.clone(), false).map_err(|err| err.to_string())?;
                    sent.fetch_add(BATCH, SeqCst);
                }
                stream.send_data(Bytes::new(), true).map_err(|err| err.to_string())?;
                Ok(sent.load(SeqCst))
            }
        });
        // Read answers without giving window back, until the window (h2's
        // default, 65,535 bytes) is full: no answer fits in what is left.
        const CLIENT_WINDOW: usize = 65_535;
        let response = within(Duration::from_secs(5), "the response head", response).await.expect("response");
        let mut body = response.into_body();
        let mut received = BytesMut::new();
        let answer_len = within(Duration::from_secs(10), "the server fills the client's window", async {
            let mut answer_len = usize::MAX;
            while received.len() + answer_len.min(CLIENT_WINDOW) <= CLIENT_WINDOW {
                let chunk = body.data().await.expect("more answers").expect("data");
                received.extend_from_slice(&chunk);
                if answer_len == usize::MAX && received.len() >= 5 {
                    answer_len =
                        5 + u32::from_be_bytes([received[1], received[2], received[3], received[4]]) as usize;
                }
            }
            answer_len
        })
        .await;
        // The server now has no window to answer in. What it can have taken
        // in: the answers sent, the batch it was answering (it reads the next
        // only once the last answer is on its way), and what its own stream
        // window (1 MiB) let us send unread.
        let answered = received.len() / answer_len;
        let bound = (answered + 1 + BATCH) * ASK.len() + (1 << 20);
        within(Duration::from_secs(10), "the client uses up the server's window and waits", async {
            // Waiting, with no room left in the server's window for a batch.
            while !(waiting.load(std::sync::atomic::Ordering::SeqCst)
                && sent.load(std::sync::atomic::Ordering::SeqCst) * ASK.len() + BATCH * ASK.len() > 1 << 20)
            {
                assert!(!asking.is_finished(), "the server took in all {ASKS} requests: {:?}", asking);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let taken = sent.load(std::sync::atomic::Ordering::SeqCst) * ASK.len();
        assert!(
            taken <= bound,
            "{taken} bytes of requests taken in; {answered} answers fit the window: at most {bound}"
        );
        eprintln!("gRPC client granting no window: {taken} request bytes taken in, {answered} answers (bound {bound})");
        // Still so a while later: the server is not merely slow to read.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let taken = sent.load(std::sync::atomic::Ordering::SeqCst) * ASK.len();
        assert!(taken <= bound, "{taken} bytes of requests taken in, later: at most {bound}");
        // Once the client reads, every request taken in is answered.
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = body.flow_control().release_capacity(received.len());
        let mut answers = 0;
        let mut decoder = received;
        loop {
            while decoder.len() >= 5 {
                let len = u32::from_be_bytes([decoder[1], decoder[2], decoder[3], decoder[4]]) as usize;
                if decoder.len() < 5 + len {
                    break;
                }
                let _ = decoder.split_to(5 + len);
                answers += 1;
            }
            let Some(chunk) = within(Duration::from_secs(10), "answers keep coming", body.data()).await
            else {
                break;
            };
            let chunk = chunk.expect("data");
            let _ = body.flow_control().release_capacity(chunk.len());
            decoder.extend_from_slice(&chunk);
        }
        let asked =
            within(Duration::from_secs(5), "the asking task", asking).await.expect("join").expect("asking");
        assert_eq!(answers, asked, "every request answered");
        let trailers = within(Duration::from_secs(5), "trailers", body.trailers()).await.expect("trailers");
        assert_eq!(trailers.expect("some")["grpc-status"], "0");
        bystander.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocols_can_be_switched_off_and_strangers_are_closed() {
    within(TEST_LIMIT, "protocols_can_be_switched_off_and_strangers_are_closed", async {
        let (server, _) = start_server(|b| {
            b.disable_protocol(Protocol::JsonRpc).handshake_timeout(Duration::from_millis(1500))
        })
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
        tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut sink))
            .await
            .expect("closed")
            .ok();
        assert!(started.elapsed() < Duration::from_secs(8), "closed after {:?}", started.elapsed());
        // …and one speaking something else at once.
        let mut stranger = TcpStream::connect(addr).await.expect("connect");
        stranger.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.expect("write");
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), stranger.read_to_end(&mut sink))
            .await
            .expect("closed")
            .ok();
        // Well before the 1.5 s handshake timeout: it was not waited for.
        assert!(started.elapsed() < Duration::from_secs(1), "closed after {:?}", started.elapsed());

        let (grpc_only, _) = start_server(|b| b.protocols([Protocol::Grpc])).await;
        assert!(
            CalculatorClient::connect(grpc_only.local_addr().to_string()).await.is_err(),
            "native is off"
        );
        let calc = CalculatorClient::new(grpc_channel(grpc_only.local_addr()).await);
        assert_eq!(calc.add(2, 2).await.expect("gRPC is on"), 4);
    })
    .await;
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
    within(TEST_LIMIT, "the_grpc_client_moves_a_call_refused_by_goaway_to_a_new_connection", async {
        let (addr, accepted) = goaway_first_server().await;
        for round in 0..2 {
            let probe = ProbeClient::new(grpc_channel(addr).await);
            let reply =
                probe.echo(format!("round {round}")).await.expect("the call moves to a fresh connection");
            assert_eq!(reply, format!("round {round}"));
            // The client kept using the working connection.
            assert_eq!(probe.echo("again".into()).await.expect("again"), "again");
        }
        // Round 0: the refusing connection and its replacement; round 1: one.
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_reply_the_client_grants_no_window_for_is_reset_after_a_keepalive_interval() {
    within(
        TEST_LIMIT,
        "a_grpc_reply_the_client_grants_no_window_for_is_reset_after_a_keepalive_interval",
        async {
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
                .send_data(
                    Bytes::from_static(&[0, 0, 0, 0, 7, b'1', b'0', b'4', b'8', b'5', b'7', b'6']),
                    true,
                )
                .expect("body");
            let mut body = within(Duration::from_secs(5), "the response head", response)
                .await
                .expect("response")
                .into_body();
            // The first 64 KiB arrive; then nothing moves for a keepalive interval.
            let mut received = 0;
            let outcome = tokio::time::timeout(Duration::from_secs(10), async {
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
        },
    )
    .await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_timeout_header_reaches_the_handlers_context() {
    within(TEST_LIMIT, "the_grpc_timeout_header_reaches_the_handlers_context", async {
        let (server, _) = start_server(|b| b).await;
        let addr = server.local_addr();
        // Courier's own gRPC client: the call's timeout becomes the handler's
        // deadline.
        let probe = ProbeClient::new(grpc_channel(addr).await);
        let none = within(Duration::from_secs(5), "deadline_ms", probe.deadline_ms()).await;
        assert_eq!(none.expect("no deadline"), None);
        let left = within(
            Duration::from_secs(5),
            "deadline_ms",
            probe.with_timeout(Duration::from_secs(5)).deadline_ms(),
        )
        .await
        .expect("deadline")
        .expect("a deadline was sent");
        assert!(left > 4_000 && left <= 5_000, "{left} ms left of 5 s");
        // Any gRPC client: `grpc-timeout` as the spec writes it (3 seconds).
        let client = h2_client(addr).await;
        let headers = [("content-type", "application/grpc+json"), ("grpc-timeout", "3S")];
        let (parts, body, trailers) = raw_grpc(
            &client,
            "/Probe/DeadlineMs",
            &headers,
            Bytes::from_static(&[0, 0, 0, 0, 2, b'{', b'}']),
        )
        .await;
        assert_eq!(grpc_status(&parts, &trailers), (0, String::new()));
        let left: u64 = serde_json::from_slice(&body[5..]).expect("milliseconds left");
        assert!(left > 2_000 && left <= 3_000, "{left} ms left of 3 s");
    })
    .await;
}

/// A native request to `Probe.Sized` for `len` bytes, JSON-encoded.
fn native_sized_request(call_id: u32, len: usize) -> Vec<u8> {
    use courier::protocol::native::{FrameKind, RequestHead};
    let mut meta = BytesMut::new();
    RequestHead::encode(&mut meta, "Probe.Sized", None, std::iter::empty());
    let body = len.to_string();
    let payload = u32::try_from(meta.len() + body.len()).expect("fits");
    let mut out = Vec::new();
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[FrameKind::Request as u8, 0, Codec::Json.id(), 0]);
    out.extend_from_slice(&call_id.to_be_bytes());
    out.extend_from_slice(&u32::try_from(meta.len()).expect("fits").to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(body.as_bytes());
    out
}

/// A connection with a small receive buffer that sends `request` and
/// never reads: the server's replies stop moving once the socket buffers
/// are full. Returns it once the server has accepted it (`open` counts it).
async fn a_client_that_stops_reading(
    server: &courier::ServerHandle,
    open: usize,
    request: &[u8],
) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    let mut stream = within(Duration::from_secs(5), "connect", socket.connect(server.local_addr()))
        .await
        .expect("connect");
    within(Duration::from_secs(5), "sending the requests", stream.write_all(request)).await.expect("write");
    assert!(
        eventually(Duration::from_secs(5), || server.stats().connections_open == open).await,
        "the connection was accepted: {:?}",
        server.stats()
    );
    stream
}

/// Read until the server closes (or resets) the connection; the bytes read.
async fn read_to_the_close(stream: &mut TcpStream) -> usize {
    within(Duration::from_secs(10), "reading to the close", async {
        let mut chunk = vec![0u8; 256 * 1024];
        let mut received = 0;
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received += n,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_connection_whose_replies_stop_moving_is_closed() {
    within(TEST_LIMIT, "a_native_connection_whose_replies_stop_moving_is_closed", async {
        let (server, _) = start_server(|b| b.keepalive_interval(Some(Duration::from_secs(1)))).await;
        let bystander = Bystander::start(server.local_addr()).await;
        // 16 replies of 1 MiB asked for, none read.
        let mut request = courier::protocol::native::PREFACE.to_vec();
        for call_id in 1..=16 {
            request.extend_from_slice(&native_sized_request(call_id, 1 << 20));
        }
        let mut stalled = a_client_that_stops_reading(&server, 2, &request).await;
        // Replies that have not moved for a keepalive interval (the server's
        // ping stuck behind them): the connection is closed, the bystander's
        // is not.
        assert!(
            eventually(Duration::from_secs(15), || server.stats().connections_open == 1).await,
            "the server still holds the stalled connection: {:?}",
            server.stats()
        );
        let received = read_to_the_close(&mut stalled).await;
        assert!(received < 16 << 20, "{received} bytes: every reply was sent");
        bystander.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_connection_whose_reply_stops_moving_is_closed() {
    within(TEST_LIMIT, "an_http_connection_whose_reply_stops_moving_is_closed", async {
        let (server, _) = start_server(|b| b.keepalive_interval(Some(Duration::from_secs(1)))).await;
        let bystander = Bystander::start(server.local_addr()).await;
        // A 32 MiB reply asked for, none of it read.
        let body = (32 << 20).to_string();
        let request = format!(
            "POST /Probe/Sized HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stalled = a_client_that_stops_reading(&server, 2, request.as_bytes()).await;
        assert!(
            eventually(Duration::from_secs(15), || server.stats().connections_open == 1).await,
            "the server still holds the stalled connection: {:?}",
            server.stats()
        );
        let received = read_to_the_close(&mut stalled).await;
        assert!(received < 32 << 20, "{received} bytes: the whole reply was sent");
        bystander.finish().await;
    })
    .await;
}
