//! Unit tests of the gob codec (sans-IO). The Go-produced streams below
//! were written by Go 1.19's encoding/gob (the live round trips against Go
//! are in `tests/gob_codec.rs`).

use std::collections::{BTreeMap, HashMap};

use bytes::BytesMut;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::wire::{Peek, Reader, peek_uint, put_float, put_int, put_uint, unzigzag, zigzag};
use super::*;
use crate::codec::Codec;
use bytes::Bytes;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex"))
        .collect()
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    to_message(value).expect("encode")
}

fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> T {
    from_message(&encode(value)).expect("decode")
}

/// Every value of a stream, as self-contained messages.
fn split(stream: &[u8], limits: Limits) -> Result<Vec<Bytes>, GobError> {
    let mut decoder = StreamDecoder::new(limits);
    let mut buf = BytesMut::from(stream);
    let mut values = Vec::new();
    while let Some(value) = decoder.next_value(&mut buf)? {
        values.push(value);
    }
    if !buf.is_empty() {
        return Err(GobError::Truncated("the stream (bytes left over)"));
    }
    Ok(values)
}

// Go: type Point struct{ X, Y int }; Point{22, 33} (doc.go's example).
const POINT: &str = "1f ff 81 03 01 01 05 50 6f 69 6e 74 01 ff 82 00
    01 02 01 01 58 01 04 00 01 01 59 01 04 00 00 00
    07 ff 82 01 2c 01 42 00";

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i64,
    y: i64,
}

#[test]
fn primitives_match_the_examples_of_doc_go() {
    let uint = |v: u64| {
        let mut out = Vec::new();
        put_uint(&mut out, v);
        out
    };
    assert_eq!(uint(0), [0x00]);
    assert_eq!(uint(7), [0x07]);
    assert_eq!(uint(256), [0xfe, 0x01, 0x00]);
    let mut out = Vec::new();
    put_int(&mut out, -129);
    assert_eq!(out, [0xfe, 0x01, 0x01]);
    let mut out = Vec::new();
    put_float(&mut out, 17.0);
    assert_eq!(out, [0xfe, 0x31, 0x40]);
    // A count byte claiming nine bytes is an error, not a read past eight.
    assert!(peek_uint(&[0xf7, 1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
    assert!(peek_uint(&[0x80]).is_err());
    assert!(matches!(peek_uint(&[0xfe, 0x01]), Ok(Peek::Incomplete)));
}

proptest! {
    #[test]
    fn uints_ints_and_floats_round_trip(u in any::<u64>(), i in any::<i64>(), f in any::<f64>()) {
        let mut out = Vec::new();
        put_uint(&mut out, u);
        put_int(&mut out, i);
        put_float(&mut out, f);
        let mut message = Vec::new();
        wire::put_message(&mut message, &out);
        let mut r = Reader::new(&message, usize::MAX, usize::MAX);
        r.next_message().expect("frame");
        prop_assert_eq!(r.read_uint("u").expect("uint"), u);
        prop_assert_eq!(r.read_int("i").expect("int"), i);
        prop_assert_eq!(r.read_float("f").expect("float").to_bits(), f.to_bits());
        prop_assert!(r.at_message_end());
        prop_assert_eq!(unzigzag(zigzag(i)), i);
    }

    #[test]
    fn serialize_then_deserialize_gives_the_value_back(
        id in any::<u64>(),
        delta in any::<i32>(),
        small in any::<i8>(),
        name in ".{0,12}",
        ratio in any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan()),
        flags in proptest::collection::vec(any::<bool>(), 0..5),
        bytes in proptest::collection::vec(any::<u8>(), 0..20),
        scores in proptest::collection::btree_map(".{0,4}", any::<i64>(), 0..4),
        nested in proptest::option::of((any::<u16>(), ".{0,3}")),
    ) {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Inner { count: u16, label: String }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Record {
            id: u64, delta: i32, small: i8, name: String, ratio: f64, flags: Vec<bool>,
            bytes: Vec<u8>, scores: BTreeMap<String, i64>, nested: Option<Inner>, inner: Inner,
        }
        let nested = nested.map(|(count, label)| Inner { count, label });
        // Some(v) with v all zero is not sent (Go omits a pointer to zero
        // only for scalars; a struct is sent): it comes back as Some.
        let record = Record {
            id, delta, small, name, ratio, flags, bytes, scores, nested,
            inner: Inner { count: 3, label: String::new() },
        };
        prop_assert_eq!(round_trip(&record), record);
    }
}

#[test]
fn the_point_of_doc_go_encodes_to_exactly_its_bytes() {
    let message = encode(&Point { x: 22, y: 33 });
    assert_eq!(message, hex(POINT));
    assert_eq!(from_message::<Point>(&hex(POINT)).expect("decode"), Point { x: 22, y: 33 });

    // On a stream, the second value is the value alone.
    let mut encoder = StreamEncoder::new();
    let mut out = BytesMut::new();
    encoder.write_value(&message, &mut out).expect("first");
    assert_eq!(&out[..], &hex(POINT)[..]);
    out.clear();
    encoder.write_value(&message, &mut out).expect("second");
    assert_eq!(&out[..], &hex("07 ff 82 01 2c 01 42 00")[..]);
}

#[test]
fn a_top_level_integer_is_a_singleton_as_doc_go_shows() {
    assert_eq!(encode(&3_i64), hex("03 04 00 06"));
    assert_eq!(from_message::<i64>(&hex("03 04 00 06")).expect("decode"), 3);
    assert_eq!(from_message::<u8>(&hex("03 04 00 06")).expect("int into u8"), 3);
}

#[test]
fn every_codec_entry_point_uses_self_contained_messages() {
    assert_eq!(Codec::from_id(4), Some(Codec::Gob));
    assert_eq!(Codec::Gob.name(), "gob");
    let mut buf = BytesMut::from(&b"head"[..]);
    Codec::Gob.encode(&Point { x: 1, y: -1 }, &mut buf).expect("encode");
    assert_eq!(&buf[..4], b"head");
    assert_eq!(Codec::Gob.decode::<Point>(&buf[4..]).expect("decode"), Point { x: 1, y: -1 });
    let err = Codec::Gob.decode::<Point>(b"\x03\x04").expect_err("truncated");
    assert!(matches!(err, CodecError::Decode { codec: "gob", .. }), "{err}");
}

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Everything {
    flag: bool,
    i8: i8,
    i16: i16,
    i32: i32,
    i64: i64,
    isize: isize,
    u8: u8,
    u16: u16,
    u32: u32,
    u64: u64,
    usize: usize,
    f32: f32,
    f64: f64,
    c: Complex,
    text: String,
    letter: char,
    bytes: Vec<u8>,
    list: Vec<String>,
    map: HashMap<String, i64>,
    pair: (i32, i32),
    maybe: Option<Box<Point>>,
    point: Point,
    unit: (),
    #[serde(rename = "UserID")]
    user_id: u64,
}

fn everything() -> Everything {
    Everything {
        flag: true,
        i8: -8,
        i16: -16,
        i32: -32,
        i64: i64::MIN,
        isize: -1,
        u8: 8,
        u16: 16,
        u32: 32,
        u64: u64::MAX,
        usize: 7,
        f32: 1.5,
        f64: -2.25,
        c: Complex { re: 1.0, im: -1.0 },
        text: "héllo".into(),
        letter: 'λ',
        bytes: vec![0, 1, 255],
        list: vec!["a".into(), String::new()],
        map: [("k".to_owned(), 1), ("z".to_owned(), 0)].into(),
        pair: (3, 4),
        maybe: Some(Box::new(Point { x: 0, y: 9 })),
        point: Point { x: 5, y: 0 },
        unit: (),
        user_id: 42,
    }
}

#[test]
fn every_kind_of_value_round_trips() {
    assert_eq!(round_trip(&everything()), everything());
    assert_eq!(round_trip(&Everything::default()), Everything::default());
    assert_eq!(round_trip(&vec![1_i64, -2, 3]), vec![1, -2, 3]);
    assert_eq!(round_trip(&"text".to_owned()), "text");
    assert!(round_trip(&true));
    assert_eq!(round_trip(&'x'), 'x');
    assert_eq!(round_trip(&Complex { re: 0.5, im: 2.0 }), Complex { re: 0.5, im: 2.0 });
    assert_eq!(round_trip(&[1_u32, 2, 3]), [1, 2, 3]);
    let nested = vec![vec![1_i64], vec![], vec![2, 3]];
    assert_eq!(round_trip(&nested), nested);
    let map: BTreeMap<i64, Vec<Point>> = [(1, vec![Point { x: 1, y: 2 }]), (-1, Vec::new())].into();
    assert_eq!(round_trip(&map), map);
    round_trip(&());
}

#[test]
fn zero_fields_are_omitted_and_decode_as_zero_without_serde_default() {
    // Everything zero but the nested struct and array: those are sent.
    let message = encode(&Everything::default());
    let sent: serde_json::Value = from_message(&message).expect("any");
    let keys: Vec<&str> = sent.as_object().expect("a struct").keys().map(String::as_str).collect();
    // `letter` is '\0', a one-byte string: not zero.
    assert_eq!(keys, ["Letter", "Pair", "Point", "Unit"], "{sent}");
    assert_eq!(sent["Point"], json!({}));

    // A struct the wire carries nothing of.
    #[derive(Debug, PartialEq, Deserialize)]
    struct Wide {
        a: i64,
        b: String,
        c: Vec<Point>,
        d: Option<u8>,
        e: Point,
        f: (u8, bool),
        g: HashMap<String, String>,
        h: Shade,
        i: Complex,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    enum Shade {
        Dark,
        Light,
    }
    let wide: Wide = from_message(&encode(&Point { x: 0, y: 0 })).expect("all zero");
    assert_eq!(
        wide,
        Wide {
            a: 0,
            b: String::new(),
            c: Vec::new(),
            d: None,
            e: Point { x: 0, y: 0 },
            f: (0, false),
            g: HashMap::new(),
            h: Shade::Dark,
            i: Complex::default(),
        }
    );
    let _ = Shade::Light;
}

#[test]
fn a_missing_field_is_zero_even_where_serde_has_a_default() {
    fn seven() -> i64 {
        7
    }
    #[derive(Debug, Deserialize)]
    struct WithDefault {
        x: i64,
        #[serde(default = "seven")]
        y: i64,
    }
    // Go sent y = 0, which gob cannot tell from "absent": zero wins.
    let decoded: WithDefault = from_message(&encode(&Point { x: 1, y: 0 })).expect("decode");
    assert_eq!((decoded.x, decoded.y), (1, 0));
    // A value that is there wins, of course.
    let decoded: WithDefault = from_message(&encode(&Point { x: 1, y: 2 })).expect("decode");
    assert_eq!(decoded.y, 2);
}

#[test]
fn a_slice_of_structs_defines_every_field_any_element_has() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Item {
        name: String,
        tags: Vec<String>,
        score: Option<f64>,
    }
    let items = vec![
        Item { name: "a".into(), tags: Vec::new(), score: None },
        Item { name: String::new(), tags: vec!["x".into()], score: Some(0.5) },
    ];
    let message = encode(&items);
    assert_eq!(round_trip(&items), items);
    // The element type lists all three fields.
    let decoded: serde_json::Value = from_message(&message).expect("any");
    assert_eq!(decoded, json!([{"Name": "a"}, {"Tags": ["x"], "Score": 0.5}]));
    let mut decoder = StreamDecoder::new(Limits::default());
    let value = decoder.next_value(&mut BytesMut::from(&message[..])).expect("split").expect("a value");
    assert_eq!(value, message);
    // A field no element shows is left out of the definition.
    let items = vec![Item { name: "only".into(), tags: Vec::new(), score: None }];
    let message = encode(&items);
    assert!(!contains(&message, b"Tags") && !contains(&message, b"Score"), "{message:x?}");
    assert_eq!(round_trip(&items), items);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[test]
fn field_names_become_go_names_and_match_back_loosely() {
    #[derive(Serialize)]
    struct Rust {
        user_id: u64,
        x: i64,
        #[serde(rename = "HTTPCode")]
        code: i64,
    }
    let message = encode(&Rust { user_id: 1, x: 2, code: 3 });
    let fields: serde_json::Value = from_message(&message).expect("any");
    assert_eq!(fields, json!({"UserId": 1, "X": 2, "HTTPCode": 3}));

    // Go's names as Go spells them.
    #[derive(Serialize)]
    #[allow(non_snake_case)]
    struct Go {
        UserID: u64,
        X: i64,
        Extra: String,
    }
    #[derive(Debug, PartialEq, Deserialize)]
    struct Mine {
        user_id: u64,
        x: i64,
        missing: bool,
    }
    let mine: Mine =
        from_message(&encode(&Go { UserID: 9, X: -1, Extra: "skipped".into() })).expect("decode");
    assert_eq!(mine, Mine { user_id: 9, x: -1, missing: false });
}

#[test]
fn integers_are_range_checked_and_signedness_converts_when_it_fits() {
    assert!(from_message::<i8>(&encode(&300_i64)).is_err());
    assert!(from_message::<u32>(&encode(&-1_i64)).is_err());
    assert_eq!(from_message::<u32>(&encode(&5_i64)).expect("int into u32"), 5);
    assert_eq!(from_message::<i64>(&encode(&5_u64)).expect("uint into i64"), 5);
    assert!(from_message::<i64>(&encode(&u64::MAX)).is_err());
    assert!(from_message::<f32>(&encode(&1e300_f64)).is_err());
    assert!(from_message::<String>(&encode(&1_i64)).is_err());
    assert!(from_message::<i64>(&encode(&1.0_f64)).is_err());
    assert_eq!(from_message::<char>(&encode(&0x41_i64)).expect("a rune"), 'A');
    assert!(from_message::<char>(&encode(&"ab")).is_err());
}

#[test]
fn enums_are_strings_or_one_field_structs() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum CalcError {
        DivisionByZero,
        Overflow { limit: i64 },
        Code(u32),
        Pair(i64, i64),
    }
    let message = encode(&CalcError::DivisionByZero);
    assert_eq!(from_message::<String>(&message).expect("a string"), "DivisionByZero");
    for value in [
        CalcError::DivisionByZero,
        CalcError::Overflow { limit: 0 },
        CalcError::Overflow { limit: 9 },
        CalcError::Code(0),
        CalcError::Pair(1, 2),
    ] {
        assert_eq!(round_trip(&value), value);
    }
    // Mixed in one sequence: the unit variant becomes a struct like the rest.
    let mixed = vec![CalcError::Code(3), CalcError::DivisionByZero, CalcError::Overflow { limit: 1 }];
    assert_eq!(round_trip(&mixed), mixed);
    // A Go iota constant.
    assert_eq!(from_message::<CalcError>(&encode(&0_i64)).expect("index"), CalcError::DivisionByZero);
    let any: serde_json::Value = from_message(&encode(&CalcError::Code(7))).expect("any");
    assert_eq!(any, json!({"Code": 7}));
}

#[test]
fn none_and_conflicting_shapes_are_explained() {
    let err = to_message(&None::<i64>).expect_err("top-level None");
    assert!(err.to_string().contains("top-level"), "{err}");
    let err = to_message(&vec![Some(1_i64), None]).expect_err("None element");
    assert!(err.to_string().contains("element"), "{err}");
    let err = to_message(&(1_i64, "two")).expect_err("mixed tuple");
    assert!(err.to_string().contains("cannot be one gob type"), "{err}");
    let values = vec![json!(1), json!("a")];
    assert!(to_message(&values).is_err());
    // Signed and unsigned numbers of serde_json::Value merge as int.
    let numbers = vec![json!(1), json!(-1)];
    assert_eq!(round_trip(&numbers), numbers);
}

#[test]
fn an_empty_top_level_vec_is_sent_as_a_slice_of_int() {
    let message = encode(&Vec::<i64>::new());
    assert_eq!(from_message::<Vec<i64>>(&message).expect("decode"), Vec::<i64>::new());
    // The definition is Go's []int: a slice (wireType field 1) of int (2).
    assert!(contains(&message, &hex("02 01 01 05 5b 5d 69 6e 74 01 ff 82 00 01 04 00 00")), "{message:x?}");
    assert_eq!(round_trip(&HashMap::<String, i64>::new()), HashMap::new());
}

#[test]
fn deserialize_any_shows_the_wire_as_json() {
    let value: serde_json::Value = from_message(&encode(&everything())).expect("any");
    assert_eq!(value["C"], json!({"re": 1.0, "im": -1.0}));
    assert_eq!(value["Bytes"], json!([0, 1, 255]));
    assert_eq!(value["UserID"], json!(42));
    assert_eq!(value["Maybe"], json!({"Y": 9}));
    assert_eq!(value["Letter"], json!("λ"));
}

#[test]
fn a_struct_nesting_beyond_the_limit_is_refused_both_ways() {
    #[derive(Debug, Serialize, Deserialize)]
    struct Link {
        next: Option<Box<Link>>,
        value: i64,
    }
    let mut chain = Link { next: None, value: 1 };
    for _ in 0..100 {
        chain = Link { next: Some(Box::new(chain)), value: 1 };
    }
    let err = to_message(&chain).expect_err("too deep");
    assert!(matches!(err, GobError::TooDeep { .. }), "{err}");

    let mut chain = Link { next: None, value: 1 };
    for _ in 0..10 {
        chain = Link { next: Some(Box::new(chain)), value: 1 };
    }
    let message = encode(&chain);
    let limits = Limits { max_depth: 5, ..Limits::default() };
    let err = from_message_with_limits::<Link>(&message, limits).expect_err("too deep");
    assert!(matches!(err, GobError::TooDeep { max: 5 }), "{err}");
    from_message_with_limits::<Link>(&message, Limits::default()).expect("within the default");
    // A zero value that would never end is refused, not a stack overflow.
    #[derive(Debug, Deserialize)]
    struct Endless {
        _inner: Box<Endless>,
    }
    assert!(matches!(from_message::<Endless>(&encode(&Point { x: 1, y: 1 })), Err(GobError::TooDeep { .. })));
}

#[test]
fn truncated_garbage_and_oversized_input_are_errors() {
    let message = encode(&everything());
    for len in 0..message.len() {
        assert!(from_message::<Everything>(&message[..len]).is_err(), "a prefix of {len} bytes");
        let mut decoder = StreamDecoder::new(Limits::default());
        assert!(
            matches!(decoder.next_value(&mut BytesMut::from(&message[..len])), Ok(None)),
            "a prefix of {len} bytes is incomplete, not an error"
        );
    }
    let mut trailing = message.clone();
    trailing.push(0);
    assert!(from_message::<Everything>(&trailing).is_err());
    for garbage in [&b"\xff\xff\xff\xff\xff\xff"[..], b"\x00", b"\x01\x00", b"\x02\x7f\x00", b"\x80"] {
        assert!(from_message::<serde_json::Value>(garbage).is_err());
        assert!(split(garbage, Limits::default()).is_err(), "{garbage:x?}");
    }
    // A length beyond the limit fails before its bytes are waited for.
    let limits = Limits { max_message: 16, ..Limits::default() };
    let err = split(&hex("fe 10 00"), limits).expect_err("oversized");
    assert!(matches!(err, GobError::MessageTooLarge { len: 4096, max: 16 }), "{err}");
    assert!(from_message_with_limits::<Point>(&hex(POINT), limits).is_err());
    // A count larger than the message is refused before anything is sized.
    let huge = hex("09 0a 00 fc 7f ff ff ff 01 02");
    assert!(from_message::<Vec<u8>>(&huge).is_err());
    assert!(from_message::<Vec<i64>>(&huge).is_err());
}

#[test]
fn duplicate_and_excess_definitions_break_the_stream() {
    let point = hex(POINT);
    let definition = &point[..32];
    let mut twice = definition.to_vec();
    twice.extend_from_slice(definition);
    let err = split(&twice, Limits::default()).expect_err("duplicate");
    assert!(matches!(err, GobError::DuplicateType(65)), "{err}");
    assert!(from_message::<Point>(&[&twice[..], &point[32..]].concat()).is_err());

    let limits = Limits { max_types: 0, ..Limits::default() };
    assert!(matches!(split(&point, limits), Err(GobError::TooManyTypes { max: 0 })));
    // A value of a type never defined.
    assert!(matches!(split(&point[32..], Limits::default()), Err(GobError::UndefinedType(65))));
}

#[test]
fn the_stream_encoder_sends_each_definition_once_and_renumbers() {
    #[derive(Serialize)]
    struct Request {
        service_method: String,
        seq: u64,
    }
    #[derive(Serialize)]
    struct Args {
        a: i64,
        b: i64,
    }
    let mut encoder = StreamEncoder::new();
    let mut out = BytesMut::new();
    // Each message numbers its own types from 65; on the stream they must
    // not collide.
    for seq in 1..=3 {
        encoder
            .write_value(&encode(&Request { service_method: "Arith.Multiply".into(), seq }), &mut out)
            .expect("header");
        encoder.write_value(&encode(&Args { a: 7, b: seq as i64 }), &mut out).expect("body");
        encoder.write_value(&encode(&vec![Point { x: 1, y: 2 }]), &mut out).expect("points");
    }
    // Point (inside the slice) and []Point are new; Args and Request are
    // sent once.
    let definitions = count_definitions(&out);
    assert_eq!(definitions, 4, "{out:x?}");

    let values = split(&out, Limits::default()).expect("a valid stream");
    assert_eq!(values.len(), 9);
    #[derive(Debug, Deserialize, PartialEq)]
    struct RequestIn {
        service_method: String,
        seq: u64,
    }
    let request: RequestIn = from_message(&values[6]).expect("header");
    assert_eq!(request, RequestIn { service_method: "Arith.Multiply".into(), seq: 3 });
    #[derive(Debug, Deserialize, PartialEq)]
    struct ArgsIn {
        a: i64,
        b: i64,
    }
    assert_eq!(from_message::<ArgsIn>(&values[7]).expect("body"), ArgsIn { a: 7, b: 3 });
    let points: Vec<Point> = from_message(&values[8]).expect("points");
    assert_eq!(points, [Point { x: 1, y: 2 }]);
}

fn count_definitions(stream: &[u8]) -> usize {
    let mut r = Reader::new(stream, usize::MAX, usize::MAX);
    let mut count = 0;
    while !r.at_input_end() {
        r.next_message().expect("a message");
        if r.read_int("id").expect("an id") < 0 {
            count += 1;
        }
        while !r.at_message_end() {
            r.read_raw(1, "byte").expect("a byte");
        }
    }
    count
}

#[test]
fn structurally_identical_types_are_reused_and_different_ones_get_fresh_ids() {
    let mut encoder = StreamEncoder::new();
    let mut out = BytesMut::new();
    encoder.write_value(&encode(&Point { x: 1, y: 2 }), &mut out).expect("point");
    #[derive(Serialize)]
    struct Other {
        x: String,
    }
    encoder.write_value(&encode(&Other { x: "a".into() }), &mut out).expect("other");
    encoder.write_value(&encode(&Point { x: 3, y: 4 }), &mut out).expect("point again");
    assert_eq!(count_definitions(&out), 2);
    // The second definition is 66, not a second 65.
    assert!(contains(&out, &hex("ff 83")), "{out:x?}");
    let values = split(&out, Limits::default()).expect("valid");
    assert_eq!(from_message::<Point>(&values[2]).expect("point"), Point { x: 3, y: 4 });
    #[derive(Debug, Deserialize)]
    struct OtherIn {
        x: String,
    }
    assert_eq!(from_message::<OtherIn>(&values[1]).expect("other").x, "a");
    // Not a self-contained message: nothing written.
    let before = out.len();
    assert!(encoder.write_value(b"\x03\x04", &mut out).is_err());
    assert!(encoder.write_value(&hex(POINT)[32..], &mut out).is_err());
    assert_eq!(out.len(), before);
}

#[test]
fn the_stream_decoder_yields_self_contained_messages_byte_by_byte() {
    let mut encoder = StreamEncoder::new();
    let mut stream = BytesMut::new();
    let values = [Point { x: 1, y: 2 }, Point { x: -3, y: 0 }];
    for value in &values {
        encoder.write_value(&encode(value), &mut stream).expect("encode");
    }
    encoder.write_value(&encode(&everything()), &mut stream).expect("encode");
    let mut decoder = StreamDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for byte in stream.iter() {
        buf.extend_from_slice(&[*byte]);
        while let Some(message) = decoder.next_value(&mut buf).expect("valid") {
            decoded.push(message);
        }
    }
    assert_eq!(decoded.len(), 3);
    for (message, value) in decoded.iter().zip(&values) {
        assert_eq!(&Codec::Gob.decode::<Point>(message).expect("alone"), value);
    }
    assert_eq!(Codec::Gob.decode::<Everything>(&decoded[2]).expect("alone"), everything());
}

// Go: type Inner struct{ X int }; type Outer struct { A int; V interface{}; B string }
// gob.Register(Inner{}); three values: {1, Inner{5}, "hi"}, {2, Inner{6}, ""}, {3, nil, ""}.
// The first value defines Inner in the middle of the value, which Go's
// encoder flushes as a message of its own (the value continues in the next).
const OUTER: &str = "25ff81030101054f7574657201ff82000103010141010400010156011000010142010c000000
    29ff820102010a6d61696e2e496e6e6572ff8303010105496e6e657201ff8400010101015801040000000b
    ff8403010a00010268690017ff820104010a6d61696e2e496e6e6572ff8403010c000005ff82010600";

// Go: type Nested struct { Name string; Any interface{} }; Holder struct{ Any interface{} }:
// {"n", Holder{Inner{7}}} (an interface inside an interface: a definition
// inline, under a byte count of its own), then {"", []int{1, 2}}.
const NESTED: &str = "25ff87030101064e657374656401ff8800010201044e616d65010c000103416e7901100000002e
    ff8801016e010b6d61696e2e486f6c646572ff8903010106486f6c64657201ff8a0001010103416e7901100000
    0031ff8a25010a6d61696e2e496e6e6572ff8303010105496e6e657201ff84000101010158010400000007ff84
    03010e00000015ff8802055b5d696e74ff8b020102ff8c000104000008ff8c040002020400";

// Go: type Node struct { Value int; Next *Node } (recursive); 1 -> 2 -> 3.
const NODE: &str = "26ff85030101044e6f646501ff86000102010556616c756501040001044e65787401ff860000000d
    ff860102010104010106000000";

// Go: type Stamp struct { When time.Time; N int } (time.Time is a GobEncoder).
const STAMP: &str = "23ff8d030101055374616d7001ff8e00010201045768656e01ff900001014e010400000010ff8f05
    01010454696d6501ff9000000016ff8e010f010000000edd25742500000006ffff010200";

#[test]
fn interface_values_from_go_decode_as_their_concrete_values() {
    let values = split(&hex(OUTER), Limits::default()).expect("valid");
    assert_eq!(values.len(), 3);
    #[derive(Debug, Deserialize, PartialEq)]
    struct Inner {
        x: i64,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        a: i64,
        v: Option<Inner>,
        b: String,
    }
    let decoded: Vec<Outer> = values.iter().map(|value| from_message(value).expect("decode")).collect();
    assert_eq!(
        decoded,
        [
            Outer { a: 1, v: Some(Inner { x: 5 }), b: "hi".into() },
            // Inner was defined inside the first value: the second's
            // self-contained message carries its definition.
            Outer { a: 2, v: Some(Inner { x: 6 }), b: String::new() },
            Outer { a: 3, v: None, b: String::new() },
        ]
    );
    let any: serde_json::Value = from_message(&values[0]).expect("any");
    assert_eq!(any, json!({"A": 1, "V": {"X": 5}, "B": "hi"}));
    // The whole stream as one message is not self-contained (three values).
    assert!(from_message::<serde_json::Value>(&hex(OUTER)).is_err());

    let values = split(&hex(NESTED), Limits::default()).expect("valid");
    let first: serde_json::Value = from_message(&values[0]).expect("any");
    assert_eq!(first, json!({"Name": "n", "Any": {"Any": {"X": 7}}}));
    #[derive(Debug, Deserialize, PartialEq)]
    struct Ints {
        name: String,
        any: Vec<i64>,
    }
    assert_eq!(
        from_message::<Ints>(&values[1]).expect("typed"),
        Ints { name: String::new(), any: vec![1, 2] }
    );

    // Byte by byte, the split points fall everywhere.
    let stream = hex(NESTED);
    let mut decoder = StreamDecoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut count = 0;
    for byte in &stream {
        buf.extend_from_slice(&[*byte]);
        while let Some(message) = decoder.next_value(&mut buf).expect("valid") {
            from_message::<serde_json::Value>(&message).expect("self-contained");
            count += 1;
        }
    }
    assert_eq!(count, 2);
    // Such values cannot be re-sent on a stream of ours.
    let mut out = BytesMut::new();
    assert!(StreamEncoder::new().write_value(&values[0], &mut out).is_err());
}

#[test]
fn recursive_types_and_marshaled_values_from_go_decode() {
    #[derive(Debug, Deserialize, PartialEq)]
    struct Node {
        value: i64,
        next: Option<Box<Node>>,
    }
    let values = split(&hex(NODE), Limits::default()).expect("valid");
    let node: Node = from_message(&values[0]).expect("decode");
    let three = Node { value: 3, next: None };
    let two = Node { value: 2, next: Some(Box::new(three)) };
    assert_eq!(node, Node { value: 1, next: Some(Box::new(two)) });
    // A recursive definition can be re-sent (fresh ids, no reuse).
    let mut out = BytesMut::new();
    let mut encoder = StreamEncoder::new();
    encoder.write_value(&values[0], &mut out).expect("recursive");
    encoder.write_value(&values[0], &mut out).expect("recursive again");
    let again = split(&out, Limits::default()).expect("valid");
    assert_eq!(from_message::<Node>(&again[1]).expect("decode"), node);

    #[derive(Debug, Deserialize)]
    struct Stamp {
        when: Vec<u8>,
        n: i64,
    }
    let values = split(&hex(STAMP), Limits::default()).expect("valid");
    let stamp: Stamp = from_message(&values[0]).expect("decode");
    assert_eq!((stamp.when.len(), stamp.when[0], stamp.n), (15, 1, 1));
    let any: serde_json::Value = from_message(&values[0]).expect("any");
    assert_eq!(any["N"], json!(1));
}

#[test]
fn every_prefix_and_corruption_of_go_streams_is_handled_without_panic() {
    for stream in [OUTER, NESTED, NODE, STAMP, POINT] {
        let stream = hex(stream);
        for len in 0..stream.len() {
            let _ = split(&stream[..len], Limits::default());
        }
        for index in 0..stream.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut corrupt = stream.clone();
                corrupt[index] ^= flip;
                if let Ok(values) =
                    split(&corrupt, Limits { max_message: 1 << 10, max_types: 8, max_depth: 8 })
                {
                    for value in values {
                        let _ = from_message::<serde_json::Value>(&value);
                        let _ = from_message::<Everything>(&value);
                    }
                }
                let _ = from_message::<serde_json::Value>(&corrupt);
            }
        }
    }
}

#[test]
fn serde_services_accept_gob_but_keep_their_default_codec() {
    use crate::service::Schema;
    assert!(Schema::Serde.accepts(Codec::Gob));
    assert_eq!(Schema::Serde.default_codec(), Codec::Binary);
    assert!(!Schema::Protobuf { file_descriptor_set: &[] }.accepts(Codec::Gob));
}

#[test]
fn values_as_deep_as_the_default_limit_decode_on_a_test_thread_stack() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Link {
        value: i64,
        next: Vec<Link>,
    }
    // Each level is a struct and a slice: 31 links nest 62 levels.
    let mut chain = Link { value: 0, next: Vec::new() };
    for value in 1..31 {
        chain = Link { value, next: vec![chain] };
    }
    let message = encode(&chain);
    assert_eq!(from_message::<Link>(&message).expect("typed"), chain);
    let any: serde_json::Value = from_message(&message).expect("any");
    assert_eq!(any["Value"], json!(30));
    // One more level is refused on both sides.
    let deeper = Link { value: 31, next: vec![Link { value: 32, next: vec![chain] }] };
    assert!(matches!(to_message(&deeper), Err(GobError::TooDeep { max: 64 })));
}
