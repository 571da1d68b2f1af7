//! One port, every protocol: the same services over the native protocol,
//! gRPC (courier's own gRPC client here; Python's grpcio in `grpc_python`),
//! JSON-RPC and HTTP/JSON.

use std::time::Duration;

use courier::{Channel, Code};
use courier_tests::{CalcError, CalculatorClient, ProbeClient, start_server};

async fn grpc_channel(addr: std::net::SocketAddr) -> Channel {
    Channel::builder(addr.to_string()).grpc().connect().await.expect("gRPC connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serde_services_answer_over_grpc_json() {
    let (server, _) = start_server(|b| b).await;
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
    let err = probe.fail(5, "no such thing".into()).await.expect_err("fails");
    assert_eq!((err.code(), err.message()), (Code::NotFound, "no such thing"));
    let err = probe.with_timeout(Duration::from_millis(50)).sleep(2000).await.expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    let big = probe.sized(4 << 20).await.expect("4 MiB");
    assert_eq!(big.len(), 4 << 20);
}
