//! The test harness itself: child peers die with the test process, however
//! it ends, and what it left on the machine (test hosts' namespaces and
//! bridges) goes with the next run; a peer that never comes up fails the
//! test instead of hanging it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether process `pid` is still running (a zombie waiting to be reaped
/// by whoever adopted it counts as gone: it runs nothing and holds no port).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Wait up to `timeout` for every process in `pids` to be gone; those left.
fn still_running_after(pids: &[(String, u32)], timeout: Duration) -> Vec<(String, u32)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<_> = pids.iter().filter(|(_, pid)| running(*pid)).cloned().collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn peers_die_with_a_test_process_that_is_killed_outright() {
    let mut holder = Command::new(env!("CARGO_BIN_EXE_courier-test-peers"))
        .arg(env!("CARGO_BIN_EXE_courier-test-server"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the peer holder");
    let stdout = holder.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line == "ready";
            if sender.send(line).is_err() || done {
                break;
            }
        }
    });
    let mut pids = Vec::new();
    let mut names = Vec::new();
    loop {
        let line = match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(err) => {
                let _ = holder.kill();
                panic!("the peer holder did not report its peers within 60 s: {err}");
            }
        };
        if line == "ready" {
            break;
        }
        let (name, value) = line.split_once(' ').expect("NAME VALUE");
        match name {
            "netns" | "bridge" => names.push((name.to_owned(), value.to_owned())),
            _ => pids.push((name.to_owned(), value.parse::<u32>().expect("a pid"))),
        }
    }
    assert_eq!(pids.len(), 4, "a server, etcd's shell, etcd and netem: {pids:?}");
    assert_eq!(names.len(), 2, "a host's namespace and its lab's bridge: {names:?}");
    assert!(pids.iter().all(|(_, pid)| running(*pid)), "all running before: {pids:?}");

    // SIGKILL: no destructor runs; only the closed pipes tell the peers.
    holder.kill().expect("kill the holder");
    holder.wait().expect("reap the holder");
    let left = still_running_after(&pids, Duration::from_secs(10));
    for (_, pid) in &left {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(left.is_empty(), "peers outlived the killed test process: {left:?}");

    // The namespace and the bridge outlive it (no destructor ran); the
    // next lab made on the machine removes them (and may reuse the names).
    let holder_pid = holder.id();
    let exists = |(kind, name): &(String, String)| {
        let args: &[&str] =
            if kind == "netns" { &["netns", "list"] } else { &["-o", "link", "show", "type", "bridge"] };
        let output = Command::new("ip").args(args).output().expect("ip");
        String::from_utf8_lossy(&output.stdout).lines().any(|line| {
            let named = line.split_whitespace().any(|word| word.trim_end_matches(':') == name);
            named && (kind == "netns" || line.ends_with(&format!("pid {holder_pid}")))
        })
    };
    assert!(names.iter().all(exists), "left behind by the killed process: {names:?}");
    let _lab = courier_tests::Lab::new();
    let left: Vec<_> = names.iter().filter(|name| exists(name)).collect();
    assert!(left.is_empty(), "a new lab removes what a killed test left: {left:?}");
}

#[test]
fn a_child_server_that_never_listens_fails_the_test_and_is_killed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("pid");
    let script = dir.path().join("silent-server");
    std::fs::write(&script, format!("#!/bin/sh\necho $$ > {}\nexec sleep 60\n", pid_file.display()))
        .expect("write the script");
    let chmod = Command::new("chmod").arg("+x").arg(&script).status().expect("chmod");
    assert!(chmod.success());

    let started = Instant::now();
    let script_path = script.to_str().expect("a UTF-8 path").to_owned();
    let failed = std::panic::catch_unwind(move || {
        courier_tests::ChildServer::start_within(
            &script_path,
            "127.0.0.1:0".parse().expect("addr"),
            &[],
            Duration::from_secs(1),
        )
    });
    let message = match failed {
        Ok(_) => panic!("a server that never says it listens must not start"),
        Err(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    };
    assert!(message.contains("printed nothing within 1s"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10), "failed at its timeout: {:?}", started.elapsed());
    let pid: u32 = std::fs::read_to_string(&pid_file).expect("the script ran").trim().parse().expect("a pid");
    let left = still_running_after(&[("silent-server".to_owned(), pid)], Duration::from_secs(5));
    assert!(left.is_empty(), "the child of a failed start was killed: {left:?}");
}
