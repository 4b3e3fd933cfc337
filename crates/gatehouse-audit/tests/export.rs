//! Export: time filtering, byte-exact JSONL, CSV quoting and formula-injection guard.

mod common;

use common::{base_time, fast, lines, log_path, statement, write_log};
use gatehouse_audit::export::CSV_HEADER;
use gatehouse_audit::{export, ActorRef, AuditLog, ExportFormat, Outcome};
use time::Duration;

/// The whole log in `dir` exported as CSV.
fn whole_log_as_csv(dir: &std::path::Path) -> (gatehouse_audit::export::ExportSummary, String) {
    let mut out = Vec::new();
    let summary = export(log_path(dir), None, None, ExportFormat::Csv, &mut out).unwrap();
    (summary, String::from_utf8(out).unwrap())
}

#[test]
fn jsonl_is_the_stored_lines_in_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 10); // seq i at base + i s
    let stored = lines(&path);
    let t = |s: i64| Some(base_time() + Duration::seconds(s));

    let mut out = Vec::new();
    let summary = export(&path, t(3), t(7), ExportFormat::Jsonl, &mut out).unwrap();
    assert_eq!((summary.records_read, summary.records_exported), (10, 4));
    assert_eq!(
        out,
        stored[2..6].concat(),
        "since inclusive, until exclusive, bytes unchanged"
    );

    let mut out = Vec::new();
    export(&path, None, None, ExportFormat::Jsonl, &mut out).unwrap();
    assert_eq!(out, std::fs::read(&path).unwrap());

    let mut out = Vec::new();
    export(&path, t(9), None, ExportFormat::Jsonl, &mut out).unwrap();
    assert_eq!(out, stored[8..].concat());

    let mut out = Vec::new();
    let summary = export(&path, None, t(1), ExportFormat::Jsonl, &mut out).unwrap();
    assert_eq!((summary.records_exported, out.len()), (0, 0));
}

#[test]
fn csv_quotes_and_defuses_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), fast()).unwrap();
    let mut e = statement(1);
    e.session = Some("s-9".into());
    e.who.subject = Some("=HYPERLINK(\"http://x\")".into());
    e.who.actors = vec![
        ActorRef {
            subject: "agent".into(),
            issuer: None,
        },
        ActorRef {
            subject: "ops".into(),
            issuer: Some("https://idp".into()),
        },
    ];
    e.who.groups = vec!["dba".into(), "oncall".into()];
    e.what.statement = Some("SELECT 'a,b', \"Col\"\nFROM t -- x".into());
    e.outcome = Outcome::failure("permission denied, \"t\"");
    e.outcome.code = Some("42501".into());
    e.outcome.duration_ns = Some(1500);
    log.record_blocking(e).unwrap();
    log.record_blocking(statement(2)).unwrap();
    log.close().unwrap();

    let (summary, text) = whole_log_as_csv(dir.path());
    assert_eq!(summary.records_exported, 2);
    let hash = |n: usize| {
        let l = &lines(&log_path(dir.path()))[n];
        String::from_utf8(l[l.len() - 67..l.len() - 3].to_vec()).unwrap()
    };
    let want = format!(
        "{}\r\n\
         1,2025-06-01T12:00:01.000000000Z,statement,s-9,\"'=HYPERLINK(\"\"http://x\"\")\",\
         agent;ops,dba;oncall,api_key,127.0.0.1:5555,ledger,postgres,read,\
         \"SELECT 'a,b', \"\"Col\"\"\nFROM t -- x\",failure,\"permission denied, \"\"t\"\"\",\
         42501,,1500,,{}\r\n\
         2,2025-06-01T12:00:02.000000000Z,statement,s-2,user-2,,,api_key,127.0.0.1:5555,ledger,\
         postgres,read,SELECT * FROM accounts WHERE id = 2,success,,,2,,,{}\r\n",
        CSV_HEADER.join(","),
        hash(0),
        hash(1)
    );
    assert_eq!(text, want);
    assert!(text.starts_with(
        "seq,time,kind,session,subject,actors,groups,method,source,connection,protocol,\
         classification,statement,status,reason,code,rows,duration_ns,result_seq,hash\r\n"
    ));
}

#[test]
fn unfinished_last_line_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 3);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"seq\":4,\"prev\"");
    std::fs::write(&path, &bytes).unwrap();
    let mut out = Vec::new();
    let summary = export(&path, None, None, ExportFormat::Jsonl, &mut out).unwrap();
    assert!(summary.partial_last_line);
    assert_eq!(summary.records_exported, 3);
}

#[test]
fn bad_lines_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 2);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"oops\n");
    std::fs::write(&path, &bytes).unwrap();
    let err = export(&path, None, None, ExportFormat::Csv, &mut Vec::new()).unwrap_err();
    assert!(
        err.to_string().starts_with("line 3 is not a valid record"),
        "{err}"
    );
}

#[test]
fn format_names() {
    assert_eq!("jsonl".parse::<ExportFormat>(), Ok(ExportFormat::Jsonl));
    assert_eq!("csv".parse::<ExportFormat>(), Ok(ExportFormat::Csv));
    assert!("xml".parse::<ExportFormat>().is_err());
}

/// A forwarded statement (written `pending` before it ran) and its result make one CSV row;
/// one whose session ended without a result, and one still open at the end of the log, show
/// `unknown`. JSONL keeps every stored line.
#[test]
fn csv_joins_statements_with_their_results() {
    use gatehouse_audit::{Event, EventKind, Status};
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), fast()).unwrap();
    let forwarded = |i: u64, session: &str| {
        let mut e = statement(i);
        e.session = Some(session.into());
        e.outcome = Outcome::pending();
        e
    };
    let a = log.append(forwarded(1, "s-a")).unwrap(); // seq 1
    log.append(forwarded(2, "s-b")).unwrap(); // seq 2
    log.append(forwarded(3, "s-c")).unwrap(); // seq 3, never resolved
    let mut result = Event::now(EventKind::StatementResult, Outcome::success());
    result.session = Some("s-a".into());
    result.refers = Some(a.seq());
    result.outcome.rows = Some(42);
    log.append(result).unwrap(); // seq 4
    let mut end = Event::now(EventKind::SessionEnd, Outcome::success());
    end.session = Some("s-b".into());
    log.append(end).unwrap(); // seq 5
    log.close().unwrap();

    let (summary, text) = whole_log_as_csv(dir.path());
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let col = |name: &str| CSV_HEADER.iter().position(|c| *c == name).unwrap();
    let by_seq = |seq: &str| rows.iter().find(|r| r[0] == seq).cloned().unwrap();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows.iter().all(|r| r[col("kind")] != "statement.result"));
    let first = by_seq("1");
    assert_eq!(first[col("status")], "success");
    assert_eq!(first[col("rows")], "42");
    assert_eq!(first[col("result_seq")], "4");
    assert_eq!(by_seq("2")[col("status")], Status::Unknown.as_str());
    assert_eq!(by_seq("3")[col("status")], "unknown");
    assert_eq!(summary.outcomes_unknown, 2);

    let mut jsonl = Vec::new();
    export(
        log_path(dir.path()),
        None,
        None,
        ExportFormat::Jsonl,
        &mut jsonl,
    )
    .unwrap();
    assert_eq!(jsonl, std::fs::read(log_path(dir.path())).unwrap());
}
