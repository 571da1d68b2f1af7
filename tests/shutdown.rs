//! Graceful shutdown: stop accepting, tell clients, finish what is in
//! flight, close; on every protocol, and when the handle is dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use courier::{Channel, Code};
use courier_tests::{JsonRpc, ProbeClient, start_server, within};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test as a whole: a regression fails its test instead of hanging
/// the suite (the awaits inside have tighter limits of their own).
const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Wait until connecting to `addr` is refused: the listener is gone.
async fn until_refused(addr: SocketAddr) {
    within(Duration::from_secs(2), "new connections are refused while draining", async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_calls_in_flight_all_succeed_and_new_connections_are_refused() {
    within(TEST_LIMIT, "two_hundred_calls_in_flight_all_succeed_and_new_connections_are_refused", async {
        let (server, state) = start_server(|b| b).await;
        let addr = server.local_addr();
        let probe = ProbeClient::connect(addr.to_string()).await.expect("connect");
        // Long enough that the listener must be gone while they still run.
        let calls: Vec<_> = (0..200).map(|_| probe.spawn_sleep(3000)).collect();
        assert!(
            state.wait_until(Duration::from_secs(5), |s| s.started() == 200).await,
            "all 200 calls reached their handlers"
        );

        let shutdown = tokio::spawn(server.shutdown());
        // Once shutdown has begun, the listener is gone.
        until_refused(addr).await;
        let late = within(Duration::from_secs(5), "a late connect", Channel::connect(addr.to_string())).await;
        assert!(late.is_err(), "a new client cannot connect during the drain");
        // Refused during the drain, not only once the server had finished.
        assert_eq!(state.finished(), 0, "refused while the calls were still running");

        for call in calls {
            let reply = within(Duration::from_secs(5), "an in-flight call", call).await;
            assert_eq!(reply.expect("every in-flight call succeeds"), 3000);
        }
        assert_eq!(state.finished(), 200);
        assert_eq!(state.dropped(), 0);
        within(Duration::from_secs(5), "shutdown completes once the calls are answered", shutdown)
            .await
            .expect("join")
            .expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_in_flight_finish_during_the_drain_and_new_clients_are_refused() {
    within(TEST_LIMIT, "grpc_calls_in_flight_finish_during_the_drain_and_new_clients_are_refused", async {
        let (server, state) = start_server(|b| b).await;
        let addr = server.local_addr();
        let channel = within(
            Duration::from_secs(5),
            "gRPC connect",
            Channel::builder(addr.to_string()).grpc().connect(),
        )
        .await
        .expect("gRPC connect");
        let probe = ProbeClient::new(channel);
        let calls: Vec<_> = (0..20).map(|_| probe.spawn_sleep(500)).collect();
        assert!(
            state.wait_until(Duration::from_secs(5), |s| s.started() == 20).await,
            "all 20 calls started"
        );
        let shutdown = tokio::spawn(server.shutdown());
        until_refused(addr).await;
        // A new client cannot reach the draining server.
        let fresh = within(Duration::from_secs(5), "a late gRPC connect", async {
            let channel = Channel::builder(addr.to_string()).grpc().connect().await?;
            ProbeClient::new(channel).echo("late".into()).await
        })
        .await;
        assert_eq!(fresh.expect_err("refused").code(), Code::Unavailable);
        for call in calls {
            let reply = within(Duration::from_secs(5), "an in-flight gRPC call", call).await;
            assert_eq!(reply.expect("every in-flight gRPC call succeeds"), 500);
        }
        assert_eq!((state.finished(), state.dropped()), (20, 0));
        within(Duration::from_secs(5), "the gRPC drain", shutdown)
            .await
            .expect("join")
            .expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_calls_in_flight_are_answered_then_the_connection_closes() {
    within(TEST_LIMIT, "json_rpc_calls_in_flight_are_answered_then_the_connection_closes", async {
        let (server, state) = start_server(|b| b).await;
        let addr = server.local_addr();
        let mut rpc = JsonRpc::connect(addr).await;
        let sleep =
            |id: u64, millis: u64| json!({"method": "Probe.Sleep", "params": [millis], "id": id}).to_string();
        let asked = format!("{}{}", sleep(1, 300), sleep(2, 1500));
        rpc.send(asked.as_bytes()).await;
        assert!(state.wait_until(Duration::from_secs(5), |s| s.started() == 2).await, "both calls started");
        let shutdown = tokio::spawn(server.shutdown());
        until_refused(addr).await;
        let first = rpc.reply().await.expect("the short call's reply");
        assert_eq!(first, json!({"id": 1, "result": 300, "error": null}));
        // The server stopped reading when the drain began: a request sent now
        // is not taken (the long call is still running).
        rpc.send(sleep(3, 0).as_bytes()).await;
        let second = rpc.reply().await.expect("the long call's reply");
        assert_eq!(second, json!({"id": 2, "result": 1500, "error": null}));
        assert_eq!(rpc.reply().await, None, "then the connection closes");
        assert_eq!((state.started(), state.finished(), state.dropped()), (2, 2, 0));
        within(Duration::from_secs(5), "the JSON-RPC drain", shutdown)
            .await
            .expect("join")
            .expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_in_flight_is_answered_then_the_connection_closes() {
    within(TEST_LIMIT, "an_http_request_in_flight_is_answered_then_the_connection_closes", async {
        let (server, state) = start_server(|b| b).await;
        let addr = server.local_addr();
        let mut stream =
            within(Duration::from_secs(5), "connect", TcpStream::connect(addr)).await.expect("connect");
        let request = "POST /Probe/Sleep HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 3\r\n\r\n500";
        within(Duration::from_secs(5), "write", stream.write_all(request.as_bytes())).await.expect("write");
        assert!(state.wait_until(Duration::from_secs(5), |s| s.started() == 1).await, "the call started");
        let shutdown = tokio::spawn(server.shutdown());
        until_refused(addr).await;
        // The reply, then the close (the connection was kept alive before).
        let mut response = Vec::new();
        within(Duration::from_secs(5), "the reply and the close", stream.read_to_end(&mut response))
            .await
            .expect("read");
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("\r\n\r\n500"), "{response}");
        assert_eq!((state.finished(), state.dropped()), (1, 0));
        within(Duration::from_secs(5), "the HTTP drain", shutdown).await.expect("join").expect("clean shutdown");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_handle_shuts_down_gracefully() {
    within(TEST_LIMIT, "dropping_the_server_handle_shuts_down_gracefully", async {
        let (server, state) = start_server(|b| b).await;
        let addr = server.local_addr();
        let probe = ProbeClient::connect(addr.to_string()).await.expect("connect");
        let call = probe.spawn_sleep(500);
        assert!(state.wait_until(Duration::from_secs(5), |s| s.started() == 1).await, "the call started");
        drop(server);
        until_refused(addr).await;
        let reply = within(Duration::from_secs(5), "the in-flight call", call).await;
        assert_eq!(reply.expect("the in-flight call finishes"), 500);
        assert_eq!((state.finished(), state.dropped()), (1, 0));
    })
    .await;
}

#[tokio::test]
async fn the_drain_timeout_bounds_shutdown_and_drops_what_is_left() {
    within(TEST_LIMIT, "the_drain_timeout_bounds_shutdown_and_drops_what_is_left", async {
        let (server, state) = start_server(|b| b.drain_timeout(Duration::from_millis(200))).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        let stuck = probe.spawn_sleep(60_000);
        assert!(state.wait_until(Duration::from_secs(5), |s| s.started() == 1).await);
        let start = Instant::now();
        within(Duration::from_secs(10), "shutdown", server.shutdown()).await.expect("shutdown");
        // Far below the 60 s call: bounded by the 200 ms drain timeout.
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
        let err = within(Duration::from_secs(5), "the stuck call", stuck)
            .await
            .expect_err("the stuck call is cut off");
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(
            state.wait_until(Duration::from_secs(5), |s| s.dropped() == 1).await,
            "its handler was dropped"
        );
    })
    .await;
}

#[tokio::test]
async fn an_idle_server_shuts_down_at_once() {
    within(TEST_LIMIT, "an_idle_server_shuts_down_at_once", async {
        let (server, _) = start_server(|b| b).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        let echoed = within(Duration::from_secs(5), "echo", probe.echo("hi".into())).await;
        assert_eq!(echoed.expect("echo"), "hi");
        let start = Instant::now();
        within(Duration::from_secs(10), "shutdown", server.shutdown()).await.expect("shutdown");
        // Nothing to wait for: far below the 30 s drain timeout.
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
        let err = within(Duration::from_secs(5), "a late echo", probe.echo("anyone?".into()))
            .await
            .expect_err("the server is gone");
        assert_eq!(err.code(), Code::Unavailable);
    })
    .await;
}
