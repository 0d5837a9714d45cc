//! The results-file format (`docs/cli.md`, "Sweep results files"): a header line that names
//! the spec, then one record per finished task; every line sealed with a SHA-256 checksum.
//!
//! - The **header** (the first line) carries the format and its version, the spec's results
//!   stem, the SHA-256 of the resolved task list ([`spec_sha256`]), the number of tasks, the
//!   shard `i/n` the file holds, and `"partial": true` for a merge with `--allow-partial`
//!   that lacks tasks.
//! - Every line, the header included, is a JSON object whose last field is
//!   `"sha256": "<64 hex digits>"`, the SHA-256 of the line's text with that field removed
//!   (`{...,"sha256":"h"}` becomes `{...}`). [`seal`] adds it, [`unseal`] checks it.
//!
//! Reading ([`parse`]) checks every complete line: its checksum, then its schema (the
//! header's and a record's fields, no other field). A last line without its newline is a
//! torn write of a killed sweep and is left out (the sweep cuts it off).

use super::{Record, Results, Shard, Task};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::Path;

/// The `format` field of a header.
pub const FORMAT: &str = "predhead-sweep-results";

/// The version of the format: 2 (version 1, before the header, had no header line).
pub const VERSION: u32 = 2;

/// The first line of a results file: which spec, which tasks, which shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// The spec's results stem (its `results` key, by default its name).
    pub spec: String,
    /// The SHA-256 of the spec's resolved task list ([`spec_sha256`]).
    pub spec_sha256: String,
    /// The number of tasks of the whole spec (all shards).
    pub tasks: u64,
    /// The shard the file holds, `i/n` (`0/1`: the whole sweep).
    pub shard: String,
    /// Set by `merge --allow-partial` when tasks are missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

impl Header {
    /// The header of the results of `tasks` (all tasks of a spec, in order) for `shard`.
    pub fn new(stem: &str, tasks: &[Task], shard: Shard) -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            spec: stem.into(),
            spec_sha256: spec_sha256(tasks),
            tasks: tasks.len() as u64,
            shard: format!("{}/{}", shard.index, shard.count),
            partial: false,
        }
    }

    /// The shard of the header.
    pub fn shard(&self) -> Result<Shard> {
        Shard::parse(&self.shard)
    }

    /// `spec "name" (N tasks, sha256 0123456789ab...)`, for messages: the name escaped
    /// and cut to 60 characters, so that a message stays one line.
    pub fn describe(&self) -> String {
        let name: String = self.spec.chars().take(60).collect();
        let hash: String = self.spec_sha256.chars().take(12).collect();
        format!("spec {name:?} ({} tasks, sha256 {hash}...)", self.tasks)
    }

    /// The sealed header line, without newline.
    pub fn line(&self) -> Result<String> {
        let body = serde_json::to_string(self)
            .map_err(|e| Error::numerical("results header", e.to_string()))?;
        Ok(seal(&body))
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 of a resolved task list: for every task in order, the canonical JSON (keys
/// sorted, shortest round-trip numbers) of its id, seed, key, grid point and resolved
/// configuration (as TOML text), one per line. Two specs with the same tasks (a shared
/// results file) have the same hash; a changed seed, axis value or base field changes it.
pub fn spec_sha256(tasks: &[Task]) -> String {
    let mut h = Sha256::new();
    for t in tasks {
        let line = serde_json::json!({
            "id": t.id,
            "seed": t.seed,
            "key": t.key,
            "point": t.point,
            "config": t.config.to_toml(),
        });
        h.update(line.to_string().as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The suffix that [`seal`] writes before the closing brace.
const SEAL: &str = ",\"sha256\":\"";

/// Seals the JSON object text `body` (`{...}`, not empty): appends the field `"sha256"`
/// with the SHA-256 of `body`.
pub fn seal(body: &str) -> String {
    let hash = sha256_hex(body.as_bytes());
    let open = body.strip_suffix('}').unwrap_or(body);
    format!("{open}{SEAL}{hash}\"}}")
}

/// Checks the seal of `line` and returns the body it seals; `Err` says what is wrong.
///
/// # Examples
/// ```
/// use predhead::sweep::file::{seal, unseal};
/// let line = seal(r#"{"task":0,"t1":2.5}"#);
/// assert_eq!(unseal(&line).unwrap(), r#"{"task":0,"t1":2.5}"#);
/// assert!(unseal(&line.replace("2.5", "2.6")).is_err()); // an edited value
/// assert!(unseal(r#"{"error":"fake"}"#).is_err()); // no checksum
/// ```
///
/// # Errors
/// No `"sha256"` field at the end of the line, or a checksum that does not match.
pub fn unseal(line: &str) -> std::result::Result<String, String> {
    let tail = SEAL.len() + 64 + 2;
    let cut = line
        .len()
        .checked_sub(tail)
        .filter(|&c| line.is_char_boundary(c));
    let Some(cut) = cut.filter(|&c| line[c..].starts_with(SEAL) && line.ends_with("\"}")) else {
        return Err("no \"sha256\" checksum as the last field".into());
    };
    let stored = &line[cut + SEAL.len()..line.len() - 2];
    let body = format!("{}}}", &line[..cut]);
    if sha256_hex(body.as_bytes()) != stored {
        return Err(
            "checksum mismatch: the line was edited or corrupted after it was written".into(),
        );
    }
    Ok(body)
}

/// A results file parsed and checked line by line.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    /// The header and the records.
    pub results: Results,
    /// The length of the complete lines (a torn last line starts here).
    pub complete: usize,
    /// The 1-based line number of each record, in file order.
    pub line_numbers: Vec<usize>,
}

/// Parses the bytes of the results file `path`: the header (required when the file holds a
/// complete line) and the records, each line checked against its seal and its schema.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    let name = path.display().to_string();
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let text =
        std::str::from_utf8(&bytes[..complete]).map_err(|_| Error::parse(&name, "not UTF-8"))?;
    let mut out = Parsed {
        complete,
        ..Parsed::default()
    };
    for (i, line) in text.split_terminator('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let at = || format!("{name} line {}", i + 1);
        let first = out.results.header.is_none();
        if first && !line.starts_with(&format!("{{\"format\":\"{FORMAT}\"")) {
            return Err(Error::parse(
                at(),
                "no header line: not a results file of this version of predhead (an older \
                 format?); delete it, or run `predhead report --fresh`",
            ));
        }
        let body = unseal(line).map_err(|p| {
            let hint = if first {
                ""
            } else {
                "; remove the line to run its task again"
            };
            Error::parse(at(), format!("{p}{hint}"))
        })?;
        if first {
            let h: Header = serde_json::from_str(&body)
                .map_err(|e| Error::parse(at(), format!("bad header: {e}")))?;
            if h.version != VERSION {
                return Err(Error::parse(
                    at(),
                    format!("format version {}, expected {VERSION}", h.version),
                ));
            }
            let sh = h
                .shard()
                .map_err(|e| Error::parse(at(), format!("bad header: {e}")))?;
            if h.shard != format!("{}/{}", sh.index, sh.count) {
                return Err(Error::parse(at(), "bad header: shard: not in the form i/n"));
            }
            out.results.header = Some(h);
            continue;
        }
        let rec: Record = serde_json::from_str(&body).map_err(|e| {
            Error::parse(
                at(),
                format!("bad record: {e}; remove the line to run its task again"),
            )
        })?;
        out.results.lines.push((rec, line.to_string()));
        out.line_numbers.push(i + 1);
    }
    Ok(out)
}

/// Opens (creating it if `create`) and locks the results file `path` for a writer. A file
/// locked by another process is refused; a file replaced (renamed over) between the open and
/// the lock is opened again. `Ok(None)`: the file does not exist and `create` is false.
pub fn lock(path: &Path, create: bool) -> Result<Option<File>> {
    for _ in 0..100 {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(create)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, &e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::invalid(
                    "results",
                    format!(
                        "results file {} is locked by another sweep; wait for it to end",
                        path.display()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(path, &e)),
        }
        if same_file(&file, path)? {
            return Ok(Some(file));
        }
    }
    Err(Error::invalid(
        "results",
        format!(
            "results file {} keeps being replaced by another sweep",
            path.display()
        ),
    ))
}

/// Whether the open `file` is still the file at `path` (not renamed over).
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let a = file.metadata().map_err(|e| Error::io(path, &e))?;
    match std::fs::metadata(path) {
        Ok(b) => Ok(a.dev() == b.dev() && a.ino() == b.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, &e)),
    }
}

/// Whether the open `file` is still the file at `path` (elsewhere a file open for writing
/// cannot be renamed over).
#[cfg(not(unix))]
fn same_file(_: &File, _: &Path) -> Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_rejects_edits() {
        let body = r#"{"task":3,"result":{"t1":1234.5}}"#;
        let line = seal(body);
        assert!(line.starts_with(r#"{"task":3,"result":{"t1":1234.5},"sha256":""#));
        assert_eq!(unseal(&line).unwrap(), body);
        // Falsifiers: one digit edited, the checksum edited, the checksum removed.
        let edited = line.replace("1234.5", "1234.6");
        assert!(unseal(&edited).unwrap_err().contains("checksum mismatch"));
        let mut bad_hash = line.clone();
        let k = bad_hash.len() - 3;
        let c = if &bad_hash[k..k + 1] == "0" { "1" } else { "0" };
        bad_hash.replace_range(k..k + 1, c);
        assert!(unseal(&bad_hash).is_err());
        assert!(unseal(body).unwrap_err().contains("no \"sha256\""));
        assert!(unseal(r#"{"error":"fake"}"#).is_err());
        assert!(unseal("").is_err());
        assert!(unseal("é").is_err());
    }

    #[test]
    fn a_header_description_stays_one_line() {
        let mut h = Header {
            format: FORMAT.into(),
            version: VERSION,
            spec: "lemma51".into(),
            spec_sha256: "0123456789abcdef".into(),
            tasks: 3,
            shard: "0/1".into(),
            partial: false,
        };
        assert_eq!(
            h.describe(),
            "spec \"lemma51\" (3 tasks, sha256 0123456789ab...)"
        );
        h.spec = format!("a\nb{}", "x".repeat(1000));
        h.spec_sha256 = "é".into();
        let d = h.describe();
        assert!(!d.contains('\n') && d.len() < 120, "{d}");
    }

    #[test]
    fn sha256_of_the_empty_string() {
        // FIPS 180-2 test vector.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
