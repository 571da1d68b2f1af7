//! Real peers in other languages against a courier server (and one courier
//! client against a foreign server): Python's grpcio as a client and as a
//! server, a Python raw-socket JSON-RPC client, and curl.
//!
//! The Python peers live in a virtualenv under `target/pyenv`, which
//! `scripts/test.sh` creates (grpcio, grpcio-tools, grpcio-health-checking,
//! grpcio-reflection); `COURIER_TEST_PYTHON` may name another interpreter.
//! Without it these tests fail, they do not skip.

use std::time::{Duration, Instant};

use courier::{Channel, Code};
use courier_tests::interop::{EchoRequest, FailRequest, InteropClient, SleepRequest};
use courier_tests::python::{PythonServer, python, python_stubs, tests_dir};
use courier_tests::start_server;
use serde_json::{Value, json};
use tokio::process::Command;

/// Run a script from `python/` and parse the JSON it prints.
async fn run_python(script: &str, args: &[&str]) -> Value {
    let output = Command::new(python())
        .arg(tests_dir().join("python").join(script))
        .args(args)
        .output()
        .await
        .expect("run python");
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!("{script} printed no JSON ({err}): {}", String::from_utf8_lossy(&output.stdout))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_calls_a_courier_proto_service() {
    let (server, _) = start_server(|b| b).await;
    let stubs = python_stubs().await;
    let addr = server.local_addr().to_string();
    let out = run_python("interop_client.py", &[&addr, &stubs.path().display().to_string()]).await;

    let echo = &out["echo"];
    assert_eq!(echo["message"], "hello");
    assert_eq!(echo["payload"], json!([0, 1, 255]));
    // Request metadata reached the handler (binary values as base64 text)…
    assert_eq!(echo["metadata"], json!({"x-token": "abc", "x-trace-bin": "AQID"}));
    // …and the handler's response metadata came back, binary decoded again.
    assert_eq!(echo["initial_metadata"]["echo-x-token"], "abc");
    assert_eq!(echo["initial_metadata"]["echo-x-trace-bin"], json!([1, 2, 3]));

    assert_eq!(out["fail"], json!({"code": "NOT_FOUND", "details": "no such thing: «x»"}));

    assert_eq!(out["deadline"]["failure"]["code"], "DEADLINE_EXCEEDED");
    let elapsed = out["deadline"]["elapsed_ms"].as_u64().expect("elapsed");
    assert!(elapsed < 1500, "the deadline cut the 3 s call short: {elapsed} ms");

    assert_eq!(out["big"], json!({"sent": 4 << 20, "received": 4 << 20, "same": true}));
    assert_eq!(out["gzip"], json!({"message": "squeezed", "received": 100_000}));

    assert_eq!(out["health"]["server"], "SERVING");
    assert_eq!(out["health"]["interop"], "SERVING");
    assert_eq!(out["health"]["unknown"]["code"], "NOT_FOUND");

    let reflection = &out["reflection"];
    let services: Vec<&str> =
        reflection["services"].as_array().expect("services").iter().filter_map(Value::as_str).collect();
    for expected in ["interop.Interop", "grpc.health.v1.Health", "Calculator", "Probe"] {
        assert!(services.contains(&expected), "{expected} listed: {services:?}");
    }
    assert_eq!(reflection["file"], "interop.proto");
    assert_eq!(reflection["methods"], json!(["Echo", "Fail", "Sleep"]));
    assert_eq!(reflection["message_file"], "interop.proto");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn courier_calls_a_python_grpcio_server() {
    let python = PythonServer::start().await;
    let channel = Channel::builder(format!("127.0.0.1:{}", python.port))
        .grpc()
        .connect()
        .await
        .expect("connect over gRPC");
    let client = InteropClient::new(channel);

    let reply = client
        .with_metadata("x-token", "abc")
        .echo(EchoRequest {
            message: "from courier".into(),
            payload: vec![9; 1000],
            echo_metadata: vec!["x-token".into()],
        })
        .await
        .expect("echo");
    assert_eq!(reply.message, "from courier");
    assert_eq!(reply.payload, vec![9; 1000]);
    assert_eq!(reply.metadata.get("x-token").map(String::as_str), Some("abc"));

    let err = client.fail(FailRequest { code: 7, message: "not for you".into() }).await.expect_err("fails");
    assert_eq!((err.code(), err.message()), (Code::PermissionDenied, "not for you"));

    let started = Instant::now();
    let err = client
        .with_timeout(Duration::from_millis(200))
        .sleep(SleepRequest { millis: 3000 })
        .await
        .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_socket_client_speaks_json_rpc() {
    let (server, _) = start_server(|b| b).await;
    let addr = server.local_addr();
    let out = run_python("jsonrpc_client.py", &[&addr.ip().to_string(), &addr.port().to_string()]).await;
    assert_eq!(out["add"], json!({"id": 0, "result": 60, "error": null}));
    assert_eq!(out["go_names"], json!({"id": 1, "result": 3, "error": null}));
    assert_eq!(
        out["pipelined"],
        json!([
            {"id": 2, "result": 2, "error": null},
            {"id": 3, "result": 4, "error": null},
            {"id": 4, "result": 6, "error": null},
        ])
    );
    assert_eq!(out["app_error"], json!({"id": 5, "result": null, "error": "division by zero"}));
    assert_eq!(out["unknown"]["result"], Value::Null);
    assert!(
        out["unknown"]["error"].as_str().is_some_and(|e| e.contains("unknown method `Nope`")),
        "{}",
        out["unknown"]
    );
    assert_eq!(out["proto"]["result"]["message"], "proto over JSON-RPC");
    assert_eq!(out["proto"]["error"], Value::Null);
}

/// `curl ARGS`, returning the body and the HTTP status.
async fn curl(args: &[&str]) -> (String, u16) {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl is installed");
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("a status line");
    (body.to_owned(), status.trim().parse().expect("a status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_http_json() {
    let (server, _) = start_server(|b| b).await;
    let base = format!("http://{}", server.local_addr());
    let json_of =
        |body: &str| serde_json::from_str::<Value>(body).unwrap_or_else(|err| panic!("{err}: {body}"));

    let (body, status) = curl(&["-d", r#"{"a":10,"b":50}"#, &format!("{base}/Calculator/Add")]).await;
    assert_eq!((status, body.as_str()), (200, "60"));

    let (body, status) = curl(&["-d", "{}", &format!("{base}/Calculator/Nope")]).await;
    assert_eq!(status, 404);
    assert_eq!(json_of(&body)["code"], "UNIMPLEMENTED");

    let (body, status) = curl(&["-d", r#"{"a":"#, &format!("{base}/Calculator/Add")]).await;
    assert_eq!(status, 400);
    assert_eq!(json_of(&body)["code"], "INVALID_ARGUMENT");

    let (body, status) = curl(&["-d", r#"{"a":1,"b":0}"#, &format!("{base}/Calculator/Div")]).await;
    assert_eq!(status, 500);
    assert_eq!(
        json_of(&body),
        json!({"code": "UNKNOWN", "message": "division by zero", "error": "DivisionByZero"})
    );

    let (body, status) = curl(&[&format!("{base}/")]).await;
    assert_eq!(status, 200);
    let listing = json_of(&body);
    let calculator =
        listing["services"].as_array().expect("services").iter().find(|s| s["name"] == "Calculator");
    assert!(calculator.is_some_and(|c| c["methods"][0]["path"] == "/Calculator/Add"), "{listing}");

    // A .proto service over HTTP/JSON, with metadata both ways.
    let output = Command::new("curl")
        .args(["-sS", "-i", "-H", "x-token: abc", "-d", r#"{"message":"hi","echo_metadata":["x-token"]}"#])
        .arg(format!("{base}/interop.Interop/Echo"))
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("echo-x-token: abc"), "{text}");
    assert!(text.contains(r#""message":"hi""#), "{text}");

    // Two requests on one kept-alive connection.
    let output = Command::new("curl")
        .args(["-sS", "-v", "-d", r#"{"a":1,"b":2}"#])
        .arg(format!("{base}/Calculator/Add"))
        .arg(format!("{base}/Calculator/Add"))
        .output()
        .await
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "33");
    let verbose = String::from_utf8_lossy(&output.stderr);
    assert!(
        verbose.contains("Re-using existing connection") || verbose.contains("Reusing existing"),
        "{verbose}"
    );
}
