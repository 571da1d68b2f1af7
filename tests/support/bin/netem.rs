//! `tc netem` for kernels without `sch_netem`: delay, jitter and loss on
//! the packets iptables sends to an NFQUEUE, in the namespace it runs in.
//!
//! ```text
//! courier-test-netem --queue N [--delay-ms D] [--jitter-ms J] [--loss-percent L]
//! ```
//!
//! Each packet is dropped with probability `L` %, or else held for a delay
//! drawn uniformly from `[D - J, D + J]` ms and then released, as netem's
//! `delay D J loss L` does (packets overtake each other when the jitter is
//! larger than their spacing, as with netem). The rules that feed the queue
//! are the caller's (see `tests/support/netns.rs`).
//!
//! Prints `ready` once bound to the queue. Exits when its stdin closes: the
//! test harness keeps a pipe open to it, so it dies with the test process.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::time::{Duration, Instant};

/// How often held packets are looked at: the delay's granularity.
const TICK: Duration = Duration::from_micros(500);
/// Packets the kernel may queue for us before it drops (or, with
/// `--queue-bypass`, lets through) the rest.
const KERNEL_QUEUE_LEN: u32 = 16 * 1024;

struct Impairment {
    delay: Duration,
    jitter: Duration,
    loss: f64,
}

impl Impairment {
    fn from_args(args: &[String]) -> Result<(u16, Impairment), String> {
        let flag = |name: &str| -> Result<Option<f64>, String> {
            match args.iter().position(|a| a == name) {
                None => Ok(None),
                Some(i) => {
                    let value = args.get(i + 1).ok_or(format!("{name} needs a value"))?;
                    value.parse().map(Some).map_err(|_| format!("{name}: not a number: {value}"))
                }
            }
        };
        let queue = flag("--queue")?.ok_or("--queue N is required")?;
        let millis = |ms: f64| Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        let impairment = Impairment {
            delay: millis(flag("--delay-ms")?.unwrap_or(0.0)),
            jitter: millis(flag("--jitter-ms")?.unwrap_or(0.0)),
            loss: flag("--loss-percent")?.unwrap_or(0.0).clamp(0.0, 100.0) / 100.0,
        };
        let queue = u16::try_from(queue as u64).map_err(|_| format!("--queue {queue}: out of range"))?;
        Ok((queue, impairment))
    }

    /// How long to hold the next packet; `None` to drop it.
    fn hold(&self) -> Option<Duration> {
        if fastrand::f64() < self.loss {
            return None;
        }
        let low = self.delay.saturating_sub(self.jitter);
        let high = self.delay + self.jitter;
        Some(low + (high - low).mul_f64(fastrand::f64()))
    }
}

/// A packet waiting for its release time (ordered by it, then arrival).
struct Held {
    due: Instant,
    seq: u64,
    message: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Held) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Held) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (queue_num, impairment) = Impairment::from_args(&args).unwrap_or_else(|why| {
        eprintln!("courier-test-netem: {why}");
        std::process::exit(2);
    });
    if let Err(err) = run(queue_num, &impairment) {
        eprintln!("courier-test-netem: {err}");
        std::process::exit(1);
    }
}

fn run(queue_num: u16, impairment: &Impairment) -> std::io::Result<()> {
    std::thread::spawn(|| {
        // Nothing is ever written: EOF (or an error) means the parent is gone.
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let mut queue = nfq::Queue::open()?;
    queue.bind(queue_num)?;
    // Headers only: the verdict does not need the payload.
    queue.set_copy_range(queue_num, 0)?;
    queue.set_queue_max_len(queue_num, KERNEL_QUEUE_LEN)?;
    queue.set_nonblocking(true);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;

    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        loop {
            match queue.recv() {
                Ok(mut message) => match impairment.hold() {
                    None => {
                        message.set_verdict(nfq::Verdict::Drop);
                        queue.verdict(message)?;
                    }
                    Some(delay) => {
                        seq += 1;
                        held.push(Reverse(Held { due: Instant::now() + delay, seq, message }));
                    }
                },
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(err),
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|Reverse(next)| next.due <= now) {
            if let Some(Reverse(Held { mut message, .. })) = held.pop() {
                message.set_verdict(nfq::Verdict::Accept);
                queue.verdict(message)?;
            }
        }
        std::thread::sleep(TICK);
    }
}
