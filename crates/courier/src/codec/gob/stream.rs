//! One connection's gob streams: [`StreamDecoder`] for the bytes a peer
//! sends, [`StreamEncoder`] for the bytes sent to it.
//!
//! On a connection, a type is defined once and then only referred to by
//! id; [`Gob`](super::Gob) messages are self-contained instead (each
//! carries the definitions it needs), so that a value can be decoded, or
//! encoded, on its own. These two translate: the decoder prefixes each
//! value with the definitions it refers to, the encoder drops the ones the
//! stream already carried and renumbers the rest into the stream's ids.

use std::collections::{BTreeSet, HashMap};

use bytes::{Buf, Bytes, BytesMut};

use super::de::{Decoder, define};
use super::types::{TypeTable, WireType, closure, ids};
use super::wire::{Reader, frame, put_int, put_message, put_uint};
use super::{GobError, Limits};

/// Per connection, reading direction: splits the connection's byte stream
/// into values, remembering the type definitions the peer sent (once per
/// connection).
#[derive(Debug)]
pub struct StreamDecoder {
    limits: Limits,
    table: TypeTable,
    /// Where (from the start of the buffer, which is the start of the value)
    /// the last read through a value spanning messages needed the next
    /// message: it is read through again only once that message is
    /// complete, not on every few bytes that arrive.
    waiting_at: Option<usize>,
}

impl StreamDecoder {
    /// A decoder for a new connection, enforcing `limits`: each message
    /// (and each value, with every message it spans) at most
    /// `max_message` bytes, at most `max_types` definitions on the stream,
    /// all of them together at most `max_message` bytes, values nested at
    /// most `max_depth` levels.
    pub fn new(limits: Limits) -> StreamDecoder {
        StreamDecoder { limits, table: TypeTable::default(), waiting_at: None }
    }

    /// The next complete value in `buf`, as a self-contained message (the
    /// value's message preceded by the definitions of every type it refers
    /// to, transitively, so [`Gob::decode`](super::Gob) can read it
    /// alone). Consumes from `buf` the bytes it used (type definitions
    /// included). `Ok(None)`: more bytes are needed (the definitions read
    /// so far are kept; nothing of a value is consumed).
    ///
    /// # Errors
    ///
    /// The stream is broken (bad framing, an oversized message, too many
    /// types, a duplicate or malformed definition, a value of an undefined
    /// type): the caller closes the connection.
    pub fn next_value(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, GobError> {
        let max_message = self.limits.max_message;
        loop {
            let Some((prefix, len)) = frame(&buf[..], max_message)? else { return Ok(None) };
            let total = prefix + len;
            let mut r = Reader::new(&buf[..total], max_message, usize::MAX);
            r.next_message()?;
            let id = r.read_int("a type id")?;
            if id < 0 {
                define(&mut r, &mut self.table, id, self.limits)?;
                if self.table.raw_bytes() > max_message {
                    return Err(too_many_definition_bytes(max_message));
                }
                buf.advance(total);
                continue;
            }
            let lookup = |id| self.table.get(id).map(|def| &*def.wire);
            // Also rejects id 0 and every id the stream never defined.
            let (mut needed, interface) = closure([id], lookup)?;
            if !interface {
                // Nothing in the value can define a type or span messages.
                let out = self.self_contained(&needed, &buf[..total]);
                buf.advance(total);
                return Ok(Some(out));
            }
            // An interface value may define types and continue in later
            // messages: read through the value to find its end and what it
            // refers to.
            if let Some(offset) = self.waiting_at
                && frame(buf.get(offset..).unwrap_or_default(), max_message)?.is_none()
            {
                return Ok(None);
            }
            let r = Reader::new(&buf[..], max_message, max_message);
            let mut dec = Decoder::new(r, &self.table, self.limits);
            let scanned = dec.r.next_message().and_then(|()| {
                dec.r.read_int("a type id")?;
                dec.skip_top(id)?;
                if dec.r.at_message_end() {
                    Ok(())
                } else {
                    Err(GobError::Malformed("bytes after the value in its message".into()))
                }
            });
            match scanned {
                Ok(()) => self.waiting_at = None,
                Err(_) if dec.r.wants_more => {
                    self.waiting_at = Some(dec.r.pos());
                    return Ok(None);
                }
                Err(err) => return Err(err),
            }
            let span = dec.r.pos();
            let (extra, interface_ids) = (dec.extra, dec.interface_ids);
            let roots = interface_ids.into_iter().chain(extra.iter().flat_map(|(_, def)| def.wire.refs()));
            let lookup = |id| extra.get(id).or_else(|| self.table.get(id)).map(|def| &*def.wire);
            let (more, _) = closure(roots, lookup)?;
            // Those defined inside the value stay where they are.
            needed.extend(more.into_iter().filter(|id| extra.get(*id).is_none()));
            if self.table.raw_bytes() + extra.raw_bytes() > max_message {
                return Err(too_many_definition_bytes(max_message));
            }
            let out = self.self_contained(&needed, &buf[..span]);
            self.table.absorb(extra);
            buf.advance(span);
            return Ok(Some(out));
        }
    }

    /// The definitions of `needed`, each as a message, then `value`.
    fn self_contained(&self, needed: &BTreeSet<i64>, value: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(value.len() + 64 * needed.len());
        let mut head = Vec::new();
        for (id, def) in needed.iter().filter_map(|id| self.table.get(*id).map(|def| (*id, def))) {
            head.clear();
            put_int(&mut head, -id);
            put_uint(&mut out, (head.len() + def.raw.len()) as u64);
            out.extend_from_slice(&head);
            out.extend_from_slice(&def.raw);
        }
        out.extend_from_slice(value);
        Bytes::from(out)
    }
}

fn too_many_definition_bytes(max: usize) -> GobError {
    GobError::Malformed(format!("the type definitions of the stream exceed {max} bytes together"))
}

/// Per connection, writing direction: sends each type's definition once,
/// in the stream's own id space.
#[derive(Debug)]
pub struct StreamEncoder {
    /// The definitions sent, by their encoding with the id left out: a
    /// structurally identical type is sent once.
    sent: HashMap<Vec<u8>, i64>,
    next_id: i64,
    /// The definitions sections of messages written before (byte for byte)
    /// and the stream id their value's type got: a value of a type sent
    /// before, the usual case (one Rust type per method), is written with
    /// its id swapped and nothing parsed. At most [`RECENT_SECTIONS`].
    recent: HashMap<Vec<u8>, (i64, i64)>,
}

/// How many distinct definitions sections a [`StreamEncoder`] remembers
/// for its fast path (beyond it, values take the full path, still right).
const RECENT_SECTIONS: usize = 256;

impl Default for StreamEncoder {
    fn default() -> StreamEncoder {
        StreamEncoder::new()
    }
}

impl StreamEncoder {
    /// An encoder for a new connection.
    pub fn new() -> StreamEncoder {
        StreamEncoder { sent: HashMap::new(), next_id: ids::FIRST_ASSIGNED, recent: HashMap::new() }
    }

    /// Append `message` (a self-contained message as
    /// [`Gob::encode`](super::Gob) makes it) to `out`: only the definitions
    /// this stream has not sent yet, with type ids renumbered into the
    /// stream's own id space (a structurally identical type already sent
    /// is reused; ids never collide or repeat, as Go rejects a duplicate
    /// definition), then the value.
    ///
    /// # Errors
    ///
    /// `message` is not a self-contained message, or its value holds a
    /// non-nil interface value (whose concrete type ids would need
    /// renumbering inside the value; [`Gob::encode`](super::Gob) never
    /// makes those). Nothing is written then.
    pub fn write_value(&mut self, message: &[u8], out: &mut BytesMut) -> Result<(), GobError> {
        let (value_at, local_id, body) = split_value(message)?;
        if let Some(&(known_local, stream_id)) = self.recent.get(&message[..value_at])
            && known_local == local_id
        {
            write_renumbered(out, stream_id, body);
            return Ok(());
        }
        let (stream_id, interface) = self.write_value_in_full(message, out)?;
        // A type with interfaces in it has its values checked every time
        // (a non-nil one cannot be re-sent), so it never takes the shortcut.
        if !interface && self.recent.len() < RECENT_SECTIONS {
            self.recent.insert(message[..value_at].to_vec(), (local_id, stream_id));
        }
        Ok(())
    }

    /// [`StreamEncoder::write_value`] without the fast path; the stream id
    /// the value's type got, and whether its types hold interfaces.
    fn write_value_in_full(&mut self, message: &[u8], out: &mut BytesMut) -> Result<(i64, bool), GobError> {
        let limits = Limits { max_message: usize::MAX, max_types: usize::MAX, ..Limits::default() };
        let mut local = TypeTable::default();
        let mut r = Reader::new(message, usize::MAX, usize::MAX);
        let id = loop {
            if r.at_input_end() {
                return Err(GobError::Truncated("a message before its value"));
            }
            r.next_message()?;
            let id = r.read_int("a type id")?;
            if id >= 0 {
                break id;
            }
            define(&mut r, &mut local, id, limits)?;
        };
        let (value_start, value_end) = (r.pos(), r.message_end());
        let (needed, interface) = closure([id], |id| local.get(id).map(|def| &*def.wire))?;
        if value_end != message.len() {
            return Err(GobError::Malformed("bytes after the value message".into()));
        }
        if interface {
            let mut dec = Decoder::new(r, &local, limits);
            dec.skip_top(id)?;
            if !dec.interface_ids.is_empty() {
                return Err(GobError::Unsupported(
                    "a value holding interface values cannot be re-sent on a stream".into(),
                ));
            }
        }
        if self.next_id.saturating_add(needed.len() as i64) > ids::MAX {
            return Err(GobError::Unsupported("the stream has used up Go's type ids".into()));
        }

        let lookup = |id: i64| local.get(id).map(|def| &*def.wire);
        let mut map: HashMap<i64, i64> = HashMap::with_capacity(needed.len());
        let mut def = Vec::new();
        let mut defs = Vec::new();
        match post_order(&needed, lookup) {
            Some(order) => {
                for local_id in order {
                    let Some(wire) = lookup(local_id) else { continue };
                    let renumbered = wire.renumbered(0, |id| map.get(&id).copied().unwrap_or(id));
                    let mut key = Vec::new();
                    renumbered.encode(&mut key);
                    let stream_id = match self.sent.get(&key) {
                        Some(stream_id) => *stream_id,
                        None => {
                            let stream_id = self.take_id();
                            emit(&mut defs, &mut def, &WireType { id: stream_id, ..renumbered });
                            self.sent.insert(key, stream_id);
                            stream_id
                        }
                    };
                    map.insert(local_id, stream_id);
                }
            }
            None => {
                // A recursive type: fresh ids for all, no reuse (its
                // encoding names its own id, so it could never match).
                for local_id in &needed {
                    let stream_id = self.take_id();
                    map.insert(*local_id, stream_id);
                }
                for local_id in &needed {
                    let Some(wire) = lookup(*local_id) else { continue };
                    let stream_id = map.get(local_id).copied().unwrap_or(*local_id);
                    let renumbered = wire.renumbered(stream_id, |id| map.get(&id).copied().unwrap_or(id));
                    emit(&mut defs, &mut def, &renumbered);
                }
            }
        }
        let stream_id = map.get(&id).copied().unwrap_or(id);
        let mut value = Vec::with_capacity(value_end - value_start + 4);
        put_int(&mut value, stream_id);
        value.extend_from_slice(message.get(value_start..value_end).unwrap_or(&[]));
        put_message(&mut defs, &value);
        out.extend_from_slice(&defs);
        Ok((stream_id, interface))
    }

    fn take_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// Where the value's message starts in a self-contained `message` (so
/// `message[..at]` is its definitions section), the value's type id, and
/// the value's bytes after the id.
fn split_value(message: &[u8]) -> Result<(usize, i64, &[u8]), GobError> {
    let mut r = Reader::new(message, usize::MAX, usize::MAX);
    loop {
        if r.at_input_end() {
            return Err(GobError::Truncated("a message before its value"));
        }
        let start = r.pos();
        r.next_message()?;
        let id = r.read_int("a type id")?;
        let rest = r.read_raw(r.remaining(), "a message")?;
        if id >= 0 {
            if !r.at_input_end() {
                return Err(GobError::Malformed("bytes after the value message".into()));
            }
            return Ok((start, id, rest));
        }
    }
}

/// A value message: `id`, then the value's bytes.
fn write_renumbered(out: &mut BytesMut, id: i64, body: &[u8]) {
    let mut value = Vec::with_capacity(body.len() + 10);
    put_int(&mut value, id);
    value.extend_from_slice(body);
    let mut framed = Vec::with_capacity(value.len() + 9);
    put_message(&mut framed, &value);
    out.extend_from_slice(&framed);
}

fn emit(out: &mut Vec<u8>, scratch: &mut Vec<u8>, wire: &WireType) {
    scratch.clear();
    put_int(scratch, -wire.id);
    wire.encode(scratch);
    put_message(out, scratch);
}

/// The user types of `ids` with every type each refers to before it;
/// `None` if they refer to each other in a cycle.
fn post_order<'a>(ids: &BTreeSet<i64>, lookup: impl Fn(i64) -> Option<&'a WireType>) -> Option<Vec<i64>> {
    #[derive(PartialEq)]
    enum State {
        Open,
        Done,
    }
    let mut state: HashMap<i64, State> = HashMap::with_capacity(ids.len());
    let mut order = Vec::with_capacity(ids.len());
    // Iterative: a peer's chain of types may be long.
    let mut stack: Vec<(i64, Vec<i64>, usize)> = Vec::new();
    for &root in ids {
        if state.contains_key(&root) {
            continue;
        }
        state.insert(root, State::Open);
        stack.push((root, lookup(root).map(WireType::refs).unwrap_or_default(), 0));
        while let Some((id, refs, next)) = stack.last_mut() {
            let Some(&child) = refs.get(*next) else {
                state.insert(*id, State::Done);
                order.push(*id);
                stack.pop();
                continue;
            };
            *next += 1;
            if super::types::ids::is_builtin(child) {
                continue;
            }
            match state.get(&child) {
                Some(State::Open) => return None,
                Some(State::Done) => {}
                None => {
                    state.insert(child, State::Open);
                    stack.push((child, lookup(child).map(WireType::refs).unwrap_or_default(), 0));
                }
            }
        }
    }
    Some(order)
}
