//! The stored record format: one line of canonical JSON per event, hash-chained. Pure code.
//!
//! ```text
//! {"seq":N,"prev":"<64 hex>","time":…,"kind":…,…,"outcome":{…},"hash":"<64 hex>"}\n
//! ```
//!
//! * `hash` is SHA-256 over the line's bytes up to (not including) the fixed-length suffix
//!   `,"hash":"<64 hex>"}`, followed by `}`: the hash of the record without its hash field.
//!   Because the suffix has a fixed length, a verifier strips it byte-exactly and never
//!   re-serialises, so the check does not depend on this crate's serde behaviour.
//! * `prev` is the previous record's `hash`; the first record's `prev` is [`GENESIS_PREV`].
//! * `seq` starts at 1 and grows by one per record.
//!
//! Hex is always lowercase and compared as text, so every stored byte is covered: the body by
//! the record's own hash, the hash field by the exact suffix check and the next record's `prev`.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::event::{Event, EventKind, Outcome, What, Who};
use crate::timefmt;

/// Longest line (excluding its `\n`) a record may occupy. The writer refuses larger events and
/// readers refuse longer lines, so a corrupt file cannot make them allocate without bound.
pub const MAX_LINE_LEN: usize = 16 * 1024 * 1024;

/// `prev` of the first record: 64 zeros.
pub const GENESIS_PREV: HashHex = HashHex([b'0'; 64]);

const HASH_KEY: &[u8] = b",\"hash\":\"";
/// Length of the fixed suffix `,"hash":"<64 hex>"}`.
pub const HASH_SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;

/// Upper bound on what a record adds around its event's JSON (`seq`, `prev`, `hash`).
const RECORD_OVERHEAD: usize = 256;

/// A SHA-256 digest as 64 lowercase hex characters, the form stored in `prev` and `hash`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashHex([u8; 64]);

impl HashHex {
    /// Hex-encodes a digest.
    pub fn from_digest(digest: &[u8; 32]) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, byte) in out.chunks_exact_mut(2).zip(digest) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        HashHex(out)
    }

    /// Accepts exactly 64 lowercase hex characters (the only spelling the writer produces).
    pub fn parse(text: &[u8]) -> Option<Self> {
        let bytes: [u8; 64] = text.try_into().ok()?;
        bytes
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(HashHex(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    /// The 32-byte digest.
    pub fn digest(&self) -> [u8; 32] {
        // Only lowercase hex digits are ever stored: '0'..='9' keep their low nibble, and
        // 'a'..='f' (0x61..) add 9 to theirs; bit 6 tells them apart.
        fn nibble(c: u8) -> u8 {
            (c & 0x0f) + 9 * (c >> 6)
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(self.0.chunks_exact(2)) {
            *byte = (nibble(pair[0]) << 4) | nibble(pair[1]);
        }
        out
    }
}

impl fmt::Display for HashHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for HashHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashHex({})", self.as_str())
    }
}

/// Why a line is not a valid record on its own (chain checks live in `verify`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("not a valid record: {0}")]
    NotRecord(String),
    #[error("not in canonical form: {0}")]
    NotCanonical(&'static str),
    #[error("hash mismatch")]
    HashMismatch,
    #[error("record is {len} bytes, longer than the limit of {limit} bytes", limit = MAX_LINE_LEN)]
    TooLong { len: usize },
    #[error("cannot serialise event: {0}")]
    Serialise(String),
}

/// A parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub prev: HashHex,
    pub event: Event,
    pub hash: HashHex,
}

/// Appends one record line (with its `\n`) for `event` to `buf` and returns its hash.
///
/// On error `buf` is left as it was. Serialises straight into `buf`: the event's opening `{`
/// is overwritten with the `,` that joins it to the `seq`/`prev` prefix, so nothing is copied.
pub fn encode(
    buf: &mut Vec<u8>,
    seq: u64,
    prev: &HashHex,
    event: &Event,
) -> Result<HashHex, RecordError> {
    let start = buf.len();
    let result = encode_inner(buf, start, seq, prev, event);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

fn encode_inner(
    buf: &mut Vec<u8>,
    start: usize,
    seq: u64,
    prev: &HashHex,
    event: &Event,
) -> Result<HashHex, RecordError> {
    buf.extend_from_slice(b"{\"seq\":");
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{seq}");
    buf.extend_from_slice(b",\"prev\":\"");
    buf.extend_from_slice(prev.as_bytes());
    buf.push(b'"');
    let body = buf.len();
    serde_json::to_writer(&mut *buf, event).map_err(|e| RecordError::Serialise(e.to_string()))?;
    match (buf.get(body), buf.last()) {
        (Some(b'{'), Some(b'}')) if buf.len() - body > 2 => buf[body] = b',',
        _ => {
            return Err(RecordError::Serialise(
                "event is not a non-empty JSON object".into(),
            ))
        }
    }
    let hash = HashHex::from_digest(&Sha256::digest(&buf[start..]).into());
    buf.pop(); // the closing brace, re-added after the hash field
    buf.extend_from_slice(HASH_KEY);
    buf.extend_from_slice(hash.as_bytes());
    buf.extend_from_slice(b"\"}");
    let len = buf.len() - start;
    if len > MAX_LINE_LEN {
        return Err(RecordError::TooLong { len });
    }
    buf.push(b'\n');
    Ok(hash)
}

/// Checks a line's own hash and returns the stored hash. `line` excludes the `\n`.
pub fn check_hash(line: &[u8]) -> Result<HashHex, RecordError> {
    let (body, stored) = split(line)?;
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update(b"}");
    let computed = HashHex::from_digest(&hasher.finalize().into());
    if computed == stored {
        Ok(stored)
    } else {
        Err(RecordError::HashMismatch)
    }
}

/// Splits a line into the bytes its hash covers (minus the final `}`) and the stored hash.
fn split(line: &[u8]) -> Result<(&[u8], HashHex), RecordError> {
    let cut = line
        .len()
        .checked_sub(HASH_SUFFIX_LEN)
        .ok_or(RecordError::NotCanonical(
            "line too short to end with the hash field",
        ))?;
    let (body, suffix) = line.split_at(cut);
    let hex = suffix
        .strip_prefix(HASH_KEY)
        .and_then(|rest| rest.strip_suffix(b"\"}"))
        .ok_or(RecordError::NotCanonical("the hash field is not last"))?;
    let stored =
        HashHex::parse(hex).ok_or(RecordError::NotCanonical("hash is not 64 lowercase hex"))?;
    Ok((body, stored))
}

/// Parses a line's JSON into a record. Does not check the hash (see [`check_hash`]).
pub fn parse(line: &[u8]) -> Result<Record, RecordError> {
    // One UTF-8 check of the whole line is cheaper than serde_json's check of each string.
    let text =
        std::str::from_utf8(line).map_err(|e| RecordError::NotJson(format!("not UTF-8: {e}")))?;
    let repr: Repr<'_> = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            RecordError::NotRecord(e.to_string())
        } else {
            RecordError::NotJson(e.to_string())
        }
    })?;
    let hex = |text: &str| HashHex::parse(text.as_bytes());
    let prev = hex(&repr.prev).ok_or(RecordError::NotCanonical("prev is not 64 lowercase hex"))?;
    let hash = hex(&repr.hash).ok_or(RecordError::NotCanonical("hash is not 64 lowercase hex"))?;
    let event = Event {
        time: repr.time,
        kind: repr.kind,
        session: repr.session,
        refers: repr.refers,
        who: repr.who,
        what: repr.what,
        outcome: repr.outcome,
    };
    Ok(Record {
        seq: repr.seq,
        prev,
        event,
        hash,
    })
}

/// Parses a line and checks its own hash: everything one line can prove about itself.
pub fn decode(line: &[u8]) -> Result<Record, RecordError> {
    let record = parse(line)?;
    let stored = check_hash(line)?;
    if stored != record.hash {
        // Only reachable with a duplicated key, which serde rejects, but cheap to state.
        return Err(RecordError::NotCanonical(
            "hash field differs from the hash suffix",
        ));
    }
    Ok(record)
}

/// The stored shape, spelled out field by field (no `serde(flatten)`: faster, and borrows the
/// hex strings). Building an [`Event`] from it fails to compile if `Event` gains a field.
#[derive(Deserialize)]
struct Repr<'a> {
    seq: u64,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(with = "timefmt::rfc3339_nanos")]
    time: OffsetDateTime,
    kind: EventKind,
    #[serde(default)]
    session: Option<String>,
    #[serde(rename = "ref", default)]
    refers: Option<u64>,
    #[serde(default)]
    who: Who,
    #[serde(default)]
    what: What,
    outcome: Outcome,
    #[serde(borrow)]
    hash: Cow<'a, str>,
}

/// Checks that `event` can be written as a record no longer than [`MAX_LINE_LEN`].
///
/// Cheap in the common case: an upper bound from the string lengths (JSON escaping at most
/// sextuples a byte) settles it; only events near the limit are measured by serialising.
pub fn check_event(event: &Event) -> Result<(), RecordError> {
    timefmt::check_time(event.time).map_err(RecordError::Serialise)?;
    if size_bound(event) <= MAX_LINE_LEN {
        return Ok(());
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, event)
        .map_err(|e| RecordError::Serialise(e.to_string()))?;
    let len = counter.0.saturating_add(RECORD_OVERHEAD);
    if len > MAX_LINE_LEN {
        return Err(RecordError::TooLong { len });
    }
    Ok(())
}

fn size_bound(e: &Event) -> usize {
    fn opt(s: &Option<String>) -> usize {
        s.as_ref().map_or(0, String::len)
    }
    let who = &e.who;
    let what = &e.what;
    let outcome = &e.outcome;
    let strings = [
        opt(&e.session),
        opt(&who.subject),
        opt(&who.issuer),
        opt(&who.method),
        opt(&who.source),
        opt(&who.claimed_user),
        who.actors
            .iter()
            .map(|a| a.subject.len() + opt(&a.issuer))
            .sum(),
        who.groups.iter().map(String::len).sum(),
        opt(&what.connection),
        opt(&what.protocol),
        opt(&what.statement),
        opt(&what.classification),
        opt(&what.resource),
        opt(&outcome.reason),
        opt(&outcome.code),
    ]
    .iter()
    .fold(0usize, |acc, n| acc.saturating_add(*n));
    // Keys, punctuation, time and numbers fit in the fixed allowance; each actor and group adds
    // its own quotes, braces and keys.
    let items = (who.actors.len().saturating_mul(32)).saturating_add(who.groups.len() * 4);
    let detail = what.detail.as_ref().map_or(0, value_bound);
    strings
        .saturating_mul(6)
        .saturating_add(items)
        .saturating_add(detail)
        .saturating_add(1024 + RECORD_OVERHEAD)
}

/// An upper bound on a JSON value's serialised length, without serialising it: strings at
/// their worst-case escaping, numbers at their longest.
fn value_bound(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => s.len().saturating_mul(6).saturating_add(2),
        Value::Array(items) => items.iter().fold(2usize, |acc, item| {
            acc.saturating_add(value_bound(item)).saturating_add(1)
        }),
        Value::Object(map) => map.iter().fold(2usize, |acc, (k, item)| {
            acc.saturating_add(k.len().saturating_mul(6))
                .saturating_add(4)
                .saturating_add(value_bound(item))
        }),
    }
}

/// An `io::Write` that only counts bytes.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ActorRef, Outcome, Status};
    use time::macros::datetime;

    fn sample() -> Event {
        let mut e = Event::now(EventKind::Statement, Outcome::success());
        e.time = datetime!(2025-01-02 03:04:05.000000006 UTC);
        e.session = Some("s-1".into());
        e.who.subject = Some("alice".into());
        e.who.actors = vec![ActorRef {
            subject: "agent".into(),
            issuer: None,
        }];
        e.what.statement = Some("select 1, \"x\"\n".into());
        e.outcome.rows = Some(1);
        e
    }

    #[test]
    fn encodes_the_documented_layout() {
        let mut buf = Vec::new();
        let hash = encode(&mut buf, 1, &GENESIS_PREV, &sample()).unwrap();
        let text = std::str::from_utf8(&buf).unwrap();
        let want_prefix = format!(
            "{{\"seq\":1,\"prev\":\"{}\",\"time\":\"2025-01-02T03:04:05.000000006Z\",\
             \"kind\":\"statement\",\"session\":\"s-1\",\"who\":{{\"subject\":\"alice\",\
             \"actors\":[{{\"subject\":\"agent\"}}]}},\"what\":{{\"statement\":\
             \"select 1, \\\"x\\\"\\n\"}},\"outcome\":{{\"status\":\"success\",\"rows\":1}}",
            "0".repeat(64)
        );
        assert!(text.starts_with(&want_prefix), "{text}");
        assert_eq!(
            &text[want_prefix.len()..],
            format!(",\"hash\":\"{hash}\"}}\n")
        );
        // The hash is SHA-256 of the record without its hash field.
        let without_hash = format!("{want_prefix}}}");
        let digest: [u8; 32] = Sha256::digest(without_hash.as_bytes()).into();
        assert_eq!(hash, HashHex::from_digest(&digest));
    }

    #[test]
    fn hex_digests_round_trip() {
        for seed in 0u8..=255 {
            let digest: [u8; 32] = Sha256::digest([seed]).into();
            let hex = HashHex::from_digest(&digest);
            assert_eq!(hex.as_str(), hex::encode(digest));
            assert_eq!(hex.digest(), digest);
        }
    }

    #[test]
    fn round_trips_and_chains() {
        let mut buf = Vec::new();
        let h1 = encode(&mut buf, 1, &GENESIS_PREV, &sample()).unwrap();
        let mid = buf.len();
        let h2 = encode(&mut buf, 2, &h1, &sample()).unwrap();
        let first = decode(&buf[..mid - 1]).unwrap();
        let second = decode(&buf[mid..buf.len() - 1]).unwrap();
        assert_eq!((first.seq, first.prev, first.hash), (1, GENESIS_PREV, h1));
        assert_eq!((second.seq, second.prev, second.hash), (2, h1, h2));
        assert_eq!(first.event, sample());
    }

    #[test]
    fn every_single_byte_change_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 3, &GENESIS_PREV, &sample()).unwrap();
        let line = &buf[..buf.len() - 1];
        assert!(decode(line).is_ok());
        for i in 0..line.len() {
            for flip in [0x01, 0x20, 0x80] {
                let mut bad = line.to_vec();
                bad[i] ^= flip;
                assert!(decode(&bad).is_err(), "byte {i} ^ {flip:#x} went unnoticed");
            }
        }
    }

    #[test]
    fn rejects_non_records() {
        let kind = |line: &[u8]| match decode(line) {
            Err(RecordError::NotJson(_)) => "json",
            Err(RecordError::NotRecord(_)) => "record",
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
        };
        assert_eq!(kind(b"not json"), "json");
        assert_eq!(kind(b""), "json");
        assert_eq!(kind(b"{\"seq\":1,"), "json");
        assert_eq!(kind(b"{\"seq\":1}"), "record");
        assert_eq!(kind(b"{\"seq\":\"1\"}"), "record");
    }

    #[test]
    fn size_limit() {
        let mut e = sample();
        assert!(check_event(&e).is_ok());
        e.what.statement = Some("x".repeat(MAX_LINE_LEN / 6 - 2048));
        assert!(check_event(&e).is_ok(), "fast path");
        e.what.statement = Some("x".repeat(MAX_LINE_LEN - 4096));
        assert!(check_event(&e).is_ok(), "measured");
        e.what.statement = Some("x".repeat(MAX_LINE_LEN));
        assert!(matches!(check_event(&e), Err(RecordError::TooLong { .. })));
        // The writer-side check agrees.
        let mut buf = vec![b'a'];
        assert!(encode(&mut buf, 1, &GENESIS_PREV, &e).is_err());
        assert_eq!(buf, b"a", "a failed encode leaves the buffer untouched");
        e.what.statement = Some("\u{1}".repeat(MAX_LINE_LEN / 4));
        assert!(
            matches!(check_event(&e), Err(RecordError::TooLong { .. })),
            "escaping counted"
        );
    }

    #[test]
    fn a_large_detail_is_measured_too() {
        let mut e = sample();
        e.what.detail = Some(serde_json::json!({ "tail": "y".repeat(MAX_LINE_LEN) }));
        assert!(matches!(check_event(&e), Err(RecordError::TooLong { .. })));
        e.what.detail =
            Some(serde_json::json!({ "args": vec![serde_json::json!({"bytes": 1}); 100] }));
        assert!(check_event(&e).is_ok());
    }

    #[test]
    fn failure_outcome_round_trips() {
        let mut e = sample();
        e.outcome = Outcome::failure("denied");
        e.outcome.code = Some("42501".into());
        let mut buf = Vec::new();
        encode(&mut buf, 1, &GENESIS_PREV, &e).unwrap();
        let r = decode(&buf[..buf.len() - 1]).unwrap();
        assert_eq!(r.event.outcome.status, Status::Failure);
        assert_eq!(r.event, e);
    }
}
