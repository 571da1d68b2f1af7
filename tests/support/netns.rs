//! Test hosts on the machine's own virtual network: each [`Host`] is a
//! network namespace whose `eth0` is one end of a veth pair; the other end
//! is a port of the [`Lab`]'s bridge, which also carries an address in
//! this process's namespace (the gateway), so the test itself, and a
//! registry it runs, talk to every host over real links.
//!
//! Faults are injected on a host's link, both directions:
//! - [`Host::impair`]: delay, jitter and loss, as `tc qdisc ... netem`
//!   would on both ends of the veth pair. This kernel has no `sch_netem`,
//!   so iptables hands the host's packets to an NFQUEUE, where
//!   `courier-test-netem` holds them and releases or drops them.
//! - [`Host::partition`] / [`Host::heal`]: firewall drops (iptables).
//!
//! Names carry this process's pid (`courier-<pid>-…` namespaces; a
//! bridge's alias): whatever a killed test run left behind is
//! removed by the next [`Lab::new`]. Everything else is removed on drop.
//! Needs root, iproute2 and iptables (`scripts/test.sh` installs them).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::processes::{Reaped, first_line};

/// How long the netem stand-in may take to bind its queue.
const NETEM_START: Duration = Duration::from_secs(10);
/// Labs made by this process (names and subnets are told apart by it).
static LABS: AtomicU32 = AtomicU32::new(0);

/// Run `program args`, panicking with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("{program} could not run ({err}); scripts/test.sh installs it"));
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run("ip", args)
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// What a lab's bridge is called in its alias, before the owner's pid.
const BRIDGE_ALIAS: &str = "courier-test-lab pid ";

/// Remove the namespaces and bridges of test processes that are gone.
fn remove_stale() {
    for line in ip(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let pid = name.strip_prefix("courier-").and_then(|rest| rest.split('-').next());
        if let Some(pid) = pid.and_then(|pid| pid.parse::<u32>().ok())
            && !alive(pid)
        {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    for line in ip(&["-o", "link", "show", "type", "bridge"]).lines() {
        // "7: cb100x3: <BROADCAST,...> ... alias courier-test-lab pid 123".
        let name = line.split_whitespace().nth(1).unwrap_or_default().trim_end_matches(':');
        let pid = line.split_once(BRIDGE_ALIAS).and_then(|(_, pid)| pid.trim().parse::<u32>().ok());
        if let Some(pid) = pid
            && !alive(pid)
        {
            let _ = Command::new("ip").args(["link", "del", name]).status();
        }
    }
}

/// `courier-test-netem`, built beside the test binaries: cargo puts it in
/// `target/<profile>/`, the tests in its `deps/` (and the other test
/// binaries beside it).
fn netem_binary() -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().expect("the test binary's directory");
    [dir, dir.parent().unwrap_or(dir)]
        .iter()
        .map(|dir| dir.join("courier-test-netem"))
        .find(|binary| binary.exists())
        .unwrap_or_else(|| panic!("courier-test-netem is not built beside {}", exe.display()))
        .to_string_lossy()
        .into_owned()
}

/// A bridge with an address in this namespace, and hosts plugged into it.
pub struct Lab {
    bridge: String,
    /// The first three octets of the lab's /24.
    subnet: [u8; 3],
    /// Where this process's names begin (`courier-<pid>-<lab>`).
    prefix: String,
    hosts: AtomicU32,
}

impl Lab {
    /// Make a lab on a /24 no route of this machine uses.
    ///
    /// # Panics
    /// Without root, iproute2 or a bridge-capable kernel: the tests that
    /// need a lab must fail there, not skip.
    #[allow(clippy::new_without_default)] // making one changes the machine
    pub fn new() -> Lab {
        remove_stale();
        let pid = std::process::id();
        let number = LABS.fetch_add(1, Ordering::Relaxed);
        let routes = ip(&["-4", "route", "show", "table", "all"]);
        // A subnet is claimed by creating its bridge, named after it: of
        // two test processes trying the same one, one fails and moves on.
        for n in 0u16..100 * 256 {
            let subnet = [10, 100 + (n / 256) as u8, (n % 256) as u8];
            let [a, b, c] = subnet;
            if routes.contains(&format!("{a}.{b}.{c}.")) {
                continue;
            }
            let bridge = format!("cb{b}x{c}");
            let created = Command::new("ip")
                .args(["link", "add", "name", &bridge, "type", "bridge"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if !created {
                continue;
            }
            let lab =
                Lab { bridge, subnet, prefix: format!("courier-{pid}-{number}"), hosts: AtomicU32::new(0) };
            ip(&["link", "set", &lab.bridge, "alias", &format!("{BRIDGE_ALIAS}{pid}")]);
            ip(&["addr", "add", &format!("{a}.{b}.{c}.1/24"), "dev", &lab.bridge]);
            ip(&["link", "set", &lab.bridge, "up"]);
            return lab;
        }
        panic!("no free 10.x.y.0/24 for a lab");
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// This namespace's address on the lab: where hosts reach the test.
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// A new host: a namespace with `lo` and an `eth0` on the bridge.
    pub fn host(&self) -> Host {
        let n = self.hosts.fetch_add(1, Ordering::Relaxed);
        let [a, b, c] = self.subnet;
        let addr = Ipv4Addr::new(a, b, c, u8::try_from(n + 2).expect("at most 253 hosts in a lab"));
        let netns = format!("{}-{n}", self.prefix);
        // Interface names are at most 15 bytes: "cv<b>x<c>h<n>".
        let outside = format!("{}h{n}", self.bridge.replacen("cb", "cv", 1));
        let inside = format!("{}h{n}", self.bridge.replacen("cb", "cp", 1));
        // The names are this lab's (its bridge claimed the subnet); one
        // left by an earlier owner that was killed goes.
        let _ = Command::new("ip").args(["link", "del", &outside]).stderr(Stdio::null()).status();
        ip(&["netns", "add", &netns]);
        let host = Host { netns, addr, veth: outside.clone(), netem: Mutex::new(None) };
        ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &host.netns]);
        ip(&["link", "set", &outside, "master", &self.bridge, "up"]);
        ip(&["-n", &host.netns, "link", "set", &inside, "name", "eth0"]);
        ip(&["-n", &host.netns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(&["-n", &host.netns, "link", "set", "eth0", "up"]);
        ip(&["-n", &host.netns, "link", "set", "lo", "up"]);
        host
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
    }
}

/// Delay, jitter and loss on a host's link, as `netem delay D J loss L`.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// The mean delay each packet gets, each way.
    pub delay: Duration,
    /// Delays are spread uniformly over `delay ± jitter`.
    pub jitter: Duration,
    /// Percent of packets dropped, each way.
    pub loss_percent: f64,
}

/// A test host: a network namespace on a [`Lab`]'s bridge.
pub struct Host {
    /// The namespace's name, for `ip netns exec`.
    pub netns: String,
    /// Its address on the lab.
    pub addr: Ipv4Addr,
    /// The bridge's end of its veth pair.
    veth: String,
    /// The netem stand-in while the link is impaired, and its lifeline.
    netem: Mutex<Option<(Reaped, std::process::ChildStdin)>>,
}

/// The iptables rules that send a host's traffic on `eth0` (both ways) to
/// the netem queue; without a reader, packets pass (`--queue-bypass`).
const TO_NETEM: [&[&str]; 2] = [
    &["INPUT", "-i", "eth0", "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"],
    &["OUTPUT", "-o", "eth0", "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"],
];
/// The rules of a partition: nothing in or out on `eth0`.
const PARTITION: [&[&str]; 2] =
    [&["INPUT", "-i", "eth0", "-j", "DROP"], &["OUTPUT", "-o", "eth0", "-j", "DROP"]];

impl Host {
    /// `addr:port` on this host.
    pub fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.addr, port))
    }

    /// Run `iptables` in this host's namespace (`-w`: the xtables lock is
    /// shared by every namespace).
    fn iptables(&self, action: &str, rule: &[&str]) {
        let mut args = vec!["netns", "exec", &self.netns, "iptables", "-w", action];
        args.extend_from_slice(rule);
        ip(&args);
    }

    /// Delay, jitter and drop this host's packets, both ways, from now on.
    pub fn impair(&self, impairment: Impairment) {
        let binary = netem_binary();
        let mut child = Reaped(
            Command::new("ip")
                .args(["netns", "exec", &self.netns, &binary, "--queue", "0"])
                .args(["--delay-ms", &(impairment.delay.as_secs_f64() * 1000.0).to_string()])
                .args(["--jitter-ms", &(impairment.jitter.as_secs_f64() * 1000.0).to_string()])
                .args(["--loss-percent", &impairment.loss_percent.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn courier-test-netem"),
        );
        let lifeline = child.0.stdin.take().expect("piped stdin");
        let line = first_line(&mut child.0, "courier-test-netem", NETEM_START);
        assert_eq!(line.trim(), "ready", "courier-test-netem said {line:?}");
        for rule in TO_NETEM {
            self.iptables("-A", rule);
        }
        let previous = self.netem.lock().unwrap_or_else(|p| p.into_inner()).replace((child, lifeline));
        assert!(previous.is_none(), "{} was impaired twice", self.netns);
    }

    /// The netem stand-in's process id, while the link is impaired.
    pub fn netem_pid(&self) -> Option<u32> {
        self.netem.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(child, _)| child.0.id())
    }

    /// Cut this host off: every packet in or out on its link is dropped.
    pub fn partition(&self) {
        for rule in PARTITION {
            self.iptables("-I", rule);
        }
    }

    /// Undo [`Host::partition`].
    pub fn heal(&self) {
        for rule in PARTITION {
            self.iptables("-D", rule);
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some((child, mut lifeline)) = self.netem.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = lifeline.flush();
            drop(child);
        }
        // The veth pair would go with the namespace, but the kernel frees a
        // namespace in the background: deleted here, its names are free
        // for the next lab at once.
        let _ = Command::new("ip").args(["link", "del", &self.veth]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
    }
}
