//! Streams over courier's native protocol, on real TCP: all three kinds,
//! errors and deadlines mid-stream, cancellation reaching the handler,
//! flow control bounding a slow consumer's sender, a connection cut
//! mid-stream, and streams interleaved with unary calls on one connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier::stream::{StreamExt, channel};
use courier::{Channel, Code, Context, ResponseStream, Status, Streaming};
use courier_tests::{Proxy, within};

const TEST_LIMIT: Duration = Duration::from_secs(60);

#[courier::service]
pub trait Feed {
    /// `n` numbers from `from`.
    async fn count(&self, from: u64, n: u64) -> ResponseStream<u64>;
    /// The sum of the numbers sent.
    async fn sum(&self, numbers: Streaming<u64>) -> Result<u64, Status>;
    /// Each word back, upper-cased, as it arrives.
    async fn shout(&self, words: Streaming<String>) -> ResponseStream<String>;
    /// `n` numbers, then an error.
    async fn fail_after(&self, n: u64) -> Result<ResponseStream<u64>, Status>;
    /// Numbers forever, one per millisecond; the handler's drop is recorded.
    async fn forever(&self, cx: &Context, tag: String) -> ResponseStream<u64>;
    /// `n` blobs of `size` bytes, as fast as flow control allows, counting
    /// what the handler produced.
    async fn blobs(&self, n: u64, size: u64) -> ResponseStream<Vec<u8>>;
    /// A unary call beside the streams.
    async fn ping(&self, x: u64) -> u64;
}

#[derive(Clone, Default)]
struct FeedImpl {
    /// When a `forever` handler was dropped.
    dropped: Arc<std::sync::Mutex<Option<Instant>>>,
    /// Blobs the `blobs` handler has produced.
    produced: Arc<AtomicU64>,
}

/// Records when the stream holding it is dropped.
struct DropWatch(Arc<std::sync::Mutex<Option<Instant>>>);

impl Drop for DropWatch {
    fn drop(&mut self) {
        *self.0.lock().expect("lock") = Some(Instant::now());
    }
}

impl Feed for FeedImpl {
    async fn count(&self, from: u64, n: u64) -> ResponseStream<u64> {
        ResponseStream::iter(from..from + n)
    }

    async fn sum(&self, mut numbers: Streaming<u64>) -> Result<u64, Status> {
        let mut sum = 0u64;
        while let Some(n) = numbers.message().await? {
            sum += n;
        }
        Ok(sum)
    }

    async fn shout(&self, words: Streaming<String>) -> ResponseStream<String> {
        ResponseStream::new(words.map(|word| word.map(|w| w.to_uppercase())))
    }

    async fn fail_after(&self, n: u64) -> Result<ResponseStream<u64>, Status> {
        if n > 1000 {
            return Err(Status::invalid_argument("too many"));
        }
        let items = (0..n).map(Ok).chain(std::iter::once(Err(Status::not_found("the data ran out"))));
        Ok(ResponseStream::new(courier::stream::iter(items)))
    }

    async fn forever(&self, _cx: &Context, _tag: String) -> ResponseStream<u64> {
        let watch = DropWatch(self.dropped.clone());
        ResponseStream::new(futures_util::stream::unfold((0u64, watch), |(n, watch)| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Some((Ok(n), (n + 1, watch)))
        }))
    }

    async fn blobs(&self, n: u64, size: u64) -> ResponseStream<Vec<u8>> {
        let produced = self.produced.clone();
        let size = usize::try_from(size).unwrap_or(0).min(1 << 20);
        ResponseStream::new(courier::stream::iter(0..n).map(move |i| {
            produced.fetch_add(1, Ordering::SeqCst);
            Ok(vec![u8::try_from(i % 251).unwrap_or(0); size])
        }))
    }

    async fn ping(&self, x: u64) -> u64 {
        x
    }
}

/// Whether a `forever` handler is dropped within 5 s.
async fn handler_dropped(feed: &FeedImpl) -> bool {
    courier_tests::eventually(Duration::from_secs(5), || feed.dropped.lock().expect("lock").is_some()).await
}

async fn start() -> (courier::ServerHandle, FeedImpl) {
    let feed = FeedImpl::default();
    let server = courier::Server::builder()
        .add_service(FeedServer::new(feed.clone()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start();
    (server, feed)
}

async fn client(addr: std::net::SocketAddr) -> FeedClient {
    FeedClient::new(Channel::builder(addr.to_string()).pool_size(1).build_lazy())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_each_way_in_order() {
    within(TEST_LIMIT, "ten_thousand_messages_each_way_in_order", async {
        let (server, _) = start().await;
        let feed = client(server.local_addr()).await;

        let mut numbers = feed.count(5, 10_000).await.expect("open");
        let mut expected = 5;
        while let Some(n) = numbers.message().await.expect("message") {
            assert_eq!(n, expected, "in order");
            expected += 1;
        }
        assert_eq!(expected, 10_005, "all 10,000 arrived, then a clean end");

        let sum = feed.sum(courier::stream::iter(1..=10_000u64)).await.expect("sum");
        assert_eq!(sum, 10_000 * 10_001 / 2);

        let words: Vec<String> = (0..10_000).map(|i| format!("w{i}")).collect();
        let shouted: Vec<String> = feed
            .shout(courier::stream::iter(words.clone()))
            .await
            .expect("open")
            .map(|word| word.expect("word"))
            .collect()
            .await;
        assert_eq!(shouted, words.iter().map(|w| w.to_uppercase()).collect::<Vec<_>>());
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidirectional_echo_that_sends_only_after_each_reply() {
    within(TEST_LIMIT, "a_bidirectional_echo_that_sends_only_after_each_reply", async {
        let (server, _) = start().await;
        let feed = client(server.local_addr()).await;
        let (sender, words) = channel::<String>(1);
        sender.send("hello".into()).await.expect("first");
        let mut replies = feed.shout(words).await.expect("open");
        for i in 0..500 {
            let reply = replies.message().await.expect("reply").expect("not ended");
            let expected = if i == 0 { "HELLO".to_string() } else { format!("NEXT {}", i - 1) };
            assert_eq!(reply, expected);
            sender.send(format!("next {i}")).await.expect("send after the reply");
        }
        drop(sender);
        assert_eq!(replies.message().await.expect("last").as_deref(), Some("NEXT 499"));
        assert_eq!(replies.message().await.expect("end"), None, "the server ends after our half-close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_mid_stream_ends_it_with_that_status_after_the_messages() {
    within(TEST_LIMIT, "an_error_mid_stream_ends_it_with_that_status_after_the_messages", async {
        let (server, _) = start().await;
        let feed = client(server.local_addr()).await;
        let mut numbers = feed.fail_after(3).await.expect("open");
        for expected in 0..3 {
            assert_eq!(numbers.message().await.expect("message"), Some(expected));
        }
        let end = numbers.message().await.expect_err("the error, not a clean end");
        assert_eq!(end.code(), Code::NotFound);
        assert_eq!(end.message(), "the data ran out");
        assert!(numbers.message().await.expect("after the error").is_none());

        // Refused before any message: the handler's own error.
        let mut refused = feed.fail_after(5_000).await.expect("open");
        assert_eq!(refused.message().await.expect_err("refused").code(), Code::InvalidArgument);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_expiring_mid_stream_fails_it_and_stops_the_handler() {
    within(TEST_LIMIT, "a_deadline_expiring_mid_stream_fails_it_and_stops_the_handler", async {
        let (server, feed_state) = start().await;
        let feed = client(server.local_addr()).await.with_timeout(Duration::from_millis(300));
        let mut numbers = feed.forever("deadline".into()).await.expect("open");
        let mut got = 0;
        let end = loop {
            match numbers.message().await {
                Ok(Some(_)) => got += 1,
                Ok(None) => panic!("a stream cut by its deadline ended cleanly after {got} messages"),
                Err(status) => break status,
            }
        };
        assert!(got > 10, "messages flowed before the deadline: {got}");
        assert_eq!(end.code(), Code::DeadlineExceeded, "{end}");
        // The server had the same deadline: its handler is gone too.
        assert!(handler_dropped(&feed_state).await, "the handler is dropped");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_cancels_reaches_the_handler_at_once() {
    within(TEST_LIMIT, "a_caller_that_cancels_reaches_the_handler_at_once", async {
        let (server, feed_state) = start().await;
        let feed = client(server.local_addr()).await;
        let mut numbers = feed.forever("cancel".into()).await.expect("open");
        for _ in 0..5 {
            numbers.message().await.expect("message").expect("not ended");
        }
        let cancelled = Instant::now();
        drop(numbers);
        assert!(handler_dropped(&feed_state).await, "the handler is dropped");
        let dropped = feed_state.dropped.lock().expect("lock").expect("dropped");
        let after = dropped.saturating_duration_since(cancelled);
        assert!(after < Duration::from_millis(10), "the handler saw the cancel {after:?} later");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_bounds_the_senders_buffer_and_other_calls_go_on() {
    within(TEST_LIMIT, "a_slow_consumer_bounds_the_senders_buffer_and_other_calls_go_on", async {
        let (server, feed_state) = start().await;
        let feed = client(server.local_addr()).await;
        const SIZE: u64 = 4096;
        let mut blobs = feed.blobs(1_000, SIZE).await.expect("open");
        // What the sender may have out at most: the window, in messages
        // with their frame headers, plus the one that crossed it, plus the
        // one the handler has produced and is waiting to send.
        let window = u64::from(courier::stream::credit::DEFAULT_STREAM_WINDOW);
        let bound = window / (SIZE + 16) + 2;
        let mut worst = 0;
        for read in 1..=40u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let blob = blobs.message().await.expect("blob").expect("not ended");
            assert_eq!(blob.len(), usize::try_from(SIZE).expect("size"));
            let ahead = feed_state.produced.load(Ordering::SeqCst) - read;
            worst = worst.max(ahead);
            assert!(
                ahead <= bound,
                "the handler got {ahead} messages ahead of a reader at 1 per 10 ms (bound {bound})"
            );
            // Meanwhile, unary calls on the same connection are answered.
            if read % 10 == 0 {
                let started = Instant::now();
                for x in 0..20 {
                    assert_eq!(feed.ping(x).await.expect("ping"), x);
                }
                assert!(started.elapsed() < Duration::from_secs(2), "unary calls were held up by the stream");
            }
        }
        assert!(worst >= bound - 3, "the sender did run ahead up to its window: {worst} of {bound}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_stream_is_an_error_at_both_ends() {
    within(TEST_LIMIT, "a_connection_killed_mid_stream_is_an_error_at_both_ends", async {
        let (server, feed_state) = start().await;
        let proxy = Proxy::start(server.local_addr()).await;
        let feed = client(proxy.addr).await;
        let mut numbers = feed.forever("killed".into()).await.expect("open");
        for _ in 0..5 {
            numbers.message().await.expect("message").expect("not ended");
        }
        proxy.block();
        let end = loop {
            match numbers.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a stream cut by a lost connection ended cleanly"),
                Err(status) => break status,
            }
        };
        assert_eq!(end.code(), Code::Unavailable, "{end}");
        assert!(handler_dropped(&feed_state).await, "the server drops the handler");

        // The sending side of a client stream sees it too.
        let (sender, numbers) = channel::<u64>(4);
        let proxy = Proxy::start(server.local_addr()).await;
        let feed = client(proxy.addr).await;
        let sum = tokio::spawn(async move { feed.sum(numbers).await });
        sender.send(1).await.expect("first");
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.block();
        let failed = sum.await.expect("task").expect_err("the sum cannot complete");
        assert_eq!(failed.code(), Code::Unavailable, "{failed}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_unary_calls_interleave_on_one_connection_at_64_in_flight() {
    within(TEST_LIMIT, "streams_and_unary_calls_interleave_on_one_connection_at_64_in_flight", async {
        let (server, _) = start().await;
        let feed = client(server.local_addr()).await;
        let tasks: Vec<_> = (0..64u64)
            .map(|task| {
                let feed = feed.clone();
                tokio::spawn(async move {
                    for round in 0..20u64 {
                        if task % 2 == 0 {
                            let from = task * 1_000_000 + round * 1_000;
                            let got: Vec<u64> = feed
                                .count(from, 200)
                                .await
                                .expect("open")
                                .map(|n| n.expect("message"))
                                .collect()
                                .await;
                            assert_eq!(
                                got,
                                (from..from + 200).collect::<Vec<_>>(),
                                "every message, in order"
                            );
                        } else {
                            let x = task * 1_000 + round;
                            assert_eq!(feed.ping(x).await.expect("ping"), x);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
    })
    .await;
}

#[tokio::test]
async fn a_streaming_method_refuses_a_unary_call_and_describes_itself() {
    within(TEST_LIMIT, "a_streaming_method_refuses_a_unary_call_and_describes_itself", async {
        let (server, _) = start().await;
        let channel = Channel::connect(server.local_addr().to_string()).await.expect("connect");
        let refused = channel
            .unary_bytes("Feed.Count", bytes::Bytes::from_static(b"\x01\x02"), &courier::CallOptions::new())
            .await
            .expect_err("a stream cannot be called as unary");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("streaming method"), "{refused}");

        let kinds: Vec<_> = FeedClient::DESCRIPTOR.methods.iter().map(|m| (m.name, m.kind)).collect();
        assert!(kinds.contains(&("Count", courier::MethodKind::ServerStreaming)));
        assert!(kinds.contains(&("Sum", courier::MethodKind::ClientStreaming)));
        assert!(kinds.contains(&("Shout", courier::MethodKind::Bidirectional)));
        assert!(kinds.contains(&("Ping", courier::MethodKind::Unary)));
        let sum = FeedClient::DESCRIPTOR.method("Sum").expect("sum").1;
        assert_eq!(sum.args[0].ty, "u64", "a client stream's argument is its message type");
    })
    .await;
}

/// `curl` (as a user would run it) against the server, returning stdout.
fn curl(args: &[&str]) -> String {
    let output = std::process::Command::new("curl").args(args).output().expect("run curl");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_streams_replies_as_json_lines_or_server_sent_events() {
    within(TEST_LIMIT, "http_json_streams_replies_as_json_lines_or_server_sent_events", async {
        let (server, _) = start().await;
        let url = format!("http://{}/Feed/Count", server.local_addr());
        let lines = tokio::task::spawn_blocking({
            let url = url.clone();
            move || {
                curl(&[
                    "-sN",
                    "-i",
                    "-X",
                    "POST",
                    &url,
                    "-H",
                    "content-type: application/json",
                    "-d",
                    r#"{"from":7,"n":3}"#,
                ])
            }
        })
        .await
        .expect("curl");
        assert!(lines.starts_with("HTTP/1.1 200"), "{lines}");
        assert!(lines.to_ascii_lowercase().contains("content-type: application/x-ndjson"), "{lines}");
        let body = lines.split("\r\n\r\n").nth(1).expect("a body");
        assert_eq!(body, "7\n8\n9\n", "one JSON value per line");

        let events = tokio::task::spawn_blocking({
            let url = url.clone();
            move || {
                curl(&[
                    "-sN",
                    "-X",
                    "POST",
                    &url,
                    "-H",
                    "accept: text/event-stream",
                    "-d",
                    r#"{"from":1,"n":2}"#,
                ])
            }
        })
        .await
        .expect("curl");
        assert_eq!(events, "data: 1\n\ndata: 2\n\n");

        // An error after replies is the last line; before any, the status.
        let failing = format!("http://{}/Feed/FailAfter", server.local_addr());
        let tail = tokio::task::spawn_blocking({
            let failing = failing.clone();
            move || curl(&["-sN", "-X", "POST", &failing, "-d", "2"])
        })
        .await
        .expect("curl");
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines[..2], ["0", "1"], "{tail}");
        let last: serde_json::Value = serde_json::from_str(lines[2]).expect("an error line");
        assert_eq!(last["error"]["code"], "NOT_FOUND", "{tail}");
        let refused = tokio::task::spawn_blocking(move || {
            curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", &failing, "-d", "5000"])
        })
        .await
        .expect("curl");
        assert_eq!(refused, "400", "an error before any reply answers its HTTP status");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_client_that_leaves_mid_stream_stops_the_handler() {
    within(TEST_LIMIT, "an_http_client_that_leaves_mid_stream_stops_the_handler", async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, feed_state) = start().await;
        let mut stream = tokio::net::TcpStream::connect(server.local_addr()).await.expect("connect");
        let body = r#""tag""#;
        let request = format!(
            "POST /Feed/Forever HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("\n3\n") {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
        drop(stream);
        assert!(
            handler_dropped(&feed_state).await,
            "the handler is dropped when the HTTP client leaves"
        );
    })
    .await;
}

#[tokio::test]
async fn json_rpc_refuses_a_streaming_method_with_a_clear_error() {
    within(TEST_LIMIT, "json_rpc_refuses_a_streaming_method_with_a_clear_error", async {
        let (server, _) = start().await;
        let mut rpc = courier_tests::JsonRpc::connect(server.local_addr()).await;
        let reply = rpc.call("Feed.Count", serde_json::json!({"from": 1, "n": 2}), 1).await;
        let error = reply["error"].as_str().expect("an error");
        assert!(error.contains("Feed.Count is a server-streaming method"), "{error}");
        assert!(error.contains("JSON-RPC cannot carry"), "{error}");
        // The connection goes on serving unary calls.
        let reply = rpc.call("Feed.Ping", serde_json::json!(7), 2).await;
        assert_eq!(reply["result"], 7, "{reply}");
    })
    .await;
}
