//! Export of the records in a time range, as the stored JSON lines or as CSV.
//!
//! Export reads records; it does not verify the chain (run [`crate::verify_file`] for that).
//! JSONL output is the stored lines byte for byte, so exported records keep their hashes and
//! can be checked one by one (`prev` links only hold across a contiguous, unfiltered range).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use time::OffsetDateTime;

use crate::csv;
use crate::event::{Event, Outcome, Status};
use crate::lines::{self, Line};
use crate::pairing::{self, Pending, Role};
use crate::record::{self, Record, RecordError, MAX_LINE_LEN};
use crate::timefmt::Rfc3339Nanos;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The stored record lines, unchanged.
    Jsonl,
    /// One row per record with [`CSV_HEADER`]'s columns.
    Csv,
}

impl FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jsonl" => Ok(ExportFormat::Jsonl),
            "csv" => Ok(ExportFormat::Csv),
            other => Err(format!(
                "unknown export format {other:?} (expected jsonl or csv)"
            )),
        }
    }
}

/// CSV columns, in order. A forwarded statement is one row carrying its result's outcome
/// (`result_seq` names the `statement.result` record); `statement.result` records are not rows
/// of their own. A statement with no result shows status `unknown`.
pub const CSV_HEADER: [&str; 20] = [
    "seq",
    "time",
    "kind",
    "session",
    "subject",
    "actors",
    "groups",
    "method",
    "source",
    "connection",
    "protocol",
    "classification",
    "statement",
    "status",
    "reason",
    "code",
    "rows",
    "duration_ns",
    "result_seq",
    "hash",
];

/// What an export did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportSummary {
    /// Complete records read from the log.
    pub records_read: u64,
    /// Records in the time range, written to the output.
    pub records_exported: u64,
    /// The log ended with an unfinished line (a crash mid-write); it was skipped, as it was
    /// never reported durable. The gateway moves it aside at its next start.
    pub partial_last_line: bool,
    /// CSV: forwarded statements in the range with no result (status `unknown`).
    pub outcomes_unknown: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write export: {0}")]
    Write(#[source] io::Error),
    #[error("line {line} is not a valid record: {reason}")]
    BadRecord { line: u64, reason: RecordError },
    #[error("line {line} is longer than {limit} bytes", limit = MAX_LINE_LEN)]
    LineTooLong { line: u64 },
}

/// Writes the records of the log at `path` whose time is in `[since, until)` to `out`.
pub fn export(
    path: impl AsRef<Path>,
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
    format: ExportFormat,
    out: &mut impl Write,
) -> Result<ExportSummary, ExportError> {
    let path = path.as_ref();
    let read_err = |source| ExportError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut reader = BufReader::with_capacity(1024 * 1024, file);
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    let mut summary = ExportSummary::default();
    let mut buf = Vec::new();
    let mut row = String::new();
    if format == ExportFormat::Csv {
        csv::write_row(&mut row, CSV_HEADER);
        out.write_all(row.as_bytes()).map_err(ExportError::Write)?;
    }
    let in_range = |t: OffsetDateTime| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u);
    let mut pending: Pending<Record> = Pending::default();
    let mut line = 0u64;
    loop {
        line += 1;
        match lines::read_line(&mut reader, &mut buf, MAX_LINE_LEN).map_err(read_err)? {
            Line::Complete => {}
            Line::Eof => break,
            Line::Partial => {
                summary.partial_last_line = true;
                break;
            }
            Line::TooLong => return Err(ExportError::LineTooLong { line }),
        }
        let record =
            record::parse(&buf).map_err(|reason| ExportError::BadRecord { line, reason })?;
        summary.records_read += 1;
        let wanted = in_range(record.event.time);
        if format == ExportFormat::Jsonl {
            if wanted {
                buf.push(b'\n');
                out.write_all(&buf).map_err(ExportError::Write)?;
                summary.records_exported += 1;
            }
            continue;
        }
        match pairing::role(&record.event) {
            Role::Opens if wanted => {
                let session = record.event.session.clone();
                pending.open(record.seq, session, record);
                continue;
            }
            Role::Resolves(statement) => {
                if let Some(opened) = pending.resolve(statement) {
                    row.clear();
                    csv_row(&mut row, &opened, Resolution::Result(&record));
                    out.write_all(row.as_bytes()).map_err(ExportError::Write)?;
                    summary.records_exported += 1;
                }
                continue;
            }
            Role::EndsSession => {
                for (_, opened) in pending.end_session(record.event.session.as_deref()) {
                    unknown_row(&mut out, &mut row, &opened, &mut summary)?;
                }
            }
            Role::Opens | Role::Other => {}
        }
        if wanted {
            row.clear();
            csv_row(&mut row, &record, Resolution::AsStored);
            out.write_all(row.as_bytes()).map_err(ExportError::Write)?;
            summary.records_exported += 1;
        }
    }
    for (_, opened) in pending.drain() {
        unknown_row(&mut out, &mut row, &opened, &mut summary)?;
    }
    out.flush().map_err(ExportError::Write)?;
    Ok(summary)
}

/// Writes the row of a forwarded statement that never got a result.
fn unknown_row(
    out: &mut impl Write,
    row: &mut String,
    record: &Record,
    summary: &mut ExportSummary,
) -> Result<(), ExportError> {
    row.clear();
    csv_row(row, record, Resolution::Unknown);
    out.write_all(row.as_bytes()).map_err(ExportError::Write)?;
    summary.records_exported += 1;
    summary.outcomes_unknown += 1;
    Ok(())
}

/// Where a row's outcome columns come from.
enum Resolution<'a> {
    AsStored,
    /// A forwarded statement's result record.
    Result(&'a Record),
    /// A forwarded statement that never got a result.
    Unknown,
}

/// One CSV row. Lists (actors, groups) are `;`-separated; actors are subjects, nearest first.
fn csv_row(row: &mut String, record: &Record, resolution: Resolution<'_>) {
    let Event {
        time,
        kind,
        session,
        refers: _,
        who,
        what,
        outcome,
    } = &record.event;
    let unknown;
    let (outcome, result_seq) = match resolution {
        Resolution::AsStored => (outcome, String::new()),
        Resolution::Result(result) => (&result.event.outcome, result.seq.to_string()),
        Resolution::Unknown => {
            unknown = Outcome {
                status: Status::Unknown,
                reason: Some("no result recorded: the gateway or session stopped first".into()),
                ..Outcome::success()
            };
            (&unknown, String::new())
        }
    };
    let opt = |s: &Option<String>| s.as_deref().unwrap_or("").to_owned();
    let num = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
    let mut time_text = String::new();
    // Only records with representable times parse; fall back to empty rather than panic.
    let _ = write!(time_text, "{}", Rfc3339Nanos(*time));
    let actors = who
        .actors
        .iter()
        .map(|a| a.subject.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let fields: [String; 20] = [
        record.seq.to_string(),
        time_text,
        kind.as_str().to_owned(),
        opt(session),
        opt(&who.subject),
        actors,
        who.groups.join(";"),
        opt(&who.method),
        opt(&who.source),
        opt(&what.connection),
        opt(&what.protocol),
        opt(&what.classification),
        opt(&what.statement),
        outcome.status.as_str().to_owned(),
        opt(&outcome.reason),
        opt(&outcome.code),
        num(outcome.rows),
        num(outcome.duration_ns),
        result_seq,
        record.hash.as_str().to_owned(),
    ];
    csv::write_row(row, fields.iter().map(String::as_str));
}
