//! The client side of a run: open the scenario's connections, keep its
//! window of calls in flight on each, and record each call's latency.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::systems::{BoxError, Client, System, drive_raw};

/// Latencies and counts of calls completed inside the measured window.
pub(crate) struct Tally {
    histogram: Histogram<u64>,
    requests: u64,
    errors: u64,
    /// The first failure seen, so a report never counts errors it cannot name.
    first_error: Option<String>,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        // Nanoseconds, from 1 ns to 60 s, three significant digits.
        let histogram = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid constant bounds");
        Tally { histogram, requests: 0, errors: 0, first_error: None }
    }

    /// Count a call that started at `start` and finished at `done`, if it
    /// finished inside the window `[measure_from, end]`.
    pub(crate) fn record(&mut self, start: Instant, done: Instant, measure_from: Instant, end: Instant) {
        if done >= measure_from && done <= end {
            let nanos = u64::try_from(done.duration_since(start).as_nanos()).unwrap_or(u64::MAX);
            self.histogram.saturating_record(nanos.max(1));
            self.requests += 1;
        }
    }

    fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    fn fail(&mut self, error: &dyn std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }
}

/// What a load process reports (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LoadReport {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// The first error's message, when there were errors.
    #[serde(default)]
    pub(crate) first_error: Option<String>,
    pub(crate) seconds: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    /// CPU time the client process used inside the measured window.
    pub(crate) client_cpu_seconds: f64,
}

/// Run `scenario` against `system` at `addr`: `warmup`, then `duration`
/// measured. `on_measure` is called when the measured window starts.
pub(crate) async fn run(
    system: System,
    addr: std::net::SocketAddr,
    scenario: &Scenario,
    warmup: Duration,
    duration: Duration,
    on_measure: impl FnOnce(),
) -> Result<LoadReport, BoxError> {
    let payload = "x".repeat(scenario.payload);
    let mut clients = Vec::with_capacity(scenario.connections);
    for _ in 0..scenario.connections {
        clients.push(system.connect(addr).await?);
    }
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;

    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        if let Client::Raw(connection) = &client {
            let connection = connection.clone();
            let payload = payload.clone();
            let window = scenario.in_flight;
            tasks.spawn(async move { drive_raw(&connection, window, &payload, measure_from, end).await });
            continue;
        }
        for _ in 0..scenario.in_flight {
            let client = client.clone();
            let payload = payload.clone();
            tasks.spawn(async move {
                let mut tally = Tally::new();
                loop {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    match client.echo(&payload).await {
                        Ok(()) => tally.record(started, Instant::now(), measure_from, end),
                        Err(error) => tally.fail(&*error),
                    }
                }
                Ok(tally)
            });
        }
    }

    tokio::time::sleep_until(measure_from.into()).await;
    on_measure();
    let cpu_at_start = crate::measure::cpu_seconds(std::process::id())?;
    tokio::time::sleep_until(end.into()).await;
    let cpu_at_end = crate::measure::cpu_seconds(std::process::id())?;

    let mut total = Tally::new();
    while let Some(joined) = tasks.join_next().await {
        total.merge(&joined??);
    }
    let quantile_us = |q: f64| total.histogram.value_at_quantile(q) as f64 / 1_000.0;
    Ok(LoadReport {
        requests: total.requests,
        errors: total.errors,
        first_error: total.first_error,
        seconds: duration.as_secs_f64(),
        p50_us: quantile_us(0.5),
        p99_us: quantile_us(0.99),
        p999_us: quantile_us(0.999),
        client_cpu_seconds: cpu_at_end - cpu_at_start,
    })
}
