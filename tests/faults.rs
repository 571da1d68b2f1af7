//! Bad input and failing peers: each gets a clear error, and everyone else
//! keeps being served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use courier::protocol::native::{
    Frame, FrameDecoder, FrameEncoder, FrameKind, GoAway, PREFACE, RequestHead, ResponseHead,
};
use courier::{Channel, Code, Codec};
use courier_tests::{Bystander, ChildServer, ProbeClient, eventually, start_server, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one test may take before it fails instead of hanging.
const TEST_LIMIT: Duration = Duration::from_secs(60);

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Count panics raised outside the test code (in courier or its
/// dependencies, e.g. a server task that panicked on bad input and was
/// swallowed by tokio): none is expected anywhere in this binary, so every
/// test checks the count at its end with [`assert_no_panics`]. Assertion
/// failures in the tests and their support code are left out, so one
/// failing test does not fail the others.
fn count_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_tests = info.location().is_some_and(|l| {
                let file = l.file();
                file.ends_with("faults.rs") || file.contains("tests/support/") || file.starts_with("support/")
            });
            if !in_tests {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// No panic outside the tests so far (the hook prints where one happened).
fn assert_no_panics() {
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a task in courier panicked; its message is above");
}

/// Start a child server on a blocking thread: starting waits for its
/// first line, which must not hold up the runtime's workers.
async fn start_child(start: impl FnOnce() -> ChildServer + Send + 'static) -> ChildServer {
    tokio::task::spawn_blocking(start).await.expect("the child server started")
}

/// A hand-driven connection for sending malformed bytes.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw { stream: TcpStream::connect(addr).await.expect("raw connect"), buf: BytesMut::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("raw write");
    }

    /// The next frame (after skipping the server's preface), or `None` once
    /// the server closes.
    async fn next_frame(&mut self) -> Option<Frame> {
        let decoder = FrameDecoder::new(1 << 24);
        loop {
            if self.buf.starts_with(&PREFACE) {
                let _ = self.buf.split_to(PREFACE.len());
            }
            let past_preface = self.buf.len() >= PREFACE.len() || !PREFACE.starts_with(&self.buf);
            if past_preface
                && let Some(frame) = decoder.decode(&mut self.buf).expect("the server sends valid frames")
            {
                return Some(frame);
            }
            let read = tokio::time::timeout(Duration::from_secs(5), self.stream.read_buf(&mut self.buf))
                .await
                .expect("the server answers or closes within 5 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Whether the server closes the connection within `timeout`.
    async fn closed_within(&mut self, timeout: Duration) -> bool {
        let mut scratch = vec![0u8; 64 * 1024];
        tokio::time::timeout(timeout, async {
            loop {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}

fn request(call_id: u32, method: &str, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    let mut frame = FrameEncoder::begin(&mut buf, FrameKind::Request, Codec::Binary.id(), call_id);
    RequestHead::encode(&mut buf, method, None, std::iter::empty());
    frame.end_meta(&buf);
    buf.extend_from_slice(body);
    frame.finish(&mut buf, usize::MAX).expect("small frame");
    buf
}

fn header(payload_len: u32, kind: u8, call_id: u32, meta_len: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.extend_from_slice(&[kind, 0, Codec::Binary.id(), 0]);
    out.extend_from_slice(&call_id.to_be_bytes());
    out.extend_from_slice(&meta_len.to_be_bytes());
    out
}

fn response_code(frame: &Frame) -> (u32, String) {
    let head = ResponseHead::decode(&frame.meta).expect("response metadata");
    (head.code, head.message.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_gets_a_clear_error_and_closes_only_its_connection() {
    within(TEST_LIMIT, "an_oversized_frame_gets_a_clear_error_and_closes_only_its_connection", async {
        count_panics();
        let (server, _) = start_server(|b| b.max_frame_size(1 << 20)).await;
        let bystander = Bystander::start(server.local_addr()).await;

        // A client whose own limit is larger than the server's.
        let channel = Channel::builder(server.local_addr().to_string()).max_frame_size(64 << 20).build_lazy();
        let sender = ProbeClient::new(channel);
        let err = sender.echo("x".repeat(2 << 20)).await.expect_err("over the server's limit");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(err.message().contains("limit of 1048576 bytes"), "{err}");
        // That connection is gone, but the same client reconnects for small calls.
        assert_eq!(sender.echo("small".into()).await.expect("reconnected"), "small");

        // And a client refuses to send past its own limit without touching the wire.
        let careful = ProbeClient::new(
            Channel::builder(server.local_addr().to_string()).max_frame_size(1024).build_lazy(),
        );
        let err = careful.echo("y".repeat(4096)).await.expect_err("over the client's limit");
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("too large to send"), "{err}");

        bystander.finish().await;
    })
    .await;
    assert_no_panics();
}

#[tokio::test]
async fn a_header_claiming_gigabytes_is_refused_before_any_allocation() {
    within(TEST_LIMIT, "a_header_claiming_gigabytes_is_refused_before_any_allocation", async {
        count_panics();
        let (server, _) = start_server(|b| b).await;
        let mut raw = Raw::connect(server.local_addr()).await;
        raw.send(&PREFACE).await;
        raw.send(&header(3 << 30, FrameKind::Request as u8, 7, 0)).await;
        let reply = raw.next_frame().await.expect("an error reply");
        assert_eq!((reply.header.kind, reply.header.call_id), (FrameKind::Response, 7));
        let (code, message) = response_code(&reply);
        assert_eq!(code, Code::ResourceExhausted.as_u32());
        assert!(message.contains("3221225472 bytes exceeds"), "{message}");
        let goaway = raw.next_frame().await.expect("a goaway");
        assert_eq!(goaway.header.kind, FrameKind::GoAway);
        let goaway = GoAway::decode(&goaway.meta).expect("goaway metadata");
        assert_eq!(goaway.code, Code::ResourceExhausted.as_u32());
        assert!(raw.next_frame().await.is_none(), "then the server closes");
    })
    .await;
    assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_close_that_connection_and_nothing_else() {
    within(TEST_LIMIT, "random_bytes_close_that_connection_and_nothing_else", async {
        count_panics();
        let (server, _) = start_server(|b| b).await;
        let bystander = Bystander::start(server.local_addr()).await;
        let mut rng = fastrand::Rng::with_seed(0xC0FFEE);
        for attempt in 0..16 {
            let mut garbage = vec![0u8; 1 << 20];
            rng.fill(&mut garbage);
            let mut raw = Raw::connect(server.local_addr()).await;
            if attempt % 2 == 1 {
                // Half the time, get past the preface check first.
                raw.send(&PREFACE).await;
            }
            // The server may close before all of it is written; that is fine.
            let _ = raw.stream.write_all(&garbage).await;
            assert!(
                raw.closed_within(Duration::from_secs(5)).await,
                "attempt {attempt}: the server closed the connection"
            );
        }
        bystander.finish().await;
    })
    .await;
    assert_no_panics();
}

#[tokio::test]
async fn malformed_request_metadata_fails_that_call_and_the_connection_carries_on() {
    within(TEST_LIMIT, "malformed_request_metadata_fails_that_call_and_the_connection_carries_on", async {
        count_panics();
        let (server, _) = start_server(|b| b).await;
        let mut raw = Raw::connect(server.local_addr()).await;
        raw.send(&PREFACE).await;
        // A method-name length pointing past the end of the metadata.
        let mut bad = header(2, FrameKind::Request as u8, 1, 2);
        bad.extend_from_slice(&[0x7f, b'x']);
        raw.send(&bad).await;
        let reply = raw.next_frame().await.expect("an error for call 1");
        assert_eq!(reply.header.call_id, 1);
        let (code, message) = response_code(&reply);
        assert_eq!(code, Code::InvalidArgument.as_u32());
        assert!(message.contains("malformed request metadata"), "{message}");

        let mut body = BytesMut::new();
        Codec::Binary.encode(&(10_i64, 20_i64), &mut body).expect("encode");
        raw.send(&request(2, "Calculator.Add", &body)).await;
        let reply = raw.next_frame().await.expect("a reply for call 2");
        assert_eq!((reply.header.call_id, response_code(&reply).0), (2, 0));
        assert_eq!(Codec::Binary.decode::<i64>(&reply.body).expect("sum"), 30);
    })
    .await;
    assert_no_panics();
}

#[tokio::test]
async fn a_duplicate_call_id_is_a_protocol_error_for_that_connection_only() {
    within(TEST_LIMIT, "a_duplicate_call_id_is_a_protocol_error_for_that_connection_only", async {
        count_panics();
        let (server, _) = start_server(|b| b).await;
        let bystander = Bystander::start(server.local_addr()).await;
        let mut raw = Raw::connect(server.local_addr()).await;
        raw.send(&PREFACE).await;
        let mut body = BytesMut::new();
        Codec::Binary.encode(&5_000_u64, &mut body).expect("encode");
        let sleep = request(9, "Probe.Sleep", &body);
        raw.send(&sleep).await;
        raw.send(&sleep).await;
        let goaway = raw.next_frame().await.expect("a goaway");
        assert_eq!(goaway.header.kind, FrameKind::GoAway);
        let goaway = GoAway::decode(&goaway.meta).expect("goaway");
        assert!(goaway.message.contains("already in flight"), "{}", goaway.message);
        assert!(raw.next_frame().await.is_none());
        bystander.finish().await;
    })
    .await;
    assert_no_panics();
}

#[tokio::test]
async fn an_unsupported_protocol_version_is_told_why() {
    within(TEST_LIMIT, "an_unsupported_protocol_version_is_told_why", async {
        count_panics();
        let (server, _) = start_server(|b| b).await;
        let mut raw = Raw::connect(server.local_addr()).await;
        let mut preface = PREFACE;
        preface[5] = 9;
        raw.send(&preface).await;
        let goaway = raw.next_frame().await.expect("a goaway");
        let goaway = GoAway::decode(&goaway.meta).expect("goaway");
        assert_eq!(goaway.code, Code::Unimplemented.as_u32());
        assert!(goaway.message.contains("version 9"), "{}", goaway.message);
    })
    .await;
    assert_no_panics();
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed_after_the_handshake_timeout() {
    within(TEST_LIMIT, "a_connection_that_never_speaks_is_closed_after_the_handshake_timeout", async {
        count_panics();
        let (server, _) = start_server(|b| b.handshake_timeout(Duration::from_millis(200))).await;
        let mut raw = Raw::connect(server.local_addr()).await;
        let start = Instant::now();
        assert!(raw.closed_within(Duration::from_secs(2)).await);
        assert!(
            start.elapsed() >= Duration::from_millis(150),
            "not before the timeout: {:?}",
            start.elapsed()
        );
    })
    .await;
    assert_no_panics();
}

/// A fake server that completes the handshake, then never answers again.
async fn silent_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut preface = [0u8; 8];
                let _ = stream.read_exact(&mut preface).await;
                let _ = stream.write_all(&PREFACE).await;
                // Hold the socket open, reading nothing, answering nothing.
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(stream);
            });
        }
    });
    addr
}

#[tokio::test]
async fn keepalive_detects_a_silent_server_promptly() {
    within(TEST_LIMIT, "keepalive_detects_a_silent_server_promptly", async {
        count_panics();
        let addr = silent_server().await;
        let interval = Duration::from_millis(200);
        let channel = Channel::builder(addr.to_string())
            .keepalive_interval(Some(interval))
            .connect()
            .await
            .expect("handshake completes");
        let start = Instant::now();
        let err = ProbeClient::new(channel).echo("anyone there?".into()).await.expect_err("dead peer");
        let elapsed = start.elapsed();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.message().contains("stopped responding"), "{err}");
        // Nominally two intervals (a ping after one of silence, unanswered for
        // another); not before one, and far sooner than never.
        eprintln!("a silent server detected after {elapsed:?} (interval {interval:?})");
        assert!(elapsed >= interval, "not before an interval of silence: {elapsed:?}");
        assert!(elapsed < 10 * interval, "detected after {elapsed:?}");
    })
    .await;
    assert_no_panics();
}

#[tokio::test]
async fn a_server_sending_garbage_fails_the_call_instead_of_hanging() {
    within(TEST_LIMIT, "a_server_sending_garbage_fails_the_call_instead_of_hanging", async {
        count_panics();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut stream, _)) = listener.accept().await {
                let mut preface = [0u8; 8];
                let _ = stream.read_exact(&mut preface).await;
                let _ = stream.write_all(&PREFACE).await;
                let mut request = [0u8; 64];
                let _ = stream.read(&mut request).await;
                // A header with an empty payload and a frame kind that does not exist.
                let _ = stream.write_all(&header(0, 0xEE, 1, 0)).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        let probe = ProbeClient::connect(addr.to_string()).await.expect("connect");
        let err = tokio::time::timeout(Duration::from_secs(2), probe.echo("hi".into()))
            .await
            .expect("no hang")
            .expect_err("garbage reply");
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.message().contains("unknown frame kind 238"), "{err}");
    })
    .await;
    assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_mid_call_fails_promptly_and_the_same_client_recovers() {
    within(TEST_LIMIT, "killing_the_server_mid_call_fails_promptly_and_the_same_client_recovers", async {
        count_panics();
        let binary = env!("CARGO_BIN_EXE_courier-test-server");
        // The child picks its own port (no bind-release-rebind race); it
        // starts on a blocking thread, off the runtime's workers.
        let server = start_child(move || ChildServer::start_anywhere(binary, &[])).await;
        let addr = server.addr;
        let probe = ProbeClient::connect(addr.to_string()).await.expect("connect");
        assert_eq!(probe.echo("before".into()).await.expect("echo"), "before");

        let mut in_flight = std::pin::pin!(probe.sleep(30_000));
        // The server is another process, so confirm the call is in flight from
        // here: calls on one connection are written in the order they are
        // queued (the sleep first: `biased` polls it first) and the server
        // reads them in order, so once an echo sent after it is answered, the
        // server holds the sleep call.
        tokio::select! {
            biased;
            outcome = &mut in_flight => panic!("the 30 s call cannot finish first: {outcome:?}"),
            echoed = probe.echo("behind the sleep".into()) => {
                assert_eq!(echoed.expect("echo"), "behind the sleep");
            }
        }
        let killed_at = Instant::now();
        server.kill();
        let err = within(Duration::from_secs(10), "the in-flight call", in_flight)
            .await
            .expect_err("the server died");
        let failed_after = killed_at.elapsed();
        eprintln!("the in-flight call failed {failed_after:?} after the kill");
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(failed_after < Duration::from_secs(1), "failed after {failed_after:?}");

        let _restarted = start_child(move || ChildServer::start(binary, addr)).await;
        assert_eq!(probe.echo("after".into()).await.expect("the same client works again"), "after");
    })
    .await;
    assert_no_panics();
}

/// Memory is measured in a server process of its own: tests in this binary
/// run in parallel, so this process's memory says nothing about one test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_ping_floods_leave_the_servers_memory_bounded() {
    within(TEST_LIMIT, "garbage_and_ping_floods_leave_the_servers_memory_bounded", async {
        count_panics();
        let binary = env!("CARGO_BIN_EXE_courier-test-server");
        // The child picks its own port (no bind-release-rebind race); it
        // starts on a blocking thread, off the runtime's workers.
        let server = start_child(move || ChildServer::start_anywhere(binary, &[])).await;
        let addr = server.addr;
        let bystander = Bystander::start(addr).await;
        // The baseline is taken once the server has served calls (not at an
        // arbitrary moment after starting).
        let warm = ProbeClient::connect(addr.to_string()).await.expect("connect");
        for _ in 0..10 {
            assert_eq!(warm.echo("warm".into()).await.expect("echo"), "warm");
        }
        let rss_before = server.rss_kib();

        // 16 connections of 1 MiB of random bytes, half of them after a valid preface.
        let mut rng = fastrand::Rng::with_seed(0xC0FFEE);
        for attempt in 0..16 {
            let mut garbage = vec![0u8; 1 << 20];
            rng.fill(&mut garbage);
            let mut raw = Raw::connect(addr).await;
            if attempt % 2 == 1 {
                raw.send(&PREFACE).await;
            }
            let _ = raw.stream.write_all(&garbage).await;
            assert!(raw.closed_within(Duration::from_secs(5)).await, "attempt {attempt}: closed");
        }
        let after_garbage = server.rss_kib().saturating_sub(rss_before);
        eprintln!("16 MiB of garbage grew the server by {after_garbage} KiB");
        assert!(after_garbage < 24 * 1024, "16 MiB of garbage grew the server by {after_garbage} KiB");

        // Up to 96 MiB of pings from a peer that never reads the pongs.
        let mut raw = Raw::connect(addr).await;
        raw.send(&PREFACE).await;
        let mut pings = BytesMut::new();
        for _ in 0..(1 << 16) {
            courier::protocol::native::encode_ping(&mut pings, FrameKind::Ping, *b"flooding");
        }
        let flood = async {
            for _ in 0..64 {
                if raw.stream.write_all(&pings).await.is_err() {
                    break;
                }
            }
        };
        // Once the server stops reading, our writes stall; that is the point.
        let _ = tokio::time::timeout(Duration::from_secs(3), flood).await;
        let after_flood = server.rss_kib().saturating_sub(rss_before);
        eprintln!("a ping flood never read grew the server by {after_flood} KiB");
        assert!(after_flood < 24 * 1024, "the unread pongs grew the server by {after_flood} KiB");
        bystander.finish().await;
    })
    .await;
    assert_no_panics();
}

#[tokio::test]
async fn too_many_or_too_large_headers_fail_that_call_only() {
    within(TEST_LIMIT, "too_many_or_too_large_headers_fail_that_call_only", async {
        count_panics();
        let (server, _) = start_server(|b| b).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        let mut crowded = probe.clone();
        for i in 0..300 {
            crowded = crowded.with_metadata(format!("h{i}"), "v");
        }
        let err = crowded.echo("x".into()).await.expect_err("too many headers");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(err.message().contains("300 request headers"), "{err}");

        let bulky = probe.with_metadata("blob", "b".repeat(20_000));
        let err = bulky.echo("x".into()).await.expect_err("too large");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(err.message().contains("exceeds this server's limit of 16384 bytes"), "{err}");

        // Same connection, still fine.
        assert_eq!(probe.echo("ok".into()).await.expect("echo"), "ok");
    })
    .await;
    assert_no_panics();
}

#[tokio::test]
async fn connect_attempts_that_time_out_leave_no_socket_behind() {
    within(TEST_LIMIT, "connect_attempts_that_time_out_leave_no_socket_behind", async {
        count_panics();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let closed = Arc::new(AtomicUsize::new(0));
        tokio::spawn({
            let closed = closed.clone();
            async move {
                // Accept, never answer the handshake, and count clients that hang up.
                while let Ok((mut stream, _)) = listener.accept().await {
                    let closed = closed.clone();
                    tokio::spawn(async move {
                        let mut scratch = [0u8; 64];
                        while let Ok(n) = stream.read(&mut scratch).await {
                            if n == 0 {
                                break;
                            }
                        }
                        closed.fetch_add(1, Ordering::SeqCst);
                    });
                }
            }
        });
        for _ in 0..10 {
            let err = Channel::builder(addr.to_string())
                .connect_timeout(Duration::from_millis(50))
                .connect()
                .await
                .expect_err("no handshake");
            assert!(matches!(err, courier::ConnectError::Timeout { .. }), "{err}");
        }
        eventually(Duration::from_secs(5), || closed.load(Ordering::SeqCst) >= 10).await;
        assert_eq!(closed.load(Ordering::SeqCst), 10, "every timed-out attempt closed its socket");
    })
    .await;
    assert_no_panics();
}

#[test]
fn a_channel_whose_runtime_is_gone_fails_calls_instead_of_hanging() {
    count_panics();
    let server_runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (server, state) = server_runtime.block_on(start_server(|b| b));
    let first = tokio::runtime::Runtime::new().expect("runtime");
    let probe = first.block_on(async {
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        assert_eq!(probe.echo("hi".into()).await.expect("echo"), "hi");
        probe
    });
    // A call in flight on that connection, awaited from another runtime.
    let second = tokio::runtime::Runtime::new().expect("runtime");
    let pending = second.spawn({
        let probe = probe.clone();
        async move { probe.sleep(30_000).await }
    });
    assert!(
        server_runtime.block_on(state.wait_until(Duration::from_secs(5), |s| s.started() == 1)),
        "the call reached the server"
    );
    // The connection's tasks die with the runtime that spawned them.
    drop(first);
    second.block_on(async {
        let outcome =
            within(Duration::from_secs(5), "the call whose connection's runtime is gone", pending).await;
        let status = outcome.expect("the call's task").expect_err("its connection is gone: the call fails");
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(status.message().contains("was shut down"), "{status}");
        // And the channel recovers on the runtime it is used from now.
        let reply =
            within(Duration::from_secs(5), "a call after reconnecting", probe.echo("again".into())).await;
        assert_eq!(reply.expect("reconnected"), "again");
    });
    drop(server_runtime);
    assert_no_panics();
}

#[tokio::test]
async fn a_response_over_the_clients_limit_fails_that_call_and_keeps_the_connection() {
    within(TEST_LIMIT, "a_response_over_the_clients_limit_fails_that_call_and_keeps_the_connection", async {
        count_panics();
        let (server, _) = start_server(|b| b).await;
        let channel = Channel::builder(server.local_addr().to_string())
            .max_frame_size(1024)
            .connect()
            .await
            .expect("connect");
        let probe = ProbeClient::new(channel);
        let port = probe.peer_port().await.expect("port");
        let err = probe.sized(10_000).await.expect_err("too large for this client");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(err.message().contains("exceeds this client's limit of 1024 bytes"), "{err}");
        assert_eq!(probe.sized(10).await.expect("small").len(), 10);
        assert_eq!(probe.peer_port().await.expect("port"), port, "the same connection carried on");
    })
    .await;
    assert_no_panics();
}

#[tokio::test]
async fn a_call_the_server_never_processed_is_retried_on_a_new_connection() {
    within(TEST_LIMIT, "a_call_the_server_never_processed_is_retried_on_a_new_connection", async {
        count_panics();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        tokio::spawn({
            let connections = connections.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let attempt = connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let mut raw = Raw { stream, buf: BytesMut::new() };
                        let mut preface = [0u8; 8];
                        let _ = raw.stream.read_exact(&mut preface).await;
                        raw.send(&PREFACE).await;
                        let Some(request) = raw.next_frame().await else { return };
                        let mut reply = BytesMut::new();
                        if attempt == 0 {
                            // Refuse before taking any call: nothing was processed.
                            let mut frame = FrameEncoder::begin(&mut reply, FrameKind::GoAway, 0, 0);
                            GoAway { last_call_id: 0, code: Code::Internal.as_u32(), message: "restarting" }
                                .encode(&mut reply);
                            frame.end_meta(&reply);
                            frame.finish(&mut reply, usize::MAX).expect("goaway");
                        } else {
                            let mut frame = FrameEncoder::begin(
                                &mut reply,
                                FrameKind::Response,
                                request.header.codec,
                                request.header.call_id,
                            );
                            ResponseHead::encode_ok(&mut reply);
                            frame.end_meta(&reply);
                            reply.extend_from_slice(&request.body); // echo the argument back
                            frame.finish(&mut reply, usize::MAX).expect("response");
                        }
                        raw.send(&reply).await;
                        let _ = raw.closed_within(Duration::from_secs(5)).await;
                    });
                }
            }
        });
        let probe = ProbeClient::connect(addr.to_string()).await.expect("connect");
        assert_eq!(probe.echo("once".into()).await.expect("retried transparently"), "once");
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    })
    .await;
    assert_no_panics();
}

#[tokio::test]
async fn the_server_pings_a_silent_client_and_closes_it_promptly() {
    within(TEST_LIMIT, "the_server_pings_a_silent_client_and_closes_it_promptly", async {
        count_panics();
        let interval = Duration::from_millis(200);
        let (server, _) = start_server(|b| b.keepalive_interval(Some(interval))).await;
        let mut raw = Raw::connect(server.local_addr()).await;
        raw.send(&PREFACE).await;
        let start = Instant::now();
        let ping = raw.next_frame().await.expect("a keepalive ping");
        assert_eq!(ping.header.kind, FrameKind::Ping);
        // Never answer it.
        assert!(raw.next_frame().await.is_none(), "the server gives up on us");
        let elapsed = start.elapsed();
        // Nominally two intervals, as for the client's keepalive.
        eprintln!("a silent client closed after {elapsed:?} (interval {interval:?})");
        assert!(elapsed >= interval, "not before an interval of silence: {elapsed:?}");
        assert!(elapsed < 10 * interval, "closed after {elapsed:?}");
    })
    .await;
    assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_replies_larger_than_the_write_queue_do_not_stall() {
    within(TEST_LIMIT, "bursts_of_replies_larger_than_the_write_queue_do_not_stall", async {
        count_panics();
        // Keepalive off on both ends: a stall would last forever, not one interval.
        let (server, _) = start_server(|b| b.keepalive_interval(None)).await;
        let channel = Channel::builder(server.local_addr().to_string()).keepalive_interval(None).build_lazy();
        let probe = ProbeClient::new(channel);
        for round in 0..5 {
            let calls: Vec<_> = (0..64).map(|_| probe.spawn_sized(256 * 1024)).collect();
            let all = async {
                for call in calls {
                    assert_eq!(call.await.expect("sized").len(), 256 * 1024);
                }
            };
            tokio::time::timeout(Duration::from_secs(10), all)
                .await
                .unwrap_or_else(|_| panic!("round {round}: 64 replies of 256 KiB stalled"));
        }
    })
    .await;
    assert_no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_and_replies_both_ways_do_not_deadlock() {
    within(TEST_LIMIT, "large_requests_and_replies_both_ways_do_not_deadlock", async {
        count_panics();
        let (server, _) = start_server(|b| b.keepalive_interval(None)).await;
        let channel = Channel::builder(server.local_addr().to_string()).keepalive_interval(None).build_lazy();
        let probe = ProbeClient::new(channel);
        let big = "y".repeat(1 << 20);
        let calls: Vec<_> = (0..64).map(|_| probe.spawn_echo(big.clone())).collect();
        let all = async {
            for call in calls {
                assert_eq!(call.await.expect("echo").len(), 1 << 20);
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .expect("64 echoes of 1 MiB both ways completed");
    })
    .await;
    assert_no_panics();
}

/// A bare HTTP/2 server that resets the first `refuse` streams it is sent
/// with `REFUSED_STREAM` (as a server over its stream limit does: the
/// call never ran) and answers the others with the gRPC reply `reply`
/// (JSON). Counts connections and streams, and records the paths called.
struct RefusingServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    streams: Arc<AtomicUsize>,
    paths: Arc<std::sync::Mutex<Vec<String>>>,
}

impl RefusingServer {
    async fn start(refuse: usize, reply: &str) -> RefusingServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let streams = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
        // One gRPC message: uncompressed, 4-byte length, the JSON.
        let mut message = BytesMut::new();
        message.extend_from_slice(&[0]);
        message.extend_from_slice(&u32::try_from(reply.len()).expect("short reply").to_be_bytes());
        message.extend_from_slice(reply.as_bytes());
        let message = message.freeze();
        tokio::spawn({
            let (connections, streams, paths) = (connections.clone(), streams.clone(), paths.clone());
            async move {
                while let Ok((socket, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (streams, paths, message) = (streams.clone(), paths.clone(), message.clone());
                    tokio::spawn(async move {
                        let Ok(mut connection) = h2::server::handshake(socket).await else { return };
                        // Accepting drives the connection; each stream is
                        // answered on a task of its own.
                        while let Some(Ok((request, mut respond))) = connection.accept().await {
                            paths.lock().expect("paths").push(request.uri().path().to_owned());
                            if streams.fetch_add(1, Ordering::SeqCst) < refuse {
                                respond.send_reset(h2::Reason::REFUSED_STREAM);
                                continue;
                            }
                            let content_type = request.headers().get("content-type").cloned();
                            let message = message.clone();
                            tokio::spawn(async move {
                                let mut body = request.into_body();
                                while let Some(Ok(chunk)) = body.data().await {
                                    let _ = body.flow_control().release_capacity(chunk.len());
                                }
                                let mut response = http::Response::builder().status(200);
                                if let Some(content_type) = content_type {
                                    response = response.header("content-type", content_type);
                                }
                                let response = response.body(()).expect("response head");
                                let Ok(mut send) = respond.send_response(response, false) else { return };
                                let _ = send.send_data(message, false);
                                let mut trailers = http::HeaderMap::new();
                                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                                let _ = send.send_trailers(trailers);
                            });
                        }
                    });
                }
            }
        });
        RefusingServer { addr, connections, streams, paths }
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("paths").clone()
    }
}

#[tokio::test]
async fn a_grpc_stream_refused_unprocessed_is_retried_even_for_a_non_idempotent_method() {
    count_panics();
    within(TEST_LIMIT, "the refused-stream retry", async {
        let (_, echo) = ProbeClient::DESCRIPTOR.method("Echo").expect("Echo");
        assert!(!echo.idempotent, "the point: a call that must not run twice");
        let server = RefusingServer::start(1, r#""once""#).await;
        let channel = Channel::builder(server.addr.to_string()).grpc().connect().await.expect("connect");
        let probe = ProbeClient::new(channel);
        let reply = probe.echo("once".into()).await.expect("the refused stream is retried transparently");
        assert_eq!(reply, "once");
        assert_eq!(server.paths(), ["/Probe/Echo", "/Probe/Echo"], "refused once, then answered");
        // REFUSED_STREAM refuses one stream, not the connection.
        assert_eq!(server.connections.load(Ordering::SeqCst), 1, "retried on the same connection");
    })
    .await;
    assert_no_panics();
}

#[tokio::test]
async fn a_grpc_stream_refused_every_time_fails_after_a_bounded_number_of_tries() {
    count_panics();
    within(TEST_LIMIT, "the refused-stream retries", async {
        let server = RefusingServer::start(usize::MAX, r#""never""#).await;
        let channel = Channel::builder(server.addr.to_string()).grpc().connect().await.expect("connect");
        let err = ProbeClient::new(channel).echo("once".into()).await.expect_err("refused every time");
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(err.message().contains("refused the stream"), "{err}");
        // Three tries (resilience/retry.rs: MAX_DRAIN_RETRIES), then it gives up.
        assert_eq!(server.streams.load(Ordering::SeqCst), 3, "{:?}", server.paths());
    })
    .await;
    assert_no_panics();
}
