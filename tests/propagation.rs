//! Deadlines and cancellation along a chain of services: the caller sets a
//! deadline once and every hop inherits it; the caller gives up and every
//! hop stops, with no plumbing in the handlers.
//!
//! The chain: this test → A (relay) → B (relay) → C (the probe), A to B
//! over courier's protocol and B to C over gRPC.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier::{Channel, Code, Status};
use courier_tests::{ProbeClient, ProbeState, start_server, within};

const TEST_LIMIT: Duration = Duration::from_secs(60);

/// A hop that passes calls on to the next one.
#[courier::service]
trait Relay {
    /// The next hop's time left before its deadline, in milliseconds.
    async fn deadline_ms(&self) -> Result<Option<u64>, Status>;
    /// Have the last hop sleep `millis`.
    async fn sleep(&self, millis: u64) -> Result<u64, Status>;
}

/// When each relay's handler was dropped before it finished.
#[derive(Default)]
struct Drops(Mutex<Vec<(&'static str, Instant)>>);

impl Drops {
    fn of(&self, hop: &str) -> Option<Instant> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(h, _)| *h == hop).map(|(_, at)| *at)
    }
}

/// Records its hop's name in `Drops` if the handler is dropped unfinished.
struct DropMark {
    hop: &'static str,
    drops: Arc<Drops>,
    finished: bool,
}

impl Drop for DropMark {
    fn drop(&mut self) {
        if !self.finished {
            self.drops.0.lock().unwrap_or_else(|p| p.into_inner()).push((self.hop, Instant::now()));
        }
    }
}

enum Next {
    Relay(RelayClient),
    Probe(ProbeClient),
}

struct Hop {
    name: &'static str,
    next: Next,
    drops: Arc<Drops>,
}

impl Relay for Hop {
    async fn deadline_ms(&self) -> Result<Option<u64>, Status> {
        // No deadline passed along by hand: the outgoing call inherits it.
        match &self.next {
            Next::Relay(relay) => relay.deadline_ms().await,
            Next::Probe(probe) => probe.deadline_ms().await,
        }
    }

    async fn sleep(&self, millis: u64) -> Result<u64, Status> {
        let mut mark = DropMark { hop: self.name, drops: self.drops.clone(), finished: false };
        let slept = match &self.next {
            Next::Relay(relay) => relay.sleep(millis).await?,
            Next::Probe(probe) => probe.sleep(millis).await?,
        };
        mark.finished = true;
        Ok(slept)
    }
}

struct Chain {
    a: RelayClient,
    c: Arc<ProbeState>,
    drops: Arc<Drops>,
    _servers: Vec<courier::ServerHandle>,
}

async fn chain() -> Chain {
    let drops = Arc::new(Drops::default());
    let (c, c_state) = start_server(|b| b).await;
    let to_c = Channel::builder(c.local_addr().to_string()).grpc().connect().await.expect("B connects to C");
    let hop_b = Hop { name: "B", next: Next::Probe(ProbeClient::new(to_c)), drops: drops.clone() };
    let b = courier::Server::builder().add_service(RelayServer::new(hop_b)).bind("127.0.0.1:0").await;
    let b = b.expect("bind B").start();
    let to_b = RelayClient::connect(b.local_addr().to_string()).await.expect("A connects to B");
    let hop_a = Hop { name: "A", next: Next::Relay(to_b), drops: drops.clone() };
    let a = courier::Server::builder().add_service(RelayServer::new(hop_a)).bind("127.0.0.1:0").await;
    let a = a.expect("bind A").start();
    let client = RelayClient::connect(a.local_addr().to_string()).await.expect("connect to A");
    Chain { a: client, c: c_state, drops, _servers: vec![a, b, c] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_set_at_the_first_hop_reaches_the_last() {
    within(TEST_LIMIT, "a_deadline_set_at_the_first_hop_reaches_the_last", async {
        let chain = chain().await;
        // Without a deadline, none arrives.
        assert_eq!(chain.a.deadline_ms().await.expect("no deadline"), None);
        let left = chain
            .a
            .with_timeout(Duration::from_millis(100))
            .deadline_ms()
            .await
            .expect("through three hops")
            .expect("C sees a deadline");
        // What is left of the 100 ms after two hops on loopback.
        assert!((50..=100).contains(&left), "C has {left} ms left of 100");
        // A hop's own longer timeout does not extend it: the last hop gives
        // up when the first caller does.
        let started = Instant::now();
        let err = chain.a.with_timeout(Duration::from_millis(200)).sleep(5_000).await.expect_err("too slow");
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        assert!(started.elapsed() < Duration::from_secs(2), "gave up after {:?}", started.elapsed());
        assert!(
            chain.c.wait_until(Duration::from_secs(5), |s| s.dropped() == 1).await,
            "C's handler is dropped at the deadline it inherited"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_first_call_stops_the_work_at_every_hop() {
    within(TEST_LIMIT, "cancelling_the_first_call_stops_the_work_at_every_hop", async {
        let chain = chain().await;
        let call = tokio::spawn({
            let a = chain.a.clone();
            async move { a.sleep(30_000).await }
        });
        assert!(chain.c.wait_until(Duration::from_secs(5), |s| s.started() == 1).await, "C is working");
        let cancelled = Instant::now();
        call.abort();
        assert!(chain.c.wait_until(Duration::from_secs(5), |s| s.dropped() == 1).await, "C stops");
        let (a, b, c) = (chain.drops.of("A"), chain.drops.of("B"), chain.c.last_dropped_at());
        let (Some(a), Some(b), Some(c)) = (a, b, c) else { panic!("dropped: A {a:?}, B {b:?}, C {c:?}") };
        // Each hop stops as soon as the cancel reaches it: within 10 ms of
        // the caller giving up, on loopback.
        for (hop, at) in [("A", a), ("B", b), ("C", c)] {
            let after = at.saturating_duration_since(cancelled);
            assert!(after < Duration::from_millis(10), "{hop} stopped {after:?} after the cancel");
        }
        assert_eq!(chain.c.finished(), 0);
    })
    .await;
}
