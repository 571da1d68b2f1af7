//! The load: workers that keep calls (or streams) in flight and record
//! each outcome.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier::{CallOptions, Channel, Code};
use hdrhistogram::Histogram;

use super::stream::{self, StreamPlan, Tally};

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
    /// Calls (streams) per second in total, if paced.
    pub(crate) rate: Option<u64>,
    /// Each ticket is a streaming call, not a unary one.
    pub(crate) stream: Option<StreamPlan>,
}

/// Live counters, read by the progress bar.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Stream messages received (server, bidi) or sent (client).
    pub(crate) messages: AtomicU64,
    /// Set by Ctrl-C: finish the calls in flight and report.
    pub(crate) interrupted: AtomicBool,
}

/// At most this many distinct error messages are kept.
const MAX_ERROR_KINDS: usize = 20;

/// Everything measured.
pub(crate) struct Outcome {
    /// Latencies of every call (every stream, open to end), successful or
    /// not, in nanoseconds.
    pub(crate) histogram: Histogram<u64>,
    /// Streams: latencies of every message received, in nanoseconds.
    pub(crate) message_histogram: Histogram<u64>,
    /// Streams: messages received (server, bidi) or sent (client).
    pub(crate) messages: u64,
    /// Streams still open when the run was over (its duration, Ctrl-C):
    /// cut, their messages counted, their ends not.
    pub(crate) unfinished: u64,
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
            message_histogram: histogram(),
            messages: 0,
            unfinished: 0,
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn merge(&mut self, other: Outcome) {
        let _ = self.histogram.add(&other.histogram);
        let _ = self.message_histogram.add(&other.message_histogram);
        self.messages += other.messages;
        self.unfinished += other.unfinished;
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
    // Set at the end of the duration or on Ctrl-C: unary calls in flight
    // finish, streams in flight are cut (a stream may never end by itself).
    let (over, over_rx) = tokio::sync::watch::channel(false);
    let interrupt = tokio::spawn({
        let counters = counters.clone();
        async move {
            let timer = async {
                match end {
                    Some(end) => tokio::time::sleep_until(end.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = timer => {}
                Ok(()) = tokio::signal::ctrl_c() => counters.interrupted.store(true, Ordering::SeqCst),
            }
            let _ = over.send(true);
        }
    });

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..plan.concurrency {
        let channel = channels[worker % channels.len()].clone();
        let (plan, tickets, counters) = (plan.clone(), tickets.clone(), counters.clone());
        let mut over = over_rx.clone();
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
                let result = match plan.stream {
                    None => {
                        channel.unary_bytes(&plan.method, plan.body.clone(), &plan.options).await.map(drop)
                    }
                    Some(streaming) => {
                        let mut tally = Tally { outcome: &mut outcome, counters: &counters };
                        let one = stream::one(
                            &channel,
                            &plan.method,
                            &plan.body,
                            &plan.options,
                            streaming,
                            scheduled,
                            &mut tally,
                        );
                        let ended = tokio::select! {
                            biased;
                            _ = over.wait_for(|over| *over) => None,
                            result = one => Some(result),
                        };
                        match ended {
                            Some(result) => result,
                            None => {
                                outcome.unfinished += 1;
                                break;
                            }
                        }
                    }
                };
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
