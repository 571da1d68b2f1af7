//! The server's one call pipeline, seen from outside: a layer sees the same
//! calls and makes the same outcome on every protocol, and the four
//! protocols answer a handler's error, a limit refusal and a deadline with
//! the same code and message.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use courier::__private::BoxFuture;
use courier::server::{Layer, Next};
use courier::{Channel, Code, Context, Protocol, Status};
use courier_tests::{CalculatorClient, JsonRpc, ProbeClient, http_post_once, start_server, within};
use serde_json::{Value, json};

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// The test's layer: adds a request header, counts calls by method and
/// protocol, and refuses `Calculator.Div`.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A call the layer saw: its method and protocol.
type Seen = (String, Option<Protocol>);

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Layer for Recorder {
    fn call(&self, mut cx: Context, request: Bytes, next: Next) -> BoxFuture<'static, Result<Bytes, Status>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).push((cx.method().to_owned(), cx.protocol()));
        if cx.method() == "Calculator.Div" {
            return Box::pin(async { Err(Status::permission_denied("division is not allowed here")) });
        }
        cx.metadata_mut().insert("x-layer", "seen");
        next.run(cx, request)
    }
}

/// A protocol's answer, reduced to what every protocol can say: the code
/// (JSON-RPC carries none: Go's `net/rpc` errors are plain strings) and the
/// message, or the result as JSON.
#[derive(Debug, PartialEq)]
enum Answer {
    Ok(Value),
    Err(Option<Code>, String),
}

fn from_status(status: Status) -> Answer {
    Answer::Err(Some(status.code()), status.message().to_owned())
}

/// How each protocol is called: `Service.Method` with JSON arguments.
async fn call(protocol: Protocol, addr: SocketAddr, method: &str, args: Value) -> Answer {
    match protocol {
        Protocol::Native | Protocol::Grpc => {
            let channel = if protocol == Protocol::Grpc {
                Channel::builder(addr.to_string()).grpc().connect().await
            } else {
                Channel::connect(addr.to_string()).await
            }
            .expect("connect");
            native_or_grpc(channel, method, args).await
        }
        Protocol::JsonRpc => {
            let mut client = JsonRpc::connect(addr).await;
            let reply = client.call(method, args, 1).await;
            match (&reply["result"], &reply["error"]) {
                (result, Value::Null) => Answer::Ok(result.clone()),
                (_, Value::String(message)) => Answer::Err(None, message.clone()),
                other => panic!("not a JSON-RPC reply: {other:?}"),
            }
        }
        Protocol::HttpJson => {
            let path = format!("/{}", method.replacen('.', "/", 1));
            let (status, body) = http_post_once(addr, &path, &args.to_string()).await;
            let body: Value = serde_json::from_str(&body).expect("a JSON body");
            if status == 200 {
                return Answer::Ok(body);
            }
            let code = body["code"].as_str().expect("an error code");
            let code = (0..=16).map(Code::from_u32).find(|c| c.grpc_name() == code).expect("a known code");
            assert_eq!(
                status,
                courier::protocol::http::status_of(code).as_u16(),
                "the HTTP status matches the code"
            );
            Answer::Err(Some(code), body["message"].as_str().expect("a message").to_owned())
        }
        Protocol::GoRpc => {
            // courier's own client in Go's wire (gob over TCP): what a Go
            // rpc.Dial client sends and reads.
            let channel = Channel::builder(addr.to_string()).go_rpc().connect().await.expect("connect");
            match native_or_grpc(channel, method, args).await {
                // Go's errors are strings: the code does not travel.
                Answer::Err(_, message) => Answer::Err(None, message),
                answer => answer,
            }
        }
        other => panic!("no client for {other:?}"),
    }
}

/// Whether `protocol` carries a status code (JSON-RPC and Go's net/rpc
/// carry errors as strings).
fn carries_codes(protocol: Protocol) -> bool {
    !matches!(protocol, Protocol::JsonRpc | Protocol::GoRpc)
}

/// The generated clients, for the methods these tests call.
async fn native_or_grpc(channel: Channel, method: &str, args: Value) -> Answer {
    let probe = ProbeClient::new(channel.clone());
    let calc = CalculatorClient::new(channel);
    let num = |key: &str| args[key].as_f64().expect("a number");
    match method {
        "Probe.Header" => match probe.header(args.as_str().expect("a key").to_owned()).await {
            Ok(value) => Answer::Ok(json!(value)),
            Err(status) => from_status(status),
        },
        "Probe.Sleep" => match probe.sleep(args.as_u64().expect("millis")).await {
            Ok(value) => Answer::Ok(json!(value)),
            Err(status) => from_status(status),
        },
        "Probe.Fail" => {
            let code = u32::try_from(args["code"].as_u64().expect("a code")).expect("a small code");
            match probe.fail(code, args["message"].as_str().expect("a message").to_owned()).await {
                Ok(()) => Answer::Ok(json!({})),
                Err(status) => from_status(status),
            }
        }
        "Calculator.Add" => match calc.add(num("a") as i64, num("b") as i64).await {
            Ok(sum) => Answer::Ok(json!(sum)),
            Err(status) => from_status(status),
        },
        "Calculator.Div" => match calc.div(num("a"), num("b")).await {
            Ok(quotient) => Answer::Ok(json!(quotient)),
            Err(status) => from_status(status),
        },
        other => panic!("no client call for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_sees_the_same_calls_and_makes_the_same_outcome_on_every_protocol() {
    within(TEST_LIMIT, "a_layer_sees_the_same_calls_and_makes_the_same_outcome_on_every_protocol", async {
        let recorder = Recorder::default();
        let (server, _) = start_server(|b| b.layer(recorder.clone())).await;
        let addr = server.local_addr();
        for protocol in Protocol::ALL {
            // The header the layer added reached the handler.
            let header = call(protocol, addr, "Probe.Header", json!("x-layer")).await;
            assert_eq!(header, Answer::Ok(json!("seen")), "{protocol:?}");
            let sum = call(protocol, addr, "Calculator.Add", json!({"a": 2, "b": 3})).await;
            assert_eq!(sum, Answer::Ok(json!(5)), "{protocol:?}");
            // The layer's refusal, and the handler never ran.
            let refused = call(protocol, addr, "Calculator.Div", json!({"a": 1.0, "b": 0.0})).await;
            let expected_code = carries_codes(protocol).then_some(Code::PermissionDenied);
            assert_eq!(
                refused,
                Answer::Err(expected_code, "division is not allowed here".into()),
                "{protocol:?}"
            );
            let seen: Vec<String> = recorder
                .seen()
                .into_iter()
                .filter(|(_, on)| *on == Some(protocol))
                .map(|(method, _)| method)
                .collect();
            assert_eq!(seen, ["Probe.Header", "Calculator.Add", "Calculator.Div"], "{protocol:?}");
        }
        // Nothing else went through it, and every call knew its protocol.
        assert_eq!(recorder.seen().len(), 3 * Protocol::ALL.len(), "{:?}", recorder.seen());
        let _ = server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_runs_inside_the_calls_deadline_and_panics_in_it_are_isolated() {
    within(TEST_LIMIT, "a_layer_runs_inside_the_calls_deadline_and_panics_in_it_are_isolated", async {
        let layer = |cx: Context, request: Bytes, next: Next| -> BoxFuture<'static, Result<Bytes, Status>> {
            match cx.metadata().get("x-test") {
                Some("panic") => panic!("the layer panicked on purpose"),
                Some("stall") => Box::pin(std::future::pending()),
                _ => next.run(cx, request),
            }
        };
        let (server, _) = start_server(|b| b.layer(layer).call_timeout(Duration::from_millis(300))).await;
        let channel = Channel::connect(server.local_addr().to_string()).await.expect("connect");
        let calc = CalculatorClient::new(channel);
        let err = calc.with_metadata("x-test", "panic").add(1, 2).await.expect_err("the layer panicked");
        assert_eq!(err.code(), Code::Internal, "{err}");
        assert!(err.message().contains("the layer panicked on purpose"), "{err}");
        let err = calc.with_metadata("x-test", "stall").add(1, 2).await.expect_err("the layer stalls");
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        // The connection and the server go on.
        assert_eq!(calc.add(1, 2).await.expect("add"), 3);
        let _ = server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_answers_a_handler_error_with_the_same_code_and_message() {
    within(TEST_LIMIT, "every_protocol_answers_a_handler_error_with_the_same_code_and_message", async {
        let (server, _) = start_server(|b| b).await;
        for protocol in Protocol::ALL {
            let args = json!({"code": Code::FailedPrecondition.as_u32(), "message": "the door is shut"});
            let answer = call(protocol, server.local_addr(), "Probe.Fail", args).await;
            let code = carries_codes(protocol).then_some(Code::FailedPrecondition);
            assert_eq!(answer, Answer::Err(code, "the door is shut".into()), "{protocol:?}");
        }
        let _ = server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_answers_a_limit_refusal_with_the_same_code_and_message() {
    within(TEST_LIMIT, "every_protocol_answers_a_limit_refusal_with_the_same_code_and_message", async {
        let (server, state) = start_server(|b| b.max_concurrent_calls(1)).await;
        let addr = server.local_addr();
        // One call holds the server's only slot.
        let holder =
            tokio::spawn(async move { call(Protocol::Native, addr, "Probe.Sleep", json!(3_000)).await });
        assert!(state.wait_until(Duration::from_secs(5), |s| s.started() == 1).await, "the holder runs");
        for protocol in Protocol::ALL {
            let answer = call(protocol, addr, "Calculator.Add", json!({"a": 1, "b": 1})).await;
            let code = carries_codes(protocol).then_some(Code::ResourceExhausted);
            let message = "the server is at its limit of 1 concurrent calls".to_owned();
            assert_eq!(answer, Answer::Err(code, message), "{protocol:?}");
        }
        assert_eq!(holder.await.expect("the holder"), Answer::Ok(json!(3_000)));
        // Its slot is free again.
        let after = call(Protocol::HttpJson, addr, "Calculator.Add", json!({"a": 1, "b": 1})).await;
        assert_eq!(after, Answer::Ok(json!(2)), "the slot is given back");
        let _ = server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_answers_a_deadline_with_the_same_code_and_message() {
    within(TEST_LIMIT, "every_protocol_answers_a_deadline_with_the_same_code_and_message", async {
        // JSON-RPC carries no deadline, so the server's own call timeout is
        // the deadline every protocol's call runs into.
        let (server, state) = start_server(|b| b.call_timeout(Duration::from_millis(200))).await;
        for (n, protocol) in Protocol::ALL.into_iter().enumerate() {
            let answer = call(protocol, server.local_addr(), "Probe.Sleep", json!(10_000)).await;
            let code = carries_codes(protocol).then_some(Code::DeadlineExceeded);
            let message = "the call's deadline passed while the server was handling it".to_owned();
            assert_eq!(answer, Answer::Err(code, message), "{protocol:?}");
            // The handler was dropped, not left running.
            assert!(
                state.wait_until(Duration::from_secs(5), |s| s.dropped() == n + 1).await,
                "{protocol:?}: the handler is dropped at the deadline"
            );
        }
        let _ = server.shutdown().await;
    })
    .await;
}
