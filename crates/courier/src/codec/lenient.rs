//! JSON decoding that matches struct field names without regard to ASCII
//! case when no field matches exactly, as Go's `encoding/json` does.
//!
//! Go's `net/rpc/jsonrpc` clients send a Go struct's fields as Go names
//! them (`{"A":10,"B":50}` for `struct { A, B int }`); a Rust type names
//! them `a` and `b`. The JSON-RPC server decodes arguments through this,
//! so both sides keep their own conventions. It works on a parsed
//! [`Value`], and hands every struct the names it asks for: a key that is
//! not one of the struct's fields but equals one ignoring case is renamed
//! to it, at every depth.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess,
    SeqAccess, VariantAccess, Visitor,
};
use serde_json::{Map, Value};

/// Decode `bytes` as `T`, matching field names leniently.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let value: Value = serde_json::from_slice(bytes)?;
    T::deserialize(Lenient(value))
}

/// A JSON value that deserializes with lenient field names.
struct Lenient(Value);

impl<'de> Deserializer<'de> for Lenient {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Seq(items.into_iter())),
            Value::Object(map) => visitor.visit_map(Fields::new(map, &[])),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(Fields::new(map, fields)),
            Value::Array(items) => visitor.visit_seq(Seq(items.into_iter())),
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Lenient(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) if map.len() == 1 => {
                let Some((variant, content)) = map.into_iter().next() else {
                    return Err(de::Error::custom("an enum object needs one member"));
                };
                visitor.visit_enum(Variant { variant, content: Some(content) })
            }
            Value::String(variant) => visitor.visit_enum(Variant { variant, content: None }),
            other => other.deserialize_enum(name, variants, visitor),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Seq {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0.next().map(|value| seed.deserialize(Lenient(value))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// An object's members, keys renamed to the struct's own field names.
struct Fields {
    entries: std::vec::IntoIter<(String, Value)>,
    value: Option<Value>,
}

impl Fields {
    fn new(map: Map<String, Value>, fields: &'static [&'static str]) -> Fields {
        let entries: Vec<(String, Value)> = map
            .into_iter()
            .map(|(key, value)| {
                if fields.contains(&key.as_str()) {
                    return (key, value);
                }
                match fields.iter().find(|field| field.eq_ignore_ascii_case(&key)) {
                    Some(field) => ((*field).to_owned(), value),
                    None => (key, value),
                }
            })
            .collect();
        Fields { entries: entries.into_iter(), value: None }
    }
}

impl<'de> MapAccess<'de> for Fields {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else { return Ok(None) };
        self.value = Some(value);
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let value =
            self.value.take().ok_or_else(|| de::Error::custom("a value was asked for before its key"))?;
        seed.deserialize(Lenient(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Variant {
    variant: String,
    content: Option<Value>,
}

impl<'de> EnumAccess<'de> for Variant {
    type Error = serde_json::Error;
    type Variant = Content;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Content), Self::Error> {
        let variant = seed.deserialize(self.variant.into_deserializer())?;
        Ok((variant, Content(self.content)))
    }
}

struct Content(Option<Value>);

impl<'de> VariantAccess<'de> for Content {
    type Error = serde_json::Error;

    fn unit_variant(self) -> Result<(), Self::Error> {
        match self.0 {
            None | Some(Value::Null) => Ok(()),
            Some(_) => Err(de::Error::custom("a unit variant carries no value")),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Self::Error> {
        seed.deserialize(Lenient(self.0.unwrap_or(Value::Null)))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Self::Error> {
        Lenient(self.0.unwrap_or(Value::Null)).deserialize_seq(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Lenient(self.0.unwrap_or(Value::Null)).deserialize_struct("", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Args {
        a: i64,
        b: i64,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Outer {
        name: String,
        inner: Option<Args>,
        list: Vec<Args>,
        shape: Shape,
        tags: HashMap<String, u8>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Shape {
        Dot,
        Circle { radius: f64 },
        Pair(u8, u8),
    }

    #[test]
    fn go_style_names_match_rust_fields_at_every_depth() {
        let args: Args = from_slice(br#"{"A":10,"B":50}"#).expect("lenient");
        assert_eq!(args, Args { a: 10, b: 50 });
        let outer: Outer = from_slice(
            br#"{"Name":"x","INNER":{"A":1,"b":2},"List":[{"a":3,"B":4}],"Shape":{"Circle":{"Radius":2.5}},"Tags":{"Keep":1}}"#,
        )
        .expect("lenient");
        assert_eq!(outer.inner, Some(Args { a: 1, b: 2 }));
        assert_eq!(outer.list, vec![Args { a: 3, b: 4 }]);
        assert_eq!(outer.shape, Shape::Circle { radius: 2.5 });
        assert_eq!(outer.tags.get("Keep"), Some(&1), "map keys are data, not field names");
        let dot: Shape = from_slice(br#""Dot""#).expect("unit variant");
        assert_eq!(dot, Shape::Dot);
        let pair: Shape = from_slice(br#"{"Pair":[1,2]}"#).expect("tuple variant");
        assert_eq!(pair, Shape::Pair(1, 2));
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Wrapped {
        Args(Args),
        Nothing,
    }

    #[test]
    fn enum_variants_follow_serde_s_external_tagging() {
        // A newtype variant's content is decoded leniently too.
        let wrapped: Wrapped = from_slice(br#"{"Args":{"A":1,"B":2}}"#).expect("newtype variant");
        assert_eq!(wrapped, Wrapped::Args(Args { a: 1, b: 2 }));
        // A unit variant may be named alone or with a null, nothing else.
        assert_eq!(from_slice::<Wrapped>(br#"{"Nothing":null}"#).expect("unit"), Wrapped::Nothing);
        assert!(from_slice::<Wrapped>(br#"{"Nothing":5}"#).is_err(), "a unit variant carries no value");
        // An enum object names exactly one variant.
        assert!(from_slice::<Wrapped>(br#"{"Nothing":null,"Args":{"a":1,"b":2}}"#).is_err());
        assert!(from_slice::<Wrapped>(b"{}").is_err());
        assert!(from_slice::<Wrapped>(br#""Other""#).is_err());
    }

    #[test]
    fn sequences_and_maps_report_what_is_left() {
        let mut seq = Seq(vec![Value::from(1), Value::from(2)].into_iter());
        assert_eq!(seq.size_hint(), Some(2));
        assert_eq!(seq.next_element::<u8>().expect("decodes"), Some(1));
        assert_eq!(seq.size_hint(), Some(1));
        let map: Map<String, Value> = [("a".to_owned(), Value::from(1))].into_iter().collect();
        let mut fields = Fields::new(map, &["A"]);
        assert_eq!(fields.size_hint(), Some(1));
        assert_eq!(fields.next_key::<String>().expect("decodes").as_deref(), Some("A"), "renamed");
        assert_eq!(fields.size_hint(), Some(0));
        assert_eq!(fields.next_value::<u8>().expect("decodes"), 1);
        assert!(fields.next_value::<u8>().is_err(), "a value asked for twice");
    }

    #[test]
    fn options_and_newtypes_decode_leniently() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Id(Args);
        let id: Id = from_slice(br#"{"A":3,"B":4}"#).expect("newtype struct");
        assert_eq!(id, Id(Args { a: 3, b: 4 }));
        let none: Option<Args> = from_slice(b"null").expect("null");
        assert_eq!(none, None);
        let some: Option<Args> = from_slice(br#"{"A":5,"B":6}"#).expect("object");
        assert_eq!(some, Some(Args { a: 5, b: 6 }));
        // A struct may come as an array of its fields, as serde_json allows.
        assert_eq!(from_slice::<Args>(b"[7,8]").expect("array"), Args { a: 7, b: 8 });
    }

    #[test]
    fn exact_names_win_and_errors_stay_errors() {
        #[derive(Debug, Deserialize)]
        struct Both {
            a: u8,
            #[serde(rename = "A")]
            upper: u8,
        }
        let both: Both = from_slice(br#"{"a":1,"A":2}"#).expect("exact");
        assert_eq!((both.a, both.upper), (1, 2));
        assert!(from_slice::<Args>(br#"{"A":"ten","B":1}"#).is_err());
        assert!(from_slice::<Args>(br#"{"A":1}"#).is_err(), "missing field");
        assert!(from_slice::<Args>(b"{").is_err());
        let numbers: (u8, i32, f32) = from_slice(b"[1,-2,3]").expect("primitives");
        assert_eq!(numbers, (1, -2, 3.0));
    }
}
