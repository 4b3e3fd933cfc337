//! `gatehouse audit verify|export`: offline, straight from the data directory.

use anyhow::Context;
use gatehouse_audit::{verify_file, ExportFormat};
use gatehouse_server::config::Config;
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

fn log_path(config: &Config) -> std::path::PathBuf {
    config.audit.dir.join(gatehouse_audit::LOG_FILE_NAME)
}

pub fn verify(config: &Config) -> anyhow::Result<ExitCode> {
    let path = log_path(config);
    match verify_file(&path) {
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
            Ok(check_recordings(config, &report))
        }
        Err(failure) => {
            eprintln!("{}: NOT INTACT: {failure}", path.display());
            Ok(ExitCode::FAILURE)
        }
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

fn parse_time(flag: &str, value: Option<&str>) -> anyhow::Result<Option<OffsetDateTime>> {
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
