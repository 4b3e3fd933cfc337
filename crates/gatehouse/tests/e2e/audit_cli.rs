//! `gatehouse audit verify` and `gatehouse audit export` against the log a real gateway wrote,
//! with the gateway stopped: tampering is named by record, exports are exact.
//!
//! Tampering is done in place: after `gateway.stop()` the audit log in the gateway's own data
//! directory is overwritten with a tampered copy, verified, and restored before the next case.

use crate::harness::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn assert_intact(gw: &Gateway, records: usize) -> String {
    let stdout = gw.assert_audit_verifies();
    assert!(stdout.contains("intact"), "{stdout}");
    assert!(stdout.contains(&format!("{records} record(s)")), "{stdout}");
    stdout
}

/// Verifies `tampered` in place of the log; returns the report (stdout + stderr) of the
/// failure, after checking the exit status.
fn verify_tampered(gw: &Gateway, what: &str, tampered: &[u8]) -> String {
    std::fs::write(gw.audit_path(), tampered).unwrap();
    let out = gw.audit_verify();
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !out.status.success(),
        "{what}: audit verify passed a tampered log: {report}"
    );
    assert!(report.contains("NOT INTACT"), "{what}: {report}");
    eprintln!("{what}: {}", report.trim());
    report
}

fn lines_of(log: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(log.last(), Some(&b'\n'));
    log[..log.len() - 1]
        .split(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn join(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

fn record(line: &[u8]) -> Value {
    serde_json::from_slice(line).unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Replaces the first occurrence of `from` in `line` with `to` (same length).
fn replace_once(line: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let at = line
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in {}", text(from), text(line)));
    line[at..at + to.len()].copy_from_slice(to);
}

/// Runs statements in separate psql sessions and waits until each session's end is audited.
fn run_sessions(gw: &Gateway, statements: &[&str]) {
    let ends = |events: &[Value]| events.iter().filter(|e| e["kind"] == "session.end").count();
    let before = ends(&gw.audit_events());
    for sql in statements {
        gw.psql("main", sql);
    }
    let all_ended = |events: &[Value]| ends(events) >= before + statements.len();
    let events = gw.audit_events_until(Duration::from_secs(10), all_ended);
    assert!(all_ended(&events), "session ends not audited");
}

#[test]
fn audit_verify_names_the_first_tampered_record() {
    let (_cluster, mut gw) = cluster_and_gateway();
    run_sessions(
        &gw,
        &[
            "SELECT 10 AS n",
            "SELECT 20 AS n",
            "SELECT 30 AS n",
            "SELECT 40 AS n",
            "SELECT 50 AS n",
        ],
    );
    gw.stop();

    let original = std::fs::read(gw.audit_path()).unwrap();
    let lines = lines_of(&original);
    let n = lines.len();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(record(l)["seq"], i as u64 + 1, "seq equals line number");
    }
    assert_eq!(record(&lines[n - 2])["kind"], "gateway.stop");
    // The final signed checkpoint covers everything before it.
    assert_eq!(record(&lines[n - 1])["kind"], "audit.checkpoint");
    assert_eq!(
        record(&lines[n - 1])["what"]["detail"]["size"],
        n as u64 - 1
    );
    let stdout = assert_intact(&gw, n);
    let head = record(&lines[n - 1])["hash"].as_str().unwrap().to_owned();
    assert!(
        stdout.contains(&head),
        "verify reports the head hash: {stdout}"
    );

    // 1. One byte of a middle record's statement text.
    let k = lines
        .iter()
        .position(|l| record(l)["what"]["statement"] == "SELECT 30 AS n")
        .unwrap();
    assert!(k > 2 && k < n - 3, "a middle record");
    let mut t = lines.clone();
    replace_once(&mut t[k], b"SELECT 30", b"SELECT 31");
    let report = verify_tampered(&gw, "statement byte changed", &join(&t));
    assert!(
        report.contains(&format!("line {} (seq {}): hash mismatch", k + 1, k + 1)),
        "{report}"
    );

    // 2. One byte of the last record (a digit of its timestamp).
    let mut t = lines.clone();
    let last = &mut t[n - 1];
    let z = last.windows(2).position(|w| w == b"Z\"").unwrap();
    last[z - 1] = if last[z - 1] == b'9' {
        b'0'
    } else {
        last[z - 1] + 1
    };
    let report = verify_tampered(&gw, "last record's time changed", &join(&t));
    assert!(
        report.contains(&format!("line {n} (seq {n}): hash mismatch")),
        "{report}"
    );

    // 3. A whole middle line removed: the following record is named.
    let mut t = lines.clone();
    t.remove(k);
    let report = verify_tampered(&gw, "middle line removed", &join(&t));
    assert!(
        report.contains(&format!(
            "line {} (seq {}): sequence gap: expected {}, found {}",
            k + 1,
            k + 2,
            k + 1,
            k + 2
        )),
        "{report}"
    );

    // 4. The last line truncated mid-record.
    let mut t = join(&lines);
    t.truncate(original.len() - 1 - lines[n - 1].len() / 2);
    let report = verify_tampered(&gw, "last line truncated", &t);
    assert!(
        report.contains(&format!("line {n}")) && report.contains("partial last line"),
        "{report}"
    );

    // 5. A middle record edited and its own hash recomputed: the next record's prev is named.
    let mut t = lines.clone();
    replace_once(&mut t[k], b"SELECT 30", b"SELECT 99");
    let suffix = ",\"hash\":\"".len() + 64 + 2;
    let body_end = t[k].len() - suffix;
    let mut hashed = t[k][..body_end].to_vec();
    hashed.push(b'}');
    let new_hash = sha256_hex(&hashed);
    let hash_at = t[k].len() - 66;
    t[k][hash_at..hash_at + 64].copy_from_slice(new_hash.as_bytes());
    let report = verify_tampered(&gw, "edited and re-hashed", &join(&t));
    assert!(
        report.contains(&format!(
            "line {} (seq {}): prev does not match",
            k + 2,
            k + 2
        )),
        "{report}"
    );

    // 6. Two records swapped.
    let mut t = lines.clone();
    t.swap(k, k + 1);
    let report = verify_tampered(&gw, "records swapped", &join(&t));
    assert!(
        report.contains(&format!("line {} (seq {})", k + 1, k + 2)),
        "{report}"
    );

    // 7. A record's bytes made invalid JSON.
    let mut t = lines.clone();
    t[k][0] = b'[';
    let report = verify_tampered(&gw, "invalid JSON", &join(&t));
    assert!(report.contains(&format!("line {}", k + 1)), "{report}");

    // 8. Whole trailing records removed: the shorter chain is still a valid chain, but the
    // checkpoint kept outside the audit directory signs more records than are left.
    let report = verify_tampered(&gw, "tail cut", &join(&lines[..n - 2]));
    assert!(
        report.contains(&format!("records {}..{} were removed", n - 1, n - 1)),
        "{report}"
    );

    // Restored: intact again.
    std::fs::write(gw.audit_path(), &original).unwrap();
    assert_intact(&gw, n);
}

/// A minimal RFC 4180 reader: rows of fields, CRLF row ends, quotes doubled inside quotes.
fn parse_csv(input: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        !quoted && field.is_empty() && row.is_empty(),
        "CSV does not end with a complete row"
    );
    rows
}

#[test]
fn audit_export_is_exact_in_jsonl_and_csv() {
    let (_cluster, mut gw) = cluster_and_gateway();
    let tricky = "SELECT 'a,\"b\"' || E'\\n' ||\n'c' AS tricky";
    let out = gw.psql("main", tricky);
    assert_eq!(out, "a,\"b\"\nc\n");
    run_sessions(&gw, &["SELECT 2"]);
    gw.stop();
    let config = gw.config_path.to_str().unwrap().to_owned();
    let export = |args: &[&str]| -> Output {
        gw.cli(&[&["audit", "export", "--config", &config], args].concat())
    };
    let stored = std::fs::read_to_string(gw.audit_path()).unwrap();
    let records: Vec<Value> = stored
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let time = |i: usize| records[i]["time"].as_str().unwrap().to_owned();

    // JSONL: the stored lines, byte for byte (stdout and --out alike).
    let out = export(&["--format", "jsonl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), stored);
    assert!(
        text(&out.stderr).contains(&format!("exported {0} of {0} record(s)", records.len())),
        "{}",
        text(&out.stderr)
    );
    let file = gw.dir.path().join("export.jsonl");
    let out = export(&["--out", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), stored);

    // CSV from the 3rd record's time (inclusive) to the 6th's (exclusive): records 3, 4, 5.
    for w in records[..7].windows(2) {
        assert!(
            w[0]["time"].as_str() < w[1]["time"].as_str(),
            "record times increase: {} {}",
            w[0],
            w[1]
        );
    }
    let out = export(&["--format", "csv", "--since", &time(2), "--until", &time(5)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = parse_csv(&text(&out.stdout));
    let header = &rows[0];
    assert_eq!(header[..3], ["seq", "time", "kind"]);
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let seqs: Vec<&str> = rows[1..].iter().map(|r| r[col("seq")].as_str()).collect();
    assert_eq!(seqs, ["3", "4", "5"]);
    for r in &rows[1..] {
        assert_eq!(r.len(), header.len());
        let rec = &records[r[col("seq")].parse::<usize>().unwrap() - 1];
        assert_eq!(r[col("time")], rec["time"].as_str().unwrap());
        assert_eq!(r[col("kind")], rec["kind"].as_str().unwrap());
        assert_eq!(r[col("hash")], rec["hash"].as_str().unwrap());
    }

    // The statement with a comma, a quote and a newline survives CSV quoting exactly.
    let j = records
        .iter()
        .position(|r| r["kind"] == "statement" && r["what"]["statement"] == tricky)
        .expect("tricky statement audited");
    let out = export(&[
        "--format",
        "csv",
        "--since",
        &time(j),
        "--until",
        &time(j + 1),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = text(&out.stdout);
    assert!(
        csv.contains("\"SELECT 'a,\"\"b\"\"' || E'\\n' ||\n'c' AS tricky\""),
        "{csv}"
    );
    let rows = parse_csv(&csv);
    assert_eq!(rows.len(), 2, "{csv}");
    let row = &rows[1];
    assert_eq!(row[col("seq")], (j + 1).to_string());
    assert_eq!(row[col("statement")], tricky);
    assert_eq!(row[col("kind")], "statement");
    assert_eq!(row[col("subject")], "key:bootstrap-admin");
    assert_eq!(row[col("rows")], "1");
    assert_eq!(
        row[col("source")],
        records[j]["who"]["source"].as_str().unwrap()
    );

    // A time that is not RFC 3339 is an error, not an empty export.
    let out = export(&["--since", "yesterday"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("RFC 3339"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn audit_log_holds_lifecycle_admin_and_session_events() {
    let (_cluster, mut gw) = cluster_and_gateway();
    run_sessions(&gw, &["SELECT 1"]);
    let key = gw.create_key("ci-bot", &["developers"]);
    let out = gw.psql_raw(&key, "main", &["-c", "SELECT 'from ci'"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    gw.wait_for_event("ci-bot session end", |e| {
        e["kind"] == "session.end" && e["who"]["subject"] == "key:ci-bot"
    });
    gw.stop();

    let events = gw.audit_events();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in [
        "gateway.start",
        "config.loaded",
        "bootstrap.key",
        "admin.request",
        "key.created",
        "auth.success",
        "session.start",
        "statement",
        "session.end",
        "gateway.stop",
    ] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    assert_eq!(kinds[0], "gateway.start");
    // On first start the checkpoint signing key is created, and that is recorded next.
    assert_eq!(kinds[1], "audit.key_created");
    assert_eq!(kinds[2], "config.loaded");
    // The stop is the last event; only the final signed checkpoint follows it.
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["gateway.stop", "audit.checkpoint"]
    );
    let first_auth = kinds.iter().position(|k| *k == "auth.success").unwrap();
    assert!(kinds.iter().position(|k| *k == "bootstrap.key").unwrap() < first_auth);
    assert!(events[0]["what"]["detail"]["pid"].is_u64(), "{}", events[0]);
    assert_eq!(
        events[2]["what"]["resource"],
        gw.config_path.to_str().unwrap()
    );

    // The admin API call that created the key, and the key creation itself.
    let created = events.iter().find(|e| e["kind"] == "key.created").unwrap();
    assert_eq!(created["what"]["resource"], "key:ci-bot");
    assert_eq!(created["who"]["subject"], "key:bootstrap-admin");
    let request = events
        .iter()
        .find(|e| e["kind"] == "admin.request" && e["outcome"]["code"] == "201")
        .expect("admin.request for the key");
    assert_eq!(request["who"]["subject"], "key:bootstrap-admin");
    assert!(
        request["what"]["resource"]
            .as_str()
            .unwrap()
            .starts_with("POST "),
        "{request}"
    );
    assert!(
        !std::fs::read_to_string(gw.audit_path())
            .unwrap()
            .contains(&key),
        "the new key itself is never audited"
    );

    // Each session: auth.success, session.start, statement, session.end, in that order.
    for subject in ["key:bootstrap-admin", "key:ci-bot"] {
        let auth = events
            .iter()
            .find(|e| e["kind"] == "auth.success" && e["who"]["subject"] == subject)
            .unwrap();
        let session = auth["session"].as_str().unwrap();
        let of_session: Vec<&str> = events
            .iter()
            .filter(|e| e["session"] == session)
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            of_session,
            [
                "auth.success",
                "session.start",
                "statement",
                "statement.result",
                "session.end"
            ],
            "{subject}"
        );
        for e in events.iter().filter(|e| e["session"] == session) {
            if e["kind"] == "statement.result" {
                // A result names its statement; who ran it is there.
                let statement = events.iter().find(|s| s["seq"] == e["ref"]).unwrap();
                assert_eq!(statement["kind"], "statement");
                assert_eq!(statement["session"], e["session"]);
                continue;
            }
            assert_eq!(e["who"]["subject"], subject);
            assert!(
                e["who"]["source"]
                    .as_str()
                    .unwrap()
                    .starts_with("127.0.0.1:"),
                "{e}"
            );
            assert_eq!(e["who"]["claimed_user"], "tester", "{e}");
        }
    }
    assert_intact(&gw, events.len());
}
