//! The record is what the server ran: each test makes a client with a valid key try to make
//! the audit log disagree with PostgreSQL (or run something unrecorded), through raw protocol
//! bytes or a real client, and checks the log itself against the server's own state.

use crate::harness::*;
use crate::proto::*;
use serde_json::Value;
use std::io::Write;
use std::time::{Duration, Instant};

/// Joined statement records whose text is exactly `sql`.
fn recorded(gw: &Gateway, sql: &str) -> Vec<Value> {
    gw.statements_with_text(sql)
}

/// Waits until every statement record has its result (or `timeout`), then returns them.
fn settled_statements(gw: &Gateway) -> Vec<Value> {
    let events = gw.audit_events_until(Duration::from_secs(10), |events| {
        joined_statements(events)
            .iter()
            .all(|e| e["outcome"]["status"] != "pending")
    });
    joined_statements(&events)
}

fn execute_records(gw: &Gateway) -> Vec<Value> {
    settled_statements(gw)
        .into_iter()
        .filter(|e| e["what"]["detail"]["step"] == "execute")
        .collect()
}

#[test]
fn prepared_statement_texts_follow_the_server_not_the_client() {
    let (cluster, gw) = cluster_and_gateway();
    cluster.psql_admin("CREATE TABLE gh_acc (n int); INSERT INTO gh_acc VALUES (0)");
    let mut s = authenticated(&gw);
    let mut batch = parse_message("s1", b"SELECT 1");
    batch.extend(sync_message());
    s.write_all(&batch).unwrap();
    read_ready(&mut s);

    // A re-Parse of an existing name is refused by the server: the name keeps its text.
    let mut batch = parse_message("s1", b"UPDATE gh_acc SET n = n + 1");
    batch.extend(sync_message());
    batch.extend(bind_message("", "s1", &[]));
    batch.extend(execute_message(""));
    batch.extend(sync_message());
    s.write_all(&batch).unwrap();
    let refused = read_ready(&mut s);
    assert_eq!(error_codes(&refused, b'C'), ["42P05"]);
    let ran = read_ready(&mut s);
    assert_eq!(first_columns(&ran), [b"1".to_vec()]);

    // A name prepared in SQL, then "re-prepared" with a different text over the protocol.
    s.write_all(&query_message("PREPARE p2 AS SELECT 2"))
        .unwrap();
    read_ready(&mut s);
    let mut batch = parse_message("p2", b"DELETE FROM gh_acc");
    batch.extend(sync_message());
    batch.extend(bind_message("", "p2", &[]));
    batch.extend(execute_message(""));
    batch.extend(sync_message());
    s.write_all(&batch).unwrap();
    assert_eq!(error_codes(&read_ready(&mut s), b'C'), ["42P05"]);
    assert_eq!(first_columns(&read_ready(&mut s)), [b"2".to_vec()]);

    // DEALLOCATE in SQL, then the name gets a new text over the protocol.
    s.write_all(&query_message("DEALLOCATE p2")).unwrap();
    read_ready(&mut s);
    let mut batch = parse_message("p2", b"SELECT 22");
    batch.extend(bind_message("", "p2", &[]));
    batch.extend(execute_message(""));
    batch.extend(sync_message());
    s.write_all(&batch).unwrap();
    assert_eq!(first_columns(&read_ready(&mut s)), [b"22".to_vec()]);

    assert_eq!(cluster.psql_admin("SELECT n FROM gh_acc").trim(), "0");
    let executes: Vec<String> = execute_records(&gw)
        .iter()
        .map(|e| e["what"]["statement"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        executes,
        ["SELECT 1", "PREPARE p2 AS SELECT 2", "SELECT 22"],
        "each Execute recorded with the text the server ran"
    );
    // The refused Parses are recorded as refused by the server.
    let refused: Vec<Value> = settled_statements(&gw)
        .into_iter()
        .filter(|e| e["what"]["detail"]["refused_by"] == "server")
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|e| e["outcome"]["code"] == "42P05"));
}

#[test]
fn names_beyond_what_the_gateway_follows_are_recorded_as_unknown() {
    let (_cluster, gw) = cluster_and_gateway();
    let mut s = authenticated(&gw);
    let mut batch = Vec::new();
    for i in 0..=10_000 {
        batch.extend(parse_message(
            &format!("n{i}"),
            format!("SELECT {i}").as_bytes(),
        ));
    }
    batch.extend(sync_message());
    s.write_all(&batch).unwrap();
    read_ready(&mut s);
    let mut batch = bind_message("", "n10000", &[]);
    batch.extend(execute_message(""));
    batch.extend(sync_message());
    batch.extend(bind_message("", "n0", &[]));
    batch.extend(execute_message(""));
    batch.extend(sync_message());
    s.write_all(&batch).unwrap();
    assert_eq!(first_columns(&read_ready(&mut s)), [b"10000".to_vec()]);
    assert_eq!(first_columns(&read_ready(&mut s)), [b"0".to_vec()]);
    let executes = execute_records(&gw);
    assert_eq!(executes.len(), 2);
    // The 10,001st name is not followed: unknown, never another statement's text.
    assert_eq!(
        executes[0]["what"]["detail"]["text_known"], false,
        "{:#}",
        executes[0]
    );
    assert_eq!(executes[0]["what"]["classification"], "unknown");
    assert_eq!(executes[1]["what"]["statement"], "SELECT 0");
}

#[test]
fn sync_and_flush_during_copy_from_stdin_do_not_shift_outcomes() {
    let (cluster, gw) = cluster_and_gateway();
    cluster.psql_admin("CREATE TABLE gh_copy (a int)");
    let mut s = authenticated(&gw);
    s.write_all(&query_message("COPY gh_copy FROM STDIN"))
        .unwrap();
    let Backend::Msg(b'G', _) = read_message(&mut s) else {
        panic!("expected CopyInResponse")
    };
    let mut data = copy_data(b"1\n");
    data.extend(sync_message());
    data.extend(flush_message());
    data.extend(copy_data(b"2\n"));
    data.extend(copy_done());
    s.write_all(&data).unwrap();
    read_ready(&mut s);
    s.write_all(&query_message("SELECT count(*) FROM gh_copy"))
        .unwrap();
    assert_eq!(first_columns(&read_ready(&mut s)), [b"2".to_vec()]);
    s.write_all(&query_message("UPDATE gh_copy SET a = a + 10"))
        .unwrap();
    read_ready(&mut s);

    // The same over the extended protocol, with the Sync sent before the data.
    let mut batch = parse_message("", b"COPY gh_copy FROM STDIN");
    batch.extend(bind_message("", "", &[]));
    batch.extend(execute_message(""));
    batch.extend(sync_message());
    s.write_all(&batch).unwrap();
    loop {
        match read_message(&mut s) {
            Backend::Msg(b'G', _) => break,
            Backend::Msg(b'1' | b'2', _) => {}
            other => panic!("expected CopyInResponse, got {other:?}"),
        }
    }
    let mut data = copy_data(b"3\n");
    data.extend(copy_done());
    data.extend(sync_message());
    s.write_all(&data).unwrap();
    read_ready(&mut s);
    s.write_all(&query_message("SELECT sum(a) FROM gh_copy"))
        .unwrap();
    assert_eq!(first_columns(&read_ready(&mut s)), [b"26".to_vec()]);
    drop(s);

    let shown: Vec<(String, String, u64)> = settled_statements(&gw)
        .iter()
        .map(|e| {
            (
                e["what"]["statement"].as_str().unwrap().to_owned(),
                e["outcome"]["status"].as_str().unwrap().to_owned(),
                e["outcome"]["rows"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("COPY gh_copy FROM STDIN".into(), "success".into(), 2),
            ("SELECT count(*) FROM gh_copy".into(), "success".into(), 1),
            ("UPDATE gh_copy SET a = a + 10".into(), "success".into(), 2),
            ("COPY gh_copy FROM STDIN".into(), "success".into(), 1),
            ("SELECT sum(a) FROM gh_copy".into(), "success".into(), 1),
        ]
    );
    // Every result was recorded before the next statement's record (none out of order).
    let events = gw.audit_events();
    let seq_of = |kind: &str| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    let (statements, results) = (seq_of("statement"), seq_of("statement.result"));
    for (i, result) in results.iter().enumerate().take(statements.len() - 1) {
        assert!(
            *result < statements[i + 1],
            "result {i} recorded after the next statement"
        );
    }
}

/// Writes `batch` (a setting change, then an UPDATE of `table`): the session must end with
/// 55P02 naming `setting` before the UPDATE reaches the server or the log.
fn ends_before_the_update(
    cluster: &PgCluster,
    gw: &Gateway,
    mut s: std::net::TcpStream,
    batch: &[u8],
    table: &str,
    setting: &str,
) {
    s.write_all(batch).unwrap();
    let (msgs, end) = read_until_close(&mut s);
    assert!(matches!(end, End::Closed | End::Reset), "{end:?}");
    assert_eq!(
        error_codes(&msgs, b'C').last().map(String::as_str),
        Some("55P02")
    );
    assert_eq!(
        cluster.psql_admin(&format!("SELECT a FROM {table}")).trim(),
        "0"
    );
    let end = gw.wait_for_event(&format!("session end after {setting}"), |e| {
        e["kind"] == "session.end"
            && e["what"]["detail"]["cause"] == "unsafe_session_state"
            && e["outcome"]["reason"]
                .as_str()
                .unwrap_or("")
                .contains(setting)
    });
    assert!(end["outcome"]["reason"].as_str().unwrap().contains(setting));
    let update = format!("UPDATE {table}");
    assert!(gw.statements_matching(|t| t.contains(&update)).is_empty());
}

#[test]
fn client_encodings_are_read_as_the_server_reads_them() {
    let (cluster, gw) = cluster_and_gateway();
    cluster.psql_admin("CREATE TABLE gh_enc (a int); INSERT INTO gh_enc VALUES (0)");
    let mut s = authenticated(&gw);
    s.write_all(&query_message("SET client_encoding TO 'LATIN9'"))
        .unwrap();
    read_ready(&mut s);
    // 0xA4 is the euro sign in LATIN9.
    s.write_all(&query_bytes(b"SELECT '\xa4' AS euro")).unwrap();
    assert_eq!(first_columns(&read_ready(&mut s)), [b"\xa4".to_vec()]);
    let euro = recorded(&gw, "SELECT '€' AS euro");
    assert_eq!(euro.len(), 1, "decoded as LATIN9");
    assert_eq!(euro[0]["what"]["detail"]["client_encoding"], "LATIN9");
    drop(s);

    // SJIS, where 0x95 0x5C is one character but reads as `\x95` and a backslash to a UTF-8
    // reader: text that looks like one string literal would run an UPDATE. The session ends
    // before anything after the switch reaches the server.
    let s = authenticated(&gw);
    let mut batch = query_message("SET client_encoding TO 'SJIS'");
    batch.extend(query_bytes(
        b"SELECT '\x95\\'; UPDATE gh_enc SET a = 1; --'",
    ));
    ends_before_the_update(&cluster, &gw, s, &batch, "gh_enc", "SJIS");

    // The same through set_config in a DO block, and as a startup parameter.
    let mut s = authenticated(&gw);
    let mut batch =
        query_message("DO $$ BEGIN PERFORM set_config('client_encoding', 'BIG5', false); END $$");
    batch.extend(query_message("UPDATE gh_enc SET a = 2"));
    s.write_all(&batch).unwrap();
    let (msgs, _) = read_until_close(&mut s);
    assert_eq!(
        error_codes(&msgs, b'C').last().map(String::as_str),
        Some("55P02")
    );
    assert_eq!(cluster.psql_admin("SELECT a FROM gh_enc").trim(), "0");

    let mut s = connect(&gw);
    s.write_all(&startup_packet(
        V3,
        &[
            ("user", "tester"),
            ("database", "main"),
            ("client_encoding", "GBK"),
        ],
    ))
    .unwrap();
    let (msgs, _) = read_until_close(&mut s);
    assert_eq!(error_codes(&msgs, b'C'), ["42501"]);
}

#[test]
fn standard_conforming_strings_off_ends_the_session_before_text_reads_differently() {
    let (cluster, gw) = cluster_and_gateway();
    cluster.psql_admin("CREATE TABLE gh_scs (a int); INSERT INTO gh_scs VALUES (0)");
    // With the setting on (how the gateway reads), '\' is a literal and the rest of the line
    // is a second, unterminated one; with it off, '\'' is one literal and the UPDATE runs.
    let s = authenticated(&gw);
    let mut batch = query_message("SET standard_conforming_strings = off");
    batch.extend(query_bytes(b"SELECT '\\''; UPDATE gh_scs SET a = 1; --'"));
    ends_before_the_update(
        &cluster,
        &gw,
        s,
        &batch,
        "gh_scs",
        "standard_conforming_strings",
    );
}

#[test]
fn startup_parameters_are_an_allow_list_and_recorded() {
    let (_cluster, gw) = cluster_and_gateway();
    for (name, value) in [
        ("options", "-c role=pg_read_all_data"),
        ("role", "postgres"),
        ("session_replication_role", "replica"),
        ("options", "--session_replication_role=replica"),
    ] {
        let mut s = connect(&gw);
        s.write_all(&startup_packet(
            V3,
            &[("user", "tester"), ("database", "main"), (name, value)],
        ))
        .unwrap();
        let (msgs, end) = read_until_close(&mut s);
        let fields = msgs
            .iter()
            .find(|(t, _)| *t == b'E')
            .map(|(_, b)| error_fields(b))
            .unwrap_or_else(|| panic!("{name}={value}: no error, {msgs:?} {end:?}"));
        assert_eq!(field(&fields, b'S'), "FATAL", "{name}={value}");
        assert_eq!(field(&fields, b'C'), "42501", "{name}={value}");
        assert!(field(&fields, b'M').contains("not allowed"), "{fields:?}");
    }
    let out = psql_command(&gw.url_with(
        &gw.admin_key,
        "main",
        "sslmode=disable&application_name=nightly-report&options=-c%20search_path%3Dpublic",
    ))
    .args([
        "-c",
        "SELECT current_setting('application_name'), current_setting('search_path')",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "nightly-report|public");
    let start = gw
        .events_of_kind("session.start")
        .into_iter()
        .last()
        .unwrap();
    let params = &start["what"]["detail"]["startup_parameters"];
    assert_eq!(params["application_name"], "nightly-report", "{start:#}");
    assert_eq!(params["search_path"], "public");
    // Refusals before authentication are recorded as protocol errors.
    assert!(gw
        .events_of_kind("protocol.error")
        .iter()
        .any(|e| e["outcome"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("session_replication_role")));
}

#[test]
fn a_committed_statement_survives_kill_9_in_the_record() {
    let (cluster, mut gw) = cluster_and_gateway();
    cluster.psql_admin("CREATE TABLE gh_k (n int); INSERT INTO gh_k VALUES (0)");
    let mut s = authenticated(&gw);
    let mut batch = query_message("UPDATE gh_k SET n = n + 1");
    batch.extend(query_message("SELECT pg_sleep(30)"));
    s.write_all(&batch).unwrap();
    // Wait until the UPDATE has committed and the sleep runs on the server.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster
        .psql_admin("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")
        .trim()
        != "1"
    {
        assert!(Instant::now() < deadline, "the sleep never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cluster.psql_admin("SELECT n FROM gh_k").trim(), "1");
    // The recorder hands what it buffered to the file at least once a second.
    std::thread::sleep(Duration::from_millis(1500));
    gw.kill_hard();
    let head_before = gw.audit_events().last().unwrap()["seq"].as_u64().unwrap();

    let update = recorded(&gw, "UPDATE gh_k SET n = n + 1");
    assert_eq!(update.len(), 1);
    assert_eq!(update[0]["outcome"]["status"], "success");
    let sleep = recorded(&gw, "SELECT pg_sleep(30)");
    assert_eq!(sleep.len(), 1, "recorded before it reached the server");
    assert_eq!(sleep[0]["outcome"]["status"], "pending");

    gw.restart();
    let unclean = gw.wait_for_event("gateway.unclean_stop", |e| {
        e["kind"] == "gateway.unclean_stop"
    });
    assert_eq!(
        unclean["what"]["detail"]["previous_head"]["seq"],
        head_before
    );
    let session = &sleep[0]["session"];
    let end = gw.wait_for_event("the killed session closed", |e| {
        e["kind"] == "session.end" && e["session"] == *session
    });
    assert_eq!(end["what"]["detail"]["cause"], "unclean_stop");
    assert_eq!(
        end["what"]["detail"]["unfinished_statements"],
        serde_json::json!([sleep[0]["seq"]])
    );
    let report = gw.assert_audit_verifies();
    assert!(
        report.contains("1 of "),
        "verify names the unknown outcome: {report}"
    );

    // The killed session's recording, as the crash left it, is covered by the chain from the
    // restart on: its hash is in that session.end, it replays, and a changed byte is caught.
    let recording = &end["what"]["detail"]["recording"];
    assert_eq!(recording["unfinished"], true, "{end}");
    let file = gw
        .data_dir()
        .join("recordings")
        .join(recording["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    assert_eq!(
        recording["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)).as_str()
    );
    let id = session.as_str().unwrap();
    let out = gw.cli(&["sessions", "replay", id, "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("UPDATE gh_k SET n = n + 1"),
        "{}",
        text(&out.stdout)
    );
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let out = gw.audit_verify();
    assert!(!out.status.success());
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(said.contains(id), "{said}");
}

#[test]
fn interrupted_statements_are_recorded_unknown_with_what_was_relayed() {
    let (cluster, gw) = cluster_and_gateway();
    cluster.psql_admin(
        "CREATE TABLE gh_i (n int); INSERT INTO gh_i SELECT generate_series(1, 200000)",
    );
    // A long result: the client reads part of it, then goes away.
    let mut s = authenticated(&gw);
    s.write_all(&query_message("SELECT n, repeat('x', 100) FROM gh_i"))
        .unwrap();
    for _ in 0..1000 {
        let Backend::Msg(..) = read_message(&mut s) else {
            panic!("ended early")
        };
    }
    drop(s);
    // An UPDATE whose client leaves before the answer: it commits on the server.
    let mut s = authenticated(&gw);
    s.write_all(&query_message(
        "UPDATE gh_i SET n = n + 1 WHERE n <= 100000",
    ))
    .unwrap();
    s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster
        .psql_admin("SELECT count(*) FROM gh_i WHERE n = 100001")
        .trim()
        != "2"
    {
        assert!(Instant::now() < deadline, "the UPDATE never committed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let select = gw.wait_for_event("the cut-short SELECT", |e| {
        e["kind"] == "statement.result" && e["outcome"]["status"] == "unknown"
    });
    assert!(
        select["outcome"]["rows"].as_u64().unwrap() >= 900,
        "{select:#}"
    );
    assert!(
        select["what"]["detail"]["bytes"].as_u64().unwrap() > 100_000,
        "{select:#}"
    );
    let update = gw.statements_with_text("UPDATE gh_i SET n = n + 1 WHERE n <= 100000");
    assert_eq!(update.len(), 1);
    assert_ne!(
        update[0]["outcome"]["status"], "failure",
        "not claimed to have failed: {:#}",
        update[0]
    );
}

#[test]
fn a_text_of_several_statements_is_recorded_as_its_most_consequential() {
    let (cluster, gw) = cluster_and_gateway();
    cluster.psql_admin("CREATE TABLE gh_c (a int)");
    gw.psql("main", "SELECT 1; UPDATE gh_c SET a = 1; CHECKPOINT");
    let r = recorded(&gw, "SELECT 1; UPDATE gh_c SET a = 1; CHECKPOINT");
    assert_eq!(r.len(), 1);
    // PostgreSQL's own grammar reads all three, as the server did.
    assert_eq!(r[0]["what"]["classification"], "write", "{:#}", r[0]);
    assert_eq!(r[0]["what"]["detail"]["parsed"], true);
    assert_eq!(r[0]["what"]["detail"]["statements"], 3);
    // A long padding before a write: the record keeps the tail that shows it.
    // (-c sends the text as one query; -f would split it at the semicolon.)
    let sql = format!(
        "SELECT 1 /* {} */; UPDATE gh_c SET a = 2",
        "p".repeat(100_000)
    );
    gw.psql("main", &sql);
    let padded = gw.statements_matching(|t| t.starts_with("SELECT 1 /* ppp"));
    assert_eq!(padded.len(), 1);
    let detail = &padded[0]["what"]["detail"];
    assert_eq!(padded[0]["what"]["classification"], "write");
    assert!(detail["statement_tail"]
        .as_str()
        .unwrap()
        .ends_with("UPDATE gh_c SET a = 2"));
    assert_eq!(detail["statement_bytes"], sql.len());
}

#[test]
fn fastpath_calls_are_refused_unless_the_connection_allows_them() {
    let cluster = PgCluster::start();
    let gw = Gateway::builder()
        .main_connection(&cluster)
        .raw_connection(&format!(
            "  lo:\n    protocol: postgres\n    allow_fastpath: true\n    upstream:\n      host: 127.0.0.1\n      port: {}\n      database: postgres\n      user: postgres\n      password: ${{env:GH_TEST_PW_MAIN}}\n      tls: {{ mode: disable }}\n    allow:\n      groups: [gatehouse-admins]\n",
            cluster.port
        ))
        .start();
    let file = gw.dir.path().join("blob.txt");
    std::fs::write(&file, b"large object contents").unwrap();
    let import = format!("\\lo_import {}", file.display());
    let refused = gw.psql_args("main", &["-c", &import]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("fastpath"),
        "{}",
        text(&refused.stderr)
    );
    let calls = gw.statements_matching(|t| t.starts_with("/* fastpath function call */"));
    assert!(!calls.is_empty());
    assert!(calls.iter().all(|e| e["outcome"]["code"] == "0A000"));

    let allowed = gw.psql_args("lo", &["-c", &import]);
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    let calls: Vec<Value> = settled_statements(&gw)
        .into_iter()
        .filter(|e| {
            e["what"]["connection"] == "lo" && e["what"]["detail"]["step"] == "function_call"
        })
        .collect();
    assert!(
        calls.len() >= 3,
        "lo_open, lowrite, lo_close...: {calls:#?}"
    );
    assert!(calls.iter().all(|e| e["outcome"]["status"] == "success"));
    let write = calls
        .iter()
        .find(|e| {
            e["what"]["detail"]["arguments"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["bytes"] == 21))
        })
        .expect("the lowrite call with the file's 21 bytes");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"large object contents",
    ));
    assert!(write["what"]["detail"]["arguments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["sha256"] == sha.as_str()));
}

#[test]
fn a_batch_the_server_is_skipping_never_stalls_the_session() {
    let (_cluster, gw) = cluster_and_gateway();
    let mut s = authenticated(&gw);

    // The Parse fails and its error reaches the client (Flush) before the rest of the batch is
    // written; the server then discards everything up to the Sync, here more messages than
    // the gateway keeps answers pending for (psycopg's executemany does the same on error).
    let mut batch = parse_message("bad", b"wat");
    batch.extend(flush_message());
    s.write_all(&batch).unwrap();
    match read_message(&mut s) {
        Backend::Msg(b'E', body) => assert_eq!(field(&error_fields(&body), b'C'), "42601"),
        other => panic!("expected the Parse's error, got {other:?}"),
    }
    const SKIPPED: usize = 9_000;
    let mut batch = Vec::new();
    for _ in 0..SKIPPED {
        batch.extend(bind_message("", "bad", &[]));
        batch.extend(execute_message(""));
        batch.extend(flush_message());
    }
    batch.extend(sync_message());
    s.write_all(&batch).unwrap();
    let rest = read_ready(&mut s);
    assert_eq!(rest.len(), 1, "the server answers only the Sync: {rest:?}");

    // Written in one go, so the error arrives while the batch is in flight: the PREPARE in
    // it is skipped too, and prepared statements are followed exactly afterwards.
    let mut batch = parse_message("bad2", b"wat");
    batch.extend(query_message("PREPARE gh_skipped AS SELECT 1"));
    batch.extend(sync_message());
    batch.extend(parse_message("after", b"SELECT 2"));
    batch.extend(bind_message("", "after", &[]));
    batch.extend(execute_message(""));
    batch.extend(sync_message());
    s.write_all(&batch).unwrap();
    let failed = read_ready(&mut s);
    assert_eq!(error_codes(&failed, b'C'), ["42601"]);
    let ran = read_ready(&mut s);
    assert_eq!(first_columns(&ran), [b"2".to_vec()]);
    s.write_all(&query_message("EXECUTE gh_skipped")).unwrap();
    let missing = read_ready(&mut s);
    assert_eq!(
        error_codes(&missing, b'C'),
        ["26000"],
        "the PREPARE never ran"
    );

    // A Bind fails: its error is the failure of the Execute of that portal, not of the
    // unrelated statement after it, which did not run.
    let mut batch = parse_message("num", b"SELECT $1::int");
    batch.extend(sync_message());
    batch.extend(bind_message("p", "num", &[Some(b"x")]));
    batch.extend(execute_message("p"));
    batch.extend(parse_message("", b"SELECT 3"));
    batch.extend(bind_message("", "", &[]));
    batch.extend(execute_message(""));
    batch.extend(sync_message());
    s.write_all(&batch).unwrap();
    read_ready(&mut s);
    let failed = read_ready(&mut s);
    assert_eq!(error_codes(&failed, b'C'), ["22P02"]);

    // A Close the server skips leaves the statement in place: it still runs, recorded with
    // its text.
    let mut batch = parse_message("bad3", b"wat");
    batch.extend(flush_message());
    s.write_all(&batch).unwrap();
    assert!(matches!(read_message(&mut s), Backend::Msg(b'E', _)));
    let mut close = vec![b'S'];
    close.extend(cstr("num"));
    let mut batch = message(b'C', &close);
    batch.extend(sync_message());
    batch.extend(bind_message("", "num", &[Some(b"7")]));
    batch.extend(execute_message(""));
    batch.extend(sync_message());
    s.write_all(&batch).unwrap();
    read_ready(&mut s);
    assert_eq!(first_columns(&read_ready(&mut s)), [b"7".to_vec()]);

    // The log says the same: the skipped Executes did not run (the Parse's own record has
    // its error), the PREPARE did not run, SELECT 2 ran, the Execute of the portal whose Bind
    // failed has the Bind's error, SELECT 3 did not run, the statement whose Close was skipped
    // ran with its text, nothing is left pending.
    let not_run = |e: &Value| {
        e["outcome"]["status"] == "failure"
            && e["outcome"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("not run")
    };
    let statements = settled_statements(&gw);
    let skipped: Vec<&Value> = statements
        .iter()
        .filter(|e| {
            e["what"]["detail"]["step"] == "execute" && e["what"]["detail"]["text_known"] == false
        })
        .collect();
    assert_eq!(skipped.len(), SKIPPED);
    assert!(skipped.iter().all(|e| not_run(e)));
    let refused = recorded(&gw, "wat");
    assert_eq!(refused.len(), 3, "every failed Parse is recorded");
    assert!(refused.iter().all(|e| e["outcome"]["code"] == "42601"));
    let bound = recorded(&gw, "SELECT $1::int");
    let bound: Vec<&Value> = bound
        .iter()
        .filter(|e| e["what"]["detail"]["step"] == "execute")
        .collect();
    assert_eq!(bound.len(), 2);
    assert_eq!(bound[0]["outcome"]["code"], "22P02");
    assert_eq!(
        bound[1]["outcome"]["status"], "success",
        "ran after the skipped Close"
    );
    let third = recorded(&gw, "SELECT 3");
    assert_eq!(third.len(), 1);
    assert!(not_run(&third[0]), "{:?}", third[0]);
    let prepare = recorded(&gw, "PREPARE gh_skipped AS SELECT 1");
    assert_eq!(prepare.len(), 1);
    assert!(not_run(&prepare[0]));
    let after = recorded(&gw, "SELECT 2");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["outcome"]["status"], "success");
    gw.assert_audit_verifies();
}

#[test]
fn pipelined_durations_add_up_to_the_wall_clock() {
    let (cluster, gw) = cluster_and_gateway();
    cluster.psql_admin("CREATE TABLE gh_d (a int)");
    let mut s = authenticated(&gw);
    let mut batch = parse_message("ins", b"INSERT INTO gh_d VALUES ($1)");
    for i in 0..20_000 {
        let v = i.to_string();
        batch.extend(bind_message("", "ins", &[Some(v.as_bytes())]));
        batch.extend(execute_message(""));
    }
    batch.extend(sync_message());
    let started = Instant::now();
    s.write_all(&batch).unwrap();
    read_ready(&mut s);
    let wall = started.elapsed();
    drop(s);
    assert_eq!(
        cluster.psql_admin("SELECT count(*) FROM gh_d").trim(),
        "20000"
    );
    let events = gw.audit_events_until(Duration::from_secs(20), |events| {
        events
            .iter()
            .filter(|e| e["kind"] == "statement.result")
            .count()
            >= 20_000
    });
    let total_ns: u64 = events
        .iter()
        .filter(|e| e["kind"] == "statement.result")
        .map(|e| e["outcome"]["duration_ns"].as_u64().unwrap())
        .sum();
    let total = Duration::from_nanos(total_ns);
    eprintln!("20000 pipelined inserts: wall {wall:?}, recorded durations add up to {total:?}");
    assert!(
        total <= wall + Duration::from_millis(200),
        "durations {total:?} > wall {wall:?}"
    );
}

#[test]
fn the_client_sees_the_servers_backend_pid() {
    let (cluster, gw) = cluster_and_gateway();
    let (mut s, msgs) = log_in(&gw, &MAIN);
    let key = msgs
        .iter()
        .find(|(t, _)| *t == b'K')
        .expect("BackendKeyData");
    let pid = i32::from_be_bytes([key.1[0], key.1[1], key.1[2], key.1[3]]);
    s.write_all(&query_message("SELECT pg_backend_pid()"))
        .unwrap();
    assert_eq!(
        first_columns(&read_ready(&mut s)),
        [pid.to_string().into_bytes()]
    );
    // A notification to itself names the same pid.
    s.write_all(&query_message("LISTEN gh_chan; NOTIFY gh_chan, 'hello'"))
        .unwrap();
    let msgs = read_ready(&mut s);
    let note = msgs
        .iter()
        .find(|(t, _)| *t == b'A')
        .expect("NotificationResponse");
    assert_eq!(
        i32::from_be_bytes([note.1[0], note.1[1], note.1[2], note.1[3]]),
        pid
    );
    // And pg_terminate_backend with it ends the session.
    cluster.psql_admin(&format!("SELECT pg_terminate_backend({pid})"));
    let (msgs, end) = read_until_close(&mut s);
    assert!(matches!(end, End::Closed | End::Reset), "{end:?}");
    assert_eq!(error_codes(&msgs, b'C'), ["57P01"]);
    gw.wait_for_event("session end after terminate", |e| {
        e["kind"] == "session.end" && e["what"]["detail"]["cause"] == "upstream_closed"
    });
}

#[test]
fn an_operator_ends_a_session_with_the_cli() {
    let (_cluster, gw) = cluster_and_gateway();
    let mut s = authenticated(&gw);
    s.write_all(&query_message("SELECT 1")).unwrap();
    read_ready(&mut s);
    let out = gw.cli(&["sessions", "list", "--open"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let id = listing
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("one open session")
        .to_owned();
    let out = gw.cli(&["sessions", "kill", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (msgs, end) = read_until_close(&mut s);
    assert!(matches!(end, End::Closed | End::Reset));
    assert_eq!(error_codes(&msgs, b'C'), ["57P01"]);
    let kill = gw.wait_for_event("session.kill", |e| e["kind"] == "session.kill");
    assert_eq!(kill["session"], id.as_str());
    assert_eq!(kill["who"]["subject"], "key:bootstrap-admin");
    let end = gw.wait_for_event("session.end", |e| {
        e["kind"] == "session.end" && e["session"] == id.as_str()
    });
    assert_eq!(end["what"]["detail"]["cause"], "killed");
    assert!(kill["seq"].as_u64() < end["seq"].as_u64());
    let again = gw.cli(&["sessions", "kill", &id]);
    assert!(!again.status.success(), "a closed session cannot be killed");
}

#[test]
fn large_messages_stream_or_are_refused_properly() {
    let (_cluster, gw) = cluster_and_gateway();
    let rt = current_thread_runtime();
    rt.block_on(async {
        let (client, _conn) = gw.main_client().await;
        // A 17 MiB bind parameter streams through.
        let big = "z".repeat(17 * 1024 * 1024);
        let row = client
            .query_one("SELECT length($1::text)", &[&big])
            .await
            .expect("a 17 MiB parameter");
        assert_eq!(row.get::<_, i32>(0), 17 * 1024 * 1024);
        // An error that echoes a 17 MiB input comes through whole.
        let err = client
            .simple_query("SELECT repeat('q', 17825792)::int")
            .await
            .expect_err("not an integer");
        let db = err.as_db_error().expect("the server's error");
        assert_eq!(db.code().code(), "22P02");
        assert!(db.message().len() > 17 * 1024 * 1024);
        // So does a notice that large.
        client
            .batch_execute("DO $$ BEGIN RAISE NOTICE '%', repeat('n', 17825792); END $$")
            .await
            .expect("a large notice");
        let row = client.query_one("SELECT 1", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 1);
    });
    let param = gw.statements_with_text("SELECT length($1::text)");
    assert_eq!(param.len(), 1);
    assert_eq!(param[0]["outcome"]["status"], "success");
    let echo = gw.statements_with_text("SELECT repeat('q', 17825792)::int");
    assert_eq!(echo[0]["outcome"]["code"], "22P02");
    assert!(echo[0]["outcome"]["reason"].as_str().unwrap().len() <= 1024);
}
