//! [`Metadata`]: the key/value headers that travel with a call.

use std::fmt;

/// Ordered key/value headers sent with a call (and, later, with its reply).
///
/// Keys are case-insensitive and stored lower-case, as in HTTP/2 and gRPC.
/// A key may appear more than once; [`Metadata::get`] returns the first.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: Vec<(String, String)>,
}

impl Metadata {
    /// Empty metadata.
    pub const fn new() -> Metadata {
        Metadata { entries: Vec::new() }
    }

    /// Replace every value for `key` with `value`.
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl Into<String>) {
        let key = key.as_ref().to_ascii_lowercase();
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, value.into()));
    }

    /// Add a value for `key`, keeping earlier ones.
    pub fn append(&mut self, key: impl AsRef<str>, value: impl Into<String>) {
        self.entries.push((key.as_ref().to_ascii_lowercase(), value.into()));
    }

    /// The first value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    /// Every value for `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries.iter().filter(move |(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    /// Remove every value for `key`.
    pub fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Metadata {
        let mut metadata = Metadata::new();
        for (key, value) in iter {
            metadata.append(key, value);
        }
        metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_insert_replaces() {
        let mut md = Metadata::new();
        md.append("Trace-Id", "a");
        md.append("trace-id", "b");
        assert_eq!(md.get("TRACE-ID"), Some("a"));
        assert_eq!(md.get_all("trace-id").collect::<Vec<_>>(), vec!["a", "b"]);
        md.insert("trace-id", "c");
        assert_eq!(md.get_all("trace-id").collect::<Vec<_>>(), vec!["c"]);
        md.remove("Trace-ID");
        assert!(md.is_empty());
    }
}
