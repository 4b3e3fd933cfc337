//! Offline verification of a log file: every record's own hash, `seq` continuity and `prev`
//! linkage, streaming with bounded memory. Needs no writer and no running gateway.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use gatehouse_tlog::{Frontier, Verifier};
use time::OffsetDateTime;

use crate::checkpoint::check::{CheckpointFault, CheckpointSummary, Expected, Tracker};
use crate::checkpoint::CheckpointState;
use crate::pairing::{self, Pending, Role};
use crate::record::{HashHex, RecordError, GENESIS_PREV, MAX_LINE_LEN};
use crate::scan::{Checked, End};

/// Summary of an intact log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Hash of the last record: the head of the chain, to note down and compare later.
    pub last_hash: Option<HashHex>,
    pub first_time: Option<OffsetDateTime>,
    pub last_time: Option<OffsetDateTime>,
    /// Forwarded statements (`statement` records with outcome `pending`).
    pub statements_forwarded: u64,
    /// Forwarded statements with no `statement.result`: their outcome is unknown (the gateway
    /// stopped, or the session ended, before the server answered).
    pub outcomes_unknown: u64,
    /// The `seq`s of the first few of those, to look up.
    pub unknown_examples: Vec<u64>,
    /// Session recordings the log vouches for (from `session.end`), to check against the files.
    pub recordings: Vec<crate::recordings::AuditedRecording>,
    /// Recordings the log says were pruned (from `recording.pruned`), by session.
    pub pruned: Vec<crate::recordings::PrunedRecording>,
    /// What the signed checkpoints showed.
    pub checkpoints: CheckpointSummary,
}

/// What to check beyond the chain.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The key checkpoints must be signed by. Without one, checkpoints are still checked
    /// against the records, but anyone could have signed them.
    pub verifier: Option<Verifier>,
    /// The latest checkpoint as kept outside the audit directory (where it was read from, and
    /// its contents): the log must still hold the records it signs, unchanged.
    pub state: Option<(PathBuf, CheckpointState)>,
}

/// How many unknown-outcome statements a report names.
const UNKNOWN_EXAMPLES: usize = 20;

/// Why a record is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReason {
    NotValidJson(String),
    NotARecord(String),
    NotCanonical(&'static str),
    HashMismatch,
    PrevMismatch,
    SequenceGap {
        expected: u64,
        found: u64,
    },
    PartialLastLine,
    LineTooLong,
    /// A `statement.result` whose `ref` names no forwarded statement awaiting a result.
    OrphanResult(u64),
    /// An `audit.checkpoint` record that is not what the gateway signs.
    Checkpoint(CheckpointFault),
}

impl fmt::Display for VerifyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyReason::NotValidJson(e) => write!(f, "not valid JSON ({e})"),
            VerifyReason::NotARecord(e) => write!(f, "not a valid record ({e})"),
            VerifyReason::NotCanonical(e) => write!(f, "not in canonical form ({e})"),
            VerifyReason::HashMismatch => f.write_str("hash mismatch"),
            VerifyReason::PrevMismatch => f.write_str("prev does not match the previous record"),
            VerifyReason::SequenceGap { expected, found } if found > expected => {
                write!(f, "sequence gap: expected {expected}, found {found}")
            }
            VerifyReason::SequenceGap { expected, found } => {
                write!(
                    f,
                    "sequence out of order: expected {expected}, found {found}"
                )
            }
            VerifyReason::PartialLastLine => {
                f.write_str("partial last line (a write that never finished)")
            }
            VerifyReason::LineTooLong => write!(f, "line longer than {MAX_LINE_LEN} bytes"),
            VerifyReason::OrphanResult(seq) => write!(
                f,
                "statement.result refers to seq {seq}, which is not a forwarded statement awaiting a result"
            ),
            VerifyReason::Checkpoint(fault) => fault.fmt(f),
        }
    }
}

impl From<RecordError> for VerifyReason {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::NotJson(e) => VerifyReason::NotValidJson(e),
            RecordError::NotRecord(e) | RecordError::Serialise(e) => VerifyReason::NotARecord(e),
            RecordError::NotCanonical(e) => VerifyReason::NotCanonical(e),
            RecordError::HashMismatch => VerifyReason::HashMismatch,
            RecordError::TooLong { .. } => VerifyReason::LineTooLong,
        }
    }
}

/// The log is not intact (or could not be read). Names the first bad record.
#[derive(Debug, thiserror::Error)]
pub enum VerifyFailure {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// `line` is 1-based; `seq` is the record's own claim when it could be read.
    #[error("line {line}{}: {reason}", SeqNote(*seq))]
    BadRecord {
        line: u64,
        seq: Option<u64>,
        reason: VerifyReason,
    },
    /// The log disagrees with the checkpoint kept outside it (or that checkpoint is unusable).
    #[error("the log disagrees with the last checkpoint kept in {}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
}

struct SeqNote(Option<u64>);

impl fmt::Display for SeqNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(seq) => write!(f, " (seq {seq})"),
            None => Ok(()),
        }
    }
}

/// Verifies a whole log file. `Ok` only if every record checks out and the file ends with a
/// complete line. An empty file is an intact, empty log.
pub fn verify_file(path: impl AsRef<Path>) -> Result<VerifyReport, VerifyFailure> {
    verify_with(path, &VerifyOptions::default())
}

/// [`verify_file`], also checking checkpoint signatures and the checkpoint kept outside.
pub fn verify_with(
    path: impl AsRef<Path>,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyFailure> {
    let path = path.as_ref();
    let expected = match &options.state {
        Some((state_path, state)) => Some(expected_root(state_path, state, options)?),
        None => None,
    };
    let file = File::open(path).map_err(|source| VerifyFailure::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut chain = Chain::new(Tracker::new(
        Frontier::new(),
        options.verifier.clone(),
        expected,
        false,
    ));
    scan(path, file, &mut chain)?;
    chain.finish(options.state.as_ref())
}

/// Checks every line of `input` into `chain`, up to the end of the input.
pub(crate) fn scan(
    path: &Path,
    input: impl io::Read + Send,
    chain: &mut Chain,
) -> Result<(), VerifyFailure> {
    let mut lines = 0u64;
    let end = crate::scan::scan(input, |line, checked| {
        lines = line;
        chain
            .accept(checked)
            .map_err(|(seq, reason)| VerifyFailure::BadRecord { line, seq, reason })
    })?;
    let bad = |seq, reason| VerifyFailure::BadRecord {
        line: lines + 1,
        seq,
        reason,
    };
    match end {
        End::Eof => Ok(()),
        End::Partial { seq } => Err(bad(seq, VerifyReason::PartialLastLine)),
        End::TooLong => Err(bad(None, VerifyReason::LineTooLong)),
        End::Io(source) => Err(VerifyFailure::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The root the log must have at the state file's size, once its signature checks out.
fn expected_root(
    path: &Path,
    state: &CheckpointState,
    options: &VerifyOptions,
) -> Result<Expected, VerifyFailure> {
    let fail = |reason: String| VerifyFailure::State {
        path: path.to_path_buf(),
        reason,
    };
    let verifier = options
        .verifier
        .as_ref()
        .ok_or_else(|| fail("no public key to check it with".into()))?;
    let verified = state
        .verify(path, verifier)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Expected {
        size: verified.checkpoint.size,
        root: verified.checkpoint.root,
    })
}

/// The running state of a verification.
pub(crate) struct Chain {
    report: VerifyReport,
    pending: Pending<()>,
    pub(crate) tree: Tracker,
    /// Statements are paired with their results (off when reading only part of a log).
    pairing: bool,
}

impl Chain {
    fn new(tree: Tracker) -> Self {
        Chain {
            report: VerifyReport::default(),
            pending: Pending::default(),
            tree,
            pairing: true,
        }
    }

    /// A chain that continues after record `last_seq` with hash `last_hash`, without
    /// statement pairing (their statements may lie before the part being read).
    pub(crate) fn after(tree: Tracker, last_seq: u64, last_hash: HashHex) -> Self {
        let mut chain = Chain::new(tree);
        chain.pairing = false;
        if last_seq > 0 {
            chain.report.last_seq = Some(last_seq);
            chain.report.last_hash = Some(last_hash);
        }
        chain
    }

    /// Takes the next line, already checked on its own, and checks how it links to the rest.
    fn accept(&mut self, checked: Checked) -> Result<(), (Option<u64>, VerifyReason)> {
        let record = match checked {
            Checked::Record(linked) => linked,
            Checked::Bad { seq, error } => return Err((seq, error.into())),
        };
        let seq = Some(record.seq);
        let (expected_seq, expected_prev) = match (self.report.last_seq, self.report.last_hash) {
            (Some(last), Some(hash)) => (last.saturating_add(1), hash),
            _ => (1, GENESIS_PREV),
        };
        if record.seq != expected_seq {
            let gap = VerifyReason::SequenceGap {
                expected: expected_seq,
                found: record.seq,
            };
            return Err((seq, gap));
        }
        if record.prev != expected_prev {
            return Err((seq, VerifyReason::PrevMismatch));
        }
        self.tree
            .record(record.full.as_deref(), record.leaf)
            .map_err(|fault| (seq, VerifyReason::Checkpoint(fault)))?;
        let role = if self.pairing {
            pairing::role_of(record.kind, record.status, record.refers)
        } else {
            Role::Other
        };
        match role {
            Role::Opens => {
                self.report.statements_forwarded += 1;
                self.pending.open(record.seq, record.session.clone(), ());
            }
            Role::Resolves(statement) => {
                if self.pending.resolve(statement).is_none() {
                    return Err((seq, VerifyReason::OrphanResult(statement)));
                }
            }
            Role::EndsSession => {
                let unknown = self.pending.end_session(record.session.as_deref());
                self.unknown(unknown.into_iter().map(|(seq, ())| seq));
            }
            Role::Other => {}
        }
        if let Some(full) = &record.full {
            crate::recordings::collect(full, &mut self.report);
        }
        let report = &mut self.report;
        report.records += 1;
        report.first_seq.get_or_insert(record.seq);
        report.first_time.get_or_insert(record.time);
        report.last_seq = Some(record.seq);
        report.last_hash = Some(record.hash);
        report.last_time = Some(record.time);
        Ok(())
    }

    fn unknown(&mut self, seqs: impl Iterator<Item = u64>) {
        for seq in seqs {
            self.report.outcomes_unknown += 1;
            if self.report.unknown_examples.len() < UNKNOWN_EXAMPLES {
                self.report.unknown_examples.push(seq);
            }
        }
    }

    /// The report at the end of the log: statements still pending have unknown outcomes.
    fn finish(
        mut self,
        state: Option<&(PathBuf, CheckpointState)>,
    ) -> Result<VerifyReport, VerifyFailure> {
        let left = self.pending.drain();
        self.unknown(left.into_iter().map(|(seq, ())| seq));
        if let Some((path, state)) = state {
            let fail = |reason: String| VerifyFailure::State {
                path: path.clone(),
                reason,
            };
            let records = self.report.records;
            match self.tree.expected_seen {
                Some(true) => {}
                Some(false) => {
                    return Err(fail(format!(
                        "records 1..{} do not hash to the root it signs: the log was rewritten",
                        state.size
                    )))
                }
                None => {
                    return Err(fail(format!(
                    "it signs {} records but the log holds {records}: records {}..{} were removed",
                    state.size,
                    records + 1,
                    state.size
                )))
                }
            }
            if state.is_final && records > state.record_seq {
                return Err(fail(format!(
                    "the gateway stopped after its final checkpoint at seq {}, yet the log goes on to seq {records}: records {}..{records} were not written by the gateway",
                    state.record_seq,
                    state.record_seq + 1,
                )));
            }
        }
        self.report.checkpoints = self.tree.finish();
        Ok(self.report)
    }
}
