//! [`CallHandle`]: a call started now and collected later (Go's `client.Go`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::JoinHandle;

use crate::status::Status;

/// A call running in the background; `.await` it for the result.
///
/// Returned by the generated `spawn_<method>` functions. Dropping the handle
/// lets the call finish unobserved; [`CallHandle::abort`] cancels it (the
/// server is told and drops its handler).
#[derive(Debug)]
#[must_use = "the result of a spawned call is only seen by awaiting its handle"]
pub struct CallHandle<T> {
    task: JoinHandle<Result<T, Status>>,
}

impl<T: Send + 'static> CallHandle<T> {
    /// Start `call` on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn spawn(call: impl Future<Output = Result<T, Status>> + Send + 'static) -> CallHandle<T> {
        CallHandle { task: tokio::spawn(call) }
    }
}

impl<T> CallHandle<T> {
    /// Cancel the call; awaiting the handle then yields `Cancelled`.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Whether the call has completed.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl<T> Future for CallHandle<T> {
    type Output = Result<T, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.task).poll(cx).map(|joined| match joined {
            Ok(result) => result,
            Err(err) if err.is_cancelled() => Err(Status::cancelled("the call was aborted")),
            Err(err) => Err(Status::internal(format!("the call's task failed: {err}"))),
        })
    }
}
