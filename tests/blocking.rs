//! The blocking client from plain synchronous code: these tests are plain
//! `#[test]` functions with no async runtime in the calling thread.

use std::net::SocketAddr;
use std::time::Duration;

use courier::Code;
use courier_tests::{CalcError, CalculatorBlockingClient, ProbeBlockingClient};

/// A server on its own thread and runtime, as another program would be.
fn server_thread() -> SocketAddr {
    courier_tests::serve_on_thread()
}

/// Run `test` on a thread of its own and fail if it has not finished
/// within a minute: these tests block their thread, so a regression would
/// otherwise hang the suite instead of failing.
fn within_a_minute(test: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        test();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => runner.join().expect("the test thread"),
        // The test panicked: re-raise its panic here.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = runner.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("the test did not finish within 60 s"),
    }
}

#[test]
fn blocking_calls_work_without_a_runtime_in_the_caller() {
    within_a_minute(|| {
        assert!(tokio::runtime::Handle::try_current().is_err(), "no runtime here");
        let addr = server_thread();
        let calc = CalculatorBlockingClient::connect(addr.to_string()).expect("connect");
        assert_eq!(calc.add(10, 20).expect("add"), 30);
        let err = calc.div(1.0, 0.0).expect_err("division by zero");
        assert_eq!(err.app_error::<CalcError>(), Some(&CalcError::DivisionByZero));

        let probe = ProbeBlockingClient::connect(addr.to_string()).expect("connect");
        let err = probe.with_timeout(Duration::from_millis(50)).sleep(5_000).expect_err("times out");
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert_eq!(probe.with_metadata("k", "v").header("k".into()).expect("header"), Some("v".into()));

        // Many threads can share one client.
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let calc = calc.clone();
                std::thread::spawn(move || (0..100).all(|i| calc.add(t, i).ok() == Some(t + i)))
            })
            .collect();
        assert!(threads.into_iter().all(|t| t.join().expect("thread")));
    });
}

#[test]
fn a_blocking_client_works_from_spawn_blocking_and_async_contexts() {
    within_a_minute(|| {
        let addr = server_thread();
        let calc = CalculatorBlockingClient::connect(addr.to_string()).expect("connect");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        // The supported way to call sync code from async code.
        let from_blocking_thread = runtime
            .block_on(async {
                let calc = calc.clone();
                tokio::task::spawn_blocking(move || calc.add(1, 2)).await
            })
            .expect("join");
        assert_eq!(from_blocking_thread.expect("add"), 3);
        // Straight from an async task: it blocks that worker, but completes.
        let from_task = runtime.block_on(async { calc.add(3, 4) });
        assert_eq!(from_task.expect("add"), 7);
        // Connecting and dropping a client inside a runtime must not panic either.
        let inner = runtime
            .block_on(async {
                tokio::task::spawn_blocking(move || CalculatorBlockingClient::connect(addr.to_string())).await
            })
            .expect("join")
            .expect("connect");
        runtime.block_on(async move { drop(inner) });
    });
}

#[test]
fn connecting_to_nothing_is_an_error() {
    within_a_minute(|| {
        let port = courier_tests::free_port();
        let err =
            CalculatorBlockingClient::connect(format!("127.0.0.1:{port}")).expect_err("nothing listens");
        assert!(matches!(err, courier::ConnectError::Io { .. }), "{err}");
    });
}
