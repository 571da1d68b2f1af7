//! Gob's type definitions: the `wireType` a peer sends once per type and
//! stream (doc.go lists the Go declarations), how they are encoded and
//! decoded, and a table of the ones a stream or message defined.
//!
//! A definition is itself a gob value of the predefined struct `wireType`,
//! so it is read here with a small hand-written decoder for exactly those
//! predefined structs rather than through the general value decoder: the
//! shape is fixed, and a field number Go's own `wireType` does not have is
//! an error, as it is in Go.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::GobError;
use super::wire::{Reader, put_bytes, put_int, put_uint};

/// The type ids every stream knows without a definition (doc.go).
pub(crate) mod ids {
    /// `bool`.
    pub(crate) const BOOL: i64 = 1;
    /// Every signed integer.
    pub(crate) const INT: i64 = 2;
    /// Every unsigned integer.
    pub(crate) const UINT: i64 = 3;
    /// `float32` and `float64`.
    pub(crate) const FLOAT: i64 = 4;
    /// `[]byte`.
    pub(crate) const BYTES: i64 = 5;
    /// `string`.
    pub(crate) const STRING: i64 = 6;
    /// `complex64` and `complex128`.
    pub(crate) const COMPLEX: i64 = 7;
    /// Every interface type.
    pub(crate) const INTERFACE: i64 = 8;
    /// The lowest id a peer may define (Go's `firstUserId`).
    pub(crate) const FIRST_USER: i64 = 64;
    /// The first id this crate assigns (Go's encoder starts there too).
    pub(crate) const FIRST_ASSIGNED: i64 = 65;
    /// Go's type ids are `int32`.
    pub(crate) const MAX: i64 = i32::MAX as i64;

    /// Whether `id` is one of the basic types above.
    pub(crate) fn is_builtin(id: i64) -> bool {
        (BOOL..=INTERFACE).contains(&id)
    }

    /// Go's name of a basic type, for messages.
    pub(crate) fn builtin_name(id: i64) -> Option<&'static str> {
        Some(match id {
            BOOL => "bool",
            INT => "int",
            UINT => "uint",
            FLOAT => "float",
            BYTES => "[]byte",
            STRING => "string",
            COMPLEX => "complex",
            INTERFACE => "interface",
            _ => return None,
        })
    }
}

/// One field of a struct definition.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldDef {
    /// The Go field name (exported, so capitalized, when Go sent it).
    pub(crate) name: String,
    /// The field's type id.
    pub(crate) id: i64,
}

/// What kind of type a definition describes (`wireType`'s one set field).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kind {
    /// A Go array: a fixed length in the type.
    Array {
        /// The element type.
        elem: i64,
        /// The length every value has.
        len: usize,
    },
    /// A Go slice.
    Slice {
        /// The element type.
        elem: i64,
    },
    /// A Go struct; field numbers on the wire index `fields`.
    Struct {
        /// The fields, in field-number order.
        fields: Vec<FieldDef>,
    },
    /// A Go map.
    Map {
        /// The key type.
        key: i64,
        /// The element type.
        elem: i64,
    },
    /// A type with its own `GobEncode` (time.Time, ...): its value is bytes.
    GobEncoder,
    /// A type with `MarshalBinary`: bytes.
    BinaryMarshaler,
    /// A type with `MarshalText`: bytes (text).
    TextMarshaler,
}

/// One type definition.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WireType {
    /// Go's name of the type, informational only (Go matches structs by
    /// field names, not by type names).
    pub(crate) name: String,
    /// The id repeated inside the definition (`CommonType.Id`).
    pub(crate) id: i64,
    /// What it is.
    pub(crate) kind: Kind,
}

// Field numbers of `wireType`, in Go's declaration order.
const ARRAY_T: u64 = 0;
const SLICE_T: u64 = 1;
const STRUCT_T: u64 = 2;
const MAP_T: u64 = 3;
const GOB_ENCODER_T: u64 = 4;
const BINARY_MARSHALER_T: u64 = 5;
const TEXT_MARSHALER_T: u64 = 6;

impl WireType {
    /// The type ids this definition refers to.
    pub(crate) fn refs(&self) -> Vec<i64> {
        match &self.kind {
            Kind::Array { elem, .. } | Kind::Slice { elem } => vec![*elem],
            Kind::Map { key, elem } => vec![*key, *elem],
            Kind::Struct { fields } => fields.iter().map(|field| field.id).collect(),
            Kind::GobEncoder | Kind::BinaryMarshaler | Kind::TextMarshaler => Vec::new(),
        }
    }

    /// A copy with its own id and every id it refers to passed through `map`.
    pub(crate) fn renumbered(&self, id: i64, map: impl Fn(i64) -> i64) -> WireType {
        let kind = match &self.kind {
            Kind::Array { elem, len } => Kind::Array { elem: map(*elem), len: *len },
            Kind::Slice { elem } => Kind::Slice { elem: map(*elem) },
            Kind::Map { key, elem } => Kind::Map { key: map(*key), elem: map(*elem) },
            Kind::Struct { fields } => Kind::Struct {
                fields: fields.iter().map(|f| FieldDef { name: f.name.clone(), id: map(f.id) }).collect(),
            },
            other => other.clone(),
        };
        WireType { name: self.name.clone(), id, kind }
    }

    /// Whether values of this type are encoded as structs (field deltas
    /// and a terminator) rather than as singletons at the top level.
    pub(crate) fn is_struct(&self) -> bool {
        matches!(self.kind, Kind::Struct { .. })
    }

    /// Append the encoding of this definition as a `wireType` value (the
    /// body of a definition message after the negated id). Zero fields are
    /// left out, as Go's encoder leaves them out.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let field = match &self.kind {
            Kind::Array { .. } => ARRAY_T,
            Kind::Slice { .. } => SLICE_T,
            Kind::Struct { .. } => STRUCT_T,
            Kind::Map { .. } => MAP_T,
            Kind::GobEncoder => GOB_ENCODER_T,
            Kind::BinaryMarshaler => BINARY_MARSHALER_T,
            Kind::TextMarshaler => TEXT_MARSHALER_T,
        };
        let mut outer = Fields::new();
        outer.field(out, field);
        let mut inner = Fields::new();
        // Every kind starts with its embedded CommonType, a struct, so
        // always sent.
        inner.field(out, 0);
        self.encode_common(out);
        match &self.kind {
            Kind::Array { elem, len } => {
                inner.int(out, 1, *elem);
                inner.int(out, 2, i64::try_from(*len).unwrap_or(i64::MAX));
            }
            Kind::Slice { elem } => inner.int(out, 1, *elem),
            Kind::Map { key, elem } => {
                inner.int(out, 1, *key);
                inner.int(out, 2, *elem);
            }
            Kind::Struct { fields } => {
                if !fields.is_empty() {
                    inner.field(out, 1);
                    put_uint(out, fields.len() as u64);
                    for field in fields {
                        let mut def = Fields::new();
                        def.string(out, 0, &field.name);
                        def.int(out, 1, field.id);
                        Fields::end(out);
                    }
                }
            }
            Kind::GobEncoder | Kind::BinaryMarshaler | Kind::TextMarshaler => {}
        }
        Fields::end(out);
        Fields::end(out);
    }

    fn encode_common(&self, out: &mut Vec<u8>) {
        let mut common = Fields::new();
        common.string(out, 0, &self.name);
        common.int(out, 1, self.id);
        Fields::end(out);
    }

    /// Read a `wireType` value; exactly one of its kinds must be set.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<WireType, GobError> {
        let mut found = None;
        struct_fields(r, TEXT_MARSHALER_T, "a type definition", |r, field| {
            if found.is_some() {
                return Err(malformed("a type definition sets more than one kind"));
            }
            found = Some(match field {
                ARRAY_T => {
                    let (mut common, mut elem, mut len) = (Common::default(), 0, 0);
                    struct_fields(r, 2, "an array type", |r, f| {
                        match f {
                            0 => common = Common::decode(r)?,
                            1 => elem = r.read_int("an element type id")?,
                            _ => len = r.read_int("an array length")?,
                        }
                        Ok(())
                    })?;
                    let len = usize::try_from(len).map_err(|_| malformed("a negative array length"))?;
                    common.with(Kind::Array { elem, len })
                }
                SLICE_T => {
                    let (mut common, mut elem) = (Common::default(), 0);
                    struct_fields(r, 1, "a slice type", |r, f| {
                        match f {
                            0 => common = Common::decode(r)?,
                            _ => elem = r.read_int("an element type id")?,
                        }
                        Ok(())
                    })?;
                    common.with(Kind::Slice { elem })
                }
                STRUCT_T => {
                    let (mut common, mut fields) = (Common::default(), Vec::new());
                    struct_fields(r, 1, "a struct type", |r, f| {
                        match f {
                            0 => common = Common::decode(r)?,
                            // Each field takes at least its terminator byte.
                            _ => {
                                let count = r.read_count("a field count", 1)?;
                                fields = Vec::with_capacity(count);
                                for _ in 0..count {
                                    fields.push(decode_field(r)?);
                                }
                            }
                        }
                        Ok(())
                    })?;
                    common.with(Kind::Struct { fields })
                }
                MAP_T => {
                    let (mut common, mut key, mut elem) = (Common::default(), 0, 0);
                    struct_fields(r, 2, "a map type", |r, f| {
                        match f {
                            0 => common = Common::decode(r)?,
                            1 => key = r.read_int("a key type id")?,
                            _ => elem = r.read_int("an element type id")?,
                        }
                        Ok(())
                    })?;
                    common.with(Kind::Map { key, elem })
                }
                marshaler => {
                    let mut common = Common::default();
                    struct_fields(r, 0, "a marshaler type", |r, _| {
                        common = Common::decode(r)?;
                        Ok(())
                    })?;
                    common.with(match marshaler {
                        GOB_ENCODER_T => Kind::GobEncoder,
                        BINARY_MARSHALER_T => Kind::BinaryMarshaler,
                        _ => Kind::TextMarshaler,
                    })
                }
            });
            Ok(())
        })?;
        found.ok_or_else(|| malformed("a type definition sets no kind"))
    }
}

fn malformed(message: &str) -> GobError {
    GobError::Malformed(message.to_owned())
}

/// `CommonType`: the name and the repeated id.
#[derive(Default)]
struct Common {
    name: String,
    id: i64,
}

impl Common {
    fn decode(r: &mut Reader<'_>) -> Result<Common, GobError> {
        let mut common = Common::default();
        struct_fields(r, 1, "a type's name and id", |r, f| {
            match f {
                0 => common.name = read_name(r, "a type name")?,
                _ => common.id = r.read_int("a type id")?,
            }
            Ok(())
        })?;
        Ok(common)
    }

    fn with(self, kind: Kind) -> WireType {
        WireType { name: self.name, id: self.id, kind }
    }
}

fn decode_field(r: &mut Reader<'_>) -> Result<FieldDef, GobError> {
    let mut field = FieldDef { name: String::new(), id: 0 };
    struct_fields(r, 1, "a struct field definition", |r, f| {
        match f {
            0 => field.name = read_name(r, "a field name")?,
            _ => field.id = r.read_int("a field type id")?,
        }
        Ok(())
    })?;
    if field.name.is_empty() {
        // Go: "empty name for remote field".
        return Err(malformed("a struct field definition has no name"));
    }
    Ok(field)
}

fn read_name(r: &mut Reader<'_>, what: &'static str) -> Result<String, GobError> {
    let bytes = r.read_bytes(what)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| GobError::Malformed(format!("{what} is not UTF-8")))
}

/// Read the fields of one struct value whose field numbers go up to
/// `max_field`, handing each to `each`, up to the terminating zero delta.
fn struct_fields<'de>(
    r: &mut Reader<'de>,
    max_field: u64,
    what: &'static str,
    mut each: impl FnMut(&mut Reader<'de>, u64) -> Result<(), GobError>,
) -> Result<(), GobError> {
    // The field number before the first field is -1, so the first delta
    // is the field number plus one.
    let mut next: u64 = 0;
    loop {
        let delta = r.read_uint(what)?;
        if delta == 0 {
            return Ok(());
        }
        let field = next
            .checked_add(delta - 1)
            .filter(|field| *field <= max_field)
            .ok_or_else(|| GobError::Malformed(format!("{what} has a field number beyond its last field")))?;
        each(r, field)?;
        next = field + 1;
    }
}

/// Writes the fields of one struct value: deltas from the last field sent.
struct Fields {
    last: i64,
}

impl Fields {
    fn new() -> Fields {
        Fields { last: -1 }
    }

    fn field(&mut self, out: &mut Vec<u8>, number: u64) {
        let number = number as i64;
        put_uint(out, (number - self.last) as u64);
        self.last = number;
    }

    fn int(&mut self, out: &mut Vec<u8>, number: u64, value: i64) {
        if value != 0 {
            self.field(out, number);
            put_int(out, value);
        }
    }

    fn string(&mut self, out: &mut Vec<u8>, number: u64, value: &str) {
        if !value.is_empty() {
            self.field(out, number);
            put_bytes(out, value.as_bytes());
        }
    }

    fn end(out: &mut Vec<u8>) {
        put_uint(out, 0);
    }
}

/// A definition as a table keeps it: parsed, and the bytes it came in (to
/// forward it unchanged in a self-contained message).
#[derive(Clone, Debug)]
pub(crate) struct Def {
    /// The parsed definition.
    pub(crate) wire: Arc<WireType>,
    /// Its `wireType` encoding as received.
    pub(crate) raw: Arc<[u8]>,
}

/// The definitions one stream (or one message) made, by id.
#[derive(Debug, Default)]
pub(crate) struct TypeTable {
    defs: HashMap<i64, Def>,
    raw_bytes: usize,
}

impl TypeTable {
    /// The definition of `id`, if it was made.
    pub(crate) fn get(&self, id: i64) -> Option<&Def> {
        self.defs.get(&id)
    }

    /// How many definitions the table holds.
    pub(crate) fn len(&self) -> usize {
        self.defs.len()
    }

    /// The bytes of every definition held, together.
    pub(crate) fn raw_bytes(&self) -> usize {
        self.raw_bytes
    }

    /// Record a definition; the caller checked it with [`check_new_id`].
    pub(crate) fn insert(&mut self, id: i64, def: Def) {
        self.raw_bytes += def.raw.len();
        self.defs.insert(id, def);
    }

    /// Every definition, by id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (i64, &Def)> {
        self.defs.iter().map(|(id, def)| (*id, def))
    }

    /// Move every definition of `other` into this table.
    pub(crate) fn absorb(&mut self, other: TypeTable) {
        for (id, def) in other.defs {
            self.insert(id, def);
        }
    }
}

/// Check that a peer may define `id` now: not a predefined id, not one it
/// defined already (Go: "duplicate type received"), within `max_types`.
pub(crate) fn check_new_id(id: i64, taken: bool, defined: usize, max_types: usize) -> Result<(), GobError> {
    if !(ids::FIRST_USER..=ids::MAX).contains(&id) {
        return Err(GobError::Malformed(format!("a definition of type id {id}, outside 64..=2^31-1")));
    }
    if taken {
        return Err(GobError::DuplicateType(id));
    }
    if defined >= max_types {
        return Err(GobError::TooManyTypes { max: max_types });
    }
    Ok(())
}

/// Every user type id reachable from `roots` through `lookup`, and whether
/// the interface type is among the types reached. An id that is neither
/// basic nor defined is an error.
pub(crate) fn closure<'a>(
    roots: impl IntoIterator<Item = i64>,
    lookup: impl Fn(i64) -> Option<&'a WireType>,
) -> Result<(BTreeSet<i64>, bool), GobError> {
    let mut seen = BTreeSet::new();
    let mut interface = false;
    let mut stack: Vec<i64> = roots.into_iter().collect();
    while let Some(id) = stack.pop() {
        if ids::is_builtin(id) {
            interface |= id == ids::INTERFACE;
            continue;
        }
        if seen.contains(&id) {
            continue;
        }
        let wire = lookup(id).ok_or(GobError::UndefinedType(id))?;
        seen.insert(id);
        stack.extend(wire.refs());
    }
    Ok((seen, interface))
}
