//! Reading input files within stated limits: a bounded file read ([`read_bounded`]) and a
//! JSON parser that refuses duplicate keys ([`parse_json`]).
//!
//! `serde_json` keeps the last of two equal keys of an object without a word; STATE.json
//! and BATCH.json are read through [`parse_json`] instead, which names the key path of the
//! first duplicate (`state.w`, `batch.x1`). TOML needs no such parser: the `toml` crate
//! refuses duplicate keys itself.
//!
//! Memory: a file of `B` bytes parsed into a [`serde_json::Value`] takes at most about
//! `16 B` bytes (a number takes 2 bytes of text, `"0,"`, and 32 bytes as a `Value`), so the
//! limit [`MAX_JSON_BYTES`] bounds a JSON input's memory by about 2 GiB.

use crate::error::{Error, Result};
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::io::Read;
use std::path::Path;

/// The largest configuration file read: 1 MiB (a configuration has a few dozen keys).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The largest STATE.json or BATCH.json read: 128 MiB (about 2 GiB once parsed).
pub const MAX_JSON_BYTES: u64 = 128 << 20;

/// The budget of one array allocated from sizes in the input: `2^28` `f64` entries, 2 GiB
/// (the same as [`crate::sgd::MAX_ENTRIES`]). Sizes are checked against it, with checked
/// arithmetic, before anything is allocated.
pub const MAX_ENTRIES: u128 = 1 << 28;

/// Reads the UTF-8 file at `path`, refusing it when it has more than `max` bytes (checked
/// while reading, so a pipe or a device such as `/dev/zero` is refused too).
///
/// # Examples
/// ```
/// use predhead::input::read_bounded;
/// let dir = std::env::temp_dir().join("predhead-doc-read-bounded");
/// std::fs::create_dir_all(&dir).unwrap();
/// let p = dir.join("a.txt");
/// std::fs::write(&p, "0123456789").unwrap();
/// assert_eq!(read_bounded(&p, 10).unwrap(), "0123456789");
/// assert!(read_bounded(&p, 9).unwrap_err().to_string().contains("larger than 9 bytes"));
/// ```
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, is not UTF-8, or is larger than `max` bytes.
pub fn read_bounded(path: impl AsRef<Path>, max: u64) -> Result<String> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, &e))?;
    let too_large = || Error::Io {
        path: path.display().to_string(),
        problem: format!("the file is larger than {max} bytes, the limit for this input"),
    };
    if let Ok(meta) = file.metadata() {
        if meta.is_file() && meta.len() > max {
            return Err(too_large());
        }
    }
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, &e))?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| Error::Io {
        path: path.display().to_string(),
        problem: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// Parses JSON text into a [`Value`], refusing an object with two equal keys: the error
/// names the key's path under `root` (e.g. `state.w`, `batch.x1[0]`). Syntax errors are
/// [`Error::Parse`] of `root`, as `serde_json` reports them.
///
/// # Examples
/// ```
/// use predhead::input::parse_json;
/// assert!(parse_json(r#"{"w": [1, 2], "e": []}"#, "state").is_ok());
/// let e = parse_json(r#"{"w": [1], "w": [2]}"#, "state").unwrap_err();
/// assert_eq!(e.to_string(), "state.w: duplicate key (each key may appear once)");
/// ```
///
/// # Errors
/// [`Error::Invalid`] naming a duplicate key, [`Error::Parse`] for malformed JSON.
pub fn parse_json(text: &str, root: &str) -> Result<Value> {
    let duplicate = RefCell::new(None);
    let node = Node {
        parent: None,
        segment: Segment::Root(root),
        duplicate: &duplicate,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = node.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(e) => match duplicate.into_inner() {
            Some(path) => Err(Error::invalid(
                path,
                "duplicate key (each key may appear once)",
            )),
            None => Err(Error::parse(root, e)),
        },
    }
}

/// One step of a path in the JSON document.
#[derive(Clone, Copy)]
enum Segment<'a> {
    Root(&'a str),
    Key(&'a str),
    Index(usize),
}

/// A position in the document (a linked list up to the root, formatted only on error) and
/// the slot that receives the path of a duplicate key.
#[derive(Clone, Copy)]
struct Node<'a> {
    parent: Option<&'a Node<'a>>,
    segment: Segment<'a>,
    duplicate: &'a RefCell<Option<String>>,
}

impl Node<'_> {
    fn path(&self) -> String {
        let mut out = self.parent.map_or_else(String::new, Node::path);
        match self.segment {
            Segment::Root(r) => out.push_str(r),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
        out
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            let child = Node {
                parent: Some(&self),
                segment: Segment::Index(out.len()),
                duplicate: self.duplicate,
            };
            match seq.next_element_seed(child)? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let child = Node {
                parent: Some(&self),
                segment: Segment::Key(&key),
                duplicate: self.duplicate,
            };
            if out.contains_key(&key) {
                let path = child.path();
                *self.duplicate.borrow_mut() = Some(path.clone());
                return Err(A::Error::custom(format!("duplicate key {path}")));
            }
            let value = map.next_value_seed(child)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_named_at_any_depth_and_values_are_kept_bit_for_bit() {
        let e = parse_json(r#"{"x1": [{"a": 1, "a": 2}]}"#, "batch").unwrap_err();
        assert_eq!(
            e.to_string(),
            "batch.x1[0].a: duplicate key (each key may appear once)"
        );
        // The same text without the duplicate parses to serde_json's own value.
        let text = r#"{"w": [[0.1, -2.5e-300, 1.7976931348623157e308, 3]], "e": [[1]], "k": null}"#;
        let ours = parse_json(text, "state").unwrap();
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
        // Falsifier: serde_json alone keeps the last duplicate silently.
        let silent: Value = serde_json::from_str(r#"{"w": 1, "w": 2}"#).unwrap();
        assert_eq!(silent["w"], 2);
        assert!(parse_json(r#"{"w": 1, "w": 2}"#, "state").is_err());
    }

    #[test]
    fn syntax_errors_and_deep_nesting_are_parse_errors() {
        assert!(matches!(
            parse_json("{\"w\": [1,", "state"),
            Err(Error::Parse { .. })
        ));
        assert!(matches!(
            parse_json("{} x", "state"),
            Err(Error::Parse { .. })
        ));
        let deep = "[".repeat(100_000);
        assert!(matches!(
            parse_json(&deep, "state"),
            Err(Error::Parse { .. })
        ));
    }
}
