//! Decoding a method's arguments on the server, for generated code
//! (re-exported through `courier::__private`).
//!
//! Arguments travel as one serde struct, `{"a":10,"b":20}` in JSON; a
//! method with a single argument takes the argument itself (`"k1"`), as
//! Go's net/rpc does. People calling such a method by hand over JSON often
//! name the argument instead (`{"key":"k1"}`), so for JSON bodies the rule
//! is:
//!
//! 1. the body is decoded as the bare value, as it always was;
//! 2. only if that fails, and the body is an object with exactly one
//!    member whose key names the argument (exactly, or ignoring ASCII case
//!    as [`crate::codec::lenient`] matches field names), the member's value
//!    is decoded instead;
//! 3. if neither works, the error names the method, the argument and the
//!    shape expected, beside the decoder's own message.
//!
//! Trying the bare value first keeps the rule unambiguous: a body that
//! decodes as the argument always means the argument, even when the
//! argument's own type is an object with a field of the same name. The
//! binary codec never reaches any of this (it carries no field names), so
//! its path is one comparison longer than a plain decode.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::codec::Codec;
use crate::service::ArgDescriptor;
use crate::status::Status;

/// Decode a method's arguments in the call's codec, or explain why they do
/// not decode. JSON-RPC calls match field names as Go does.
pub fn decode_args<T: DeserializeOwned>(cx: &crate::Context, body: &[u8], method: &str) -> Result<T, Status> {
    let decoded = if cx.codec() == Codec::Json {
        decode_json(cx, body)
    } else {
        cx.codec().decode(body).map_err(|err| err.to_string())
    };
    decoded.map_err(|err| Status::invalid_argument(format!("the arguments of {method} do not decode: {err}")))
}

/// Decode the one argument of a single-argument method: `T` is the
/// method's `#[serde(transparent)]` args struct. JSON bodies may also name
/// the argument (`{"key":"k1"}` for `"k1"`); see the module docs for the
/// rule.
pub fn decode_arg<T: DeserializeOwned>(
    cx: &crate::Context,
    body: &[u8],
    method: &str,
    arg: &ArgDescriptor,
) -> Result<T, Status> {
    if cx.codec() != Codec::Json {
        return decode_args(cx, body, method);
    }
    let bare = match decode_json(cx, body) {
        Ok(decoded) => return Ok(decoded),
        Err(err) => err,
    };
    // The slow path, for bodies that are wrong as they stand: work out what
    // was sent.
    let value: Option<Value> = serde_json::from_slice(body).ok();
    if let Some((key, inner)) = value.as_ref().and_then(|value| named_member(value, arg.name)) {
        // Re-encoding the member and decoding it the way the bare body was
        // keeps both paths identical (lenient or not).
        let inner = serde_json::to_vec(inner).map_err(|err| Status::internal(err.to_string()))?;
        return decode_json(cx, &inner).map_err(|err| {
            Status::invalid_argument(format!(
                "the argument `{}` of {method} (sent as the member `{key}`) does not decode: {err}",
                arg.name
            ))
        });
    }
    Err(Status::invalid_argument(format!(
        "{method} takes its one argument `{name}: {ty}` as the body itself{example}, not wrapped in an \
         object; got {got}: {bare}",
        name = arg.name,
        ty = arg.ty,
        example = example(arg.ty).map(|e| format!(", e.g. {e}")).unwrap_or_default(),
        got = describe(value.as_ref()),
    )))
}

/// JSON, leniently when the protocol asks for it (JSON-RPC).
fn decode_json<T: DeserializeOwned>(cx: &crate::Context, body: &[u8]) -> Result<T, String> {
    if cx.lenient_json() {
        crate::codec::lenient::from_slice(body).map_err(|err| err.to_string())
    } else {
        Codec::Json.decode(body).map_err(|err| err.to_string())
    }
}

/// The member of a one-member object whose key names `arg`.
fn named_member<'v>(value: &'v Value, arg: &str) -> Option<(&'v str, &'v Value)> {
    let Value::Object(map) = value else { return None };
    if map.len() != 1 {
        return None;
    }
    let (key, inner) = map.iter().next()?;
    (key == arg || key.eq_ignore_ascii_case(arg)).then_some((key.as_str(), inner))
}

/// What a body was, in words.
fn describe(value: Option<&Value>) -> String {
    match value {
        None => "a body that is not JSON".to_owned(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::Bool(_)) => "a boolean".to_owned(),
        Some(Value::Number(_)) => "a number".to_owned(),
        Some(Value::String(_)) => "a string".to_owned(),
        Some(Value::Array(_)) => "an array".to_owned(),
        Some(Value::Object(map)) if map.is_empty() => "an empty object (or no body)".to_owned(),
        Some(Value::Object(map)) => {
            let keys: Vec<String> = map.keys().take(4).map(|key| format!("`{key}`")).collect();
            let more = if map.len() > 4 { ", ..." } else { "" };
            let noun = if map.len() == 1 { "key" } else { "keys" };
            format!("an object with {noun} {}{more}", keys.join(", "))
        }
    }
}

/// A JSON example of a value of the Rust type `ty` (as written in the
/// trait), for the types whose JSON shape is certain.
fn example(ty: &str) -> Option<&'static str> {
    let ty = ty.trim();
    let inner = |prefix: &str| ty.strip_prefix(prefix).and_then(|rest| rest.strip_suffix('>')).map(str::trim);
    if let Some(inner) = inner("Option<") {
        return example(inner);
    }
    if inner("Vec<").is_some() || ty.starts_with('[') {
        return Some("[...]");
    }
    match ty.rsplit("::").next().unwrap_or(ty) {
        "String" | "str" | "char" => Some("\"text\""),
        "bool" => Some("true"),
        "f32" | "f64" => Some("1.5"),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => {
            Some("42")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::Context;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(transparent)]
    struct OneString {
        key: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Key {
        key: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(transparent)]
    struct OneKey {
        key: Key,
    }

    const KEY: ArgDescriptor = ArgDescriptor { name: "key", ty: "String" };

    fn json() -> Context {
        Context::new("Kv.Get", Codec::Json)
    }

    fn get(cx: &Context, body: impl AsRef<[u8]>) -> Result<String, Status> {
        decode_arg::<OneString>(cx, body.as_ref(), "Kv.Get", &KEY).map(|one| one.key)
    }

    #[test]
    fn the_bare_value_and_an_object_naming_the_argument_both_decode() {
        for cx in [json(), json().with_lenient_json()] {
            assert_eq!(get(&cx, r#""k1""#).expect("bare"), "k1");
            assert_eq!(get(&cx, r#"{"key":"k1"}"#).expect("named"), "k1");
            assert_eq!(get(&cx, r#"{"KEY":"k1"}"#).expect("named ignoring case"), "k1");
        }
    }

    #[test]
    fn a_wrong_shape_is_explained_with_the_method_the_argument_and_an_example() {
        let err = get(&json(), r#"{"name":"k1"}"#).expect_err("wrong key");
        assert_eq!(err.code(), crate::Code::InvalidArgument);
        let message = err.message();
        assert!(
            message.starts_with(
                "Kv.Get takes its one argument `key: String` as the body itself, e.g. \"text\", not \
                 wrapped in an object; got an object with key `name`: "
            ),
            "{message}"
        );
        assert!(message.contains("invalid type: map, expected a string"), "{message}");

        let err = get(&json(), r#"{"key":"k1","other":1}"#).expect_err("two members");
        assert!(err.message().contains("got an object with keys `key`, `other`"), "{}", err.message());
        let err = get(&json(), "k1").expect_err("not JSON");
        assert!(err.message().contains("got a body that is not JSON"), "{}", err.message());
        let err = get(&json(), r#"{"key":5}"#).expect_err("named but wrong type");
        assert!(
            err.message()
                .starts_with("the argument `key` of Kv.Get (sent as the member `key`) does not decode"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_body_that_decodes_bare_is_never_unwrapped() {
        // The argument's own type has a field named like the argument: the
        // body is that struct, not a wrapper around it.
        let arg = ArgDescriptor { name: "key", ty: "Key" };
        let decoded: OneKey = decode_arg(&json(), br#"{"key":"k1"}"#, "Kv.Find", &arg).expect("bare struct");
        assert_eq!(decoded.key, Key { key: "k1".into() });
        // Wrapped once more, the bare decode fails and the member is used.
        let decoded: OneKey =
            decode_arg(&json(), br#"{"key":{"key":"k2"}}"#, "Kv.Find", &arg).expect("wrapped struct");
        assert_eq!(decoded.key, Key { key: "k2".into() });
    }

    #[test]
    fn the_binary_codec_decodes_as_before() {
        let cx = Context::new("Kv.Get", Codec::Binary);
        let mut buf = bytes::BytesMut::new();
        Codec::Binary.encode(&OneString { key: "k1".into() }, &mut buf).expect("encode");
        assert_eq!(get(&cx, &buf).expect("binary"), "k1");
        // Binary bodies are never reinterpreted as JSON.
        assert!(get(&cx, br#"{"key":"k1"}"#).is_err());
    }

    #[test]
    fn examples_cover_the_types_whose_json_shape_is_certain() {
        assert_eq!(example("String"), Some("\"text\""));
        assert_eq!(example("std::string::String"), Some("\"text\""));
        assert_eq!(example("Option<u64>"), Some("42"));
        assert_eq!(example("Vec<Entry>"), Some("[...]"));
        assert_eq!(example("f64"), Some("1.5"));
        assert_eq!(example("Entry"), None);
    }
}
