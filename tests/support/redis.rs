//! A real Redis (Debian's `redis-server`) for the `redis://` registry
//! tests: on a free 127.0.0.1 port with a temporary directory, its data in
//! an append-only file so it survives [`RedisServer::restart`].
//!
//! Redis runs under `sh`, which SIGKILLs it (and waits for it, so the port
//! is free again) as soon as its stdin, a pipe from this process, closes:
//! on [`RedisServer::kill`], on drop, and when the test process dies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::processes::Reaped;
use crate::wait::free_port;

/// How long Redis may take to answer `PING` after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs redis-server with the arguments given, until stdin closes.
const REDIS_UNDER_LIFELINE: &str =
    r#"redis-server "$@" & redis=$!; trap 'kill -9 $redis 2>/dev/null; wait $redis' EXIT; cat >/dev/null"#;

/// A real Redis server; killed (SIGKILL) when dropped.
pub struct RedisServer {
    child: Option<Reaped>,
    lifeline: Option<ChildStdin>,
    /// The port it listens on, 127.0.0.1.
    pub port: u16,
    data: tempfile::TempDir,
}

impl RedisServer {
    /// Start Redis and wait until it answers (on a blocking thread, not to
    /// hold up the runtime's workers).
    ///
    /// # Panics
    /// If `redis-server` is not installed: `scripts/test.sh` installs it; a
    /// test run without it must fail, not skip.
    pub async fn launch() -> RedisServer {
        tokio::task::spawn_blocking(RedisServer::start).await.expect("starting Redis panicked")
    }

    /// [`RedisServer::launch`], blocking the calling thread.
    pub fn start() -> RedisServer {
        let data = tempfile::tempdir().expect("Redis data dir");
        let mut server = RedisServer { child: None, lifeline: None, port: 0, data };
        // The port is chosen free, then bound by Redis: another process may
        // take it in between. Try again on another port if so.
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(why) => last = why,
            }
        }
        panic!("Redis did not start: {last}");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A client for raw commands (`::redis::cmd(..).query_async(&mut conn)`).
    pub async fn connection(&self) -> ::redis::aio::MultiplexedConnection {
        let client = ::redis::Client::open(self.url()).expect("a Redis URL");
        client.get_multiplexed_async_connection().await.expect("connect to Redis")
    }

    /// SIGKILL Redis (a crash, as its clients see it), keeping its port
    /// and data for [`RedisServer::restart`]. Blocks until it is gone.
    pub fn kill(&mut self) {
        // Closing the pipe makes the shell kill Redis, wait for it and go.
        drop(self.lifeline.take());
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(child.0.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            // `Reaped` kills the shell; Redis, if still there, is orphaned
            // but has lost its data directory with the test.
        }
    }

    /// Start Redis again on the same port with the same data (killing it
    /// first if it runs), and wait until it answers. Blocks the thread.
    ///
    /// # Panics
    /// If it does not come back (the port may have been taken meanwhile).
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                // The old process's socket may linger a moment.
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("Redis did not restart on port {}: {last}", self.port);
    }

    /// Start redis-server on `self.port` with `self.data`, and wait for it.
    fn spawn(&mut self) -> Result<(), String> {
        let dir = self.data.path();
        let log_path = dir.join("redis.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("Redis log");
        let child = Command::new("sh")
            .args(["-c", REDIS_UNDER_LIFELINE, "redis-server"])
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(dir)
            // Every write in the append-only file before it is answered, so
            // SIGKILL loses nothing acknowledged; no snapshots.
            .args(["--appendonly", "yes", "--save", "", "--daemonize", "no", "--logfile", ""])
            .args(["--protected-mode", "no"])
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("Redis log"))
            .stderr(log)
            .spawn()
            .expect("spawn sh");
        self.child = Some(Reaped(child));
        self.lifeline = self.child.as_mut().and_then(|child| child.0.stdin.take());
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if ping(self.addr()) {
                return Ok(());
            }
            let log = log();
            if log.contains("redis-server: not found") {
                panic!(
                    "redis-server is not installed; install it with `apt-get install redis-server` (scripts/test.sh does)"
                );
            }
            if log.contains("Address already in use") {
                self.kill();
                std::fs::write(&log_path, "").expect("clear the Redis log");
                return Err("the port was taken".to_owned());
            }
            if self.child.as_mut().is_some_and(|child| matches!(child.0.try_wait(), Ok(Some(_)))) {
                self.kill();
                return Err(format!("it exited; its log ends: {}", tail(&log, 5)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!("no PONG within {START_TIMEOUT:?}; its log ends: {}", tail(&log(), 5)))
    }
}

/// Whether Redis at `addr` answers `PING` with `PONG` (not `-LOADING`).
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
