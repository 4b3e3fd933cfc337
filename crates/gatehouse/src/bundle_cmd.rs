//! `gatehouse audit bundle|verify-bundle`: the examiner's bundle of a time range, and its
//! check on a machine with nothing but the file and the key.

use std::path::Path;
use std::process::ExitCode;

use gatehouse_audit::bundle::{self, Selection, Verified};
use gatehouse_server::config::Config;

use crate::audit_cmd::{log_path, parse_pubkey, parse_time, parse_witness_key, verify_options};

pub fn make(
    config: &Config,
    since: Option<&str>,
    until: Option<&str>,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    let selection = Selection {
        since: parse_time("since", since)?,
        until: parse_time("until", until)?,
    };
    let options = verify_options(config, None, None)?;
    let manifest = bundle::make(&log_path(config), &options, &selection, out)?;
    let s = &manifest.summary;
    println!(
        "wrote {}: {} record(s), seq {}..{}, from {} to {}, proven against the signed tree of {} records",
        out.display(),
        s.records,
        s.first_seq,
        s.last_seq,
        s.first_time,
        s.last_time,
        manifest.tree.size
    );
    println!("an examiner checks it with: gatehouse audit verify-bundle FILE --pubkey KEY (KEY from `gatehouse audit public-key`)");
    Ok(ExitCode::SUCCESS)
}

pub fn verify(file: &Path, pubkey: &str, witness_keys: &[String]) -> anyhow::Result<ExitCode> {
    let verifier = parse_pubkey(pubkey)?;
    let witnesses = witness_keys
        .iter()
        .map(|k| parse_witness_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    match bundle::check(file, &verifier, &witnesses) {
        Ok(verified) => {
            print!("{}", report(&verified));
            if unwitnessed(&verified, witnesses.len()) {
                eprintln!(
                    "{}: NOT WITNESSED by every witness key given (see above)",
                    file.display()
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: NOT PROVEN: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Who witnessed what, in plain words, and how much of the bundle that covers.
fn witnessed_report(v: &Verified) -> String {
    let Some(w) = &v.witnessed else {
        return "  Witnessed by: nobody (the bundle carries no witness cosignatures).\n".into();
    };
    let (first, last) = (v.manifest.summary.first_seq, v.manifest.summary.last_seq);
    let coverage = if w.size >= last {
        format!("every record of this bundle (seq {first}..{last}) was fixed by then")
    } else if w.size >= first {
        format!(
            "records {first}..{} of this bundle were fixed by then; {}..{last} are covered by the log's signature only",
            w.size,
            w.size + 1
        )
    } else {
        format!("none of this bundle's records (from seq {first}) were in that tree: they are covered by the log's signature only")
    };
    let mut out = String::new();
    for (name, at) in &w.verified {
        let when = time::OffsetDateTime::from_unix_timestamp(*at as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| at.to_string());
        out += &format!(
            "  Witnessed by {name} at {when}: the log's tree of {} records, which the signed tree extends (proven); {coverage}.\n",
            w.size
        );
    }
    for (key, why) in &w.missing {
        out += &format!("  NOT witnessed by {key}: {why}.\n");
    }
    if !w.unchecked.is_empty() {
        out += &format!(
            "  Also carries cosignature lines naming {} (not checked: pass --witness-key with their public keys).\n",
            w.unchecked.join(", ")
        );
    }
    if w.verified.is_empty() && w.missing.is_empty() && w.unchecked.is_empty() {
        out += "  Witnessed by: nobody.\n";
    }
    out
}

/// Whether the witnesses asked for leave the bundle unwitnessed: a key whose cosignature is
/// not there, or a witnessed tree that holds none of the bundle's records.
fn unwitnessed(v: &Verified, asked: usize) -> bool {
    if asked == 0 {
        return false;
    }
    match &v.witnessed {
        None => true,
        Some(w) => !w.missing.is_empty() || w.size < v.manifest.summary.first_seq,
    }
}

/// What was proven, in plain words.
fn report(v: &Verified) -> String {
    let m = &v.manifest;
    let s = &m.summary;
    let mut out = format!(
        "PROVEN: {} record(s), seq {}..{}, from {} to {}, complete and unaltered.\n",
        s.records, s.first_seq, s.last_seq, s.first_time, s.last_time
    );
    out += &format!(
        "  They are exactly records {}..{} of the log {}, whose tree of {} records (root {}) is signed by {}.\n",
        s.first_seq, s.last_seq, m.origin, m.tree.size, m.tree.root, v.key
    );
    out += "  Every record's own hash and the chain between them hold; records.csv, the summary and the README are what the records say.\n";
    out += &witnessed_report(v);
    out += &format!(
        "  Inside: {} session(s), {} principal(s), {} failure outcome(s), {} signed checkpoint(s), {} recording hash(es).\n",
        s.sessions,
        s.principals.len(),
        s.failures,
        s.checkpoints,
        s.recordings.len()
    );
    for p in &s.policies {
        let before = v
            .policies_loaded_before
            .iter()
            .find(|(_, sha)| *sha == p.sha256)
            .map(|(seq, _)| format!("loaded at seq {seq}, before the range (proven)"));
        let loaded = match (before, p.loaded.first()) {
            (Some(before), _) => before,
            (None, Some(seq)) => format!("loaded at seq {seq}, in the range"),
            (None, None) => "its policy.loaded record is not in the bundle".to_owned(),
        };
        out += &format!(
            "  Policy {}: decided {} statement(s); {loaded}.\n",
            p.sha256, p.statements
        );
    }
    for seq in &s.acknowledged {
        out += &format!("  WARNING: at seq {seq} an operator acknowledged that the log disagreed with its signed checkpoint.\n");
    }
    out
}
