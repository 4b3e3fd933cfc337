//! `gatehouse audit verify|export|public-key|prove|verify-proof|acknowledge`: offline,
//! straight from the data directory.

use anyhow::Context;
use gatehouse_audit::checkpoint::CheckpointState;
use gatehouse_audit::{verify_with, ExportFormat, VerifyOptions};
use gatehouse_server::config::Config;
use gatehouse_tlog::Verifier;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

pub(crate) fn log_path(config: &Config) -> std::path::PathBuf {
    config.audit.dir.join(gatehouse_audit::LOG_FILE_NAME)
}

/// A public key given as vkey text or as a file holding it.
pub fn parse_pubkey(arg: &str) -> anyhow::Result<Verifier> {
    let text = match std::fs::read_to_string(arg) {
        Ok(text) => text,
        Err(_) => arg.to_owned(),
    };
    Verifier::parse(text.trim()).map_err(|e| anyhow::anyhow!("--pubkey: not a public key ({e})"))
}

/// What to check the checkpoints against: the given key, else the configured key's public
/// half; and the checkpoint kept beside the key, when there is one.
pub(crate) fn verify_options(
    config: &Config,
    pubkey: Option<&str>,
    state: Option<&Path>,
) -> anyhow::Result<VerifyOptions> {
    let ck = &config.audit.checkpoints;
    let verifier = match pubkey {
        Some(arg) => Some(parse_pubkey(arg)?),
        None if ck.enabled && ck.signing_key.exists() => {
            Some(gatehouse_server::signing::public_key(&ck.signing_key)?)
        }
        None => None,
    };
    let state_path = state
        .map(Path::to_path_buf)
        .or_else(|| (ck.enabled && ck.state_file.exists()).then(|| ck.state_file.clone()));
    let state = match state_path {
        Some(path) => {
            let loaded = CheckpointState::load(&path)?
                .with_context(|| format!("{} does not exist", path.display()))?;
            Some((path, loaded))
        }
        None => None,
    };
    Ok(VerifyOptions { verifier, state })
}

pub fn verify(
    config: &Config,
    pubkey: Option<&str>,
    state: Option<&Path>,
    witness_keys: &[String],
) -> anyhow::Result<ExitCode> {
    let path = log_path(config);
    let options = verify_options(config, pubkey, state)?;
    let witnesses = witness_keys
        .iter()
        .map(|k| parse_witness_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    match verify_with(&path, &options) {
        Ok(report) => {
            let last = report
                .last_hash
                .map(|h| h.to_string())
                .unwrap_or_else(|| "-".to_owned());
            println!(
                "{}: intact: {} record(s), seq {}..{}, head {last}",
                path.display(),
                report.records,
                report.first_seq.unwrap_or(0),
                report.last_seq.unwrap_or(0),
            );
            print_checkpoints(&report, &options);
            if report.outcomes_unknown > 0 {
                let examples: Vec<String> =
                    report.unknown_examples.iter().map(u64::to_string).collect();
                println!(
                    "{} of {} forwarded statement(s) have no recorded result (outcome unknown: the gateway or session stopped before the server answered); first at seq {}",
                    report.outcomes_unknown,
                    report.statements_forwarded,
                    examples.join(", ")
                );
            }
            let witnessed = report_witnesses(&path, &witnesses)?;
            let recordings = check_recordings(config, &report);
            Ok(if witnessed {
                recordings
            } else {
                ExitCode::FAILURE
            })
        }
        Err(failure) => {
            eprintln!("{}: NOT INTACT: {failure}", path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A witness's public key given as vkey text (type 0x04) or as a file holding it.
pub(crate) fn parse_witness_key(arg: &str) -> anyhow::Result<gatehouse_tlog::CosignatureVerifier> {
    let text = std::fs::read_to_string(arg).unwrap_or_else(|_| arg.to_owned());
    gatehouse_tlog::CosignatureVerifier::parse(text.trim())
        .map_err(|e| anyhow::anyhow!("--witness-key: not a witness key ({e})"))
}

/// Prints what the log's witness records show; false when a given witness's cosignature in
/// the log does not verify, or a given witness never cosigned.
fn report_witnesses(
    path: &Path,
    keys: &[gatehouse_tlog::CosignatureVerifier],
) -> anyhow::Result<bool> {
    let summary = gatehouse_audit::checkpoint::witness_summary(path, keys)
        .map_err(|e| anyhow::anyhow!("reading the witnesses' records: {e}"))?;
    let mut ok = true;
    for k in &summary.keys {
        match k.latest {
            Some((size, at)) => {
                let when = time::OffsetDateTime::from_unix_timestamp(at as i64)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| at.to_string());
                println!(
                    "witness {}: {} cosignature(s) verify; the largest tree it cosigned holds records 1..{size} ({when})",
                    k.key, k.verified
                );
            }
            None => {
                ok = false;
                println!(
                    "witness {}: NOT WITNESSED: no cosignature by this key in the log",
                    k.key
                );
            }
        }
    }
    for (seq, witness, why) in &summary.invalid {
        ok = false;
        println!("INVALID: the audit.witnessed record at seq {seq} ({witness}): {why}");
    }
    if !summary.unchecked.is_empty() {
        println!(
            "{} cosignature record(s) by witness(es) not given, not checked: {} (pass --witness-key)",
            summary.cosignatures
                - summary.keys.iter().map(|k| k.verified).sum::<u64>()
                - summary.invalid.len() as u64,
            summary.unchecked.join(", ")
        );
    }
    if let Some((seq, reason)) = &summary.latest_failure {
        println!(
            "witness failures recorded: {} (the latest, seq {seq}: {reason})",
            summary.failures
        );
    }
    Ok(ok)
}

fn print_checkpoints(report: &gatehouse_audit::VerifyReport, options: &VerifyOptions) {
    let cps = &report.checkpoints;
    let records = report.records;
    let signer = match &cps.key {
        Some(key) => format!("signed by {key}"),
        None => "SIGNATURES NOT CHECKED (no public key: pass --pubkey)".to_owned(),
    };
    match cps.last {
        Some((seq, size)) => println!(
            "checkpoints: {} {signer}; the last (seq {seq}) covers records 1..{size}{}",
            cps.count,
            if size + 1 < records {
                format!("; records {}..{records} are not yet covered", size + 1)
            } else {
                String::new()
            }
        ),
        None if records > 0 => {
            println!("checkpoints: none: no signed checkpoint covers this log")
        }
        None => {}
    }
    match &options.state {
        Some((path, state)) => println!(
            "kept checkpoint {} (size {}) matches the log",
            path.display(),
            state.size
        ),
        None if cps.count > 0 => println!(
            "no kept checkpoint given: a cut after the last checkpoint record cannot be ruled out"
        ),
        None => {}
    }
    for (seq, problem, reason) in &cps.acknowledged {
        println!(
            "WARNING: at seq {seq} an operator acknowledged that the log disagreed with its signed checkpoint: {problem} (reason: {reason})"
        );
    }
}

/// Every recording the log vouches for must be there with the hash its `session.end` holds,
/// unless the log says it was pruned.
fn check_recordings(config: &Config, report: &gatehouse_audit::VerifyReport) -> ExitCode {
    let dir = &config.recording.dir;
    let (mut intact, mut pruned, mut bad) = (0u64, 0u64, 0u64);
    for r in &report.recordings {
        let path = dir.join(&r.file);
        let safe = !r.file.contains('/') && !r.file.starts_with('.');
        let actual = if safe {
            gatehouse_core::record::file_sha256(&path)
        } else {
            Err(std::io::Error::other("not a plain file name"))
        };
        match actual {
            Ok(hash) if hash == r.sha256 => intact += 1,
            Ok(hash) => {
                bad += 1;
                eprintln!(
                    "{}: NOT INTACT: recording of session {} (session.end at seq {}) has SHA-256 {hash}, the log holds {}",
                    path.display(), r.session, r.seq, r.sha256
                );
            }
            Err(e) => match report.pruned.iter().find(|p| p.session == r.session) {
                Some(p) if p.sha256 == r.sha256 => pruned += 1,
                _ if e.kind() == std::io::ErrorKind::NotFound => {
                    bad += 1;
                    eprintln!(
                        "{}: MISSING: recording of session {} (session.end at seq {}) is gone and no recording.pruned record names it",
                        path.display(), r.session, r.seq
                    );
                }
                _ => {
                    bad += 1;
                    eprintln!("{}: cannot read: {e}", path.display());
                }
            },
        }
    }
    if !report.recordings.is_empty() {
        println!(
            "recordings: {intact} intact, {pruned} pruned under the retention policy, {bad} altered or missing"
        );
    }
    if bad > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub(crate) fn parse_time(
    flag: &str,
    value: Option<&str>,
) -> anyhow::Result<Option<OffsetDateTime>> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339)
                .with_context(|| format!("--{flag} {v:?} is not an RFC 3339 time"))
        })
        .transpose()
}

pub fn export(
    config: &Config,
    since: Option<&str>,
    until: Option<&str>,
    format: Format,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let since = parse_time("since", since)?;
    let until = parse_time("until", until)?;
    let format = match format {
        Format::Jsonl => ExportFormat::Jsonl,
        Format::Csv => ExportFormat::Csv,
    };
    let path = log_path(config);
    let summary = match out {
        Some(file) => {
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(file)
                    .with_context(|| format!("creating {}", file.display()))?,
            );
            let summary = gatehouse_audit::export(&path, since, until, format, &mut w)?;
            w.flush()?;
            summary
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let summary = gatehouse_audit::export(&path, since, until, format, &mut w)?;
            w.flush()?;
            summary
        }
    };
    eprintln!(
        "exported {} of {} record(s)",
        summary.records_exported, summary.records_read
    );
    if summary.outcomes_unknown > 0 {
        eprintln!(
            "{} forwarded statement(s) have no recorded result: shown with status unknown",
            summary.outcomes_unknown
        );
    }
    if summary.partial_last_line {
        eprintln!(
            "warning: the log ends with an unfinished record (a crash mid-write); it was skipped"
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn public_key(config: &Config) -> anyhow::Result<ExitCode> {
    let ck = &config.audit.checkpoints;
    if !ck.signing_key.exists() {
        anyhow::bail!(
            "no checkpoint signing key at {} yet: the gateway creates it on its first start",
            ck.signing_key.display()
        );
    }
    println!(
        "{}",
        gatehouse_server::signing::public_key(&ck.signing_key)?
    );
    Ok(ExitCode::SUCCESS)
}

/// What `audit prove` proves.
pub enum Prove {
    Record(u64),
    Consistency(u64),
}

pub fn prove(config: &Config, what: Prove, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let options = verify_options(config, None, None)?;
    let log = log_path(config);
    let (mut text, said) = match what {
        Prove::Record(seq) => {
            let proof = gatehouse_audit::proof::prove(&log, seq, &options)?;
            let said = format!(
                "an inclusion proof of seq {seq} against the checkpoint of tree size {}",
                proof.tree_size
            );
            (serde_json::to_string_pretty(&proof)?, said)
        }
        Prove::Consistency(size) => {
            let proof = gatehouse_audit::proof::prove_consistency(&log, size, &options)?;
            let said = format!(
                "a consistency proof from the checkpoint of tree size {size} to the latest"
            );
            (serde_json::to_string_pretty(&proof)?, said)
        }
    };
    text.push('\n');
    match out {
        Some(file) => {
            std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))?;
            eprintln!("wrote {said} to {}", file.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify_proof(file: &Path, pubkey: &str) -> anyhow::Result<ExitCode> {
    let verifier = parse_pubkey(pubkey)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let format = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["format"].as_str().map(str::to_owned));
    if format.as_deref() == Some(gatehouse_audit::proof::CONSISTENCY_FORMAT) {
        return verify_consistency_proof(file, &text, &verifier);
    }
    let proof: gatehouse_audit::proof::InclusionProof = match serde_json::from_str(&text) {
        Ok(proof) => proof,
        Err(e) => {
            eprintln!(
                "{}: PROOF DOES NOT HOLD: not a proof file ({e})",
                file.display()
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    match gatehouse_audit::proof::check(&proof, &verifier) {
        Ok(proven) => {
            let event = &proven.record.event;
            println!(
                "proof holds: record seq {} ({}, {}{}) is in log {} at tree size {} (root {}), signed by {}",
                proven.record.seq,
                event.kind.as_str(),
                gatehouse_audit::timefmt::Rfc3339Nanos(event.time),
                event
                    .session
                    .as_deref()
                    .map(|s| format!(", session {s}"))
                    .unwrap_or_default(),
                proven.checkpoint.origin,
                proven.checkpoint.size,
                hex::encode(proven.checkpoint.root),
                verifier
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: PROOF DOES NOT HOLD: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn verify_consistency_proof(
    file: &Path,
    text: &str,
    verifier: &Verifier,
) -> anyhow::Result<ExitCode> {
    let checked = serde_json::from_str::<gatehouse_audit::proof::ConsistencyProof>(text)
        .map_err(|e| format!("not a proof file ({e})"))
        .and_then(|p| {
            gatehouse_audit::proof::check_consistency(&p, verifier).map_err(|e| e.to_string())
        });
    match checked {
        Ok((old, new)) => {
            println!(
                "proof holds: log {} at tree size {} (root {}) is a prefix of tree size {} (root {}), both signed by {}",
                new.origin,
                old.size,
                hex::encode(old.root),
                new.size,
                hex::encode(new.root),
                verifier
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: PROOF DOES NOT HOLD: {e}", file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Lets the gateway start again on a log that disagrees with its last signed checkpoint: the
/// kept checkpoint is set aside (not deleted), an `audit.acknowledged` record names what was
/// wrong and why it was accepted, and a fresh checkpoint covers the log as it now is.
pub fn acknowledge(config: &Config, reason: &str) -> anyhow::Result<ExitCode> {
    if reason.trim().is_empty() {
        anyhow::bail!("--reason must say why the log is accepted as it is");
    }
    let ck = &config.audit.checkpoints;
    if !ck.enabled {
        anyhow::bail!("checkpoints are off in this configuration: nothing to acknowledge");
    }
    let path = log_path(config);
    let options = verify_options(config, None, None)?;
    let problem = match verify_with(&path, &options) {
        Ok(_) => {
            println!(
                "{}: agrees with its last signed checkpoint; nothing to acknowledge",
                path.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => e.to_string(),
    };
    let rejected = options.state.as_ref().map(|(state_path, state)| {
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let aside = state_path.with_extension(format!("rejected-{nanos}"));
        (state_path.clone(), aside, state.clone())
    });
    if let Some((from, to, _)) = &rejected {
        std::fs::rename(from, to).with_context(|| format!("moving {} aside", from.display()))?;
    }
    let writer = gatehouse_audit::Options {
        acknowledge_inconsistency: true,
        ..gatehouse_audit::Options::default()
    };
    let (writer, _) = gatehouse_server::checkpoint_options(writer, ck)?;
    let log = gatehouse_audit::AuditLog::open(&config.audit.dir, writer)?;
    let operator = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let mut event = gatehouse_audit::Event::now(
        gatehouse_audit::EventKind::AuditAcknowledged,
        gatehouse_audit::Outcome::success(),
    );
    event.who.subject = Some(operator);
    event.who.method = Some("local".into());
    event.what = gatehouse_audit::What {
        resource: Some(path.display().to_string()),
        detail: Some(serde_json::json!({
            "problem": problem,
            "reason": reason,
            "rejected_checkpoint": rejected.as_ref().map(|(_, aside, state)| serde_json::json!({
                "file": aside.display().to_string(),
                "size": state.size,
                "root": state.root,
                "note": state.note,
            })),
        })),
        ..gatehouse_audit::What::default()
    };
    log.record_blocking(event)?;
    log.close()?;
    println!("acknowledged: {problem}");
    if let Some((_, aside, _)) = &rejected {
        println!("the rejected checkpoint is kept in {}", aside.display());
    }
    println!("a new signed checkpoint covers the log as it is; the gateway will start");
    Ok(ExitCode::SUCCESS)
}
