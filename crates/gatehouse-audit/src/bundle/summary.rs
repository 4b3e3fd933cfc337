//! What a run of records says, read from the records alone: the maker writes it into the
//! manifest and the checker derives it again, so the two can only agree if the manifest is the
//! records' own.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use gatehouse_tlog::{Checkpoint, Hash, Verifier};
use serde::{Deserialize, Serialize};

use super::BundleError;
use crate::checkpoint::{leaf_of, CheckpointDetail};
use crate::event::{EventKind, Status};
use crate::lines::{self, Line};
use crate::record::{self, HashHex, MAX_LINE_LEN};
use crate::recordings::{audited, AuditedRecording};
use crate::timefmt::Rfc3339Nanos;

/// The records of a bundle in figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_time: String,
    pub last_time: String,
    /// The hash of the record before the range, as the first record names it.
    pub first_prev: String,
    pub last_hash: String,
    /// Records per kind.
    pub kinds: BTreeMap<String, u64>,
    /// Records whose outcome is a failure (refused statements, failed logins, errors).
    pub failures: u64,
    /// Distinct sessions.
    pub sessions: u64,
    /// Distinct authenticated principals (`subject`, with ` (issuer)` for OIDC).
    pub principals: Vec<String>,
    /// The guardrail policies the range's decisions name.
    pub policies: Vec<PolicyUse>,
    /// Recordings whose `session.end` is in the range, with the SHA-256 the log vouches for.
    pub recordings: Vec<RecordingRef>,
    /// `audit.checkpoint` records in the range; each one's signature was checked.
    pub checkpoints: u64,
    /// `audit.acknowledged` records: an operator accepted a log that disagreed with its
    /// signed checkpoint.
    pub acknowledged: Vec<u64>,
}

/// One policy, by the hash statements name it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyUse {
    pub sha256: String,
    /// Statements in the range it decided.
    pub statements: u64,
    /// Its `policy.loaded` records in the range.
    pub loaded: Vec<u64>,
}

/// A recording as the log names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingRef {
    pub session: String,
    pub file: String,
    pub sha256: String,
    /// The `seq` of its `session.end`.
    pub seq: u64,
}

impl From<AuditedRecording> for RecordingRef {
    fn from(r: AuditedRecording) -> Self {
        RecordingRef {
            session: r.session,
            file: r.file,
            sha256: r.sha256,
            seq: r.seq,
        }
    }
}

/// A run of records read and checked.
pub(crate) struct Scanned {
    pub summary: Summary,
    /// Their Merkle leaves, in order.
    pub leaves: Vec<Hash>,
    /// The first and last record lines (without newline).
    pub first_line: String,
    pub last_line: String,
}

/// Reads a file of consecutive records: each one's own hash, seq following seq, and each
/// `prev` the hash before it; checkpoints in it must be signed by `verifier`.
pub(crate) fn scan(path: &Path, verifier: &Verifier) -> Result<Scanned, BundleError> {
    let file = File::open(path).map_err(|e| BundleError::io(path.display(), e))?;
    let mut reader = BufReader::with_capacity(1024 * 1024, file);
    let mut acc = Accumulator::default();
    let mut line = Vec::new();
    loop {
        match lines::read_line(&mut reader, &mut line, MAX_LINE_LEN)
            .map_err(|e| BundleError::io(path.display(), e))?
        {
            Line::Complete => acc.add(&line, verifier)?,
            Line::Eof => break,
            Line::Partial => {
                return Err(BundleError::Records(
                    "the last record has no newline: the file was cut".into(),
                ))
            }
            Line::TooLong => {
                return Err(BundleError::Records(format!(
                    "a line after seq {} is longer than {MAX_LINE_LEN} bytes",
                    acc.last_seq
                )))
            }
        }
    }
    acc.finish()
}

#[derive(Default)]
struct Accumulator {
    leaves: Vec<Hash>,
    first: Option<(u64, String, HashHex, String)>,
    last_seq: u64,
    last_hash: Option<HashHex>,
    last_time: String,
    last_line: String,
    kinds: BTreeMap<String, u64>,
    failures: u64,
    sessions: BTreeSet<String>,
    principals: BTreeSet<String>,
    policies: BTreeMap<String, PolicyUse>,
    recordings: Vec<RecordingRef>,
    checkpoints: u64,
    acknowledged: Vec<u64>,
}

impl Accumulator {
    fn add(&mut self, line: &[u8], verifier: &Verifier) -> Result<(), BundleError> {
        let bad = |seq: u64, why: String| BundleError::Records(format!("after seq {seq}: {why}"));
        let record = record::decode(line).map_err(|e| bad(self.last_seq, e.to_string()))?;
        let seq = record.seq;
        match self.last_hash {
            None => {
                let text = String::from_utf8_lossy(line).into_owned();
                let time = Rfc3339Nanos(record.event.time).to_string();
                self.first = Some((seq, time, record.prev, text));
            }
            Some(previous) => {
                if seq != self.last_seq + 1 {
                    return Err(BundleError::Records(format!(
                        "seq {seq} follows seq {}: records are missing or out of order",
                        self.last_seq
                    )));
                }
                if record.prev != previous {
                    return Err(BundleError::Records(format!(
                        "record {seq} does not link to record {}: its prev is not that record's hash",
                        self.last_seq
                    )));
                }
            }
        }
        self.leaves.push(leaf_of(&record.hash));
        self.last_seq = seq;
        self.last_hash = Some(record.hash);
        self.last_time = Rfc3339Nanos(record.event.time).to_string();
        self.last_line.clear();
        self.last_line.push_str(&String::from_utf8_lossy(line));

        let event = &record.event;
        *self
            .kinds
            .entry(event.kind.as_str().to_owned())
            .or_default() += 1;
        if event.outcome.status == Status::Failure {
            self.failures += 1;
        }
        if let Some(session) = &event.session {
            if !self.sessions.contains(session) {
                self.sessions.insert(session.clone());
            }
        }
        if let Some(subject) = &event.who.subject {
            let principal = match &event.who.issuer {
                Some(issuer) => format!("{subject} ({issuer})"),
                None => subject.clone(),
            };
            self.principals.insert(principal);
        }
        let detail = event.what.detail.as_ref();
        let hash_of = |key: &str| {
            detail
                .and_then(|d| d.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        match event.kind {
            EventKind::Statement => {
                if let Some(policy) = hash_of("policy") {
                    self.policy(policy).statements += 1;
                }
            }
            EventKind::PolicyLoaded => {
                if let Some(policy) = hash_of("sha256") {
                    self.policy(policy).loaded.push(seq);
                }
            }
            EventKind::AuditCheckpoint => {
                let detail = CheckpointDetail::of(event).map_err(|e| bad(seq, e))?;
                let signed = Checkpoint::open(&detail.note, verifier).map_err(|e| {
                    BundleError::Signature {
                        key: verifier.to_vkey(),
                        why: format!("the checkpoint record at seq {seq}: {e}"),
                    }
                })?;
                if signed.size != detail.size
                    || hex::encode(signed.root) != detail.root
                    || signed.size >= seq
                {
                    return Err(bad(
                        seq,
                        "the checkpoint record's size or root differs from its signed note, or it covers itself".into(),
                    ));
                }
                self.checkpoints += 1;
            }
            EventKind::AuditAcknowledged => self.acknowledged.push(seq),
            _ => {}
        }
        if let Some(recording) = audited(&record) {
            self.recordings.push(recording.into());
        }
        Ok(())
    }

    fn policy(&mut self, sha256: String) -> &mut PolicyUse {
        self.policies
            .entry(sha256.clone())
            .or_insert_with(|| PolicyUse {
                sha256,
                statements: 0,
                loaded: Vec::new(),
            })
    }

    fn finish(self) -> Result<Scanned, BundleError> {
        let (Some((first_seq, first_time, first_prev, first_line)), Some(last_hash)) =
            (self.first, self.last_hash)
        else {
            return Err(BundleError::Records("the bundle holds no records".into()));
        };
        Ok(Scanned {
            summary: Summary {
                records: self.leaves.len() as u64,
                first_seq,
                last_seq: self.last_seq,
                first_time,
                last_time: self.last_time,
                first_prev: first_prev.to_string(),
                last_hash: last_hash.to_string(),
                kinds: self.kinds,
                failures: self.failures,
                sessions: self.sessions.len() as u64,
                principals: self.principals.into_iter().collect(),
                policies: self.policies.into_values().collect(),
                recordings: self.recordings,
                checkpoints: self.checkpoints,
                acknowledged: self.acknowledged,
            },
            leaves: self.leaves,
            first_line,
            last_line: self.last_line,
        })
    }
}
