//! Peers in child processes: the courier test server and a real etcd.
//! Each is killed when its handle is dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::wait::free_port;

/// A test server in a child process; killed with SIGKILL when dropped.
pub struct ChildServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ChildServer {
    /// Start `courier-test-server` on `addr` and wait until it listens.
    pub fn start(binary: &str, addr: SocketAddr) -> ChildServer {
        ChildServer::start_with(binary, addr, &[])
    }

    /// Start it with extra arguments (`--registry URL --name NAME`, or
    /// `--registry-data DIR` to serve a registry instead).
    pub fn start_with(binary: &str, addr: SocketAddr, extra: &[&str]) -> ChildServer {
        let mut child = Command::new(binary)
            .arg(addr.to_string())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the test server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the server's first line");
        assert!(line.starts_with("listening on "), "unexpected server output: {line:?}");
        // What it actually bound (the address asked for may be port 0).
        let addr = line["listening on ".len()..].trim().parse().unwrap_or(addr);
        ChildServer { child, addr }
    }

    /// The server process's resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|line| line.starts_with("VmRSS:"))
                    .and_then(|line| line.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse().ok())
            })
            .expect("VmRSS of the server process")
    }

    /// SIGKILL the process and reap it.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A real single-node etcd (Debian's `etcd-server`), on free ports with a
/// temporary data directory; killed when dropped.
pub struct EtcdServer {
    child: Child,
    /// `127.0.0.1:<client port>`.
    pub endpoint: String,
    peer_port: u16,
    _data: tempfile::TempDir,
}

impl EtcdServer {
    /// Start etcd and wait until it answers.
    ///
    /// # Panics
    /// If etcd is not installed: `scripts/test.sh` installs it; a test run
    /// without it must fail, not skip.
    pub fn start() -> EtcdServer {
        EtcdServer::start_on(free_port(), free_port())
    }

    /// Kill this etcd and start an empty one on the same ports: a cluster
    /// that lost its data (or was replaced), as its clients see it.
    pub fn replace_with_empty(mut self) -> EtcdServer {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = |endpoint: &str| endpoint.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
        let client = port(&self.endpoint).expect("the endpoint has a port");
        EtcdServer::start_on(client, self.peer_port)
    }

    fn start_on(client: u16, peer: u16) -> EtcdServer {
        let data = tempfile::tempdir().expect("etcd data dir");
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(data.path().join("etcd.log")).expect("etcd log file");
        let child = Command::new("etcd")
            .args(["--name", "courier-test", "--data-dir"])
            .arg(data.path().join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("courier-test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("could not start etcd ({err}); install it with `apt-get install etcd-server` (scripts/test.sh does)")
            });
        let server =
            EtcdServer { child, endpoint: format!("127.0.0.1:{client}"), peer_port: peer, _data: data };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let healthy = server.etcdctl(&["endpoint", "health"]).status.success();
            if healthy {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not become healthy within 20 s");
    }

    /// Run `etcdctl` (v3 API) against this server.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(args)
            .output()
            .expect("etcdctl (package etcd-client) is installed")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
