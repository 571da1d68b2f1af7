//! The test services: a calculator, a probe whose handlers report what
//! happened to them, the `.proto`-defined interop service, and `Whoami`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier::{Context, Status};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Why a calculation failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum CalcError {
    /// `b` was zero.
    #[error("division by zero")]
    DivisionByZero,
}

/// The classic net/rpc calculator.
#[courier::service(version = "1.0.0")]
pub trait Calculator {
    /// `a + b`.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// `a / b`.
    #[courier(idempotent)]
    async fn div(&self, a: f64, b: f64) -> Result<f64, CalcError>;
}

/// The calculator implementation.
pub struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn div(&self, a: f64, b: f64) -> Result<f64, CalcError> {
        if b == 0.0 { Err(CalcError::DivisionByZero) } else { Ok(a / b) }
    }
}

/// A service whose handlers let tests observe the server side.
#[courier::service]
pub trait Probe {
    /// Return `message`.
    async fn echo(&self, message: String) -> String;
    /// Sleep, then return `millis`. Counts starts, finishes and handlers
    /// dropped before finishing.
    async fn sleep(&self, millis: u64) -> u64;
    /// Panic with `message`.
    async fn panic(&self, message: String) -> u32;
    /// The value of request header `key`.
    async fn header(&self, cx: &Context, key: String) -> Option<String>;
    /// Milliseconds left before the call's deadline.
    async fn deadline_ms(&self, cx: &Context) -> Option<u64>;
    /// The caller's TCP port (tells connections apart).
    async fn peer_port(&self, cx: &Context) -> u16;
    /// A string of `len` bytes.
    async fn sized(&self, len: u64) -> String;
    /// Fail with the given status code and message.
    async fn fail(&self, code: u32, message: String) -> Result<(), Status>;
    /// Record `value` (one-way: no reply).
    #[courier(one_way)]
    async fn record(&self, value: u64);
    /// Everything recorded so far.
    async fn recorded(&self) -> Vec<u64>;
    /// Block the thread for `millis` (synchronous work, no `.await`).
    async fn busy(&self, millis: u64) -> u64;
    /// Wait `millis`, then return `message`; safe to run twice.
    #[courier(idempotent)]
    async fn slow_echo(&self, message: String, millis: u64) -> String;
    /// Wait `millis`, then record `value` (one-way).
    #[courier(one_way)]
    async fn record_later(&self, value: u64, millis: u64);
}

/// What the probe's handlers saw.
#[derive(Default)]
pub struct ProbeState {
    started: AtomicUsize,
    finished: AtomicUsize,
    dropped: AtomicUsize,
    busy_started: AtomicUsize,
    record_later_started: AtomicUsize,
    sized_started: AtomicUsize,
    /// When a `sleep` handler was last dropped unfinished.
    last_dropped_at: Mutex<Option<Instant>>,
    changed: Notify,
    recorded: Mutex<Vec<u64>>,
}

impl ProbeState {
    /// Wait until `condition` holds, up to `timeout`; returns whether it did.
    pub async fn wait_until(&self, timeout: Duration, condition: impl Fn(&ProbeState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if condition(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), changed).await.is_err() {
                return condition(self);
            }
        }
    }

    /// `sleep` handlers started so far.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// `sleep` handlers that completed.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::SeqCst)
    }

    /// When a `sleep` handler was last dropped before completing.
    pub fn last_dropped_at(&self) -> Option<Instant> {
        *self.last_dropped_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `sleep` handlers dropped before completing.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    /// `busy` handlers started so far (the thread is blocked from then on).
    pub fn busy_started(&self) -> usize {
        self.busy_started.load(Ordering::SeqCst)
    }

    /// `record_later` handlers started so far (waiting, not yet recorded).
    pub fn record_later_started(&self) -> usize {
        self.record_later_started.load(Ordering::SeqCst)
    }

    /// `sized` handlers started so far.
    pub fn sized_started(&self) -> usize {
        self.sized_started.load(Ordering::SeqCst)
    }

    /// Values received by `record`.
    pub fn recorded(&self) -> Vec<u64> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// The probe implementation.
#[derive(Clone, Default)]
pub struct ProbeImpl {
    /// Shared with the test.
    pub state: Arc<ProbeState>,
}

/// Marks a sleep handler dropped unless it finished.
struct DropWatch {
    state: Arc<ProbeState>,
    finished: bool,
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.finished {
            *self.state.last_dropped_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            self.state.bump(&self.state.dropped);
        }
    }
}

impl Probe for ProbeImpl {
    async fn echo(&self, message: String) -> String {
        message
    }

    async fn sleep(&self, millis: u64) -> u64 {
        let mut watch = DropWatch { state: self.state.clone(), finished: false };
        self.state.bump(&self.state.started);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        watch.finished = true;
        self.state.bump(&self.state.finished);
        millis
    }

    async fn panic(&self, message: String) -> u32 {
        panic!("{message}")
    }

    async fn header(&self, cx: &Context, key: String) -> Option<String> {
        cx.metadata().get(&key).map(str::to_owned)
    }

    async fn deadline_ms(&self, cx: &Context) -> Option<u64> {
        cx.remaining().map(|left| left.as_millis() as u64)
    }

    async fn peer_port(&self, cx: &Context) -> u16 {
        cx.peer_addr().map_or(0, |addr| addr.port())
    }

    async fn sized(&self, len: u64) -> String {
        self.state.bump(&self.state.sized_started);
        "x".repeat(len as usize)
    }

    async fn fail(&self, code: u32, message: String) -> Result<(), Status> {
        Err(Status::new(courier::Code::from_u32(code), message))
    }

    async fn record(&self, value: u64) {
        self.state.recorded.lock().unwrap_or_else(|p| p.into_inner()).push(value);
        self.state.changed.notify_waiters();
    }

    async fn recorded(&self) -> Vec<u64> {
        self.state.recorded.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn busy(&self, millis: u64) -> u64 {
        self.state.bump(&self.state.busy_started);
        std::thread::sleep(Duration::from_millis(millis));
        millis
    }

    async fn slow_echo(&self, message: String, millis: u64) -> String {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        message
    }

    async fn record_later(&self, value: u64, millis: u64) {
        self.state.bump(&self.state.record_later_started);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        self.record(value).await;
    }
}

courier::include_protos!();

/// The `.proto`-defined service of `proto/interop.proto`.
#[derive(Debug, Default, Clone)]
pub struct InteropImpl;

impl interop::Interop for InteropImpl {
    async fn echo(&self, cx: &Context, request: interop::EchoRequest) -> Result<interop::EchoReply, Status> {
        let mut metadata = std::collections::HashMap::new();
        for key in &request.echo_metadata {
            if let Some(value) = cx.metadata().get(key) {
                metadata.insert(key.clone(), value.to_owned());
                cx.set_response_metadata(format!("echo-{key}"), value);
            }
        }
        Ok(interop::EchoReply { message: request.message, payload: request.payload, metadata })
    }

    async fn fail(&self, _cx: &Context, request: interop::FailRequest) -> Result<interop::Empty, Status> {
        let code = u32::try_from(request.code).unwrap_or(2);
        Err(Status::new(courier::Code::from_u32(code), request.message))
    }

    async fn sleep(&self, _cx: &Context, request: interop::SleepRequest) -> Result<interop::Empty, Status> {
        tokio::time::sleep(Duration::from_millis(request.millis)).await;
        Ok(interop::Empty {})
    }
}

/// Says which server answered, so tests can count where calls went.
#[courier::service(version = "1.0.0")]
pub trait Whoami {
    /// This server's name.
    async fn name(&self) -> String;
}

/// A `Whoami` answering `name`.
#[derive(Clone)]
pub struct Named(pub String);

impl Whoami for Named {
    async fn name(&self) -> String {
        self.0.clone()
    }
}

/// How a [`FlakyImpl`] behaves, switched at run time with `set_mode` (also
/// from another process).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FlakyMode {
    /// Answer at once.
    Healthy,
    /// Fail every call with `code`, with `pushback_ms` as the retry
    /// pushback if given (negative: do not retry).
    Fail {
        /// The status code.
        code: u32,
        /// The `grpc-retry-pushback-ms` to answer with.
        pushback_ms: Option<i64>,
    },
    /// Answer after `millis`.
    Slow {
        /// How long.
        millis: u64,
    },
    /// Answer one call in `one_in` after `millis`, the others at once.
    SometimesSlow {
        /// One call in how many.
        one_in: u64,
        /// How long.
        millis: u64,
    },
    /// Never answer.
    Hang,
}

/// What a [`FlakyImpl`] ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlakyStats {
    /// `get` handlers started.
    pub gets: u64,
    /// `put` handlers started, by key: a key seen twice ran twice.
    pub puts: Vec<u64>,
    /// Calls that said they were a retry or hedge
    /// (`grpc-previous-rpc-attempts` present).
    pub retried: u64,
    /// The largest `grpc-previous-rpc-attempts` seen.
    pub max_previous: u64,
}

/// A service that fails, slows down or hangs on demand.
#[courier::service]
pub trait Flaky {
    /// Return `key`, after what the mode says; safe to run twice.
    #[courier(idempotent)]
    async fn get(&self, cx: &Context, key: u64) -> Result<u64, Status>;
    /// Store `key` (counted per key), after what the mode says; not safe
    /// to run twice.
    async fn put(&self, cx: &Context, key: u64) -> Result<u64, Status>;
    /// Switch the mode.
    async fn set_mode(&self, mode: FlakyMode);
    /// What ran so far.
    async fn stats(&self) -> FlakyStats;
}

/// The [`Flaky`] implementation; clones share their mode and counters.
#[derive(Clone)]
pub struct FlakyImpl {
    mode: Arc<Mutex<FlakyMode>>,
    stats: Arc<Mutex<FlakyStats>>,
    calls: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for FlakyImpl {
    fn default() -> FlakyImpl {
        FlakyImpl {
            mode: Arc::new(Mutex::new(FlakyMode::Healthy)),
            stats: Arc::default(),
            calls: Arc::default(),
        }
    }
}

impl FlakyImpl {
    /// Switch the mode from the test itself.
    pub fn set(&self, mode: FlakyMode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    /// What ran so far.
    pub fn snapshot(&self) -> FlakyStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn behave(&self, cx: &Context, key: u64) -> Result<u64, Status> {
        if let Some(previous) = cx.metadata().get(courier::resilience::PREVIOUS_ATTEMPTS) {
            let previous: u64 = previous.parse().unwrap_or(0);
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats.retried += 1;
            stats.max_previous = stats.max_previous.max(previous);
        }
        let mode = self.mode.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match mode {
            FlakyMode::Healthy => Ok(key),
            FlakyMode::Fail { code, pushback_ms } => {
                if let Some(ms) = pushback_ms {
                    cx.set_response_metadata(courier::resilience::RETRY_PUSHBACK, ms.to_string());
                }
                Err(Status::new(courier::Code::from_u32(code), "failing on purpose"))
            }
            FlakyMode::Slow { millis } => {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                Ok(key)
            }
            FlakyMode::SometimesSlow { one_in, millis } => {
                if self.calls.fetch_add(1, Ordering::Relaxed).is_multiple_of(one_in.max(1)) {
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                }
                Ok(key)
            }
            FlakyMode::Hang => std::future::pending().await,
        }
    }
}

impl Flaky for FlakyImpl {
    async fn get(&self, cx: &Context, key: u64) -> Result<u64, Status> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).gets += 1;
        self.behave(cx, key).await
    }

    async fn put(&self, cx: &Context, key: u64) -> Result<u64, Status> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).puts.push(key);
        self.behave(cx, key).await
    }

    async fn set_mode(&self, mode: FlakyMode) {
        self.set(mode);
    }

    async fn stats(&self) -> FlakyStats {
        self.snapshot()
    }
}

/// A service with a fixed capacity: `workers` calls at a time, each
/// taking `service_time`; calls beyond wait in line (as on a real pool of
/// threads or connections), so its latency grows with overload.
#[courier::service]
pub trait Work {
    /// Do one unit of work; safe to run twice.
    #[courier(idempotent)]
    async fn work(&self, key: u64) -> u64;
    /// Calls that ran to the end, and calls the server shed before they
    /// reached the pool (when it runs in a process of its own).
    async fn counts(&self) -> WorkCounts;
}

/// What a [`WorkPool`]'s server did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkCounts {
    /// Calls that ran to the end.
    pub done: u64,
    /// Calls the server's adaptive limit shed.
    pub shed: u64,
}

/// The [`Work`] implementation.
#[derive(Clone)]
pub struct WorkPool {
    workers: Arc<tokio::sync::Semaphore>,
    service_time: Duration,
    done: Arc<std::sync::atomic::AtomicU64>,
    /// The counters of the server it is served by, once bound.
    server: Arc<std::sync::OnceLock<courier::server::StatsHandle>>,
}

impl WorkPool {
    /// `workers` at a time, `service_time` each.
    pub fn new(workers: usize, service_time: Duration) -> WorkPool {
        WorkPool {
            workers: Arc::new(tokio::sync::Semaphore::new(workers)),
            service_time,
            done: Arc::default(),
            server: Arc::default(),
        }
    }

    /// Calls that ran to the end.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Tell it the counters of the server it is served by.
    pub fn served_by(&self, stats: courier::server::StatsHandle) {
        let _ = self.server.set(stats);
    }
}

impl Work for WorkPool {
    async fn work(&self, key: u64) -> u64 {
        let _worker = self.workers.acquire().await;
        tokio::time::sleep(self.service_time).await;
        self.done.fetch_add(1, Ordering::Relaxed);
        key
    }

    async fn counts(&self) -> WorkCounts {
        let shed = self.server.get().map_or(0, |stats| stats.get().calls_shed);
        WorkCounts { done: self.done(), shed }
    }
}

/// One hop of a chain of services, each in a process of its own: the last
/// hop does the work, the others pass each call on, with nothing in their
/// handlers about deadlines or cancellation (the outgoing call inherits
/// both from the call being served).
#[courier::service]
pub trait Hop {
    /// Milliseconds left before the deadline, as the last hop sees it.
    async fn deadline_ms(&self, cx: &Context) -> Result<Option<u64>, Status>;
    /// Sleep `millis` at the last hop.
    async fn sleep(&self, millis: u64) -> Result<u64, Status>;
    /// What this hop's `sleep` handlers did.
    async fn report(&self) -> HopReport;
}

/// What a hop's `sleep` handlers did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopReport {
    /// Handlers started.
    pub started: u64,
    /// Handlers that ran to the end.
    pub finished: u64,
    /// When each handler dropped unfinished was dropped (microseconds since
    /// the Unix epoch: comparable across processes on one machine).
    pub dropped_at_micros: Vec<u64>,
}

/// The [`Hop`] implementation: passes calls to `next`, or is the last hop.
#[derive(Clone, Default)]
pub struct HopImpl {
    next: Option<HopClient>,
    report: Arc<Mutex<HopReport>>,
}

impl HopImpl {
    /// A hop passing calls on to `next` (`None`: the last hop).
    pub fn new(next: Option<HopClient>) -> HopImpl {
        HopImpl { next, report: Arc::default() }
    }

    fn record(&self, change: impl FnOnce(&mut HopReport)) {
        change(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Marks a hop's `sleep` handler dropped unless it finished.
struct HopWatch<'a> {
    hop: &'a HopImpl,
    finished: bool,
}

impl Drop for HopWatch<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let micros = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
            self.hop.record(|report| report.dropped_at_micros.push(micros));
        }
    }
}

impl Hop for HopImpl {
    async fn deadline_ms(&self, cx: &Context) -> Result<Option<u64>, Status> {
        match &self.next {
            Some(next) => next.deadline_ms().await,
            None => Ok(cx.remaining().map(|left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX))),
        }
    }

    async fn sleep(&self, millis: u64) -> Result<u64, Status> {
        let mut watch = HopWatch { hop: self, finished: false };
        self.record(|report| report.started += 1);
        let slept = match &self.next {
            Some(next) => next.sleep(millis).await?,
            None => {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                millis
            }
        };
        watch.finished = true;
        self.record(|report| report.finished += 1);
        Ok(slept)
    }

    async fn report(&self) -> HopReport {
        self.report.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
