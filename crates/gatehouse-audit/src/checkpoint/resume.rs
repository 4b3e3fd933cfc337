//! Rebuilding the Merkle tree when the writer opens a log, and refusing a log that disagrees
//! with the checkpoint signed before.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use gatehouse_tlog::Frontier;

use super::check::Tracker;
use super::{leaf_of, CheckpointOptions, CheckpointState};
use crate::error::AuditError;
use crate::lines::{self, Line};
use crate::record::{self, GENESIS_PREV, MAX_LINE_LEN};
use crate::tail::{self, Continuation};
use crate::verify::{self, Chain};

/// How the tree was rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumption {
    /// A new, empty log.
    Empty,
    /// From the checkpoint kept outside the log, rehashing the records after it.
    FromCheckpoint { size: u64, rehashed: u64 },
    /// No checkpoint was kept outside the log: every record was rehashed and every checkpoint
    /// record in the log checked. Nothing proves the log was not cut after its last one.
    Rebuilt { records: u64, checkpoints: u64 },
    /// An operator acknowledged the log as it is: rebuilt without checking its checkpoints.
    Acknowledged { records: u64 },
}

pub(crate) struct Resumed {
    pub tree: Frontier,
    pub state: Option<CheckpointState>,
    pub how: Resumption,
}

pub(crate) fn resume(
    path: &Path,
    file: &File,
    cont: &Continuation,
    options: &CheckpointOptions,
    acknowledge: bool,
) -> Result<Resumed, AuditError> {
    let state_path = &options.state_path;
    let inconsistent = |reason: String| AuditError::Inconsistent {
        state: state_path.clone(),
        reason,
    };
    let records = cont.next_seq - 1;
    if acknowledge {
        let tree = leaves_as_stored(path, cont.len)?;
        return Ok(Resumed {
            tree,
            state: None,
            how: Resumption::Acknowledged { records },
        });
    }
    let state = CheckpointState::load(state_path).map_err(|e| inconsistent(e.to_string()))?;
    let verifier = options.signer.verifier();
    let Some(state) = state else {
        if records == 0 {
            return Ok(Resumed {
                tree: Frontier::new(),
                state: None,
                how: Resumption::Empty,
            });
        }
        let tracker = Tracker::new(Frontier::new(), Some(verifier), None, false);
        let chain = rehash(path, 0, cont.len, Chain::after(tracker, 0, GENESIS_PREV))
            .map_err(inconsistent)?;
        let checkpoints = chain.tree.summary.count;
        return Ok(Resumed {
            tree: chain.tree.frontier().clone(),
            state: None,
            how: Resumption::Rebuilt {
                records,
                checkpoints,
            },
        });
    };

    let verified = state
        .verify(state_path, &verifier)
        .map_err(|e| inconsistent(e.to_string()))?;
    let size = state.size;
    if records < size {
        return Err(inconsistent(format!(
            "the log holds {records} records, but the last signed checkpoint covers {size}: \
             records {}..{size} were removed",
            records + 1
        )));
    }
    if size > 0 {
        let line = line_before(path, file, state.offset, cont.len)?;
        let matches = line
            .as_deref()
            .and_then(|l| record::decode(l).ok())
            .is_some_and(|r| r.seq == size && r.hash == verified.head);
        if !matches {
            return Err(inconsistent(format!(
                "record {size} is not the record the last signed checkpoint covers: the log \
                 was rewritten"
            )));
        }
    }
    if state.is_final && records > state.record_seq {
        return Err(inconsistent(format!(
            "the gateway stopped after its final checkpoint at seq {}, yet the log goes on to \
             seq {records}: records {}..{records} were not written by the gateway",
            state.record_seq,
            state.record_seq + 1
        )));
    }
    let tracker = Tracker::new(verified.frontier.clone(), Some(verifier), None, false);
    let chain = rehash(
        path,
        state.offset,
        cont.len,
        Chain::after(tracker, size, verified.head),
    )
    .map_err(|e| inconsistent(format!("after the last signed checkpoint: {e}")))?;
    Ok(Resumed {
        tree: chain.tree.frontier().clone(),
        how: Resumption::FromCheckpoint {
            size,
            rehashed: records - size,
        },
        state: Some(state),
    })
}

/// Checks the records in bytes `from..to` into `chain`.
fn rehash(path: &Path, from: u64, to: u64, mut chain: Chain) -> Result<Chain, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    file.seek(SeekFrom::Start(from))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    verify::scan(path, file.take(to - from), &mut chain).map_err(|e| e.to_string())?;
    Ok(chain)
}

/// The complete line that ends just before `offset` (its `\n` at `offset - 1`), if any.
fn line_before(
    path: &Path,
    file: &File,
    offset: u64,
    len: u64,
) -> Result<Option<Vec<u8>>, AuditError> {
    if offset == 0 || offset > len {
        return Ok(None);
    }
    let io = |e| AuditError::io(path, e);
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, offset - 1).map_err(io)?;
    if last[0] != b'\n' {
        return Ok(None);
    }
    let start = match tail::rfind_newline(file, offset - 1).map_err(io)? {
        tail::Scan::Found(nl) => nl + 1,
        tail::Scan::Start => 0,
        tail::Scan::TooFar => return Ok(None),
    };
    let mut line = vec![0u8; (offset - 1 - start) as usize];
    file.read_exact_at(&mut line, start).map_err(io)?;
    Ok(Some(line))
}

/// The tree of the records' stored hashes, checking nothing: the operator accepted the log.
fn leaves_as_stored(path: &Path, len: u64) -> Result<Frontier, AuditError> {
    let io = |e| AuditError::io(path, e);
    let file = File::open(path).map_err(io)?;
    let mut reader = BufReader::with_capacity(1024 * 1024, file.take(len));
    let mut tree = Frontier::new();
    let mut buf = Vec::new();
    loop {
        match lines::read_line(&mut reader, &mut buf, MAX_LINE_LEN).map_err(io)? {
            Line::Complete => {
                let record = record::parse(&buf).map_err(|e| AuditError::Corrupt {
                    path: path.to_path_buf(),
                    offset: 0,
                    reason: format!("record {} cannot be read: {e}", tree.size() + 1),
                })?;
                let _ = tree.append(leaf_of(&record.hash));
            }
            Line::Eof => return Ok(tree),
            Line::Partial | Line::TooLong => {
                return Err(AuditError::Corrupt {
                    path: path.to_path_buf(),
                    offset: 0,
                    reason: "a record cannot be read".into(),
                })
            }
        }
    }
}
