//! A client layer written here (it adds a header, counts calls, refuses one
//! method with `PermissionDenied` and notes every outcome) sees the same
//! calls and produces the same outcomes on a native channel, a gRPC
//! channel, and discovered channels of either protocol.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::client::{Call, CallKind, ChannelBuilder, Layer, Next, Outcome};
use courier::service::BoxFuture;
use courier::{Channel, Code, Status};
use courier_tests::interop::{EchoRequest, FailRequest, InteropClient, InteropServer};
use courier_tests::{
    InteropImpl, ProbeClient, ProbeState, eventually, start_observed_provider, start_server,
};

/// The method the layer refuses, and how.
const REFUSED: &str = "Probe.Sleep";
const REFUSAL: &str = "sleeping is not allowed through this channel";

/// What the layer saw of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    kind: CallKind,
    /// The caller's own header, as the layer found it.
    caller_header: Option<String>,
    /// Whether the call carried a deadline.
    deadline: bool,
    code: Code,
    /// The response header the interop service sends back for `x-layer`.
    echoed: Option<String>,
}

#[derive(Default)]
struct Guard {
    calls: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl Guard {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Layer for Guard {
    fn call<'a>(&'a self, call: &'a mut Call<'_>, next: Next<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let outcome = if call.method() == REFUSED {
                Outcome::from(Status::new(Code::PermissionDenied, REFUSAL))
            } else {
                call.metadata_mut().insert("x-layer", "added");
                next.run(call).await
            };
            let seen = Seen {
                method: call.method().to_owned(),
                kind: call.kind(),
                caller_header: call.metadata().get("x-caller").map(str::to_owned),
                deadline: call.deadline().is_some(),
                code: outcome.code(),
                echoed: outcome.metadata().get("echo-x-layer").map(str::to_owned),
            };
            self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(seen);
            outcome
        })
    }
}

/// The same calls on any channel: what the caller got is asserted here,
/// what the layer saw is returned.
async fn scenario(
    probe: ProbeClient,
    interop: InteropClient,
    state: &ProbeState,
    guard: &Guard,
) -> Vec<Seen> {
    // The server saw the layer's header, and the caller's own.
    let probe = probe.with_metadata("x-caller", "test");
    assert_eq!(probe.header("x-layer".into()).await.expect("header"), Some("added".to_owned()));
    assert_eq!(probe.header("x-caller".into()).await.expect("header"), Some("test".to_owned()));

    // The refused method never reaches the server.
    let err = probe.sleep(10).await.expect_err("refused by the layer");
    assert_eq!((err.code(), err.message()), (Code::PermissionDenied, REFUSAL));
    assert_eq!(state.started(), 0, "the server never ran the refused call");

    // The layer sees response metadata: the interop service echoes the
    // header back as `echo-x-layer`.
    let reply = interop
        .echo(EchoRequest { message: "hi".into(), payload: vec![], echo_metadata: vec!["x-layer".into()] })
        .await
        .expect("echo");
    assert_eq!(reply.metadata.get("x-layer").map(String::as_str), Some("added"));

    // A server's error and a deadline are outcomes the layer sees too.
    let err =
        interop.fail(FailRequest { code: 5, message: "no such thing".into() }).await.expect_err("fails");
    assert_eq!((err.code(), err.message()), (Code::NotFound, "no such thing"));
    let err = probe
        .with_timeout(Duration::from_millis(100))
        .slow_echo("late".into(), 5_000)
        .await
        .expect_err("past its deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");

    // One-way calls pass through it as well.
    probe.record(7).await.expect("queued");
    let recorded = state.wait_until(Duration::from_secs(5), |state| state.recorded() == [7]).await;
    assert!(recorded, "the one-way call arrived: {:?}", state.recorded());

    assert_eq!(guard.calls.load(Ordering::SeqCst), 7, "every call counted once");
    guard.seen()
}

/// What every channel's layer must have seen, in order.
fn expected() -> Vec<Seen> {
    let seen = |method: &str, kind, deadline, code, echoed: Option<&str>| Seen {
        method: method.to_owned(),
        kind,
        caller_header: method.starts_with("Probe.").then(|| "test".to_owned()),
        deadline,
        code,
        echoed: echoed.map(str::to_owned),
    };
    vec![
        seen("Probe.Header", CallKind::Unary, false, Code::Ok, None),
        seen("Probe.Header", CallKind::Unary, false, Code::Ok, None),
        seen(REFUSED, CallKind::Unary, false, Code::PermissionDenied, None),
        seen("interop.Interop.Echo", CallKind::Unary, false, Code::Ok, Some("added")),
        seen("interop.Interop.Fail", CallKind::Unary, false, Code::NotFound, None),
        seen("Probe.SlowEcho", CallKind::Unary, true, Code::DeadlineExceeded, None),
        seen("Probe.Record", CallKind::OneWay, false, Code::Ok, None),
    ]
}

async fn on_one_address(grpc: bool) -> Vec<Seen> {
    let (server, state) = start_server(|b| b).await;
    let guard = Arc::new(Guard::default());
    let builder = Channel::builder(server.local_addr().to_string()).layer(guard.clone());
    let channel =
        if grpc { builder.grpc().connect().await } else { builder.connect().await }.expect("connect");
    assert_eq!(channel.target().starts_with("grpc://"), grpc);
    scenario(ProbeClient::new(channel.clone()), InteropClient::new(channel), &state, &guard).await
}

async fn discovered(grpc: bool) -> Vec<Seen> {
    let registry = courier::registry::connect("mem://").await.expect("registry");
    let (_provider, state) =
        start_observed_provider(&registry, "a", |b| b.add_service(InteropServer::new(InteropImpl))).await;
    let guard = Arc::new(Guard::default());
    let configure = |channels: ChannelBuilder| if grpc { channels.grpc() } else { channels };
    let probe = ProbeClient::discover(&registry, "Probe")
        .no_cache()
        .configure_channels(configure)
        .layer(guard.clone())
        .build()
        .await
        .expect("discover");
    let interop = InteropClient::discover(&registry, "interop.Interop")
        .no_cache()
        .configure_channels(configure)
        .layer(guard.clone())
        .build()
        .await
        .expect("discover");
    let known = |channel: &Channel| channel.instances().is_some_and(|instances| instances.len() == 1);
    assert!(eventually(Duration::from_secs(5), || known(probe.channel()) && known(interop.channel())).await);
    scenario(probe, interop, &state, &guard).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_behaves_the_same_over_native_and_grpc_channels() {
    let native = on_one_address(false).await;
    assert_eq!(native, expected());
    let grpc = on_one_address(true).await;
    assert_eq!(grpc, native, "the same calls and outcomes over gRPC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_behaves_the_same_on_discovered_channels_of_either_protocol() {
    let native = discovered(false).await;
    assert_eq!(native, expected());
    let grpc = discovered(true).await;
    assert_eq!(grpc, native, "the same calls and outcomes over gRPC");
}

/// Layers run in the order added: the first sees the call first and the
/// outcome last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_run_in_the_order_added() {
    struct Mark(&'static str, Arc<Mutex<Vec<String>>>);
    impl Layer for Mark {
        fn call<'a>(&'a self, call: &'a mut Call<'_>, next: Next<'a>) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                let log = |event: String| {
                    self.1.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(event)
                };
                log(format!("{} in, sees x-order={:?}", self.0, call.metadata().get("x-order")));
                call.metadata_mut().insert("x-order", self.0);
                let outcome = next.run(call).await;
                log(format!("{} out", self.0));
                outcome
            })
        }
    }
    let (server, _) = start_server(|b| b).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let channel = Channel::builder(server.local_addr().to_string())
        .layer(Mark("first", log.clone()))
        .layer(Mark("second", log.clone()))
        .connect()
        .await
        .expect("connect");
    let probe = ProbeClient::new(channel);
    assert_eq!(probe.header("x-order".into()).await.expect("header"), Some("second".to_owned()));
    let log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    assert_eq!(
        log,
        ["first in, sees x-order=None", "second in, sees x-order=Some(\"first\")", "second out", "first out"]
    );
}

/// Fallbacks answer system failures (not the service's own errors), and a
/// degraded method is answered without being called; the switch works
/// while the channel is in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallbacks_answer_failures_and_forced_degradation_skips_the_call() {
    use courier::resilience::Fallbacks;
    use courier_tests::{CalcError, CalculatorClient, ProbeClient, start_server, within};

    within(Duration::from_secs(60), "fallbacks", async {
        let (server, state) = start_server(|b| b).await;
        let fallbacks = Arc::new(
            Fallbacks::new()
                .value("Probe.Fail", ())
                .value("Probe.Sleep", 0u64)
                .value("Probe.Echo", "from the fallback")
                .value("Calculator.Div", -1.0f64),
        );
        let channel = Channel::builder(server.local_addr().to_string())
            .layer(fallbacks.clone())
            .connect()
            .await
            .expect("connect");
        let (probe, calc) = (ProbeClient::new(channel.clone()), CalculatorClient::new(channel));

        // A system failure is answered by the fallback...
        probe.fail(Code::Unavailable.as_u32(), "down".into()).await.expect("the fallback answers");
        assert_eq!(fallbacks.served("Probe.Fail"), 1);
        // ...the caller's mistakes and the service's own errors are not.
        let err = probe.fail(Code::InvalidArgument.as_u32(), "bad".into()).await.expect_err("passes through");
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = calc.div(1.0, 0.0).await.expect_err("the service's own error");
        assert_eq!(err.app_error::<CalcError>(), Some(&CalcError::DivisionByZero), "{err}");
        assert_eq!((fallbacks.served("Probe.Fail"), fallbacks.served("Calculator.Div")), (1, 0));

        // Forced degradation: the call is not made at all.
        fallbacks.degrade("Probe.Sleep", true).expect("has a fallback");
        assert_eq!(probe.sleep(5_000).await.expect("degraded"), 0);
        assert_eq!(state.started(), 0, "a degraded call reaches no server");
        fallbacks.degrade("Probe.Sleep", false).expect("has a fallback");
        assert_eq!(probe.sleep(10).await.expect("called again"), 10);
        assert_eq!(state.started(), 1);
        assert!(fallbacks.degrade("Probe.Nothing", true).is_err(), "only methods with a fallback");

        // The server gone: every call gets the fallback, one per failure.
        assert_eq!(probe.echo("real".into()).await.expect("echo"), "real");
        server.abort();
        // Its connections go down with its tasks, a moment later.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while probe.echo("x".into()).await.expect("an answer or the fallback") != "from the fallback" {
            assert!(std::time::Instant::now() < deadline, "the server is still answering after 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = fallbacks.served("Probe.Echo");
        for _ in 0..5 {
            assert_eq!(probe.echo("x".into()).await.expect("the fallback"), "from the fallback");
        }
        assert_eq!(fallbacks.served("Probe.Echo"), before + 5, "one fallback per failed call");
    })
    .await;
}
