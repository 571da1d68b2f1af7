//! Act 2 of `courier demo`: governance, live.
//!
//! Three pricing providers register; a consumer hedges its idempotent
//! calls (after the recent 90th-percentile latency), retries failures on
//! another instance within its retry budget, and keeps a circuit breaker
//! per instance. One provider turns slow (every answer 300 ms late), then
//! recovers; another starts failing every call, then recovers. Every
//! second the consumer's p99, hedges, retries, budget refusals and each
//! breaker's state are printed; no call fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier::resilience::{BreakerPolicy, BreakerState, HedgeDelay, HedgingPolicy};
use courier::{Code, Status};

use super::{DemoError, TTL, say, wait_for};

/// Prices over the wire: the act's service.
#[courier::service(version = "1.0.0")]
pub(crate) trait Pricing {
    /// The price of `item`. Safe to run twice: hedged and retried.
    #[courier(idempotent)]
    async fn price(&self, item: u64) -> Result<u64, Status>;
}

const HEALTHY: u8 = 0;
const SLOW: u8 = 1;
const FAILING: u8 = 2;

/// How slow the slow provider is.
const SLOWNESS: Duration = Duration::from_millis(300);

/// A provider whose behaviour the act switches.
#[derive(Clone)]
struct Switchable {
    mode: Arc<AtomicU8>,
}

impl Pricing for Switchable {
    async fn price(&self, item: u64) -> Result<u64, Status> {
        match self.mode.load(Ordering::Relaxed) {
            SLOW => tokio::time::sleep(SLOWNESS).await,
            FAILING => return Err(Status::new(Code::Unavailable, "the price feed is down")),
            _ => tokio::task::yield_now().await,
        }
        Ok(item * 3)
    }
}

struct Provider {
    name: &'static str,
    mode: Arc<AtomicU8>,
    handle: courier::ServerHandle,
}

/// Run the act against `registry`; returns (calls, failed calls).
pub(super) async fn act(registry: &courier::registry::Registry) -> Result<(u64, u64), DemoError> {
    let mut providers = Vec::new();
    for name in ["delta", "echo", "foxtrot"] {
        let mode = Arc::new(AtomicU8::new(HEALTHY));
        let handle = courier::Server::builder()
            .add_service(PricingServer::new(Switchable { mode: mode.clone() }))
            .register_with(registry)
            .registration_ttl(TTL)
            .bind("127.0.0.1:0")
            .await?
            .start();
        say("provider", format!("{name:<8} listening on {}, registering Pricing", handle.local_addr()));
        providers.push(Provider { name, mode, handle });
    }
    let pricing = PricingClient::discover(registry, "Pricing")
        .no_cache()
        .hedging(HedgingPolicy::new(HedgeDelay::Adaptive {
            percentile: 0.9,
            min: Duration::from_millis(5),
            max: Duration::from_millis(50),
        }))
        .breaker(BreakerPolicy::default().open_for(Duration::from_secs(1), Duration::from_secs(4)))
        .build()
        .await?;
    wait_for(|| pricing.channel().instances().is_some_and(|i| i.len() == 3), Duration::from_secs(5)).await;
    say(
        "consumer",
        "hedges after the recent p90 latency (5-50 ms), retries elsewhere within its budget, a breaker per instance",
    );
    println!();

    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let callers: Vec<_> = (0..8u64)
        .map(|caller| {
            let pricing = pricing.clone();
            let (stop, calls, failures, latencies) =
                (stop.clone(), calls.clone(), failures.clone(), latencies.clone());
            tokio::spawn(async move {
                let mut item = caller * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    item += 1;
                    let started = Instant::now();
                    match pricing.price(item).await {
                        Ok(price) if price == item * 3 => calls.fetch_add(1, Ordering::Relaxed),
                        Ok(_) | Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                    };
                    latencies.lock().unwrap_or_else(|p| p.into_inner()).push(started.elapsed());
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();

    let mut board = Board::new(&pricing, &providers, latencies, failures.clone());
    board.ticks(2).await;
    println!();
    say("demo", format!("delta turns slow: every answer {} ms late", SLOWNESS.as_millis()));
    providers[0].mode.store(SLOW, Ordering::Relaxed);
    board.ticks(4).await;
    println!();
    say("demo", "delta recovers; its breaker's probes will close it");
    providers[0].mode.store(HEALTHY, Ordering::Relaxed);
    board.ticks(3).await;
    println!();
    say("demo", "echo starts failing every call with Unavailable");
    providers[1].mode.store(FAILING, Ordering::Relaxed);
    board.ticks(4).await;
    println!();
    say("demo", "echo recovers; probes close its breaker once it has been open long enough");
    providers[1].mode.store(HEALTHY, Ordering::Relaxed);
    board.ticks(5).await;

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        let _ = caller.await;
    }
    drop(pricing);
    for provider in providers {
        provider.handle.shutdown().await?;
    }
    Ok((calls.load(Ordering::Relaxed), failures.load(Ordering::Relaxed)))
}

/// The live board: one line a second.
struct Board<'a> {
    pricing: &'a PricingClient,
    names: Vec<(String, &'static str)>,
    latencies: Arc<std::sync::Mutex<Vec<Duration>>>,
    failures: Arc<AtomicU64>,
    last: courier::client::GovernanceReport,
    started: Instant,
}

impl<'a> Board<'a> {
    fn new(
        pricing: &'a PricingClient,
        providers: &[Provider],
        latencies: Arc<std::sync::Mutex<Vec<Duration>>>,
        failures: Arc<AtomicU64>,
    ) -> Board<'a> {
        let last = pricing.channel().governance().unwrap_or_default();
        Board {
            pricing,
            names: providers.iter().map(|p| (p.handle.local_addr().to_string(), p.name)).collect(),
            latencies,
            failures,
            last,
            started: Instant::now(),
        }
    }

    async fn ticks(&mut self, n: usize) {
        for _ in 0..n {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.print();
        }
    }

    fn print(&mut self) {
        let mut latencies = std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|p| p.into_inner()));
        latencies.sort();
        let p99 = latencies.get((latencies.len().saturating_sub(1) as f64 * 0.99) as usize).copied();
        let Some(report) = self.pricing.channel().governance() else { return };
        let breakers: Vec<String> = self
            .names
            .iter()
            .map(|(addr, name)| {
                let state = report
                    .instances
                    .iter()
                    .find(|(_, a, _)| a == addr)
                    .map_or(BreakerState::Closed, |(_, _, state)| *state);
                format!("{name} {state}")
            })
            .collect();
        say(
            "consumer",
            format!(
                "t={:>4.1}s {:>5} calls/s  p99 {:>6.1} ms  hedges {:>4}  retries {:>4}  budget refused {:>3}  breakers: {}  failed {}",
                self.started.elapsed().as_secs_f64(),
                latencies.len(),
                p99.unwrap_or_default().as_secs_f64() * 1e3,
                report.hedges - self.last.hedges,
                report.retries - self.last.retries,
                report.budget_refusals - self.last.budget_refusals,
                breakers.join(", "),
                self.failures.load(Ordering::Relaxed),
            ),
        );
        self.last = report;
    }
}
