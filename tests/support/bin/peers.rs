//! Starts child peers the way tests do, prints their process ids, and waits:
//! `tests/harness.rs` SIGKILLs this process and checks that its peers die
//! with it.
//!
//! ```text
//! courier-test-peers TEST_SERVER_BINARY
//! ```
//!
//! Prints `server PID`, `etcd-shell PID`, `etcd PID` and `netem PID` (the
//! netem stand-in on an impaired test host), then `netns NAME` and `bridge
//! NAME` (that host's namespace and its lab's bridge), then `ready`, then
//! sleeps (at most two minutes, so that nothing outlives a broken test).

use std::io::Write;
use std::time::Duration;

use courier_tests::{ChildServer, EtcdServer, Impairment, Lab};

fn main() {
    let binary = std::env::args().nth(1).expect("usage: courier-test-peers TEST_SERVER_BINARY");
    let server = ChildServer::start_anywhere(&binary, &[]);
    let etcd = EtcdServer::start();
    let mut out = std::io::stdout();
    let shell = etcd.shell_pid().expect("etcd's shell is running");
    let etcd_pid = children(shell)
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "etcd")
        })
        .expect("etcd runs under its shell");
    let lab = Lab::new();
    let host = lab.host();
    let millis = Duration::from_millis(5);
    host.impair(Impairment { delay: millis, jitter: millis, loss_percent: 1.0 });
    let netem = host.netem_pid().expect("impaired");
    writeln!(out, "server {}\netcd-shell {shell}\netcd {etcd_pid}\nnetem {netem}", server.pid())
        .expect("stdout");
    writeln!(out, "netns {}\nbridge {}\nready", host.netns, lab.bridge()).expect("stdout");
    out.flush().expect("stdout");
    std::thread::sleep(Duration::from_secs(120));
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .collect()
}
