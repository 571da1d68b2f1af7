//! `courier registry serve` and `courier ls`, run as a user would.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use courier::registry::Instance;

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `courier registry serve` on a port of its own choosing (no other
/// process can take it between choosing and binding); returns its
/// courier:// URL, read from what it printed. Fails if it has not printed
/// it within 30 s.
fn serve(data_dir: &std::path::Path) -> (Serving, String) {
    let mut child = Serving(
        Command::new(env!("CARGO_BIN_EXE_courier"))
            .args(["registry", "serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run courier registry serve"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    // Read on a thread of its own: std's pipes cannot time out.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = sender.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
    });
    let line = match receiver.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(line)) => line,
        Ok(Err(err)) => panic!("courier registry serve: no first line: {err}"),
        Err(_) => panic!("courier registry serve printed nothing within 30 s"),
    };
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("courier://"))
        .unwrap_or_else(|| panic!("no courier:// URL in {line:?}"))
        .to_owned();
    assert!(!url.ends_with(":0"), "the URL names the bound port: {line}");
    (child, url)
}

/// `courier ls`, killed if it takes over 30 s (a hang fails the test).
fn ls(url: &str, service: Option<&str>) -> std::process::Output {
    let mut command = Command::new("timeout");
    command.args(["--signal=KILL", "30", env!("CARGO_BIN_EXE_courier"), "ls", "--registry", url]);
    if let Some(service) = service {
        command.arg(service);
    }
    let output = command.stdin(Stdio::null()).output().expect("run courier ls under timeout (coreutils)");
    assert_ne!(output.status.code(), Some(137), "courier ls was killed after 30 s");
    output
}

/// [`ls`] from async code: on a blocking thread, so the runtime's workers
/// go on running while it waits for the process.
async fn ls_async(url: &str, service: Option<&str>) -> std::process::Output {
    let (url, service) = (url.to_owned(), service.map(str::to_owned));
    tokio::task::spawn_blocking(move || ls(&url, service.as_deref())).await.expect("courier ls ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_lists_what_is_registered_in_a_served_registry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, url) = serve(dir.path());
    let registry = courier::registry::connect(&url).await.expect("connect");
    let register = |instance: Instance| {
        let registry = registry.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                registry.register(instance, Duration::from_secs(30)),
            )
            .await
            .expect("register within 10 s")
            .expect("register")
        }
    };
    register(Instance::new("Calculator", "127.0.0.1:9000").with_version("1.2.0").with_weight(3)).await;
    register(Instance::new("Echo", "127.0.0.1:9001").with_zone("z1")).await;

    let all = ls_async(&url, None).await;
    let text = String::from_utf8_lossy(&all.stdout);
    assert!(all.status.success(), "{text}");
    assert!(text.starts_with("SERVICE"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("Calculator")
            && l.contains("1.2.0")
            && l.contains("127.0.0.1:9000")
            && l.contains(" 3 ")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("Echo") && l.contains("z1")), "{text}");

    let one = ls_async(&url, Some("Echo")).await;
    let text = String::from_utf8_lossy(&one.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    let none = ls_async(&url, Some("Nothing")).await;
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stdout).contains("no instances registered"));
}

#[test]
fn ls_against_a_registry_that_is_down_is_an_error() {
    let port = courier_tests::free_port();
    let output = ls(&format!("courier://127.0.0.1:{port}"), None);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("registry is unreachable"));
    let output = ls("nonsense", None);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid registry URL"));
}
