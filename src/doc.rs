//! A JSON document as it is on disk, keeping every field in its place.
//!
//! Other programs write the same files, so pas never round-trips a document through a
//! struct that would drop what it does not know. It reads typed views out of a [`Doc`] and
//! changes only the keys it owns: an existing key keeps its position, a new key goes last,
//! and fields pas does not know are left exactly as they were.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One JSON object document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Doc {
    map: Map<String, Value>,
}

impl Doc {
    /// Parses `bytes` read from `path`; a malformed file is a data error naming path, line
    /// and column.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Doc> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(Error::data(format!("{} is empty", path.display()))
                .hint("write a JSON object into it, or remove it"));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Doc { map }),
            Ok(_) => Err(Error::data(format!(
                "{} does not hold a JSON object",
                path.display()
            ))),
            Err(e) => Err(Error::data(format!(
                "malformed JSON in {} at line {}, column {}: {}",
                path.display(),
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            ))
            .hint("fix the file by hand, then run `pas validate`")),
        }
    }

    /// The document in `bytes` when they hold a JSON object, else `None` (then
    /// [`Doc::parse`] says what is wrong): the quick path for reading many documents.
    pub(crate) fn parse_object(bytes: &[u8]) -> Option<Doc> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let map = serde::Deserializer::deserialize_map(&mut de, ObjectVisitor).ok()?;
        de.end().ok()?;
        Some(Doc { map })
    }

    /// Parses an embedded template; templates are checked by tests to be JSON objects.
    pub(crate) fn from_template(text: &str, name: &str) -> Result<Doc> {
        Doc::parse(text.as_bytes(), Path::new(name))
    }

    /// A document from an object value.
    pub(crate) fn from_map(map: Map<String, Value>) -> Doc {
        Doc { map }
    }

    /// Pretty JSON, two-space indented, with a trailing newline: the on-disk form.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // Serialising a map of JSON values cannot fail (all keys are strings).
        let mut bytes = serde_json::to_vec_pretty(&self.map).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// The whole object.
    pub(crate) fn map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// The whole object, to change in place (the typed views of `crate::model` write their
    /// changed fields through it). Remove keys with `shift_remove`, which keeps the order of
    /// the rest; `remove` would move the last key into the hole.
    pub(crate) fn map_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.map
    }

    /// The document as a JSON value (a copy), for output.
    pub(crate) fn to_value(&self) -> Value {
        Value::Object(self.map.clone())
    }

    /// The value at `key` (for code that edits a layer as raw JSON: `policy set`).
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    /// The string at `key`, if it is one.
    pub(crate) fn str(&self, key: &str) -> Option<&str> {
        self.map.get(key).and_then(Value::as_str)
    }

    /// The non-negative integer at `key`, if it is one.
    #[cfg(test)]
    pub(crate) fn u64(&self, key: &str) -> Option<u64> {
        self.map.get(key).and_then(Value::as_u64)
    }

    /// The strings of the array at `key` (other items are skipped).
    pub(crate) fn strings(&self, key: &str) -> Vec<String> {
        match self.map.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Sets `key`, keeping its position when it already exists.
    pub(crate) fn set(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.map.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                self.map.insert(key.to_string(), value);
            }
        }
    }

    /// Removes `key`, keeping the order of the rest.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, key: &str) -> Option<Value> {
        self.map.shift_remove(key)
    }
}

/// Reads a top-level object into a map sized for a whole agent file up front, instead of
/// growing (and rehashing) it four times on the way: the same map serde_json builds
/// (a repeated key keeps its first place and takes the last value).
struct ObjectVisitor;

impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut access: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut map = Map::with_capacity(32);
        while let Some((key, value)) = access.next_entry::<String, Value>()? {
            map.insert(key, value);
        }
        Ok(map)
    }
}

/// serde_json appends " at line L column C" to its messages; the position is said once.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keeps_unknown_fields_and_positions() {
        let text = br#"{"agent_id":"a","x_custom":{"k":[1,2]},"status":"idle","z":1}"#;
        let mut doc = Doc::parse(text, Path::new("a.json")).unwrap();
        doc.set("status", "active");
        doc.set("new_key", 5);
        let keys: Vec<_> = doc.map().keys().cloned().collect();
        assert_eq!(keys, ["agent_id", "x_custom", "status", "z", "new_key"]);
        assert_eq!(doc.get("x_custom").unwrap()["k"][1], 2);
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = Doc::parse(
            b"{\n  \"a\": 1,\n  oops\n}",
            Path::new("/r/c/agents/a.json"),
        )
        .unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::Data);
        assert!(
            err.message
                .contains("/r/c/agents/a.json at line 3, column 3"),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_quick_path_reads_what_parse_reads() {
        let text = br#"{"b":1,"a":{"x":[1,{"y":null}]},"b":2,"s":"\u00e9"}"#;
        let quick = Doc::parse_object(text).unwrap();
        assert_eq!(quick, Doc::parse(text, Path::new("x")).unwrap());
        let keys: Vec<_> = quick.map().keys().cloned().collect();
        assert_eq!(keys, ["b", "a", "s"]);
        assert_eq!(quick.u64("b"), Some(2));
        for bad in [&b""[..], b"  ", b"[1]", b"{\"a\":1} x", b"{\"a\":"] {
            assert!(Doc::parse_object(bad).is_none());
        }
    }

    #[test]
    fn empty_and_non_object_files_are_refused() {
        assert!(Doc::parse(b"", Path::new("x")).is_err());
        assert!(Doc::parse(b"[1]", Path::new("x")).is_err());
    }
}
