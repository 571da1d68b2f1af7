//! `courier bench` against a real server, run as the user would run it.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use courier_tests::python::{PythonServer, tests_dir};

fn server() -> SocketAddr {
    courier_tests::serve_on_thread()
}

/// Run `courier args` to completion; killed (and the test failed) if it
/// takes more than a minute.
fn courier(args: &[&str]) -> Output {
    courier_tests::output_within(
        Command::new(env!("CARGO_BIN_EXE_courier")).args(args),
        Duration::from_secs(60),
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_counted_run_reports_every_call_with_percentiles_and_a_histogram() {
    let addr = server().to_string();
    let output = courier(&[
        "bench",
        &addr,
        "-m",
        "Calculator.Add",
        "-D",
        r#"{"a":1,"b":2}"#,
        "-n",
        "300",
        "-c",
        "8",
        "-q",
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("Count:        300"), "{text}");
    assert!(text.contains("[Ok]") && text.contains("300 responses"), "{text}");
    assert!(text.contains("Sample reply: 3"), "{text}");
    assert!(text.contains("Response time histogram:"), "{text}");
    assert!(text.contains("99.9 % in"), "{text}");
    assert!(!text.contains("Error distribution"), "{text}");
}

#[test]
fn a_rate_limited_run_makes_about_rate_times_duration_calls() {
    let addr = server().to_string();
    let output = courier(&[
        "bench",
        &addr,
        "-m",
        "Calculator.Add",
        "-D",
        r#"{"a":1,"b":2}"#,
        "-d",
        "1s",
        "-r",
        "200",
        "-c",
        "4",
        "-q",
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    let count: u64 = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Count:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a count line");
    eprintln!("200/s for 1 s made {count} calls");
    // Roughly honoured: a loaded machine may fall well short of the rate,
    // but nothing can exceed it by much (an unlimited run makes thousands).
    assert!((40..=300).contains(&count), "200/s for 1 s made {count} calls\n{text}");
}

#[test]
fn failing_calls_are_counted_by_status_and_message() {
    let addr = server().to_string();
    let output = courier(&[
        "bench",
        &addr,
        "-m",
        "Calculator.Div",
        "-D",
        r#"{"a":1,"b":0}"#,
        "-n",
        "50",
        "-c",
        "5",
        "-q",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "no call succeeded\n{text}");
    assert!(text.contains("[Unknown]") && text.contains("50 responses"), "{text}");
    assert!(text.contains("[50] Unknown: division by zero"), "{text}");
}

#[test]
fn a_wrong_method_is_one_clear_error_before_any_load() {
    let addr = server().to_string();
    let output = courier(&["bench", &addr, "-m", "Calculator.Sub", "-n", "1000", "-q"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("probe call to Calculator.Sub failed"), "{stderr}");
    assert!(stderr.contains("Unimplemented"), "{stderr}");
    assert!(stdout(&output).is_empty());
}

#[test]
fn bad_json_and_unreachable_servers_are_reported() {
    let output = courier(&["bench", "127.0.0.1:1", "-m", "Calculator.Add", "-D", "{oops", "-n", "1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not valid JSON"));
    let port = courier_tests::free_port();
    let output = courier(&["bench", &format!("127.0.0.1:{port}"), "-m", "Calculator.Add", "-n", "1"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("could not connect"));
}

#[test]
fn grpc_targets_are_benchmarked_with_protobuf_found_by_reflection() {
    let addr = server();
    let target = format!("grpc://{addr}");
    let args = [
        "bench",
        &target,
        "-m",
        "interop.Interop/Echo",
        "-D",
        r#"{"message":"over gRPC"}"#,
        "-n",
        "200",
        "-q",
    ];
    let output = courier(&args);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("Count:        200"), "{text}");
    assert!(text.contains(&format!("interop.Interop.Echo at grpc://{addr}")), "{text}");
    assert!(text.contains(r#""message":"over gRPC""#), "the sample reply is shown as JSON: {text}");

    // A serde service has no .proto: it is called with application/grpc+json.
    let output = courier(&[
        "bench",
        &addr.to_string(),
        "--grpc",
        "-m",
        "Calculator.Add",
        "-D",
        r#"{"a":2,"b":3}"#,
        "-n",
        "50",
        "-q",
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("Sample reply: 5"), "{text}");

    // Arguments that do not fit the message are one clear error.
    let output =
        courier(&["bench", &target, "-m", "interop.Interop.Echo", "-D", r#"{"nope":1}"#, "-n", "5", "-q"]);
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("do not fit interop.EchoRequest"), "{err}");
}

#[test]
fn a_foreign_grpc_server_is_benchmarked_with_proto_files() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let python = runtime.block_on(PythonServer::start());
    let target = format!("grpc://127.0.0.1:{}", python.port);
    let proto = tests_dir().join("proto/interop.proto");
    let include = tests_dir().join("proto");
    let output = courier(&[
        "bench",
        &target,
        "--proto",
        &proto.display().to_string(),
        "-I",
        &include.display().to_string(),
        "-m",
        "interop.Interop.Echo",
        "-D",
        r#"{"message":"to Python"}"#,
        "-n",
        "100",
        "-c",
        "4",
        "-q",
    ]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("Count:        100"), "{text}");
    assert!(text.contains(r#""message":"to Python""#), "{text}");
    assert!(text.contains("[Ok]") && text.contains("100 responses"), "{text}");
    drop(python);
}
