//! The serde side of encoding: a value becomes a [`Node`] tree.
//!
//! Gob sends a type definition before the first value of each type, and
//! serde gives values without types. So a value is first captured as a
//! tree that keeps what serde said about each part (a `u8` is not just an
//! unsigned integer: a sequence of them is Go's `[]byte`; a tuple is an
//! array; an enum variant is a struct with one field), then `shape.rs`
//! works out the types from the whole tree (merging the elements of every
//! sequence) and writes definitions and value.

use serde::ser::{self, Serialize};

use super::{COMPLEX_NAME, GobError};

/// A captured value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// `bool`.
    Bool(bool),
    /// Any signed integer.
    Int(i64),
    /// `u16`..`u64`, `usize`.
    Uint(u64),
    /// `u8`, kept apart: a sequence of them is `[]byte`.
    U8(u8),
    /// `f32`, `f64`.
    Float(f64),
    /// [`super::Complex`].
    Complex(f64, f64),
    /// `str`, `String`, `char`.
    Str(String),
    /// `serialize_bytes`, or a non-empty sequence of `u8`.
    Bytes(Vec<u8>),
    /// `Option::None`: sendable only as an omitted struct field.
    None,
    /// A sequence (`Vec`, slices, sets): a Go slice.
    Seq(Vec<Node>),
    /// A tuple or tuple struct: a Go array.
    Tuple(Vec<Node>),
    /// A map: a Go map.
    Map(Vec<(Node, Node)>),
    /// A struct, a unit or unit struct (no fields), or an enum variant
    /// that carries data (one forced field named after the variant).
    Struct(StructNode),
    /// A unit enum variant: a string with its name, or, beside variants
    /// that carry data in one sequence, a struct like theirs.
    UnitVariant {
        /// The enum's name.
        enum_name: &'static str,
        /// The variant's (serde) name.
        variant: &'static str,
    },
}

/// A captured struct.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StructNode {
    /// Its serde name (informational on the wire).
    pub(crate) name: &'static str,
    /// For the struct standing for an enum variant: the enum's name.
    pub(crate) enum_name: Option<&'static str>,
    /// The fields, by serde name, in serialization order.
    pub(crate) fields: Vec<FieldNode>,
}

/// A captured struct field.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldNode {
    /// The serde name (converted to a Go name when the type is defined).
    pub(crate) name: &'static str,
    /// The value.
    pub(crate) value: Node,
    /// Sent even when zero (an enum variant's payload: without it the
    /// receiver could not tell which variant it is).
    pub(crate) forced: bool,
}

impl Node {
    /// Whether Go would leave this out as a struct field (encode.go: zero
    /// numbers, false, empty strings, slices, maps and byte slices, nil
    /// pointers; never a struct or an array).
    pub(crate) fn is_zero(&self) -> bool {
        match self {
            Node::Bool(b) => !b,
            Node::Int(i) => *i == 0,
            Node::Uint(u) => *u == 0,
            Node::U8(u) => *u == 0,
            Node::Float(f) => *f == 0.0,
            Node::Complex(re, im) => *re == 0.0 && *im == 0.0,
            Node::Str(s) => s.is_empty(),
            Node::Bytes(b) => b.is_empty(),
            Node::None => true,
            Node::Seq(items) => items.is_empty(),
            Node::Map(pairs) => pairs.is_empty(),
            Node::Tuple(_) | Node::Struct(_) | Node::UnitVariant { .. } => false,
        }
    }
}

/// Capture `value`, nesting at most `max_depth` levels.
pub(crate) fn capture<T: Serialize + ?Sized>(value: &T, max_depth: usize) -> Result<Node, GobError> {
    value.serialize(Capture { depth: 0, max_depth })
}

/// The serializer: `depth` counts the composite levels above the value.
#[derive(Clone, Copy)]
struct Capture {
    depth: usize,
    max_depth: usize,
}

impl Capture {
    /// The serializer for the parts of a composite value one level down.
    fn deeper(self) -> Result<Capture, GobError> {
        if self.depth >= self.max_depth {
            return Err(GobError::TooDeep { max: self.max_depth });
        }
        Ok(Capture { depth: self.depth + 1, max_depth: self.max_depth })
    }
}

fn variant_struct(enum_name: &'static str, variant: &'static str, value: Node) -> Node {
    Node::Struct(StructNode {
        name: enum_name,
        enum_name: Some(enum_name),
        fields: vec![FieldNode { name: variant, value, forced: true }],
    })
}

impl ser::Serializer for Capture {
    type Ok = Node;
    type Error = GobError;
    type SerializeSeq = SeqCapture;
    type SerializeTuple = SeqCapture;
    type SerializeTupleStruct = SeqCapture;
    type SerializeTupleVariant = SeqCapture;
    type SerializeMap = MapCapture;
    type SerializeStruct = StructCapture;
    type SerializeStructVariant = StructCapture;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<Node, GobError> {
        Ok(Node::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Node, GobError> {
        Ok(Node::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Node, GobError> {
        Ok(Node::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Node, GobError> {
        Ok(Node::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Node, GobError> {
        Ok(Node::Int(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Node, GobError> {
        i64::try_from(v)
            .map(Node::Int)
            .map_err(|_| GobError::Encode(format!("{v} does not fit gob's 64-bit int")))
    }
    fn serialize_u8(self, v: u8) -> Result<Node, GobError> {
        Ok(Node::U8(v))
    }
    fn serialize_u16(self, v: u16) -> Result<Node, GobError> {
        Ok(Node::Uint(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Node, GobError> {
        Ok(Node::Uint(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Node, GobError> {
        Ok(Node::Uint(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Node, GobError> {
        u64::try_from(v)
            .map(Node::Uint)
            .map_err(|_| GobError::Encode(format!("{v} does not fit gob's 64-bit uint")))
    }
    fn serialize_f32(self, v: f32) -> Result<Node, GobError> {
        Ok(Node::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Result<Node, GobError> {
        Ok(Node::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Node, GobError> {
        Ok(Node::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Node, GobError> {
        Ok(Node::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Node, GobError> {
        Ok(Node::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Node, GobError> {
        Ok(Node::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Node, GobError> {
        // Gob flattens pointers: `Some(v)` is `v`, as `*T` is `T` in Go.
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Node, GobError> {
        Ok(Node::Struct(StructNode { name: "struct {}", enum_name: None, fields: Vec::new() }))
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<Node, GobError> {
        Ok(Node::Struct(StructNode { name, enum_name: None, fields: Vec::new() }))
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Node, GobError> {
        Ok(Node::UnitVariant { enum_name: name, variant })
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Node, GobError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Node, GobError> {
        let value = value.serialize(self.deeper()?)?;
        Ok(variant_struct(name, variant, value))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqCapture, GobError> {
        Ok(SeqCapture::new(self, SeqKind::Seq, len))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqCapture, GobError> {
        Ok(SeqCapture::new(self, SeqKind::Tuple, Some(len)))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqCapture, GobError> {
        Ok(SeqCapture::new(self, SeqKind::Tuple, Some(len)))
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqCapture, GobError> {
        // The variant's struct is one level, its array another.
        let inner = self.deeper()?;
        Ok(SeqCapture::new(inner, SeqKind::Variant { enum_name: name, variant }, Some(len)))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapCapture, GobError> {
        Ok(MapCapture { ser: self.deeper()?, pairs: Vec::with_capacity(cautious(len)), key: None })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<StructCapture, GobError> {
        Ok(StructCapture::new(self.deeper()?, name, None, len))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<StructCapture, GobError> {
        let inner = self.deeper()?.deeper()?;
        Ok(StructCapture::new(inner, variant, Some((name, variant)), len))
    }
}

/// A capacity from a size hint, capped: hints come from the value's own
/// `Serialize`, but a wrong one must not reserve gigabytes.
fn cautious(len: Option<usize>) -> usize {
    len.unwrap_or(0).min(4096)
}

enum SeqKind {
    Seq,
    Tuple,
    Variant { enum_name: &'static str, variant: &'static str },
}

/// Captures a sequence, tuple, tuple struct or tuple variant.
pub(crate) struct SeqCapture {
    ser: Capture,
    kind: SeqKind,
    items: Vec<Node>,
    error: Option<GobError>,
}

impl SeqCapture {
    fn new(ser: Capture, kind: SeqKind, len: Option<usize>) -> SeqCapture {
        // The depth check is deferred to the first element, so that the
        // serializer constructors stay infallible in one place.
        let (ser, error) = match ser.deeper() {
            Ok(ser) => (ser, None),
            Err(err) => (ser, Some(err)),
        };
        SeqCapture { ser, kind, items: Vec::with_capacity(cautious(len)), error }
    }

    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GobError> {
        if let Some(err) = self.error.take() {
            return Err(err);
        }
        self.items.push(value.serialize(self.ser)?);
        Ok(())
    }

    fn finish(self) -> Result<Node, GobError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        Ok(match self.kind {
            SeqKind::Seq => {
                // A sequence of u8 (`Vec<u8>`, `&[u8]`) is Go's []byte.
                if !self.items.is_empty() && self.items.iter().all(|item| matches!(item, Node::U8(_))) {
                    let bytes = self.items.iter().filter_map(|item| match item {
                        Node::U8(byte) => Some(*byte),
                        _ => None,
                    });
                    Node::Bytes(bytes.collect())
                } else {
                    Node::Seq(self.items)
                }
            }
            SeqKind::Tuple => Node::Tuple(self.items),
            SeqKind::Variant { enum_name, variant } => {
                variant_struct(enum_name, variant, Node::Tuple(self.items))
            }
        })
    }
}

impl ser::SerializeSeq for SeqCapture {
    type Ok = Node;
    type Error = GobError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GobError> {
        self.push(value)
    }
    fn end(self) -> Result<Node, GobError> {
        self.finish()
    }
}

impl ser::SerializeTuple for SeqCapture {
    type Ok = Node;
    type Error = GobError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GobError> {
        self.push(value)
    }
    fn end(self) -> Result<Node, GobError> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for SeqCapture {
    type Ok = Node;
    type Error = GobError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GobError> {
        self.push(value)
    }
    fn end(self) -> Result<Node, GobError> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for SeqCapture {
    type Ok = Node;
    type Error = GobError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GobError> {
        self.push(value)
    }
    fn end(self) -> Result<Node, GobError> {
        self.finish()
    }
}

/// Captures a map.
pub(crate) struct MapCapture {
    ser: Capture,
    pairs: Vec<(Node, Node)>,
    key: Option<Node>,
}

impl ser::SerializeMap for MapCapture {
    type Ok = Node;
    type Error = GobError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), GobError> {
        self.key = Some(key.serialize(self.ser)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GobError> {
        let key =
            self.key.take().ok_or_else(|| GobError::Encode("a map value came before its key".into()))?;
        self.pairs.push((key, value.serialize(self.ser)?));
        Ok(())
    }
    fn end(self) -> Result<Node, GobError> {
        Ok(Node::Map(self.pairs))
    }
}

/// Captures a struct or struct variant ([`super::Complex`] becomes Go's
/// complex type).
pub(crate) struct StructCapture {
    ser: Capture,
    node: StructNode,
    /// For a struct variant: the enum and the variant.
    variant: Option<(&'static str, &'static str)>,
}

impl StructCapture {
    fn new(
        ser: Capture,
        name: &'static str,
        variant: Option<(&'static str, &'static str)>,
        len: usize,
    ) -> StructCapture {
        let node = StructNode { name, enum_name: None, fields: Vec::with_capacity(len.min(256)) };
        StructCapture { ser, node, variant }
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), GobError> {
        let value = value.serialize(self.ser)?;
        self.node.fields.push(FieldNode { name: key, value, forced: false });
        Ok(())
    }

    fn finish(self) -> Result<Node, GobError> {
        if self.node.name == COMPLEX_NAME && self.variant.is_none() {
            let part = |name: &str| {
                self.node.fields.iter().find(|f| f.name == name).and_then(|f| match f.value {
                    Node::Float(value) => Some(value),
                    _ => None,
                })
            };
            return match (part("re"), part("im")) {
                (Some(re), Some(im)) => Ok(Node::Complex(re, im)),
                _ => Err(GobError::Encode("a complex number needs float fields `re` and `im`".into())),
            };
        }
        let node = Node::Struct(self.node);
        Ok(match self.variant {
            Some((enum_name, variant)) => variant_struct(enum_name, variant, node),
            None => node,
        })
    }
}

impl ser::SerializeStruct for StructCapture {
    type Ok = Node;
    type Error = GobError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), GobError> {
        self.field(key, value)
    }
    fn end(self) -> Result<Node, GobError> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for StructCapture {
    type Ok = Node;
    type Error = GobError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), GobError> {
        self.field(key, value)
    }
    fn end(self) -> Result<Node, GobError> {
        self.finish()
    }
}
