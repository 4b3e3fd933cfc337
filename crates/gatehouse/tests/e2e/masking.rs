//! Masking through the gateway: values planted in the database (card numbers, an SSN, an
//! email, an AWS key) never reach the client, the audit log or an error, whatever the query
//! shape (aliases, views, CTEs, functions), protocol (simple, extended, binary results), COPY
//! format, error DETAIL or NOTIFY payload; an exempt group sees them, and the record says so.

use crate::harness::*;
use serde_json::Value;

const MASKING: &str = "policy:
  masking:
    rules:
      - name: pii
        exempt: [auditors]
        detectors: default
        patterns:
          - { name: employee-id, regex: 'EMP-[0-9]{6}', strategy: full }
";

/// Values planted in the table, and where they must never appear whole.
const PAN: &str = "4111 1111 1111 1111";
const PAN_DIGITS: &str = "4111111111111111";
const ACCOUNT: &str = "5555555555554444";
const SSN: &str = "123-45-6789";
const EMAIL: &str = "jane.doe@example.com";
const AWS: &str = "AKIAIOSFODNN7EXAMPLE";
const EMPLOYEE: &str = "EMP-004217";
const NOTIFIED: &str = "5105 1051 0510 5100";
const WRITTEN: &str = "6011111111111117";
const PLANTED: [&str; 9] = [
    PAN, PAN_DIGITS, ACCOUNT, SSN, EMAIL, AWS, EMPLOYEE, NOTIFIED, WRITTEN,
];

fn masked_gateway() -> (PgCluster, Gateway) {
    let (cluster, gateway) = cluster_and_gateway_with(|b| b.top(MASKING));
    cluster.psql_admin(&format!(
        "CREATE TABLE cards (id int PRIMARY KEY, pan text UNIQUE, holder text, ssn text, \
           account bigint, note text);
         INSERT INTO cards VALUES (1, '{PAN}', '{EMAIL}', '{SSN}', {ACCOUNT}, \
           'key {AWS} for {EMPLOYEE}');
         CREATE VIEW card_view AS SELECT pan AS harmless FROM cards;
         CREATE FUNCTION first_pan() RETURNS text LANGUAGE sql AS 'SELECT pan FROM cards LIMIT 1';
         CREATE TABLE notes (body text);"
    ));
    (cluster, gateway)
}

fn assert_clean(what: &str, text: &str) {
    for value in PLANTED {
        assert!(!text.contains(value), "{what} holds {value:?}:\n{text}");
    }
}

/// Every session recording's bytes, once the sessions have ended (plain recordings: the
/// values would be there as sent).
fn recordings_text(gateway: &Gateway) -> String {
    let dir = gateway.data_dir().join("recordings");
    gateway.audit_events_until(std::time::Duration::from_secs(10), |events| {
        let starts = events
            .iter()
            .filter(|e| e["kind"] == "session.start")
            .count();
        let ends = events.iter().filter(|e| e["kind"] == "session.end").count();
        starts == ends
    });
    let mut all = String::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("recordings directory") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("recording");
        all.push_str(&String::from_utf8_lossy(&bytes));
        files += 1;
    }
    assert!(files > 0, "no recordings in {}", dir.display());
    all
}

fn audit_text(gateway: &Gateway) -> String {
    std::fs::read_to_string(gateway.audit_path()).expect("audit log")
}

fn result_of<'a>(events: &'a [Value], statement: &Value) -> &'a Value {
    events
        .iter()
        .find(|e| e["kind"] == "statement.result" && e["ref"] == statement["seq"])
        .expect("a result record")
}

#[test]
fn psql_sees_masked_values_in_every_query_shape_copy_error_and_notification() {
    let (cluster, gateway) = masked_gateway();
    let mut seen = String::new();
    let mut run = |args: &[&str]| {
        let out = gateway.psql_args("main", args);
        seen.push_str(&text(&out.stdout));
        seen.push_str(&text(&out.stderr));
        out
    };
    let out = run(&["-c", "SELECT * FROM cards"]);
    assert!(out.status.success());
    let shown = text(&out.stdout);
    assert!(shown.contains("**** **** **** 1111"), "{shown}");
    assert!(shown.contains("***-**-6789"), "{shown}");
    assert!(
        shown.contains("0000000000004444"),
        "a bigint stays a number: {shown}"
    );
    assert!(shown.contains("**********"), "the custom pattern: {shown}");

    for sql in [
        "SELECT pan AS innocent, pan || '' AS computed, upper(holder) FROM cards",
        "SELECT * FROM card_view",
        "WITH c AS (SELECT pan, ssn FROM cards) SELECT * FROM c",
        "SELECT first_pan()",
        "SELECT row_to_json(c) FROM cards c",
        "SELECT string_agg(pan, ',') FROM cards",
        "COPY cards TO STDOUT",
        "COPY cards TO STDOUT WITH (FORMAT csv, HEADER)",
        "COPY (SELECT pan, ssn FROM cards) TO STDOUT WITH (FORMAT csv)",
    ] {
        let out = run(&["-c", sql]);
        assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("1111"),
            "{sql} returned the row: {}",
            text(&out.stdout)
        );
    }

    // A unique violation's DETAIL carries the value; so does a failed cast's message.
    let out = run(&[
        "-c",
        &format!("INSERT INTO cards (id, pan) VALUES (2, '{PAN}')"),
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("23505") || err.contains("duplicate key"),
        "{err}"
    );
    assert!(err.contains("**** **** **** 1111"), "{err}");
    let out = run(&["-c", "SELECT (pan || ' x')::int FROM cards"]);
    assert!(!out.status.success());

    // A notification's payload.
    let out = run(&[
        "-c",
        "LISTEN card_events",
        "-c",
        &format!("NOTIFY card_events, 'paid with {NOTIFIED}'"),
    ]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("**** **** **** 5100"),
        "{}",
        text(&out.stdout)
    );

    // A value written through the gateway is stored as written, and recorded masked.
    run(&[
        "-c",
        &format!("INSERT INTO notes VALUES ('card {WRITTEN} on file')"),
    ]);
    assert!(cluster
        .psql_admin("SELECT body FROM notes")
        .contains(WRITTEN));

    assert_clean("what psql showed", &seen);
    let loaded = gateway.events_of_kind("policy.loaded");
    assert_eq!(loaded[0]["what"]["detail"]["masking_rules"], 1);
    let audit = audit_text(&gateway);
    assert_clean("the audit log", &audit);
    let recorded = recordings_text(&gateway);
    assert!(
        recorded.contains("**** **** **** 1111"),
        "rows are recorded as shown"
    );
    assert_clean("the recordings", &recorded);

    let events = gateway.audit_events();
    let select = gateway
        .statements_with_text("SELECT * FROM cards")
        .pop()
        .expect("the statement record");
    assert_eq!(select["what"]["detail"]["masking"], "pii");
    let result = result_of(&events, &select);
    let masked = &result["what"]["detail"]["masked"];
    assert_eq!(masked["card"], 2, "{result}");
    assert_eq!(masked["ssn"], 1, "{result}");
    assert_eq!(masked["email"], 1, "{result}");
    assert_eq!(masked["aws_key"], 1, "{result}");
    assert_eq!(masked["employee-id"], 1, "{result}");
    let insert = gateway
        .statements_matching(|s| s.starts_with("INSERT INTO notes"))
        .pop()
        .expect("the insert's record");
    assert_eq!(
        insert["what"]["statement"],
        "INSERT INTO notes VALUES ('card ************1117 on file')"
    );
    assert_eq!(insert["what"]["detail"]["masked_in_text"]["card"], 1);
    let failed = gateway
        .statements_matching(|s| s.starts_with("INSERT INTO cards"))
        .pop()
        .expect("the failed insert's record");
    let failed_result = result_of(&events, &failed);
    assert_eq!(failed_result["outcome"]["code"], "23505");
    gateway.assert_audit_verifies();
}

#[test]
fn tokio_postgres_binary_results_prepared_statements_and_large_rows_are_masked() {
    let (cluster, gateway) = masked_gateway();
    // A value larger than a streamed message's first piece, with cards across its pieces.
    cluster.psql_admin(&format!(
        "INSERT INTO notes SELECT string_agg(repeat('x', 65500 + i) || ' {PAN} ' || \
           '{SSN} ', '') FROM generate_series(1, 16) i"
    ));
    runtime().block_on(async {
        let (client, _conn) = gateway.main_client().await;
        let mut seen = String::new();
        // Binary results: text columns come back as their bytes.
        let row = client
            .query_one(
                "SELECT pan, holder, ssn, note FROM cards WHERE id = $1",
                &[&1i32],
            )
            .await
            .unwrap();
        for i in 0..4 {
            seen.push_str(row.get::<_, &str>(i));
            seen.push('\n');
        }
        assert_eq!(row.get::<_, &str>(0), "**** **** **** 1111");
        let statement = client
            .prepare("SELECT pan AS x FROM card_view, cards")
            .await
            .unwrap();
        for _ in 0..3 {
            for row in client.query(&statement, &[]).await.unwrap() {
                seen.push_str(row.get::<_, &str>(0));
            }
        }
        for message in client
            .simple_query("SELECT holder FROM cards; SELECT note FROM cards")
            .await
            .unwrap()
        {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                seen.push_str(row.get(0).unwrap_or_default());
            }
        }
        let err = client
            .execute(
                "INSERT INTO cards (id, pan) VALUES ($1, $2)",
                &[&3i32, &PAN],
            )
            .await
            .unwrap_err();
        let db = err.as_db_error().expect("a server error");
        seen.push_str(db.message());
        seen.push_str(db.detail().unwrap_or_default());
        assert!(db
            .detail()
            .unwrap_or_default()
            .contains("**** **** **** 1111"));

        let large = client
            .query_one("SELECT body FROM notes", &[])
            .await
            .unwrap();
        let body: &str = large.get(0);
        assert!(body.len() > 16 * 65_500, "the whole value came back");
        assert_eq!(body.matches("**** **** **** 1111").count(), 16);
        assert_eq!(body.matches("***-**-6789").count(), 16);
        seen.push_str(body);
        assert_clean("what tokio-postgres received", &seen);
    });
    assert_clean("the audit log", &audit_text(&gateway));
    assert_clean("the recordings", &recordings_text(&gateway));
    gateway.assert_audit_verifies();
}

#[test]
fn an_exempt_group_sees_values_and_the_record_says_so_and_stays_masked() {
    let (_cluster, gateway) = masked_gateway();
    let auditor = gateway.create_key("examiner", &["developers", "auditors"]);
    let out = gateway.psql_raw(
        &auditor,
        "main",
        &["-c", &format!("SELECT pan FROM cards WHERE pan = '{PAN}'")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(PAN), "{}", text(&out.stdout));
    let record = gateway
        .statements_matching(|s| s.starts_with("SELECT pan FROM cards WHERE"))
        .pop()
        .expect("the statement record");
    assert_eq!(record["what"]["detail"]["unmasked"], "pii");
    assert_eq!(
        record["what"]["statement"],
        "SELECT pan FROM cards WHERE pan = '**** **** **** 1111'"
    );
    assert_clean("the audit log", &audit_text(&gateway));
    assert_clean("the recordings", &recordings_text(&gateway));
}

#[test]
fn a_reload_that_adds_masking_applies_to_the_next_statement_of_an_open_session() {
    let (cluster, gateway) = cluster_and_gateway();
    cluster.psql_admin(&format!(
        "CREATE TABLE cards (pan text); INSERT INTO cards VALUES ('{PAN}')"
    ));
    let original = std::fs::read_to_string(&gateway.config_path).unwrap();
    runtime().block_on(async {
        let (client, _conn) = gateway.main_client().await;
        let pan = |rows: Vec<tokio_postgres::Row>| rows[0].get::<_, String>(0);
        assert_eq!(
            pan(client.query("SELECT pan FROM cards", &[]).await.unwrap()),
            PAN
        );
        std::fs::write(&gateway.config_path, format!("{original}{MASKING}")).unwrap();
        gateway.wait_for_event("policy.loaded", |e| {
            e["kind"] == "policy.loaded" && e["what"]["detail"]["masking_rules"] == 1
        });
        // Its record lands a moment before it takes effect.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let shown = pan(client.query("SELECT pan FROM cards", &[]).await.unwrap());
            if shown == "**** **** **** 1111" {
                break;
            }
            assert_eq!(shown, PAN);
            assert!(
                std::time::Instant::now() < deadline,
                "masking never took effect"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn refused_statements_are_recorded_masked_and_masking_never_hides_code() {
    let rules = format!(
        "{MASKING}  rules:\n    - name: no-truncate\n      action: block\n      reason: TRUNCATE removes every row\n      match: {{ statements: [TRUNCATE] }}\n"
    );
    let (cluster, gateway) = cluster_and_gateway_with(|b| b.top(&rules));
    cluster.psql_admin("CREATE TABLE notes (body text)");
    let out = gateway.psql_args("main", &["-c", &format!("TRUNCATE notes /* {PAN} */")]);
    assert!(!out.status.success());
    let blocked = gateway
        .statements_matching(|s| s.starts_with("TRUNCATE notes"))
        .pop()
        .expect("the refusal's record");
    assert_eq!(blocked["what"]["detail"]["decision"], "block");
    assert_eq!(
        blocked["what"]["statement"],
        "TRUNCATE notes /* **** **** **** 1111 */"
    );

    // Comment lines shaped like a private key around a DROP: the DROP runs, and the record
    // shows it (a value never covers code).
    let sneaky = "SELECT 1 -- -----BEGIN PRIVATE KEY-----\n; DROP TABLE notes; --\n-- -----END PRIVATE KEY-----";
    let out = gateway.psql_args("main", &["-c", sneaky]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let record = gateway
        .statements_matching(|s| s.starts_with("SELECT 1 --"))
        .pop()
        .expect("its record");
    assert_eq!(record["what"]["statement"], sneaky);
    assert_clean("the audit log", &audit_text(&gateway));
    assert_clean("the recordings", &recordings_text(&gateway));
}
