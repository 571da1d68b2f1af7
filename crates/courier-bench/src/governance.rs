//! What governance buys, measured: hedging against slow answers, and the
//! load a total outage sends to the servers.
//!
//! Three providers of a small `Tail` service are registered in an
//! in-process registry and called through a discovered channel, in this
//! process (the figures are latencies of sleeps and counts of attempts, not
//! CPU costs, so sharing the process costs them little). Each experiment
//! runs closed loop: [`CALLERS`] callers, each calling again as soon as
//! answered, for the run's duration.
//!
//! - **Hedging**: 5 % of answers take [`SLOW`] extra, either on one
//!   instance of the three or on every instance; p50/p99/p99.9 without
//!   hedging and with a fixed and an adaptive hedging delay, and the extra
//!   attempts hedging cost.
//! - **Outage**: every provider fails every call with `Unavailable`;
//!   attempts that reached the servers per call made, with the defaults
//!   (retry policy, budget, breakers), with breakers off (the budget alone),
//!   and with no budget (the retry policy alone), for contrast.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier::Status;
use courier::resilience::{BreakerPolicy, HedgeDelay, HedgingPolicy, RetryBudget, RetryPolicy};
use hdrhistogram::Histogram;

use crate::systems::BoxError;

/// Concurrent callers in every experiment.
const CALLERS: usize = 8;
/// How much longer a slow answer takes.
const SLOW: Duration = Duration::from_millis(50);
/// One answer in this many is slow, on a slow instance (5 %).
const SLOW_ONE_IN: u64 = 20;

/// A service whose answers are sometimes slow, or always fail.
#[courier::service]
trait Tail {
    /// Answer `key`; safe to run twice.
    #[courier(idempotent)]
    async fn get(&self, key: u64) -> Result<u64, Status>;
}

/// How a provider behaves.
#[derive(Clone, Copy)]
enum Behaviour {
    Fast,
    /// One answer in [`SLOW_ONE_IN`] takes [`SLOW`].
    SometimesSlow,
    Failing,
}

#[derive(Clone)]
struct Provider {
    behaviour: Behaviour,
    /// Calls that reached this provider (attempts, hedges included).
    attempts: Arc<AtomicU64>,
}

impl Tail for Provider {
    async fn get(&self, key: u64) -> Result<u64, Status> {
        let n = self.attempts.fetch_add(1, Ordering::Relaxed);
        match self.behaviour {
            Behaviour::Fast => Ok(key),
            Behaviour::SometimesSlow => {
                // Spread over the sequence, so the slow answers do not come
                // in bursts: the 1st, 21st, 41st, ... call.
                if n.is_multiple_of(SLOW_ONE_IN) {
                    tokio::time::sleep(SLOW).await;
                }
                Ok(key)
            }
            Behaviour::Failing => Err(Status::unavailable("failing on purpose")),
        }
    }
}

/// Three providers with these behaviours, registered; and their counters.
struct Cluster {
    registry: courier::registry::Registry,
    attempts: Vec<Arc<AtomicU64>>,
    _servers: Vec<courier::server::ServerHandle>,
}

impl Cluster {
    async fn start(behaviours: [Behaviour; 3]) -> Result<Cluster, BoxError> {
        let registry = courier::registry::connect("mem://").await?;
        let mut servers = Vec::new();
        let mut attempts = Vec::new();
        for behaviour in behaviours {
            let provider = Provider { behaviour, attempts: Arc::default() };
            attempts.push(provider.attempts.clone());
            let server = courier::Server::builder()
                .add_service(TailServer::new(provider))
                .register_with(&registry)
                .bind("127.0.0.1:0")
                .await?
                .start();
            servers.push(server);
        }
        Ok(Cluster { registry, attempts, _servers: servers })
    }

    fn attempts(&self) -> u64 {
        self.attempts.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    async fn client(
        &self,
        configure: impl FnOnce(
            courier::client::DiscoverBuilder<TailClient>,
        ) -> courier::client::DiscoverBuilder<TailClient>,
    ) -> Result<TailClient, BoxError> {
        let client = configure(TailClient::discover(&self.registry, "Tail").no_cache()).build().await?;
        for _ in 0..400 {
            if client.channel().instances().is_some_and(|i| i.len() == 3) {
                return Ok(client);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err("the client never saw the three providers".into())
    }
}

/// What a closed-loop run saw.
struct Run {
    histogram: Histogram<u64>,
    calls: u64,
    errors: u64,
    seconds: f64,
}

/// [`CALLERS`] callers calling `client` for `length`.
async fn closed_loop(client: &TailClient, length: Duration) -> Result<Run, BoxError> {
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut histogram =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid constant bounds");
                let (mut calls, mut errors) = (0u64, 0u64);
                let mut key = caller as u64;
                while started.elapsed() < length {
                    let call = Instant::now();
                    if client.get(key).await.is_err() {
                        errors += 1;
                    }
                    let nanos = u64::try_from(call.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    histogram.saturating_record(nanos.max(1));
                    calls += 1;
                    key += CALLERS as u64;
                }
                (histogram, calls, errors)
            })
        })
        .collect();
    let mut run = Run {
        histogram: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
        calls: 0,
        errors: 0,
        seconds: 0.0,
    };
    for caller in callers {
        let (histogram, calls, errors) = caller.await?;
        run.histogram.add(&histogram)?;
        run.calls += calls;
        run.errors += errors;
    }
    run.seconds = started.elapsed().as_secs_f64();
    Ok(run)
}

fn ms(nanos: u64) -> String {
    format!("{:.2} ms", nanos as f64 / 1e6)
}

/// The hedging experiment's table.
async fn hedging(length: Duration) -> Result<String, BoxError> {
    let mut table = String::from(
        "| slow answers | hedging | calls/s | p50 | p99 | p99.9 | extra attempts |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    let layouts = [
        ("5 % on one instance of three", [Behaviour::SometimesSlow, Behaviour::Fast, Behaviour::Fast]),
        ("5 % on every instance", [Behaviour::SometimesSlow; 3]),
    ];
    let fixed = Duration::from_millis(5);
    let adaptive = HedgeDelay::Adaptive {
        percentile: 0.95,
        min: Duration::from_millis(1),
        max: Duration::from_millis(50),
    };
    for (layout, behaviours) in layouts {
        let mut baseline_p99 = None;
        for (name, delay) in
            [("off", None), ("fixed 5 ms", Some(HedgeDelay::Fixed(fixed))), ("adaptive p95", Some(adaptive))]
        {
            let cluster = Cluster::start(behaviours).await?;
            let client = cluster
                .client(|builder| match delay {
                    Some(delay) => builder.hedging(HedgingPolicy::new(delay)),
                    None => builder,
                })
                .await?;
            // Warm up: connections, and the adaptive delay's percentile.
            closed_loop(&client, Duration::from_millis(500)).await?;
            let before = cluster.attempts();
            let run = closed_loop(&client, length).await?;
            let attempts = cluster.attempts() - before;
            let p99 = run.histogram.value_at_quantile(0.99);
            let ratio = match baseline_p99 {
                None => {
                    baseline_p99 = Some(p99);
                    String::new()
                }
                Some(off) => format!(" ({:.1}x lower)", off as f64 / p99.max(1) as f64),
            };
            let extra = (attempts as f64 / run.calls.max(1) as f64 - 1.0) * 100.0;
            let _ = writeln!(
                table,
                "| {layout} | {name} | {:.0} | {} | {}{ratio} | {} | {extra:.1} % |",
                run.calls as f64 / run.seconds,
                ms(run.histogram.value_at_quantile(0.5)),
                ms(p99),
                ms(run.histogram.value_at_quantile(0.999)),
            );
            if run.errors > 0 {
                return Err(format!("{layout}, hedging {name}: {} calls failed", run.errors).into());
            }
        }
    }
    Ok(table)
}

/// The outage experiment's table.
async fn outage(length: Duration) -> Result<String, BoxError> {
    let mut table = String::from(
        "| governance | calls/s | attempts/s at the servers | attempts per call |\n|---|---:|---:|---:|\n",
    );
    type Configure =
        fn(courier::client::DiscoverBuilder<TailClient>) -> courier::client::DiscoverBuilder<TailClient>;
    let configs: [(&str, Configure); 3] = [
        ("defaults (retry policy, budget, breakers)", |builder| builder),
        ("breakers off: the budget alone", |builder| {
            builder.breaker(BreakerPolicy::disabled()).method_breaker(BreakerPolicy::disabled())
        }),
        ("breakers and budget off: the retry policy alone", |builder| {
            builder
                .breaker(BreakerPolicy::disabled())
                .method_breaker(BreakerPolicy::disabled())
                .retry_budget(RetryBudget::new(1.0, 1_000_000, Duration::from_secs(10)))
                .retry_policy(RetryPolicy::default())
        }),
    ];
    for (name, configure) in configs {
        let cluster = Cluster::start([Behaviour::Failing; 3]).await?;
        let client = cluster.client(configure).await?;
        let run = closed_loop(&client, length).await?;
        let attempts = cluster.attempts();
        let _ = writeln!(
            table,
            "| {name} | {:.0} | {:.0} | {:.2}x |",
            run.calls as f64 / run.seconds,
            attempts as f64 / run.seconds,
            attempts as f64 / run.calls.max(1) as f64
        );
        if run.errors != run.calls {
            return Err(format!(
                "{name}: {} of {} calls succeeded against failing providers",
                run.calls - run.errors,
                run.calls
            )
            .into());
        }
    }
    Ok(table)
}

/// Both experiments, `length` each run, as Markdown.
pub(crate) async fn run(length: Duration) -> Result<String, BoxError> {
    let mut out = format!(
        "#### Hedging against slow answers ({CALLERS} callers, closed loop, {:.0} s a row; slow = +{} ms)\n\n",
        length.as_secs_f64(),
        SLOW.as_millis()
    );
    out.push_str(&hedging(length).await?);
    let _ = write!(
        out,
        "\n#### A total outage: load at the servers ({CALLERS} callers, closed loop, {:.0} s a row)\n\n",
        length.as_secs_f64()
    );
    out.push_str(&outage(length).await?);
    Ok(out)
}
