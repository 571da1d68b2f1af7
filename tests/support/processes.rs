//! Peers in child processes: the courier test server and a real etcd.
//!
//! Each is killed when its handle is dropped, on every path (a failed start
//! included), and dies with the test process even when that is killed
//! outright: each child holds a pipe from the test process and ends when
//! the pipe closes (the test server watches its stdin; etcd runs under a
//! shell that does). Starting one waits for it under a timeout, so a peer
//! that never comes up fails the test instead of hanging the suite.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::wait::{free_port, rss_kib_of};

/// How long a child peer may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `etcdctl` command may take.
const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// A child that is SIGKILLed and reaped when dropped, whatever happened.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line `child` prints on stdout, waiting at most `timeout`.
/// (Read on a thread of its own: std's pipes cannot time out.)
pub(crate) fn first_line(child: &mut Child, what: &str, timeout: Duration) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = sender.send(read);
    });
    match receiver.recv_timeout(timeout) {
        Ok(Ok(line)) => line,
        Ok(Err(err)) => panic!("{what}: could not read its first line: {err}"),
        Err(_) => panic!("{what} printed nothing within {timeout:?}"),
    }
}

/// A test server in a child process; killed with SIGKILL when dropped.
pub struct ChildServer {
    child: Reaped,
    /// Kept open: the server exits when it closes (the test process died).
    _lifeline: Option<ChildStdin>,
    /// The network namespace it runs in (`None`: this process's own).
    netns: Option<String>,
    /// The arguments it was started with, to start it again.
    binary: String,
    extra: Vec<String>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Start `courier-test-server` on `addr` and wait until it listens.
    pub fn start(binary: &str, addr: SocketAddr) -> ChildServer {
        ChildServer::start_with(binary, addr, &[])
    }

    /// Start it on a port of its own choosing (`127.0.0.1:0`): no other
    /// process can take the port between choosing and binding it. Use
    /// [`ChildServer::restart`] to start it again on the same address.
    pub fn start_anywhere(binary: &str, extra: &[&str]) -> ChildServer {
        ChildServer::start_with(binary, SocketAddr::from(([127, 0, 0, 1], 0)), extra)
    }

    /// Start it with extra arguments (`--registry URL --name NAME`, or
    /// `--registry-data DIR` to serve a registry instead).
    pub fn start_with(binary: &str, addr: SocketAddr, extra: &[&str]) -> ChildServer {
        ChildServer::start_within(binary, addr, extra, START_TIMEOUT)
    }

    /// [`ChildServer::start_with`], failing if it is not listening within
    /// `timeout` (the child is killed then, as on every failed start).
    pub fn start_within(binary: &str, addr: SocketAddr, extra: &[&str], timeout: Duration) -> ChildServer {
        ChildServer::spawn(None, binary, addr, extra, timeout)
    }

    /// Start it in network namespace `netns` (see [`crate::netns`]),
    /// listening on `addr` there.
    pub fn start_in(netns: &str, binary: &str, addr: SocketAddr, extra: &[&str]) -> ChildServer {
        ChildServer::spawn(Some(netns), binary, addr, extra, START_TIMEOUT)
    }

    fn spawn(
        netns: Option<&str>,
        binary: &str,
        addr: SocketAddr,
        extra: &[&str],
        timeout: Duration,
    ) -> ChildServer {
        // `ip netns exec` enters the namespace and then execs the binary:
        // the child's pid is the server's own, so signals reach it.
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, binary]);
                command
            }
            None => Command::new(binary),
        };
        let mut child = Reaped(
            command
                .arg(addr.to_string())
                .args(extra)
                .arg("--exit-with-stdin")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn the test server"),
        );
        let lifeline = child.0.stdin.take();
        let line = first_line(&mut child.0, "the test server", timeout);
        assert!(line.starts_with("listening on "), "unexpected server output: {line:?}");
        // What it actually bound (the address asked for may be port 0).
        let addr = line["listening on ".len()..].trim().parse().unwrap_or(addr);
        ChildServer {
            child,
            _lifeline: lifeline,
            netns: netns.map(str::to_owned),
            binary: binary.to_owned(),
            extra: extra.iter().map(|&arg| arg.to_owned()).collect(),
            addr,
        }
    }

    /// SIGKILL it, then start it again with the same arguments on the
    /// address it had (a crash and a restart, as its clients see them).
    pub fn restart(self) -> ChildServer {
        let (netns, binary, extra, addr) =
            (self.netns.clone(), self.binary.clone(), self.extra.clone(), self.addr);
        self.kill();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        ChildServer::spawn(netns.as_deref(), &binary, addr, &extra, START_TIMEOUT)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The server process's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(&self.child.0.id().to_string()).expect("VmRSS of the server process")
    }

    /// SIGKILL the process and reap it.
    pub fn kill(self) {
        drop(self);
    }
}

/// A real single-node etcd (Debian's `etcd-server`), on free ports with a
/// temporary data directory; killed when dropped.
///
/// etcd runs under `sh`, which kills it (SIGKILL) as soon as its stdin, a
/// pipe from this process, closes: on drop, and when the test process dies.
pub struct EtcdServer {
    child: Option<Reaped>,
    lifeline: Option<ChildStdin>,
    /// `127.0.0.1:<client port>`.
    pub endpoint: String,
    peer_port: u16,
    _data: tempfile::TempDir,
}

/// Runs etcd with the arguments given, until stdin closes.
const ETCD_UNDER_LIFELINE: &str =
    r#"etcd "$@" & etcd=$!; trap 'kill -9 $etcd 2>/dev/null' EXIT; cat >/dev/null"#;

impl EtcdServer {
    /// Start etcd and wait until it answers (on a blocking thread: this
    /// takes a second or two, and must not hold up the runtime's workers).
    ///
    /// # Panics
    /// If etcd is not installed: `scripts/test.sh` installs it; a test run
    /// without it must fail, not skip.
    pub async fn launch() -> EtcdServer {
        tokio::task::spawn_blocking(EtcdServer::start).await.expect("starting etcd panicked")
    }

    /// [`EtcdServer::launch`], blocking the calling thread.
    pub fn start() -> EtcdServer {
        // The ports are chosen free, then bound by etcd: another process
        // may take one in between. Try again on new ports if so.
        let mut last = String::new();
        for _ in 0..3 {
            match EtcdServer::start_on(free_port(), free_port()) {
                Ok(server) => return server,
                Err(why) => last = why,
            }
        }
        panic!("etcd did not start: {last}");
    }

    /// Kill this etcd and start an empty one on the same ports: a cluster
    /// that lost its data (or was replaced), as its clients see it.
    pub fn replace_with_empty(mut self) -> EtcdServer {
        self.stop();
        let port = |endpoint: &str| endpoint.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
        let client = port(&self.endpoint).expect("the endpoint has a port");
        EtcdServer::start_on(client, self.peer_port)
            .unwrap_or_else(|why| panic!("etcd did not restart: {why}"))
    }

    /// Kill etcd (SIGKILL) and start it again on the same ports and data:
    /// a crash and a restart, as its clients see them.
    pub fn restart(&mut self) {
        self.stop();
        let port = |endpoint: &str| endpoint.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
        let client = port(&self.endpoint).expect("the endpoint has a port");
        let data = std::mem::replace(&mut self._data, tempfile::tempdir().expect("a placeholder dir"));
        *self = EtcdServer::start_in(client, self.peer_port, data)
            .unwrap_or_else(|why| panic!("etcd did not restart: {why}"));
    }

    fn start_on(client: u16, peer: u16) -> Result<EtcdServer, String> {
        EtcdServer::start_in(client, peer, tempfile::tempdir().expect("etcd data dir"))
    }

    fn start_in(client: u16, peer: u16, data: tempfile::TempDir) -> Result<EtcdServer, String> {
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log_path = data.path().join("etcd.log");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("etcd log file");
        let mut child = Command::new("sh")
            .args(["-c", ETCD_UNDER_LIFELINE, "etcd"])
            .args(["--name", "courier-test", "--data-dir"])
            .arg(data.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("courier-test={peer_url}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sh");
        let lifeline = child.stdin.take();
        let mut server = EtcdServer {
            child: Some(Reaped(child)),
            lifeline,
            endpoint: format!("127.0.0.1:{client}"),
            peer_port: peer,
            _data: data,
        };
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if server.etcdctl(&["endpoint", "health"]).status.success() {
                return Ok(server);
            }
            let log = log();
            if log.contains("executable file not found") || log.contains("etcd: not found") {
                panic!(
                    "etcd is not installed; install it with `apt-get install etcd-server` (scripts/test.sh does)"
                );
            }
            if log.contains("address already in use") {
                server.stop();
                return Err(format!("a port was taken: {}", log.lines().last().unwrap_or_default()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        server.stop();
        Err(format!("not healthy within {START_TIMEOUT:?}; its log ends: {}", tail(&log(), 5)))
    }

    /// The process id of the shell etcd runs under, while it runs.
    pub fn shell_pid(&self) -> Option<u32> {
        self.child.as_ref().map(|child| child.0.id())
    }

    /// Kill etcd and reap its shell.
    fn stop(&mut self) {
        // Closing the pipe makes the shell kill etcd; then the shell goes.
        drop(self.lifeline.take());
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(child.0.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // `Reaped` kills the shell; etcd, if still there, is orphaned
            // but has lost its data directory and ports with the test.
        }
    }

    /// Run `etcdctl` (v3 API) against this server, for at most 30 s,
    /// blocking the calling thread. In async code use [`EtcdServer::ctl`].
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        EtcdCtl { endpoint: self.endpoint.clone() }.run(args)
    }

    /// `etcdctl` without blocking the runtime's workers.
    pub async fn ctl(&self, args: &[&str]) -> std::process::Output {
        let endpoint = self.endpoint.clone();
        let args: Vec<String> = args.iter().map(|&arg| arg.to_owned()).collect();
        tokio::task::spawn_blocking(move || EtcdCtl { endpoint }.run(&args)).await.expect("etcdctl thread")
    }
}

/// What [`EtcdServer::ctl`] needs on its blocking thread.
struct EtcdCtl {
    endpoint: String,
}

impl EtcdCtl {
    fn run(&self, args: &[impl AsRef<std::ffi::OsStr>]) -> std::process::Output {
        let output = Command::new("timeout")
            .args(["--signal=KILL", &ETCDCTL_TIMEOUT.as_secs().to_string(), "etcdctl"])
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl under timeout (coreutils)");
        if output.status.code() == Some(127) {
            panic!(
                "etcdctl is not installed; install it with `apt-get install etcd-client` (scripts/test.sh does)"
            );
        }
        output
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
