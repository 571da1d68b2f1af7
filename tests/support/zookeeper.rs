//! Real Apache ZooKeeper peers (Debian's `zookeeper` package, run from its
//! jars, never as the system service): a single server, and a 3-node
//! ensemble whose leader can be found and SIGKILLed.
//!
//! Each server gets free loopback ports (client, and for an ensemble
//! quorum and election ones), a temporary data directory and a generated
//! `zoo.cfg` with a short tick (200 ms, so a 2 s session is allowed and
//! expires on time) and the `srvr` four-letter word enabled, which is how
//! readiness and the leader are found. Each JVM runs under `sh`, which
//! SIGKILLs it as soon as its stdin, a pipe from the test process, closes:
//! when the handle is dropped, and when the test process dies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::processes::{Reaped, first_line};
use crate::wait::free_port;

/// How long a server (or an ensemble's quorum) may take to serve.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Debian's ZooKeeper jar (its manifest names the jars it needs) and the
/// SLF4J binding that sends its log to stderr (our log file).
const CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-jdk14.jar";

/// Runs ZooKeeper with the arguments given, prints its pid, and SIGKILLs
/// it when stdin closes.
const UNDER_LIFELINE: &str =
    r#"java "$@" & zk=$!; echo $zk; trap 'kill -9 $zk 2>/dev/null' EXIT; cat >/dev/null"#;

/// One ZooKeeper server process.
struct Node {
    shell: Option<Reaped>,
    lifeline: Option<ChildStdin>,
    /// The JVM's pid.
    pid: u32,
    client_port: u16,
    log: std::path::PathBuf,
}

impl Node {
    /// Start the server configured by `dir/zoo.cfg`.
    fn spawn(dir: &Path) -> Node {
        assert!(
            Path::new("/usr/share/java/zookeeper.jar").exists(),
            "ZooKeeper is not installed; install it with \
             `apt-get install --no-install-recommends zookeeper` (it brings default-jre-headless; \
             scripts/test.sh does)"
        );
        let log = dir.join("zookeeper.log");
        let client_port = read_client_port(&dir.join("zoo.cfg"));
        let mut shell = Reaped(
            Command::new("sh")
                .args(["-c", UNDER_LIFELINE, "zookeeper"])
                // A small heap and the quick JIT: three of these share two cores.
                .args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"])
                .args(["-Dzookeeper.jmx.log4j.disable=true", "-cp", CLASSPATH])
                .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                .arg(dir.join("zoo.cfg"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).expect("zookeeper log file"))
                .spawn()
                .expect("spawn sh"),
        );
        let lifeline = shell.0.stdin.take();
        let pid = first_line(&mut shell.0, "zookeeper's shell", START_TIMEOUT).trim().parse().expect("a pid");
        Node { shell: Some(shell), lifeline, pid, client_port, log }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// Its `Mode:` (`standalone`, `leader`, `follower`) while it serves.
    fn mode(&self) -> Option<String> {
        let answer = four_letter_word(self.addr(), "srvr")?;
        answer.lines().find_map(|line| line.strip_prefix("Mode: ")).map(|mode| mode.trim().to_owned())
    }

    /// Whether the JVM still runs (a zombie, dead but not reaped by its
    /// shell yet, does not).
    fn alive(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        self.shell.is_some() && !matches!(state, None | Some('Z' | 'X'))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// SIGKILL the JVM (a crash), then reap its shell.
    fn kill(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        drop(self.lifeline.take());
        if let Some(mut shell) = self.shell.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !matches!(shell.0.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_client_port(cfg: &Path) -> u16 {
    let cfg = std::fs::read_to_string(cfg).expect("read zoo.cfg");
    cfg.lines()
        .find_map(|line| line.strip_prefix("clientPort="))
        .and_then(|port| port.trim().parse().ok())
        .expect("clientPort in zoo.cfg")
}

/// Send a four-letter word, return the answer (`None` if it does not come
/// within a second).
fn four_letter_word(addr: SocketAddr, word: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(word.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// A `zoo.cfg` for a server on `client_port`, in `dir`, with `servers`
/// (`server.N=...` lines) for an ensemble.
fn write_config(dir: &Path, client_port: u16, servers: &[String]) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("zookeeper data dir");
    let mut cfg = format!(
        "tickTime=200\n\
         initLimit=50\n\
         syncLimit=10\n\
         dataDir={}\n\
         clientPort={client_port}\n\
         clientPortAddress=127.0.0.1\n\
         minSessionTimeout=400\n\
         maxSessionTimeout=60000\n\
         admin.enableServer=false\n\
         4lw.commands.whitelist=srvr,ruok,mntr\n\
         quorumListenOnAllIPs=false\n",
        data.display()
    );
    for server in servers {
        cfg.push_str(server);
        cfg.push('\n');
    }
    std::fs::write(dir.join("zoo.cfg"), cfg).expect("write zoo.cfg");
}

/// A real single ZooKeeper server on a free port, with a temporary data
/// directory; killed when dropped.
pub struct ZooKeeper {
    node: Node,
    _dir: tempfile::TempDir,
}

impl ZooKeeper {
    /// Start one and wait until it serves (on a blocking thread: the JVM
    /// takes a second or two).
    ///
    /// # Panics
    /// If ZooKeeper is not installed (`scripts/test.sh` installs it): the
    /// test must fail, not skip.
    pub async fn launch() -> ZooKeeper {
        tokio::task::spawn_blocking(ZooKeeper::start).await.expect("starting zookeeper panicked")
    }

    /// [`ZooKeeper::launch`], blocking the calling thread.
    pub fn start() -> ZooKeeper {
        let mut last = String::new();
        // A free port may be taken before the JVM binds it: try new ones.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("zookeeper dir");
            write_config(dir.path(), free_port(), &[]);
            let node = Node::spawn(dir.path());
            let serving = wait_until(START_TIMEOUT, || {
                (node.mode().as_deref() == Some("standalone"))
                    .then_some(true)
                    .or((!node.alive()).then_some(false))
            });
            if serving {
                return ZooKeeper { node, _dir: dir };
            }
            last = node.log_tail();
        }
        panic!("zookeeper did not serve within {START_TIMEOUT:?}; its log ends:\n{last}");
    }

    /// Its client address, `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.node.addr()
    }

    /// SIGKILL the server and start it again on its port and data (a
    /// crash and a restart), blocking until it serves again.
    pub fn restart(&mut self) {
        self.node.kill();
        self.node = Node::spawn(self._dir.path());
        let node = &self.node;
        let serving = wait_until(START_TIMEOUT, || {
            (node.mode().as_deref() == Some("standalone"))
                .then_some(true)
                .or((!node.alive()).then_some(false))
        });
        assert!(
            serving,
            "zookeeper did not serve again within {START_TIMEOUT:?}; its log ends:\n{}",
            node.log_tail()
        );
    }

    /// `zookeeper://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("zookeeper://{}", self.addr())
    }

    /// A raw client (`zookeeper-client`) for reading and writing nodes by
    /// hand, as Dubbo or an operator would.
    pub async fn client(&self) -> zookeeper_client::Client {
        raw_client(&self.addr().to_string()).await
    }

    /// Make `registry` (courier's zookeeper backend) forget `service`'s
    /// history, its way: ZooKeeper keeps none, and the backend keeps only
    /// what it can order by zxid. Two providers created in one transaction
    /// cannot be ordered (their watchers get a `Reset` and the log starts
    /// over); they are listed, so the backend sees them, then deleted, in
    /// one transaction again.
    pub async fn unorderable_change(&self, registry: &courier::registry::Registry, service: &str) {
        let client = self.client().await;
        let providers = format!("/dubbo/{}/providers", dubbo_encode(service));
        let paths: Vec<String> = (1..=2)
            .map(|i| {
                let url = format!("dubbo://10.77.0.{i}:20880/{service}?interface={service}&side=provider");
                format!("{providers}/{}", dubbo_encode(&url))
            })
            .collect();
        let options =
            zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
        let mut create = client.new_multi_writer();
        for path in &paths {
            create.add_create(path, b"", &options).expect("a valid path");
        }
        create.commit().await.expect("create two providers in one transaction");
        let listed = registry.list(service).await.expect("list");
        assert!(listed.instances.iter().any(|i| i.addr == "10.77.0.1:20880"), "{listed:?}");
        let mut delete = client.new_multi_writer();
        for path in &paths {
            delete.add_delete(path, None).expect("a valid path");
        }
        delete.commit().await.expect("delete them in one transaction");
    }
}

/// The Python interpreter of the virtualenv with Apache Dubbo's Python
/// implementation (`apache-dubbo` 3.0.0b1 and kazoo, pinned) that
/// `scripts/test.sh` creates under `target/dubbo-pyenv`, apart from
/// grpcio's (a beta, with its own pins). The test fails without it.
pub fn dubbo_python() -> std::path::PathBuf {
    let python = std::env::var_os("COURIER_TEST_DUBBO_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::python::tests_dir().join("../target/dubbo-pyenv/bin/python"));
    assert!(
        python.exists(),
        "no Python with apache-dubbo at {}: run ./scripts/test.sh (it creates target/dubbo-pyenv), \
         or set COURIER_TEST_DUBBO_PYTHON",
        python.display()
    );
    python
}

/// `s` encoded as Java's `URLEncoder.encode(s, "UTF-8")` does: what Dubbo
/// names a provider node (and a service's directory) with.
pub fn dubbo_encode(s: &str) -> String {
    let mut out = String::new();
    for byte in s.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => out.push(char::from(byte)),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Undo [`dubbo_encode`] (as Java's `URLDecoder` does); `None` if malformed.
pub fn dubbo_decode(s: &str) -> Option<String> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A raw client of `hosts`, with a 10 s session.
pub async fn raw_client(hosts: &str) -> zookeeper_client::Client {
    zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(hosts)
        .await
        .expect("a raw zookeeper client connects")
}

/// A real 3-node ZooKeeper ensemble on loopback (client, quorum and
/// election ports of its own each), with temporary data directories;
/// every node killed when dropped.
pub struct ZooKeeperEnsemble {
    nodes: Vec<Node>,
    _dirs: Vec<tempfile::TempDir>,
}

impl ZooKeeperEnsemble {
    /// Start three servers and wait until they have a leader.
    pub async fn launch() -> ZooKeeperEnsemble {
        tokio::task::spawn_blocking(ZooKeeperEnsemble::start).await.expect("starting the ensemble panicked")
    }

    /// [`ZooKeeperEnsemble::launch`], blocking the calling thread.
    pub fn start() -> ZooKeeperEnsemble {
        let mut last = String::new();
        for _ in 0..3 {
            let ports: Vec<(u16, u16, u16)> =
                (0..3).map(|_| (free_port(), free_port(), free_port())).collect();
            let servers: Vec<String> = ports
                .iter()
                .enumerate()
                .map(|(i, (_, quorum, election))| format!("server.{}=127.0.0.1:{quorum}:{election}", i + 1))
                .collect();
            let mut dirs = Vec::new();
            let mut nodes = Vec::new();
            for (i, (client, _, _)) in ports.iter().enumerate() {
                let dir = tempfile::tempdir().expect("zookeeper dir");
                write_config(dir.path(), *client, &servers);
                std::fs::write(dir.path().join("data/myid"), format!("{}\n", i + 1)).expect("myid");
                nodes.push(Node::spawn(dir.path()));
                dirs.push(dir);
            }
            let ensemble = ZooKeeperEnsemble { nodes, _dirs: dirs };
            let formed = wait_until(START_TIMEOUT, || {
                (ensemble.serving() == 3)
                    .then_some(true)
                    .or((!ensemble.nodes.iter().all(Node::alive)).then_some(false))
            });
            if formed {
                return ensemble;
            }
            last = ensemble.nodes.iter().map(Node::log_tail).collect::<Vec<_>>().join("\n---\n");
        }
        panic!("the ensemble did not form within {START_TIMEOUT:?}; the logs end:\n{last}");
    }

    /// How many live nodes serve (as leader or follower).
    fn serving(&self) -> usize {
        self.modes().iter().filter(|mode| matches!(mode.as_deref(), Some("leader" | "follower"))).count()
    }

    fn modes(&self) -> Vec<Option<String>> {
        self.nodes.iter().map(|node| if node.shell.is_some() { node.mode() } else { None }).collect()
    }

    /// `zookeeper://<node 1>,<node 2>,<node 3>`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|node| node.addr().to_string()).collect();
        format!("zookeeper://{}", hosts.join(","))
    }

    /// The index of the current leader, if there is one.
    pub fn leader(&self) -> Option<usize> {
        self.modes().iter().position(|mode| mode.as_deref() == Some("leader"))
    }

    /// SIGKILL the current leader; which node it was.
    ///
    /// # Panics
    /// If there is no leader.
    pub fn kill_leader(&mut self) -> usize {
        let leader = self.leader().expect("the ensemble has a leader");
        self.nodes[leader].kill();
        leader
    }

    /// Whether the live nodes elect a new leader within `timeout` (blocking
    /// the calling thread; quick calls, four-letter words on loopback).
    pub fn has_leader_within(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.leader().is_some().then_some(true))
    }
}

/// Poll `decided` every 100 ms until it decides (`Some`), at most
/// `timeout`; `false` if it never does.
fn wait_until(timeout: Duration, mut decided: impl FnMut() -> Option<bool>) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(decision) = decided() {
            return decision;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}
