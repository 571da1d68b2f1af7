//! A client that floods a courier registry with watches, as issue 9 found
//! one could: many connections, each with many watches waiting at once.
//! The watches are what consumers use (`Follow`, the streaming watch, held
//! open for as long as the flood runs). Refused watches are tried again
//! after a pause, so the flood keeps whatever the registry lets it hold.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use courier::registry::courier::api::RegistryApiClient;

/// How long a refused watch waits before it is tried again: long enough
/// that the refusals cost the registry little, short enough that the flood
/// takes back any slot that frees up.
const RETRY: Duration = Duration::from_secs(2);

/// What the flood saw so far.
#[derive(Debug, Default)]
struct Counts {
    /// When each flood task's outstanding watch was sent, if one is.
    outstanding: Mutex<Vec<Option<Instant>>>,
    waiting: AtomicUsize,
    refused: AtomicUsize,
    failed: AtomicUsize,
}

/// Decrements `waiting` however the call ends (the task may be aborted).
struct Waiting<'a>(&'a AtomicUsize);

impl Counts {
    fn mark(&self, slot: usize, sent: Option<Instant>) {
        if let Some(entry) = self.outstanding.lock().unwrap_or_else(|p| p.into_inner()).get_mut(slot) {
            *entry = sent;
        }
    }
}

impl<'a> Waiting<'a> {
    fn start(counter: &'a AtomicUsize) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running flood; dropping it (or [`WatchFlood::stop`]) ends it.
pub struct WatchFlood {
    counts: Arc<Counts>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WatchFlood {
    /// Open `connections` connections to the registry at `addr` and keep
    /// `per_connection` watches waiting on each (each on a service of its
    /// own, waiting the longest the registry allows).
    pub async fn start(addr: SocketAddr, connections: usize, per_connection: usize) -> WatchFlood {
        let counts = Arc::new(Counts {
            outstanding: Mutex::new(vec![None; connections * per_connection]),
            ..Counts::default()
        });
        let mut tasks = Vec::with_capacity(connections * per_connection);
        for connection in 0..connections {
            // One channel is one connection (pool size 1).
            let channel = courier::Channel::builder(addr.to_string()).build_lazy();
            let client = RegistryApiClient::new(channel).with_timeout(Duration::from_secs(60));
            let follower = client.with_options(client.options().clone().without_timeout());
            // Watch from the current revision, so each call waits rather
            // than getting a full set at once.
            let revision =
                tokio::time::timeout(Duration::from_secs(10), client.list("Flood".to_owned(), None))
                    .await
                    .expect("the registry answers the flood's first call within 10 s")
                    .expect("the flood's first call succeeds")
                    .revision;
            for call in 0..per_connection {
                let (client, counts) = (follower.clone(), counts.clone());
                let slot = connection * per_connection + call;
                let service = format!("Flood{connection}x{call}");
                tasks.push(tokio::spawn(async move {
                    loop {
                        let result = {
                            let _waiting = Waiting::start(&counts.waiting);
                            counts.mark(slot, Some(Instant::now()));
                            // Held until the registry ends it (nothing ever
                            // changes in the flood's services); a refusal
                            // ends it at its first message.
                            let result = match client.follow(service.clone(), Some(revision)).await {
                                Ok(mut pages) => loop {
                                    match pages.message().await {
                                        Ok(Some(_)) => {}
                                        Ok(None) => break Ok(()),
                                        Err(status) => break Err(status),
                                    }
                                },
                                Err(status) => Err(status),
                            };
                            counts.mark(slot, None);
                            result
                        };
                        match result {
                            Ok(_) => {}
                            Err(status) => {
                                let counter = if status.code() == courier::Code::ResourceExhausted {
                                    &counts.refused
                                } else {
                                    &counts.failed
                                };
                                counter.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(RETRY).await;
                            }
                        }
                    }
                }));
            }
        }
        WatchFlood { counts, tasks }
    }

    /// Watch calls sent and not answered yet (about those the registry
    /// holds, once the refusals of a round are back).
    /// Watches outstanding for at least `at_least`: those the server holds,
    /// leaving out refused ones that are only on their way back (a refused
    /// watch is asked again every 2 s, and answered in milliseconds).
    pub fn held_for(&self, at_least: Duration) -> usize {
        let outstanding = self.counts.outstanding.lock().unwrap_or_else(|p| p.into_inner());
        outstanding.iter().flatten().filter(|sent| sent.elapsed() >= at_least).count()
    }

    pub fn waiting(&self) -> usize {
        self.counts.waiting.load(Ordering::SeqCst)
    }

    /// Watch calls refused with `ResourceExhausted` so far.
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::SeqCst)
    }

    /// Watch calls that failed in any other way so far.
    pub fn failed(&self) -> usize {
        self.counts.failed.load(Ordering::SeqCst)
    }

    /// End the flood: every waiting call is cancelled.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for WatchFlood {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
