//! `courier registry serve` and `courier ls`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use courier::discovery::unix_ms;

/// `courier registry ...`
#[derive(clap::Subcommand, Debug)]
pub(crate) enum RegistryCommand {
    /// Run the bundled registry server (what `courier://host:port` URLs
    /// point at). State is kept in the data directory and survives restarts.
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:7600")]
        listen: String,
        /// Where to keep the registry's state.
        #[arg(long, default_value = "courier-registry-data")]
        data_dir: PathBuf,
        /// Start an empty registry even if the data file is empty (0 bytes,
        /// truncated). Without it, such a file is refused: starting from it
        /// would forget every registration without a word.
        #[arg(long)]
        allow_empty_data: bool,
    },
}

/// Errors of the registry commands.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryCmdError {
    #[error("could not start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Open(#[from] courier_registry::PersistError),
    #[error(transparent)]
    Serve(#[from] courier::ServeError),
    #[error(transparent)]
    Registry(#[from] courier::registry::RegistryError),
}

fn runtime() -> Result<tokio::runtime::Runtime, RegistryCmdError> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(RegistryCmdError::Runtime)
}

pub(crate) fn run(command: RegistryCommand) -> Result<ExitCode, RegistryCmdError> {
    match command {
        RegistryCommand::Serve { listen, data_dir, allow_empty_data } => runtime()?.block_on(async move {
            let registry = courier_registry::OpenOptions::new()
                .allow_empty_data(allow_empty_data)
                .open(&data_dir)
                .await?;
            // `add_to`, not `add_service`: it gives long-polling watches and
            // renewals pools of their own.
            let listening = registry.add_to(courier::Server::builder()).bind(listen).await?;
            println!(
                "courier registry serving at courier://{} (data in {}); Ctrl-C stops",
                listening.local_addr(),
                data_dir.display()
            );
            listening
                .serve_with_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// `courier ls [service]`: instances, versions, weights, lease ages.
pub(crate) fn ls(registry_url: &str, service: Option<&str>) -> Result<ExitCode, RegistryCmdError> {
    runtime()?.block_on(async move {
        let registry = courier::registry::connect(registry_url).await?;
        let registrations = tokio::time::timeout(Duration::from_secs(10), registry.registrations(service))
            .await
            .map_err(|_| courier::registry::RegistryError::Unavailable("no answer within 10 s".into()))??;
        print!("{}", table(&registrations, unix_ms()));
        Ok(if registrations.is_empty() && service.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS })
    })
}

fn age(registered_unix_ms: u64, now_unix_ms: u64) -> String {
    if registered_unix_ms == 0 {
        return "-".to_owned();
    }
    let seconds = now_unix_ms.saturating_sub(registered_unix_ms) / 1000;
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn table(registrations: &[courier::registry::Registration], now_unix_ms: u64) -> String {
    if registrations.is_empty() {
        return "no instances registered\n".to_owned();
    }
    let header =
        ["SERVICE", "VERSION", "ADDRESS", "WEIGHT", "ZONE", "STATE", "LEASE", "AGE"].map(str::to_owned);
    let rows: Vec<[String; 8]> = registrations
        .iter()
        .map(|r| {
            let i = &r.instance;
            [
                i.service.clone(),
                i.version.clone(),
                i.addr.clone(),
                i.weight.to_string(),
                i.zone.clone().unwrap_or_else(|| "-".to_owned()),
                format!("{:?}", i.state).to_lowercase(),
                r.lease.to_string(),
                age(r.registered_unix_ms, now_unix_ms),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> =
            row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use courier::registry::{Instance, Registration};

    use super::*;

    #[test]
    fn the_table_aligns_columns_and_shows_ages() {
        let registrations = vec![
            Registration {
                instance: Instance::new("Calculator", "127.0.0.1:9000").with_version("1.2.0").with_weight(3),
                lease: 7,
                registered_unix_ms: 1_000_000,
            },
            Registration {
                instance: Instance::new("Echo", "10.0.0.12:9100").with_zone("z1"),
                lease: 12,
                registered_unix_ms: 0,
            },
        ];
        let text = table(&registrations, 1_000_000 + 125_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("SERVICE     VERSION  ADDRESS"), "{text}");
        assert!(
            lines[1].contains("Calculator  1.2.0    127.0.0.1:9000") && lines[1].ends_with("2m5s"),
            "{text}"
        );
        assert!(lines[2].contains("z1") && lines[2].ends_with('-'), "{text}");
        assert_eq!(table(&[], 0), "no instances registered\n");
    }
}
