//! Calling courier services from plain synchronous code.
//!
//! A [`Channel`] here owns a small tokio runtime (one worker thread) that
//! runs the connection's reader and writer; each call blocks the calling
//! thread until its reply arrives. Generated `XxxBlockingClient` types wrap
//! this, so `fn main()` needs no async runtime at all:
//!
//! ```no_run
//! #[courier::service]
//! trait Calculator {
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let calc = CalculatorBlockingClient::connect("127.0.0.1:9000")?;
//!     let sum = calc.add(1, 2)?;
//!     assert_eq!(sum, 3);
//!     Ok(())
//! }
//! ```
//!
//! Blocking calls also work on threads that belong to an async runtime,
//! such as `tokio::task::spawn_blocking` threads: the call then runs on the
//! client's own runtime while the calling thread waits on a plain channel.
//! (Calling from inside an async task works too, but blocks that task's
//! worker thread for the length of the call, as any blocking code would.)

use std::future::Future;
use std::sync::Arc;

use crate::client::{self, ConnectError};
use crate::status::Status;

/// Owns the runtime that drives blocking clients' connections.
#[derive(Clone, Debug)]
pub struct Runtime {
    inner: Arc<OwnedRuntime>,
}

#[derive(Debug)]
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        // `Runtime`'s own drop blocks, which panics inside async code; the
        // background shutdown is safe anywhere.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Runtime {
    /// Start a runtime with one worker thread.
    pub fn new() -> Result<Runtime, ConnectError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("courier-blocking")
            .enable_all()
            .build()
            .map_err(ConnectError::Runtime)?;
        Ok(Runtime { inner: Arc::new(OwnedRuntime(Some(runtime))) })
    }

    /// Run `future` to completion, blocking the calling thread. Returns
    /// `None` if the runtime has shut down.
    pub fn run<F>(&self, future: F) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self.inner.0.as_ref()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Some(runtime.block_on(future));
        }
        // On a thread of some other runtime, where `block_on` is refused:
        // run on ours and wait with a primitive that blocks nothing else.
        let (done, result) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = done.send(future.await);
        });
        result.recv().ok()
    }
}

/// A [`client::Channel`] with its own runtime, for synchronous callers.
#[derive(Clone, Debug)]
pub struct Channel {
    channel: client::Channel,
    runtime: Runtime,
}

impl Channel {
    /// Connect to `addr` now, on a new runtime.
    pub fn connect(addr: impl Into<String>) -> Result<Channel, ConnectError> {
        Channel::from_builder(client::Channel::builder(addr))
    }

    /// Connect with a configured builder.
    pub fn from_builder(builder: client::ChannelBuilder) -> Result<Channel, ConnectError> {
        let runtime = Runtime::new()?;
        let channel = runtime.run(builder.connect()).ok_or_else(runtime_gone)??;
        Ok(Channel { channel, runtime })
    }

    /// A channel that connects on its first call.
    pub fn lazy(addr: impl Into<String>) -> Result<Channel, ConnectError> {
        let runtime = Runtime::new()?;
        // The lazy channel spawns its connect tasks on whichever runtime
        // the call runs in, which is always ours (see `call`).
        Ok(Channel { channel: client::Channel::lazy(addr), runtime })
    }

    /// The async channel inside (shares connections with this one).
    pub fn as_async(&self) -> &client::Channel {
        &self.channel
    }

    /// Block on a call made through the async channel.
    pub fn call<T: Send + 'static>(
        &self,
        call: impl Future<Output = Result<T, Status>> + Send + 'static,
    ) -> Result<T, Status> {
        self.runtime.run(call).unwrap_or_else(|| Err(Status::from(runtime_gone())))
    }
}

fn runtime_gone() -> ConnectError {
    ConnectError::Runtime(std::io::Error::other("the blocking client's runtime has shut down"))
}

impl From<ConnectError> for std::io::Error {
    fn from(err: ConnectError) -> std::io::Error {
        std::io::Error::other(err)
    }
}
