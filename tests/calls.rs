//! Calls over real TCP on 127.0.0.1: multiplexing, errors, metadata,
//! deadlines, cancellation, limits and codecs.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use courier::protocol::native::{FrameEncoder, FrameKind, PREFACE, RequestHead};
use courier::{CallOptions, Channel, Code, Codec};
use courier_tests::{CalcError, CalculatorClient, ProbeClient, start_server, within};

/// How long any one test may take before it fails instead of hanging.
const TEST_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_from_a_hundred_tasks_share_one_connection() {
    within(TEST_LIMIT, "ten_thousand_calls_from_a_hundred_tasks_share_one_connection", async {
        let (server, _) = start_server(|b| b).await;
        let channel = Channel::connect(server.local_addr().to_string()).await.expect("connect");
        let calc = CalculatorClient::new(channel.clone());
        let probe = ProbeClient::new(channel);

        let tasks: Vec<_> = (0..100i64)
            .map(|task| {
                let calc = calc.clone();
                let probe = probe.clone();
                tokio::spawn(async move {
                    let mut ports = HashSet::new();
                    for i in 0..50i64 {
                        let sum = calc.add(task * 1_000_000, i).await.expect("add");
                        assert_eq!(sum, task * 1_000_000 + i, "reply matches its request");
                        let message = format!("task {task} call {i}");
                        assert_eq!(probe.echo(message.clone()).await.expect("echo"), message);
                    }
                    ports.insert(probe.peer_port().await.expect("peer port"));
                    ports
                })
            })
            .collect();
        let mut ports = HashSet::new();
        for task in tasks {
            ports.extend(task.await.expect("task"));
        }
        assert_eq!(ports.len(), 1, "all 10,000 calls went over one connection: {ports:?}");
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

#[tokio::test]
async fn a_pool_spreads_calls_over_its_connections() {
    within(TEST_LIMIT, "a_pool_spreads_calls_over_its_connections", async {
        let (server, _) = start_server(|b| b).await;
        let channel = Channel::builder(server.local_addr().to_string()).pool_size(4).build_lazy();
        let probe = ProbeClient::new(channel);
        let mut ports = HashSet::new();
        for _ in 0..8 {
            ports.insert(probe.peer_port().await.expect("peer port"));
        }
        assert_eq!(ports.len(), 4, "{ports:?}");
    })
    .await;
}

#[tokio::test]
async fn a_service_error_comes_back_typed_in_either_codec() {
    within(TEST_LIMIT, "a_service_error_comes_back_typed_in_either_codec", async {
        let (server, _) = start_server(|b| b).await;
        let calc = CalculatorClient::connect(server.local_addr().to_string()).await.expect("connect");
        for codec in [Codec::Binary, Codec::Json] {
            let calc = calc.with_codec(codec);
            assert_eq!(calc.div(10.0, 4.0).await.expect("div"), 2.5);
            let err = calc.div(1.0, 0.0).await.expect_err("division by zero");
            assert_eq!(err.code(), Code::Unknown);
            assert_eq!(err.message(), "division by zero");
            assert!(err.is_application_error());
            assert_eq!(err.app_error::<CalcError>(), Some(&CalcError::DivisionByZero), "{codec}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_handler_status_passes_through_unchanged() {
    within(TEST_LIMIT, "a_handler_status_passes_through_unchanged", async {
        let (server, _) = start_server(|b| b).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        let err = probe.fail(Code::NotFound.as_u32(), "no such user".into()).await.expect_err("fails");
        assert_eq!((err.code(), err.message()), (Code::NotFound, "no such user"));
        assert!(!err.is_application_error());
    })
    .await;
}

#[tokio::test]
async fn unknown_services_and_methods_are_unimplemented_and_say_what_exists() {
    within(TEST_LIMIT, "unknown_services_and_methods_are_unimplemented_and_say_what_exists", async {
        let (server, _) = start_server(|b| b).await;
        let channel = Channel::connect(server.local_addr().to_string()).await.expect("connect");
        let options = CallOptions::new();
        let err = channel.unary::<_, i64>("Calculator.Sub", &(1, 2), &options).await.expect_err("no Sub");
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("Add, Div"), "{err}");
        let err = channel.unary::<_, i64>("Abacus.Add", &(1, 2), &options).await.expect_err("no Abacus");
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("Calculator"), "{err}");
        // The connection is still good.
        let calc = CalculatorClient::new(channel);
        assert_eq!(calc.add(1, 2).await.expect("add"), 3);
    })
    .await;
}

#[tokio::test]
async fn arguments_that_do_not_decode_are_invalid_argument() {
    within(TEST_LIMIT, "arguments_that_do_not_decode_are_invalid_argument", async {
        let (server, _) = start_server(|b| b).await;
        let channel = Channel::connect(server.local_addr().to_string()).await.expect("connect");
        let json = CallOptions::new().with_codec(Codec::Json);
        let err = channel
            .unary::<_, i64>("Calculator.Add", &serde_json_like_string(), &json)
            .await
            .expect_err("a string is not {a, b}");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("Calculator.Add"), "{err}");
    })
    .await;
}

fn serde_json_like_string() -> String {
    "not the arguments".to_owned()
}

#[tokio::test]
async fn metadata_and_the_deadline_reach_the_handler() {
    within(TEST_LIMIT, "metadata_and_the_deadline_reach_the_handler", async {
        let (server, _) = start_server(|b| b).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        let tagged = probe.with_metadata("Tenant", "acme");
        assert_eq!(tagged.header("tenant".into()).await.expect("header"), Some("acme".to_owned()));
        assert_eq!(
            probe.header("tenant".into()).await.expect("header"),
            None,
            "the original client is unchanged"
        );

        assert_eq!(probe.deadline_ms().await.expect("no deadline"), None);
        let left = probe
            .with_timeout(Duration::from_secs(5))
            .deadline_ms()
            .await
            .expect("deadline")
            .expect("a deadline was sent");
        assert!(left > 4_000 && left <= 5_000, "{left} ms left of 5 s");
    })
    .await;
}

#[tokio::test]
async fn a_timeout_returns_promptly_and_the_server_drops_the_handler() {
    within(TEST_LIMIT, "a_timeout_returns_promptly_and_the_server_drops_the_handler", async {
        let (server, state) = start_server(|b| b).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        let start = Instant::now();
        let err = probe.with_timeout(Duration::from_millis(50)).sleep(10_000).await.expect_err("times out");
        let elapsed = start.elapsed();
        eprintln!("a 50 ms timeout returned after {elapsed:?}");
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        // Promptly: well before the 10 s the handler would take (nominally 50 ms).
        assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
        assert!(
            state.wait_until(Duration::from_secs(5), |s| s.dropped() == 1).await,
            "the server dropped the handler"
        );
        assert_eq!((state.started(), state.finished()), (1, 0));
    })
    .await;
}

#[tokio::test]
async fn dropping_a_call_cancels_it_on_the_server() {
    within(TEST_LIMIT, "dropping_a_call_cancels_it_on_the_server", async {
        let (server, state) = start_server(|b| b).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        let call = probe.sleep(10_000);
        tokio::select! {
            _ = call => panic!("the call cannot finish first"),
            () = async { assert!(state.wait_until(Duration::from_secs(2), |s| s.started() == 1).await) } => {}
        }
        assert!(
            state.wait_until(Duration::from_secs(2), |s| s.dropped() == 1).await,
            "the cancel reached the server and dropped the handler"
        );
        // The connection carries on.
        assert_eq!(probe.echo("after".into()).await.expect("echo"), "after");
    })
    .await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_call_has_its_handler_dropped() {
    within(TEST_LIMIT, "a_client_that_disconnects_mid_call_has_its_handler_dropped", async {
        let (server, state) = start_server(|b| b).await;
        let stream = send_raw(server.local_addr(), FrameKind::Request, "Probe.Sleep", &60_000_u64).await;
        assert!(state.wait_until(Duration::from_secs(2), |s| s.started() == 1).await);
        drop(stream);
        assert!(
            state.wait_until(Duration::from_secs(2), |s| s.dropped() == 1).await,
            "the handler of a vanished client is dropped"
        );
    })
    .await;
}

/// Open a raw native connection to `addr` and send one call of `kind` to
/// `method` with binary `args`; the caller hangs up by dropping the stream.
async fn send_raw(
    addr: std::net::SocketAddr,
    kind: FrameKind,
    method: &str,
    args: &impl serde::Serialize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut frame = bytes::BytesMut::from(&PREFACE[..]);
    let mut encoder = FrameEncoder::begin(&mut frame, kind, Codec::Binary.id(), 1);
    RequestHead::encode(&mut frame, method, None, std::iter::empty());
    encoder.end_meta(&frame);
    Codec::Binary.encode(args, &mut frame).expect("encode");
    encoder.finish(&mut frame, usize::MAX).expect("finish");
    stream.write_all(&frame).await.expect("send");
    stream
}

#[tokio::test]
async fn spawned_calls_run_now_and_are_collected_later() {
    within(TEST_LIMIT, "spawned_calls_run_now_and_are_collected_later", async {
        let (server, state) = start_server(|b| b).await;
        let calc = CalculatorClient::connect(server.local_addr().to_string()).await.expect("connect");
        let probe = ProbeClient::new(calc.channel().clone());
        let handles: Vec<_> = (0..10).map(|i| calc.spawn_add(i, 1)).collect();
        for (i, handle) in (0..).zip(handles) {
            assert_eq!(handle.await.expect("spawned add"), i + 1);
        }

        let slow = probe.spawn_sleep(10_000);
        assert!(
            state.wait_until(Duration::from_secs(2), |s| s.started() == 1).await,
            "started without being awaited"
        );
        slow.abort();
        assert_eq!(slow.await.expect_err("aborted").code(), Code::Cancelled);
        assert!(state.wait_until(Duration::from_secs(2), |s| s.dropped() == 1).await);
    })
    .await;
}

#[tokio::test]
async fn a_dropped_call_handle_lets_its_call_finish() {
    within(TEST_LIMIT, "a_dropped_call_handle_lets_its_call_finish", async {
        let (server, state) = start_server(|b| b).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        let unobserved = probe.spawn_sleep(200);
        assert!(
            state.wait_until(Duration::from_secs(5), |s| s.started() == 1).await,
            "the call started without being awaited"
        );
        // Start now, never collect: unlike `abort`, dropping the handle is not
        // a cancel.
        drop(unobserved);
        assert!(
            state.wait_until(Duration::from_secs(5), |s| s.finished() == 1).await,
            "the server ran the call to its end"
        );
        assert_eq!(state.dropped(), 0, "the handler was not dropped");
        assert_eq!(probe.echo("after".into()).await.expect("echo"), "after");
    })
    .await;
}

#[tokio::test]
async fn one_way_calls_run_without_a_reply() {
    within(TEST_LIMIT, "one_way_calls_run_without_a_reply", async {
        let (server, state) = start_server(|b| b).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        for value in [3, 1, 4] {
            probe.record(value).await.expect("queued");
        }
        assert!(state.wait_until(Duration::from_secs(2), |s| s.recorded().len() == 3).await);
        let mut seen = probe.recorded().await.expect("recorded");
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 3, 4]);
    })
    .await;
}

#[tokio::test]
async fn a_panicking_handler_yields_internal_and_the_server_lives_on() {
    within(TEST_LIMIT, "a_panicking_handler_yields_internal_and_the_server_lives_on", async {
        let (server, _) = start_server(|b| b).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        let err = probe.panic("kaboom".into()).await.expect_err("panics");
        assert_eq!(err.code(), Code::Internal);
        assert!(err.message().contains("kaboom"), "{err}");
        assert_eq!(probe.echo("still here".into()).await.expect("next call"), "still here");
    })
    .await;
}

#[tokio::test]
async fn calls_over_the_concurrency_limit_are_refused_at_once() {
    within(TEST_LIMIT, "calls_over_the_concurrency_limit_are_refused_at_once", async {
        let (server, state) = start_server(|b| b.max_concurrent_calls(2)).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        // The busy calls outlast the bound below, so a call queued behind them
        // instead of refused would be caught by the clock as well as the code.
        let busy: Vec<_> = (0..2).map(|_| probe.spawn_sleep(2_000)).collect();
        assert!(
            state.wait_until(Duration::from_secs(5), |s| s.started() == 2).await,
            "both busy calls started"
        );

        let start = Instant::now();
        let err = probe.echo("one too many".into()).await.expect_err("over the limit");
        let waited = start.elapsed();
        eprintln!("refused after {waited:?}");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert!(waited < Duration::from_secs(1), "refused at once, not queued: {waited:?}");

        for call in busy {
            assert_eq!(call.await.expect("the admitted calls finish"), 2_000);
        }
        assert_eq!(probe.echo("room again".into()).await.expect("admitted"), "room again");
    })
    .await;
}

#[tokio::test]
async fn the_per_connection_limit_leaves_other_connections_alone() {
    within(TEST_LIMIT, "the_per_connection_limit_leaves_other_connections_alone", async {
        let (server, state) = start_server(|b| b.max_concurrent_calls_per_connection(1)).await;
        let addr = server.local_addr().to_string();
        let first = ProbeClient::connect(addr.clone()).await.expect("connect");
        let second = ProbeClient::connect(addr).await.expect("connect");
        let busy = first.spawn_sleep(300);
        assert!(state.wait_until(Duration::from_secs(2), |s| s.started() == 1).await);
        assert_eq!(first.echo("x".into()).await.expect_err("limit").code(), Code::ResourceExhausted);
        assert_eq!(second.echo("y".into()).await.expect("other connection"), "y");
        assert_eq!(busy.await.expect("finishes"), 300);
    })
    .await;
}

#[tokio::test]
async fn a_lazy_channel_connects_on_first_call_and_fails_fast_while_backing_off() {
    within(TEST_LIMIT, "a_lazy_channel_connects_on_first_call_and_fails_fast_while_backing_off", async {
        let port = courier_tests::free_port();
        // A backoff far longer than the bound below: a call that waited for the
        // next attempt instead of failing at once could not pass.
        let backoff = courier::client::Backoff {
            initial: Duration::from_secs(30),
            ..courier::client::Backoff::default()
        };
        let channel = Channel::builder(format!("127.0.0.1:{port}")).backoff(backoff).build_lazy();
        let calc = CalculatorClient::new(channel);
        let err = calc.add(1, 1).await.expect_err("nothing listens");
        assert_eq!(err.code(), Code::Unavailable);
        let start = Instant::now();
        let err = calc.add(1, 1).await.expect_err("still nothing");
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("next attempt in"), "{err}");
        let waited = start.elapsed();
        eprintln!("failed during backoff after {waited:?}");
        assert!(waited < Duration::from_secs(1), "failed fast during backoff: {waited:?}");
    })
    .await;
}

#[tokio::test]
async fn connecting_to_something_that_is_not_courier_is_a_handshake_error() {
    within(TEST_LIMIT, "connecting_to_something_that_is_not_courier_is_a_handshake_error", async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let err = Channel::connect(addr.to_string()).await.expect_err("not courier");
        assert!(matches!(err, courier::ConnectError::Handshake { .. }), "{err}");
        assert!(err.to_string().contains("not a courier connection"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn the_descriptor_describes_the_service() {
    within(TEST_LIMIT, "the_descriptor_describes_the_service", async {
        let descriptor = CalculatorClient::DESCRIPTOR;
        assert_eq!((descriptor.name, descriptor.version), ("Calculator", "1.0.0"));
        let names: Vec<_> = descriptor.methods.iter().map(|m| m.full_name).collect();
        assert_eq!(names, ["Calculator.Add", "Calculator.Div"]);
        let div = &descriptor.methods[1];
        assert!(div.idempotent && !descriptor.methods[0].idempotent);
        assert_eq!(div.error, Some("CalcError"));
        assert_eq!(div.args.iter().map(|a| (a.name, a.ty)).collect::<Vec<_>>(), [("a", "f64"), ("b", "f64")]);
        assert_eq!(div.docs, "`a / b`.");
        let record = ProbeClient::DESCRIPTOR.method("Record").expect("Record").1;
        assert!(record.one_way);
    })
    .await;
}

/// The preface, a one-way request and the hang-up arrive together: a server
/// that throws away what came with the preface, or stops at the end of the
/// stream before handling what it has read, loses the call. (Aborting
/// one-way calls when the caller leaves is caught by the test of a call
/// still waiting, below: this one finishes first.)
#[tokio::test]
async fn a_one_way_call_survives_the_client_hanging_up_at_once() {
    within(TEST_LIMIT, "a_one_way_call_survives_the_client_hanging_up_at_once", async {
        let (server, state) = start_server(|b| b).await;
        // A raw connection, so the hang-up is certain (a dropped client
        // closes its connection whenever its pool lets go of it).
        let stream = send_raw(server.local_addr(), FrameKind::OneWay, "Probe.Record", &42_u64).await;
        drop(stream);
        assert!(
            state.wait_until(Duration::from_secs(2), |s| s.recorded() == [42]).await,
            "the server ran the one-way call although its caller left"
        );
    })
    .await;
}

#[tokio::test]
async fn an_enormous_timeout_is_no_timeout_not_a_panic() {
    within(TEST_LIMIT, "an_enormous_timeout_is_no_timeout_not_a_panic", async {
        let (server, _) = start_server(|b| b).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        let forever = probe.with_timeout(Duration::MAX);
        assert_eq!(forever.echo("patient".into()).await.expect("echo"), "patient");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_blocks_its_thread_does_not_hold_up_other_calls() {
    within(TEST_LIMIT, "a_handler_that_blocks_its_thread_does_not_hold_up_other_calls", async {
        const BLOCKED_MS: u64 = 1_500;
        let (server, state) = start_server(|b| b).await;
        let probe = ProbeClient::connect(server.local_addr().to_string()).await.expect("connect");
        assert_eq!(probe.echo("warm".into()).await.expect("echo"), "warm");
        for round in 0..3 {
            let blocked = probe.spawn_busy(BLOCKED_MS);
            // The quick call goes only once the blocking one holds its thread.
            assert!(
                state.wait_until(Duration::from_secs(5), |s| s.busy_started() == round + 1).await,
                "round {round}: the blocking call started"
            );
            let start = Instant::now();
            assert_eq!(probe.echo("quick".into()).await.expect("echo"), "quick");
            let waited = start.elapsed();
            eprintln!("round {round}: a quick call took {waited:?} beside a blocking one");
            // Stuck behind it would mean most of BLOCKED_MS.
            assert!(
                waited < Duration::from_secs(1),
                "round {round}: a quick call waited {waited:?} behind a blocking one"
            );
            assert!(!blocked.is_finished(), "round {round}: the blocking call was still running meanwhile");
            assert_eq!(blocked.await.expect("busy"), BLOCKED_MS);
        }
    })
    .await;
}

#[tokio::test]
async fn a_one_way_call_still_waiting_survives_the_client_hanging_up() {
    within(TEST_LIMIT, "a_one_way_call_still_waiting_survives_the_client_hanging_up", async {
        let (server, state) = start_server(|b| b).await;
        // A raw connection, so the hang-up is certain (a dropped client
        // closes its connection whenever its pool lets go of it).
        let stream =
            send_raw(server.local_addr(), FrameKind::OneWay, "Probe.RecordLater", &(9_u64, 200_u64)).await;
        assert!(
            state.wait_until(Duration::from_secs(5), |s| s.record_later_started() == 1).await,
            "the one-way call reached its handler"
        );
        assert!(state.recorded().is_empty(), "and is still waiting when the client hangs up");
        drop(stream);
        assert!(
            state.wait_until(Duration::from_secs(2), |s| s.recorded() == [9]).await,
            "the one-way call finished although its caller hung up mid-way"
        );
    })
    .await;
}

/// Both generators (`#[courier::service]` and courier-build) emit the same
/// client surface over one runtime core, so every option exists for both.
macro_rules! check_surface {
    ($client:expr, $blocking:expr, $default_codec:expr) => {{
        let client = $client;
        assert_eq!(client.options().codec(), $default_codec);
        let timeout = Duration::from_millis(1_234);
        let configured = client
            .with_timeout(timeout)
            .with_metadata("x-k", "v")
            .with_codec(Codec::Json)
            .with_hash_key("user-7");
        let options = configured.options();
        assert_eq!(options.timeout(), Some(timeout));
        assert_eq!(options.metadata().get("x-k"), Some("v"));
        assert_eq!(options.codec(), Codec::Json);
        assert_eq!(options.hash_key(), CallOptions::new().with_hash_key("user-7").hash_key());
        assert_eq!(configured.stub().options().timeout(), Some(timeout));
        let replaced = configured.with_options(CallOptions::new());
        assert_eq!(replaced.options().timeout(), None);
        let _: &Channel = replaced.channel();
        let blocking = $blocking.with_timeout(timeout).with_metadata("x-k", "v").with_hash_key("k");
        assert_eq!(blocking.with_codec(Codec::Json).as_async().options().codec(), Codec::Json);
        assert_eq!(blocking.as_async().options().timeout(), Some(timeout));
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_generators_emit_the_same_client_surface() {
    within(Duration::from_secs(60), "both_generators_emit_the_same_client_surface", async {
        let (server, _) = start_server(|b| b).await;
        let addr = server.local_addr().to_string();
        let channel = Channel::connect(addr.clone()).await.expect("connect");
        let blocking_addr = addr.clone();
        let (calc_blocking, interop_blocking) = tokio::task::spawn_blocking(move || {
            (
                courier_tests::CalculatorBlockingClient::connect(blocking_addr.clone()).expect("connect"),
                courier_tests::interop::InteropBlockingClient::connect(blocking_addr).expect("connect"),
            )
        })
        .await
        .expect("blocking connects");
        check_surface!(CalculatorClient::new(channel.clone()), calc_blocking.clone(), Codec::Binary);
        check_surface!(
            courier_tests::interop::InteropClient::new(channel.clone()),
            interop_blocking.clone(),
            Codec::Protobuf
        );
        // And the options take effect on calls from both.
        let calc = CalculatorClient::new(channel.clone()).with_codec(Codec::Json);
        assert_eq!(calc.add(2, 2).await.expect("add as JSON"), 4);
        let interop = courier_tests::interop::InteropClient::new(channel).with_codec(Codec::Json);
        let reply = interop
            .echo(courier_tests::interop::EchoRequest { message: "hi".into(), ..Default::default() })
            .await
            .expect("echo as JSON");
        assert_eq!(reply.message, "hi");
        tokio::task::spawn_blocking(move || {
            assert_eq!(calc_blocking.add(1, 2).expect("blocking add"), 3);
            drop(interop_blocking);
        })
        .await
        .expect("blocking calls");
        let _ = server.shutdown().await;
    })
    .await;
}
