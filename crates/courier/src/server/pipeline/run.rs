//! Running a call's future: its deadline, panic isolation, and the first
//! poll on the connection's own task.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::Bytes;

use crate::service::BoxFuture;
use crate::status::Status;

/// Run a handler future to completion, or until `deadline`, turning a panic
/// into `Internal`. Dropping the returned future drops the handler. If
/// `timing` is given, the first poll is timed into it (see `inline`).
pub(crate) async fn run(
    handler: BoxFuture<'static, Result<Bytes, Status>>,
    deadline: Option<Instant>,
    timing: Option<std::sync::Arc<crate::server::inline::InlinePolicy>>,
) -> Result<Bytes, Status> {
    let guarded = CatchUnwind { handler, timing, deadline };
    match deadline {
        None => guarded.await,
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), guarded).await {
            Ok(outcome) => outcome,
            Err(_) => {
                Err(Status::deadline_exceeded("the call's deadline passed while the server was handling it"))
            }
        },
    }
}

/// Poll a handler once, from the connection's own task. Most handlers
/// finish without waiting (no I/O, no locks held elsewhere), and answering
/// them here saves a task spawn and a thread wake-up per call. `None`
/// means it is waiting; the caller then moves it to a task of its own,
/// which polls it again (so it re-registers that task's waker, as the
/// `Future` contract requires of every poll).
pub(crate) fn poll_inline(
    handler: &mut BoxFuture<'static, Result<Bytes, Status>>,
    deadline: Option<Instant>,
    cx: &mut TaskContext<'_>,
) -> Option<Result<Bytes, Status>> {
    // Calls the handler makes inherit its deadline.
    let _current = crate::context::current::enter(deadline);
    match catch_unwind(AssertUnwindSafe(|| handler.as_mut().poll(cx))) {
        Ok(Poll::Ready(outcome)) => Some(outcome),
        Ok(Poll::Pending) => None,
        Err(payload) => Some(Err(panicked(payload.as_ref()))),
    }
}

fn panicked(payload: &(dyn Any + Send)) -> Status {
    let reason = panic_message(payload);
    tracing::error!(%reason, "handler panicked");
    Status::internal(format!("the handler panicked: {reason}"))
}

/// Polls a handler inside `catch_unwind`, so one panicking handler fails
/// its own call and nothing else; times the first poll if asked.
struct CatchUnwind {
    handler: BoxFuture<'static, Result<Bytes, Status>>,
    timing: Option<std::sync::Arc<crate::server::inline::InlinePolicy>>,
    /// The call's deadline, current while the handler is polled.
    deadline: Option<Instant>,
}

impl Future for CatchUnwind {
    type Output = Result<Bytes, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let timing = self.timing.take();
        let started = timing.as_ref().map(|_| std::time::Instant::now());
        let _current = crate::context::current::enter(self.deadline);
        let inner = &mut self.handler;
        let polled = catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx)));
        if let (Some(policy), Some(started)) = (timing, started) {
            policy.record(started.elapsed());
        }
        match polled {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(panicked(payload.as_ref()))),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::status::Code;

    #[tokio::test]
    async fn a_panic_becomes_internal() {
        let handler: BoxFuture<'static, Result<Bytes, Status>> = Box::pin(async { panic!("boom") });
        let err = run(handler, None, None).await.expect_err("panicked");
        assert_eq!(err.code(), Code::Internal);
        assert!(err.message().contains("boom"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_drops_the_handler() {
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let handler: BoxFuture<'static, Result<Bytes, Status>> = Box::pin(async move {
            let _flag = flag;
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(Bytes::new())
        });
        let err =
            run(handler, Some(Instant::now() + Duration::from_millis(50)), None).await.expect_err("deadline");
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }
}
