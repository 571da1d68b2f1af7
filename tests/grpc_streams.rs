//! Streaming calls over gRPC: all four kinds of method between courier and
//! Python's grpcio both ways (the pinned virtualenv under `target/pyenv`;
//! see `support/python.rs`), and grpc's own `route_guide.proto`, compiled
//! by courier-build, natively and over gRPC.
//!
//! What must hold, whoever is on the other end: 10,000 messages each way;
//! replies sent one by one (a bidirectional echo in lockstep); an error
//! status mid-stream after the messages before it; a deadline expiring
//! mid-stream; a cancel the server's handler notices within 10 ms; a
//! stream cut short ending in an error, never a clean end; and a reader
//! that stops reading bounding what its sender produces.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use courier::{Channel, Code, Context, ResponseStream, Status, Streaming};
use courier_tests::python::{PythonServer, python, python_stubs_of, tests_dir};
use courier_tests::routeguide::{self, Feature, Point, Rectangle, RouteGuideClient, RouteNote, RouteSummary};
use courier_tests::streams::{
    self, CancelReport, Chunk, Empty, ProduceRequest, StreamsClient, StreamsServer, Summary,
};
use courier_tests::{Proxy, eventually};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::process::Command;

const N: u64 = 10_000;

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(0))
}

// ---------------------------------------------------------------------------
// The courier implementation of streams.Streams.

#[derive(Default)]
struct StreamsState {
    /// When a handler last noticed its client go (µs since the epoch).
    last_cancel: AtomicU64,
    /// Chunks `Produce` has handed to the runtime.
    produced: AtomicU64,
}

#[derive(Clone, Default)]
struct StreamsImpl {
    state: Arc<StreamsState>,
}

/// Dropped with the handler's reply stream: if that stream had not ended,
/// its client went away, and this records when the handler noticed.
struct NoticeCancel {
    state: Arc<StreamsState>,
    ended: bool,
}

impl NoticeCancel {
    /// The stream ended (cleanly or with its error): no cancel.
    fn finish(mut self) {
        self.ended = true;
    }
}

impl Drop for NoticeCancel {
    fn drop(&mut self) {
        if !self.ended {
            self.state.last_cancel.store(now_micros(), Ordering::SeqCst);
        }
    }
}

fn code_of(code: i32) -> Code {
    Code::from_u32(u32::try_from(code).unwrap_or(2))
}

impl streams::Streams for StreamsImpl {
    async fn produce(&self, _cx: &Context, request: ProduceRequest) -> Result<ResponseStream<Chunk>, Status> {
        let guard = NoticeCancel { state: self.state.clone(), ended: false };
        let replies = futures_util::stream::unfold((0u32, guard), move |(seq, mut guard)| async move {
            if seq == request.count {
                guard.finish();
                return None;
            }
            if request.fail_code != 0 && seq == request.fail_after {
                guard.ended = true;
                return Some((
                    Err(Status::new(code_of(request.fail_code), format!("failed after {seq}"))),
                    (request.count, guard),
                ));
            }
            if request.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(u64::from(request.delay_ms))).await;
            }
            guard.state.produced.fetch_add(1, Ordering::SeqCst);
            let chunk =
                Chunk { seq: u64::from(seq), payload: vec![b'p'; request.size as usize], fail_code: 0 };
            Some((Ok(chunk), (seq + 1, guard)))
        });
        Ok(ResponseStream::new(replies))
    }

    async fn consume(&self, _cx: &Context, mut requests: Streaming<Chunk>) -> Result<Summary, Status> {
        let mut summary = Summary::default();
        while let Some(chunk) = requests.message().await? {
            if chunk.fail_code != 0 {
                return Err(Status::new(code_of(chunk.fail_code), format!("failed at {}", chunk.seq)));
            }
            summary.count += 1;
            summary.bytes += chunk.payload.len() as u64;
            summary.last_seq = chunk.seq;
        }
        Ok(summary)
    }

    async fn echo(&self, _cx: &Context, requests: Streaming<Chunk>) -> Result<ResponseStream<Chunk>, Status> {
        let guard = NoticeCancel { state: self.state.clone(), ended: false };
        let replies =
            futures_util::stream::unfold((requests, guard), |(mut requests, mut guard)| async move {
                match requests.next().await {
                    None => {
                        guard.finish();
                        None
                    }
                    Some(Ok(chunk)) if chunk.fail_code != 0 => {
                        guard.ended = true;
                        let status =
                            Status::new(code_of(chunk.fail_code), format!("failed at {}", chunk.seq));
                        Some((Err(status), (requests, guard)))
                    }
                    Some(item) => Some((item, (requests, guard))),
                }
            });
        Ok(ResponseStream::new(replies))
    }

    async fn last_cancel(&self, _cx: &Context, _request: Empty) -> Result<CancelReport, Status> {
        Ok(CancelReport { unix_micros: self.state.last_cancel.load(Ordering::SeqCst) })
    }
}

async fn start_streams_server() -> (courier::ServerHandle, Arc<StreamsState>) {
    let service = StreamsImpl::default();
    let state = service.state.clone();
    let server = courier::Server::builder()
        .add_service(StreamsServer::new(service))
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start();
    (server, state)
}

async fn grpc_channel(addr: impl std::fmt::Display) -> Channel {
    Channel::builder(addr.to_string()).grpc().connect().await.expect("connect over gRPC")
}

// ---------------------------------------------------------------------------
// The same calls from courier's client, against any server of the service.

fn chunks(count: u64, size: usize) -> impl futures_util::Stream<Item = Chunk> + Send + 'static {
    futures_util::stream::iter((0..count).map(move |seq| Chunk {
        seq,
        payload: vec![b'c'; size],
        fail_code: 0,
    }))
}

/// Every kind of call and every failure, asserted the same whoever serves.
async fn exercise(client: &StreamsClient) {
    // Server-streaming: 10,000 replies in order, then a clean end.
    let mut replies = client
        .produce(ProduceRequest { count: N as u32, size: 100, ..Default::default() })
        .await
        .expect("open");
    let mut next = 0;
    while let Some(chunk) = replies.message().await.expect("no error") {
        assert_eq!((chunk.seq, chunk.payload.len()), (next, 100));
        next += 1;
    }
    assert_eq!(next, N, "every reply arrived");

    // Messages of megabytes, each larger than every window on the way.
    let big: Vec<usize> = client
        .produce(ProduceRequest { count: 3, size: 2_000_000, ..Default::default() })
        .await
        .expect("open")
        .map(|chunk| chunk.expect("no error").payload.len())
        .collect()
        .await;
    assert_eq!(big, [2_000_000; 3]);
    let summary = client.consume(chunks(3, 2_000_000)).await.expect("consume");
    assert_eq!((summary.count, summary.bytes), (3, 6_000_000));

    // Client-streaming: 10,000 requests, one summary.
    let summary = client.consume(chunks(N, 100)).await.expect("consume");
    assert_eq!((summary.count, summary.bytes, summary.last_seq), (N, N * 100, N - 1));

    // Bidirectional: 10,000 each way, as fast as flow control allows.
    let mut echoed = client.echo(chunks(N, 100)).await.expect("open");
    let mut next = 0;
    while let Some(chunk) = echoed.message().await.expect("no error") {
        assert_eq!(chunk.seq, next);
        next += 1;
    }
    assert_eq!(next, N);

    // Bidirectional in lockstep: each request only after the reply to the
    // one before. A side that batched replies would stall here.
    let (sender, requests) = courier::stream::channel(1);
    let mut echoed = client.echo(requests).await.expect("open");
    sender.send(Chunk { seq: 0, ..Default::default() }).await.expect("send");
    for seq in 0..100 {
        let reply = tokio::time::timeout(Duration::from_secs(5), echoed.message())
            .await
            .expect("each reply comes before the next request")
            .expect("no error")
            .expect("a reply");
        assert_eq!(reply.seq, seq);
        if seq < 99 {
            sender.send(Chunk { seq: seq + 1, ..Default::default() }).await.expect("send");
        }
    }
    drop(sender);
    assert!(echoed.message().await.expect("clean end").is_none());

    // An error status mid-stream: the replies before it, then the status,
    // then nothing.
    let mut replies = client
        .produce(ProduceRequest { count: 100, fail_after: 10, fail_code: 9, ..Default::default() })
        .await
        .expect("open");
    for seq in 0..10 {
        assert_eq!(replies.message().await.expect("before the error").expect("a reply").seq, seq);
    }
    let err = replies.message().await.expect_err("the error");
    assert_eq!((err.code(), err.message()), (Code::FailedPrecondition, "failed after 10"));
    assert!(replies.next().await.is_none(), "nothing after the error");

    // A client-streaming call failing mid-stream.
    let requests = futures_util::stream::iter((0..N).map(|seq| Chunk {
        seq,
        payload: Vec::new(),
        fail_code: if seq == 500 { 5 } else { 0 },
    }));
    let err = client.consume(requests).await.expect_err("fails");
    assert_eq!((err.code(), err.message()), (Code::NotFound, "failed at 500"));

    // The caller's deadline expiring mid-stream: some replies, then
    // DeadlineExceeded, on time.
    let started = Instant::now();
    let mut replies = client
        .with_timeout(Duration::from_millis(300))
        .produce(ProduceRequest { count: 1000, delay_ms: 20, ..Default::default() })
        .await
        .expect("open");
    let mut received = 0;
    let err = loop {
        match replies.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("a stream cut by its deadline ended cleanly after {received}"),
            Err(err) => break err,
        }
    };
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(received > 0 && received < 1000, "{received} replies before the deadline");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());

    // The caller going away: the server's handler notices within 10 ms.
    let mut replies = client
        .produce(ProduceRequest { count: 1_000_000, delay_ms: 2, ..Default::default() })
        .await
        .expect("open");
    for _ in 0..5 {
        replies.message().await.expect("no error").expect("a reply");
    }
    let cancelled_at = now_micros();
    drop(replies);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = client.last_cancel(Empty {}).await.expect("report");
    assert!(
        report.unix_micros >= cancelled_at,
        "the handler noticed the cancel: {report:?} vs {cancelled_at}"
    );
    let noticed = report.unix_micros - cancelled_at;
    eprintln!("courier client cancel noticed after {noticed} µs");
    assert!(noticed < 10_000, "the handler noticed the cancel after {noticed} µs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_streams_to_courier_over_grpc() {
    let (server, _) = start_streams_server().await;
    let client = StreamsClient::new(grpc_channel(server.local_addr()).await);
    exercise(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_streams_to_a_python_grpcio_server() {
    let python = PythonServer::start_script("streams_server.py", "streams.proto", &[]).await;
    let client = StreamsClient::new(grpc_channel(format!("127.0.0.1:{}", python.port)).await);
    exercise(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_streams_to_courier() {
    let (server, state) = start_streams_server().await;
    let stubs = python_stubs_of("streams.proto").await;
    let output = Command::new(python())
        .arg(tests_dir().join("python/streams_client.py"))
        .arg(server.local_addr().to_string())
        .arg(stubs.path())
        .output()
        .await
        .expect("run python");
    assert!(
        output.status.success(),
        "streams_client.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("JSON");

    assert_eq!(out["produce"], json!({"received": N, "ordered": true}));
    assert_eq!(out["consume"], json!({"count": N, "bytes": N * 100, "last_seq": N - 1}));
    assert_eq!(out["echo"], json!({"received": N, "ordered": true}));
    assert_eq!(out["lockstep"], json!({"received": 100, "ordered": true}));
    assert_eq!(out["gzip"], json!({"received": 50, "same": true}));
    assert_eq!(
        out["error"],
        json!({"received": 10, "failure": {"code": "FAILED_PRECONDITION", "details": "failed after 10"}})
    );
    assert_eq!(out["consume_error"], json!({"code": "NOT_FOUND", "details": "failed at 500"}));
    let deadline = &out["deadline"];
    assert_eq!(deadline["failure"]["code"], "DEADLINE_EXCEEDED", "{deadline}");
    let received = deadline["received"].as_u64().expect("received");
    assert!(received > 0 && received < 1000, "{deadline}");
    assert!(deadline["elapsed_ms"].as_u64().is_some_and(|ms| ms < 1500), "{deadline}");

    let cancelled_at = out["cancel"]["cancelled_at"].as_u64().expect("cancelled_at");
    assert!(
        eventually(Duration::from_secs(2), || state.last_cancel.load(Ordering::SeqCst) >= cancelled_at).await,
        "the handler noticed grpcio's cancel"
    );
    let noticed = state.last_cancel.load(Ordering::SeqCst) - cancelled_at;
    eprintln!("grpcio cancel noticed after {noticed} µs; deadline {deadline}");
    assert!(noticed < 10_000, "the handler noticed grpcio's cancel after {noticed} µs");
}

/// A connection lost mid-stream ends the stream with `Unavailable`, on both
/// sides: never a clean end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_short_is_an_error_never_a_clean_end() {
    let (server, state) = start_streams_server().await;
    let proxy = Proxy::start(server.local_addr()).await;
    let client = StreamsClient::new(grpc_channel(proxy.addr).await);
    let mut replies = client
        .produce(ProduceRequest { count: 1_000_000, delay_ms: 1, ..Default::default() })
        .await
        .expect("open");
    for _ in 0..10 {
        replies.message().await.expect("no error").expect("a reply");
    }
    let before = now_micros();
    proxy.block();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(5), replies.message()).await.expect("ends") {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a stream cut short ended cleanly"),
            Err(err) => break err,
        }
    };
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(replies.next().await.is_none());
    // The server's handler was dropped too.
    assert!(
        eventually(Duration::from_secs(2), || state.last_cancel.load(Ordering::SeqCst) >= before).await,
        "the server dropped the handler of a stream whose connection was lost"
    );
}

/// A caller that stops reading stops its sender: what the handler produces
/// stays within the windows (HTTP/2's and the pipes'), it is not buffered
/// without bound; reading again resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_bounds_what_its_sender_produces() {
    let (server, state) = start_streams_server().await;
    let client = StreamsClient::new(grpc_channel(server.local_addr()).await);
    let size = 100_000u32;
    let mut replies =
        client.produce(ProduceRequest { count: 1000, size, ..Default::default() }).await.expect("open");
    replies.message().await.expect("no error").expect("a reply");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let produced = state.produced.load(Ordering::SeqCst);
    eprintln!("produced {produced} for a reader that read one");
    // The stream's HTTP/2 window (1 MiB) and the two pipes' (64 KiB each)
    // hold a dozen of these; far fewer than the thousand asked for.
    assert!(produced < 40, "{produced} replies of {size} bytes produced for a reader that read one");
    let mut read = 1;
    while let Some(chunk) = replies.message().await.expect("no error") {
        assert_eq!(chunk.payload.len(), size as usize);
        read += 1;
    }
    assert_eq!(read, 1000);
}

// ---------------------------------------------------------------------------
// grpc's route_guide.proto, compiled by courier-build.

struct RouteGuideImpl {
    features: Vec<Feature>,
}

fn in_rectangle(point: &Point, rect: &Rectangle) -> bool {
    let (lo, hi) = (rect.lo.unwrap_or_default(), rect.hi.unwrap_or_default());
    let (left, right) = (lo.longitude.min(hi.longitude), lo.longitude.max(hi.longitude));
    let (bottom, top) = (lo.latitude.min(hi.latitude), lo.latitude.max(hi.latitude));
    (left..=right).contains(&point.longitude) && (bottom..=top).contains(&point.latitude)
}

/// Distance in metres between two E7 points (the haversine formula, as in
/// grpc's examples).
fn distance(a: &Point, b: &Point) -> i32 {
    let to_radians = |e7: i32| f64::from(e7) / 1e7 * std::f64::consts::PI / 180.0;
    let (lat1, lat2) = (to_radians(a.latitude), to_radians(b.latitude));
    let (dlat, dlon) = (lat2 - lat1, to_radians(b.longitude) - to_radians(a.longitude));
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    (6_371_000.0 * 2.0 * h.sqrt().atan2((1.0 - h).sqrt())) as i32
}

impl routeguide::RouteGuide for RouteGuideImpl {
    async fn get_feature(&self, _cx: &Context, request: Point) -> Result<Feature, Status> {
        Ok(self
            .features
            .iter()
            .find(|feature| feature.location == Some(request))
            .cloned()
            .unwrap_or(Feature { name: String::new(), location: Some(request) }))
    }

    async fn list_features(
        &self,
        _cx: &Context,
        request: Rectangle,
    ) -> Result<ResponseStream<Feature>, Status> {
        let found: Vec<Feature> = self
            .features
            .iter()
            .filter(|feature| feature.location.as_ref().is_some_and(|at| in_rectangle(at, &request)))
            .cloned()
            .collect();
        Ok(ResponseStream::iter(found))
    }

    async fn record_route(
        &self,
        _cx: &Context,
        mut requests: Streaming<Point>,
    ) -> Result<RouteSummary, Status> {
        let started = Instant::now();
        let mut summary = RouteSummary::default();
        let mut last: Option<Point> = None;
        while let Some(point) = requests.message().await? {
            summary.point_count += 1;
            if self.features.iter().any(|f| f.location == Some(point) && !f.name.is_empty()) {
                summary.feature_count += 1;
            }
            if let Some(last) = last {
                summary.distance += distance(&last, &point);
            }
            last = Some(point);
        }
        summary.elapsed_time = i32::try_from(started.elapsed().as_secs()).unwrap_or(i32::MAX);
        Ok(summary)
    }

    async fn route_chat(
        &self,
        _cx: &Context,
        requests: Streaming<RouteNote>,
    ) -> Result<ResponseStream<RouteNote>, Status> {
        // Each note comes back with every earlier note at its location, as in
        // grpc's example server.
        let notes = futures_util::stream::unfold(
            (requests, Vec::<RouteNote>::new(), std::collections::VecDeque::<RouteNote>::new()),
            |(mut requests, mut seen, mut pending)| async move {
                loop {
                    if let Some(note) = pending.pop_front() {
                        return Some((Ok(note), (requests, seen, pending)));
                    }
                    match requests.next().await? {
                        Err(status) => return Some((Err(status), (requests, seen, pending))),
                        Ok(note) => {
                            pending.extend(seen.iter().filter(|n| n.location == note.location).cloned());
                            seen.push(note);
                        }
                    }
                }
            },
        );
        Ok(ResponseStream::new(notes))
    }
}

fn point(latitude: i32, longitude: i32) -> Point {
    Point { latitude, longitude }
}

fn route_guide() -> RouteGuideImpl {
    let features = (0..20)
        .map(|i| Feature {
            name: format!("feature {i}"),
            location: Some(point(400_000_000 + i * 1000, -740_000_000)),
        })
        .collect();
    RouteGuideImpl { features }
}

async fn exercise_route_guide(client: &RouteGuideClient) {
    let found = client.get_feature(point(400_003_000, -740_000_000)).await.expect("get_feature");
    assert_eq!(found.name, "feature 3");
    let none = client.get_feature(point(1, 1)).await.expect("get_feature");
    assert_eq!((none.name.as_str(), none.location), ("", Some(point(1, 1))));

    let rect =
        Rectangle { lo: Some(point(400_005_000, -750_000_000)), hi: Some(point(400_009_000, -730_000_000)) };
    let listed: Vec<String> = client
        .list_features(rect)
        .await
        .expect("list_features")
        .map(|feature| feature.expect("no error").name)
        .collect()
        .await;
    assert_eq!(listed, (5..=9).map(|i| format!("feature {i}")).collect::<Vec<_>>());

    let route = (0..10).map(|i| point(400_000_000 + i * 1000, -740_000_000));
    let summary = client.record_route(futures_util::stream::iter(route)).await.expect("record_route");
    assert_eq!((summary.point_count, summary.feature_count), (10, 10));
    assert!((90..=110).contains(&summary.distance), "9 steps of ~11 m: {summary:?}");

    let note = |lat, message: &str| RouteNote { location: Some(point(lat, 0)), message: message.into() };
    let notes = vec![note(1, "first"), note(2, "second"), note(1, "third"), note(1, "fourth")];
    let replies: Vec<String> = client
        .route_chat(futures_util::stream::iter(notes))
        .await
        .expect("route_chat")
        .map(|note| note.expect("no error").message)
        .collect()
        .await;
    assert_eq!(replies, ["first", "first", "third"]);
}

/// A server of the route guide on 127.0.0.1:0.
async fn route_guide_server() -> courier::ServerHandle {
    courier::Server::builder()
        .add_service(routeguide::RouteGuideServer::new(route_guide()))
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_guide_works_over_grpc() {
    let server = route_guide_server().await;
    let client = RouteGuideClient::new(grpc_channel(server.local_addr()).await);
    exercise_route_guide(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_guide_works_natively() {
    let server = route_guide_server().await;
    let client = RouteGuideClient::connect(server.local_addr().to_string()).await.expect("connect");
    exercise_route_guide(&client).await;
}

/// gRPC reflection describes the streaming methods as such (grpcio's
/// reflection client reads the flags from the served descriptors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_describes_route_guides_streams() {
    let server = route_guide_server().await;
    let output = Command::new(python())
        .arg(tests_dir().join("python/reflect_methods.py"))
        .arg(server.local_addr().to_string())
        .arg("routeguide.RouteGuide")
        .output()
        .await
        .expect("run python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let out: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        out,
        json!({
            "GetFeature": {"client_streaming": false, "server_streaming": false},
            "ListFeatures": {"client_streaming": false, "server_streaming": true},
            "RecordRoute": {"client_streaming": true, "server_streaming": false},
            "RouteChat": {"client_streaming": true, "server_streaming": true},
        })
    );
}

// ---------------------------------------------------------------------------
// Peers that break the protocol: courier must not take a broken stream for a
// finished one.

/// How a hand-written gRPC server ends its one response stream, after one
/// message (`Chunk { seq: 7 }`).
#[derive(Clone, Copy, Debug)]
enum BadEnd {
    /// END_STREAM on a DATA frame: no trailers, so no status.
    NoTrailers,
    /// Half a message, then `grpc-status: 0`.
    HalfMessage,
    /// RST_STREAM(INTERNAL_ERROR).
    Reset,
    /// The TCP connection closes.
    ConnectionLost,
}

/// `Chunk { seq: 7 }` as a gRPC message: field 1, varint 7.
const SEQ_7: [u8; 7] = [0, 0, 0, 0, 2, 0x08, 0x07];

async fn bad_server(end: BadEnd) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((socket, _)) = listener.accept().await else { return };
        let Ok(mut conn) = h2::server::handshake(socket).await else { return };
        let Some(Ok((_request, mut respond))) = conn.accept().await else { return };
        // h2 makes progress only while its connection is polled.
        let driver = tokio::spawn(async move { while conn.accept().await.is_some() {} });
        let response = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .expect("a response");
        let Ok(mut stream) = respond.send_response(response, false) else { return };
        let _ = stream.send_data(bytes::Bytes::from_static(&SEQ_7), false);
        tokio::time::sleep(Duration::from_millis(50)).await;
        match end {
            BadEnd::NoTrailers => {
                let _ = stream.send_data(bytes::Bytes::new(), true);
            }
            BadEnd::HalfMessage => {
                let _ = stream.send_data(bytes::Bytes::from_static(&SEQ_7[..4]), false);
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                let _ = stream.send_trailers(trailers);
            }
            BadEnd::Reset => stream.send_reset(h2::Reason::INTERNAL_ERROR),
            BadEnd::ConnectionLost => {
                driver.abort();
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        driver.abort();
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_response_stream_is_an_error_never_a_clean_end() {
    for (end, expected) in [
        (BadEnd::NoTrailers, Code::Internal),
        (BadEnd::HalfMessage, Code::Internal),
        (BadEnd::Reset, Code::Internal),
        (BadEnd::ConnectionLost, Code::Unavailable),
    ] {
        let addr = bad_server(end).await;
        let client = StreamsClient::new(grpc_channel(addr).await);
        let mut replies = client.produce(ProduceRequest::default()).await.expect("open");
        let first = replies.message().await.unwrap_or_else(|err| panic!("{end:?}: {err}"));
        assert_eq!(first.map(|chunk| chunk.seq), Some(7), "{end:?}: the message before the break");
        let err = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .unwrap_or_else(|_| panic!("{end:?}: the stream never ended"))
            .expect_err(&format!("{end:?} is an error, not a clean end"));
        assert_eq!(err.code(), expected, "{end:?}: {err}");
        assert!(replies.next().await.is_none(), "{end:?}: nothing after the error");
    }
}

/// A request stream that ends in the middle of a message: the handler's
/// requests end with an error, and so does the call (`Internal`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_request_stream_fails_the_call() {
    let (server, _) = start_streams_server().await;
    let socket = tokio::net::TcpStream::connect(server.local_addr()).await.expect("connect");
    let (send, conn) = h2::client::handshake(socket).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.expect("ready");
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/streams.Streams/Consume", server.local_addr()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request");
    let (response, mut stream) = send.send_request(request, false).expect("send");
    let mut body = SEQ_7.to_vec();
    body.extend_from_slice(&SEQ_7[..4]);
    stream.send_data(bytes::Bytes::from(body), true).expect("send data");
    let response =
        tokio::time::timeout(Duration::from_secs(5), response).await.expect("answered").expect("response");
    let (parts, mut body) = response.into_parts();
    let status = match parts.headers.get("grpc-status") {
        Some(status) => status.clone(),
        None => {
            while let Some(chunk) = body.data().await {
                chunk.expect("data");
            }
            let trailers = body.trailers().await.expect("trailers").expect("some trailers");
            trailers.get("grpc-status").expect("a status").clone()
        }
    };
    assert_eq!(status, "13", "Internal for a truncated request stream");
}

/// A client (as grpc-go and grpcio do, one message per DATA frame) whose
/// requests outlive one client-streaming call after another on the same
/// connection: the calls fail at once, the client keeps sending a while.
/// The connection must go on serving (h2 counts small DATA frames against a
/// budget and closes a connection that spends it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_outlive_their_calls_do_not_cost_the_connection() {
    // A chunk failing with NotFound (field 3, `fail_code`, = 5).
    const FAIL: [u8; 7] = [0, 0, 0, 0, 2, 0x18, 0x05];
    let (server, _) = start_streams_server().await;
    let socket = tokio::net::TcpStream::connect(server.local_addr()).await.expect("connect");
    let (send, conn) = h2::client::handshake(socket).await.expect("h2 handshake");
    let connection = tokio::spawn(conn);
    let request = || {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://{}/streams.Streams/Consume", server.local_addr()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("a request")
    };
    let status_of = |response: http::Response<h2::RecvStream>| async move {
        let (parts, mut body) = response.into_parts();
        if let Some(status) = parts.headers.get("grpc-status") {
            return status.to_str().expect("ascii").to_owned();
        }
        while let Some(chunk) = body.data().await {
            let _ = chunk;
        }
        let trailers = body.trailers().await.expect("trailers").expect("some trailers");
        trailers.get("grpc-status").expect("a status").to_str().expect("ascii").to_owned()
    };
    for round in 0..40 {
        let mut send = send.clone().ready().await.unwrap_or_else(|err| panic!("round {round}: {err}"));
        let (response, mut stream) = send.send_request(request(), false).expect("send");
        stream.send_data(bytes::Bytes::from_static(&FAIL), false).expect("the failing chunk");
        for _ in 0..300 {
            let _ = stream.send_data(bytes::Bytes::from_static(&SEQ_7), false);
        }
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("answered")
            .unwrap_or_else(|err| panic!("round {round}: the connection failed: {err}"));
        assert_eq!(status_of(response).await, "5", "round {round}: the call's own failure");
        drop(stream);
    }
    // A burst of 5,000 one-message frames into one call: taken from h2 as
    // they come (h2's budget is spent while frames wait in it), their
    // window held back while the handler catches up. (Bursts of many more,
    // faster than the connection's task hands them on, exceed h2's budget
    // of about 8,000 small frames and end the connection: h2's defence
    // against floods of tiny frames, on every h2 server.)
    let mut send = send.clone().ready().await.expect("the connection is still open");
    let (response, mut stream) = send.send_request(request(), false).expect("send");
    for _ in 0..5_000 {
        let _ = stream.send_data(bytes::Bytes::from_static(&SEQ_7), false);
    }
    let _ = stream.send_data(bytes::Bytes::new(), true);
    let response =
        tokio::time::timeout(Duration::from_secs(20), response).await.expect("answered").expect("response");
    assert_eq!(status_of(response).await, "0", "every frame of the burst was taken");
    // And the connection still takes calls.
    let mut send = send.ready().await.expect("the connection is still open");
    let (response, mut stream) = send.send_request(request(), false).expect("send");
    stream.send_data(bytes::Bytes::from_static(&SEQ_7), true).expect("one chunk");
    let response =
        tokio::time::timeout(Duration::from_secs(5), response).await.expect("answered").expect("response");
    assert_eq!(status_of(response).await, "0");
    assert!(!connection.is_finished(), "the connection was not closed");
}

// ---------------------------------------------------------------------------
// A `#[courier::service]` (serde types: JSON over gRPC) streams the same way.

#[courier::service]
pub trait Words {
    /// `n` numbers from `from`.
    async fn count(&self, from: u64, n: u64) -> ResponseStream<u64>;
    /// How many words were sent.
    async fn tally(&self, words: Streaming<String>) -> Result<u64, Status>;
    /// Each word back, upper-cased.
    async fn shout(&self, words: Streaming<String>) -> ResponseStream<String>;
}

struct WordsImpl;

impl Words for WordsImpl {
    async fn count(&self, from: u64, n: u64) -> ResponseStream<u64> {
        ResponseStream::iter(from..from + n)
    }

    async fn tally(&self, mut words: Streaming<String>) -> Result<u64, Status> {
        let mut n = 0;
        while words.message().await?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    async fn shout(&self, words: Streaming<String>) -> ResponseStream<String> {
        ResponseStream::new(words.map(|word| word.map(|w| w.to_uppercase())))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serde_service_streams_over_grpc_in_json() {
    let server = courier::Server::builder()
        .add_service(WordsServer::new(WordsImpl))
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .start();
    let client = WordsClient::new(grpc_channel(server.local_addr()).await);
    let counted: Vec<u64> =
        client.count(5, 3).await.expect("open").map(|n| n.expect("no error")).collect().await;
    assert_eq!(counted, [5, 6, 7]);
    let words = || futures_util::stream::iter(["a", "b", "c"].map(String::from));
    assert_eq!(client.tally(words()).await.expect("tally"), 3);
    let shouted: Vec<String> =
        client.shout(words()).await.expect("open").map(|w| w.expect("no error")).collect().await;
    assert_eq!(shouted, ["A", "B", "C"]);
}

/// Streams whose readers stall hold their own windows, never the whole
/// connection's: calls beside them on the same connection go on. (Both ends
/// widen their connection's window per open stream; this is the client's
/// receiving end, where a caller that stops reading stalls a stream.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_do_not_starve_their_connection() {
    let (server, _) = start_streams_server().await;
    let client = StreamsClient::new(grpc_channel(server.local_addr()).await);
    let mut stalled = Vec::new();
    // Each holds up to a stream window (1 MiB) unread; eight hold twice the
    // connection's base window.
    for _ in 0..8 {
        let mut replies = tokio::time::timeout(Duration::from_secs(5), async {
            let mut replies = client
                .produce(ProduceRequest { count: 1000, size: 100_000, ..Default::default() })
                .await
                .expect("open");
            replies.message().await.expect("no error").expect("a reply");
            replies
        })
        .await
        .expect("a stream beside stalled ones opens and flows");
        replies.message().await.expect("no error").expect("a reply");
        stalled.push(replies);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = tokio::time::timeout(Duration::from_secs(5), async {
        let replies = client
            .produce(ProduceRequest { count: 20, size: 100_000, ..Default::default() })
            .await
            .expect("open");
        replies.map(|chunk| chunk.expect("no error").payload.len()).collect::<Vec<_>>().await
    })
    .await
    .expect("a stream beside eight stalled ones completes");
    assert_eq!(fresh.len(), 20);
    tokio::time::timeout(Duration::from_secs(5), client.last_cancel(Empty {}))
        .await
        .expect("a unary call beside them completes")
        .expect("answered");
    drop(stalled);
}
