//! The orchestrator: for every repeat, every scenario and every system, in
//! that order (so systems interleave: A B C A B C ...), start a server
//! process and a client process, and read CPU and memory from /proc.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use crate::load::LoadReport;
use crate::measure::{cpu_seconds, status_kib};
use crate::scenario::ScenarioName;
use crate::systems::{BoxError, System};

/// One measured run of one system in one scenario.
pub(crate) struct Sample {
    pub(crate) system: System,
    pub(crate) scenario: ScenarioName,
    pub(crate) load: LoadReport,
    pub(crate) server_cpu_seconds: f64,
    pub(crate) server_peak_rss_kib: u64,
}

/// Server memory held by idle connections.
pub(crate) struct IdleSample {
    pub(crate) system: System,
    pub(crate) connections: usize,
    pub(crate) kib_per_connection: f64,
}

/// A child process killed when dropped.
struct Process {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Process {
    fn spawn(exe: &Path, args: &[&str]) -> Result<Process, BoxError> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Process { child, stdout })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of output, or an error if the process ended.
    fn line(&mut self) -> Result<String, BoxError> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(format!("process {} ended unexpectedly", self.pid()).into());
        }
        Ok(line.trim_end().to_owned())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(exe: &Path, system: System) -> Result<(Process, String), BoxError> {
    let mut server = Process::spawn(exe, &["serve", "--system", system.name(), "--listen", "127.0.0.1:0"])?;
    let line = server.line()?;
    let addr =
        line.strip_prefix("listening on ").ok_or_else(|| format!("unexpected server output: {line}"))?;
    Ok((server, addr.to_owned()))
}

pub(crate) fn sample(
    exe: &Path,
    system: System,
    scenario: ScenarioName,
    warmup: Duration,
    duration: Duration,
) -> Result<Sample, BoxError> {
    let (server, addr) = start_server(exe, system)?;
    let mut client = Process::spawn(
        exe,
        &[
            "load",
            "--system",
            system.name(),
            "--addr",
            &addr,
            "--scenario",
            scenario.arg(),
            "--warmup",
            &warmup.as_secs_f64().to_string(),
            "--duration",
            &duration.as_secs_f64().to_string(),
        ],
    )?;
    let mut server_cpu_start = None;
    loop {
        let line = client.line()?;
        if line == "measuring" {
            server_cpu_start = Some(cpu_seconds(server.pid())?);
        } else if let Some(json) = line.strip_prefix("result ") {
            let server_cpu_end = cpu_seconds(server.pid())?;
            let load: LoadReport = serde_json::from_str(json)?;
            let start = server_cpu_start.ok_or("result before the measured window")?;
            return Ok(Sample {
                system,
                scenario,
                load,
                server_cpu_seconds: server_cpu_end - start,
                server_peak_rss_kib: status_kib(server.pid(), "VmHWM")?,
            });
        }
    }
}

pub(crate) fn idle(exe: &Path, system: System, connections: usize) -> Result<IdleSample, BoxError> {
    let (server, addr) = start_server(exe, system)?;
    // Let the server settle before taking its baseline.
    std::thread::sleep(Duration::from_millis(200));
    let before = status_kib(server.pid(), "VmRSS")?;
    let mut client = Process::spawn(
        exe,
        &["idle", "--system", system.name(), "--addr", &addr, "--connections", &connections.to_string()],
    )?;
    let line = client.line()?;
    if line != "ready" {
        return Err(format!("unexpected idle client output: {line}").into());
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = status_kib(server.pid(), "VmRSS")?;
    // Closing stdin tells the idle client to exit.
    if let Some(mut stdin) = client.child.stdin.take() {
        let _ = stdin.flush();
    }
    Ok(IdleSample {
        system,
        connections,
        kib_per_connection: after.saturating_sub(before) as f64 / connections as f64,
    })
}
