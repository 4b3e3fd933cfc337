//! The examiner's bundle: the records of a time range in one tar archive, with what it takes
//! to prove them complete and unaltered on a machine that has nothing but the archive and the
//! log's public key.
//!
//! What the archive holds (in this order):
//!
//! | entry | what |
//! |---|---|
//! | `README.md` | what the bundle is, how to verify it, and how its fields map to PCI DSS 10.2–10.5 and the FFIEC handbook |
//! | `manifest.json` | [`Manifest`]: the range, the signed tree, the range proof, and a [`Summary`] of the records |
//! | `public-key.txt` | the verifier key the checkpoint claims to be signed with (for reference: trust the key you were given) |
//! | `checkpoint.txt` | the signed checkpoint (C2SP signed note) of the tree the records are in |
//! | `witnessed.txt` | if witnesses cosigned: the latest witnessed checkpoint, with the witnesses' cosignature lines (C2SP `tlog-cosignature`); the manifest proves `checkpoint.txt`'s tree extends it |
//! | `proofs/first.json`, `proofs/last.json` | inclusion proofs of the range's first and last records, checkable alone with `audit verify-proof` |
//! | `proofs/policy-<seq>.json` | inclusion proofs of the `policy.loaded` records, before the range, of the policies its statements name |
//! | `records.jsonl` | the records, byte for byte as stored |
//! | `records.csv` | the same records as CSV, rendered from `records.jsonl` alone |
//!
//! Everything in the bundle but the creation time is derived from the records and the log, and
//! [`check`] re-derives it: a bundle with an extra file, a changed summary, a CSV that is not
//! the JSONL's, or a README that is not the one for its manifest does not verify.

mod archive;
mod check;
mod make;
mod readme;
mod summary;

use serde::{Deserialize, Serialize};

pub use check::{check, Verified, WitnessedCheck};
pub use make::{make, Selection};
pub use summary::{PolicyUse, Summary};

/// The `format` of a manifest.
pub const FORMAT: &str = "gatehouse-bundle/1";

pub(crate) const README: &str = "README.md";
pub(crate) const MANIFEST: &str = "manifest.json";
pub(crate) const PUBLIC_KEY: &str = "public-key.txt";
pub(crate) const CHECKPOINT: &str = "checkpoint.txt";
pub(crate) const WITNESSED: &str = "witnessed.txt";
pub(crate) const FIRST_PROOF: &str = "proofs/first.json";
pub(crate) const LAST_PROOF: &str = "proofs/last.json";
pub(crate) const RECORDS: &str = "records.jsonl";
pub(crate) const RECORDS_CSV: &str = "records.csv";

/// The name of the proof of the `policy.loaded` record at `seq`.
pub(crate) fn policy_proof_name(seq: u64) -> String {
    format!("proofs/policy-{seq}.json")
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// When the bundle was made (RFC 3339); the only field not derived from the log.
    pub created: String,
    /// The range asked for (RFC 3339 times, either open).
    pub since: Option<String>,
    pub until: Option<String>,
    /// The log's origin, as its checkpoints name it.
    pub origin: String,
    /// The signed tree the records are proven in.
    pub tree: Tree,
    /// The latest checkpoint witnesses cosigned, at or below `tree` (`witnessed.txt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witnessed: Option<Witnessed>,
    pub summary: Summary,
    pub files: Files,
}

/// The tree the checkpoint signs and where the records sit in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tree {
    /// Records 1..size are in the tree.
    pub size: u64,
    /// Its root, hex.
    pub root: String,
    /// Range proof (hex, RFC 9162 split order) that the bundle's records are leaves
    /// `first_seq - 1 .. last_seq` of that tree.
    pub range_proof: Vec<String>,
}

/// A witnessed checkpoint, and the proof that the bundle's tree extends it: records
/// `1..size` were fixed when the witnesses cosigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Witnessed {
    pub size: u64,
    /// Hex.
    pub root: String,
    /// RFC 9162 consistency proof (hex) from this tree to the bundle's tree.
    pub consistency_proof: Vec<String>,
    /// The witnesses' names, as their cosignature lines give them (checked only against keys
    /// the examiner supplies).
    pub cosigners: Vec<String>,
}

/// SHA-256 digests of the files that are not small enough to compare whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    pub records_jsonl_sha256: String,
    pub records_csv_sha256: String,
    /// The proofs of `policy.loaded` records before the range, by name.
    pub policy_proofs: Vec<String>,
}

/// Why a bundle could not be made, or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the log does not verify, so no bundle is made from it: {0}")]
    LogNotIntact(String),
    #[error("no signed checkpoint in the log yet: a bundle needs audit.checkpoints enabled; the first comes within its interval, or ask for one now with `gatehouse audit checkpoint`")]
    NoCheckpoint,
    #[error("no record in the log falls in the range asked for")]
    Empty,
    #[error("records up to seq {last} fall in the range, but the latest signed checkpoint covers only 1..{covered}; the next checkpoint will cover them (ask for one now with `gatehouse audit checkpoint`, or leave --until out to end the bundle at the latest checkpoint)")]
    NotCovered { last: u64, covered: u64 },
    #[error("{0}")]
    Io(String),
    #[error("not a bundle: {0}")]
    Malformed(String),
    #[error("the checkpoint is not signed by {key}: {why}")]
    Signature { key: String, why: String },
    #[error("the records are not intact: {0}")]
    Records(String),
    #[error(
        "the records are not the log's records {first}..{last} under the signed checkpoint: {why}"
    )]
    NotInTree { first: u64, last: u64, why: String },
    #[error("{what} does not match what the records and proofs show: {why}")]
    Mismatch { what: &'static str, why: String },
}

impl BundleError {
    pub(crate) fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        BundleError::Io(format!("{what}: {e}"))
    }
}
