//! [`NativeEndpoint`]: calls to one address in courier's native protocol,
//! over a small pool of multiplexed connections (`connection`) reopened
//! with jittered backoff (`pool`).
//!
//! This is where the native wire ends: the response frame's head is
//! decoded here, into the call's [`Outcome`], so nothing above sees a
//! frame.

use std::sync::Arc;

use bytes::Bytes;

use super::call::{Call, CallKind, Outcome};
use super::connection::{CallError, Connection};
use super::endpoint::Endpoint;
use super::error::ConnectError;
use super::pool::{Connect, Pool};
use super::settings::ChannelConfig;
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::protocol::native::{Frame, FrameKind, ResponseHead};
use crate::resilience::retry::{AttemptError, MAX_DRAIN_RETRIES};
use crate::service::BoxFuture;
use crate::status::{Code, Status};

/// One address, a pool of native connections to it. Cheap to clone.
#[derive(Clone)]
pub(crate) struct NativeEndpoint {
    pool: Arc<Pool<Connection>>,
}

impl Connect for Connection {
    type Options = ();

    fn connect(
        addr: String,
        config: ChannelConfig,
        (): (),
    ) -> BoxFuture<'static, Result<Connection, ConnectError>> {
        Box::pin(async move { Connection::connect(&addr, &config).await })
    }

    fn is_usable(&self) -> bool {
        Connection::is_usable(self)
    }
}

impl NativeEndpoint {
    /// Open a streaming call.
    pub(crate) async fn open_stream(
        &self,
        call: &super::streams::StreamCall<'_>,
    ) -> Result<super::streams::OpenedStream, AttemptError> {
        for _ in 0..MAX_DRAIN_RETRIES {
            let connection = self.pool.connection().await.map_err(AttemptError::NotSent)?;
            match connection.open_stream(call.method, call.codec, call.deadline, call.metadata).await {
                Ok((sender, receiver)) => {
                    return Ok(super::streams::OpenedStream { sender, receiver, codec: call.codec });
                }
                // The stream-open was never queued: nothing reached the server.
                Err(CallError::Failed(status)) => return Err(AttemptError::NotSent(status)),
                Err(CallError::Unprocessed) => continue,
            }
        }
        Err(AttemptError::NotSent(Status::unavailable(format!(
            "every connection to {} is shutting down",
            self.pool.addr
        ))))
    }

    pub(crate) fn new(addr: String, config: ChannelConfig) -> NativeEndpoint {
        NativeEndpoint { pool: Arc::new(Pool::new(addr, config, ())) }
    }
}

impl Endpoint for NativeEndpoint {
    fn addr(&self) -> &str {
        &self.pool.addr
    }

    fn wire_codec(&self, requested: Codec) -> Codec {
        requested
    }

    async fn connect_now(&self) -> Result<(), ConnectError> {
        self.pool.connect_now().await
    }

    /// Send one call on a connection to this address. Calls the server
    /// provably never processed move to a fresh connection (at most
    /// `MAX_DRAIN_RETRIES` times).
    async fn call(&self, call: &Call<'_>) -> Result<Outcome, AttemptError> {
        let kind = match call.kind {
            CallKind::Unary => FrameKind::Request,
            CallKind::OneWay => FrameKind::OneWay,
        };
        let codec = call.codec;
        let encode_body = |buf: &mut bytes::BytesMut| (call.body)(codec, buf);
        for _ in 0..MAX_DRAIN_RETRIES {
            let connection = self.pool.connection().await.map_err(AttemptError::NotSent)?;
            match connection.call(kind, call.method, codec, call.deadline, &call.metadata, encode_body).await
            {
                Ok(Some(frame)) => return Ok(answer(&frame, codec, call.method)),
                Ok(None) => return Ok(Outcome::sent(codec)),
                Err(CallError::Failed(status)) => return Err(AttemptError::Failed(status)),
                Err(CallError::Unprocessed) => continue,
            }
        }
        Err(AttemptError::NotSent(Status::unavailable(format!(
            "every connection to {} is shutting down",
            self.pool.addr
        ))))
    }
}

/// A response frame as an outcome: the body of a success, or the status
/// the server sent; with the headers it sent back either way.
fn answer(frame: &Frame, codec: Codec, method: &str) -> Outcome {
    let head = match ResponseHead::decode(&frame.meta) {
        Ok(head) => head,
        Err(err) => {
            return Outcome::from(Status::internal(format!("malformed response to {method}: {err}")));
        }
    };
    // A response without headers, the usual case, costs nothing here.
    let metadata = if head.headers.len() == 0 { Metadata::new() } else { head.headers.collect() };
    let result = if head.code != 0 {
        let code = Code::from_u32(head.code);
        let details = Bytes::copy_from_slice(head.details);
        let status = if head.application_error {
            Status::application(code, head.message, details)
        } else {
            Status::new(code, head.message).with_details(details)
        };
        Err(status.with_details_codec(codec))
    } else if frame.header.codec != codec.id() {
        Err(Status::internal(format!(
            "the response to {method} used codec {} but the call used {codec}",
            frame.header.codec
        )))
    } else {
        Ok(frame.body.clone())
    };
    Outcome::answer(result, metadata, codec)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::protocol::native::{DEFAULT_MAX_FRAME_SIZE, FrameDecoder, FrameEncoder};

    /// A response frame as the server encodes it.
    fn response(codec: Codec, write_meta: impl FnOnce(&mut BytesMut), body: &[u8]) -> Frame {
        let mut buf = BytesMut::new();
        let mut frame = FrameEncoder::begin(&mut buf, FrameKind::Response, codec.id(), 7);
        write_meta(&mut buf);
        frame.end_meta(&buf);
        buf.extend_from_slice(body);
        frame.finish(&mut buf, DEFAULT_MAX_FRAME_SIZE).expect("fits");
        FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE).decode(&mut buf).expect("decodes").expect("whole")
    }

    #[test]
    fn a_success_carries_its_body_and_response_headers() {
        let frame = response(
            Codec::Json,
            |buf| ResponseHead::encode(buf, 0, false, "", b"", [("x-served-by", "a")].into_iter()),
            b"42",
        );
        let outcome = answer(&frame, Codec::Json, "S.M");
        assert_eq!(outcome.metadata().get("x-served-by"), Some("a"));
        assert_eq!(outcome.into_reply().ok(), Some((Bytes::from_static(b"42"), Codec::Json)));
    }

    #[test]
    fn an_error_keeps_its_details_and_notes_their_codec() {
        let frame = response(
            Codec::Binary,
            |buf| ResponseHead::encode(buf, 2, true, "division by zero", b"\x00", std::iter::empty()),
            b"",
        );
        let outcome = answer(&frame, Codec::Binary, "S.M");
        let status = outcome.status().expect("an error");
        assert_eq!((status.code(), status.message()), (Code::Unknown, "division by zero"));
        assert!(status.is_application_error());
        assert_eq!(status.details().as_ref(), b"\x00");
        assert_eq!(status.details_codec(), Some(Codec::Binary));
        assert!(outcome.metadata().is_empty());
    }

    #[test]
    fn a_reply_in_another_codec_or_with_a_malformed_head_is_internal() {
        let ok = |buf: &mut BytesMut| ResponseHead::encode_ok(buf);
        let outcome = answer(&response(Codec::Json, ok, b"1"), Codec::Binary, "S.M");
        let status = outcome.status().expect("an error");
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("used codec"), "{status}");

        let garbage = |buf: &mut BytesMut| buf.extend_from_slice(&[0, 0xff]);
        let outcome = answer(&response(Codec::Binary, garbage, b""), Codec::Binary, "S.M");
        let status = outcome.status().expect("an error");
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().starts_with("malformed response to S.M"), "{status}");
    }
}
