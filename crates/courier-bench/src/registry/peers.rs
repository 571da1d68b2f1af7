//! The registries under test, each a process of its own on free loopback
//! ports with a temporary data directory, so their memory can be read from
//! /proc and they can be killed and restarted on the same data.
//!
//! Each is configured durable, as its operators would run it: the courier
//! registry commits every change to disk before answering (group commit);
//! etcd syncs its WAL; ZooKeeper syncs its transaction log (`forceSync`,
//! its default); Redis appends every write to its AOF with
//! `appendfsync always`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::systems::BoxError;

/// A registry the benchmark can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    /// `courier registry serve` (this binary's `serve-registry`).
    Courier,
    /// etcd (Debian's `etcd-server`).
    Etcd,
    /// ZooKeeper (Debian's `zookeeper`).
    Zookeeper,
    /// Redis (Debian's `redis-server`).
    Redis,
}

impl Backend {
    pub(crate) const ALL: [Backend; 4] =
        [Backend::Courier, Backend::Etcd, Backend::Zookeeper, Backend::Redis];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Courier => "courier",
            Backend::Etcd => "etcd",
            Backend::Zookeeper => "zookeeper",
            Backend::Redis => "redis",
        }
    }
}

/// A running registry process.
pub(crate) struct Peer {
    backend: Backend,
    child: Child,
    /// The registry URL courier connects with.
    pub(crate) url: String,
    ports: Vec<u16>,
    data: tempfile::TempDir,
}

impl Peer {
    /// Start `backend` on fresh ports with an empty data directory.
    pub(crate) fn start(backend: Backend) -> Result<Peer, BoxError> {
        let data = tempfile::Builder::new().prefix("courier-bench-registry-").tempdir()?;
        let ports = match backend {
            Backend::Etcd => vec![free_port()?, free_port()?],
            Backend::Zookeeper => vec![free_port()?],
            Backend::Courier | Backend::Redis => vec![free_port()?],
        };
        let (child, url) = launch(backend, data.path(), &ports)?;
        Ok(Peer { backend, child, url, ports, data })
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kill it (SIGKILL: a crash) and start it again on the same ports and
    /// data; returns when the process is started (not yet serving).
    pub(crate) fn crash_and_restart(&mut self) -> Result<(), BoxError> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, url) = launch(self.backend, self.data.path(), &self.ports)?;
        self.child = child;
        self.url = url;
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Start the process and wait until its port accepts connections.
fn launch(backend: Backend, data: &Path, ports: &[u16]) -> Result<(Child, String), BoxError> {
    let quiet = |command: &mut Command| {
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    };
    let (child, url) = match backend {
        Backend::Courier => {
            let mut command = Command::new(std::env::current_exe()?);
            command
                .args(["serve-registry", "--listen", &format!("127.0.0.1:{}", ports[0]), "--data-dir"])
                .arg(data.join("courier"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = command.spawn()?;
            // It says where it listens once it is open.
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            if !line.starts_with("listening on") {
                let _ = child.kill();
                return Err(format!("the courier registry did not start: {line:?}").into());
            }
            (child, format!("courier://127.0.0.1:{}", ports[0]))
        }
        Backend::Etcd => {
            let (client, peer) = (ports[0], ports[1]);
            let mut command = Command::new(which("etcd", "etcd-server")?);
            command
                .arg("--name=bench")
                .arg(format!("--data-dir={}", data.join("etcd").display()))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!("--initial-cluster=bench=http://127.0.0.1:{peer}"))
                .arg("--quota-backend-bytes=8589934592")
                .arg("--log-level=error");
            quiet(&mut command);
            (command.spawn()?, format!("etcd://127.0.0.1:{client}"))
        }
        Backend::Redis => {
            let port = ports[0];
            let dir = data.join("redis");
            std::fs::create_dir_all(&dir)?;
            let mut command = Command::new(which("redis-server", "redis-server")?);
            command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"]).arg(&dir).args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--loglevel",
                "warning",
            ]);
            quiet(&mut command);
            (command.spawn()?, format!("redis://127.0.0.1:{port}"))
        }
        Backend::Zookeeper => {
            let client = ports[0];
            let dir = data.join("zookeeper");
            std::fs::create_dir_all(&dir)?;
            let config = dir.join("zoo.cfg");
            std::fs::write(
                &config,
                format!(
                    "tickTime=200\ninitLimit=50\nsyncLimit=10\ndataDir={}\nclientPort={client}\n\
                     clientPortAddress=127.0.0.1\nadmin.enableServer=false\nminSessionTimeout=400\n\
                     maxSessionTimeout=600000\nmaxClientCnxns=0\n4lw.commands.whitelist=srvr,ruok,mntr\n",
                    dir.display()
                ),
            )?;
            let mut command = Command::new(which("java", "default-jre-headless")?);
            command
                .args(["-Xmx2g", "-Djava.awt.headless=true", "-Dzookeeper.jmx.log4j.disable=true", "-cp"])
                .arg(zookeeper_classpath()?)
                .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                .arg(&config);
            quiet(&mut command);
            (command.spawn()?, format!("zookeeper://127.0.0.1:{client}"))
        }
    };
    let port = ports[0];
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{} did not listen on port {port} within 60 s", backend.name()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, url))
}

/// `program` on the PATH, or an error naming the Debian package.
fn which(program: &str, package: &str) -> Result<PathBuf, BoxError> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!("`{program}` is not installed: apt-get install --no-install-recommends {package}").into()
        })
}

/// Debian's ZooKeeper jar (its manifest names the jars it needs) and a
/// logging backend for slf4j.
fn zookeeper_classpath() -> Result<String, BoxError> {
    const JARS: [(&str, &str); 2] = [
        ("/usr/share/java/zookeeper.jar", "zookeeper"),
        ("/usr/share/java/slf4j-jdk14.jar", "libslf4j-java"),
    ];
    for (jar, package) in JARS {
        if !Path::new(jar).exists() {
            return Err(format!("{jar} is missing: apt-get install --no-install-recommends {package}").into());
        }
    }
    Ok(JARS.map(|(jar, _)| jar).join(":"))
}
