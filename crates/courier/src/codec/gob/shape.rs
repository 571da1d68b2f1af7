//! From a captured [`Node`] tree to a gob message: the types the tree
//! shows, their definitions, then the value.
//!
//! A type is only as known as the values show it: the elements of one
//! sequence (the values of one map, the fields of one name across them)
//! are merged into one shape, so a slice of structs whose elements leave
//! different fields empty still defines every field some element has. What
//! no value shows (the element of an empty sequence, a `None`) stays
//! unknown: a struct field of unknown type is zero in every value, so Go
//! would omit it anyway and it is left out of the definition; elsewhere a
//! documented fallback is used (see the module docs of `gob`, "Empty
//! collections").

use std::collections::HashMap;

use super::GobError;
use super::ser::{FieldNode, Node, StructNode};
use super::types::{FieldDef, Kind, WireType, ids};
use super::wire::{put_bytes, put_float, put_int, put_message, put_uint};

/// What the values showed of a type.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// Nothing (only `None`s).
    Unknown,
    /// Only empty sequences: a slice or a []byte, element unknown.
    EmptySeq,
    Bool,
    Int,
    Uint,
    Float,
    Complex,
    String,
    Bytes,
    /// Unit variants of one enum (strings), with the variants seen.
    Units {
        enum_name: &'static str,
        variants: Vec<&'static str>,
    },
    Slice(Box<Shape>),
    Array(usize, Box<Shape>),
    Map(Box<Shape>, Box<Shape>),
    Struct(StructShape),
}

#[derive(Debug, Clone, PartialEq)]
struct StructShape {
    name: &'static str,
    enum_name: Option<&'static str>,
    fields: Vec<FieldShape>,
}

#[derive(Debug, Clone, PartialEq)]
struct FieldShape {
    name: &'static str,
    shape: Shape,
    forced: bool,
}

impl Shape {
    fn describe(&self) -> String {
        match self {
            Shape::Unknown => "nothing".into(),
            Shape::EmptySeq => "an empty sequence".into(),
            Shape::Bool => "a bool".into(),
            Shape::Int => "a signed integer".into(),
            Shape::Uint => "an unsigned integer".into(),
            Shape::Float => "a float".into(),
            Shape::Complex => "a complex number".into(),
            Shape::String => "a string".into(),
            Shape::Bytes => "bytes".into(),
            Shape::Units { enum_name, .. } => format!("a unit variant of {enum_name}"),
            Shape::Slice(_) => "a sequence".into(),
            Shape::Array(len, _) => format!("a tuple of {len}"),
            Shape::Map(..) => "a map".into(),
            Shape::Struct(s) => format!("the struct {}", s.name),
        }
    }

    /// Whether a struct field of this shape can be left out of its
    /// struct's definition: every value of it seen was zero and said
    /// nothing about its type.
    fn uninformative(&self) -> bool {
        match self {
            Shape::Unknown | Shape::EmptySeq => true,
            Shape::Map(key, elem) => **key == Shape::Unknown && **elem == Shape::Unknown,
            _ => false,
        }
    }
}

fn shape_of(node: &Node) -> Result<Shape, GobError> {
    Ok(match node {
        Node::Bool(_) => Shape::Bool,
        Node::Int(_) => Shape::Int,
        Node::Uint(_) | Node::U8(_) => Shape::Uint,
        Node::Float(_) => Shape::Float,
        Node::Complex(..) => Shape::Complex,
        Node::Str(_) => Shape::String,
        Node::Bytes(_) => Shape::Bytes,
        Node::None => Shape::Unknown,
        Node::Seq(items) => match elements(items, "a sequence")? {
            None => Shape::EmptySeq,
            Some(elem) => Shape::Slice(Box::new(elem)),
        },
        Node::Tuple(items) => {
            let elem = elements(items, "a tuple")?.unwrap_or(Shape::Unknown);
            Shape::Array(items.len(), Box::new(elem))
        }
        Node::Map(pairs) => {
            let (mut key, mut elem) = (Shape::Unknown, Shape::Unknown);
            for (k, v) in pairs {
                no_none(k, "a map key")?;
                no_none(v, "a map value")?;
                key = merge(key, shape_of(k)?).map_err(|err| context(err, "the keys of a map"))?;
                elem = merge(elem, shape_of(v)?).map_err(|err| context(err, "the values of a map"))?;
            }
            Shape::Map(Box::new(key), Box::new(elem))
        }
        Node::Struct(s) => Shape::Struct(struct_shape(s)?),
        Node::UnitVariant { enum_name, variant } => Shape::Units { enum_name, variants: vec![variant] },
    })
}

fn struct_shape(s: &StructNode) -> Result<StructShape, GobError> {
    let mut fields: Vec<FieldShape> = Vec::with_capacity(s.fields.len());
    for field in &s.fields {
        if field.forced && matches!(field.value, Node::None) {
            return Err(GobError::Encode(format!(
                "the variant {} of {} carries None, which gob cannot send",
                field.name, s.name
            )));
        }
        let shape = shape_of(&field.value)?;
        fields.push(FieldShape { name: field.name, shape, forced: field.forced });
    }
    Ok(StructShape { name: s.name, enum_name: s.enum_name, fields })
}

fn no_none(node: &Node, what: &str) -> Result<(), GobError> {
    if matches!(node, Node::None) {
        return Err(GobError::Encode(format!(
            "None cannot be sent as {what}: gob has no nil (Go cannot send a nil pointer there either)"
        )));
    }
    Ok(())
}

/// The merged shape of a sequence's elements, `None` if it has none.
fn elements(items: &[Node], what: &str) -> Result<Option<Shape>, GobError> {
    let mut merged: Option<Shape> = None;
    for item in items {
        no_none(item, &format!("an element of {what}"))?;
        let shape = shape_of(item)?;
        merged = Some(match merged {
            None => shape,
            Some(prev) => {
                merge(prev, shape).map_err(|err| context(err, &format!("the elements of {what}")))?
            }
        });
    }
    Ok(merged)
}

fn context(err: GobError, what: &str) -> GobError {
    match err {
        GobError::Encode(message) => GobError::Encode(format!("{what}: {message}")),
        other => other,
    }
}

/// One shape for two values of one Rust type (or a clear error when they
/// cannot be one gob type).
fn merge(a: Shape, b: Shape) -> Result<Shape, GobError> {
    Ok(match (a, b) {
        (Shape::Unknown, other) | (other, Shape::Unknown) => other,
        (a, b) if a == b => a,
        (Shape::EmptySeq, other @ (Shape::Slice(_) | Shape::Bytes))
        | (other @ (Shape::Slice(_) | Shape::Bytes), Shape::EmptySeq) => other,
        // serde_json::Value and friends: a number that is not negative
        // comes as unsigned. Signed covers both (checked when written).
        (Shape::Int, Shape::Uint) | (Shape::Uint, Shape::Int) => Shape::Int,
        (Shape::Slice(a), Shape::Slice(b)) => Shape::Slice(Box::new(merge(*a, *b)?)),
        (Shape::Array(n, a), Shape::Array(m, b)) if n == m => Shape::Array(n, Box::new(merge(*a, *b)?)),
        (Shape::Map(ka, va), Shape::Map(kb, vb)) => {
            Shape::Map(Box::new(merge(*ka, *kb)?), Box::new(merge(*va, *vb)?))
        }
        (Shape::Units { enum_name, mut variants }, Shape::Units { enum_name: other, variants: more })
            if enum_name == other =>
        {
            for variant in more {
                if !variants.contains(&variant) {
                    variants.push(variant);
                }
            }
            Shape::Units { enum_name, variants }
        }
        (Shape::Struct(s), Shape::Units { enum_name, variants })
        | (Shape::Units { enum_name, variants }, Shape::Struct(s))
            if s.enum_name == Some(enum_name) =>
        {
            // Unit variants beside variants that carry data: each becomes a
            // field holding an empty struct, like the others' payloads.
            let units = variants.into_iter().map(|variant| FieldShape {
                name: variant,
                shape: Shape::Struct(StructShape { name: "struct {}", enum_name: None, fields: Vec::new() }),
                forced: true,
            });
            let units = StructShape { name: s.name, enum_name: s.enum_name, fields: units.collect() };
            Shape::Struct(merge_structs(s, units)?)
        }
        (Shape::Struct(a), Shape::Struct(b)) => Shape::Struct(merge_structs(a, b)?),
        (a, b) => {
            return Err(GobError::Encode(format!(
                "{} and {} cannot be one gob type",
                a.describe(),
                b.describe()
            )));
        }
    })
}

fn merge_structs(mut a: StructShape, b: StructShape) -> Result<StructShape, GobError> {
    let mut cursor = 0;
    for field in b.fields {
        // Fields mostly come in the same order: look where the last one
        // matched first.
        let found = match a.fields.get(cursor) {
            Some(f) if f.name == field.name => Some(cursor),
            _ => a.fields.iter().position(|f| f.name == field.name),
        };
        match found {
            Some(index) => {
                let slot = &mut a.fields[index];
                let shape = std::mem::replace(&mut slot.shape, Shape::Unknown);
                slot.shape = merge(shape, field.shape)
                    .map_err(|err| context(err, &format!("the field {} of {}", field.name, a.name)))?;
                slot.forced |= field.forced;
                cursor = index + 1;
            }
            None => {
                a.fields.insert(cursor.min(a.fields.len()), field);
                cursor += 1;
            }
        }
    }
    Ok(a)
}

/// A type with its id, as values are written against it.
#[derive(Debug)]
enum Ty {
    Bool,
    Int,
    Uint,
    Float,
    Complex,
    String,
    Bytes,
    Slice { id: i64, elem: Box<Ty> },
    Array { id: i64, len: usize, elem: Box<Ty> },
    Map { id: i64, key: Box<Ty>, elem: Box<Ty> },
    Struct { id: i64, fields: Vec<(&'static str, Ty)> },
}

impl Ty {
    fn id(&self) -> i64 {
        match self {
            Ty::Bool => ids::BOOL,
            Ty::Int => ids::INT,
            Ty::Uint => ids::UINT,
            Ty::Float => ids::FLOAT,
            Ty::Complex => ids::COMPLEX,
            Ty::String => ids::STRING,
            Ty::Bytes => ids::BYTES,
            Ty::Slice { id, .. } | Ty::Array { id, .. } | Ty::Map { id, .. } | Ty::Struct { id, .. } => *id,
        }
    }

    fn go_name(&self, defs: &Definitions) -> String {
        match self {
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::Uint => "uint".into(),
            Ty::Float => "float64".into(),
            Ty::Complex => "complex128".into(),
            Ty::String => "string".into(),
            Ty::Bytes => "[]uint8".into(),
            Ty::Slice { id, .. } | Ty::Array { id, .. } | Ty::Map { id, .. } | Ty::Struct { id, .. } => {
                defs.name_of(*id)
            }
        }
    }
}

/// The definitions one message needs, structurally identical types once.
#[derive(Default)]
struct Definitions {
    list: Vec<WireType>,
    by_shape: HashMap<Vec<u8>, i64>,
}

impl Definitions {
    fn define(&mut self, name: String, kind: Kind) -> i64 {
        let wire = WireType { name, id: 0, kind };
        let mut key = Vec::new();
        wire.encode(&mut key);
        if let Some(id) = self.by_shape.get(&key) {
            return *id;
        }
        let id = ids::FIRST_ASSIGNED + self.list.len() as i64;
        self.list.push(WireType { id, ..wire });
        self.by_shape.insert(key, id);
        id
    }

    fn name_of(&self, id: i64) -> String {
        let index = usize::try_from(id - ids::FIRST_ASSIGNED).unwrap_or(usize::MAX);
        self.list.get(index).map(|wire| wire.name.clone()).unwrap_or_default()
    }
}

/// `user_id` → `UserId`, `x` → `X`; a name that starts with an uppercase
/// letter (`#[serde(rename = "UserID")]`) is kept: Go sends and matches
/// only exported (capitalized) field names.
pub(crate) fn go_field_name(name: &str) -> String {
    if name.chars().next().is_some_and(char::is_uppercase) {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for part in name.split('_').filter(|part| !part.is_empty()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    if out.is_empty() { name.to_owned() } else { out }
}

/// Give `shape` an id, defining what it needs. `key` tells the fallback
/// for a type no value showed: a map key falls back to string, anything
/// else to int (see the module docs of `gob`).
fn resolve(shape: &Shape, defs: &mut Definitions, key: bool) -> Result<Ty, GobError> {
    Ok(match shape {
        Shape::Unknown if key => Ty::String,
        Shape::Unknown => Ty::Int,
        Shape::EmptySeq => resolve(&Shape::Slice(Box::new(Shape::Unknown)), defs, false)?,
        Shape::Bool => Ty::Bool,
        Shape::Int => Ty::Int,
        Shape::Uint => Ty::Uint,
        Shape::Float => Ty::Float,
        Shape::Complex => Ty::Complex,
        Shape::String | Shape::Units { .. } => Ty::String,
        Shape::Bytes => Ty::Bytes,
        Shape::Slice(elem) => {
            let elem = resolve(elem, defs, false)?;
            let name = format!("[]{}", elem.go_name(defs));
            let id = defs.define(name, Kind::Slice { elem: elem.id() });
            Ty::Slice { id, elem: Box::new(elem) }
        }
        Shape::Array(len, elem) => {
            let elem = resolve(elem, defs, false)?;
            let name = format!("[{len}]{}", elem.go_name(defs));
            let id = defs.define(name, Kind::Array { elem: elem.id(), len: *len });
            Ty::Array { id, len: *len, elem: Box::new(elem) }
        }
        Shape::Map(key, elem) => {
            let key = resolve(key, defs, true)?;
            let elem = resolve(elem, defs, false)?;
            let name = format!("map[{}]{}", key.go_name(defs), elem.go_name(defs));
            let id = defs.define(name, Kind::Map { key: key.id(), elem: elem.id() });
            Ty::Map { id, key: Box::new(key), elem: Box::new(elem) }
        }
        Shape::Struct(s) => {
            let mut fields = Vec::with_capacity(s.fields.len());
            let mut wire_fields: Vec<FieldDef> = Vec::with_capacity(s.fields.len());
            for field in &s.fields {
                if !field.forced && field.shape.uninformative() {
                    continue;
                }
                let ty = resolve(&field.shape, defs, false)?;
                let name = go_field_name(field.name);
                if wire_fields.iter().any(|f| f.name == name) {
                    return Err(GobError::Encode(format!(
                        "two fields of {} are both sent as the Go field {name}",
                        s.name
                    )));
                }
                wire_fields.push(FieldDef { name, id: ty.id() });
                fields.push((field.name, ty));
            }
            let id = defs.define(s.name.to_owned(), Kind::Struct { fields: wire_fields });
            Ty::Struct { id, fields }
        }
    })
}

/// Write the message for `node`: each definition in a message of its
/// own, then the value.
pub(crate) fn write_message(node: &Node, out: &mut Vec<u8>) -> Result<(), GobError> {
    no_none(node, "a top-level value")?;
    let shape = shape_of(node)?;
    let mut defs = Definitions::default();
    let ty = resolve(&shape, &mut defs, false)?;

    let mut body = Vec::new();
    put_int(&mut body, ty.id());
    match &ty {
        Ty::Struct { fields, .. } => write_struct(node, fields, &mut body)?,
        // A value that is not a struct is sent as the only field of a
        // struct: field delta 0, then the value (doc.go).
        _ => {
            put_uint(&mut body, 0);
            write_value(node, &ty, &mut body)?;
        }
    }

    let mut def = Vec::new();
    for wire in &defs.list {
        def.clear();
        put_int(&mut def, -wire.id);
        wire.encode(&mut def);
        put_message(out, &def);
    }
    put_message(out, &body);
    Ok(())
}

fn mismatch(node: &Node, ty: &Ty) -> GobError {
    GobError::Encode(format!("a value ({node:?}) does not fit its merged gob type ({ty:?})"))
}

fn write_value(node: &Node, ty: &Ty, out: &mut Vec<u8>) -> Result<(), GobError> {
    match (ty, node) {
        (Ty::Bool, Node::Bool(b)) => put_uint(out, u64::from(*b)),
        (Ty::Int, Node::Int(i)) => put_int(out, *i),
        (Ty::Int, Node::Uint(u)) => {
            let i = i64::try_from(*u).map_err(|_| {
                GobError::Encode(format!("{u} is beside negative numbers in one sequence but exceeds i64"))
            })?;
            put_int(out, i);
        }
        (Ty::Int, Node::U8(u)) => put_int(out, i64::from(*u)),
        (Ty::Uint, Node::Uint(u)) => put_uint(out, *u),
        (Ty::Uint, Node::U8(u)) => put_uint(out, u64::from(*u)),
        (Ty::Float, Node::Float(f)) => put_float(out, *f),
        (Ty::Complex, Node::Complex(re, im)) => {
            put_float(out, *re);
            put_float(out, *im);
        }
        (Ty::String, Node::Str(s)) => put_bytes(out, s.as_bytes()),
        (Ty::String, Node::UnitVariant { variant, .. }) => put_bytes(out, variant.as_bytes()),
        (Ty::Bytes, Node::Bytes(b)) => put_bytes(out, b),
        (Ty::Bytes, Node::Seq(items)) if items.is_empty() => put_uint(out, 0),
        (Ty::Slice { elem, .. }, Node::Seq(items)) => {
            put_uint(out, items.len() as u64);
            for item in items {
                write_value(item, elem, out)?;
            }
        }
        (Ty::Array { elem, len, .. }, Node::Tuple(items)) if items.len() == *len => {
            put_uint(out, items.len() as u64);
            for item in items {
                write_value(item, elem, out)?;
            }
        }
        (Ty::Map { key, elem, .. }, Node::Map(pairs)) => {
            put_uint(out, pairs.len() as u64);
            for (k, v) in pairs {
                write_value(k, key, out)?;
                write_value(v, elem, out)?;
            }
        }
        (Ty::Struct { fields, .. }, node) => write_struct(node, fields, out)?,
        (ty, node) => return Err(mismatch(node, ty)),
    }
    Ok(())
}

/// A struct value: the fields that are sent, as (field number delta,
/// value) in field-number order, then a zero delta.
fn write_struct(node: &Node, fields: &[(&'static str, Ty)], out: &mut Vec<u8>) -> Result<(), GobError> {
    let unit_field;
    let node_fields: &[FieldNode] = match node {
        Node::Struct(s) => &s.fields,
        Node::UnitVariant { variant, .. } => {
            let empty = StructNode { name: "struct {}", enum_name: None, fields: Vec::new() };
            unit_field = [FieldNode { name: variant, value: Node::Struct(empty), forced: true }];
            &unit_field
        }
        other => return Err(GobError::Encode(format!("a value ({other:?}) where a struct was expected"))),
    };
    let mut sent: Vec<(usize, &FieldNode)> = Vec::with_capacity(node_fields.len());
    let mut cursor = 0;
    for field in node_fields {
        if !field.forced && field.value.is_zero() {
            continue;
        }
        let index = match fields.get(cursor) {
            Some((name, _)) if *name == field.name => cursor,
            _ => fields.iter().position(|(name, _)| *name == field.name).ok_or_else(|| {
                GobError::Encode(format!("the field {} is missing from its merged gob type", field.name))
            })?,
        };
        cursor = index + 1;
        sent.push((index, field));
    }
    if !sent.is_sorted_by_key(|(index, _)| *index) {
        sent.sort_by_key(|(index, _)| *index);
    }
    let mut last: i64 = -1;
    for (index, field) in sent {
        let number = index as i64;
        put_uint(out, (number - last) as u64);
        last = number;
        let (_, ty) = &fields[index];
        write_value(&field.value, ty, out)?;
    }
    put_uint(out, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_names_are_pascal_case_and_capitalized_names_stay() {
        assert_eq!(go_field_name("x"), "X");
        assert_eq!(go_field_name("user_id"), "UserId");
        assert_eq!(go_field_name("service_method"), "ServiceMethod");
        assert_eq!(go_field_name("UserID"), "UserID");
        assert_eq!(go_field_name("_private"), "Private");
        assert_eq!(go_field_name("a__b"), "AB");
        assert_eq!(go_field_name("_"), "_");
    }

    #[test]
    fn merging_structs_keeps_every_field_any_element_shows() {
        let a = Shape::Struct(StructShape {
            name: "Item",
            enum_name: None,
            fields: vec![
                FieldShape { name: "a", shape: Shape::Int, forced: false },
                FieldShape { name: "tags", shape: Shape::EmptySeq, forced: false },
            ],
        });
        let b = Shape::Struct(StructShape {
            name: "Item",
            enum_name: None,
            fields: vec![
                FieldShape { name: "a", shape: Shape::Int, forced: false },
                FieldShape { name: "tags", shape: Shape::Slice(Box::new(Shape::String)), forced: false },
                FieldShape { name: "b", shape: Shape::Bool, forced: false },
            ],
        });
        let Shape::Struct(merged) = merge(a, b).expect("merge") else { panic!("a struct") };
        let names: Vec<_> = merged.fields.iter().map(|f| (f.name, f.shape.clone())).collect();
        assert_eq!(
            names,
            [("a", Shape::Int), ("tags", Shape::Slice(Box::new(Shape::String))), ("b", Shape::Bool)]
        );
        assert!(merge(Shape::String, Shape::Int).is_err());
    }
}
