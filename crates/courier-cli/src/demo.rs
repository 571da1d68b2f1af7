//! `courier demo`: registration and discovery in one process.
//!
//! An embedded registry (the real one, on a temporary directory), three
//! calculator providers that register in it, and a consumer that discovers
//! them and keeps calls flowing. Then a provider is killed without warning
//! (its lease has to expire) and another stops gracefully (it deregisters
//! first); the consumer follows along and no call fails.
//!
//! A second act shows governance (see `governance`): three pricing
//! providers, one of which turns slow, then another starts failing; the
//! consumer's hedges, retries, budget and breakers are shown live, and
//! still no call fails.

mod governance;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Arithmetic over the wire: the demo's service.
#[courier::service(version = "1.0.0")]
pub(crate) trait Calculator {
    /// `a + b`. Safe to run twice, so a call that loses its connection
    /// mid-way (its provider crashed) is retried on another one.
    #[courier(idempotent)]
    async fn add(&self, a: i64, b: i64) -> i64;
}

/// A provider's calculator, counting the calls it serves.
struct Counting(Arc<AtomicU64>);

impl Calculator for Counting {
    async fn add(&self, a: i64, b: i64) -> i64 {
        self.0.fetch_add(1, Ordering::Relaxed);
        a.wrapping_add(b)
    }
}

/// How long a provider's lease lives without renewal.
const TTL: Duration = Duration::from_secs(2);

struct Provider {
    name: &'static str,
    served: Arc<AtomicU64>,
    handle: Option<courier::ServerHandle>,
    addr: String,
}

/// Errors that end the demo.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    #[error("could not start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("could not create a temporary directory: {0}")]
    TempDir(std::io::Error),
    #[error(transparent)]
    Registry(#[from] courier_registry::PersistError),
    #[error(transparent)]
    Serve(#[from] courier::ServeError),
    #[error(transparent)]
    Connect(#[from] courier::registry::RegistryError),
    #[error(transparent)]
    Discover(#[from] courier::client::DiscoverError),
}

fn say(who: &str, line: impl AsRef<str>) {
    println!("  {who:<9} {}", line.as_ref());
}

pub(crate) fn run() -> Result<ExitCode, DemoError> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(DemoError::Runtime)?;
    runtime.block_on(demo())
}

async fn demo() -> Result<ExitCode, DemoError> {
    println!("courier demo: providers register, a consumer discovers them and keeps calling\n");

    // The registry, embedded: the same server `courier registry serve` runs.
    let data = tempfile::Builder::new().prefix("courier-demo-").tempdir().map_err(DemoError::TempDir)?;
    let registry_server = courier_registry::open(data.path())
        .await?
        .add_to(courier::Server::builder())
        .bind("127.0.0.1:0")
        .await?
        .start();
    let url = format!("courier://{}", registry_server.local_addr());
    say("registry", format!("serving at {url} (state in {})", data.path().display()));
    let registry = courier::registry::connect(&url).await?;

    let mut providers = Vec::new();
    for name in ["alpha", "bravo", "charlie"] {
        let served = Arc::new(AtomicU64::new(0));
        let handle = courier::Server::builder()
            .add_service(CalculatorServer::new(Counting(served.clone())))
            .register_with(&registry)
            .registration_ttl(TTL)
            .instance_metadata("name", name)
            .bind("127.0.0.1:0")
            .await?
            .start();
        let addr = handle.local_addr().to_string();
        say(
            "provider",
            format!("{name:<8} listening on {addr}, registering Calculator v1.0.0 (lease TTL {TTL:?})"),
        );
        providers.push(Provider { name, served, handle: Some(handle), addr });
    }

    let calc = CalculatorClient::discover(&registry, "Calculator").no_cache().build().await?;
    // Which providers the consumer knows, by name.
    let directory: Vec<(String, &'static str)> = providers.iter().map(|p| (p.addr.clone(), p.name)).collect();
    let names = |calc: &CalculatorClient| -> Vec<&'static str> {
        let known: Vec<String> =
            calc.channel().instances().unwrap_or_default().into_iter().map(|i| i.addr).collect();
        directory.iter().filter(|(addr, _)| known.contains(addr)).map(|(_, name)| *name).collect()
    };
    wait_for(|| names(&calc).len() == 3, Duration::from_secs(5)).await;
    say(
        "consumer",
        format!(
            "discovered {} instances of Calculator: {} (round robin)",
            names(&calc).len(),
            names(&calc).join(", ")
        ),
    );
    println!();

    // Steady load: 8 callers checking every answer.
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let callers: Vec<_> = (0..8i64)
        .map(|caller| {
            let (calc, stop, calls, failures) = (calc.clone(), stop.clone(), calls.clone(), failures.clone());
            tokio::spawn(async move {
                let mut i = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match calc.add(caller, i).await {
                        Ok(sum) if sum == caller + i => calls.fetch_add(1, Ordering::Relaxed),
                        Ok(_) | Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                    };
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();

    let mut ticker = Ticker::new(&providers);
    for _ in 0..2 {
        ticker.tick(&providers, &names(&calc), &failures).await;
    }

    println!();
    say("demo", "killing charlie without warning: no deregistration, its lease has to expire");
    if let Some(handle) = providers[2].handle.take() {
        handle.abort();
    }
    let killed = Instant::now();
    say("consumer", "still knows charlie; calls that find it gone move to alpha or bravo");
    wait_for(|| !names(&calc).contains(&"charlie"), TTL * 3).await;
    say(
        "consumer",
        format!(
            "charlie's lease expired {:.1} s after the kill; now calling {}",
            killed.elapsed().as_secs_f64(),
            names(&calc).join(", ")
        ),
    );
    for _ in 0..2 {
        ticker.tick(&providers, &names(&calc), &failures).await;
    }

    println!();
    say("demo", "stopping bravo gracefully: it deregisters first, then finishes its calls");
    let stopping = Instant::now();
    if let Some(handle) = providers[1].handle.take() {
        handle.shutdown().await?;
    }
    say(
        "consumer",
        format!(
            "bravo gone after {:.0} ms; now calling {}",
            stopping.elapsed().as_secs_f64() * 1e3,
            names(&calc).join(", ")
        ),
    );
    for _ in 0..2 {
        ticker.tick(&providers, &names(&calc), &failures).await;
    }

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        let _ = caller.await;
    }
    drop(calc);
    println!();
    say("demo", "shutting down the last provider and the registry");
    for provider in &mut providers {
        if let Some(handle) = provider.handle.take() {
            handle.shutdown().await?;
        }
    }
    let (calls, failures) = (calls.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    say("demo", format!("act 1 done: {calls} calls, {failures} failed"));

    println!("\ncourier demo, act 2: a provider turns slow, another fails; hedges, retries and breakers\n");
    let (act2_calls, act2_failures) = governance::act(&registry).await?;
    registry_server.shutdown().await?;
    say("demo", format!("act 2 done: {act2_calls} calls, {act2_failures} failed"));
    let failed = failures + act2_failures;
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn wait_for(mut condition: impl FnMut() -> bool, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !condition() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints, once a second, the calls per second each provider served.
struct Ticker {
    last: BTreeMap<&'static str, u64>,
    since: Instant,
    started: Instant,
}

impl Ticker {
    fn new(providers: &[Provider]) -> Ticker {
        let now = Instant::now();
        Ticker {
            last: providers.iter().map(|p| (p.name, p.served.load(Ordering::Relaxed))).collect(),
            since: now,
            started: now,
        }
    }

    async fn tick(&mut self, providers: &[Provider], known: &[&str], failures: &AtomicU64) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let seconds = self.since.elapsed().as_secs_f64().max(1e-3);
        self.since = Instant::now();
        let mut parts = Vec::new();
        for provider in providers {
            let now = provider.served.load(Ordering::Relaxed);
            let before = self.last.insert(provider.name, now).unwrap_or(now);
            parts.push(format!("{} {:>5}/s", provider.name, ((now - before) as f64 / seconds).round()));
        }
        say(
            "consumer",
            format!(
                "t={:>4.1}s  {}   (knows {}; failed calls: {})",
                self.started.elapsed().as_secs_f64(),
                parts.join("  "),
                known.len(),
                failures.load(Ordering::Relaxed)
            ),
        );
    }
}
