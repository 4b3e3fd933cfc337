//! Checking checkpoint records while reading a log in order: the tree is rebuilt from the
//! records, and every checkpoint must be signed by the expected key and sign a root the
//! records before it really hash to.

use gatehouse_tlog::{Checkpoint, Frontier, Hash, History, Verifier};

use super::{CheckpointDetail, MAX_GAP};
use crate::event::EventKind;
use crate::record::Record;

/// What the checkpoints of a log showed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointSummary {
    /// `audit.checkpoint` records read.
    pub count: u64,
    /// Whether their signatures were checked (a key was given).
    pub signatures_checked: bool,
    /// The signing key (vkey text) when signatures were checked.
    pub key: Option<String>,
    /// The origin the checkpoints name.
    pub origin: Option<String>,
    /// The last checkpoint: its record's `seq` and the tree size it signs.
    pub last: Option<(u64, u64)>,
    /// Operators' acknowledgements of a log that disagreed with its checkpoint: `seq`, what
    /// was wrong, and the reason they gave.
    pub acknowledged: Vec<(u64, String, String)>,
    /// The root of the whole log's tree, hex.
    pub root: Option<String>,
}

/// Why a checkpoint record is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointFault {
    #[error("checkpoint is malformed: {0}")]
    Malformed(String),
    #[error("checkpoint is not signed by the expected key {key}: {why}")]
    Signature { key: String, why: String },
    #[error("checkpoint names log {found:?}, not {expected:?}")]
    Origin { expected: String, found: String },
    #[error("checkpoint signs tree size {size} with a root that records 1..{size} do not hash to (the records were altered, removed or renumbered after it was signed)")]
    RootMismatch { size: u64 },
    #[error("checkpoint signs tree size {size}, but only {available} records precede it")]
    Ahead { size: u64, available: u64 },
    #[error(
        "checkpoint signs tree size {size}, smaller than the previous checkpoint's {previous}"
    )]
    Backwards { size: u64, previous: u64 },
    #[error("checkpoint signs tree size {size}, more than {MAX_GAP} records before it")]
    TooFarBack { size: u64 },
}

/// A root that must turn up at a given size (the checkpoint kept outside the log).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected {
    pub size: u64,
    pub root: Hash,
}

pub(crate) struct Tracker {
    history: History,
    verifier: Option<Verifier>,
    pub summary: CheckpointSummary,
    expected: Option<Expected>,
    /// `Some(true)` once the expected root was seen, `Some(false)` if a different one was.
    pub expected_seen: Option<bool>,
    /// Every checkpoint's fault is kept instead of stopping (the writer's resume, after an
    /// operator acknowledged the log as it is).
    lenient: bool,
}

impl Tracker {
    pub fn new(
        base: Frontier,
        verifier: Option<Verifier>,
        expected: Option<Expected>,
        lenient: bool,
    ) -> Self {
        let summary = CheckpointSummary {
            signatures_checked: verifier.is_some(),
            key: verifier.as_ref().map(|v| v.to_string()),
            ..CheckpointSummary::default()
        };
        let mut tracker = Tracker {
            history: History::new(base, MAX_GAP),
            verifier,
            summary,
            expected,
            expected_seen: None,
            lenient,
        };
        tracker.check_expected();
        tracker
    }

    pub fn frontier(&self) -> &Frontier {
        self.history.frontier()
    }

    /// Takes the next record (in `seq` order, already checked for its hash and chain): its
    /// leaf, and the whole record when it is one whose detail matters here.
    pub fn record(&mut self, full: Option<&Record>, leaf: Hash) -> Result<(), CheckpointFault> {
        if let Some(record) = full {
            self.special(record)?;
        }
        // Cannot be full: a log holds fewer than u64::MAX records.
        let _ = self.history.append(leaf);
        self.check_expected();
        Ok(())
    }

    fn special(&mut self, record: &Record) -> Result<(), CheckpointFault> {
        match record.event.kind {
            EventKind::AuditCheckpoint => {
                let checked = self.checkpoint(record);
                if !self.lenient {
                    checked?;
                }
            }
            EventKind::AuditAcknowledged => {
                let detail = record.event.what.detail.as_ref();
                let field = |name: &str| {
                    detail
                        .and_then(|d| d.get(name))
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned()
                };
                self.summary
                    .acknowledged
                    .push((record.seq, field("problem"), field("reason")));
            }
            _ => {}
        }
        Ok(())
    }

    fn checkpoint(&mut self, record: &Record) -> Result<(), CheckpointFault> {
        self.summary.count += 1;
        let detail = CheckpointDetail::of(&record.event).map_err(CheckpointFault::Malformed)?;
        let checkpoint = match &self.verifier {
            Some(verifier) => Checkpoint::open(&detail.note, verifier).map_err(|e| {
                CheckpointFault::Signature {
                    key: verifier.to_string(),
                    why: e.to_string(),
                }
            })?,
            None => gatehouse_tlog::SignedNote::parse(&detail.note)
                .map_err(|e| e.to_string())
                .and_then(|note| Checkpoint::parse(note.body()).map_err(|e| e.to_string()))
                .map_err(CheckpointFault::Malformed)?,
        };
        if checkpoint.size != detail.size || hex::encode(checkpoint.root) != detail.root {
            return Err(CheckpointFault::Malformed(
                "size or root differs from the signed note".into(),
            ));
        }
        match &self.summary.origin {
            Some(expected) if *expected != checkpoint.origin => {
                return Err(CheckpointFault::Origin {
                    expected: expected.clone(),
                    found: checkpoint.origin,
                })
            }
            Some(_) => {}
            None => self.summary.origin = Some(checkpoint.origin.clone()),
        }
        let available = self.history.frontier().size();
        let size = checkpoint.size;
        if size > available {
            return Err(CheckpointFault::Ahead { size, available });
        }
        if let Some((_, previous)) = self.summary.last {
            if size < previous {
                return Err(CheckpointFault::Backwards { size, previous });
            }
        }
        let root = self
            .history
            .root_at(size)
            .ok_or(CheckpointFault::TooFarBack { size })?;
        if root != checkpoint.root {
            return Err(CheckpointFault::RootMismatch { size });
        }
        self.summary.last = Some((record.seq, size));
        Ok(())
    }

    fn check_expected(&mut self) {
        if let Some(expected) = self.expected {
            if self.expected_seen.is_none() && self.history.frontier().size() == expected.size {
                self.expected_seen = Some(self.history.frontier().root() == expected.root);
            }
        }
    }

    /// The summary at the end of the log.
    pub fn finish(mut self) -> CheckpointSummary {
        self.summary.root = Some(hex::encode(self.history.frontier().root()));
        self.summary
    }
}
