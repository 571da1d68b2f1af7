//! Python peers: the virtualenv `scripts/test.sh` creates under
//! `target/pyenv` (grpcio and its tools), stubs generated from `proto/`,
//! and grpcio servers (of the interop service, of the streams service).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The tests' directory (where `proto/` and `python/` are).
pub fn tests_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python interpreter with grpcio; the test fails without it.
pub fn python() -> PathBuf {
    let python = std::env::var_os("COURIER_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| tests_dir().join("../target/pyenv/bin/python"));
    assert!(
        python.exists(),
        "no Python with grpcio at {}: run ./scripts/test.sh (it creates target/pyenv), or set COURIER_TEST_PYTHON",
        python.display()
    );
    python
}

/// Python stubs for `proto/interop.proto`, generated now with grpcio-tools.
pub async fn python_stubs() -> tempfile::TempDir {
    python_stubs_of("interop.proto").await
}

/// Python stubs for `proto/<file>`, generated now with grpcio-tools.
pub async fn python_stubs_of(file: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(python())
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(tests_dir().join("proto"))
        .arg(format!("--python_out={}", dir.path().display()))
        .arg(format!("--grpc_python_out={}", dir.path().display()))
        .arg(file)
        .output()
        .await
        .expect("run grpc_tools.protoc");
    assert!(output.status.success(), "protoc failed: {}", String::from_utf8_lossy(&output.stderr));
    dir
}

/// A Python grpcio server of the interop service, stopped when dropped.
pub struct PythonServer {
    child: tokio::process::Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    _stubs: tempfile::TempDir,
}

impl PythonServer {
    /// Start it and wait for its port.
    pub async fn start() -> PythonServer {
        PythonServer::start_with(&[]).await
    }

    /// Start one whose `Echo` answers with the response header
    /// `x-served-by: name`.
    pub async fn start_named(name: &str) -> PythonServer {
        PythonServer::start_with(&[name]).await
    }

    async fn start_with(extra: &[&str]) -> PythonServer {
        PythonServer::start_script("interop_server.py", "interop.proto", extra).await
    }

    /// Start `python/<script>` with stubs of `proto/<proto>` (its first
    /// argument) and `extra` arguments; it prints its port on its first
    /// line and serves until its standard input closes.
    pub async fn start_script(script: &str, proto: &str, extra: &[&str]) -> PythonServer {
        let stubs = python_stubs_of(proto).await;
        let mut child = Command::new(python())
            .arg(tests_dir().join("python").join(script))
            .arg(stubs.path())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the Python server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("the Python server starts")
            .expect("read its port");
        let port = line.trim().parse().unwrap_or_else(|_| panic!("a port, got {line:?}"));
        PythonServer { child, port, _stubs: stubs }
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
