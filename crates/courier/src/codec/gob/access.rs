//! The serde access types of the decoder (`de.rs`): the elements of a
//! slice, the entries of a map and their keys, the fields of a struct
//! (matched to the Rust fields and completed with zeros), complex numbers
//! and enum variants.

use std::sync::Arc;

use serde::de::value::{BorrowedStrDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::GobError;
use super::de::{Decoder, ValueDe, next_field};
use super::types::{FieldDef, Kind, WireType, ids};
use super::zero::Zero;

/// Whether two field names are the same ignoring case and underscores
/// (`UserID` and `user_id`, `X` and `x`).
fn loosely_equal(a: &str, b: &str) -> bool {
    fn fold(s: &str) -> impl Iterator<Item = char> + '_ {
        s.chars().filter(|c| *c != '_').flat_map(char::to_lowercase)
    }
    fold(a).eq(fold(b))
}

/// The Rust name `wire` stands for: equal, or else loosely equal.
pub(super) fn find_name(names: &[&'static str], wire: &str) -> Option<usize> {
    names
        .iter()
        .position(|name| *name == wire)
        .or_else(|| names.iter().position(|name| loosely_equal(name, wire)))
}

/// `bytes` as a sequence of `u8`.
pub(super) fn byte_seq<'de, V: Visitor<'de>>(bytes: &[u8], visitor: V) -> Result<V::Value, GobError> {
    let mut seq = de::value::SeqDeserializer::<_, GobError>::new(bytes.iter().copied());
    let value = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(value)
}

/// The elements of a slice or an array.
pub(super) struct Elements<'a, 'de, 't> {
    pub(super) dec: &'a mut Decoder<'de, 't>,
    pub(super) elem: i64,
    pub(super) left: usize,
    pub(super) count: usize,
    pub(super) depth: usize,
}

impl Elements<'_, '_, '_> {
    pub(super) fn finish(self) -> Result<(), GobError> {
        if self.left > 0 {
            return Err(GobError::Decode(format!(
                "a sequence of {} elements, more than the Rust type takes",
                self.count
            )));
        }
        Ok(())
    }
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de, '_> {
    type Error = GobError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, GobError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(ValueDe { dec: self.dec, id: self.elem, depth: self.depth }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// The entries of a map.
pub(super) struct Pairs<'a, 'de, 't> {
    pub(super) dec: &'a mut Decoder<'de, 't>,
    pub(super) key: i64,
    pub(super) elem: i64,
    pub(super) left: usize,
    pub(super) depth: usize,
}

impl Pairs<'_, '_, '_> {
    pub(super) fn finish(mut self) -> Result<(), GobError> {
        // A visitor that stopped early: the rest is read past, so that the
        // reader stays in step.
        while self.left > 0 {
            self.left -= 1;
            self.dec.skip(self.key, self.depth)?;
            self.dec.skip(self.elem, self.depth)?;
        }
        Ok(())
    }
}

impl<'de> de::MapAccess<'de> for Pairs<'_, 'de, '_> {
    type Error = GobError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, GobError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(MapKey(ValueDe { dec: self.dec, id: self.key, depth: self.depth })).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, GobError> {
        seed.deserialize(ValueDe { dec: self.dec, id: self.elem, depth: self.depth })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// A map key: as its value, except that a number or bool asked for as a
/// string comes as its decimal text (as JSON keys are), so that Go's
/// `map[int]T` reads into `serde_json::Value` and `HashMap<String, T>`.
pub(super) struct MapKey<'a, 'de, 't>(ValueDe<'a, 'de, 't>);

impl MapKey<'_, '_, '_> {
    fn text(&mut self) -> Result<Option<String>, GobError> {
        let r = &mut self.0.dec.r;
        Ok(Some(match self.0.id {
            ids::INT => r.read_int("a map key")?.to_string(),
            ids::UINT => r.read_uint("a map key")?.to_string(),
            ids::FLOAT => r.read_float("a map key")?.to_string(),
            ids::BOOL => (r.read_uint("a map key")? != 0).to_string(),
            _ => return Ok(None),
        }))
    }
}

macro_rules! forward_key {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, GobError> {
            self.0.$method($($arg,)* visitor)
        })*
    };
}

impl<'de> de::Deserializer<'de> for MapKey<'_, 'de, '_> {
    type Error = GobError;

    fn deserialize_str<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, GobError> {
        match self.text()? {
            Some(text) => visitor.visit_string(text),
            None => self.0.deserialize_str(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_str(visitor)
    }

    forward_key! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(), deserialize_i32(),
        deserialize_i64(), deserialize_i128(), deserialize_u8(), deserialize_u16(), deserialize_u32(),
        deserialize_u64(), deserialize_u128(), deserialize_f32(), deserialize_f64(), deserialize_char(),
        deserialize_bytes(), deserialize_byte_buf(), deserialize_option(), deserialize_unit(),
        deserialize_seq(), deserialize_map(), deserialize_identifier(), deserialize_ignored_any(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// What the Rust struct asked for: its field names, which of them the wire
/// carried, and how far the zero filling got.
pub(super) struct Typed {
    pub(super) names: &'static [&'static str],
    pub(super) seen: Vec<bool>,
    pub(super) zero_next: usize,
}

pub(super) enum Pending {
    None,
    Wire { id: i64, name: usize },
    Zero,
}

/// The fields of a struct value: as the wire names them (no Rust field
/// list), or matched to the Rust fields and completed with zeros.
pub(super) struct StructFields<'a, 'de, 't> {
    pub(super) dec: &'a mut Decoder<'de, 't>,
    pub(super) wire: Arc<WireType>,
    pub(super) next: usize,
    pub(super) done: bool,
    pub(super) depth: usize,
    pub(super) typed: Option<Typed>,
    pub(super) pending: Pending,
}

impl StructFields<'_, '_, '_> {
    fn fields(&self) -> &[FieldDef] {
        match &self.wire.kind {
            Kind::Struct { fields } => fields,
            _ => &[],
        }
    }

    /// The index of the next field on the wire, `None` after the last.
    fn next_wire_field(&mut self) -> Result<Option<usize>, GobError> {
        if self.done {
            return Ok(None);
        }
        let count = self.fields().len();
        let index = next_field(&mut self.dec.r, &mut self.next, count)?;
        self.done = index.is_none();
        Ok(index)
    }

    pub(super) fn finish(mut self) -> Result<(), GobError> {
        while let Some(index) = self.next_wire_field()? {
            let id = self.fields()[index].id;
            self.dec.skip(id, self.depth)?;
        }
        Ok(())
    }
}

impl<'de> de::MapAccess<'de> for StructFields<'_, 'de, '_> {
    type Error = GobError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, GobError> {
        while let Some(index) = self.next_wire_field()? {
            let wire = Arc::clone(&self.wire);
            let Kind::Struct { fields } = &wire.kind else { break };
            let field = &fields[index];
            let Some(typed) = self.typed.as_mut() else {
                self.pending = Pending::Wire { id: field.id, name: index };
                return seed.deserialize(StrDeserializer::<GobError>::new(&field.name)).map(Some);
            };
            match find_name(typed.names, &field.name) {
                Some(rust) if !typed.seen[rust] => {
                    typed.seen[rust] = true;
                    self.pending = Pending::Wire { id: field.id, name: index };
                    return seed.deserialize(BorrowedStrDeserializer::new(typed.names[rust])).map(Some);
                }
                // Go skips fields the receiver does not have.
                _ => self.dec.skip(field.id, self.depth)?,
            }
        }
        let Some(typed) = self.typed.as_mut() else { return Ok(None) };
        while typed.zero_next < typed.names.len() {
            let rust = typed.zero_next;
            typed.zero_next += 1;
            if !typed.seen[rust] {
                self.pending = Pending::Zero;
                return seed.deserialize(BorrowedStrDeserializer::new(typed.names[rust])).map(Some);
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, GobError> {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::Wire { id, name } => {
                seed.deserialize(ValueDe { dec: self.dec, id, depth: self.depth }).map_err(|err| match err {
                    GobError::Decode(message) => {
                        let field = self.fields().get(name).map_or("?", |f| f.name.as_str());
                        GobError::Decode(format!("{}.{field}: {message}", self.wire.name))
                    }
                    other => other,
                })
            }
            Pending::Zero => {
                seed.deserialize(Zero { depth: self.depth, max_depth: self.dec.limits.max_depth })
            }
            Pending::None => {
                Err(GobError::Decode("a struct field value was asked for before its name".into()))
            }
        }
    }
}

/// The real and imaginary parts of a complex number, as `{re, im}`.
pub(super) struct ComplexParts {
    pub(super) parts: [f64; 2],
    pub(super) next: usize,
}

impl<'de> de::MapAccess<'de> for ComplexParts {
    type Error = GobError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, GobError> {
        let key = match self.next {
            0 => "re",
            1 => "im",
            _ => return Ok(None),
        };
        seed.deserialize(BorrowedStrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, GobError> {
        let part = self.parts.get(self.next).copied().unwrap_or_default();
        self.next += 1;
        seed.deserialize(part.into_deserializer())
    }
}

/// The variant name of `variants` a wire name stands for.
fn variant_key<'de, V: DeserializeSeed<'de>>(
    seed: V,
    variants: &'static [&'static str],
    wire: &str,
) -> Result<V::Value, GobError> {
    match find_name(variants, wire) {
        Some(index) => seed.deserialize(BorrowedStrDeserializer::new(variants[index])),
        None => seed.deserialize(StrDeserializer::new(wire)),
    }
}

/// A unit variant sent as its name.
pub(super) struct UnitVariant<'n> {
    pub(super) name: &'n str,
    pub(super) variants: &'static [&'static str],
}

impl<'de> de::EnumAccess<'de> for UnitVariant<'_> {
    type Error = GobError;
    type Variant = NoPayload;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, NoPayload), GobError> {
        Ok((variant_key(seed, self.variants, self.name)?, NoPayload))
    }
}

/// A unit variant sent as its index.
pub(super) struct IndexVariant(pub(super) u64);

impl<'de> de::EnumAccess<'de> for IndexVariant {
    type Error = GobError;
    type Variant = NoPayload;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, NoPayload), GobError> {
        Ok((seed.deserialize(self.0.into_deserializer())?, NoPayload))
    }
}

/// The payload of a variant that came as a bare name or index: none.
pub(super) struct NoPayload;

impl<'de> de::VariantAccess<'de> for NoPayload {
    type Error = GobError;

    fn unit_variant(self) -> Result<(), GobError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, GobError> {
        Err(GobError::Decode("a variant with data came as a bare name".into()))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, GobError> {
        Err(GobError::Decode("a tuple variant came as a bare name".into()))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, GobError> {
        Err(GobError::Decode("a struct variant came as a bare name".into()))
    }
}

/// A variant sent as a struct with one field named after it.
pub(super) struct StructVariant<'a, 'de, 't> {
    pub(super) fields: StructFields<'a, 'de, 't>,
    pub(super) variants: &'static [&'static str],
}

impl<'a, 'de, 't> de::EnumAccess<'de> for StructVariant<'a, 'de, 't> {
    type Error = GobError;
    type Variant = VariantPayload<'a, 'de, 't>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        mut self,
        seed: V,
    ) -> Result<(V::Value, VariantPayload<'a, 'de, 't>), GobError> {
        let Some(index) = self.fields.next_wire_field()? else {
            return Err(GobError::Decode(format!(
                "an enum sent as the struct {} with no field set (no variant)",
                self.fields.wire.name
            )));
        };
        let field = &self.fields.fields()[index];
        let id = field.id;
        let value = variant_key(seed, self.variants, &field.name)?;
        Ok((value, VariantPayload { fields: self.fields, id }))
    }
}

/// The value of the one field of a variant's struct, then its end.
pub(super) struct VariantPayload<'a, 'de, 't> {
    fields: StructFields<'a, 'de, 't>,
    id: i64,
}

impl<'a, 'de, 't> VariantPayload<'a, 'de, 't> {
    fn payload<R>(
        self,
        read: impl FnOnce(ValueDe<'_, 'de, 't>) -> Result<R, GobError>,
    ) -> Result<R, GobError> {
        let mut fields = self.fields;
        let value = read(ValueDe { dec: &mut *fields.dec, id: self.id, depth: fields.depth })?;
        if fields.next_wire_field()?.is_some() {
            return Err(GobError::Decode(format!(
                "an enum sent as the struct {} with more than one field set",
                fields.wire.name
            )));
        }
        Ok(value)
    }
}

impl<'de> de::VariantAccess<'de> for VariantPayload<'_, 'de, '_> {
    type Error = GobError;

    fn unit_variant(self) -> Result<(), GobError> {
        self.payload(|value| {
            let depth = value.depth;
            value.dec.skip(value.id, depth)
        })
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, GobError> {
        self.payload(|value| seed.deserialize(value))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, GobError> {
        self.payload(|value| de::Deserializer::deserialize_tuple(value, len, visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GobError> {
        self.payload(|value| de::Deserializer::deserialize_struct(value, "", fields, visitor))
    }
}
