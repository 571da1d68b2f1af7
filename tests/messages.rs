//! What users read: error messages and log lines, as a new user met them
//! (a doubled "the registry is unreachable", a retry hint on a call that
//! had just made its attempt, a consumer silent about starting from a
//! cache file).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier::discovery::cache::{self, ServiceView};
use courier::registry::Instance;
use courier::{CallOptions, Channel};
use courier_tests::{CalculatorClient, free_port, within};

/// How long any one test may take before it fails instead of hanging.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// Everything logged in this test binary, for the tests that look for a
/// log line (the subscriber must be global: discovery logs from its own
/// task, on any worker thread).
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .init();
        logs
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Wait (up to `timeout`) for a logged line that contains every one of
/// `needles`; the line, if one came.
async fn logged_line(needles: &[&str], timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = String::from_utf8_lossy(&logs().lock().unwrap_or_else(|p| p.into_inner())).into_owned();
        if let Some(line) = text.lines().find(|line| needles.iter().all(|needle| line.contains(needle))) {
            return Some(line.to_owned());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A courier:// URL where nothing listens.
fn unreachable_registry() -> String {
    format!("courier://127.0.0.1:{}", free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_with_an_unreachable_registry_says_so_once() {
    within(TEST_LIMIT, "a_consumer_with_an_unreachable_registry_says_so_once", async {
        let registry = courier::registry::connect(&unreachable_registry()).await.expect("a valid URL");
        let client = CalculatorClient::discover(&registry, "Calculator")
            .no_cache()
            .initial_wait(Duration::from_secs(5))
            .build()
            .await
            .expect("build");
        let status = client.with_timeout(Duration::from_secs(5)).add(1, 2).await.expect_err("no instance");
        let message = status.message();
        assert!(message.contains("no instance of Calculator is known"), "{message}");
        assert_eq!(message.matches("unreachable").count(), 1, "{message}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_made_the_attempt_gets_its_error_without_a_retry_hint() {
    within(TEST_LIMIT, "a_call_that_made_the_attempt_gets_its_error_without_a_retry_hint", async {
        // The call itself tried to connect and failed: "next attempt in N ms"
        // means nothing to it (a one-shot command never makes that attempt).
        let channel = Channel::lazy(format!("127.0.0.1:{}", free_port()));
        let options = CallOptions::new().with_timeout(Duration::from_secs(5));
        let status =
            channel.unary_bytes("Calculator.Add", Bytes::new(), &options).await.expect_err("nothing listens");
        assert!(status.message().contains("could not connect"), "{status}");
        assert!(!status.message().contains("next attempt"), "{status}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_started_from_its_cache_file_says_how_old_it_is() {
    within(TEST_LIMIT, "a_consumer_started_from_its_cache_file_says_how_old_it_is", async {
        let _ = logs();
        let dir = tempfile::tempdir().expect("temp dir");
        let view = ServiceView::from_instances(vec![Instance::new("Calculator", "127.0.0.1:9")], None);
        cache::save(&cache::cache_path(dir.path(), "Calculator"), "Calculator", &view)
            .expect("write the cache");

        let registry = courier::registry::connect(&unreachable_registry()).await.expect("a valid URL");
        let _client = CalculatorClient::discover(&registry, "Calculator")
            .cache_dir(dir.path())
            .initial_wait(Duration::from_secs(5))
            .build()
            .await
            .expect("build");
        let line =
            logged_line(&["INFO", "using the registry cache file written", "s ago"], Duration::from_secs(10))
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "no cache log line in:\n{}",
                        String::from_utf8_lossy(&logs().lock().unwrap_or_else(|p| p.into_inner()))
                    )
                });
        assert!(line.contains("service=Calculator") && line.contains("instances=1"), "{line}");
        assert!(line.contains(&dir.path().display().to_string()), "the file is named: {line}");
    })
    .await;
}
