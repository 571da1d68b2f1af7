//! [`CallOptions`]: per-call settings a client carries.

use std::time::Duration;

use crate::codec::Codec;
use crate::metadata::Metadata;

/// Settings applied to each call: timeout, metadata and codec.
///
/// Generated clients hold a `CallOptions`; `with_timeout` and friends return
/// a copy of the client with changed options, leaving the original as it
/// was.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    timeout: Option<Duration>,
    metadata: Metadata,
    codec: Codec,
    hash_key: Option<u64>,
}

impl CallOptions {
    /// Defaults: no timeout, no metadata, the binary codec.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// Fail a call with `DeadlineExceeded` if it takes longer than this. The
    /// time left is sent to the server, which stops work at the deadline.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Remove the timeout.
    #[must_use]
    pub fn without_timeout(mut self) -> CallOptions {
        self.timeout = None;
        self
    }

    /// Add a header sent with every call.
    #[must_use]
    pub fn with_metadata(mut self, key: impl AsRef<str>, value: impl Into<String>) -> CallOptions {
        self.metadata.insert(key, value);
        self
    }

    /// Encode calls with `codec`.
    #[must_use]
    pub fn with_codec(mut self, codec: Codec) -> CallOptions {
        self.codec = codec;
        self
    }

    /// Route by `key` when the channel balances by consistent hash: calls
    /// with equal keys go to the same instance while the set is stable.
    #[must_use]
    pub fn with_hash_key(mut self, key: impl AsRef<[u8]>) -> CallOptions {
        self.hash_key = Some(crate::balance::hash_key(key.as_ref()));
        self
    }

    /// The hashed routing key, if any.
    pub fn hash_key(&self) -> Option<u64> {
        self.hash_key
    }

    /// The timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The headers sent with each call.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }
}
