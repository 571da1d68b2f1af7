//! Go peers: programs under `tests/go/<name>/`, built with the system's Go
//! (Debian's `golang-go`) in GOPATH mode against the Go libraries Debian
//! packages under `/usr/share/gocode` (`golang-google-grpc-dev`,
//! `golang-etcd-server-dev`, ...), so a test runs real grpc-go or net/rpc
//! code without a network or a Go module proxy.
//!
//! [`build`] compiles one program into a fresh directory (the compiler's
//! cache is kept under `target/go-build`, so only the first build is slow)
//! and fails with a clear error, naming the Debian package to install,
//! when `go` or a library is missing: a test run without them must fail,
//! never skip. [`GoBinary::run`] runs it to completion under a timeout;
//! [`GoBinary::spawn`] starts a long-running peer (a server) whose output
//! can be read line by line. Every process is killed when its handle is
//! dropped, and when a timeout passes.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Where Debian installs Go libraries (GOPATH layout: `src/<import path>`).
pub const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// How long a build may take: the first one compiles grpc-go, etcd's
/// client and the standard library (without cgo) on a loaded machine.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// Import path prefixes of the Go libraries test programs use, and the
/// Debian package providing each.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("google.golang.org/grpc", "golang-google-grpc-dev"),
    ("go.etcd.io/etcd", "golang-etcd-server-dev"),
    ("google.golang.org/protobuf", "golang-google-protobuf-dev"),
    ("github.com/golang/protobuf", "golang-github-golang-protobuf-1-3-dev"),
    ("golang.org/x/net", "golang-golang-x-net-dev"),
];

/// Why a Go program could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GoError {
    /// No `go` command.
    #[error("no `go` command ({0}); install Debian's golang-go (scripts/test.sh does)")]
    GoMissing(std::io::Error),
    /// The program imports a library that is not installed.
    #[error(
        "the Go program in {program} imports `{import}`, which is not installed under {DEBIAN_GOPATH}/src; \
         install {package} (scripts/test.sh installs the Go packages the tests use)"
    )]
    PackageMissing {
        /// The program's directory.
        program: PathBuf,
        /// The import path `go` could not find.
        import: String,
        /// The Debian package to install.
        package: String,
    },
    /// `go build` failed for another reason.
    #[error("go build of {program} failed ({status}):\n{stderr}")]
    BuildFailed {
        /// The program's directory.
        program: PathBuf,
        /// `go build`'s exit status.
        status: ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// A build or a run took longer than allowed; the process was killed.
    #[error("{what} did not finish within {timeout:?} (killed){stderr}")]
    Timeout {
        /// What was running.
        what: String,
        /// The limit.
        timeout: Duration,
        /// Its standard error so far, if it was collected.
        stderr: String,
    },
    /// Starting or waiting for a process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GoError {
    let what = what.into();
    move |source| GoError::Io { what, source }
}

/// The directory of the test program `name` (`tests/go/<name>`).
pub fn program(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go").join(name)
}

/// `target/go-build`: the Go build cache and the GOPATH entry Go may write
/// to, kept between runs.
fn work_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("go-build")
}

/// A `go` command with a build environment independent of the user's:
/// GOPATH mode (Debian ships libraries, not modules), never the network,
/// no cgo (no C compiler needed), no user `go env` settings.
fn go_command(work: &Path) -> Result<Command, GoError> {
    // A target directory whose path has a `:` cannot be a GOPATH entry.
    let gopath =
        std::env::join_paths([work.join("gopath"), PathBuf::from(DEBIAN_GOPATH)]).map_err(|err| {
            GoError::Io {
                what: format!("make a GOPATH of {}", work.display()),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, err),
            }
        })?;
    let mut command = Command::new("go");
    command
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOCACHE", work.join("cache"))
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOENV", "off")
        .env("CGO_ENABLED", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

/// The package that `go build`'s `cannot find package "X"` names, if any.
fn missing_import(stderr: &str) -> Option<String> {
    let rest = stderr.split("cannot find package \"").nth(1)?;
    rest.split('"').next().map(str::to_owned)
}

fn debian_package(import: &str) -> String {
    DEBIAN_PACKAGES
        .iter()
        .find(|(prefix, _)| import == *prefix || import.starts_with(&format!("{prefix}/")))
        .map_or_else(
            || format!("the Debian package that provides {DEBIAN_GOPATH}/src/{import} (`apt-file search`)"),
            |(_, package)| (*package).to_owned(),
        )
}

/// Wait for `child` to exit, collecting its output, for at most `timeout`;
/// kill it if it does not exit in time.
async fn wait_with_timeout(mut child: Child, what: &str, timeout: Duration) -> Result<GoOutput, GoError> {
    async fn read_all(pipe: Option<impl AsyncRead + Unpin>) -> String {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the output; the exit status tells the rest.
            let _ = pipe.read_to_end(&mut bytes).await;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
    let stdout = tokio::spawn(read_all(child.stdout.take()));
    let stderr = tokio::spawn(read_all(child.stderr.take()));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(io_error(format!("wait for {what}")))?,
        Err(_) => {
            let _ = child.kill().await;
            // The pipes close once the process is gone.
            let stderr = tokio::time::timeout(Duration::from_secs(5), stderr).await;
            let stderr = match stderr {
                Ok(Ok(text)) if !text.is_empty() => format!("; its stderr:\n{text}"),
                _ => String::new(),
            };
            return Err(GoError::Timeout { what: what.to_owned(), timeout, stderr });
        }
    };
    // The process has exited; grandchildren holding the pipes open are
    // not waited for.
    let collect = |task: tokio::task::JoinHandle<String>| async {
        tokio::time::timeout(Duration::from_secs(5), task).await.ok().and_then(Result::ok).unwrap_or_default()
    };
    Ok(GoOutput { status, stdout: collect(stdout).await, stderr: collect(stderr).await })
}

/// Build the Go program (package `main`) in `program_dir` into a fresh
/// temporary directory, within [`BUILD_TIMEOUT`].
pub async fn build(program_dir: &Path) -> Result<GoBinary, GoError> {
    let work = work_dir();
    std::fs::create_dir_all(&work).map_err(io_error(format!("create {}", work.display())))?;
    let dir = tempfile::Builder::new()
        .prefix("bin-")
        .tempdir_in(&work)
        .map_err(io_error(format!("create a directory in {}", work.display())))?;
    let name = program_dir.file_name().map_or_else(|| "program".into(), |n| n.to_string_lossy().into_owned());
    let path = dir.path().join(&name);
    let child = go_command(&work)?
        .arg("build")
        .arg("-o")
        .arg(&path)
        .arg(".")
        .current_dir(program_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(GoError::GoMissing)?;
    let what = format!("go build of {}", program_dir.display());
    let output = wait_with_timeout(child, &what, BUILD_TIMEOUT).await?;
    if !output.status.success() {
        if let Some(import) = missing_import(&output.stderr) {
            let package = debian_package(&import);
            return Err(GoError::PackageMissing { program: program_dir.to_owned(), import, package });
        }
        return Err(GoError::BuildFailed {
            program: program_dir.to_owned(),
            status: output.status,
            stderr: output.stderr,
        });
    }
    Ok(GoBinary { path, name, _dir: Arc::new(dir) })
}

/// A built Go program; its directory is removed when the last handle (and
/// every process started from it) is dropped.
#[derive(Clone, Debug)]
pub struct GoBinary {
    path: PathBuf,
    name: String,
    _dir: Arc<tempfile::TempDir>,
}

/// What a finished run printed.
#[derive(Debug)]
pub struct GoOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl GoBinary {
    /// The executable.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.path);
        command.args(args).stdin(Stdio::null()).kill_on_drop(true);
        command
    }

    /// Run it with `args` until it exits, for at most `timeout` (then it is
    /// killed and this is an error). A non-zero exit is not an error here:
    /// the caller reads `status`, `stdout` and `stderr`.
    pub async fn run(&self, args: &[&str], timeout: Duration) -> Result<GoOutput, GoError> {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_error(format!("start {}", self.path.display())))?;
        wait_with_timeout(child, &format!("{} {}", self.name, args.join(" ")), timeout).await
    }

    /// Start it with `args` as a long-running peer: its stdout is read
    /// with [`GoProcess::next_line`], its stderr goes to the test's.
    pub fn spawn(&self, args: &[&str]) -> Result<GoProcess, GoError> {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io_error(format!("start {}", self.path.display())))?;
        let stdout = child.stdout.take().map(|out| BufReader::new(out).lines());
        Ok(GoProcess { child, stdout, _binary: self.clone() })
    }
}

/// A running Go program, killed when dropped.
#[derive(Debug)]
pub struct GoProcess {
    child: Child,
    stdout: Option<Lines<BufReader<ChildStdout>>>,
    _binary: GoBinary,
}

impl GoProcess {
    /// The next line it prints on stdout, waiting at most `timeout`;
    /// `Ok(None)` once its stdout is closed.
    pub async fn next_line(&mut self, timeout: Duration) -> Result<Option<String>, GoError> {
        let Some(lines) = self.stdout.as_mut() else { return Ok(None) };
        match tokio::time::timeout(timeout, lines.next_line()).await {
            Ok(line) => line.map_err(io_error("read the Go program's stdout")),
            Err(_) => Err(GoError::Timeout {
                what: "the Go program's next line".to_owned(),
                timeout,
                stderr: String::new(),
            }),
        }
    }

    /// Its process id, to signal it (SIGSTOP, SIGKILL) from a test.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kill it and wait until it is gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for GoProcess {
    fn drop(&mut self) {
        // kill_on_drop also kills it; this makes the intent explicit and
        // covers a Child moved out of tokio's reach.
        let _ = self.child.start_kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_import_names_its_debian_package() {
        let stderr =
            "main.go:9:2: cannot find package \"go.etcd.io/etcd/clientv3\" in any of:\n\t/usr/lib/go/src/...";
        let import = missing_import(stderr).expect("an import");
        assert_eq!(import, "go.etcd.io/etcd/clientv3");
        assert_eq!(debian_package(&import), "golang-etcd-server-dev");
        assert_eq!(debian_package("google.golang.org/grpc"), "golang-google-grpc-dev");
        assert!(debian_package("example.com/x").contains("/usr/share/gocode/src/example.com/x"));
        assert_eq!(missing_import("main.go:3: syntax error"), None);
    }
}
