//! `courier bench --stream`: one streaming call, recorded message by
//! message, for each of the engine's tickets.
//!
//! - `server`: the `--data` message is the stream's one request; every
//!   reply is read. A message's latency is the gap since the one before
//!   (the first's: since the stream was opened).
//! - `bidi`: ping-pong over one stream: a request, then its reply, `--messages`
//!   times; a message's latency is that round trip (the first's counts
//!   from the open). The stream is then half-closed and its end awaited.
//! - `client`: `--messages` requests, then the one reply; only the stream
//!   has a latency.
//!
//! Everything goes through `Channel::stream_bytes`, so the same code runs
//! over courier's native protocol and gRPC. A stream cut short comes out
//! of `Streaming::message` as an `Err`, never as a clean end, so it is
//! counted as a failed stream with its code.

use std::time::{Duration, Instant};

use bytes::Bytes;
use courier::{CallOptions, Channel, Code, MethodKind, Status, Streaming};

use super::engine::{Counters, Outcome};

/// The kind of the streaming method (`--stream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StreamKind {
    /// Server streaming: one request (--data), every reply read; a
    /// message's latency is the gap since the previous one (the first's:
    /// since the open).
    Server,
    /// Client streaming: --messages requests, then the one reply; a latency
    /// per stream.
    Client,
    /// Bidirectional: --messages ping-pong round trips over one stream (each
    /// request once the last reply came); a message's latency is its round
    /// trip. Then half-closed, its end awaited.
    Bidi,
}

impl StreamKind {
    pub(crate) fn method_kind(self) -> MethodKind {
        match self {
            StreamKind::Server => MethodKind::ServerStreaming,
            StreamKind::Client => MethodKind::ClientStreaming,
            StreamKind::Bidi => MethodKind::Bidirectional,
        }
    }

    /// As the user writes it after `--stream`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StreamKind::Server => "server",
            StreamKind::Client => "client",
            StreamKind::Bidi => "bidi",
        }
    }
}

/// The streaming half of a plan.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamPlan {
    pub(crate) kind: StreamKind,
    /// Requests per stream (client and bidi).
    pub(crate) messages: u64,
    /// Over the whole stream (the call's deadline; this is only the guard
    /// should the deadline not end it).
    pub(crate) timeout: Duration,
}

/// How long past `--timeout` a stream may run before the bench ends it
/// itself: the call's own deadline should always come first.
const GUARD: Duration = Duration::from_millis(500);

/// What one stream adds to the outcome as it goes.
pub(crate) struct Tally<'a> {
    pub(crate) outcome: &'a mut Outcome,
    pub(crate) counters: &'a Counters,
}

impl Tally<'_> {
    /// A message received (server, bidi) after `latency`.
    fn message(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.outcome.message_histogram.saturating_record(nanos);
        self.sent(1);
    }

    /// `count` messages that went through without a latency of their own.
    fn sent(&mut self, count: u64) {
        self.outcome.messages += count;
        self.counters.messages.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Run one stream of `plan`, opened at `opened` (its scheduled time with
/// a rate). Its messages are tallied as they arrive; the result is the
/// stream's end.
pub(crate) async fn one(
    channel: &Channel,
    method: &str,
    body: &Bytes,
    options: &CallOptions,
    plan: StreamPlan,
    opened: Instant,
    tally: &mut Tally<'_>,
) -> Result<(), Status> {
    let run = async {
        match plan.kind {
            StreamKind::Server => server(channel, method, body, options, opened, tally).await,
            StreamKind::Bidi => bidi(channel, method, body, options, plan.messages, opened, tally).await,
            StreamKind::Client => client(channel, method, body, options, plan.messages, tally).await,
        }
    };
    match tokio::time::timeout(plan.timeout + GUARD, run).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the stream did not end within --timeout {:?}",
            plan.timeout
        ))),
    }
}

async fn server(
    channel: &Channel,
    method: &str,
    body: &Bytes,
    options: &CallOptions,
    opened: Instant,
    tally: &mut Tally<'_>,
) -> Result<(), Status> {
    let requests = courier::stream::iter([body.clone()]);
    let mut replies = channel.stream_bytes(method, MethodKind::ServerStreaming, requests, options).await?;
    let mut last = opened;
    while replies.message().await?.is_some() {
        let now = Instant::now();
        tally.message(now.saturating_duration_since(last));
        last = now;
    }
    Ok(())
}

async fn bidi(
    channel: &Channel,
    method: &str,
    body: &Bytes,
    options: &CallOptions,
    messages: u64,
    opened: Instant,
    tally: &mut Tally<'_>,
) -> Result<(), Status> {
    let (sender, requests) = courier::stream::channel::<Bytes>(1);
    let mut replies = channel.stream_bytes(method, MethodKind::Bidirectional, requests, options).await?;
    let mut sent_at = opened;
    for done in 0..messages {
        if done > 0 {
            sent_at = Instant::now();
        }
        if sender.send(body.clone()).await.is_err() {
            // The call ended: its own end says why.
            return Err(ended_early(&mut replies, done, messages).await);
        }
        match replies.message().await? {
            Some(_) => tally.message(sent_at.elapsed()),
            None => return Err(clean_end_after(done, messages)),
        }
    }
    // Half-close, then the end (replies beyond one per request are read
    // and not counted).
    drop(sender);
    while replies.message().await?.is_some() {}
    Ok(())
}

async fn client(
    channel: &Channel,
    method: &str,
    body: &Bytes,
    options: &CallOptions,
    messages: u64,
    tally: &mut Tally<'_>,
) -> Result<(), Status> {
    let body = body.clone();
    let requests = courier::stream::iter((0..messages).map(move |_| body.clone()));
    let mut replies = channel.stream_bytes(method, MethodKind::ClientStreaming, requests, options).await?;
    if replies.message().await?.is_none() {
        return Err(Status::new(Code::Unknown, "the server ended the stream cleanly without a reply"));
    }
    while replies.message().await?.is_some() {}
    tally.sent(messages);
    Ok(())
}

/// Why a bidi stream took no more requests after `done` of `messages`.
async fn ended_early(replies: &mut Streaming<Bytes>, done: u64, messages: u64) -> Status {
    loop {
        match replies.message().await {
            Err(status) => return status,
            Ok(None) => return clean_end_after(done, messages),
            // A reply the server sent before ending: skip to the end.
            Ok(Some(_)) => {}
        }
    }
}

fn clean_end_after(done: u64, messages: u64) -> Status {
    Status::new(
        Code::Unknown,
        format!("the server ended the stream cleanly after {done} of {messages} replies"),
    )
}

/// One short stream before the load: its first reply (the sample shown in
/// the summary), `None` if it ended cleanly without one. A server or bidi
/// probe stops after the first reply (the stream is cancelled).
pub(crate) async fn probe(
    channel: &Channel,
    method: &str,
    kind: StreamKind,
    body: &Bytes,
    options: &CallOptions,
    timeout: Duration,
) -> Result<Option<Bytes>, Status> {
    let run = async {
        match kind {
            StreamKind::Server => {
                let requests = courier::stream::iter([body.clone()]);
                let mut replies =
                    channel.stream_bytes(method, MethodKind::ServerStreaming, requests, options).await?;
                replies.message().await
            }
            StreamKind::Bidi => {
                let (sender, requests) = courier::stream::channel::<Bytes>(1);
                let mut replies =
                    channel.stream_bytes(method, MethodKind::Bidirectional, requests, options).await?;
                if sender.send(body.clone()).await.is_err() {
                    return Err(ended_early(&mut replies, 0, 1).await);
                }
                replies.message().await
            }
            StreamKind::Client => {
                let requests = courier::stream::iter([body.clone()]);
                let mut replies =
                    channel.stream_bytes(method, MethodKind::ClientStreaming, requests, options).await?;
                replies.message().await
            }
        }
    };
    tokio::time::timeout(timeout + GUARD, run).await.unwrap_or_else(|_| {
        Err(Status::deadline_exceeded(format!("the probe stream sent nothing within --timeout {timeout:?}")))
    })
}
