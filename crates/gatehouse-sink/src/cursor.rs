//! The durable cursor: how far a sink's receiver has acknowledged the log.
//!
//! A cursor names the last acknowledged record by `seq`, the byte offset where its line starts
//! and its `hash`. Resuming checks that the line at that offset is still that record, so a log
//! that was replaced or rewritten is noticed instead of being sent from the wrong place.
//!
//! Stored as `<state dir>/sink-<name>.cursor`, one JSON object, replaced atomically (write a
//! temporary file, fsync it, rename it over the old one, fsync the directory).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use gatehouse_audit::record::{HashHex, Record, GENESIS_PREV};
use serde::{Deserialize, Serialize};

/// Position after the last acknowledged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `seq` of the last acknowledged record; 0 before the first.
    pub seq: u64,
    /// Byte offset of that record's line in the log (0 before the first).
    pub offset: u64,
    /// That record's `hash` ([`GENESIS_PREV`] before the first).
    pub hash: HashHex,
}

impl Cursor {
    /// Nothing acknowledged yet: the sink starts at the first record.
    pub const START: Cursor = Cursor {
        seq: 0,
        offset: 0,
        hash: GENESIS_PREV,
    };

    pub fn is_start(&self) -> bool {
        self.seq == 0
    }

    /// Checks that `found`, the record read at `self.offset`, is the record this cursor names.
    pub fn check(&self, found: &Record) -> Result<(), CursorMismatch> {
        if found.seq == self.seq && found.hash == self.hash {
            Ok(())
        } else {
            Err(CursorMismatch::WrongRecord {
                offset: self.offset,
                expected_seq: self.seq,
                expected_hash: self.hash.to_string(),
                found_seq: found.seq,
                found_hash: found.hash.to_string(),
            })
        }
    }
}

/// The cursor does not point at the record it names: the log was replaced, truncated or
/// rewritten since the cursor was saved. The sink stops rather than re-send or skip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorMismatch {
    #[error("the cursor names seq {seq} at byte {offset}, but the log is only {len} bytes")]
    PastEnd { seq: u64, offset: u64, len: u64 },
    #[error("the cursor names seq {seq} at byte {offset}, but no complete record starts there: {reason}")]
    NotARecord {
        seq: u64,
        offset: u64,
        reason: String,
    },
    #[error("the cursor names seq {expected_seq} (hash {expected_hash}) at byte {offset}, but the log has seq {found_seq} (hash {found_hash}) there")]
    WrongRecord {
        offset: u64,
        expected_seq: u64,
        expected_hash: String,
        found_seq: u64,
        found_hash: String,
    },
}

/// Reading or writing a cursor file failed.
#[derive(Debug, thiserror::Error)]
pub enum CursorFileError {
    #[error("cursor file {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cursor file {} is not valid: {reason} (remove it to send the whole log again)", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// The file's JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRepr {
    version: u32,
    sink: String,
    seq: u64,
    offset: u64,
    hash: String,
    /// The sink had reported `sink.lagging` and not yet `sink.recovered`.
    #[serde(default)]
    lagging: bool,
}

const VERSION: u32 = 1;

/// What a cursor file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    pub cursor: Cursor,
    pub lagging: bool,
}

/// `<state dir>/sink-<name>.cursor`.
pub fn path(state_dir: &Path, sink: &str) -> PathBuf {
    state_dir.join(format!("sink-{sink}.cursor"))
}

/// Parses a cursor file's contents (pure).
pub fn parse(bytes: &[u8], sink: &str) -> Result<Saved, String> {
    let repr: FileRepr = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if repr.version != VERSION {
        return Err(format!("unknown version {}", repr.version));
    }
    if repr.sink != sink {
        return Err(format!("written for sink {:?}", repr.sink));
    }
    let hash = HashHex::parse(repr.hash.as_bytes()).ok_or("hash is not 64 lowercase hex")?;
    if repr.seq == 0 && (repr.offset != 0 || hash != GENESIS_PREV) {
        return Err("seq 0 with an offset or hash".into());
    }
    Ok(Saved {
        cursor: Cursor {
            seq: repr.seq,
            offset: repr.offset,
            hash,
        },
        lagging: repr.lagging,
    })
}

/// Serialises a cursor file's contents (pure).
pub fn render(saved: &Saved, sink: &str) -> Vec<u8> {
    let repr = FileRepr {
        version: VERSION,
        sink: sink.to_owned(),
        seq: saved.cursor.seq,
        offset: saved.cursor.offset,
        hash: saved.cursor.hash.to_string(),
        lagging: saved.lagging,
    };
    let mut out = serde_json::to_vec(&repr).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Loads the cursor; `None` when there is no file yet.
pub fn load(state_dir: &Path, sink: &str) -> Result<Option<Saved>, CursorFileError> {
    let path = path(state_dir, sink);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CursorFileError::Io { path, source }),
    };
    parse(&bytes, sink)
        .map(Some)
        .map_err(|reason| CursorFileError::Invalid { path, reason })
}

/// Replaces the cursor file atomically and durably.
pub fn save(state_dir: &Path, sink: &str, saved: &Saved) -> Result<(), CursorFileError> {
    let path = path(state_dir, sink);
    let tmp = state_dir.join(format!("sink-{sink}.cursor.tmp"));
    gatehouse_audit::durable_file::replace(&path, &tmp, &render(saved, sink))
        .map_err(|source| CursorFileError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_audit::{Event, EventKind, Outcome};

    fn hash(c: u8) -> HashHex {
        HashHex::parse(&[c; 64]).unwrap()
    }

    fn saved(seq: u64) -> Saved {
        Saved {
            cursor: Cursor {
                seq,
                offset: 1234,
                hash: hash(b'a'),
            },
            lagging: true,
        }
    }

    #[test]
    fn render_parse_round_trip() {
        let s = saved(42);
        assert_eq!(parse(&render(&s, "siem"), "siem"), Ok(s));
        let start = Saved {
            cursor: Cursor::START,
            lagging: false,
        };
        assert_eq!(parse(&render(&start, "siem"), "siem"), Ok(start));
    }

    #[test]
    fn parse_refuses_bad_files() {
        let good = String::from_utf8(render(&saved(7), "siem")).unwrap();
        assert!(parse(good.as_bytes(), "other")
            .unwrap_err()
            .contains("sink"));
        assert!(parse(b"", "siem").is_err());
        assert!(parse(b"{\"seq\":1}", "siem").is_err());
        let upper = good.replace(&"a".repeat(64), &"A".repeat(64));
        assert!(parse(upper.as_bytes(), "siem").is_err());
        let v2 = good.replace("\"version\":1", "\"version\":2");
        assert!(parse(v2.as_bytes(), "siem")
            .unwrap_err()
            .contains("version"));
        let extra = good.replace("{", "{\"x\":1,");
        assert!(parse(extra.as_bytes(), "siem").is_err());
        let zero = good.replace("\"seq\":7", "\"seq\":0");
        assert!(parse(zero.as_bytes(), "siem").is_err());
    }

    #[test]
    fn save_load() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "a").unwrap(), None);
        save(dir.path(), "a", &saved(1)).unwrap();
        save(dir.path(), "a", &saved(2)).unwrap();
        assert_eq!(load(dir.path(), "a").unwrap(), Some(saved(2)));
        assert!(!dir.path().join("sink-a.cursor.tmp").exists());
        fs::write(path(dir.path(), "a"), b"garbage").unwrap();
        let err = load(dir.path(), "a").unwrap_err();
        assert!(matches!(err, CursorFileError::Invalid { .. }), "{err}");
    }

    #[test]
    fn check_compares_seq_and_hash() {
        let record = |seq, h| Record {
            seq,
            prev: GENESIS_PREV,
            event: Event::now(EventKind::GatewayStart, Outcome::success()),
            hash: h,
        };
        let cursor = Cursor {
            seq: 5,
            offset: 100,
            hash: hash(b'b'),
        };
        assert_eq!(cursor.check(&record(5, hash(b'b'))), Ok(()));
        assert!(matches!(
            cursor.check(&record(5, hash(b'c'))),
            Err(CursorMismatch::WrongRecord { found_seq: 5, .. })
        ));
        assert!(matches!(
            cursor.check(&record(6, hash(b'b'))),
            Err(CursorMismatch::WrongRecord { found_seq: 6, .. })
        ));
    }
}
