//! Graceful shutdown: stop accepting, tell clients, finish what is in
//! flight, close.

use std::time::{Duration, Instant};

use courier::{Channel, Code};
use courier_tests::{ProbeClient, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_calls_in_flight_all_succeed_and_new_connections_are_refused() {
    let (server, state) = start_server(|b| b).await;
    let addr = server.local_addr();
    let probe = ProbeClient::connect(addr.to_string()).await.expect("connect");
    let calls: Vec<_> = (0..200).map(|_| probe.spawn_sleep(500)).collect();
    assert!(
        state.wait_until(Duration::from_secs(5), |s| s.started() == 200).await,
        "all 200 calls reached their handlers"
    );

    let shutdown = tokio::spawn(server.shutdown());
    // Once shutdown has begun, the listener is gone.
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_millis(400), refused)
        .await
        .expect("new connections are refused while draining");
    let late = Channel::connect(addr.to_string()).await;
    assert!(late.is_err(), "a new client cannot connect during the drain");

    for call in calls {
        assert_eq!(call.await.expect("every in-flight call succeeds"), 500);
    }
    assert_eq!(state.finished(), 200);
    assert_eq!(state.dropped(), 0);
    tokio::time::timeout(Duration::from_secs(2), shutdown)
        .await
        .expect("shutdown completes once the calls are answered")
        .expect("join")
        .expect("clean shutdown");
}

#[tokio::test]
async fn the_drain_timeout_bounds_shutdown_and_drops_what_is_left() {
    let (server, state) = start_server(|b| b.drain_timeout(Duration::from_millis(200))).await;
    let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
    let stuck = probe.spawn_sleep(60_000);
    assert!(state.wait_until(Duration::from_secs(2), |s| s.started() == 1).await);
    let start = Instant::now();
    server.shutdown().await.expect("shutdown");
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    let err = stuck.await.expect_err("the stuck call is cut off");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(state.wait_until(Duration::from_secs(1), |s| s.dropped() == 1).await, "its handler was dropped");
}

#[tokio::test]
async fn an_idle_server_shuts_down_at_once() {
    let (server, _) = start_server(|b| b).await;
    let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
    assert_eq!(probe.echo("hi".into()).await.expect("echo"), "hi");
    let start = Instant::now();
    server.shutdown().await.expect("shutdown");
    assert!(start.elapsed() < Duration::from_millis(500), "took {:?}", start.elapsed());
    let err = probe.echo("anyone?".into()).await.expect_err("the server is gone");
    assert_eq!(err.code(), Code::Unavailable);
}
