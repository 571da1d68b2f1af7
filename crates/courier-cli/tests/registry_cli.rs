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

/// `courier registry serve` on a free port; returns its courier:// URL.
fn serve(data_dir: &std::path::Path) -> (Serving, String) {
    let port = courier_tests::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["registry", "serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run courier registry serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    assert!(line.contains(&format!("courier://127.0.0.1:{port}")), "{line}");
    (Serving(child), format!("courier://127.0.0.1:{port}"))
}

fn ls(url: &str, service: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_courier"));
    command.args(["ls", "--registry", url]);
    if let Some(service) = service {
        command.arg(service);
    }
    command.output().expect("run courier ls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_lists_what_is_registered_in_a_served_registry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, url) = serve(dir.path());
    let registry = courier::registry::connect(&url).await.expect("connect");
    registry
        .register(
            Instance::new("Calculator", "127.0.0.1:9000").with_version("1.2.0").with_weight(3),
            Duration::from_secs(30),
        )
        .await
        .expect("register");
    registry
        .register(Instance::new("Echo", "127.0.0.1:9001").with_zone("z1"), Duration::from_secs(30))
        .await
        .expect("register");

    let all = ls(&url, None);
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

    let one = ls(&url, Some("Echo"));
    let text = String::from_utf8_lossy(&one.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    let none = ls(&url, Some("Nothing"));
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
