//! The serde side of decoding: a gob value, read against its wire type,
//! handed to whatever Rust type asks for it.
//!
//! The wire type drives (gob is self-describing), the Rust type's hint
//! decides how: an int into `i8` is range-checked, Go's `[]byte` into a
//! `Vec<u8>` is a sequence of `u8`, a struct's fields are matched by name
//! (exactly, or ignoring case and underscores), wire fields with no Rust
//! field are skipped, and Rust fields the wire did not carry are given
//! their zero value ([`Zero`]), because Go leaves zero fields out.
//!
//! Interface values (Go `any` fields) are decoded as their concrete value;
//! they may define new types in the middle of the value, which this
//! decoder keeps beside the message's own table (`extra`).

use std::collections::HashSet;
use std::sync::Arc;

use serde::de::{self, Visitor};

use super::access::{
    ComplexParts, Elements, IndexVariant, Pairs, Pending, StructFields, StructVariant, Typed, UnitVariant,
    byte_seq,
};
use super::types::{Def, Kind, TypeTable, WireType, check_new_id, closure, ids};
use super::wire::Reader;
use super::zero::Zero;
use super::{COMPLEX_NAME, GobError, Limits};

/// The state of decoding one value.
pub(crate) struct Decoder<'de, 't> {
    pub(crate) r: Reader<'de>,
    base: &'t TypeTable,
    /// Definitions made inside the value (by interface values).
    pub(crate) extra: TypeTable,
    pub(super) limits: Limits,
    /// The concrete type ids of the interface values met.
    pub(crate) interface_ids: Vec<i64>,
    /// Concrete ids whose closure is known to be defined.
    checked: HashSet<i64>,
}

impl<'de, 't> Decoder<'de, 't> {
    pub(crate) fn new(r: Reader<'de>, base: &'t TypeTable, limits: Limits) -> Decoder<'de, 't> {
        Decoder {
            r,
            base,
            extra: TypeTable::default(),
            limits,
            interface_ids: Vec::new(),
            checked: HashSet::new(),
        }
    }

    fn lookup(&self, id: i64) -> Option<&Def> {
        self.extra.get(id).or_else(|| self.base.get(id))
    }

    /// The definition of the user type `id`.
    fn wire(&self, id: i64) -> Result<Arc<WireType>, GobError> {
        self.lookup(id).map(|def| Arc::clone(&def.wire)).ok_or(GobError::UndefinedType(id))
    }

    fn is_struct(&self, id: i64) -> bool {
        self.lookup(id).is_some_and(|def| def.wire.is_struct())
    }

    /// Check that every type `id` refers to is defined.
    pub(crate) fn check_defined(&mut self, id: i64) -> Result<(), GobError> {
        if ids::is_builtin(id) || self.checked.contains(&id) {
            return Ok(());
        }
        closure([id], |id| self.lookup(id).map(|def| &*def.wire))?;
        self.checked.insert(id);
        Ok(())
    }

    /// A description of type `id` for messages.
    fn describe(&self, id: i64) -> String {
        if let Some(name) = ids::builtin_name(id) {
            return name.to_owned();
        }
        match self.lookup(id) {
            Some(def) => {
                let kind = match def.wire.kind {
                    Kind::Array { .. } => "array",
                    Kind::Slice { .. } => "slice",
                    Kind::Struct { .. } => "struct",
                    Kind::Map { .. } => "map",
                    Kind::GobEncoder | Kind::BinaryMarshaler | Kind::TextMarshaler => "marshaled value",
                };
                if def.wire.name.is_empty() { kind.to_owned() } else { format!("{kind} {}", def.wire.name) }
            }
            None => format!("type {id}"),
        }
    }

    /// The depth of the parts of a composite value at `depth`.
    fn enter(&self, depth: usize) -> Result<usize, GobError> {
        if depth >= self.limits.max_depth {
            return Err(GobError::TooDeep { max: self.limits.max_depth });
        }
        Ok(depth + 1)
    }

    /// Read an interface value up to its concrete value: the registered
    /// name, the definitions it brings, the concrete type id, the (unused)
    /// byte count and, for a non-struct, the singleton's zero delta.
    /// `None` for a nil interface.
    fn interface_header(&mut self) -> Result<Option<i64>, GobError> {
        let name_len = self.r.read_uint("an interface's type name")?;
        if name_len == 0 {
            return Ok(None);
        }
        // Go refuses longer names too.
        if name_len > 1024 {
            return Err(GobError::Malformed(format!("an interface type name of {name_len} bytes")));
        }
        self.r.read_raw(name_len as usize, "an interface's type name")?;
        let id = loop {
            // Go's encoder flushes the value so far as a message of its own
            // when the interface brings a new type: the value goes on in the
            // next message.
            if self.r.at_message_end() {
                self.r.next_message()?;
            }
            let id = self.r.read_int("an interface's type id")?;
            if id >= 0 {
                break id;
            }
            let id = id.checked_neg().ok_or_else(|| GobError::Malformed("a type id out of range".into()))?;
            let start = self.r.pos();
            let wire = WireType::decode(&mut self.r)?;
            let defined = self.base.len() + self.extra.len();
            check_new_id(id, self.lookup(id).is_some(), defined, self.limits.max_types)?;
            let raw = self.r.since(start).into();
            self.extra.insert(id, Def { wire: Arc::new(wire), raw });
            // Within a message, each further definition or the value comes
            // under a byte count of its own (decodeTypeSequence skips it).
            if !self.r.at_message_end() {
                self.r.read_uint("a delimited definition's length")?;
            }
        };
        self.check_defined(id)?;
        self.interface_ids.push(id);
        // Not the value's length whenever a nested interface defined a type
        // (the encoder flushed part of the value under its own count), so
        // Go ignores it, and so does this.
        self.r.read_uint("an interface value's length")?;
        if !self.is_struct(id) && self.r.read_uint("an interface value")? != 0 {
            return Err(GobError::Malformed("a non-zero field delta before a singleton value".into()));
        }
        Ok(Some(id))
    }

    /// Read and discard a value of type `id` (a field the Rust type does not
    /// have, an ignored value).
    pub(crate) fn skip(&mut self, id: i64, depth: usize) -> Result<(), GobError> {
        match id {
            ids::BOOL | ids::INT | ids::UINT | ids::FLOAT => {
                self.r.read_uint("a number")?;
            }
            ids::BYTES | ids::STRING => {
                self.r.read_bytes("a string")?;
            }
            ids::COMPLEX => {
                self.r.read_uint("a complex number")?;
                self.r.read_uint("a complex number")?;
            }
            ids::INTERFACE => {
                let inner = self.enter(depth)?;
                if let Some(concrete) = self.interface_header()? {
                    self.skip(concrete, inner)?;
                }
            }
            _ => {
                let wire = self.wire(id)?;
                let inner = self.enter(depth)?;
                match &wire.kind {
                    Kind::Array { elem, len } => {
                        let count = self.r.read_count("an array length", 1)?;
                        if count != *len {
                            return Err(array_length(count, *len));
                        }
                        for _ in 0..count {
                            self.skip(*elem, inner)?;
                        }
                    }
                    Kind::Slice { elem } => {
                        for _ in 0..self.r.read_count("a slice length", 1)? {
                            self.skip(*elem, inner)?;
                        }
                    }
                    Kind::Map { key, elem } => {
                        for _ in 0..self.r.read_count("a map length", 2)? {
                            self.skip(*key, inner)?;
                            self.skip(*elem, inner)?;
                        }
                    }
                    Kind::Struct { fields } => {
                        let mut next = 0;
                        while let Some(index) = next_field(&mut self.r, &mut next, fields.len())? {
                            self.skip(fields[index].id, inner)?;
                        }
                    }
                    Kind::GobEncoder | Kind::BinaryMarshaler | Kind::TextMarshaler => {
                        self.r.read_bytes("a marshaled value")?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Skip a top-level value of type `id` (after its id).
    pub(crate) fn skip_top(&mut self, id: i64) -> Result<(), GobError> {
        self.singleton_prefix(id)?;
        self.skip(id, 0)
    }

    /// A top-level value that is not a struct starts with field delta 0.
    fn singleton_prefix(&mut self, id: i64) -> Result<(), GobError> {
        if !self.is_struct(id) && self.r.read_uint("a top-level value")? != 0 {
            return Err(GobError::Malformed("a non-zero field delta before a singleton value".into()));
        }
        Ok(())
    }

    /// Decode the top-level value of type `id` (after its id) as `T`.
    pub(crate) fn top_value<T: de::Deserialize<'de>>(&mut self, id: i64) -> Result<T, GobError> {
        self.singleton_prefix(id)?;
        T::deserialize(ValueDe { dec: self, id, depth: 0 })
    }
}

fn array_length(count: usize, len: usize) -> GobError {
    GobError::Malformed(format!("an array value of {count} elements for an array type of {len}"))
}

/// The next field number of a struct value being read, `None` at its
/// terminator; `next` is the field number after the last one read.
pub(super) fn next_field(
    r: &mut Reader<'_>,
    next: &mut usize,
    fields: usize,
) -> Result<Option<usize>, GobError> {
    let delta = r.read_uint("a struct field number")?;
    if delta == 0 {
        return Ok(None);
    }
    let index = u64::try_from(*next)
        .ok()
        .and_then(|next| next.checked_add(delta - 1))
        .filter(|index| *index < fields as u64)
        .ok_or_else(|| {
            GobError::Malformed(format!("a field number beyond the {fields} fields of its struct"))
        })?;
    // Below `fields`, a usize.
    let index = index as usize;
    *next = index + 1;
    Ok(Some(index))
}

/// A value of wire type `id`, for serde.
pub(crate) struct ValueDe<'a, 'de, 't> {
    pub(super) dec: &'a mut Decoder<'de, 't>,
    pub(super) id: i64,
    pub(super) depth: usize,
}

/// How an integer came.
enum Integer {
    Signed(i64),
    Unsigned(u64),
}

impl<'a, 'de, 't> ValueDe<'a, 'de, 't> {
    /// Look through an interface to its concrete value; a nil interface
    /// gives the zero value instead (`Err`).
    fn resolve(self) -> Result<Result<ValueDe<'a, 'de, 't>, Zero>, GobError> {
        if self.id != ids::INTERFACE {
            return Ok(Ok(self));
        }
        let zero = self.zero();
        let depth = self.dec.enter(self.depth)?;
        Ok(self.dec.interface_header()?.map(|id| ValueDe { dec: self.dec, id, depth }).ok_or(zero))
    }

    fn unexpected(&self, expected: &str) -> GobError {
        GobError::Decode(format!("expected {expected}, the gob value is a {}", self.dec.describe(self.id)))
    }

    fn integer(&mut self) -> Result<Integer, GobError> {
        match self.id {
            ids::INT => Ok(Integer::Signed(self.dec.r.read_int("an int")?)),
            ids::UINT => Ok(Integer::Unsigned(self.dec.r.read_uint("a uint")?)),
            _ => Err(self.unexpected("an integer")),
        }
    }

    fn string_bytes(&mut self, expected: &str) -> Result<&'de [u8], GobError> {
        match self.id {
            ids::STRING | ids::BYTES => self.dec.r.read_bytes("a string"),
            _ => match self.dec.lookup(self.id).map(|def| &def.wire.kind) {
                Some(Kind::GobEncoder | Kind::BinaryMarshaler | Kind::TextMarshaler) => {
                    self.dec.r.read_bytes("a marshaled value")
                }
                _ => Err(self.unexpected(expected)),
            },
        }
    }

    /// The elements of a slice or array value, for `visit_seq`.
    fn elements(self) -> Result<Option<Elements<'a, 'de, 't>>, GobError> {
        let Some(def) = self.dec.lookup(self.id) else { return Ok(None) };
        let (elem, len) = match def.wire.kind {
            Kind::Array { elem, len } => (elem, Some(len)),
            Kind::Slice { elem } => (elem, None),
            _ => return Ok(None),
        };
        let depth = self.dec.enter(self.depth)?;
        let count = self.dec.r.read_count("a sequence length", 1)?;
        if let Some(len) = len
            && count != len
        {
            return Err(array_length(count, len));
        }
        Ok(Some(Elements { dec: self.dec, elem, left: count, count, depth }))
    }

    fn pairs(self) -> Result<Pairs<'a, 'de, 't>, GobError> {
        let (key, elem) = match self.dec.lookup(self.id).map(|def| &def.wire.kind) {
            Some(Kind::Map { key, elem }) => (*key, *elem),
            _ => return Err(self.unexpected("a map")),
        };
        let depth = self.dec.enter(self.depth)?;
        let left = self.dec.r.read_count("a map length", 2)?;
        Ok(Pairs { dec: self.dec, key, elem, left, depth })
    }

    fn struct_fields(
        self,
        typed: Option<&'static [&'static str]>,
    ) -> Result<StructFields<'a, 'de, 't>, GobError> {
        let wire = self.dec.wire(self.id)?;
        if !wire.is_struct() {
            return Err(self.unexpected("a struct"));
        }
        let depth = self.dec.enter(self.depth)?;
        let typed = typed.map(|names| Typed { names, seen: vec![false; names.len()], zero_next: 0 });
        Ok(StructFields { dec: self.dec, wire, next: 0, done: false, depth, typed, pending: Pending::None })
    }

    fn is_kind(&self, pred: impl Fn(&Kind) -> bool) -> bool {
        self.dec.lookup(self.id).is_some_and(|def| pred(&def.wire.kind))
    }

    fn zero(&self) -> Zero {
        Zero { depth: self.depth, max_depth: self.dec.limits.max_depth }
    }
}

/// Resolve an interface first; a nil interface gives the zero value.
macro_rules! resolved {
    ($self:ident, $visitor:ident, $method:ident $(, $arg:expr)*) => {
        match $self.resolve()? {
            Ok(this) => this,
            Err(zero) => return de::Deserializer::$method(zero, $($arg,)* $visitor),
        }
    };
}

macro_rules! integer_hint {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
            let mut this = resolved!(self, visitor, $method);
            let value = match this.integer()? {
                Integer::Signed(v) => <$ty>::try_from(v).map_err(|_| v.to_string()),
                Integer::Unsigned(v) => <$ty>::try_from(v).map_err(|_| v.to_string()),
            };
            match value {
                Ok(value) => visitor.$visit(value),
                Err(value) => Err(GobError::Decode(format!(
                    "{value} does not fit {}", stringify!($ty)
                ))),
            }
        })*
    };
}

impl<'de> de::Deserializer<'de> for ValueDe<'_, 'de, '_> {
    type Error = GobError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        let this = resolved!(self, visitor, deserialize_any);
        match this.id {
            ids::BOOL => visitor.visit_bool(this.dec.r.read_uint("a bool")? != 0),
            ids::INT => visitor.visit_i64(this.dec.r.read_int("an int")?),
            ids::UINT => visitor.visit_u64(this.dec.r.read_uint("a uint")?),
            ids::FLOAT => visitor.visit_f64(this.dec.r.read_float("a float")?),
            // Bytes as a sequence of numbers: what every self-describing
            // target takes (serde_json::Value has no bytes);
            // `deserialize_bytes` asks for them as bytes.
            ids::BYTES => byte_seq(this.dec.r.read_bytes("bytes")?, visitor),
            ids::STRING => {
                let bytes = this.dec.r.read_bytes("a string")?;
                match std::str::from_utf8(bytes) {
                    Ok(text) => visitor.visit_borrowed_str(text),
                    // Go strings may hold any bytes.
                    Err(_) => byte_seq(bytes, visitor),
                }
            }
            ids::COMPLEX => {
                let re = this.dec.r.read_float("a complex number")?;
                let im = this.dec.r.read_float("a complex number")?;
                visitor.visit_map(ComplexParts { parts: [re, im], next: 0 })
            }
            _ => {
                let wire = this.dec.wire(this.id)?;
                match &wire.kind {
                    Kind::Array { .. } | Kind::Slice { .. } => match this.elements()? {
                        Some(mut elements) => {
                            let value = visitor.visit_seq(&mut elements)?;
                            elements.finish().map(|()| value)
                        }
                        None => Err(GobError::Decode("not a sequence".into())),
                    },
                    Kind::Map { .. } => {
                        let mut pairs = this.pairs()?;
                        let value = visitor.visit_map(&mut pairs)?;
                        pairs.finish().map(|()| value)
                    }
                    Kind::Struct { .. } => {
                        let mut fields = this.struct_fields(None)?;
                        let value = visitor.visit_map(&mut fields)?;
                        fields.finish().map(|()| value)
                    }
                    Kind::GobEncoder | Kind::BinaryMarshaler | Kind::TextMarshaler => {
                        byte_seq(this.dec.r.read_bytes("a marshaled value")?, visitor)
                    }
                }
            }
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        let this = resolved!(self, visitor, deserialize_bool);
        if this.id != ids::BOOL {
            return Err(this.unexpected("a bool"));
        }
        visitor.visit_bool(this.dec.r.read_uint("a bool")? != 0)
    }

    integer_hint! {
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        let this = resolved!(self, visitor, deserialize_f32);
        if this.id != ids::FLOAT {
            return Err(this.unexpected("a float"));
        }
        let value = this.dec.r.read_float("a float")?;
        // Go: a finite value beyond float32's range is an overflow.
        if value.is_finite() && value.abs() > f64::from(f32::MAX) {
            return Err(GobError::Decode(format!("{value} does not fit f32")));
        }
        visitor.visit_f32(value as f32)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        let this = resolved!(self, visitor, deserialize_f64);
        if this.id != ids::FLOAT {
            return Err(this.unexpected("a float"));
        }
        visitor.visit_f64(this.dec.r.read_float("a float")?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        let mut this = resolved!(self, visitor, deserialize_char);
        if matches!(this.id, ids::INT | ids::UINT) {
            // A Go rune.
            let code = match this.integer()? {
                Integer::Signed(v) => u32::try_from(v).ok(),
                Integer::Unsigned(v) => u32::try_from(v).ok(),
            };
            let c = code
                .and_then(char::from_u32)
                .ok_or_else(|| GobError::Decode("an integer that is not a Unicode scalar value".into()))?;
            return visitor.visit_char(c);
        }
        let bytes = this.string_bytes("a one-character string")?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| GobError::Decode("a string that is not UTF-8".into()))?;
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => visitor.visit_char(c),
            _ => Err(GobError::Decode(format!("expected one character, got {text:?}"))),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        let mut this = resolved!(self, visitor, deserialize_str);
        let bytes = this.string_bytes("a string")?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| GobError::Decode("a string that is not UTF-8 (decode it as bytes)".into()))?;
        visitor.visit_borrowed_str(text)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        let mut this = resolved!(self, visitor, deserialize_bytes);
        if this.is_kind(|kind| matches!(kind, Kind::Array { .. } | Kind::Slice { .. })) {
            return this.deserialize_any(visitor);
        }
        visitor.visit_borrowed_bytes(this.string_bytes("bytes")?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        // A value that is there is `Some` (gob has no nil but the nil
        // interface; an absent field is zero, which is `None`).
        match self.resolve()? {
            Ok(this) => visitor.visit_some(this),
            Err(_) => visitor.visit_none(),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        // Whatever came (Go's net/rpc sends an empty struct as the body of
        // an error reply): unit takes it and drops it.
        self.dec.skip(self.id, self.depth)?;
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, GobError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, GobError> {
        let this = resolved!(self, visitor, deserialize_newtype_struct, _name);
        visitor.visit_newtype_struct(this)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        let mut this = resolved!(self, visitor, deserialize_seq);
        if this.is_kind(|kind| matches!(kind, Kind::Array { .. } | Kind::Slice { .. })) {
            return this.deserialize_any(visitor);
        }
        // []byte (and marshaled values) into a sequence of u8: what
        // `Vec<u8>` asks for without serde_bytes.
        let bytes = this.string_bytes("a sequence")?;
        byte_seq(bytes, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, GobError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        let this = resolved!(self, visitor, deserialize_map);
        if this.is_kind(|kind| matches!(kind, Kind::Map { .. } | Kind::Struct { .. })) {
            return this.deserialize_any(visitor);
        }
        Err(this.unexpected("a map"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GobError> {
        let this = resolved!(self, visitor, deserialize_struct, name, fields);
        if this.id == ids::COMPLEX && (name == COMPLEX_NAME || fields == ["re", "im"]) {
            return this.deserialize_any(visitor);
        }
        if this.is_kind(|kind| matches!(kind, Kind::Map { .. })) {
            return this.deserialize_any(visitor);
        }
        let mut access = this.struct_fields(Some(fields))?;
        let value = visitor.visit_map(&mut access)?;
        access.finish()?;
        Ok(value)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, GobError> {
        let mut this = resolved!(self, visitor, deserialize_enum, name, variants);
        match this.id {
            ids::STRING => {
                let bytes = this.string_bytes("a variant name")?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| GobError::Decode("a variant name that is not UTF-8".into()))?;
                visitor.visit_enum(UnitVariant { name: text, variants })
            }
            ids::INT | ids::UINT => {
                // A Go `iota` constant: the variant's index.
                let index = match this.integer()? {
                    Integer::Signed(v) => u64::try_from(v).ok(),
                    Integer::Unsigned(v) => Some(v),
                };
                let index = index.ok_or_else(|| GobError::Decode("a negative variant index".into()))?;
                visitor.visit_enum(IndexVariant(index))
            }
            _ if this.is_kind(|kind| matches!(kind, Kind::Struct { .. })) => {
                let access = this.struct_fields(None)?;
                visitor.visit_enum(StructVariant { fields: access, variants })
            }
            _ => Err(this.unexpected(&format!("a variant of {name}"))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, GobError> {
        self.dec.skip(self.id, self.depth)?;
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Decode a self-contained message (definitions, then one value) as `T`.
pub(crate) fn from_message<'de, T: de::Deserialize<'de>>(
    bytes: &'de [u8],
    limits: Limits,
) -> Result<T, GobError> {
    let (table, mut r) = definitions(bytes, limits)?;
    r.next_message()?;
    let id = r.read_int("a type id")?;
    if id < 0 {
        return Err(GobError::Malformed("a type definition after the value".into()));
    }
    if id == 0 {
        return Err(GobError::Malformed("a value of type id 0".into()));
    }
    let mut dec = Decoder::new(r, &table, limits);
    dec.check_defined(id)?;
    let value = dec.top_value(id)?;
    if !dec.r.at_message_end() {
        return Err(GobError::Malformed(format!(
            "{} bytes after the value in its message",
            dec.r.remaining()
        )));
    }
    if !dec.r.at_input_end() {
        return Err(GobError::Malformed("bytes after the value message".into()));
    }
    Ok(value)
}

/// The definitions a self-contained message starts with, and a reader
/// just before its value's message.
///
/// A connection's values are mostly of the few types its methods take, so
/// their definitions sections repeat byte for byte: each thread keeps the
/// tables of the last few it parsed ([`RECENT_TABLES`]), keyed by those
/// bytes and the limits they were checked against, and a repeat costs a
/// hash instead of a parse.
fn definitions(bytes: &[u8], limits: Limits) -> Result<(Arc<TypeTable>, Reader<'_>), GobError> {
    // Where the definitions end: step over them without parsing.
    let mut r = Reader::new(bytes, limits.max_message, usize::MAX);
    let value_at = loop {
        if r.at_input_end() {
            return Err(GobError::Truncated("a message before its value"));
        }
        let start = r.pos();
        r.next_message()?;
        if r.read_int("a type id")? >= 0 {
            break start;
        }
        r.read_raw(r.remaining(), "a type definition")?;
    };
    let section = &bytes[..value_at];
    let key = (limits.max_message, limits.max_types, limits.max_depth);
    let cached = RECENT_TABLES.with(|recent| {
        recent.borrow().get(section).filter(|(limits, _)| *limits == key).map(|(_, table)| table.clone())
    });
    let table = match cached {
        Some(table) => table,
        None => {
            let mut table = TypeTable::default();
            let mut r = Reader::new(bytes, limits.max_message, usize::MAX);
            while r.pos() < value_at {
                r.next_message()?;
                let id = r.read_int("a type id")?;
                define(&mut r, &mut table, id, limits)?;
            }
            let table = Arc::new(table);
            if section.len() <= MAX_CACHED_SECTION {
                RECENT_TABLES.with(|recent| {
                    let mut recent = recent.borrow_mut();
                    if recent.len() >= RECENT_TABLE_COUNT {
                        recent.clear();
                    }
                    recent.insert(section.to_vec(), (key, table.clone()));
                });
            }
            table
        }
    };
    // A reader at the value's message.
    let mut r = Reader::new(bytes, limits.max_message, usize::MAX);
    while r.pos() < value_at {
        r.next_message()?;
        r.read_raw(r.remaining(), "a type definition")?;
    }
    Ok((table, r))
}

/// How many definitions sections each thread remembers.
const RECENT_TABLE_COUNT: usize = 64;
/// The longest definitions section remembered.
const MAX_CACHED_SECTION: usize = 4096;

/// A definitions section, the limits it was checked against, its table.
type RecentTables = std::collections::HashMap<Vec<u8>, ((usize, usize, usize), Arc<TypeTable>)>;

thread_local! {
    /// See [`definitions`].
    static RECENT_TABLES: std::cell::RefCell<RecentTables> = std::cell::RefCell::new(RecentTables::new());
}

/// Read the definition of `-negated` (a whole message after its id) into
/// `table`.
pub(crate) fn define(
    r: &mut Reader<'_>,
    table: &mut TypeTable,
    negated: i64,
    limits: Limits,
) -> Result<i64, GobError> {
    let id = negated.checked_neg().ok_or_else(|| GobError::Malformed("a type id out of range".into()))?;
    let start = r.pos();
    let wire = WireType::decode(r)?;
    if !r.at_message_end() {
        return Err(GobError::Malformed("bytes after a type definition in its message".into()));
    }
    check_new_id(id, table.get(id).is_some(), table.len(), limits.max_types)?;
    table.insert(id, Def { wire: Arc::new(wire), raw: r.since(start).into() });
    Ok(id)
}
