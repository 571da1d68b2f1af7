//! A consumer under load: calling tasks that count what failed, and a
//! watcher of the smallest set of instances the consumer ever routed to
//! (tests of registry and provider faults assert both).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::WhoamiClient;
use crate::wait::{eventually, within};

/// How many instances a consumer of `Whoami` routes to now.
pub fn routed(client: &WhoamiClient) -> usize {
    client.channel().instances().map_or(0, |instances| instances.len())
}

/// Calls in a loop until stopped; counts failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(client: &WhoamiClient, tasks: usize) -> Load {
        let (stop, failures, calls) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let tasks = (0..tasks)
            .map(|_| {
                let (client, stop, failures, calls) =
                    (client.clone(), stop.clone(), failures.clone(), calls.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match client.name().await {
                            Ok(_) => calls.fetch_add(1, Ordering::SeqCst),
                            Err(status) => {
                                eprintln!("failed call: {status}");
                                failures.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Load { stop, failures, calls, tasks }
    }

    /// Calls that succeeded so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Whether `calls` calls have succeeded within 10 s.
    pub async fn wait_for_calls(&self, calls: usize) -> bool {
        eventually(Duration::from_secs(10), || self.calls() >= calls).await
    }

    pub async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            within(Duration::from_secs(10), "a load task to stop", task).await.expect("load task");
        }
        (self.calls.load(Ordering::SeqCst), self.failures.load(Ordering::SeqCst))
    }
}

/// Records the smallest instance count a consumer had, every 5 ms.
pub fn watch_smallest_view(client: &WhoamiClient) -> (Arc<AtomicBool>, tokio::task::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            let mut smallest = usize::MAX;
            while !stop.load(Ordering::SeqCst) {
                smallest = smallest.min(routed(&client));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            smallest
        }
    });
    (stop, task)
}
