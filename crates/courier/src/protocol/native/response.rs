//! A reply as a response frame: the encoding every native answer goes
//! through, whatever produced it (a handler, a refusal, a limit).

use bytes::{Bytes, BytesMut};

use super::{FrameEncoder, FrameKind, ResponseHead};
use crate::codec::Codec;
use crate::metadata::Metadata;
use crate::status::{Code, Status};

/// Append a response frame for `outcome`, with the headers the handler set.
/// A result too large for a frame is replaced by a `ResourceExhausted`
/// error, so the caller still hears back.
pub fn encode_response(
    buf: &mut BytesMut,
    call_id: u32,
    codec: Codec,
    outcome: &Result<Bytes, Status>,
    headers: &Metadata,
    max_frame_size: usize,
) {
    let oversized = match outcome {
        Ok(body) => {
            let mut frame = FrameEncoder::begin(buf, FrameKind::Response, codec.id(), call_id);
            if headers.is_empty() {
                ResponseHead::encode_ok(buf);
            } else {
                ResponseHead::encode(buf, 0, false, "", &[], headers.iter());
            }
            frame.end_meta(buf);
            buf.extend_from_slice(body);
            match frame.finish(buf, max_frame_size) {
                Ok(()) => return,
                Err(err) => Status::resource_exhausted(format!("the response is too large to send: {err}")),
            }
        }
        Err(status) => {
            if encode_error(buf, call_id, codec, status, headers, max_frame_size) {
                return;
            }
            Status::resource_exhausted("the error status is too large to send")
        }
    };
    // A short message always fits any sane limit; if even that fails the
    // limit is absurdly small and the caller will see the connection close.
    let _ = encode_error(buf, call_id, codec, &oversized, &Metadata::new(), max_frame_size);
}

fn encode_error(
    buf: &mut BytesMut,
    call_id: u32,
    codec: Codec,
    status: &Status,
    headers: &Metadata,
    max_frame_size: usize,
) -> bool {
    let code = if status.code() == Code::Ok { Code::Unknown } else { status.code() };
    let mut frame = FrameEncoder::begin(buf, FrameKind::Response, codec.id(), call_id);
    ResponseHead::encode(
        buf,
        code.as_u32(),
        status.is_application_error(),
        status.message(),
        status.details(),
        headers.iter(),
    );
    frame.end_meta(buf);
    frame.finish(buf, max_frame_size).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_results_become_resource_exhausted() {
        let mut buf = BytesMut::new();
        encode_response(&mut buf, 9, Codec::Binary, &Ok(Bytes::from(vec![0; 5000])), &Metadata::new(), 1024);
        let frame = super::super::FrameDecoder::new(1024).decode(&mut buf).ok().flatten().expect("a frame");
        assert_eq!(frame.header.call_id, 9);
        let head = ResponseHead::decode(&frame.meta).expect("head");
        assert_eq!(head.code, Code::ResourceExhausted.as_u32());
        assert!(head.message.contains("exceeds the limit of 1024"), "{}", head.message);
    }

    #[test]
    fn an_ok_status_as_an_error_is_sent_as_unknown() {
        let mut buf = BytesMut::new();
        encode_response(
            &mut buf,
            1,
            Codec::Binary,
            &Err(Status::new(Code::Ok, "odd")),
            &Metadata::new(),
            1024,
        );
        let frame = super::super::FrameDecoder::new(1024).decode(&mut buf).ok().flatten().expect("a frame");
        let head = ResponseHead::decode(&frame.meta).expect("head");
        assert_eq!(head.code, Code::Unknown.as_u32());
        assert_eq!(head.message, "odd");
    }
}
