//! What the `courier` binary says, and where: command output on stdout,
//! logs on stderr (INFO by default, `RUST_LOG` honoured), and errors that
//! tell a new user what to do.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any one command may take before the test gives up on it.
const PATIENCE: Duration = Duration::from_secs(20);

/// A child process killed (and reaped) however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stream, read on a thread so the test can wait for
/// one with a timeout.
fn lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line from `rx` for which `wanted` holds, within `PATIENCE`;
/// every line seen goes into `seen`.
fn wait_for(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + PATIENCE;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(line) = rx.recv_timeout(left) else { return None };
        seen.push(line.clone());
        if wanted(&line) {
            return Some(line);
        }
    }
    None
}

/// Run `courier args` to completion (killed after `PATIENCE`); exit code,
/// stdout and stderr.
fn courier(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_courier"));
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = Running(command.spawn().expect("run courier"));
    let stdout = lines(child.0.stdout.take().expect("stdout"));
    let stderr = lines(child.0.stderr.take().expect("stderr"));
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "courier {args:?} still running after {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The process is gone, so both streams end.
    let collect = |rx: mpsc::Receiver<String>| rx.iter().map(|line| line + "\n").collect::<String>();
    (status.code(), collect(stdout), collect(stderr))
}

/// `courier registry serve` on a free port, with `env`; the process, its
/// courier:// URL and its stderr lines.
fn serve_registry(dir: &std::path::Path, env: &[(&str, &str)]) -> (Running, String, mpsc::Receiver<String>) {
    let port = courier_tests::free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_courier"));
    command
        .args(["registry", "serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = Running(command.spawn().expect("run courier registry serve"));
    let stdout = lines(child.0.stdout.take().expect("stdout"));
    let stderr = lines(child.0.stderr.take().expect("stderr"));
    let url = format!("courier://127.0.0.1:{port}");
    let mut seen = Vec::new();
    wait_for(&stdout, &mut seen, |line| line.contains(&url))
        .unwrap_or_else(|| panic!("no `serving at {url}` line on stdout: {seen:?}"));
    (child, url, stderr)
}

#[test]
fn registry_serve_logs_where_it_listens_on_stderr_at_info() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, url, stderr) = serve_registry(dir.path(), &[]);
    let addr = url.trim_start_matches("courier://");
    let mut seen = Vec::new();
    let line = wait_for(&stderr, &mut seen, |line| line.contains("listening"))
        .unwrap_or_else(|| panic!("no listening line on stderr: {seen:?}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains(&format!("addr={addr}")), "{line}");
    assert!(line.contains("protocols=native"), "{line}");
    assert!(line.contains("services=CourierRegistry"), "{line}");
}

#[test]
fn rust_log_warn_silences_the_info_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, url, stderr) = serve_registry(dir.path(), &[("RUST_LOG", "warn")]);
    // A served call shows the accept loop is running, so the listening
    // line would have been written by now.
    let (code, stdout, _) = courier(&["ls", "--registry", &url], &[]);
    assert_eq!(code, Some(0), "{stdout}");
    drop(server);
    let logged: Vec<String> = stderr.iter().collect();
    assert!(logged.iter().all(|line| !line.contains("INFO")), "{logged:?}");
}

#[test]
fn a_one_shot_command_says_unreachable_once_and_gives_no_retry_hint() {
    let url = format!("courier://127.0.0.1:{}", courier_tests::free_port());
    let (code, stdout, stderr) = courier(&["ls", "--registry", &url], &[]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "errors stay off stdout: {stdout}");
    assert_eq!(stderr.matches("unreachable").count(), 1, "{stderr}");
    assert!(stderr.contains("could not connect"), "{stderr}");
    assert!(!stderr.contains("next attempt"), "{stderr}");
}

#[test]
fn a_method_name_without_a_service_asks_for_service_dot_method() {
    // Refused before connecting: nothing needs to listen there.
    let addr = format!("127.0.0.1:{}", courier_tests::free_port());
    let (code, _, stderr) = courier(&["bench", &addr, "-m", "KvGet", "-n", "1", "-q"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("`KvGet` is not a method name: use Service.Method"), "{stderr}");
}

#[cfg(not(feature = "etcd"))]
#[test]
fn etcd_without_the_feature_says_which_feature_of_which_crate() {
    let (code, _, stderr) = courier(&["ls", "--registry", "etcd://127.0.0.1:2379"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("courier-cli's `etcd` feature"), "{stderr}");
    assert!(stderr.contains("cargo install courier-cli --features etcd"), "{stderr}");
}
