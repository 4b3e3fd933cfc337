//! Reading the leaf hashes of a run of records, for proofs made while the log is written
//! (a witness needs a consistency proof from the last size it accepted to the newest).

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;

use gatehouse_tlog::{Frontier, Hash};

use super::{leaf_of, state::parse_hash, CheckpointState};
use crate::lines::{self, Line};
use crate::record::{self, HashHex, GENESIS_PREV, MAX_LINE_LEN};

/// A point in the log just after record `size`, with the tree's frontier there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreePosition {
    pub frontier: Frontier,
    /// Byte offset just after record `size`.
    pub offset: u64,
    /// The `hash` of record `size` (the genesis `prev` for an empty tree).
    pub head: HashHex,
}

impl TreePosition {
    /// The empty tree at the start of the log.
    pub fn start() -> Self {
        Self {
            frontier: Frontier::new(),
            offset: 0,
            head: GENESIS_PREV,
        }
    }

    /// How many records the position is after.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The position a kept checkpoint describes. Its signature is the caller's to check (the
    /// writer's own latest checkpoint needs none).
    pub fn of(state: &CheckpointState) -> Result<Self, String> {
        let nodes = state
            .frontier
            .iter()
            .map(|h| parse_hash(h).ok_or("frontier is not hex"))
            .collect::<Result<Vec<Hash>, _>>()?;
        let frontier = Frontier::from_parts(state.size, nodes).map_err(|e| e.to_string())?;
        let head = HashHex::parse(state.head.as_bytes()).ok_or("head is not 64 lowercase hex")?;
        Ok(Self {
            frontier,
            offset: state.offset,
            head,
        })
    }
}

/// Reads records `from.size() + 1 ..= to` of the log at `path` and returns their leaf hashes
/// and the position after them. Each record's own hash and its link to the one before are
/// checked: a proof is never made from records that do not verify.
pub fn read_leaves(
    path: &Path,
    from: &TreePosition,
    to: u64,
) -> Result<(Vec<Hash>, TreePosition), String> {
    let mut leaves = Vec::with_capacity(
        usize::try_from(to.saturating_sub(from.size()))
            .unwrap_or(0)
            .min(1 << 20),
    );
    let end = walk(path, from, to, |leaf| leaves.push(leaf))?;
    Ok((leaves, end))
}

/// The position after record `to`, reached from `from` by reading (and checking) the records
/// in between; keeps nothing but the frontier, whatever the distance.
pub fn advance(path: &Path, from: &TreePosition, to: u64) -> Result<TreePosition, String> {
    walk(path, from, to, |_| {})
}

/// Every record of one of `kinds` in the log, in order, each checked against its own hash.
/// Lines that cannot be of those kinds are skipped unparsed.
pub fn each_of_kind(
    path: &Path,
    kinds: &[crate::event::EventKind],
    mut found: impl FnMut(&record::Record),
) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let needles: Vec<String> = kinds
        .iter()
        .map(|kind| format!("\"kind\":\"{}\"", kind.as_str()))
        .collect();
    let finders: Vec<memchr::memmem::Finder> = needles
        .iter()
        .map(|n| memchr::memmem::Finder::new(n.as_bytes()))
        .collect();
    let mut line = Vec::new();
    loop {
        match lines::read_line(&mut reader, &mut line, MAX_LINE_LEN)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        {
            Line::Complete => {}
            Line::Eof | Line::Partial => return Ok(()),
            Line::TooLong => return Err("a record is too long".into()),
        }
        if !finders.iter().any(|f| f.find(&line).is_some()) {
            continue;
        }
        let rec = record::decode(&line).map_err(|e| e.to_string())?;
        if kinds.contains(&rec.event.kind) {
            found(&rec);
        }
    }
}

fn walk(
    path: &Path,
    from: &TreePosition,
    to: u64,
    mut leaf_out: impl FnMut(Hash),
) -> Result<TreePosition, String> {
    let start = from.size();
    if to < start {
        return Err(format!("cannot read back from {start} to {to}"));
    }
    let mut file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    file.seek(SeekFrom::Start(from.offset))
        .map_err(|e| format!("cannot seek in {}: {e}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut position = from.clone();
    while position.size() < to {
        let expected = position.size() + 1;
        match lines::read_line(&mut reader, &mut line, MAX_LINE_LEN)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        {
            Line::Complete => {}
            Line::Eof | Line::Partial => {
                return Err(format!("the log ends before record {expected}"))
            }
            Line::TooLong => return Err(format!("record {expected} is too long")),
        }
        let rec = record::decode(&line).map_err(|e| format!("record {expected}: {e}"))?;
        if rec.seq != expected {
            return Err(format!(
                "expected record {expected} at byte {}, found seq {}",
                position.offset, rec.seq
            ));
        }
        if rec.prev != position.head {
            return Err(format!("record {expected} does not follow the one before"));
        }
        let leaf = leaf_of(&rec.hash);
        leaf_out(leaf);
        // Cannot be full: sizes come from a u64 seq.
        let _ = position.frontier.append(leaf);
        position.offset += line.len() as u64 + 1;
        position.head = rec.hash;
    }
    Ok(position)
}
