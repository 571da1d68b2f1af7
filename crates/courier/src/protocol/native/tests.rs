use std::time::Duration;

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;

/// More headers than any test sends: iterators are read at most this far,
/// so a decoder that never stops yielding fails a test instead of hanging it.
const MORE_THAN_SENT: usize = 16;

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
    assert_eq!(head.headers.take(MORE_THAN_SENT).collect::<Vec<_>>(), vec![("trace-id", "abc")]);
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
    assert_eq!(head.headers.take(MORE_THAN_SENT).collect::<Vec<_>>(), vec![("k", "v")]);

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
            head.headers.take(MORE_THAN_SENT).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
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
            head.headers.take(MORE_THAN_SENT).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        prop_assert_eq!(decoded_headers, headers);
    }

    #[test]
    fn any_stream_message_round_trips(
        call_id in any::<u32>(),
        codec in any::<u8>(),
        body in prop::collection::vec(any::<u8>(), 0..2048),
        end in any::<bool>(),
        increment in 1u32..,
    ) {
        let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
        let mut buf = BytesMut::new();
        encode_message(&mut buf, call_id, codec, &body, end, DEFAULT_MAX_FRAME_SIZE).expect("fits");
        encode_window_update(&mut buf, call_id, increment);
        let message = decoder.decode(&mut buf).expect("valid").expect("whole");
        prop_assert_eq!(message.header.kind, FrameKind::Message);
        prop_assert_eq!(message.header.call_id, call_id);
        prop_assert_eq!(message.header.codec, codec);
        prop_assert_eq!(message.header.flags & FLAG_END_STREAM != 0, end);
        prop_assert_eq!(&message.body[..], &body[..]);
        prop_assert!(message.meta.is_empty());
        let grant = decoder.decode(&mut buf).expect("valid").expect("whole");
        prop_assert_eq!(decode_window_update(&grant.body), Ok(increment));
        prop_assert!(buf.is_empty());
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

// ---- Boundaries and encodings pinned down by mutation testing
// (scripts/mutants.sh, docs/MUTANTS.md). ----

#[test]
fn every_frame_kind_round_trips_through_its_header_byte() {
    let kinds = [
        FrameKind::Request,
        FrameKind::Response,
        FrameKind::OneWay,
        FrameKind::Ping,
        FrameKind::Pong,
        FrameKind::Cancel,
        FrameKind::GoAway,
        FrameKind::StreamOpen,
        FrameKind::Message,
        FrameKind::HalfClose,
        FrameKind::WindowUpdate,
    ];
    // The wire values are fixed by version 1 of the protocol: 1 to 11.
    for (kind, byte) in kinds.into_iter().zip(1u8..) {
        assert_eq!(kind as u8, byte);
        assert_eq!(FrameKind::from_u8(byte), Some(kind), "kind byte {byte}");
    }
    assert_eq!(FrameKind::from_u8(0), None);
    assert_eq!(FrameKind::from_u8(12), None);
}

#[test]
fn stream_frames_round_trip_and_only_messages_take_the_end_flag() {
    let decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
    let mut buf = BytesMut::new();
    encode_message(&mut buf, 5, 2, b"one", false, DEFAULT_MAX_FRAME_SIZE).expect("fits");
    encode_message(&mut buf, 5, 2, b"", true, DEFAULT_MAX_FRAME_SIZE).expect("fits");
    encode_window_update(&mut buf, 5, 70_000);
    encode_half_close(&mut buf, 5);
    let first = decoder.decode(&mut buf).expect("valid").expect("whole");
    assert_eq!((first.header.kind, first.header.flags, first.header.codec), (FrameKind::Message, 0, 2));
    assert_eq!(&first.body[..], b"one");
    let last = decoder.decode(&mut buf).expect("valid").expect("whole");
    assert_eq!((last.header.flags, last.body.len()), (FLAG_END_STREAM, 0), "an empty last message");
    let grant = decoder.decode(&mut buf).expect("valid").expect("whole");
    assert_eq!(grant.header.kind, FrameKind::WindowUpdate);
    assert_eq!(decode_window_update(&grant.body), Ok(70_000));
    let close = decoder.decode(&mut buf).expect("valid").expect("whole");
    assert_eq!((close.header.kind, close.header.call_id, close.body.len()), (FrameKind::HalfClose, 5, 0));
    assert!(buf.is_empty());

    // The end flag on any other kind is an unknown flag.
    let mut half_close = BytesMut::new();
    encode_half_close(&mut half_close, 5);
    half_close[5] = FLAG_END_STREAM;
    assert_eq!(decoder.decode(&mut half_close), Err(FrameError::UnknownFlags(FLAG_END_STREAM)));
    let mut message = BytesMut::new();
    encode_message(&mut message, 5, 2, b"x", false, DEFAULT_MAX_FRAME_SIZE).expect("fits");
    message[5] = 0x02;
    assert_eq!(decoder.decode(&mut message), Err(FrameError::UnknownFlags(0x02)));
}

#[test]
fn window_updates_are_four_nonzero_bytes_and_messages_respect_the_limit() {
    assert!(decode_window_update(&[0, 0, 0, 0]).is_err(), "a zero increment");
    assert!(decode_window_update(&[0, 0, 1]).is_err(), "three bytes");
    assert!(decode_window_update(&[0, 0, 0, 1, 0]).is_err(), "five bytes");
    assert_eq!(decode_window_update(&u32::MAX.to_be_bytes()), Ok(u32::MAX));
    let mut buf = BytesMut::from(&b"before"[..]);
    let refused = encode_message(&mut buf, 3, 1, &[0; 11], false, 10);
    assert!(matches!(refused, Err(FrameError::TooLarge { call_id: 3, size: 11, limit: 10, .. })));
    assert_eq!(&buf[..], b"before", "nothing written for a refused message");
}

#[test]
fn a_preface_with_nonzero_reserved_bytes_is_refused() {
    for index in [6, 7] {
        let mut preface = PREFACE;
        preface[index] = 1;
        assert_eq!(check_preface(&preface), Err(FrameError::BadPreface(preface.to_vec())), "byte {index}");
    }
    // Seven good bytes: still waiting for the last one.
    assert_eq!(check_preface(&PREFACE[..7]), Ok(None));
    // Extra bytes after the preface are the first frame, not part of it.
    let mut more = PREFACE.to_vec();
    more.extend_from_slice(&[0xff; 4]);
    assert_eq!(check_preface(&more), Ok(Some(())));
}

/// A header claiming `payload_len` bytes of which `meta_len` are metadata.
fn header(payload_len: u32, meta_len: u32) -> [u8; HEADER_LEN] {
    let mut bytes = [0; HEADER_LEN];
    bytes[..4].copy_from_slice(&payload_len.to_be_bytes());
    bytes[4] = FrameKind::Request as u8;
    bytes[6] = 1;
    bytes[8..12].copy_from_slice(&5_u32.to_be_bytes());
    bytes[12..].copy_from_slice(&meta_len.to_be_bytes());
    bytes
}

#[test]
fn a_payload_of_exactly_the_limit_is_accepted_one_more_is_not() {
    let parsed = FrameHeader::parse(&header(1000, 0), 1000).expect("at the limit");
    assert_eq!(parsed.payload_len, 1000);
    assert!(matches!(
        FrameHeader::parse(&header(1001, 0), 1000),
        Err(FrameError::TooLarge { size: 1001, limit: 1000, call_id: 5, .. })
    ));
}

#[test]
fn metadata_may_fill_the_whole_payload_but_not_exceed_it() {
    let parsed = FrameHeader::parse(&header(10, 10), 1000).expect("all metadata, no body");
    assert_eq!((parsed.meta_len, parsed.payload_len), (10, 10));
    assert_eq!(
        FrameHeader::parse(&header(10, 11), 1000),
        Err(FrameError::malformed("frame header", "metadata length exceeds payload length"))
    );
    // Decoded, such a frame has an empty body.
    let mut buf = BytesMut::from(&header(3, 3)[..]);
    buf.extend_from_slice(b"abc");
    let frame = FrameDecoder::new(1000).decode(&mut buf).expect("valid").expect("whole");
    assert_eq!((&frame.meta[..], frame.body.len()), (&b"abc"[..], 0));
}

#[test]
fn the_decoder_reports_its_limit() {
    assert_eq!(FrameDecoder::new(1234).max_frame_size(), 1234);
}

#[test]
fn the_encoder_accepts_a_payload_of_exactly_the_limit() {
    let mut buf = BytesMut::new();
    let mut frame = FrameEncoder::begin(&mut buf, FrameKind::Response, 2, 9);
    buf.extend_from_slice(&[7; 40]);
    frame.end_meta(&buf);
    buf.extend_from_slice(&[8; 60]);
    assert_eq!(frame.finish(&mut buf, 100), Ok(()));
    // The header is exactly as the format says: lengths big-endian.
    assert_eq!(&buf[..HEADER_LEN], &[0, 0, 0, 100, 2, 0, 2, 0, 0, 0, 0, 9, 0, 0, 0, 40]);
    let decoded = FrameDecoder::new(100).decode(&mut buf).expect("valid").expect("whole");
    assert_eq!((decoded.meta.len(), decoded.body.len()), (40, 60));
}

#[test]
fn a_refused_frame_reports_its_kind_and_call_id() {
    let mut buf = BytesMut::new();
    let frame = FrameEncoder::begin(&mut buf, FrameKind::OneWay, 0, 0x0102_0304);
    buf.extend_from_slice(&[0; 11]);
    assert_eq!(
        frame.finish(&mut buf, 10),
        Err(FrameError::TooLarge {
            call_id: 0x0102_0304,
            kind: FrameKind::OneWay as u8,
            size: 11,
            limit: 10
        })
    );
    assert!(buf.is_empty());
}

#[test]
fn an_abandoned_frame_leaves_only_what_was_there_before() {
    let mut buf = BytesMut::from(&b"earlier"[..]);
    let frame = FrameEncoder::begin(&mut buf, FrameKind::Request, 0, 3);
    buf.extend_from_slice(b"half a request");
    frame.abandon(&mut buf);
    assert_eq!(&buf[..], b"earlier");
}

#[test]
fn control_frames_have_the_documented_encoding() {
    let mut buf = BytesMut::new();
    encode_ping(&mut buf, FrameKind::Pong, *b"abcdefgh");
    assert_eq!(&buf[..HEADER_LEN], &[0, 0, 0, 8, FrameKind::Pong as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&buf[HEADER_LEN..], b"abcdefgh");
    let mut buf = BytesMut::new();
    encode_cancel(&mut buf, 0x0a0b_0c0d);
    assert_eq!(&buf[..], &[0, 0, 0, 0, FrameKind::Cancel as u8, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0]);
}

#[test]
fn a_header_count_larger_than_the_bytes_allow_is_refused_by_name() {
    // Method "a", no deadline, then a count of 2 with only 3 bytes left.
    assert_eq!(
        RequestHead::decode(&[1, b'a', 0, 2, 0, 0, 0]).map(|_| ()),
        Err(FrameError::malformed("header count", "more headers than bytes"))
    );
}

#[test]
fn empty_header_names_and_values_use_the_minimum_two_bytes() {
    // Two headers of an empty name and value: exactly two bytes each, the
    // densest a header block can be.
    let meta = [1, b'a', 0, 2, 0, 0, 0, 0];
    let head = RequestHead::decode(&meta).expect("valid");
    assert_eq!(head.headers.take(MORE_THAN_SENT).collect::<Vec<_>>(), vec![("", ""), ("", "")]);
}

#[test]
fn header_iterators_know_how_many_are_left() {
    let mut buf = BytesMut::new();
    RequestHead::encode(&mut buf, "A.B", None, [("a", "1"), ("b", "2"), ("c", "3")].into_iter());
    let mut headers = RequestHead::decode(&buf).expect("valid").headers;
    assert_eq!(headers.len(), 3);
    assert_eq!(headers.next(), Some(("a", "1")));
    assert_eq!(headers.len(), 2);
    assert_eq!(headers.size_hint(), (2, Some(2)));
    assert_eq!(headers.by_ref().take(MORE_THAN_SENT).count(), 2);
    assert_eq!(headers.len(), 0);
    assert_eq!(headers.next(), None);
}

#[test]
fn deadlines_are_micros_plus_one_and_saturate() {
    let mut buf = BytesMut::new();
    RequestHead::encode(&mut buf, "", Some(Duration::from_micros(127)), std::iter::empty());
    // Empty method, deadline 128 as a two-byte varint, no headers.
    assert_eq!(&buf[..], &[0, 0x80, 0x01, 0]);
    let mut buf = BytesMut::new();
    RequestHead::encode(&mut buf, "", Some(Duration::ZERO), std::iter::empty());
    assert_eq!(&buf[..], &[0, 1, 0], "a zero deadline is not 'no deadline'");
    assert_eq!(RequestHead::decode(&buf).expect("valid").deadline, Some(Duration::ZERO));
    // Exactly u64::MAX microseconds: one more than the format holds (the
    // value is sent plus one), so it is sent as the largest it does hold.
    let mut buf = BytesMut::new();
    RequestHead::encode(&mut buf, "", Some(Duration::from_micros(u64::MAX)), std::iter::empty());
    let head = RequestHead::decode(&buf).expect("valid");
    assert_eq!(head.deadline, Some(Duration::from_micros(u64::MAX - 1)));
    // Far beyond u64 microseconds: the largest deadline the format holds.
    let mut buf = BytesMut::new();
    RequestHead::encode(&mut buf, "", Some(Duration::MAX), std::iter::empty());
    let head = RequestHead::decode(&buf).expect("valid");
    assert_eq!(head.deadline, Some(Duration::from_micros(u64::MAX - 1)));
}

#[test]
fn response_metadata_has_the_documented_encoding() {
    let mut buf = BytesMut::new();
    ResponseHead::encode(&mut buf, 300, true, "no", b"d", [("k", "v")].into_iter());
    // code 300 as a varint, flags bit 0, message, details, one header.
    assert_eq!(&buf[..], &[0xac, 0x02, 1, 2, b'n', b'o', 1, b'd', 1, 1, b'k', 1, b'v']);
    let mut ok = BytesMut::new();
    ResponseHead::encode_ok(&mut ok);
    let mut explicit = BytesMut::new();
    ResponseHead::encode(&mut explicit, 0, false, "", b"", std::iter::empty());
    assert_eq!(ok, explicit);
    // A status code over 32 bits is malformed, not truncated.
    assert!(matches!(
        ResponseHead::decode(&[0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]),
        Err(FrameError::Malformed { what: "status code", .. })
    ));
}

#[test]
fn the_default_frame_limit_is_the_documented_16_mib() {
    // README and `ServerConfig::max_frame_size` both promise 16 MiB.
    assert_eq!(DEFAULT_MAX_FRAME_SIZE, 16 << 20);
}

#[test]
fn a_partial_frame_gets_room_for_the_rest_of_it() {
    // A 32 KiB frame whose header alone has arrived: the decoder reserves
    // the rest, so the next read can complete it without growing again.
    let mut buf = BytesMut::from(&header(32 << 10, 0)[..]);
    assert_eq!(FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE).decode(&mut buf), Ok(None));
    assert!(buf.capacity() >= HEADER_LEN + (32 << 10), "room for {} bytes", buf.capacity());
}
