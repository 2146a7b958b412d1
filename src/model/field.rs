//! The machinery under the typed documents: how one JSON value becomes one typed field and
//! back, and how a record writes itself into the object it was read from.
//!
//! A [`Field`] decodes a value strictly (a wrong type is an error naming the file and the
//! field's path) and encodes it in the one form pas writes. A record, declared with the
//! `record!` macro, reads each of its keys through a *mode* that says what an absent key or
//! a `null` means and what writing `None` does:
//!
//! | mode | type | absent / `null` reads as | writing over a file | in a new record |
//! |---|---|---|---|---|
//! | `required` | `T` | an error | the value | the value |
//! | `or_default` | `T: Default` | `T::default()` | the value | the value, a default too |
//! | `optional` | `Option<T>` | `None` | `None` removes the key | left out when `None` |
//! | `nullable` | `Option<T>` | `None` | `None` writes `null` (the schema allows it) | `null` when `None` |
//! | `flag` | `bool` | `false` | `false` removes the key | left out when `false` |
//! | `cache` | `Option<T>` | `None`; so does a value that does not decode | `None` removes the key | left out when `None` |
//! | `layer` | `Option<T>` | absent: `None`; `null` goes to `T` | `None` removes the key | left out when `None` |
//! | `lenient` | `Option<T>` | like `layer`; a value that does not decode is `None` and noted | `None` removes the key | left out when `None` |
//!
//! A new record (a nested one appearing where there was none, a new reservation, `to_doc`)
//! has the shape pas's writers have always given new records: every key but the unset
//! `optional` ones, so `exit` still reads `"code": null, "signal": 9`.
//!
//! Writing compares each field with what the key on disk decodes to and leaves the key
//! alone when they are equal, so an unchanged field keeps its bytes (an epoch
//! `last_heartbeat`, a boolean `auto_revive`, `3600` rather than `3600.0`); a changed key
//! is replaced where it stands, a new key goes last, and a changed nested record is merged
//! into the object on disk the same way, key by key.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::clock;
use crate::error::{Error, Result};

/// Where a value sits, for error messages: the file (as a path inside the cell, such as
/// `agents/a1.json`) and the field's path inside it (`checkpoint.last_checkpoint`).
///
/// A place borrows the place above it, so going down a key costs nothing: every field of
/// every file read goes through one, and the path is spelled out only for an error.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    file: &'a str,
    up: Option<&'a At<'a>>,
    step: Step<'a>,
}

/// The last step of a place's path.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Top,
    Key(&'a str),
    Index(usize),
}

impl<'a> At<'a> {
    /// The top of `file`.
    pub const fn file(file: &'a str) -> At<'a> {
        At {
            file,
            up: None,
            step: Step::Top,
        }
    }

    /// A key below this place.
    pub fn key<'b>(&'b self, key: &'b str) -> At<'b> {
        At {
            file: self.file,
            up: Some(self),
            step: Step::Key(key),
        }
    }

    /// An array item below this place.
    pub fn index(&self, i: usize) -> At<'_> {
        At {
            file: self.file,
            up: Some(self),
            step: Step::Index(i),
        }
    }

    /// The data error for a value here: `agents/a1.json status: "running" is not one of
    /// idle, active, paused, failed`.
    pub fn error(&self, what: impl std::fmt::Display) -> Error {
        let path = self.path();
        let place = if path.is_empty() {
            self.file.to_string()
        } else {
            format!("{} {path}", self.file)
        };
        Error::data(format!("{place}: {what}"))
            .hint("fix the file by hand, then run `pas validate`")
    }

    /// The field's path inside its file (empty at the top): `checkpoint.artifacts[0]`.
    pub fn path(&self) -> String {
        let mut steps = Vec::new();
        let mut at = Some(self);
        while let Some(here) = at {
            steps.push(here.step);
            at = here.up;
        }
        let mut path = String::new();
        for step in steps.into_iter().rev() {
            match step {
                Step::Top => {}
                Step::Key(key) if path.is_empty() => path.push_str(key),
                Step::Key(key) => {
                    path.push('.');
                    path.push_str(key);
                }
                Step::Index(i) => {
                    let _ = std::fmt::Write::write_fmt(&mut path, format_args!("[{i}]"));
                }
            }
        }
        path
    }
}

/// A value as the error messages show it: short JSON.
pub(crate) fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// One typed value of a document.
pub trait Field: Sized + Clone + PartialEq {
    /// Reads `value`; a value of the wrong shape is a data error naming `at`.
    fn decode(value: &Value, at: &At) -> Result<Self>;

    /// The value as pas writes it.
    fn encode(&self) -> Value;

    /// Writes the value over `old`, the value on disk. Records override this to keep the
    /// unknown keys and key order of the object on disk; plain values replace it.
    fn merge_into(&self, old: &mut Value) {
        *old = self.encode();
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The error for a value of the wrong JSON type.
pub(crate) fn wrong(value: &Value, want: &str, at: &At) -> Error {
    at.error(format!(
        "{} is {}, not {want}",
        shown(value),
        kind_of(value)
    ))
}

impl Field for String {
    fn decode(value: &Value, at: &At) -> Result<Self> {
        value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| wrong(value, "a string", at))
    }

    fn encode(&self) -> Value {
        Value::from(self.as_str())
    }
}

impl Field for bool {
    fn decode(value: &Value, at: &At) -> Result<Self> {
        value
            .as_bool()
            .ok_or_else(|| wrong(value, "true or false", at))
    }

    fn encode(&self) -> Value {
        Value::Bool(*self)
    }
}

impl Field for f64 {
    fn decode(value: &Value, at: &At) -> Result<Self> {
        // serde_json numbers are always finite.
        value.as_f64().ok_or_else(|| wrong(value, "a number", at))
    }

    /// A whole number is written without a fraction (`3600`, as the templates and the
    /// shell write it, not `3600.0`); a number JSON cannot hold (NaN, infinity) as `null`.
    fn encode(&self) -> Value {
        whole_number(*self).unwrap_or_else(|| Value::from(*self))
    }
}

/// `x` as a JSON integer when it is a whole number an `i64` holds exactly.
fn whole_number(x: f64) -> Option<Value> {
    // 2^53: beyond it not every integer is a float, and the cast would round.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    (x.fract() == 0.0 && x.abs() <= EXACT).then(|| Value::from(x as i64))
}

/// Reads an integer, also from a float with no fraction (`3.0`, as some JSON writers put
/// every number), within `min..=max`.
fn integer(value: &Value, min: i128, max: i128, want: &str, at: &At) -> Result<i128> {
    let n = match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Some(i128::from(u))
            } else {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e30)
                    .map(|f| f as i128)
            }
        }
        _ => return Err(wrong(value, want, at)),
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(at.error(format!("{} is not {want}", shown(value)))),
    }
}

macro_rules! integer_field {
    ($t:ty, $want:literal) => {
        impl Field for $t {
            fn decode(value: &Value, at: &At) -> Result<Self> {
                let n = integer(
                    value,
                    i128::from(<$t>::MIN),
                    i128::from(<$t>::MAX),
                    $want,
                    at,
                )?;
                // In range: `integer` checked it against MIN..=MAX of this very type.
                <$t>::try_from(n)
                    .map_err(|_| at.error(format!("{} is not {}", shown(value), $want)))
            }

            fn encode(&self) -> Value {
                Value::from(*self)
            }
        }
    };
}

integer_field!(u64, "a whole number of 0 or more");
integer_field!(u32, "a whole number from 0 to 4294967295");
integer_field!(u16, "a whole number from 0 to 65535");
integer_field!(i64, "a whole number");
integer_field!(i32, "a whole number from -2147483648 to 2147483647");

impl Field for Value {
    fn decode(value: &Value, _at: &At) -> Result<Self> {
        Ok(value.clone())
    }

    fn encode(&self) -> Value {
        self.clone()
    }
}

/// A free-form object (`env`, `metadata`): any keys, in file order.
impl Field for Map<String, Value> {
    fn decode(value: &Value, at: &At) -> Result<Self> {
        value
            .as_object()
            .cloned()
            .ok_or_else(|| wrong(value, "an object", at))
    }

    fn encode(&self) -> Value {
        Value::Object(self.clone())
    }
}

impl<T: Field> Field for Vec<T> {
    fn decode(value: &Value, at: &At) -> Result<Self> {
        let items = value
            .as_array()
            .ok_or_else(|| wrong(value, "an array", at))?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| T::decode(v, &at.index(i)))
            .collect()
    }

    fn encode(&self) -> Value {
        Value::Array(self.iter().map(Field::encode).collect())
    }

    /// Item by item, so records inside an array (reservations) keep their own key order.
    fn merge_into(&self, old: &mut Value) {
        let Value::Array(items) = old else {
            *old = self.encode();
            return;
        };
        items.truncate(self.len());
        for (i, item) in self.iter().enumerate() {
            match items.get_mut(i) {
                Some(slot) => {
                    if T::decode(slot, &At::file("")).ok().as_ref() != Some(item) {
                        item.merge_into(slot);
                    }
                }
                None => items.push(item.encode()),
            }
        }
    }
}

/// `null` is `None`: for values whose `null` means something (a policy layer's
/// `"cost_hard_usd": null` says "no limit here", overriding a lower layer).
impl<T: Field> Field for Option<T> {
    fn decode(value: &Value, at: &At) -> Result<Self> {
        match value {
            Value::Null => Ok(None),
            v => T::decode(v, at).map(Some),
        }
    }

    fn encode(&self) -> Value {
        self.as_ref().map_or(Value::Null, Field::encode)
    }

    fn merge_into(&self, old: &mut Value) {
        match (self, old.is_null()) {
            (Some(v), false) => v.merge_into(old),
            _ => *old = self.encode(),
        }
    }
}

/// The forms of a timestamp pas reads, for error messages.
pub const TIMESTAMP_FORMS: &str = "an RFC 3339 date-time such as 2025-03-14T09:26:53Z, \
     an ISO date-time without a zone (read as UTC), or seconds since 1970";

/// A timestamp in any form people and the seed prototypes wrote: RFC 3339 (what pas
/// writes), a naive ISO date-time (Python's `datetime.utcnow().isoformat()`, read as UTC),
/// or epoch seconds (`time.time()`, integer or float).
impl Field for DateTime<Utc> {
    fn decode(value: &Value, at: &At) -> Result<Self> {
        let parsed = match value {
            Value::String(_) | Value::Number(_) => clock::from_value(value),
            _ => return Err(wrong(value, "a timestamp", at)),
        };
        parsed.ok_or_else(|| {
            at.error(format!(
                "{} is not a timestamp; write {TIMESTAMP_FORMS}",
                shown(value)
            ))
        })
    }

    fn encode(&self) -> Value {
        Value::from(clock::stamp(*self))
    }
}

/// A record: an object with known keys, whose unknown keys are kept in `extra`.
pub trait Record: Sized + Clone + PartialEq {
    /// The keys the record knows, in declaration order.
    const KEYS: &'static [&'static str];

    /// Reads the record from an object.
    fn read_map(map: &Map<String, Value>, at: &At) -> Result<Self>;

    /// Writes the fields that differ from what `map` holds, in place (see the module
    /// header), then the unknown keys of `extra`.
    fn write_map(&self, map: &mut Map<String, Value>);

    /// The record as a new object, in the shape pas's writers have always given new
    /// records: known keys in declaration order, `nullable` ones as `null` when unset,
    /// defaults spelled out, unset `optional` ones left out; then `extra`.
    fn to_map(&self) -> Map<String, Value>;

    /// Reads the record straight from a whole document's JSON text, without building the
    /// document's object first: the fast path of fleet views, which read many files and
    /// write none of them. The same record as `read_map` gives (unknown keys in `extra`);
    /// `None` when the text is not a plain JSON object or a field does not read: then read
    /// the document the usual way, whose error names the problem.
    fn from_text(_bytes: &[u8]) -> Option<Self> {
        None
    }
}

/// `extra`'s keys appended to a new object (a known key in `extra` is ignored).
pub fn append_extra(map: &mut Map<String, Value>, extra: &Map<String, Value>, known: &[&str]) {
    for (k, v) in extra {
        if !known.contains(&k.as_str()) {
            map.insert(k.clone(), v.clone());
        }
    }
}

/// Writes `extra` into `map`: changed unknown keys in place, new ones last, and unknown
/// keys the caller dropped from `extra` removed. A known key in `extra` is ignored: the
/// typed field owns it.
pub fn write_extra(map: &mut Map<String, Value>, extra: &Map<String, Value>, known: &[&str]) {
    let dropped: Vec<String> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()) && !extra.contains_key(k.as_str()))
        .cloned()
        .collect();
    for k in dropped {
        map.shift_remove(&k);
    }
    for (k, v) in extra {
        if known.contains(&k.as_str()) || map.get(k) == Some(v) {
            continue;
        }
        map.insert(k.clone(), v.clone());
    }
}

/// Sets `key` to `value`: merged into the value on disk where it stands, else appended.
fn put<T: Field>(map: &mut Map<String, Value>, key: &str, value: &T) {
    match map.get_mut(key) {
        Some(old) => value.merge_into(old),
        None => {
            map.insert(key.to_string(), value.encode());
        }
    }
}

/// An `At` for decoding what is on disk while writing: its errors are never shown.
static SCRATCH: At<'static> = At::file("");

fn scratch() -> &'static At<'static> {
    &SCRATCH
}

/// The value at a key, unless it is `null`.
fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

// Each mode reads the value found at its key (`None`: the key is absent), so a record reads
// all its keys in one pass over the object, and writes through its key.

/// A key the file must have.
pub mod required {
    use super::*;

    /// Reads `value`, found at `key`; absent or `null` is an error.
    pub fn read<T: Field>(value: Option<&Value>, key: &str, at: &At) -> Result<T> {
        let at = at.key(key);
        match present(value) {
            Some(v) => T::decode(v, &at),
            None => Err(at.error("is missing; the file must have it")),
        }
    }

    /// Writes `value` unless `key` already holds it.
    pub fn write<T: Field>(map: &mut Map<String, Value>, key: &str, value: &T) {
        if read::<T>(map.get(key), key, scratch()).ok().as_ref() != Some(value) {
            put(map, key, value);
        }
    }

    /// Puts `value` into a new object.
    pub fn fresh<T: Field>(map: &mut Map<String, Value>, key: &str, value: &T) {
        map.insert(key.to_string(), value.encode());
    }
}

/// A key whose absence means the type's default (`[]`, `0`, the documented enum default).
pub mod or_default {
    use super::*;

    /// Reads `value`, found at `key`; absent or `null` is `T::default()`.
    pub fn read<T: Field + Default>(value: Option<&Value>, key: &str, at: &At) -> Result<T> {
        match present(value) {
            Some(v) => T::decode(v, &at.key(key)),
            None => Ok(T::default()),
        }
    }

    /// Writes `value` unless `key` already means it (an absent key meaning the default
    /// stays absent).
    pub fn write<T: Field + Default>(map: &mut Map<String, Value>, key: &str, value: &T) {
        if read::<T>(map.get(key), key, scratch()).ok().as_ref() != Some(value) {
            put(map, key, value);
        }
    }

    /// Puts `value` into a new object, a default too.
    pub fn fresh<T: Field + Default>(map: &mut Map<String, Value>, key: &str, value: &T) {
        map.insert(key.to_string(), value.encode());
    }
}

/// A key pas adds and removes; `None` removes it.
pub mod optional {
    use super::*;

    /// Reads `value`, found at `key`; absent or `null` is `None`.
    pub fn read<T: Field>(value: Option<&Value>, key: &str, at: &At) -> Result<Option<T>> {
        present(value)
            .map(|v| T::decode(v, &at.key(key)))
            .transpose()
    }

    /// Writes `value`; `None` removes the key (a `null` on disk already means `None` and
    /// stays).
    pub fn write<T: Field>(map: &mut Map<String, Value>, key: &str, value: &Option<T>) {
        if read::<T>(map.get(key), key, scratch()).ok().as_ref() == Some(value) {
            return;
        }
        match value {
            Some(v) => put(map, key, v),
            None => {
                map.shift_remove(key);
            }
        }
    }

    /// Puts `value` into a new object, when set.
    pub fn fresh<T: Field>(map: &mut Map<String, Value>, key: &str, value: &Option<T>) {
        if let Some(v) = value {
            map.insert(key.to_string(), v.encode());
        }
    }
}

/// A key the schema lets be `null`; `None` writes `null` where the key is (an absent key
/// stays absent).
pub mod nullable {
    use super::*;

    /// Reads `value`, found at `key`; absent or `null` is `None`.
    pub fn read<T: Field>(value: Option<&Value>, key: &str, at: &At) -> Result<Option<T>> {
        optional::read(value, key, at)
    }

    /// Writes `value`; `None` writes `null`.
    pub fn write<T: Field>(map: &mut Map<String, Value>, key: &str, value: &Option<T>) {
        if read::<T>(map.get(key), key, scratch()).ok().as_ref() == Some(value) {
            return;
        }
        match value {
            Some(v) => put(map, key, v),
            None => {
                map.insert(key.to_string(), Value::Null);
            }
        }
    }

    /// Puts `value` into a new object; unset is `null`.
    pub fn fresh<T: Field>(map: &mut Map<String, Value>, key: &str, value: &Option<T>) {
        map.insert(key.to_string(), value.encode());
    }
}

/// A marker pas sets to `true` and removes otherwise (a task's `queue_assigned`).
pub mod flag {
    use super::*;

    /// Reads `value`, found at `key`; absent or `null` is `false`.
    pub fn read(value: Option<&Value>, key: &str, at: &At) -> Result<bool> {
        or_default::read(value, key, at)
    }

    /// Writes `true`, or removes the key for `false`.
    pub fn write(map: &mut Map<String, Value>, key: &str, value: &bool) {
        if read(map.get(key), key, scratch()).ok() == Some(*value) {
            return;
        }
        if *value {
            map.insert(key.to_string(), Value::Bool(true));
        } else {
            map.shift_remove(key);
        }
    }

    /// Puts `true` into a new object; `false` is left out.
    pub fn fresh(map: &mut Map<String, Value>, key: &str, value: &bool) {
        if *value {
            map.insert(key.to_string(), Value::Bool(true));
        }
    }
}

/// pas's own record of something it computes again (the agent's `health`, `ctx_state`):
/// a value it cannot read counts as not recorded and is overwritten with the next change,
/// so a damaged record never stops a command.
pub mod cache {
    use super::*;

    /// Reads `value`, found at `key`; absent, `null` or unreadable is `None`.
    pub fn read<T: Field>(value: Option<&Value>, key: &str, at: &At) -> Result<Option<T>> {
        Ok(optional::read(value, key, at).ok().flatten())
    }

    /// Writes `value`; `None` removes the key.
    pub fn write<T: Field>(map: &mut Map<String, Value>, key: &str, value: &Option<T>) {
        if read::<T>(map.get(key), key, scratch()).ok().as_ref() == Some(value) {
            return;
        }
        match value {
            Some(v) => put(map, key, v),
            None => {
                map.shift_remove(key);
            }
        }
    }

    /// Puts `value` into a new object, when set.
    pub fn fresh<T: Field>(map: &mut Map<String, Value>, key: &str, value: &Option<T>) {
        optional::fresh(map, key, value);
    }
}

/// A key of a policy layer: absent means "not set here" (a lower layer decides), and a
/// `null` is a value (`T` decides what it means: `Option<f64>` reads it as "no limit").
pub mod layer {
    use super::*;

    /// Reads `value`, found at `key`; absent is `None`, anything else goes to `T`.
    pub fn read<T: Field>(value: Option<&Value>, key: &str, at: &At) -> Result<Option<T>> {
        value.map(|v| T::decode(v, &at.key(key))).transpose()
    }

    /// Writes `value`; `None` removes the key.
    pub fn write<T: Field>(map: &mut Map<String, Value>, key: &str, value: &Option<T>) {
        if read::<T>(map.get(key), key, scratch()).ok().as_ref() == Some(value) {
            return;
        }
        match value {
            Some(v) => put(map, key, v),
            None => {
                map.shift_remove(key);
            }
        }
    }

    /// Puts `value` into a new object, when set.
    pub fn fresh<T: Field>(map: &mut Map<String, Value>, key: &str, value: &Option<T>) {
        optional::fresh(map, key, value);
    }
}

/// A policy value pas has always tolerated nonsense in (`"heartbeat_interval": "soon"`
/// falls back to the built-in default; see `policy.rs`'s tests): a value that does not
/// decode reads as `None` and is named in the record's `unusable`, so a resolver can
/// still tell "not set here" from "set to nonsense here".
pub mod lenient {
    use super::*;

    /// Reads `value`, found at `key`, like [`layer::read`]; a value that does not decode
    /// is `None`, its reason pushed on `unusable`.
    pub fn read<T: Field>(
        value: Option<&Value>,
        key: &str,
        at: &At,
        unusable: &mut Vec<Unusable>,
    ) -> Option<T> {
        match layer::read(value, key, at) {
            Ok(v) => v,
            Err(e) => {
                unusable.push(Unusable {
                    key: key.to_string(),
                    reason: e.message,
                    value: value.cloned().unwrap_or(Value::Null),
                });
                None
            }
        }
    }

    /// Writes `value`; `None` removes the key, unless the key holds a value that does not
    /// decode (which also reads as `None`, and is left as it is).
    pub fn write<T: Field>(map: &mut Map<String, Value>, key: &str, value: &Option<T>) {
        let on_disk = read::<T>(map.get(key), key, scratch(), &mut Vec::new());
        if &on_disk == value {
            return;
        }
        match value {
            Some(v) => put(map, key, v),
            None => {
                map.shift_remove(key);
            }
        }
    }

    /// Puts `value` into a new object, when set.
    pub fn fresh<T: Field>(map: &mut Map<String, Value>, key: &str, value: &Option<T>) {
        optional::fresh(map, key, value);
    }
}

/// A value in a file that pas cannot use and reads as not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    /// The key.
    pub key: String,
    /// Why it cannot be used (the decoding error's message).
    pub reason: String,
    /// The value as written, so a resolver can show it and let it override lower layers
    /// (then fall back to the built-in default) as pas always has.
    pub value: Value,
}

/// Declares a record: a struct with one public field per known key (the field's name is
/// the key, so each key is spelled once), an `extra` map for the keys it does not know, and
/// its [`Record`] and [`Field`] implementations. Each field names its mode (see the module
/// header): `name: Type = mode,`.
macro_rules! record {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty = $mode:ident,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
            /// The keys pas does not know, in file order; written back as they are.
            pub extra: serde_json::Map<String, serde_json::Value>,
        }

        impl $crate::model::field::Record for $name {
            const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn read_map(
                map: &serde_json::Map<String, serde_json::Value>,
                at: &$crate::model::field::At,
            ) -> $crate::error::Result<Self> {
                // One pass over the object finds every key; the fields are then read in
                // declaration order, so the first bad one is the one named.
                $(let mut $field: Option<&serde_json::Value> = None;)*
                let mut extra = serde_json::Map::new();
                for (key, value) in map {
                    match key.as_str() {
                        $(stringify!($field) => $field = Some(value),)*
                        _ => {
                            extra.insert(key.clone(), value.clone());
                        }
                    }
                }
                Ok($name {
                    $($field: record!(@read $mode, $field, stringify!($field), at),)*
                    extra,
                })
            }

            fn write_map(&self, map: &mut serde_json::Map<String, serde_json::Value>) {
                $($crate::model::field::$mode::write(map, stringify!($field), &self.$field);)*
                $crate::model::field::write_extra(map, &self.extra, Self::KEYS);
            }

            fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
                let mut map = serde_json::Map::new();
                $($crate::model::field::$mode::fresh(&mut map, stringify!($field), &self.$field);)*
                $crate::model::field::append_extra(&mut map, &self.extra, Self::KEYS);
                map
            }

            fn from_text(bytes: &[u8]) -> Option<Self> {
                /// The value of each known key (the last one, as in an object), and the
                /// unknown keys in file order.
                #[derive(Default)]
                struct Found {
                    $($field: Option<serde_json::Value>,)*
                    extra: serde_json::Map<String, serde_json::Value>,
                }
                struct Fields;
                impl<'de> ::serde::de::Visitor<'de> for Fields {
                    type Value = Found;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a JSON object")
                    }

                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        mut access: A,
                    ) -> std::result::Result<Found, A::Error> {
                        let mut found = Found::default();
                        // A key with escapes is no borrowed text: the usual way reads it.
                        while let Some(key) = access.next_key::<&'de str>()? {
                            match key {
                                $(stringify!($field) => found.$field = Some(access.next_value()?),)*
                                _ => {
                                    found.extra.insert(key.to_string(), access.next_value()?);
                                }
                            }
                        }
                        Ok(found)
                    }
                }
                let mut de = serde_json::Deserializer::from_slice(bytes);
                let found = ::serde::Deserializer::deserialize_map(&mut de, Fields).ok()?;
                de.end().ok()?;
                let Found { $($field,)* extra } = found;
                $(let $field = $field.as_ref();)*
                let at = &$crate::model::field::At::file("");
                let read = || -> $crate::error::Result<Self> {
                    Ok($name {
                        $($field: record!(@read $mode, $field, stringify!($field), at),)*
                        extra,
                    })
                };
                read().ok()
            }
        }

        impl $crate::model::field::Field for $name {
            fn decode(
                value: &serde_json::Value,
                at: &$crate::model::field::At,
            ) -> $crate::error::Result<Self> {
                match value {
                    serde_json::Value::Object(map) => {
                        <Self as $crate::model::field::Record>::read_map(map, at)
                    }
                    v => Err($crate::model::field::wrong(v, "an object", at)),
                }
            }

            fn encode(&self) -> serde_json::Value {
                serde_json::Value::Object(<Self as $crate::model::field::Record>::to_map(self))
            }

            fn merge_into(&self, old: &mut serde_json::Value) {
                match old {
                    serde_json::Value::Object(map) => {
                        <Self as $crate::model::field::Record>::write_map(self, map)
                    }
                    old => *old = $crate::model::field::Field::encode(self),
                }
            }
        }
    };
    (@read $mode:ident, $value:ident, $key:expr, $at:ident) => {
        $crate::model::field::$mode::read($value, $key, $at)?
    };
}

/// Declares a policy layer: like `record!`, with every field read in the `lenient` or
/// `layer` mode, and the values that could not be used collected in `unusable`.
macro_rules! layer_record {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty = $mode:ident,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Default)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
            /// The keys pas does not know (policies of other tools, typos), in file order;
            /// written back as they are.
            pub extra: serde_json::Map<String, serde_json::Value>,
            /// Values of known keys that could not be used (wrong type): they read as
            /// `None` here and are left in the file as they are; take one out of this list
            /// (leaving its field `None`) and writing removes it. Not a key of the file.
            pub unusable: Vec<$crate::model::field::Unusable>,
        }

        impl $crate::model::field::Record for $name {
            const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn read_map(
                map: &serde_json::Map<String, serde_json::Value>,
                at: &$crate::model::field::At,
            ) -> $crate::error::Result<Self> {
                // As `record!`: one pass finds the keys, then each is read in order.
                $(let mut $field: Option<&serde_json::Value> = None;)*
                let mut extra = serde_json::Map::new();
                for (key, value) in map {
                    match key.as_str() {
                        $(stringify!($field) => $field = Some(value),)*
                        _ => {
                            extra.insert(key.clone(), value.clone());
                        }
                    }
                }
                let mut unusable = Vec::new();
                Ok($name {
                    $($field: layer_record!(@read $mode, $field, stringify!($field), at, unusable),)*
                    extra,
                    unusable,
                })
            }

            fn write_map(&self, map: &mut serde_json::Map<String, serde_json::Value>) {
                $($crate::model::field::$mode::write(map, stringify!($field), &self.$field);)*
                $crate::model::field::write_extra(map, &self.extra, Self::KEYS);
                // What still cannot be used, and the caller no longer lists, goes.
                let scratch = $crate::model::field::At::file("");
                if let Ok(now) = <Self as $crate::model::field::Record>::read_map(map, &scratch) {
                    for u in now.unusable {
                        if !self.unusable.iter().any(|kept| kept.key == u.key) {
                            map.shift_remove(&u.key);
                        }
                    }
                }
            }

            fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
                let mut map = serde_json::Map::new();
                $($crate::model::field::$mode::fresh(&mut map, stringify!($field), &self.$field);)*
                $crate::model::field::append_extra(&mut map, &self.extra, Self::KEYS);
                map
            }
        }

        impl $crate::model::field::Field for $name {
            fn decode(
                value: &serde_json::Value,
                at: &$crate::model::field::At,
            ) -> $crate::error::Result<Self> {
                match value {
                    serde_json::Value::Object(map) => {
                        <Self as $crate::model::field::Record>::read_map(map, at)
                    }
                    v => Err($crate::model::field::wrong(v, "an object", at)),
                }
            }

            fn encode(&self) -> serde_json::Value {
                serde_json::Value::Object(<Self as $crate::model::field::Record>::to_map(self))
            }

            fn merge_into(&self, old: &mut serde_json::Value) {
                match old {
                    serde_json::Value::Object(map) => {
                        <Self as $crate::model::field::Record>::write_map(self, map)
                    }
                    old => *old = $crate::model::field::Field::encode(self),
                }
            }
        }
    };
    (@read lenient, $value:ident, $key:expr, $at:ident, $unusable:ident) => {
        $crate::model::field::lenient::read($value, $key, $at, &mut $unusable)
    };
    (@read layer, $value:ident, $key:expr, $at:ident, $unusable:ident) => {
        $crate::model::field::layer::read($value, $key, $at)?
    };
}

/// Gives a top-level record its document methods: `from_doc`, `from_doc_at`, `write_into`,
/// `edit` and `to_doc`. `$file` names the file in errors, from the document's own content
/// (`agents/<agent_id>.json`), for callers that do not know the path. Every document gets
/// all five, whether or not pas uses each on it.
macro_rules! document {
    ($name:ident, $file:expr) => {
        #[allow(dead_code)]
        impl $name {
            /// The typed view of `doc`; a field of the wrong shape or an unknown word is a
            /// data error naming the file (as the document's own id places it) and the
            /// field.
            pub fn from_doc(doc: &$crate::doc::Doc) -> $crate::error::Result<$name> {
                let file: fn(&serde_json::Map<String, serde_json::Value>) -> String = $file;
                $name::from_doc_at(doc, &file(doc.map()))
            }

            /// [`Self::from_doc`] for a caller that knows where the file is: `file` is how
            /// errors name it (a path inside the cell, such as `agents/a1.json`).
            pub fn from_doc_at(doc: &$crate::doc::Doc, file: &str) -> $crate::error::Result<$name> {
                <$name as $crate::model::field::Record>::read_map(
                    doc.map(),
                    &$crate::model::field::At::file(file),
                )
            }

            /// Writes the fields that differ from what `doc` holds into it, in place (see
            /// the module header); everything else in `doc` stays as it is.
            pub fn write_into(&self, doc: &mut $crate::doc::Doc) {
                <$name as $crate::model::field::Record>::write_map(self, doc.map_mut());
            }

            /// Reads `doc`, lets `change` change the typed view, and writes it back: the
            /// one-line form for the store's update closures.
            pub fn edit<R>(
                doc: &mut $crate::doc::Doc,
                change: impl FnOnce(&mut $name) -> R,
            ) -> $crate::error::Result<R> {
                let mut typed = $name::from_doc(doc)?;
                let out = change(&mut typed);
                typed.write_into(doc);
                Ok(out)
            }

            /// A new document holding this value, in the shape of a new record (see the
            /// module header): known keys in declaration order, then `extra`. For a
            /// document that starts from a template, read the template and `write_into` it
            /// instead, so the template's order holds and nothing else is added.
            pub fn to_doc(&self) -> $crate::doc::Doc {
                $crate::doc::Doc::from_map(<$name as $crate::model::field::Record>::to_map(self))
            }
        }
    };
}
