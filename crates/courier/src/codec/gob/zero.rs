//! The zero value of whatever serde asks for.
//!
//! Go omits zero fields from a struct value, and a receiver missing a
//! field keeps its zero. A Rust struct derived with plain
//! `#[derive(Deserialize)]` would instead fail with "missing field", so the
//! decoder hands every field the wire did not carry to this deserializer,
//! which answers each `deserialize_*` hint with the zero of that shape: 0,
//! false, "", empty sequences, maps and bytes, `None`, unit, a struct of
//! zeros, the first variant of an enum (with a zero payload).

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Visitor};

use super::GobError;

/// The zero value; `depth` bounds the recursion through nested structs
/// (a `struct A { b: Box<A> }` has no finite zero).
#[derive(Clone, Copy)]
pub(crate) struct Zero {
    pub(crate) depth: usize,
    pub(crate) max_depth: usize,
}

impl Zero {
    fn deeper(self) -> Result<Zero, GobError> {
        if self.depth >= self.max_depth {
            return Err(GobError::TooDeep { max: self.max_depth });
        }
        Ok(Zero { depth: self.depth + 1, max_depth: self.max_depth })
    }
}

macro_rules! zero_number {
    ($($method:ident => $visit:ident($zero:expr)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
            visitor.$visit($zero)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Zero {
    type Error = GobError;

    zero_number! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i8(0),
        deserialize_i16 => visit_i16(0),
        deserialize_i32 => visit_i32(0),
        deserialize_i64 => visit_i64(0),
        deserialize_i128 => visit_i128(0),
        deserialize_u8 => visit_u8(0),
        deserialize_u16 => visit_u16(0),
        deserialize_u32 => visit_u32(0),
        deserialize_u64 => visit_u64(0),
        deserialize_u128 => visit_u128(0),
        deserialize_f32 => visit_f32(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char('\0'),
        deserialize_str => visit_borrowed_str(""),
        deserialize_string => visit_borrowed_str(""),
        deserialize_bytes => visit_borrowed_bytes(&[]),
        deserialize_byte_buf => visit_borrowed_bytes(&[]),
        deserialize_identifier => visit_borrowed_str(""),
    }

    /// No hint: the closest thing to a zero of no known type is unit
    /// (`null` for `serde_json::Value`).
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_none()
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, GobError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, GobError> {
        // A level, so that `struct A(Box<A>)` ends in an error.
        visitor.visit_newtype_struct(self.deeper()?)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_seq(Zeros { zero: self, left: 0 })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_seq(Zeros { zero: self.deeper()?, left: len })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, GobError> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        visitor.visit_map(ZeroFields { zero: self, fields: &[] })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GobError> {
        visitor.visit_map(ZeroFields { zero: self.deeper()?, fields })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GobError> {
        let variant = variants.first().ok_or_else(|| {
            GobError::Decode(format!("the enum {name} has no variant to be its zero value"))
        })?;
        visitor.visit_enum(ZeroVariant { zero: self.deeper()?, variant })
    }
}

/// The elements of a zero tuple (or none, for a sequence).
struct Zeros {
    zero: Zero,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Zeros {
    type Error = GobError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, GobError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.zero).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// The fields of a zero struct, each zero (or none, for a map).
struct ZeroFields {
    zero: Zero,
    fields: &'static [&'static str],
}

impl<'de> de::MapAccess<'de> for ZeroFields {
    type Error = GobError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, GobError> {
        let Some((first, rest)) = self.fields.split_first() else { return Ok(None) };
        self.fields = rest;
        seed.deserialize(BorrowedStrDeserializer::new(first)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, GobError> {
        seed.deserialize(self.zero)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len())
    }
}

/// The first variant of an enum, with a zero payload.
struct ZeroVariant {
    zero: Zero,
    variant: &'static str,
}

impl<'de> de::EnumAccess<'de> for ZeroVariant {
    type Error = GobError;
    type Variant = Zero;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Zero), GobError> {
        let value = seed.deserialize(BorrowedStrDeserializer::new(self.variant))?;
        Ok((value, self.zero))
    }
}

impl<'de> de::VariantAccess<'de> for Zero {
    type Error = GobError;

    fn unit_variant(self) -> Result<(), GobError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, GobError> {
        seed.deserialize(self.deeper()?)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, GobError> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GobError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}
