//! Offline verification: an intact log passes; every kind of tampering names the first bad record.

mod common;

use std::path::Path;
use std::process::Command;

use common::{base_time, fast, lines, log_path, statement, write_log};
use gatehouse_audit::AuditLog;
use gatehouse_audit::{record, verify_file, VerifyFailure, VerifyReason};
use time::Duration;

fn failure(path: &Path) -> (u64, Option<u64>, VerifyReason) {
    match verify_file(path) {
        Err(VerifyFailure::BadRecord { line, seq, reason }) => (line, seq, reason),
        other => panic!("expected a bad record, got {other:?}"),
    }
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    std::fs::write(path, lines.concat()).unwrap();
}

#[test]
fn intact_log_reports_its_extent() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 10);
    let report = verify_file(&path).unwrap();
    assert_eq!(report.records, 10);
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(10)));
    assert_eq!(report.first_time, Some(base_time() + Duration::seconds(1)));
    assert_eq!(report.last_time, Some(base_time() + Duration::seconds(10)));
    let last = lines(&path).pop().unwrap();
    let last_hash = &last[last.len() - 67..last.len() - 3];
    assert_eq!(report.last_hash.unwrap().as_str().as_bytes(), last_hash);
}

#[test]
fn empty_log_is_intact_and_missing_log_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    assert!(matches!(verify_file(&path), Err(VerifyFailure::Io { .. })));
    std::fs::write(&path, b"").unwrap();
    assert_eq!(verify_file(&path).unwrap().records, 0);
}

/// Any single changed byte of a middle record, its newline included, fails at that record.
#[test]
fn any_changed_byte_in_a_middle_record_is_found_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 9);
    let original = lines(&path);
    for i in 0..original[4].len() {
        let mut tampered = original.clone();
        tampered[4][i] ^= 0x01;
        write_lines(&path, &tampered);
        let (line, _, reason) = failure(&path);
        assert_eq!(line, 5, "byte {i}: {reason}");
    }
    // A plausible edit: the row count, keeping the JSON valid.
    let mut tampered = original.clone();
    let text = String::from_utf8(tampered[4].clone())
        .unwrap()
        .replace("\"rows\":5", "\"rows\":0");
    tampered[4] = text.into_bytes();
    write_lines(&path, &tampered);
    assert_eq!(failure(&path), (5, Some(5), VerifyReason::HashMismatch));
    // Re-hashing the edited record does not help: the next record's prev no longer matches.
}

#[test]
fn any_changed_byte_in_the_last_record_is_found_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 6);
    let original = lines(&path);
    for i in 0..original[5].len() {
        let mut tampered = original.clone();
        tampered[5][i] ^= 0x01;
        write_lines(&path, &tampered);
        let (line, _, reason) = failure(&path);
        assert_eq!(line, 6, "byte {i}: {reason}");
    }
    // Changing the hash's hex digits to upper case is a change too.
    let mut tampered = original.clone();
    let n = tampered[5].len();
    tampered[5][n - 67..n - 3].make_ascii_uppercase();
    if tampered[5] != original[5] {
        write_lines(&path, &tampered);
        assert_eq!(failure(&path).0, 6);
    }
}

#[test]
fn a_removed_middle_record_is_found_at_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 8);
    let mut tampered = lines(&path);
    tampered.remove(3); // seq 4
    write_lines(&path, &tampered);
    let (line, seq, reason) = failure(&path);
    assert_eq!((line, seq), (4, Some(5)));
    assert_eq!(
        reason,
        VerifyReason::SequenceGap {
            expected: 4,
            found: 5
        }
    );
    assert_eq!(reason.to_string(), "sequence gap: expected 4, found 5");
}

#[test]
fn a_removed_record_with_a_forged_successor_is_found_by_prev() {
    // Delete seq 4, then renumber seq 5 as 4 and give it a valid hash of its own: its prev
    // still names the deleted record.
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 8);
    let mut tampered = lines(&path);
    tampered.remove(3);
    let five = record::parse(&tampered[3][..tampered[3].len() - 1]).unwrap();
    assert_eq!(five.seq, 5);
    let mut forged = Vec::new();
    record::encode(&mut forged, 4, &five.prev, &five.event).unwrap();
    tampered[3] = forged;
    write_lines(&path, &tampered);
    assert_eq!(failure(&path), (4, Some(4), VerifyReason::PrevMismatch));
    assert_eq!(
        verify_file(&path).unwrap_err().to_string(),
        "line 4 (seq 4): prev does not match the previous record"
    );
}

#[test]
fn reordered_records_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 5);
    let mut tampered = lines(&path);
    tampered.swap(1, 2);
    write_lines(&path, &tampered);
    let (line, seq, reason) = failure(&path);
    assert_eq!((line, seq), (2, Some(3)));
    assert_eq!(
        reason,
        VerifyReason::SequenceGap {
            expected: 2,
            found: 3
        }
    );
}

#[test]
fn a_truncated_last_line_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 4);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 30]).unwrap();
    let (line, _, reason) = failure(&path);
    assert_eq!((line, reason), (4, VerifyReason::PartialLastLine));
    // Just the newline missing is still an unfinished write.
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    assert_eq!(failure(&path), (4, Some(4), VerifyReason::PartialLastLine));
}

#[test]
fn garbage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 2);
    let mut tampered = lines(&path);
    tampered.insert(1, b"hello world\n".to_vec());
    write_lines(&path, &tampered);
    let (line, seq, reason) = failure(&path);
    assert_eq!((line, seq), (2, None));
    assert!(matches!(reason, VerifyReason::NotValidJson(_)), "{reason}");
    let msg = verify_file(&path).unwrap_err().to_string();
    assert!(msg.starts_with("line 2: not valid JSON"), "{msg}");
}

/// The by-hand check in docs/audit-events.md agrees with `verify_file`.
#[test]
fn the_documented_shell_check_works() {
    let have = |cmd: &str| Command::new(cmd).arg("--version").output().is_ok();
    if !have("bash") || !have("sha256sum") {
        eprintln!("skipped: needs bash and sha256sum");
        return;
    }
    let script = include_str!("verify.sh");
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 5);
    let run = |path: &Path| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg("verify.sh")
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = run(&path);
    assert!(ok, "{out}");
    assert!(out.contains("5 records ok"), "{out}");

    let mut tampered = lines(&path);
    let text = String::from_utf8(tampered[2].clone())
        .unwrap()
        .replace("id = 3", "id = 4");
    tampered[2] = text.into_bytes();
    write_lines(&path, &tampered);
    let (ok, out) = run(&path);
    assert!(!ok);
    assert!(out.contains("line 3: hash mismatch"), "{out}");

    let mut removed = lines(&path);
    removed.remove(2);
    write_lines(&path, &removed);
    let (ok, out) = run(&path);
    assert!(!ok);
    assert!(out.contains("line 3: seq or prev"), "{out}");
}

/// Verify counts forwarded statements that never got a result, and refuses a result that
/// refers to no forwarded statement.
#[test]
fn unknown_outcomes_are_counted_and_orphan_results_refused() {
    use gatehouse_audit::{Event, EventKind, Outcome, VerifyFailure, VerifyReason};
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path(), fast()).unwrap();
    let mut forwarded = statement(1);
    forwarded.outcome = Outcome::pending();
    let t = log.append(forwarded.clone()).unwrap();
    log.append(forwarded).unwrap(); // never resolved
    let mut result = Event::now(EventKind::StatementResult, Outcome::success());
    result.refers = Some(t.seq());
    log.append(result.clone()).unwrap();
    log.close().unwrap();
    let report = verify_file(log_path(dir.path())).unwrap();
    assert_eq!(report.statements_forwarded, 2);
    assert_eq!(report.outcomes_unknown, 1);
    assert_eq!(report.unknown_examples, vec![2]);

    // The same result again resolves nothing: a forged or duplicated record.
    let log = AuditLog::open(dir.path(), fast()).unwrap();
    log.append(result).unwrap();
    log.close().unwrap();
    match verify_file(log_path(dir.path())) {
        Err(VerifyFailure::BadRecord {
            seq: Some(4),
            reason: VerifyReason::OrphanResult(1),
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

/// The reader hands lines to several workers in batches of about 1 MiB; a log several batches
/// long verifies, and a change in the record that straddles a batch boundary, or in the last
/// record of a batch, is named at its own line.
#[test]
fn records_across_batch_boundaries_are_checked_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(dir.path(), 12_000);
    let report = verify_file(&path).unwrap();
    assert_eq!(report.records, 12_000);
    let original = lines(&path);
    let mut offset = 0usize;
    let mut straddling = None;
    for (i, line) in original.iter().enumerate() {
        if offset / (1 << 20) != (offset + line.len() - 1) / (1 << 20) {
            straddling = Some(i);
            break;
        }
        offset += line.len();
    }
    let k = straddling.expect("a record across the first 1 MiB boundary");
    for at in [k - 1, k, k + 1] {
        let mut tampered = original.clone();
        let mid = tampered[at].len() / 2;
        tampered[at][mid] ^= 0x01;
        write_lines(&path, &tampered);
        let (line, _, _) = failure(&path);
        assert_eq!(line, at as u64 + 1, "changed record {}", at + 1);
    }
    // A line over the limit after many good ones is named at its own line.
    let mut tampered = original.clone();
    let mut long = vec![b'x'; record::MAX_LINE_LEN + 10];
    long.push(b'\n');
    tampered.insert(5000, long);
    write_lines(&path, &tampered);
    assert_eq!(failure(&path), (5001, None, VerifyReason::LineTooLong));
}
