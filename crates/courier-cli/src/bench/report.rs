//! What `courier bench` shows: a progress bar while it runs, then a summary
//! with percentiles, a latency histogram, status codes and errors. Stream
//! runs (`--stream`) count streams and messages, with per-message latencies
//! (per-stream ones for client streams).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use super::engine::{Counters, Outcome, Plan, Stop};
use super::stream::{StreamKind, StreamPlan};

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
        let streams = plan.stream.is_some();
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
                    if streams {
                        let messages = counters.messages.load(Ordering::Relaxed);
                        let per_second = messages as f64 / started.elapsed().as_secs_f64().max(1e-9);
                        bar.set_message(format!(
                            "{done} streams, {messages} messages, {per_second:.0} messages/s, {failed} errors"
                        ));
                    } else {
                        bar.set_message(format!("{done} calls, {rate:.0}/s, {failed} errors"));
                    }
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
    } else if nanos >= 1000 {
        format!("{us:.0} us")
    } else {
        // Messages of a stream that arrived together.
        format!("{nanos} ns")
    }
}

/// The whole summary, as text.
pub(crate) fn summary(
    target: &str,
    method: &str,
    stream: Option<StreamPlan>,
    outcome: &Outcome,
    sample: &Bytes,
) -> String {
    if let Some(stream) = stream {
        return stream_summary(target, method, stream, outcome, sample);
    }
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
    write_sample(&mut out, sample);

    if total > 0 {
        let _ = writeln!(out, "\nResponse time histogram:");
        write_histogram(&mut out, h);
        let _ = writeln!(out, "\nLatency distribution:");
        for q in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
            let _ = writeln!(out, "  {q:>5} % in {}", human(h.value_at_percentile(q)));
        }
    }
    write_statuses(&mut out, outcome, "responses");
    out
}

/// The summary of a `--stream` run: streams and messages, their rates,
/// and the latencies of messages (of whole streams for client streams).
fn stream_summary(
    target: &str,
    method: &str,
    stream: StreamPlan,
    outcome: &Outcome,
    sample: &Bytes,
) -> String {
    let mut out = String::new();
    let total = outcome.total();
    let seconds = outcome.elapsed.as_secs_f64().max(1e-9);
    let _ = writeln!(out, "\nSummary ({method} at {target}, --stream {}):", stream.kind.name());
    let _ = writeln!(out, "  Streams:      {total}");
    let direction = if stream.kind == StreamKind::Client { "sent" } else { "received" };
    let _ = writeln!(out, "  Messages:     {} {direction}", outcome.messages);
    let _ = writeln!(out, "  Total:        {seconds:.2} s");
    let _ = writeln!(out, "  Streams/sec:  {:.2}", total as f64 / seconds);
    let _ = writeln!(out, "  Messages/sec: {:.2}", outcome.messages as f64 / seconds);
    if outcome.unfinished > 0 {
        let _ = writeln!(
            out,
            "  Unfinished:   {} streams (open when the run was over: cut, their messages counted)",
            outcome.unfinished
        );
    }
    write_sample(&mut out, sample);

    let streams = &outcome.histogram;
    let (name, latencies) = match stream.kind {
        StreamKind::Client => ("Stream latency", streams),
        StreamKind::Server => {
            ("Message latency (the gap since the previous message)", &outcome.message_histogram)
        }
        StreamKind::Bidi => ("Message latency (request to reply)", &outcome.message_histogram),
    };
    if stream.kind != StreamKind::Client && total > 0 {
        let _ = writeln!(
            out,
            "  Stream time:  fastest {}, average {}, slowest {}",
            human(streams.min()),
            human(streams.mean() as u64),
            human(streams.max())
        );
    }
    if !latencies.is_empty() {
        let _ = writeln!(out, "\n{name} histogram:");
        write_histogram(&mut out, latencies);
        let _ = writeln!(out, "\n{name} distribution:");
        for (label, q) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)] {
            let _ = writeln!(out, "  {label:>6}   {}", human(latencies.value_at_percentile(q)));
        }
        let _ = writeln!(out, "  {:>6}   {}", "max", human(latencies.max()));
    }
    write_statuses(&mut out, outcome, "streams");
    out
}

fn write_sample(out: &mut String, sample: &Bytes) {
    let sample = String::from_utf8_lossy(sample);
    let shown: String = sample.chars().take(120).collect();
    let ellipsis = if sample.chars().count() > 120 { "..." } else { "" };
    let _ = writeln!(out, "  Sample reply: {shown}{ellipsis}");
}

fn write_histogram(out: &mut String, h: &Histogram<u64>) {
    let rows = histogram_rows(h);
    let biggest = rows.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1);
    for (high, count) in rows {
        let bar = "#".repeat(((count as f64 / biggest as f64) * 40.0).round() as usize);
        let _ = writeln!(out, "  {:>10} [{count:>9}] |{bar}", human(high));
    }
}

/// Status codes (of calls or streams: `unit`) and error messages.
fn write_statuses(out: &mut String, outcome: &Outcome, unit: &str) {
    let _ = writeln!(out, "\nStatus code distribution:");
    if outcome.statuses.is_empty() {
        let _ = writeln!(out, "  (none ended)");
    }
    for (code, count) in &outcome.statuses {
        let _ = writeln!(
            out,
            "  [{code:?}]{:width$}{count} {unit}",
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
}

/// Rows of the latency histogram, `(upper bound, calls)`, in which every
/// call recorded is counted exactly once.
///
/// Ten even buckets from the fastest call to p99.9, and one for the tail up
/// to the slowest: with linear buckets up to the maximum, a few slow calls
/// would squeeze everything else into one bar. With ten or fewer distinct
/// latencies up to p99.9 (a handful of calls), one row each instead.
///
/// Each recorded value is placed in one row. (Asking the histogram for the
/// count between two bounds would not do: it counts whole internal buckets
/// that overlap the range, so neighbouring rows shared calls and the rows
/// added up to more calls than were made.)
fn histogram_rows(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    const BUCKETS: u64 = 10;
    if h.is_empty() {
        return Vec::new();
    }
    // Both are values the histogram reports for whole internal buckets, so
    // every recorded value is either at most `top` or in the tail.
    let top = h.value_at_percentile(99.9);
    let recorded: Vec<(u64, u64)> =
        h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect();
    let (body, tail): (Vec<_>, Vec<_>) = recorded.into_iter().partition(|(value, _)| *value <= top);
    let mut rows = if body.len() as u64 <= BUCKETS {
        body
    } else {
        let low = h.min();
        let width = (top.saturating_sub(low) / BUCKETS).saturating_add(1);
        let mut rows: Vec<(u64, u64)> = (0..BUCKETS)
            .map(|i| (if i + 1 == BUCKETS { top } else { low + (i + 1) * width - 1 }, 0))
            .collect();
        for (value, count) in body {
            let index = (value.saturating_sub(low) / width).min(BUCKETS - 1);
            rows[index as usize].1 += count;
        }
        rows
    };
    if !tail.is_empty() {
        rows.push((h.max(), tail.iter().map(|(_, count)| count).sum()));
    }
    rows
}

pub(crate) fn print(
    target: &str,
    method: &str,
    stream: Option<StreamPlan>,
    outcome: &Outcome,
    sample: &Bytes,
) {
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(summary(target, method, stream, outcome, sample).as_bytes());
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use courier::Code;

    use super::*;
    use crate::bench::engine::histogram;

    fn recorded(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = histogram();
        for value in values {
            h.saturating_record(value);
        }
        h
    }

    fn calls(rows: &[(u64, u64)]) -> u64 {
        rows.iter().map(|(_, count)| count).sum()
    }

    #[test]
    fn every_call_is_counted_in_exactly_one_row() {
        // 2,000 calls from 1 us to 2 ms, and a slow one beyond p99.9.
        let h = recorded((1..=2000).map(|us| us * 1000).chain([80_000_000]));
        let rows = histogram_rows(&h);
        assert_eq!(calls(&rows), 2001, "{rows:?}");
        assert_eq!(rows.len(), 11, "ten buckets and the tail: {rows:?}");
        // Even buckets over an even spread: about 200 calls each.
        for (high, count) in &rows[..10] {
            assert!((185..=215).contains(count), "{high}: {count} in {rows:?}");
        }
        assert_eq!(rows[10].0, h.max(), "{rows:?}");
        assert!(rows.windows(2).all(|pair| pair[0].0 < pair[1].0), "bounds ascend: {rows:?}");
    }

    #[test]
    fn a_few_distinct_latencies_get_one_row_each() {
        let h = recorded([1_000_000; 7].into_iter().chain([2_000_000; 3]));
        let rows = histogram_rows(&h);
        assert_eq!(rows.iter().map(|(_, count)| *count).collect::<Vec<_>>(), vec![7, 3], "{rows:?}");
    }

    #[test]
    fn one_call_makes_one_row_of_one() {
        let mut outcome = Outcome::new();
        outcome.histogram.saturating_record(1_234_567);
        outcome.statuses.insert(Code::Ok, 1);
        let text = summary("127.0.0.1:9000", "Calculator.Add", None, &outcome, &Bytes::from_static(b"3"));
        let histogram = text
            .split("Response time histogram:\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("a histogram");
        let rows: Vec<&str> = histogram.lines().collect();
        assert_eq!(rows.len(), 1, "{text}");
        assert!(rows[0].contains("[        1]"), "{text}");
    }

    #[test]
    fn a_stream_run_reports_streams_messages_and_message_percentiles() {
        let mut outcome = Outcome::new();
        outcome.elapsed = Duration::from_secs(2);
        outcome.statuses.insert(Code::Ok, 10);
        outcome.statuses.insert(Code::NotFound, 2);
        outcome.errors.insert("NotFound: gone".to_owned(), 2);
        outcome.messages = 1200;
        outcome.unfinished = 1;
        for us in 1..=1200 {
            outcome.message_histogram.saturating_record(us * 1000);
        }
        for _ in 0..12 {
            outcome.histogram.saturating_record(50_000_000);
        }
        let plan = StreamPlan { kind: StreamKind::Bidi, messages: 100, timeout: Duration::from_secs(20) };
        let text =
            summary("127.0.0.1:9000", "Ticker.Echo", Some(plan), &outcome, &Bytes::from_static(b"\"hi\""));
        assert!(text.contains("Summary (Ticker.Echo at 127.0.0.1:9000, --stream bidi):"), "{text}");
        assert!(text.contains("Streams:      12\n"), "{text}");
        assert!(text.contains("Messages:     1200 received\n"), "{text}");
        assert!(text.contains("Streams/sec:  6.00\n"), "{text}");
        assert!(text.contains("Messages/sec: 600.00\n"), "{text}");
        assert!(text.contains("Unfinished:   1 streams"), "{text}");
        assert!(text.contains("Stream time:  fastest ") && text.contains("slowest 50.00 ms"), "{text}");
        assert!(text.contains("Message latency (request to reply) distribution:"), "{text}");
        assert!(text.contains("p50   600 us"), "{text}");
        assert!(text.contains("max   1.20 ms"), "{text}");
        assert!(text.contains("[NotFound]") && text.contains("2 streams"), "{text}");
        assert!(text.contains("[2] NotFound: gone"), "{text}");

        let client = StreamPlan { kind: StreamKind::Client, ..plan };
        let text =
            summary("127.0.0.1:9000", "Ticker.Total", Some(client), &outcome, &Bytes::from_static(b"7"));
        assert!(text.contains("Messages:     1200 sent\n"), "{text}");
        assert!(text.contains("Stream latency distribution:"), "{text}");
        assert!(text.contains("max   50.00 ms"), "{text}");
        assert!(!text.contains("Stream time:"), "{text}");
    }
}
