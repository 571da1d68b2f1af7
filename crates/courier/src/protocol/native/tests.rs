use std::time::Duration;

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;

fn request_frame(call_id: u32, method: &str, headers: &[(String, String)], body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    let mut frame = FrameEncoder::begin(&mut buf, FrameKind::Request, 1, call_id);
    RequestHead::encode(
        &mut buf,
        method,
        Some(Duration::from_millis(50)),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    frame.end_meta(&buf);
    buf.extend_from_slice(body);
    assert!(frame.finish(&mut buf, DEFAULT_MAX_FRAME_SIZE).is_ok());
    buf
}

#[test]
fn preface_is_checked_byte_by_byte() {
    assert_eq!(check_preface(&[]), Ok(None));
    assert_eq!(check_preface(&PREFACE[..3]), Ok(None));
    assert_eq!(check_preface(&PREFACE), Ok(Some(())));
    assert!(matches!(check_preface(b"GET / HTTP/1.1"), Err(FrameError::BadPreface(_))));
    // A wrong first byte is rejected without waiting for the rest.
    assert!(matches!(check_preface(b"G"), Err(FrameError::BadPreface(_))));
    let mut newer = PREFACE;
    newer[5] = 9;
    assert_eq!(check_preface(&newer), Err(FrameError::UnsupportedVersion(9)));
}

#[test]
fn request_round_trips_and_leaves_following_bytes() {
    let headers = vec![("trace-id".to_owned(), "abc".to_owned())];
    let mut buf = request_frame(7, "Calculator.Add", &headers, b"body");
    buf.extend_from_slice(&[1, 2, 3]); // the start of the next frame
    let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    let frame = decoder.decode(&mut buf).ok().flatten().expect("a whole frame");
    assert_eq!(frame.header.kind, FrameKind::Request);
    assert_eq!(frame.header.call_id, 7);
    assert_eq!(frame.header.codec, 1);
    assert_eq!(&frame.body[..], b"body");
    let head = RequestHead::decode(&frame.meta).expect("valid metadata");
    assert_eq!(head.method, "Calculator.Add");
    assert_eq!(head.deadline, Some(Duration::from_millis(50)));
    assert_eq!(head.headers.collect::<Vec<_>>(), vec![("trace-id", "abc")]);
    assert_eq!(&buf[..], &[1, 2, 3]);
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let whole = request_frame(1, "Echo.Echo", &[], &[9; 100]);
    let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    for cut in [0, 1, HEADER_LEN - 1, HEADER_LEN, whole.len() - 1] {
        let mut buf = BytesMut::from(&whole[..cut]);
        assert_eq!(decoder.decode(&mut buf), Ok(None), "cut at {cut}");
        assert_eq!(buf.len(), cut, "nothing consumed at cut {cut}");
    }
}

#[test]
fn oversized_header_is_rejected_before_allocating() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&u32::MAX.to_be_bytes());
    buf.extend_from_slice(&[FrameKind::Request as u8, 0, 1, 0]);
    buf.extend_from_slice(&42_u32.to_be_bytes());
    buf.extend_from_slice(&0_u32.to_be_bytes());
    let capacity_before = buf.capacity();
    let err = FrameDecoder::new(1024).decode(&mut buf).expect_err("too large");
    assert_eq!(
        err,
        FrameError::TooLarge {
            call_id: 42,
            kind: FrameKind::Request as u8,
            size: u64::from(u32::MAX),
            limit: 1024
        }
    );
    assert_eq!(buf.capacity(), capacity_before, "no buffer growth for a rejected frame");
    assert!(err.to_string().contains("exceeds the limit of 1024 bytes"));
}

#[test]
fn a_large_claimed_frame_grows_the_buffer_only_as_bytes_arrive() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&(10_u32 << 20).to_be_bytes());
    buf.extend_from_slice(&[FrameKind::Request as u8, 0, 1, 0]);
    buf.extend_from_slice(&1_u32.to_be_bytes());
    buf.extend_from_slice(&0_u32.to_be_bytes());
    assert_eq!(FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE).decode(&mut buf), Ok(None));
    assert!(buf.capacity() < 256 * 1024, "16 header bytes reserved {} bytes", buf.capacity());
}

#[test]
fn encoder_refuses_oversized_frames_and_leaves_buffer_clean() {
    let mut buf = BytesMut::from(&b"earlier"[..]);
    let mut frame = FrameEncoder::begin(&mut buf, FrameKind::Request, 0, 3);
    RequestHead::encode(&mut buf, "Echo.Echo", None, std::iter::empty());
    frame.end_meta(&buf);
    buf.extend_from_slice(&[0; 2000]);
    let err = frame.finish(&mut buf, 1000).expect_err("over the limit");
    assert!(matches!(err, FrameError::TooLarge { call_id: 3, limit: 1000, .. }));
    assert_eq!(&buf[..], b"earlier");
}

#[test]
fn header_fields_are_validated() {
    let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    let valid = request_frame(1, "A.B", &[], b"");
    let corrupt = |index: usize, value: u8| {
        let mut buf = valid.clone();
        buf[index] = value;
        decoder.decode(&mut buf)
    };
    assert_eq!(corrupt(4, 0), Err(FrameError::UnknownKind(0)));
    assert_eq!(corrupt(4, 99), Err(FrameError::UnknownKind(99)));
    assert_eq!(corrupt(5, 0x80), Err(FrameError::UnknownFlags(0x80)));
    assert!(matches!(corrupt(7, 1), Err(FrameError::Malformed { .. })));
    // Metadata length larger than the payload.
    assert!(matches!(corrupt(15, 0xff), Err(FrameError::Malformed { .. })));
}

#[test]
fn metadata_lies_are_errors_not_panics() {
    // A method length pointing past the end.
    assert!(RequestHead::decode(&[0x7f, b'a']).is_err());
    // A header count far larger than the bytes that follow.
    assert!(RequestHead::decode(&[1, b'a', 0, 0xff, 0xff, 0x03]).is_err());
    // Invalid UTF-8 in the method name.
    assert!(RequestHead::decode(&[2, 0xff, 0xfe, 0, 0]).is_err());
    // Trailing garbage.
    assert!(RequestHead::decode(&[1, b'a', 0, 0, 0]).is_err());
    assert!(ResponseHead::decode(&[]).is_err());
    assert!(ResponseHead::decode(&[0, 0x02, 0, 0, 0]).is_err());
    assert!(GoAway::decode(&[0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0]).is_err());
}

#[test]
fn response_and_goaway_round_trip() {
    let mut buf = BytesMut::new();
    ResponseHead::encode(&mut buf, 3, true, "bad", b"\x01\x02", [("k", "v")].into_iter());
    let head = ResponseHead::decode(&buf).expect("valid");
    assert_eq!((head.code, head.application_error, head.message), (3, true, "bad"));
    assert_eq!(head.details, b"\x01\x02");
    assert_eq!(head.headers.collect::<Vec<_>>(), vec![("k", "v")]);

    let mut ok = BytesMut::new();
    ResponseHead::encode_ok(&mut ok);
    let head = ResponseHead::decode(&ok).expect("valid");
    assert_eq!((head.code, head.message, head.details.len()), (0, "", 0));

    let goaway = GoAway { last_call_id: 99, code: 8, message: "frame too large" };
    let mut buf = BytesMut::new();
    goaway.encode(&mut buf);
    assert_eq!(GoAway::decode(&buf), Ok(goaway));
}

#[test]
fn control_frames_decode() {
    let mut buf = BytesMut::new();
    encode_ping(&mut buf, FrameKind::Ping, *b"12345678");
    encode_cancel(&mut buf, 77);
    let decoder = FrameDecoder::new(64);
    let ping = decoder.decode(&mut buf).ok().flatten().expect("ping");
    assert_eq!((ping.header.kind, &ping.body[..]), (FrameKind::Ping, &b"12345678"[..]));
    let cancel = decoder.decode(&mut buf).ok().flatten().expect("cancel");
    assert_eq!((cancel.header.kind, cancel.header.call_id), (FrameKind::Cancel, 77));
    assert!(buf.is_empty());
}

fn arb_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((".{0,12}", ".{0,40}"), 0..6)
}

proptest! {
    #[test]
    fn any_request_round_trips(
        call_id in any::<u32>(),
        codec in any::<u8>(),
        method in ".{0,64}",
        deadline_us in prop::option::of(0u64..u64::MAX / 2),
        headers in arb_headers(),
        body in prop::collection::vec(any::<u8>(), 0..512),
        split in any::<prop::sample::Index>(),
    ) {
        let deadline = deadline_us.map(Duration::from_micros);
        let mut buf = BytesMut::new();
        let mut frame = FrameEncoder::begin(&mut buf, FrameKind::Request, codec, call_id);
        RequestHead::encode(&mut buf, &method, deadline, headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        frame.end_meta(&buf);
        buf.extend_from_slice(&body);
        prop_assert!(frame.finish(&mut buf, DEFAULT_MAX_FRAME_SIZE).is_ok());

        // Feed the bytes in two pieces, as a socket might.
        let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        let cut = split.index(buf.len());
        let mut rx = BytesMut::from(&buf[..cut]);
        let first = decoder.decode(&mut rx);
        prop_assert_eq!(first, Ok(None));
        rx.extend_from_slice(&buf[cut..]);
        let decoded = decoder.decode(&mut rx).ok().flatten();
        prop_assert!(decoded.is_some());
        let frame = decoded.unwrap_or_else(|| unreachable!());
        prop_assert_eq!(frame.header.call_id, call_id);
        prop_assert_eq!(frame.header.codec, codec);
        prop_assert_eq!(&frame.body[..], &body[..]);
        let head = RequestHead::decode(&frame.meta);
        prop_assert!(head.is_ok());
        let head = head.unwrap_or_else(|_| unreachable!());
        prop_assert_eq!(head.method, method.as_str());
        prop_assert_eq!(head.deadline, deadline);
        let decoded_headers: Vec<(String, String)> =
            head.headers.map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        prop_assert_eq!(decoded_headers, headers);
        prop_assert!(rx.is_empty());
    }

    #[test]
    fn any_response_round_trips(
        code in any::<u32>(),
        app in any::<bool>(),
        message in ".{0,80}",
        details in prop::collection::vec(any::<u8>(), 0..64),
        headers in arb_headers(),
    ) {
        let mut buf = BytesMut::new();
        ResponseHead::encode(&mut buf, code, app, &message, &details, headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let head = ResponseHead::decode(&buf);
        prop_assert!(head.is_ok());
        let head = head.unwrap_or_else(|_| unreachable!());
        prop_assert_eq!(head.code, code);
        prop_assert_eq!(head.application_error, app);
        prop_assert_eq!(head.message, message.as_str());
        prop_assert_eq!(head.details, &details[..]);
        let decoded_headers: Vec<(String, String)> =
            head.headers.map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        prop_assert_eq!(decoded_headers, headers);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            let _ = RequestHead::decode(&frame.meta);
            let _ = ResponseHead::decode(&frame.meta);
            let _ = GoAway::decode(&frame.meta);
        }
        let _ = check_preface(&bytes);
    }
}
