//! Session recording: a psql session is recorded as it was shown (masked), replays as psql
//! showed it, and every replay is audited; a changed byte in a recording is caught through the
//! hash its `session.end` holds; encrypted recordings hide their content; pruning past the
//! retention age is recorded before any file goes, and verify accounts for it.

use crate::harness::*;
use serde_json::Value;
use std::time::Duration;

const PAN: &str = "4111 1111 1111 1111";
const SSN: &str = "123-45-6789";

fn recording_config(extra: &str) -> String {
    format!(
        "policy:
  masking:
    rules:
      - name: pii
        detectors: default
recording:
  rows_per_statement: 5
{extra}"
    )
}

fn seed(cluster: &PgCluster) {
    cluster.psql_admin(&format!(
        "CREATE TABLE cards (id int PRIMARY KEY, pan text UNIQUE, ssn text);
         INSERT INTO cards VALUES (1, '{PAN}', '{SSN}');
         INSERT INTO cards SELECT g, 'ref-' || g, NULL FROM generate_series(2, 12) g;"
    ));
}

/// One psql session; returns its `session.end` record once written.
fn session(gateway: &Gateway, commands: &[&str]) -> Value {
    let mut args = Vec::new();
    for c in commands {
        args.extend(["-c", *c]);
    }
    let before = gateway.events_of_kind("session.end").len();
    gateway.psql_args("main", &args);
    let events = gateway.audit_events_until(Duration::from_secs(10), |events| {
        events.iter().filter(|e| e["kind"] == "session.end").count() > before
    });
    events
        .into_iter()
        .filter(|e| e["kind"] == "session.end")
        .nth(before)
        .expect("the session's end")
}

fn recording_path(gateway: &Gateway, end: &Value) -> std::path::PathBuf {
    let file = end["what"]["detail"]["recording"]["file"]
        .as_str()
        .expect("session.end names its recording");
    gateway.data_dir().join("recordings").join(file)
}

#[test]
fn a_session_replays_as_shown_and_a_changed_byte_is_caught() {
    let (cluster, gateway) = cluster_and_gateway_with(|b| b.top(&recording_config("")));
    seed(&cluster);
    let end = session(
        &gateway,
        &[
            "SELECT id, pan, ssn FROM cards ORDER BY id",
            &format!("INSERT INTO cards VALUES (99, '{PAN}')"),
        ],
    );
    let id = end["session"].as_str().expect("session id").to_owned();
    let recording = &end["what"]["detail"]["recording"];
    let path = recording_path(&gateway, &end);
    let bytes = std::fs::read(&path).expect("the recording");
    // The hash the audit chain holds is the file's.
    assert_eq!(
        recording["sha256"].as_str(),
        Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)).as_str())
    );
    assert_eq!(recording["bytes"], bytes.len() as u64);
    let raw = String::from_utf8_lossy(&bytes);
    for planted in [PAN, SSN, "4111111111111111"] {
        assert!(!raw.contains(planted), "the recording holds {planted:?}");
    }

    let out = gateway.cli(&["sessions", "replay", &id, "--no-wait"]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(shown.contains("matches the audit log"), "{shown}");
    assert!(
        shown.contains("=> SELECT id, pan, ssn FROM cards ORDER BY id"),
        "{shown}"
    );
    assert!(
        shown.contains("  1 | **** **** **** 1111 | ***-**-6789"),
        "{shown}"
    );
    assert!(shown.contains("(12 rows)"), "{shown}");
    assert!(shown.contains("5 shown; 7 not kept"), "{shown}");
    assert!(shown.contains("ERROR:  duplicate key value"), "{shown}");
    assert!(
        shown.contains("DETAIL:  Key (pan)=(**** **** **** 1111)"),
        "{shown}"
    );
    assert!(shown.contains("Time: "), "{shown}");
    assert!(shown.contains("-- session ended"), "{shown}");
    for planted in [PAN, SSN] {
        assert!(!shown.contains(planted), "the replay shows {planted:?}");
    }
    let out = gateway.cli(&["sessions", "replay", &id, "--format", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("json replay");
    assert_eq!(json["integrity"]["verified"], true);
    assert!(json["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "columns" && e["names"][1] == "pan"));

    // Each replay is audited with who watched which session.
    let replays = gateway.events_of_kind("recording.replayed");
    assert_eq!(replays.len(), 2);
    assert_eq!(replays[0]["session"], id.as_str());
    assert_eq!(replays[0]["who"]["subject"], "key:bootstrap-admin");
    assert_eq!(replays[0]["outcome"]["status"], "success");
    // Only admins replay.
    let dev = gateway.create_key("dev", &["developers"]);
    let out = gateway.cli_as(&dev, &["sessions", "replay", &id, "--no-wait"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));

    let report = gateway.assert_audit_verifies();
    assert!(report.contains("recordings: 1 intact"), "{report}");

    // One changed byte: replay refuses it and verify names it.
    let mut altered = bytes.clone();
    let at = altered.len() / 2;
    altered[at] ^= 0x01;
    std::fs::write(&path, &altered).unwrap();
    let out = gateway.cli(&["sessions", "replay", &id, "--no-wait"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("does not match its audit record"),
        "{}",
        text(&out.stderr)
    );
    let out = gateway.audit_verify();
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains(&format!("NOT INTACT: recording of session {id}")),
        "{said}"
    );
    let failed = gateway.events_of_kind("recording.replayed");
    assert_eq!(failed.last().unwrap()["outcome"]["status"], "failure");
}

#[test]
fn encrypted_recordings_hide_their_content_and_still_replay() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("recording.key");
    std::fs::write(&key, "a recording key that is long enough").unwrap();
    let extra = format!("  encryption_key: ${{file:{}}}\n", key.display());
    let (cluster, gateway) = cluster_and_gateway_with(|b| b.top(&recording_config(&extra)));
    seed(&cluster);
    let end = session(&gateway, &["SELECT id, pan FROM cards WHERE id = 1"]);
    assert_eq!(end["what"]["detail"]["recording"]["encrypted"], true);
    let bytes = std::fs::read(recording_path(&gateway, &end)).unwrap();
    let raw = String::from_utf8_lossy(&bytes);
    assert!(!raw.contains("SELECT id, pan"), "statement text is sealed");
    assert!(!raw.contains("1111"), "rows are sealed");
    let id = end["session"].as_str().unwrap();
    let out = gateway.cli(&["sessions", "replay", id, "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("**** **** **** 1111"));
}

#[test]
fn recordings_past_retention_are_pruned_on_the_record() {
    let (cluster, mut gateway) =
        cluster_and_gateway_with(|b| b.top(&recording_config("  retention: 1d\n")));
    seed(&cluster);
    let old = session(&gateway, &["SELECT 1"]);
    let path = recording_path(&gateway, &old);
    gateway.stop();
    // Last written three days ago.
    let three_days = std::time::SystemTime::now() - Duration::from_secs(3 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(three_days)
        .unwrap();
    gateway.restart();
    let pruned = gateway.wait_for_event("recording.pruned", |e| e["kind"] == "recording.pruned");
    let listed = &pruned["what"]["detail"]["recordings"][0];
    assert_eq!(listed["session"], old["session"]);
    assert_eq!(
        listed["sha256"],
        old["what"]["detail"]["recording"]["sha256"]
    );
    assert!(!path.exists(), "the old recording is gone");
    // A recent one stays.
    let recent = session(&gateway, &["SELECT 2"]);
    assert!(recording_path(&gateway, &recent).exists());
    let report = gateway.assert_audit_verifies();
    assert!(
        report.contains("recordings: 1 intact, 1 pruned under the retention policy"),
        "{report}"
    );
}

#[test]
fn a_recording_that_cannot_be_written_ends_its_session_and_no_new_one_starts() {
    if !is_root() {
        eprintln!("skipped: mounting a small file system needs root");
        return;
    }
    let mount = SmallDisk::mount("512k");
    let extra = format!(
        "recording:\n  dir: {}\n  rows_per_statement: 1000000\n",
        mount.path().display()
    );
    let (cluster, gateway) = cluster_and_gateway_with(|b| b.top(&extra));
    cluster.psql_admin(
        "CREATE TABLE big AS SELECT g AS id, repeat('x', 100) AS pad FROM generate_series(1, 200000) g",
    );
    // 20 MB of rows into a 512 KiB file system: the recording fails mid-result.
    let out = gateway.psql_args("main", &["-c", "SELECT * FROM big"]);
    assert!(
        !out.status.success(),
        "the session does not go on unrecorded"
    );
    let events = gateway.audit_events_until(Duration::from_secs(10), |events| {
        events.iter().any(|e| e["kind"] == "session.end")
    });
    let end = events
        .iter()
        .find(|e| e["kind"] == "session.end")
        .expect("the session's end");
    assert_eq!(
        end["what"]["detail"]["cause"], "recording_unavailable",
        "{end}"
    );
    assert_eq!(end["outcome"]["status"], "failure");
    let result = events
        .iter()
        .find(|e| e["kind"] == "statement.result")
        .expect("the SELECT's result");
    let rows = result["outcome"]["rows"].as_u64().unwrap();
    assert!(
        rows < 200_000,
        "the result was cut short: {rows} rows relayed"
    );

    // Still full: a new session is refused before it reaches the server.
    let filler = mount.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 1 << 20]);
    let out = gateway.psql_args("main", &["-c", "SELECT 'not recorded'"]);
    assert!(!out.status.success());
    let events = gateway.audit_events_until(Duration::from_secs(10), |events| {
        events.iter().filter(|e| e["kind"] == "session.end").count() >= 2
    });
    let second = events
        .iter()
        .filter(|e| e["kind"] == "session.end")
        .nth(1)
        .expect("the refused session's end");
    assert_eq!(second["what"]["detail"]["cause"], "recording_unavailable");
    assert_eq!(second["what"]["detail"]["statements"], 0);
    assert!(gateway
        .statements_with_text("SELECT 'not recorded'")
        .is_empty());
    gateway.assert_audit_verifies();
}

#[test]
fn extended_protocol_statements_are_recorded_with_their_bound_values_masked() {
    let (cluster, gateway) = cluster_and_gateway_with(|b| b.top(&recording_config("")));
    seed(&cluster);
    runtime().block_on(async {
        let (client, _conn) = gateway.main_client().await;
        let rows = client
            .query("SELECT id, ssn FROM cards WHERE pan = $1", &[&PAN])
            .await
            .expect("query");
        assert_eq!(rows.len(), 1);
    });
    let end = gateway.wait_for_event("session.end", |e| e["kind"] == "session.end");
    let raw = std::fs::read(recording_path(&gateway, &end)).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(!raw.contains(PAN) && !raw.contains(SSN), "{raw}");
    let id = end["session"].as_str().unwrap();
    let out = gateway.cli(&["sessions", "replay", id, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let replay: Value = serde_json::from_slice(&out.stdout).unwrap();
    let execute = replay["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "statement" && e["step"] == "execute")
        .expect("the Execute's statement frame");
    assert_eq!(execute["text"], "SELECT id, ssn FROM cards WHERE pan = $1");
    // tokio-postgres binds text in binary format: shown as bytes, masked before encoding.
    let shown = execute["parameters"].to_string();
    assert!(
        shown.contains(&hex::encode("**** **** **** 1111")),
        "{shown}"
    );
    assert!(
        !shown.contains(&hex::encode(PAN)) && !shown.contains(PAN),
        "{shown}"
    );
    let row = replay["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "row")
        .expect("the row");
    // Binary-format results are shown as bytes; the int is 4 bytes, the SSN masked text.
    assert_eq!(row["values"][1], "***-**-6789");
}
