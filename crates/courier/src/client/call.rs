//! One call as everything below the stubs sees it ([`Call`]), and its
//! answer ([`Outcome`]), whatever protocol carries it.
//!
//! A call is described once, by the channel, and answered once, by an
//! endpoint (or by a layer that answers in its place): layers, the
//! balancer and both protocols' endpoints pass the same two values.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::resilience::retry::Retry;
use crate::status::{Code, Status};

/// Writes a call's arguments in the codec the endpoint carries the call in
/// (see [`Call::codec`]), straight into the endpoint's buffer: the native
/// endpoint hands it the connection's write queue, so the body is never
/// copied.
pub(crate) type EncodeBody<'a> = &'a (dyn Fn(Codec, &mut BytesMut) -> Result<(), Status> + Sync);

/// Whether the caller waits for a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallKind {
    /// A request and its reply.
    Unary,
    /// A request with no reply: done once it is on its way (gRPC has no
    /// such calls, so over gRPC it is a unary call nobody waits for).
    OneWay,
}

/// One outgoing call: what [`Layer`](super::Layer)s see and may change.
///
/// The request metadata starts as the caller's
/// [`CallOptions`](super::CallOptions) metadata and is copied only when a
/// layer changes it.
pub struct Call<'a> {
    pub(crate) method: &'a str,
    pub(crate) kind: CallKind,
    pub(crate) codec: Codec,
    pub(crate) metadata: Cow<'a, Metadata>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) hash_key: Option<u64>,
    pub(crate) retry: Retry,
    pub(crate) body: EncodeBody<'a>,
}

impl Call<'_> {
    /// The full method name, `Service.Method`.
    pub fn method(&self) -> &str {
        self.method
    }

    /// Unary or one-way.
    pub fn kind(&self) -> CallKind {
        self.kind
    }

    /// The codec the caller asked for. An endpoint may carry the call in
    /// another: gRPC turns the binary codec into JSON.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The request metadata (headers) the call will carry.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The request metadata, to add, replace or remove headers.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        self.metadata.to_mut()
    }

    /// When the caller stops waiting: its timeout, or, for a call made from
    /// a handler, the deadline of the call being served if that is sooner.
    /// Fixed when the call starts, before any layer runs; the time layers
    /// take counts.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (`None` without one; zero once passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// Whether the method is safe to run twice, so a discovered channel may
    /// try it on another instance after losing a connection mid-call.
    pub fn is_idempotent(&self) -> bool {
        self.retry == Retry::IfLost
    }
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("kind", &self.kind)
            .field("codec", &self.codec)
            .field("metadata", &*self.metadata)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How a call ended: its encoded result or the status it failed with, and
/// the response metadata the server sent back (empty for one-way calls and
/// failures that never reached a server).
#[derive(Clone, Debug)]
pub struct Outcome {
    result: Result<Bytes, Status>,
    metadata: Metadata,
    /// The codec `result`'s body is in.
    codec: Codec,
}

impl Outcome {
    /// A server's answer, carried in `codec`.
    pub(crate) fn answer(result: Result<Bytes, Status>, metadata: Metadata, codec: Codec) -> Outcome {
        Outcome { result, metadata, codec }
    }

    /// An answer given in place of the server's (a fallback), its body in
    /// `codec`.
    pub fn answered(body: Bytes, codec: Codec) -> Outcome {
        Outcome { result: Ok(body), metadata: Metadata::new(), codec }
    }

    /// A one-way call on its way.
    pub(crate) fn sent(codec: Codec) -> Outcome {
        Outcome { result: Ok(Bytes::new()), metadata: Metadata::new(), codec }
    }

    /// The encoded result, or the status the call failed with.
    pub fn result(&self) -> &Result<Bytes, Status> {
        &self.result
    }

    /// The status the call failed with, if it failed.
    pub fn status(&self) -> Option<&Status> {
        self.result.as_ref().err()
    }

    /// `Code::Ok` for a success, otherwise the failure's code.
    pub fn code(&self) -> Code {
        self.result.as_ref().map_or_else(Status::code, |_| Code::Ok)
    }

    /// The response metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The response metadata, to change what callers further out see.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// The result, dropping the metadata.
    pub fn into_result(self) -> Result<Bytes, Status> {
        self.result
    }

    /// The result and the codec its body is in.
    pub(crate) fn into_reply(self) -> Result<(Bytes, Codec), Status> {
        let codec = self.codec;
        self.result.map(|body| (body, codec))
    }
}

impl From<Status> for Outcome {
    /// A failure with no response metadata: what a layer returns to reject
    /// a call.
    fn from(status: Status) -> Outcome {
        Outcome { result: Err(status), metadata: Metadata::new(), codec: Codec::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(metadata: &'a Metadata, body: EncodeBody<'a>) -> Call<'a> {
        Call {
            method: "S.M",
            kind: CallKind::Unary,
            codec: Codec::Binary,
            metadata: Cow::Borrowed(metadata),
            deadline: None,
            timeout: None,
            hash_key: None,
            retry: Retry::IfNotSent,
            body,
        }
    }

    #[test]
    fn metadata_is_copied_only_when_changed() {
        let original = Metadata::from_iter([("x-a", "1")]);
        let body = |_: Codec, _: &mut BytesMut| Ok(());
        let mut read = call(&original, &body);
        assert_eq!(read.metadata().get("x-a"), Some("1"));
        assert!(matches!(read.metadata, Cow::Borrowed(_)), "reading copies nothing");
        read.metadata_mut().insert("x-b", "2");
        assert!(matches!(read.metadata, Cow::Owned(_)));
        assert_eq!(read.metadata().get("x-b"), Some("2"));
        assert_eq!(original.get("x-b"), None, "the caller's options are untouched");
    }

    #[test]
    fn an_outcome_reports_its_code() {
        let ok = Outcome::answer(Ok(Bytes::from_static(b"x")), Metadata::new(), Codec::Json);
        assert_eq!(ok.code(), Code::Ok);
        assert!(ok.status().is_none());
        assert_eq!(ok.into_reply().map(|(_, codec)| codec).ok(), Some(Codec::Json));
        let denied = Outcome::from(Status::new(Code::PermissionDenied, "no"));
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(denied.status().map(Status::message), Some("no"));
        assert!(denied.metadata().is_empty());
    }
}
