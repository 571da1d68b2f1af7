//! The load: workers that keep calls in flight and record each outcome.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier::{CallOptions, Channel, Code};
use hdrhistogram::Histogram;

/// When to stop.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stop {
    After(Duration),
    Count(u64),
}

/// What to run.
pub(crate) struct Plan {
    pub(crate) method: String,
    pub(crate) body: Bytes,
    pub(crate) options: CallOptions,
    pub(crate) concurrency: usize,
    pub(crate) stop: Stop,
    /// Calls per second in total, if paced.
    pub(crate) rate: Option<u64>,
}

/// Live counters, read by the progress bar.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Set by Ctrl-C: finish the calls in flight and report.
    pub(crate) interrupted: AtomicBool,
}

/// At most this many distinct error messages are kept.
const MAX_ERROR_KINDS: usize = 20;

/// Everything measured.
pub(crate) struct Outcome {
    /// Latencies of every call, successful or not, in nanoseconds.
    pub(crate) histogram: Histogram<u64>,
    pub(crate) statuses: BTreeMap<Code, u64>,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) elapsed: Duration,
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid constant bounds")
}

impl Outcome {
    pub(crate) fn new() -> Outcome {
        Outcome {
            histogram: histogram(),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn merge(&mut self, other: Outcome) {
        let _ = self.histogram.add(&other.histogram);
        for (code, count) in other.statuses {
            *self.statuses.entry(code).or_default() += count;
        }
        for (message, count) in other.errors {
            self.note_error(message, count);
        }
    }

    fn note_error(&mut self, message: String, count: u64) {
        if let Some(seen) = self.errors.get_mut(&message) {
            *seen += count;
        } else if self.errors.len() < MAX_ERROR_KINDS {
            self.errors.insert(message, count);
        }
    }

    /// Calls completed, successful or not.
    pub(crate) fn total(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// Run `plan` over `channels` (workers are spread across them).
pub(crate) async fn run(channels: Vec<Channel>, plan: Plan, counters: Arc<Counters>) -> Outcome {
    let plan = Arc::new(plan);
    let start = Instant::now();
    let end = match plan.stop {
        Stop::After(duration) => Some(start + duration),
        Stop::Count(_) => None,
    };
    // Tickets: in count mode, a worker may only start call number `n` if
    // `n < count`; with a rate, ticket `n` is scheduled at start + n/rate.
    let tickets = Arc::new(AtomicU64::new(0));
    let interrupt = tokio::spawn({
        let counters = counters.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                counters.interrupted.store(true, Ordering::SeqCst);
            }
        }
    });

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..plan.concurrency {
        let channel = channels[worker % channels.len()].clone();
        let (plan, tickets, counters) = (plan.clone(), tickets.clone(), counters.clone());
        workers.spawn(async move {
            let mut outcome = Outcome::new();
            loop {
                if counters.interrupted.load(Ordering::Relaxed) {
                    break;
                }
                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                if let Stop::Count(count) = plan.stop
                    && ticket >= count
                {
                    break;
                }
                // With a rate, the call's clock starts at its scheduled time.
                let scheduled = match plan.rate {
                    Some(rate) => {
                        let at = start + Duration::from_secs_f64(ticket as f64 / rate as f64);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                if end.is_some_and(|end| scheduled >= end) {
                    break;
                }
                let result = channel.unary_bytes(&plan.method, plan.body.clone(), &plan.options).await;
                let nanos = u64::try_from(scheduled.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
                outcome.histogram.saturating_record(nanos);
                let code = match result {
                    Ok(_) => Code::Ok,
                    Err(status) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        outcome.note_error(status.to_string(), 1);
                        status.code()
                    }
                };
                *outcome.statuses.entry(code).or_default() += 1;
                counters.completed.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        });
    }
    let mut total = Outcome::new();
    while let Some(joined) = workers.join_next().await {
        if let Ok(outcome) = joined {
            total.merge(outcome);
        }
    }
    interrupt.abort();
    total.elapsed = start.elapsed();
    total
}
