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

// ---------------------------------------------------------------------------
// Streaming methods (`--stream`).

/// Streams of every kind, and a unary method beside them.
#[courier::service]
pub trait Ticker {
    /// `0..n`, as fast as flow control allows.
    async fn count(&self, n: u64) -> courier::ResponseStream<u64>;
    /// Each word back as it arrives.
    async fn echo(&self, words: courier::Streaming<String>) -> courier::ResponseStream<String>;
    /// The sum of the numbers sent.
    async fn total(&self, numbers: courier::Streaming<u64>) -> Result<u64, courier::Status>;
    /// `n` numbers, then an error.
    async fn fail_after(&self, n: u64) -> courier::ResponseStream<u64>;
    /// A number every 5 ms, forever.
    async fn forever(&self) -> courier::ResponseStream<u64>;
    /// A unary method beside the streams.
    async fn ping(&self, x: u64) -> u64;
}

struct TickerImpl;

impl Ticker for TickerImpl {
    async fn count(&self, n: u64) -> courier::ResponseStream<u64> {
        courier::ResponseStream::iter(0..n)
    }

    async fn echo(&self, words: courier::Streaming<String>) -> courier::ResponseStream<String> {
        courier::ResponseStream::new(courier::stream::StreamExt::map(words, |word| word))
    }

    async fn total(&self, mut numbers: courier::Streaming<u64>) -> Result<u64, courier::Status> {
        let mut sum = 0u64;
        while let Some(n) = numbers.message().await? {
            sum = sum.saturating_add(n);
        }
        Ok(sum)
    }

    async fn fail_after(&self, n: u64) -> courier::ResponseStream<u64> {
        let items = (0..n.min(1000))
            .map(Ok)
            .chain(std::iter::once(Err(courier::Status::not_found("the data ran out"))));
        courier::ResponseStream::new(courier::stream::iter(items))
    }

    async fn forever(&self) -> courier::ResponseStream<u64> {
        courier::ResponseStream::new(courier::stream::StreamExt::then(
            courier::stream::iter(0u64..),
            |n| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(n)
            },
        ))
    }

    async fn ping(&self, x: u64) -> u64 {
        x
    }
}

fn streams_server() -> SocketAddr {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("server runtime");
        runtime.block_on(async move {
            let listening = courier::Server::builder()
                .add_service(TickerServer::new(TickerImpl))
                .bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            addr_tx.send(listening.local_addr()).expect("send the address");
            let _ = listening.serve().await;
        });
    });
    addr_rx.recv_timeout(Duration::from_secs(30)).expect("the server thread bound an address")
}

/// The number after `label` on the summary line that starts with it.
fn figure(text: &str, label: &str) -> f64 {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` line in\n{text}"))
}

fn succeeded(output: &Output) -> String {
    let text = stdout(output);
    eprintln!("{text}");
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(!text.contains("Error distribution"), "{text}");
    text
}

#[test]
fn server_streams_are_benchmarked_message_by_message() {
    let addr = streams_server().to_string();
    let output = courier(&[
        "bench",
        &addr,
        "-m",
        "Ticker.Count",
        "--stream",
        "server",
        "-D",
        r#"{"n":50}"#,
        "-n",
        "40",
        "-c",
        "4",
        "--connections",
        "2",
        "-q",
    ]);
    let text = succeeded(&output);
    assert!(text.contains("Ticker.Count at"), "{text}");
    assert!(text.contains("--stream server"), "{text}");
    assert_eq!(figure(&text, "Streams:"), 40.0, "{text}");
    assert_eq!(figure(&text, "Messages:"), 2000.0, "{text}");
    assert!(text.contains("2000 received"), "{text}");
    assert!(figure(&text, "Messages/sec:") > 0.0, "{text}");
    assert!(figure(&text, "Streams/sec:") > 0.0, "{text}");
    assert!(text.contains("Sample reply: 0"), "{text}");
    assert!(text.contains("Message latency (the gap since the previous message) distribution:"), "{text}");
    for label in ["p50", "p90", "p99", "p99.9", "max"] {
        assert!(text.lines().any(|line| line.trim().starts_with(&format!("{label} "))), "{label}: {text}");
    }
    assert!(text.contains("[Ok]") && text.contains("40 streams"), "{text}");
}

#[test]
fn bidi_streams_are_benchmarked_as_ping_pong_round_trips() {
    let addr = streams_server().to_string();
    let output = courier(&[
        "bench",
        &addr,
        "-m",
        "Ticker.Echo",
        "--stream",
        "bidi",
        "--messages",
        "25",
        "-D",
        r#""hi""#,
        "-n",
        "20",
        "-c",
        "4",
        "-H",
        "x-bench=1",
        "-q",
    ]);
    let text = succeeded(&output);
    assert_eq!(figure(&text, "Streams:"), 20.0, "{text}");
    assert_eq!(figure(&text, "Messages:"), 500.0, "{text}");
    assert!(figure(&text, "Messages/sec:") > 0.0, "{text}");
    assert!(text.contains(r#"Sample reply: "hi""#), "{text}");
    assert!(text.contains("Message latency (request to reply) histogram:"), "{text}");
    assert!(text.contains("[Ok]") && text.contains("20 streams"), "{text}");
}

#[test]
fn client_streams_are_benchmarked_per_stream() {
    let addr = streams_server().to_string();
    let output = courier(&[
        "bench",
        &addr,
        "-m",
        "Ticker.Total",
        "--stream",
        "client",
        "--messages",
        "30",
        "-D",
        "7",
        "-n",
        "10",
        "-c",
        "2",
        "-q",
    ]);
    let text = succeeded(&output);
    assert_eq!(figure(&text, "Streams:"), 10.0, "{text}");
    assert!(text.contains("Messages:     300 sent"), "{text}");
    // The probe stream sends one message.
    assert!(text.contains("Sample reply: 7"), "{text}");
    assert!(text.contains("Stream latency distribution:"), "{text}");
    assert!(text.contains("[Ok]") && text.contains("10 streams"), "{text}");
}

#[test]
fn streams_ending_in_an_error_are_counted_by_code_with_their_messages() {
    let addr = streams_server().to_string();
    let output = courier(&[
        "bench",
        &addr,
        "-m",
        "Ticker.FailAfter",
        "--stream",
        "server",
        "-D",
        r#"{"n":3}"#,
        "-n",
        "10",
        "-c",
        "2",
        "-q",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "no stream succeeded\n{text}");
    assert_eq!(figure(&text, "Messages:"), 30.0, "{text}");
    assert!(text.contains("[NotFound]") && text.contains("10 streams"), "{text}");
    assert!(text.contains("[10] NotFound: the data ran out"), "{text}");
}

#[test]
fn endless_streams_are_cut_when_the_duration_is_over() {
    let addr = streams_server().to_string();
    let started = std::time::Instant::now();
    let output =
        courier(&["bench", &addr, "-m", "Ticker.Forever", "--stream", "server", "-d", "1s", "-c", "3", "-q"]);
    let text = succeeded(&output);
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}\n{text}", started.elapsed());
    assert!(text.contains("Unfinished:   3 streams"), "{text}");
    assert!(figure(&text, "Messages:") > 10.0, "{text}");
}

#[test]
fn stream_options_used_wrongly_are_one_clear_error() {
    let addr = streams_server().to_string();
    let stderr = |output: &Output| String::from_utf8_lossy(&output.stderr).into_owned();

    let output = courier(&["bench", &addr, "-m", "Ticker.Count", "-D", r#"{"n":5}"#, "-n", "5", "-q"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("is a streaming method"), "{}", stderr(&output));
    assert!(stderr(&output).contains("--stream server|client|bidi"), "{}", stderr(&output));

    let output = courier(&[
        "bench",
        &addr,
        "-m",
        "Ticker.Ping",
        "--stream",
        "server",
        "-D",
        r#"{"x":5}"#,
        "-n",
        "5",
        "-q",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("drop --stream"), "{}", stderr(&output));

    let output =
        courier(&["bench", &addr, "-m", "Ticker.Count", "--stream", "server", "--messages", "5", "-q"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--messages is for"), "{}", stderr(&output));

    let output = courier(&["bench", &addr, "-m", "Ticker.Echo", "--stream", "bidi", "--messages", "0", "-q"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("at least 1"), "{}", stderr(&output));

    let output = courier(&["bench", &addr, "-m", "Ticker.Echo", "--messages", "5", "-q"]);
    assert_eq!(output.status.code(), Some(2), "--messages needs --stream");

    // `{}` (the default --data) is no String: the probe stream says so.
    let output = courier(&["bench", &addr, "-m", "Ticker.Echo", "--stream", "bidi", "-n", "5", "-q"]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(stderr(&output).contains("probe call to Ticker.Echo failed"), "{}", stderr(&output));

    let output = courier(&["bench", &addr, "-m", "Ticker.Echo", "--stream", "sideways", "-q"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("server, client, bidi"), "{}", stderr(&output));
    assert!(stdout(&output).is_empty());
}

#[test]
fn streams_are_benchmarked_over_grpc_too() {
    let addr = streams_server();
    let target = format!("grpc://{addr}");
    for (args, messages) in [
        (&["-m", "Ticker.Count", "--stream", "server", "-D", r#"{"n":20}"#][..], 200.0),
        (&["-m", "Ticker.Echo", "--stream", "bidi", "--messages", "20", "-D", r#""hi""#][..], 200.0),
        (&["-m", "Ticker.Total", "--stream", "client", "--messages", "20", "-D", "1"][..], 200.0),
    ] {
        let output = courier(&[&["bench", &target, "-n", "10", "-c", "2", "-q"][..], args].concat());
        let text = succeeded(&output);
        assert!(text.contains(&format!("at grpc://{addr}")), "{text}");
        assert_eq!(figure(&text, "Streams:"), 10.0, "{args:?}: {text}");
        assert_eq!(figure(&text, "Messages:"), messages, "{args:?}: {text}");
    }
}

#[test]
fn a_foreign_grpc_server_streams_protobuf_messages_from_proto_files() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let python = runtime.block_on(PythonServer::start_script("streams_server.py", "streams.proto", &[]));
    let target = format!("grpc://127.0.0.1:{}", python.port);
    let proto = tests_dir().join("proto/streams.proto").display().to_string();
    let include = tests_dir().join("proto").display().to_string();
    let common = ["bench", &target, "--proto", &proto, "-I", &include, "-n", "10", "-c", "2", "-q"];
    for (args, messages, sample) in [
        (
            &["-m", "streams.Streams/Produce", "--stream", "server", "-D", r#"{"count":20,"size":8}"#][..],
            200.0,
            r#""payload":"cHBwcHBwcHA=""#,
        ),
        (
            &["-m", "streams.Streams/Echo", "--stream", "bidi", "--messages", "20", "-D", r#"{"seq":7}"#][..],
            200.0,
            r#""seq":"7""#,
        ),
        (
            &[
                "-m",
                "streams.Streams/Consume",
                "--stream",
                "client",
                "--messages",
                "20",
                "-D",
                r#"{"seq":3}"#,
            ][..],
            200.0,
            r#""count":"1""#,
        ),
    ] {
        let output = courier(&[&common[..], args].concat());
        let text = succeeded(&output);
        assert_eq!(figure(&text, "Streams:"), 10.0, "{args:?}: {text}");
        assert_eq!(figure(&text, "Messages:"), messages, "{args:?}: {text}");
        assert!(text.contains(sample), "the sample reply as JSON, {sample}: {text}");
    }

    // The .proto says which kind the method is.
    let output = courier(&[&common[..], &["-m", "streams.Streams/Echo", "--stream", "server"]].concat());
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("a bidirectional streaming method: benchmark it with --stream bidi"), "{stderr}");
    drop(python);
}

#[test]
fn the_timeout_covers_a_whole_stream() {
    let addr = streams_server().to_string();
    let started = std::time::Instant::now();
    let output = courier(&[
        "bench",
        &addr,
        "-m",
        "Ticker.Forever",
        "--stream",
        "server",
        "-t",
        "300ms",
        "-n",
        "3",
        "-c",
        "3",
        "-q",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "no stream succeeded\n{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}\n{text}", started.elapsed());
    assert!(text.contains("[DeadlineExceeded]") && text.contains("3 streams"), "{text}");
    assert!(figure(&text, "Messages:") > 3.0, "messages before the deadline count: {text}");
}
