//! `courier-bench registry`: the same registry workload against courier's
//! bundled registry, etcd, ZooKeeper and Redis, each a durable server
//! process on this machine (see `peers`), driven through courier's own
//! `Registry` client for each (`courier://`, `etcd://`, `zookeeper://`,
//! `redis://`), so every backend is measured with the same calls:
//!
//! 1. **Registrations** per second, 64 concurrent clients, each a
//!    connection of its own, registering new instances (a lease each,
//!    never renewed nor revoked: they pile up, as in a reconnect storm
//!    where restarted providers register under new leases while the old
//!    ones wait out their TTL), in back-to-back rounds: a rate that falls
//!    round after round is a cost that grows with the leases held.
//! 2. **Flapping**: the same 64 instances registered and deregistered
//!    again and again (providers reconnecting), pairs per second.
//! 3. With `instances` registered (in services of 100): the server's
//!    memory per instance (its RSS growth over the population, from /proc);
//!    **keep-alives** per second spread over all their leases.
//! 4. **Watch fan-out**: `watchers` watches of one service; each change to
//!    it, the delay until every watcher has seen it (p50, p99 over all
//!    watchers and changes).
//! 5. **Restart**: the server killed (SIGKILL) and started again on its
//!    data; the time until a service registered before is listed whole.

mod peers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier::registry::{Instance, Lease, Registry, WatchEvent};
use tokio::sync::Mutex;

pub(crate) use self::peers::Backend;
use self::peers::Peer;
use crate::measure;
use crate::systems::BoxError;

/// What `courier-bench registry` runs.
pub(crate) struct Config {
    pub(crate) backends: Vec<Backend>,
    pub(crate) clients: usize,
    pub(crate) duration: Duration,
    pub(crate) rounds: usize,
    pub(crate) instances: usize,
    pub(crate) watchers: usize,
    pub(crate) changes: usize,
}

/// What one backend measured.
#[derive(Debug, Default)]
struct Measured {
    register_rounds: Vec<f64>,
    flaps_per_second: f64,
    populate_seconds: f64,
    bytes_per_instance: f64,
    keep_alives_per_second: f64,
    watch_p50_ms: f64,
    watch_p99_ms: f64,
    watch_missed: usize,
    restart_seconds: f64,
    errors: u64,
    first_error: Option<String>,
}

/// A TTL long enough that nothing expires during the run unless meant to.
const LONG_TTL: Duration = Duration::from_secs(600);
/// How many instances each populated service holds.
const PER_SERVICE: usize = 100;

/// Run every backend through every workload; the Markdown report.
pub(crate) async fn run(config: &Config) -> Result<String, BoxError> {
    let mut results = Vec::new();
    for &backend in &config.backends {
        eprintln!("== {}", backend.name());
        let measured = measure_backend(backend, config).await?;
        eprintln!("   {measured:?}");
        results.push((backend, measured));
    }
    Ok(render(config, &results))
}

/// Count of failures, and the first one's text.
#[derive(Default)]
struct Errors {
    count: AtomicU64,
    first: std::sync::Mutex<Option<String>>,
}

impl Errors {
    fn record(&self, err: impl std::fmt::Display) {
        if self.count.fetch_add(1, Ordering::Relaxed) == 0
            && let Ok(mut first) = self.first.lock()
        {
            *first = Some(err.to_string());
        }
    }
}

async fn connect(url: &str) -> Result<Registry, BoxError> {
    Ok(courier::registry::connect(url).await?)
}

/// `clients` registry handles (a connection each).
async fn handles(url: &str, clients: usize) -> Result<Vec<Registry>, BoxError> {
    let mut handles = Vec::with_capacity(clients);
    for _ in 0..clients {
        handles.push(connect(url).await?);
    }
    Ok(handles)
}

fn instance(service: &str, n: u64) -> Instance {
    // Addresses from a private range, one per instance: what a fleet looks
    // like to the registry (nothing here is dialled).
    let addr =
        format!("10.{}.{}.{}:{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff, 9000 + (n >> 24) % 1000);
    Instance::new(service, addr).with_version("1.0.0").with_weight(1)
}

async fn measure_backend(backend: Backend, config: &Config) -> Result<Measured, BoxError> {
    let errors = Arc::new(Errors::default());
    let mut measured = Measured::default();

    // 1 and 2 on a fresh server.
    {
        let peer = Peer::start(backend)?;
        let clients = handles(&peer.url, config.clients).await?;
        let next = Arc::new(AtomicU64::new(0));
        for round in 0..config.rounds {
            let rate = register_round(&clients, &next, config.duration, &errors).await;
            eprintln!("   registrations, round {}: {rate:.0}/s", round + 1);
            measured.register_rounds.push(rate);
        }
        measured.flaps_per_second = flapping(&clients, config.duration, &errors).await;
        eprintln!("   flapping: {:.0} register+deregister/s", measured.flaps_per_second);
    }

    // 3, 4 and 5 on another fresh server, populated.
    let mut peer = Peer::start(backend)?;
    let clients = handles(&peer.url, config.clients).await?;
    let before = measure::status_kib(peer.pid(), "VmRSS")?;
    let started = Instant::now();
    let leases = populate(&clients, config.instances, &errors).await;
    measured.populate_seconds = started.elapsed().as_secs_f64();
    // Let the server settle (group commits, compactions) before reading it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = measure::status_kib(peer.pid(), "VmRSS")?;
    measured.bytes_per_instance = (after.saturating_sub(before) * 1024) as f64 / leases.len().max(1) as f64;
    eprintln!(
        "   populated {} instances in {:.1} s; {:.0} bytes each",
        leases.len(),
        measured.populate_seconds,
        measured.bytes_per_instance
    );
    measured.keep_alives_per_second = keep_alives(&clients, &leases, config.duration, &errors).await;
    eprintln!("   keep-alives: {:.0}/s", measured.keep_alives_per_second);
    let (p50, p99, missed) = watch_fan_out(&peer.url, config.watchers, config.changes, &errors).await?;
    (measured.watch_p50_ms, measured.watch_p99_ms, measured.watch_missed) = (p50, p99, missed);
    eprintln!("   watch fan-out: p50 {p50:.2} ms, p99 {p99:.2} ms, {missed} missed");
    // The clients stay: ZooKeeper's leases are their sessions (dropping
    // them would delete every node), and the others' are not renewed
    // meanwhile anyway.
    // The last service, with as many instances as registered into it.
    let last = populated_service(config.instances.saturating_sub(1));
    let expected = leases.iter().filter(|(_, lease)| lease.service == last).count();
    match restart(&mut peer, &last, expected).await {
        Ok(seconds) => measured.restart_seconds = seconds,
        Err(err) => {
            measured.restart_seconds = f64::NAN;
            errors.record(format!("restart: {err}"));
        }
    }
    eprintln!("   restart: {:.2} s", measured.restart_seconds);
    drop(clients);

    measured.errors = errors.count.load(Ordering::Relaxed);
    measured.first_error = errors.first.lock().ok().and_then(|first| first.clone());
    Ok(measured)
}

/// Registrations per second, every client registering new instances.
async fn register_round(
    clients: &[Registry],
    next: &Arc<AtomicU64>,
    duration: Duration,
    errors: &Arc<Errors>,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = clients
        .iter()
        .map(|registry| {
            let (registry, next, stop, done, errors) =
                (registry.clone(), next.clone(), stop.clone(), done.clone(), errors.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    match registry.register(instance("BenchRegister", n), LONG_TTL).await {
                        Ok(_) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => errors.record(format!("register: {err}")),
                    }
                }
            })
        })
        .collect();
    measure_rate(tasks, &stop, &done, duration).await
}

/// Register-and-deregister pairs per second, each client with one instance.
async fn flapping(clients: &[Registry], duration: Duration, errors: &Arc<Errors>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(n, registry)| {
            let (registry, stop, done, errors) =
                (registry.clone(), stop.clone(), done.clone(), errors.clone());
            tokio::spawn(async move {
                let instance = instance("BenchFlapping", n as u64);
                while !stop.load(Ordering::Relaxed) {
                    match registry.register(instance.clone(), LONG_TTL).await {
                        Ok(lease) => match registry.deregister(&lease).await {
                            Ok(()) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(err) => errors.record(format!("deregister: {err}")),
                        },
                        Err(err) => errors.record(format!("register (flapping): {err}")),
                    }
                }
            })
        })
        .collect();
    measure_rate(tasks, &stop, &done, duration).await
}

/// Let `tasks` run for `duration`, then stop them (`stop`); what they
/// counted in `done` per second of it.
async fn measure_rate(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: &AtomicBool,
    done: &AtomicU64,
    duration: Duration,
) -> f64 {
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let counted = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for task in tasks {
        let _ = task.await;
    }
    counted as f64 / elapsed
}

/// The name of populated service `n`.
fn populated_service(n: usize) -> String {
    format!("BenchService{:04}", n / PER_SERVICE)
}

/// Register `count` instances in services of [`PER_SERVICE`]; their leases.
async fn populate(clients: &[Registry], count: usize, errors: &Arc<Errors>) -> Vec<(usize, Lease)> {
    let next = Arc::new(AtomicU64::new(0));
    let leases = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(client, registry)| {
            let (registry, next, leases, errors) =
                (registry.clone(), next.clone(), leases.clone(), errors.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if n >= count {
                        return;
                    }
                    match registry.register(instance(&populated_service(n), n as u64), LONG_TTL).await {
                        Ok(lease) => leases.lock().await.push((client, lease)),
                        Err(err) => errors.record(format!("populate: {err}")),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    std::mem::take(&mut *leases.lock().await)
}

/// Keep-alives per second, each client renewing the leases it granted, in turn.
async fn keep_alives(
    clients: &[Registry],
    leases: &[(usize, Lease)],
    duration: Duration,
    errors: &Arc<Errors>,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(client, registry)| {
            let own: Vec<Lease> =
                leases.iter().filter(|(owner, _)| *owner == client).map(|(_, lease)| lease.clone()).collect();
            let (registry, stop, done, errors) =
                (registry.clone(), stop.clone(), done.clone(), errors.clone());
            tokio::spawn(async move {
                if own.is_empty() {
                    return;
                }
                let mut at = 0;
                while !stop.load(Ordering::Relaxed) {
                    match registry.keep_alive(&own[at % own.len()]).await {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => errors.record(format!("keep_alive: {err}")),
                    }
                    at += 1;
                }
            })
        })
        .collect();
    measure_rate(tasks, &stop, &done, duration).await
}

/// `watchers` watches of one service (over 16 connections); `changes`
/// registrations and deregistrations of it, each timed until every watcher
/// saw it. The p50 and p99 delay in ms, and how many (watcher, change)
/// pairs were not seen within 5 s.
async fn watch_fan_out(
    url: &str,
    watchers: usize,
    changes: usize,
    errors: &Arc<Errors>,
) -> Result<(f64, f64, usize), BoxError> {
    const SERVICE: &str = "BenchWatched";
    let connections = handles(url, 16).await?;
    let writer = connect(url).await?;
    // Each watcher sends, per event, the change number it shows.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut tasks = Vec::with_capacity(watchers);
    let ready = Arc::new(AtomicU64::new(0));
    for watcher in 0..watchers {
        let registry = connections[watcher % connections.len()].clone();
        let (seen_tx, ready, errors) = (seen_tx.clone(), ready.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut watch = match registry.watch(SERVICE, None).await {
                Ok(watch) => watch,
                Err(err) => return errors.record(format!("watch: {err}")),
            };
            let mut first = true;
            while let Some(event) = watch.next().await {
                let now = Instant::now();
                match event {
                    Ok(WatchEvent::Reset { .. }) if first => {
                        first = false;
                        ready.fetch_add(1, Ordering::Relaxed);
                    }
                    // The change number is in the instance's id and port
                    // (etcd's layout makes the address the id).
                    Ok(WatchEvent::Add { instance, .. }) => {
                        if let Some(change) = change_of(&instance.id).or_else(|| change_of(&instance.addr)) {
                            let _ = seen_tx.send((change, now));
                        }
                    }
                    Ok(WatchEvent::Remove { id, .. }) => {
                        if let Some(change) = change_of(&id) {
                            let _ = seen_tx.send((change, now));
                        }
                    }
                    Ok(_) => {}
                    Err(err) => errors.record(format!("watch event: {err}")),
                }
            }
        }));
    }
    drop(seen_tx);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (ready.load(Ordering::Relaxed) as usize) < watchers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut delays = Vec::with_capacity(watchers * changes);
    let mut missed = 0;
    let mut lease = None;
    for change in 0..changes {
        let started = Instant::now();
        // Even changes add instance `change`, odd ones remove it again.
        if change % 2 == 0 {
            let marker = Instance::new(SERVICE, format!("127.0.0.1:{}", CHANGE_PORTS + change))
                .with_id(format!("change-{change}"));
            lease = Some(writer.register(marker, LONG_TTL).await?);
        } else if let Some(lease) = lease.take() {
            // The removal of the instance added by `change - 1`: counted
            // under its own number below.
            writer.deregister(&lease).await?;
        }
        let shown = if change % 2 == 0 { change } else { change - 1 };
        let mut seen = 0;
        let until = started + Duration::from_secs(5);
        while seen < watchers {
            match tokio::time::timeout_at(until.into(), seen_rx.recv()).await {
                Ok(Some((number, at))) if number == shown => {
                    seen += 1;
                    delays.push(at.saturating_duration_since(started).as_secs_f64() * 1000.0);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        missed += watchers - seen;
        // Let the long polls settle between changes.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for task in tasks {
        task.abort();
    }
    delays.sort_by(f64::total_cmp);
    let at =
        |q: f64| delays.get(((delays.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN);
    Ok((at(0.5), at(0.99), missed))
}

/// The change an id (`change-N`) or address (`127.0.0.1:<20000 + N>`) is
/// the marker of.
fn change_of(id: &str) -> Option<usize> {
    if let Some(number) = id.strip_prefix("change-") {
        return number.parse().ok();
    }
    let port: usize = id.strip_prefix("127.0.0.1:")?.parse().ok()?;
    port.checked_sub(CHANGE_PORTS)
}

/// Marker instances listen (nominally) on this port plus the change number.
const CHANGE_PORTS: usize = 20000;

/// Crash the server and start it again; seconds until `service` is listed
/// with its `expected` instances.
async fn restart(peer: &mut Peer, service: &str, expected: usize) -> Result<f64, BoxError> {
    let started = Instant::now();
    peer.crash_and_restart()?;
    let deadline = started + Duration::from_secs(300);
    loop {
        if let Ok(registry) = connect(&peer.url).await
            && let Ok(Ok(snapshot)) =
                tokio::time::timeout(Duration::from_secs(5), registry.list(service)).await
            && snapshot.instances.len() >= expected
        {
            return Ok(started.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            return Err(format!("{service} was not listed whole within 300 s of the restart").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn render(config: &Config, results: &[(Backend, Measured)]) -> String {
    let mut out = String::new();
    let header: Vec<&str> = results.iter().map(|(backend, _)| backend.name()).collect();
    out.push_str(&format!(
        "{} concurrent clients, {:.0} s rounds, {} instances, {} watchers, {} changes\n\n",
        config.clients,
        config.duration.as_secs_f64(),
        config.instances,
        config.watchers,
        config.changes
    ));
    out.push_str(&format!("| | {} |\n|---|{}\n", header.join(" | "), "---:|".repeat(header.len())));
    let row = |name: &str, cell: &dyn Fn(&Measured) -> String| {
        let cells: Vec<String> = results.iter().map(|(_, measured)| cell(measured)).collect();
        format!("| {name} | {} |\n", cells.join(" | "))
    };
    for round in 0..config.rounds {
        out.push_str(&row(&format!("registrations/s, round {}", round + 1), &|m| {
            m.register_rounds.get(round).map_or("-".into(), |rate| format!("{rate:.0}"))
        }));
    }
    out.push_str(&row("register + deregister pairs/s", &|m| format!("{:.0}", m.flaps_per_second)));
    out.push_str(&row(&format!("populate {} instances, s", config.instances), &|m| {
        format!("{:.1}", m.populate_seconds)
    }));
    out.push_str(&row("server memory per instance, bytes", &|m| format!("{:.0}", m.bytes_per_instance)));
    out.push_str(&row("keep-alives/s", &|m| format!("{:.0}", m.keep_alives_per_second)));
    out.push_str(&row("watch fan-out p50, ms", &|m| format!("{:.2}", m.watch_p50_ms)));
    out.push_str(&row("watch fan-out p99, ms", &|m| format!("{:.2}", m.watch_p99_ms)));
    out.push_str(&row("watch events missed", &|m| m.watch_missed.to_string()));
    out.push_str(&row("restart until listed whole, s", &|m| format!("{:.2}", m.restart_seconds)));
    out.push_str(&row("errors", &|m| m.errors.to_string()));
    if let (Some((_, courier)), Some((_, etcd))) = (
        results.iter().find(|(backend, _)| *backend == Backend::Courier),
        results.iter().find(|(backend, _)| *backend == Backend::Etcd),
    ) {
        let median = |rounds: &[f64]| {
            let mut sorted = rounds.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let ratio = median(&courier.register_rounds) / median(&etcd.register_rounds);
        out.push_str(&format!(
            "\nGoals: courier's registrations >= 2x etcd's: {ratio:.2}x {}; watch p99 < 10 ms: {:.2} ms {}; \
             <= 1 KiB per instance: {:.0} bytes {}\n",
            if ratio >= 2.0 { "(met)" } else { "(NOT met)" },
            courier.watch_p99_ms,
            if courier.watch_p99_ms < 10.0 { "(met)" } else { "(NOT met)" },
            courier.bytes_per_instance,
            if courier.bytes_per_instance <= 1024.0 { "(met)" } else { "(NOT met)" },
        ));
    }
    for (backend, measured) in results {
        if let Some(first) = &measured.first_error {
            out.push_str(&format!("\n{}: {} errors; the first: {first}\n", backend.name(), measured.errors));
        }
    }
    out
}
