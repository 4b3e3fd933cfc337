//! Inclusion proofs: one record, shown to be in the tree a signed checkpoint commits to, so an
//! examiner can check it with nothing but the proof file and the public key.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use gatehouse_tlog::tree::{consistency_proof, inclusion_proof};
use gatehouse_tlog::{
    verify_consistency, verify_inclusion, Checkpoint, Hash, SignedNote, Verifier,
};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{leaf_of, CheckpointDetail};
use crate::event::EventKind;
use crate::lines::{self, Line};
use crate::record::{self, Record, MAX_LINE_LEN};
use crate::verify::{verify_with, VerifyOptions};

/// The `format` of a proof file.
pub const INCLUSION_FORMAT: &str = "gatehouse-inclusion-proof/1";

/// A proof file (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    pub format: String,
    /// The record exactly as stored (without its newline).
    pub record: String,
    /// Its `seq`; the leaf index is `seq - 1`.
    pub seq: u64,
    /// The size of the tree the checkpoint signs.
    pub tree_size: u64,
    /// The audit path, hex, from the leaf up (RFC 9162 §2.1.3).
    pub proof: Vec<String>,
    /// The signed checkpoint (C2SP signed note).
    pub checkpoint: String,
}

/// Why a proof could not be made or does not hold.
#[derive(Debug, thiserror::Error)]
pub enum ProofFailure {
    #[error("the log does not verify, so no proof is made from it: {0}")]
    LogNotIntact(String),
    #[error("cannot read {path}: {why}")]
    Io { path: String, why: String },
    #[error("the log has no record with seq {0}")]
    NoSuchRecord(u64),
    #[error("no signed checkpoint covers seq {0} yet (the next one will)")]
    NotCovered(u64),
    #[error("not a proof file: {0}")]
    Malformed(String),
    #[error("the checkpoint is not signed by {key}: {why}")]
    Signature { key: String, why: String },
    #[error("the record is not the one the proof is for: {0}")]
    Record(String),
    #[error("the record is not in the tree the checkpoint signs: {0}")]
    NotIncluded(String),
    #[error("the log has no checkpoint of tree size {0}")]
    NoCheckpointOfSize(u64),
    #[error("the older checkpoint's tree is not a prefix of the newer one's: {0}")]
    Inconsistent(String),
}

/// What a valid proof shows.
#[derive(Debug, Clone)]
pub struct Proven {
    pub record: Record,
    pub checkpoint: Checkpoint,
}

/// Makes an inclusion proof of record `seq` against the latest checkpoint in the log that
/// covers it. The log is verified first (with `verifier`, when given).
pub fn prove(
    path: &Path,
    seq: u64,
    options: &VerifyOptions,
) -> Result<InclusionProof, ProofFailure> {
    verify_with(path, options).map_err(|e| ProofFailure::LogNotIntact(e.to_string()))?;
    let tree = read_tree(path, Some(seq))?;
    let record = tree.wanted.ok_or(ProofFailure::NoSuchRecord(seq))?;
    let checkpoint = tree
        .checkpoints
        .into_iter()
        .rev()
        .find(|c| c.size >= seq)
        .ok_or(ProofFailure::NotCovered(seq))?;
    let path_hashes = inclusion_proof(&tree.leaves, seq - 1, checkpoint.size)
        .map_err(|e| ProofFailure::NotIncluded(e.to_string()))?;
    Ok(InclusionProof {
        format: INCLUSION_FORMAT.into(),
        record,
        seq,
        tree_size: checkpoint.size,
        proof: path_hashes.iter().map(hex::encode).collect(),
        checkpoint: checkpoint.note,
    })
}

/// The log's leaves, its checkpoints in order, and the line of one record.
struct Tree {
    leaves: Vec<Hash>,
    checkpoints: Vec<CheckpointDetail>,
    wanted: Option<String>,
}

fn read_tree(path: &Path, seq: Option<u64>) -> Result<Tree, ProofFailure> {
    let io = |e: std::io::Error| ProofFailure::Io {
        path: path.display().to_string(),
        why: e.to_string(),
    };
    let file = File::open(path).map_err(io)?;
    let mut reader = BufReader::with_capacity(1024 * 1024, file);
    let mut tree = Tree {
        leaves: Vec::new(),
        checkpoints: Vec::new(),
        wanted: None,
    };
    let mut line = Vec::new();
    while let Line::Complete = lines::read_line(&mut reader, &mut line, MAX_LINE_LEN).map_err(io)? {
        // The caller verified the log: every line decodes.
        let record =
            record::decode(&line).map_err(|e| ProofFailure::LogNotIntact(e.to_string()))?;
        if Some(record.seq) == seq {
            tree.wanted = Some(String::from_utf8_lossy(&line).into_owned());
        }
        if record.event.kind == EventKind::AuditCheckpoint {
            let detail = CheckpointDetail::of(&record.event).map_err(ProofFailure::LogNotIntact)?;
            tree.checkpoints.push(detail);
        }
        tree.leaves.push(leaf_of(&record.hash));
    }
    Ok(tree)
}

/// The `format` of a consistency proof file.
pub const CONSISTENCY_FORMAT: &str = "gatehouse-consistency-proof/1";

/// A consistency proof file (JSON): the tree an older checkpoint signs is a prefix of the tree
/// a newer one signs, so nothing the older one covered was changed or removed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    pub format: String,
    pub old_checkpoint: String,
    pub new_checkpoint: String,
    /// RFC 9162 §2.1.4 proof hashes, hex.
    pub proof: Vec<String>,
}

/// Proves that the log's checkpoint of size `old_size` is consistent with its latest one.
pub fn prove_consistency(
    path: &Path,
    old_size: u64,
    options: &VerifyOptions,
) -> Result<ConsistencyProof, ProofFailure> {
    verify_with(path, options).map_err(|e| ProofFailure::LogNotIntact(e.to_string()))?;
    let tree = read_tree(path, None)?;
    let old = tree
        .checkpoints
        .iter()
        .find(|c| c.size == old_size)
        .ok_or(ProofFailure::NoCheckpointOfSize(old_size))?;
    let new = tree
        .checkpoints
        .last()
        .ok_or(ProofFailure::NoCheckpointOfSize(old_size))?;
    let hashes = consistency_proof(&tree.leaves, old.size, new.size)
        .map_err(|e| ProofFailure::NotIncluded(e.to_string()))?;
    Ok(ConsistencyProof {
        format: CONSISTENCY_FORMAT.into(),
        old_checkpoint: old.note.clone(),
        new_checkpoint: new.note.clone(),
        proof: hashes.iter().map(hex::encode).collect(),
    })
}

/// Checks a consistency proof offline: both signatures, the same log, and the proof.
pub fn check_consistency(
    proof: &ConsistencyProof,
    verifier: &Verifier,
) -> Result<(Checkpoint, Checkpoint), ProofFailure> {
    if proof.format != CONSISTENCY_FORMAT {
        return Err(ProofFailure::Malformed(format!(
            "format {:?}, expected {CONSISTENCY_FORMAT:?}",
            proof.format
        )));
    }
    let open = |note: &str| {
        Checkpoint::open(note, verifier).map_err(|e| ProofFailure::Signature {
            key: verifier.to_string(),
            why: e.to_string(),
        })
    };
    let old = open(&proof.old_checkpoint)?;
    let new = open(&proof.new_checkpoint)?;
    if old.origin != new.origin {
        return Err(ProofFailure::Malformed(format!(
            "the checkpoints name different logs: {:?} and {:?}",
            old.origin, new.origin
        )));
    }
    let hashes = parse_hashes(&proof.proof)?;
    verify_consistency(old.size, new.size, &old.root, &new.root, &hashes)
        .map_err(|e| ProofFailure::Inconsistent(e.to_string()))?;
    Ok((old, new))
}

fn parse_hashes(hex: &[String]) -> Result<Vec<Hash>, ProofFailure> {
    hex.iter()
        .map(|h| crate::checkpoint::parse_hash(h))
        .collect::<Option<Vec<Hash>>>()
        .ok_or_else(|| ProofFailure::Malformed("proof hashes are not 64 hex digits".into()))
}

/// Checks a proof offline: the checkpoint's signature, the record's own hash, and the audit
/// path from the record's leaf to the signed root.
pub fn check(proof: &InclusionProof, verifier: &Verifier) -> Result<Proven, ProofFailure> {
    if proof.format != INCLUSION_FORMAT {
        return Err(ProofFailure::Malformed(format!(
            "format {:?}, expected {INCLUSION_FORMAT:?}",
            proof.format
        )));
    }
    SignedNote::parse(&proof.checkpoint).map_err(|e| ProofFailure::Malformed(e.to_string()))?;
    let checkpoint =
        Checkpoint::open(&proof.checkpoint, verifier).map_err(|e| ProofFailure::Signature {
            key: verifier.to_string(),
            why: e.to_string(),
        })?;
    if checkpoint.size != proof.tree_size {
        return Err(ProofFailure::Malformed(
            "tree_size differs from the size the checkpoint signs".into(),
        ));
    }
    let record =
        record::decode(proof.record.as_bytes()).map_err(|e| ProofFailure::Record(e.to_string()))?;
    if record.seq != proof.seq || proof.seq == 0 {
        return Err(ProofFailure::Record(format!(
            "the record has seq {}, the proof says {}",
            record.seq, proof.seq
        )));
    }
    let hashes = parse_hashes(&proof.proof)?;
    verify_inclusion(
        &leaf_of(&record.hash),
        proof.seq - 1,
        checkpoint.size,
        &hashes,
        &checkpoint.root,
    )
    .map_err(|e| ProofFailure::NotIncluded(e.to_string()))?;
    Ok(Proven { record, checkpoint })
}
