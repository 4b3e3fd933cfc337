//! Transparency-log building blocks for the audit log, with no I/O.
//!
//! * [`hash`]: RFC 9162 §2.1 (= RFC 6962) hashing, domain-separated so a leaf can never be
//!   passed off as an interior node.
//! * [`tree`]: an incremental [`Frontier`] that appends in O(log n) and knows its root at any
//!   time, plus root / inclusion-proof / consistency-proof computation over stored leaf hashes
//!   ([`LeafSource`]).
//! * [`proof`]: verification of those proofs exactly as RFC 9162 §2.1.3.2 and §2.1.4.2 say,
//!   with typed errors and no panics on hostile input.
//! * [`range`]: range proofs, which show a run of leaves sits at exactly its positions in the
//!   tree with O(log n) hashes (the examiner's bundle uses them).
//! * [`note`]: C2SP `tlog-checkpoint` bodies and C2SP `signed-note` Ed25519 signatures, so a
//!   checkpoint we sign can be checked by any standard tooling (and the other way round).
//!
//! The audit log stores leaf hashes; this crate never touches storage, clocks or randomness,
//! which keeps every function deterministic and testable against published vectors.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod hash;
pub mod history;
pub mod note;
pub mod proof;
pub mod range;
pub mod tree;

pub use hash::{empty_root, leaf_hash, node_hash, Hash};
pub use history::History;
pub use note::{
    Checkpoint, CheckpointError, CosignatureVerifier, Cosigned, Cosigner, KeyId, NoteError,
    NoteSignature, SignedNote, Signer, Verifier,
};
pub use proof::{verify_consistency, verify_inclusion, ProofError};
pub use range::{range_proof, root_from_range, verify_range, RangeError};
pub use tree::{consistency_proof_from_frontier, Frontier, LeafSource, TreeError};
