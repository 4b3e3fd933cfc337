//! Verifying a bundle with nothing but the bundle and the key the examiner trusts.

use std::io::{self, BufWriter};
use std::path::Path;

use gatehouse_tlog::{
    verify_consistency, verify_range, Checkpoint, CosignatureVerifier, Hash, SignedNote, Verifier,
};

use super::archive::{self, HashingWriter};
use super::summary::scan;
use super::*;
use crate::event::EventKind;
use crate::export::{export, ExportFormat};
use crate::proof::{self, InclusionProof};

/// What a bundle was shown to hold.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    /// The key the tree is signed with (the one given).
    pub key: String,
    /// `policy.loaded` records before the range, proven in the tree: (seq, sha256).
    pub policies_loaded_before: Vec<(u64, String)>,
    /// The witnessed checkpoint, proven to be a prefix of the bundle's tree, if there is one.
    pub witnessed: Option<WitnessedCheck>,
}

/// What `witnessed.txt` was shown to hold.
#[derive(Debug, Clone)]
pub struct WitnessedCheck {
    /// Records `1..size` were fixed when the witnesses cosigned.
    pub size: u64,
    /// Cosignatures that verify under a witness key given: (name, POSIX time).
    pub verified: Vec<(String, u64)>,
    /// Witness keys given whose cosignature is not there (or does not verify), with why.
    pub missing: Vec<(String, String)>,
    /// Cosignature lines by keys not given (not checked).
    pub unchecked: Vec<String>,
}

/// Checks every file of the bundle at `bundle` against `verifier`: the signed checkpoint, the
/// records' hashes and chain, the range proof that they are exactly the log's records at those
/// positions, every proof file, the CSV, the summary and the README.
pub fn check(
    bundle: &Path,
    verifier: &Verifier,
    witnesses: &[CosignatureVerifier],
) -> Result<Verified, BundleError> {
    let contents = archive::read(bundle)?;
    let small = |name: &str| -> Result<&[u8], BundleError> {
        contents
            .small
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| BundleError::Malformed(format!("{name} is missing")))
    };
    let text = |name: &str| -> Result<&str, BundleError> {
        std::str::from_utf8(small(name)?)
            .map_err(|_| BundleError::Malformed(format!("{name} is not UTF-8")))
    };
    let manifest: Manifest = serde_json::from_slice(small(MANIFEST)?)
        .map_err(|e| BundleError::Malformed(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(BundleError::Malformed(format!(
            "format {:?}, expected {FORMAT:?}",
            manifest.format
        )));
    }
    let key = verifier.to_vkey();
    let named = text(PUBLIC_KEY)?.trim();
    if named != key {
        return Err(mismatch(
            PUBLIC_KEY,
            format!("the bundle names key {named}, but the key given is {key}"),
        ));
    }

    // The signed tree.
    let note = text(CHECKPOINT)?;
    let signed = Checkpoint::open(note, verifier).map_err(|e| BundleError::Signature {
        key: key.clone(),
        why: e.to_string(),
    })?;
    let tree = &manifest.tree;
    if signed.origin != manifest.origin
        || signed.size != tree.size
        || hex::encode(signed.root) != tree.root
    {
        return Err(mismatch(
            MANIFEST,
            "its origin, tree size or root is not the signed checkpoint's".into(),
        ));
    }

    let witnessed = match &manifest.witnessed {
        None if contents.small.contains_key(WITNESSED) => {
            return Err(mismatch(WITNESSED, "the manifest does not list it".into()))
        }
        None => None,
        Some(w) => Some(check_witnessed(
            text(WITNESSED)?,
            w,
            &manifest,
            &signed,
            verifier,
            witnesses,
        )?),
    };

    // The records: intact one by one and as a chain, and at their positions in the tree.
    let scanned = scan(&contents.records, verifier)?;
    let summary = &scanned.summary;
    let (first, last) = (summary.first_seq, summary.last_seq);
    let range = parse_hashes(&tree.range_proof)?;
    verify_range(first - 1, &scanned.leaves, tree.size, &range, &signed.root).map_err(|e| {
        BundleError::NotInTree {
            first,
            last,
            why: e.to_string(),
        }
    })?;
    if *summary != manifest.summary {
        return Err(mismatch(
            "the manifest's summary",
            differences(summary, &manifest.summary),
        ));
    }
    if contents.records_sha256 != manifest.files.records_jsonl_sha256 {
        return Err(mismatch(
            RECORDS,
            "its SHA-256 is not the manifest's".into(),
        ));
    }
    let csv = csv_sha256(&contents.records)?;
    if csv != contents.csv_sha256 || csv != manifest.files.records_csv_sha256 {
        return Err(mismatch(
            RECORDS_CSV,
            "it is not the CSV of records.jsonl".into(),
        ));
    }

    // The proofs that stand alone.
    let check_proof = |name: &str| -> Result<(proof::Proven, String), BundleError> {
        let proof: InclusionProof = serde_json::from_slice(small(name)?)
            .map_err(|e| BundleError::Malformed(format!("{name}: {e}")))?;
        if proof.checkpoint != note || proof.tree_size != tree.size {
            return Err(mismatch(
                "a proof",
                format!("{name} is not against the bundle's checkpoint"),
            ));
        }
        let proven = proof::check(&proof, verifier)
            .map_err(|e| mismatch("a proof", format!("{name}: {e}")))?;
        Ok((proven, proof.record))
    };
    for (name, seq, line) in [
        (FIRST_PROOF, first, &scanned.first_line),
        (LAST_PROOF, last, &scanned.last_line),
    ] {
        let (proven, stored) = check_proof(name)?;
        if proven.record.seq != seq || stored != *line {
            return Err(mismatch(
                "a proof",
                format!("{name} does not prove record {seq}"),
            ));
        }
    }
    let mut policies_loaded_before = Vec::new();
    let listed = &manifest.files.policy_proofs;
    let present = contents
        .small
        .keys()
        .filter(|k| k.starts_with("proofs/policy-"));
    if !present.eq(listed.iter()) {
        return Err(mismatch(
            "the policy proofs",
            "the files present are not the ones the manifest lists".into(),
        ));
    }
    for name in listed {
        let (proven, _) = check_proof(name)?;
        let record = &proven.record;
        let sha256 = record
            .event
            .what
            .detail
            .as_ref()
            .and_then(|d| d.get("sha256"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let used = summary.policies.iter().any(|p| p.sha256 == sha256);
        if record.event.kind != EventKind::PolicyLoaded
            || record.seq >= first
            || *name != policy_proof_name(record.seq)
            || !used
        {
            return Err(mismatch(
                "a policy proof",
                format!(
                    "{name} does not prove a policy.loaded record before the range of a policy it uses"
                ),
            ));
        }
        policies_loaded_before.push((record.seq, sha256));
    }

    if text(README)? != readme::render(&manifest) {
        return Err(mismatch(
            README,
            "it is not the README of this manifest".into(),
        ));
    }
    Ok(Verified {
        manifest,
        key,
        policies_loaded_before,
        witnessed,
    })
}

/// `witnessed.txt`: signed by the log, a prefix of the bundle's tree, and cosigned.
fn check_witnessed(
    text: &str,
    listed: &Witnessed,
    manifest: &Manifest,
    tree: &Checkpoint,
    verifier: &Verifier,
    witnesses: &[CosignatureVerifier],
) -> Result<WitnessedCheck, BundleError> {
    let cosigned = Checkpoint::open(text, verifier).map_err(|e| BundleError::Signature {
        key: verifier.to_vkey(),
        why: format!("{WITNESSED}: {e}"),
    })?;
    if cosigned.origin != manifest.origin
        || cosigned.size != listed.size
        || hex::encode(cosigned.root) != listed.root
    {
        return Err(mismatch(
            WITNESSED,
            "its origin, size or root is not the manifest's".into(),
        ));
    }
    let proof = parse_hashes(&listed.consistency_proof)?;
    verify_consistency(cosigned.size, tree.size, &cosigned.root, &tree.root, &proof).map_err(
        |e| {
            mismatch(
                WITNESSED,
                format!("the bundle's tree does not extend the witnessed one: {e}"),
            )
        },
    )?;
    let note = SignedNote::parse(text).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let names: Vec<String> = note
        .signatures()
        .iter()
        .filter(|s| s.name() != verifier.name() || s.key_id() != verifier.key_id())
        .map(|s| s.name().to_owned())
        .collect();
    if names != listed.cosigners {
        return Err(mismatch(
            MANIFEST,
            "its cosigners are not the ones in witnessed.txt".into(),
        ));
    }
    let mut check = WitnessedCheck {
        size: cosigned.size,
        verified: Vec::new(),
        missing: Vec::new(),
        unchecked: Vec::new(),
    };
    for witness in witnesses {
        match witness.verify(&note) {
            Ok(c) => check.verified.push((c.name, c.timestamp)),
            Err(e) => check.missing.push((witness.to_string(), e.to_string())),
        }
    }
    // Lines by keys not given (a line under a given witness's name but another key ID is one).
    check.unchecked = note
        .signatures()
        .iter()
        .filter(|s| s.name() != verifier.name() || s.key_id() != verifier.key_id())
        .filter(|s| {
            !witnesses
                .iter()
                .any(|w| w.name() == s.name() && w.key_id() == s.key_id())
        })
        .map(|s| s.name().to_owned())
        .collect();
    Ok(check)
}

fn mismatch(what: &'static str, why: String) -> BundleError {
    BundleError::Mismatch { what, why }
}

fn parse_hashes(hex_hashes: &[String]) -> Result<Vec<Hash>, BundleError> {
    hex_hashes
        .iter()
        .map(|h| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out).ok().map(|()| out)
        })
        .collect::<Option<Vec<Hash>>>()
        .ok_or_else(|| BundleError::Malformed("range proof hashes are not 64 hex digits".into()))
}

/// Names the summary fields that differ.
fn differences(derived: &Summary, claimed: &Summary) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(derived), serde_json::to_value(claimed))
    else {
        return "it differs".into();
    };
    let fields: Vec<&str> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    format!("{} differ from the records", fields.join(", "))
}

fn csv_sha256(records: &Path) -> Result<String, BundleError> {
    let mut out = HashingWriter::new(BufWriter::new(io::sink()));
    export(records, None, None, ExportFormat::Csv, &mut out)
        .map_err(|e| BundleError::io(RECORDS_CSV, e))?;
    Ok(out.finish().1)
}
