//! Turning samples into the table: medians per system and scenario, ratios
//! to courier native, and the goals from the performance issue.

use std::fmt::Write;

use crate::run::{IdleSample, Sample};
use crate::scenario::ScenarioName;
use crate::systems::System;

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// Medians of one system in one scenario.
struct Row {
    system: System,
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    cpu_us_per_request: f64,
    server_rss_mib: f64,
    errors: u64,
    first_error: Option<String>,
}

fn rows(samples: &[Sample], scenario: ScenarioName, systems: &[System]) -> Vec<Row> {
    systems
        .iter()
        .filter_map(|&system| {
            let runs: Vec<&Sample> =
                samples.iter().filter(|s| s.system == system && s.scenario == scenario).collect();
            if runs.is_empty() {
                return None;
            }
            let each = |f: &dyn Fn(&Sample) -> f64| median(runs.iter().map(|s| f(s)).collect());
            Some(Row {
                system,
                rps: each(&|s| s.load.requests as f64 / s.load.seconds),
                p50: each(&|s| s.load.p50_us),
                p99: each(&|s| s.load.p99_us),
                p999: each(&|s| s.load.p999_us),
                cpu_us_per_request: each(&|s| {
                    (s.server_cpu_seconds + s.load.client_cpu_seconds) * 1e6 / (s.load.requests.max(1) as f64)
                }),
                server_rss_mib: each(&|s| s.server_peak_rss_kib as f64 / 1024.0),
                errors: runs.iter().map(|s| s.load.errors).sum(),
                first_error: runs.iter().find_map(|s| s.load.first_error.clone()),
            })
        })
        .collect()
}

fn us(value: f64) -> String {
    if value >= 1000.0 { format!("{:.2} ms", value / 1000.0) } else { format!("{value:.0} us") }
}

/// The whole report, as Markdown.
pub(crate) fn render(
    samples: &[Sample],
    idle: &[IdleSample],
    systems: &[System],
    scenarios: &[ScenarioName],
) -> String {
    let mut out = String::new();
    let mut goals = Vec::new();
    for &scenario in scenarios {
        let rows = rows(samples, scenario, systems);
        let courier = rows.iter().find(|r| r.system == System::CourierBin).map(|r| (r.rps, r.p99));
        let _ = writeln!(out, "\n### {}\n", scenario.label());
        let _ = writeln!(
            out,
            "| system | req/s | p50 | p99 | p99.9 | CPU per request | server peak RSS | courier-bin ÷ this |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for row in &rows {
            let ratio = courier.map_or("".to_owned(), |(rps, _)| format!("{:.2}x", rps / row.rps));
            let errors = if row.errors > 0 { format!(" ({} errors)", row.errors) } else { String::new() };
            let _ = writeln!(
                out,
                "| {}{} | {:.0} | {} | {} | {} | {:.1} us | {:.1} MiB | {} |",
                row.system.name(),
                errors,
                row.rps,
                us(row.p50),
                us(row.p99),
                us(row.p999),
                row.cpu_us_per_request,
                row.server_rss_mib,
                ratio
            );
        }
        for row in rows.iter().filter(|r| r.errors > 0) {
            let first = row.first_error.as_deref().unwrap_or("(not recorded)");
            let _ = writeln!(out, "\n{}: {} errors; the first: {first}", row.system.name(), row.errors);
        }
        let find = |system: System| rows.iter().find(|r| r.system == system);
        if let (Some((rps, p99)), Some(tarpc)) = (courier, find(System::Tarpc)) {
            match scenario {
                ScenarioName::Pipelined => {
                    goals.push(goal("64 in flight, 64 B: courier ÷ tarpc req/s", rps / tarpc.rps, 2.0));
                    goals.push(format!(
                        "- 64 in flight, 64 B: courier p99 {} vs tarpc p99 {} (goal: not above): {}",
                        us(p99),
                        us(tarpc.p99),
                        if p99 <= tarpc.p99 { "met" } else { "MISSED" }
                    ));
                }
                ScenarioName::Pipelined4k => {
                    goals.push(goal("64 in flight, 4 KiB: courier ÷ tarpc req/s", rps / tarpc.rps, 1.5));
                }
                _ => {}
            }
        }
        if let (Some((rps, _)), Some(tonic), ScenarioName::Pipelined) =
            (courier, find(System::Tonic), scenario)
        {
            goals.push(goal("64 in flight, 64 B: courier ÷ tonic req/s", rps / tonic.rps, 4.0));
        }
        if let (Some(grpc), Some(tonic), ScenarioName::Pipelined) =
            (find(System::CourierGrpc), find(System::Tonic), scenario)
        {
            goals.push(goal("64 in flight, 64 B: courier gRPC ÷ tonic req/s", grpc.rps / tonic.rps, 1.5));
            goals.push(format!(
                "- 64 in flight, 64 B: courier gRPC p99 {} vs tonic p99 {} (goal: lower): {}",
                us(grpc.p99),
                us(tonic.p99),
                if grpc.p99 < tonic.p99 { "met" } else { "MISSED" }
            ));
        }
        if let (Some(on), Some(off)) = (find(System::CourierGoverned), find(System::CourierDiscovered)) {
            let ratio = on.rps / off.rps;
            goals.push(format!(
                "- {}: governance on ÷ off req/s {ratio:.3}, p99 {} vs {} (goal: within 3 %): {}",
                scenario.label(),
                us(on.p99),
                us(off.p99),
                if ratio >= 0.97 { "met" } else { "MISSED" }
            ));
        }
        if let (Some((rps, _)), Some(raw), ScenarioName::PingPong) = (courier, find(System::Raw), scenario) {
            goals.push(goal("1 in flight: courier ÷ raw TCP req/s", rps / raw.rps, 0.85));
        }
    }
    if !idle.is_empty() {
        let _ = writeln!(out, "\n### Idle connections: server memory per connection\n");
        let _ = writeln!(out, "| system | connections | KiB per connection |");
        let _ = writeln!(out, "|---|---:|---:|");
        for sample in idle {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} |",
                sample.system.name(),
                sample.connections,
                sample.kib_per_connection
            );
            if sample.system == System::CourierBin {
                goals.push(format!(
                    "- idle connections: courier {:.1} KiB each (goal: under 20): {}",
                    sample.kib_per_connection,
                    if sample.kib_per_connection < 20.0 { "met" } else { "MISSED" }
                ));
            }
        }
    }
    if !goals.is_empty() {
        let _ = writeln!(out, "\n### Goals\n");
        for line in goals {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

fn goal(what: &str, ratio: f64, at_least: f64) -> String {
    let verdict = if ratio >= at_least { "met" } else { "MISSED" };
    format!("- {what}: {ratio:.2}x (goal: at least {at_least}x): {verdict}")
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
