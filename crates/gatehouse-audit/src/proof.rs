//! Inclusion proofs: one record, shown to be in the tree a signed checkpoint commits to, so an
//! examiner can check it with nothing but the proof file and the public key.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use gatehouse_tlog::tree::inclusion_proof;
use gatehouse_tlog::{verify_inclusion, Checkpoint, Hash, SignedNote, Verifier};
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
    let io = |e: std::io::Error| ProofFailure::Io {
        path: path.display().to_string(),
        why: e.to_string(),
    };
    let file = File::open(path).map_err(io)?;
    let mut reader = BufReader::with_capacity(1024 * 1024, file);
    let mut leaves: Vec<Hash> = Vec::new();
    let mut line = Vec::new();
    let mut wanted: Option<String> = None;
    let mut covering: Option<CheckpointDetail> = None;
    while let Line::Complete = lines::read_line(&mut reader, &mut line, MAX_LINE_LEN).map_err(io)? {
        // Verified above: every line decodes.
        let record =
            record::decode(&line).map_err(|e| ProofFailure::LogNotIntact(e.to_string()))?;
        if record.seq == seq {
            wanted = Some(String::from_utf8_lossy(&line).into_owned());
        }
        if record.event.kind == EventKind::AuditCheckpoint {
            let detail = CheckpointDetail::of(&record.event).map_err(ProofFailure::LogNotIntact)?;
            if detail.size >= seq {
                covering = Some(detail);
            }
        }
        leaves.push(leaf_of(&record.hash));
    }
    let record = wanted.ok_or(ProofFailure::NoSuchRecord(seq))?;
    let checkpoint = covering.ok_or(ProofFailure::NotCovered(seq))?;
    let path_hashes = inclusion_proof(&leaves, seq - 1, checkpoint.size)
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
    let hashes = proof
        .proof
        .iter()
        .map(|h| crate::checkpoint::parse_hash(h))
        .collect::<Option<Vec<Hash>>>()
        .ok_or_else(|| ProofFailure::Malformed("proof hashes are not 64 hex digits".into()))?;
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
