//! What `courier bench` shows: a progress bar while it runs, then a summary
//! with percentiles, a latency histogram, status codes and errors.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};

use super::engine::{Counters, Outcome, Plan, Stop};

/// The progress bar and the task that refreshes it.
pub(crate) struct Progress {
    pub(crate) counters: Arc<Counters>,
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn new(plan: &Plan, quiet: bool) -> Progress {
        let counters = Arc::new(Counters::default());
        let (bar, by_time) = match plan.stop {
            Stop::After(duration) => (ProgressBar::new(duration.as_millis() as u64), true),
            Stop::Count(count) => (ProgressBar::new(count), false),
        };
        if quiet {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let template = if by_time {
            "{elapsed_precise} [{bar:40.cyan/blue}] {percent:>3}% {msg}"
        } else {
            "{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        let ticker = tokio::spawn({
            let (bar, counters) = (bar.clone(), counters.clone());
            async move {
                let started = std::time::Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    let done = counters.completed.load(Ordering::Relaxed);
                    let failed = counters.failed.load(Ordering::Relaxed);
                    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
                    if by_time {
                        bar.set_position(started.elapsed().as_millis() as u64);
                    } else {
                        bar.set_position(done);
                    }
                    bar.set_message(format!("{done} calls, {rate:.0}/s, {failed} errors"));
                }
            }
        });
        Progress { counters, bar, ticker: Some(ticker) }
    }

    pub(crate) fn finish(mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

fn human(nanos: u64) -> String {
    let us = nanos as f64 / 1e3;
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} us")
    }
}

/// The whole summary, as text.
pub(crate) fn summary(target: &str, method: &str, outcome: &Outcome, sample: &Bytes) -> String {
    let mut out = String::new();
    let h = &outcome.histogram;
    let total = outcome.total();
    let seconds = outcome.elapsed.as_secs_f64().max(1e-9);
    let _ = writeln!(out, "\nSummary ({method} at {target}):");
    let _ = writeln!(out, "  Count:        {total}");
    let _ = writeln!(out, "  Total:        {:.2} s", seconds);
    if total > 0 {
        let _ = writeln!(out, "  Slowest:      {}", human(h.max()));
        let _ = writeln!(out, "  Fastest:      {}", human(h.min()));
        let _ = writeln!(out, "  Average:      {}", human(h.mean() as u64));
    }
    let _ = writeln!(out, "  Requests/sec: {:.2}", total as f64 / seconds);
    let sample = String::from_utf8_lossy(sample);
    let shown: String = sample.chars().take(120).collect();
    let ellipsis = if sample.chars().count() > 120 { "..." } else { "" };
    let _ = writeln!(out, "  Sample reply: {shown}{ellipsis}");

    if total > 0 {
        // Ten even buckets from the fastest call to p99.9, and one for the
        // tail up to the slowest: with linear buckets up to the maximum, a
        // few slow calls would squeeze everything else into one bar.
        let _ = writeln!(out, "\nResponse time histogram:");
        let (min, top, max) = (h.min(), h.value_at_percentile(99.9), h.max());
        let buckets = 10u64;
        let width = (top.saturating_sub(min) / buckets).max(1);
        let mut rows = Vec::new();
        let mut low = min;
        for i in 0..buckets {
            let high = if i + 1 == buckets { top } else { low + width - 1 };
            rows.push((high, h.count_between(low, high)));
            low = high + 1;
        }
        if max > top {
            rows.push((max, h.count_between(top + 1, max)));
        }
        let biggest = rows.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1);
        for (high, count) in rows {
            let bar = "#".repeat(((count as f64 / biggest as f64) * 40.0).round() as usize);
            let _ = writeln!(out, "  {:>10} [{count:>9}] |{bar}", human(high));
        }
        let _ = writeln!(out, "\nLatency distribution:");
        for q in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
            let _ = writeln!(out, "  {q:>5} % in {}", human(h.value_at_percentile(q)));
        }
    }
    let _ = writeln!(out, "\nStatus code distribution:");
    for (code, count) in &outcome.statuses {
        let _ = writeln!(
            out,
            "  [{code:?}]{:width$}{count} responses",
            "",
            width = 22usize.saturating_sub(format!("{code:?}").len())
        );
    }
    if !outcome.errors.is_empty() {
        let _ = writeln!(out, "\nError distribution:");
        for (message, count) in &outcome.errors {
            let _ = writeln!(out, "  [{count}] {message}");
        }
    }
    out
}

pub(crate) fn print(target: &str, method: &str, outcome: &Outcome, sample: &Bytes) {
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(summary(target, method, outcome, sample).as_bytes());
    let _ = stdout.flush();
}
