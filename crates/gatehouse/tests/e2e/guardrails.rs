//! Guardrails through the gateway: statements blocked by rules over PostgreSQL's own grammar,
//! carried out so the server's transaction state stays authoritative, recorded with the rule
//! and the policy's hash; observe mode; reloads.

use crate::harness::*;
use serde_json::Value;
use std::time::Duration;

const RULES: &str = "policy:
  rules:
    - name: no-drop-table
      action: block
      reason: dropping tables needs a change ticket
      match: { statements: [DROP TABLE] }
    - name: no-truncate
      action: block
      reason: TRUNCATE removes every row
      match: { statements: [TRUNCATE] }
    - name: no-unqualified-writes
      action: block
      reason: UPDATE and DELETE need a WHERE clause that names rows
      match: { unqualified_write: true }
    - name: no-shell-from-sql
      action: block
      reason: COPY PROGRAM runs a shell command on the database server
      match: { copy_program: true }
    - name: watch-inserts
      action: block
      reason: inserts into guarded would need approval
      mode: observe
      match: { tables_written: [guarded], statements: [INSERT] }
";

fn guarded_gateway() -> (PgCluster, Gateway) {
    let (cluster, gateway) = cluster_and_gateway_with(|b| b.top(RULES));
    cluster.psql_admin("CREATE TABLE guarded (id int); INSERT INTO guarded VALUES (1), (2)");
    (cluster, gateway)
}

fn rows_left(cluster: &PgCluster) -> String {
    cluster
        .psql_admin("SELECT count(*) FROM guarded")
        .trim()
        .to_owned()
}

/// The policy hash in effect, from its `policy.loaded` record.
fn policy_hash(gateway: &Gateway) -> String {
    gateway
        .events_of_kind("policy.loaded")
        .last()
        .and_then(|e| e["what"]["detail"]["sha256"].as_str().map(str::to_owned))
        .expect("a policy.loaded record")
}

/// Waits for a record of `kind` that `pred` accepts.
fn wait_kind(gateway: &Gateway, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
    gateway.wait_for_event(kind, |e| e["kind"] == kind && pred(e))
}

/// Waits until a reloaded policy decides statements. Its record is written before it takes
/// effect, so a reader of the log can be a moment ahead: an unqualified DELETE of an always
/// empty table is blocked, or not, once the new policy is in effect.
async fn until_in_effect(client: &tokio_postgres::Client, blocked: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let result = client.batch_execute("DELETE FROM always_empty").await;
        if result.is_err() == blocked {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reloaded policy never took effect (blocked: {blocked}): {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn block_record(gateway: &Gateway, sql: &str) -> Value {
    let records = gateway.statements_with_text(sql);
    let record = records
        .iter()
        .find(|r| r["what"]["detail"]["decision"] == "block")
        .unwrap_or_else(|| panic!("no block record for {sql}: {records:?}"));
    record.clone()
}

#[test]
fn psql_blocked_statements_alone_in_a_batch_and_in_a_transaction() {
    let (cluster, gateway) = guarded_gateway();
    let verbose = |sql: &str| {
        let out = gateway.psql_args("main", &["-v", "VERBOSITY=verbose", "-c", sql]);
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };

    let probe = std::env::temp_dir().join(format!("gh-copy-program-{}", std::process::id()));
    let copy = format!("COPY guarded TO PROGRAM 'touch {}'", probe.display());
    for (sql, rule) in [
        ("DROP TABLE guarded", "no-drop-table"),
        (
            "drop /* x */ table IF EXISTS public.guarded",
            "no-drop-table",
        ),
        ("TRUNCATE guarded", "no-truncate"),
        ("DELETE FROM guarded", "no-unqualified-writes"),
        ("DELETE FROM guarded WHERE true", "no-unqualified-writes"),
        (
            "WITH gone AS (DELETE FROM guarded RETURNING *) SELECT count(*) FROM gone",
            "no-unqualified-writes",
        ),
        ("UPDATE guarded SET id = 0", "no-unqualified-writes"),
        (copy.as_str(), "no-shell-from-sql"),
    ] {
        let (ok, _, stderr) = verbose(sql);
        assert!(!ok, "{sql} must fail");
        assert!(
            stderr.contains("ERROR:  42501: blocked by rule")
                && stderr.contains(&format!("\"{rule}\"")),
            "{sql}: {stderr}"
        );
        let record = block_record(&gateway, sql);
        assert_eq!(record["what"]["detail"]["rule"], rule);
        assert_eq!(record["what"]["detail"]["policy"], policy_hash(&gateway));
        assert_eq!(record["who"]["subject"], "key:bootstrap-admin");
        assert_eq!(record["outcome"]["code"], "42501");
    }
    assert_eq!(rows_left(&cluster), "2", "nothing was deleted");
    assert!(!probe.exists(), "COPY TO PROGRAM must not have run");

    // One Query with the blocked statement in the middle: none of it runs.
    let (ok, stdout, stderr) = verbose(
        "INSERT INTO guarded VALUES (3); DROP TABLE guarded; INSERT INTO guarded VALUES (4)",
    );
    assert!(!ok && stderr.contains("no-drop-table"), "{stdout}{stderr}");
    assert_eq!(rows_left(&cluster), "2");

    // Inside a transaction the refusal aborts it, as the server's own error would.
    let mut psql = psql_command(&gateway.url(&gateway.admin_key, "main"));
    psql.args(["-v", "VERBOSITY=verbose"]);
    for sql in [
        "BEGIN",
        "INSERT INTO guarded VALUES (5)",
        "TRUNCATE guarded",
        "SELECT 'after'",
        "ROLLBACK",
        "SELECT 'usable'",
    ] {
        psql.args(["-c", sql]);
    }
    let out = psql.output().expect("psql");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stderr.contains("42501"), "{stderr}");
    assert!(
        stderr.contains("25P02"),
        "the statement after the refusal meets an aborted transaction: {stderr}"
    );
    assert!(
        stdout.contains("usable") && !stdout.contains("after"),
        "{stdout}"
    );
    assert_eq!(rows_left(&cluster), "2", "the transaction rolled back");

    // An observed rule records what it would do and does not act.
    gateway.psql("main", "INSERT INTO guarded VALUES (6)");
    let record = gateway
        .statements_with_text("INSERT INTO guarded VALUES (6)")
        .pop()
        .expect("record");
    assert_eq!(record["what"]["detail"]["decision"], "allow");
    assert_eq!(
        record["what"]["detail"]["observed"],
        serde_json::json!([{ "rule": "watch-inserts", "would": "block" }])
    );
    assert_eq!(rows_left(&cluster), "3");
    gateway.assert_audit_verifies();
}

#[test]
fn extended_protocol_pipelined_and_prepared_statements_are_decided() {
    let (cluster, gateway) = guarded_gateway();
    runtime().block_on(async {
        let (client, _conn) = gateway.main_client().await;
        let code = |e: tokio_postgres::Error| e.code().map(|c| c.code().to_owned());

        // Refused at Parse: nothing is prepared.
        let err = client.prepare("DROP TABLE guarded").await.unwrap_err();
        assert_eq!(code(err).as_deref(), Some("42501"));
        let err = client
            .execute("DELETE FROM guarded", &[])
            .await
            .unwrap_err();
        assert_eq!(code(err).as_deref(), Some("42501"));
        let probe = std::env::temp_dir().join(format!("gh-copy-ext-{}", std::process::id()));
        let copy = format!("COPY guarded TO PROGRAM 'touch {}'", probe.display());
        let err = client.execute(copy.as_str(), &[]).await.unwrap_err();
        assert_eq!(code(err).as_deref(), Some("42501"));
        assert!(!probe.exists(), "COPY TO PROGRAM must not have run");

        // Pipelined: the blocked statement fails alone; the others run.
        let one = client.query_one("SELECT 1::int", &[]);
        let blocked = client.execute("TRUNCATE guarded", &[]);
        let two = client.query_one("SELECT 2::int", &[]);
        let (one, blocked, two) = tokio::join!(one, blocked, two);
        assert_eq!(one.unwrap().get::<_, i32>(0), 1);
        assert_eq!(code(blocked.unwrap_err()).as_deref(), Some("42501"));
        assert_eq!(two.unwrap().get::<_, i32>(0), 2);

        // A qualified write prepared once runs each time.
        let stmt = client
            .prepare("DELETE FROM guarded WHERE id = $1")
            .await
            .unwrap();
        assert_eq!(client.execute(&stmt, &[&1i32]).await.unwrap(), 1);

        // Inside a transaction: the refusal aborts it; the session stays usable.
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute("INSERT INTO guarded VALUES (7)", &[])
            .await
            .unwrap();
        let err = client
            .execute("UPDATE guarded SET id = 0", &[])
            .await
            .unwrap_err();
        assert_eq!(code(err).as_deref(), Some("42501"));
        let err = client.query("SELECT 1", &[]).await.unwrap_err();
        assert_eq!(code(err).as_deref(), Some("25P02"));
        client.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(
            client
                .query_one("SELECT 42::int", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            42
        );

        // SQL PREPARE of a blocked statement is refused when it is prepared.
        let err = client
            .batch_execute("PREPARE wipe AS DELETE FROM guarded")
            .await
            .unwrap_err();
        assert_eq!(code(err).as_deref(), Some("42501"));
    });
    assert_eq!(rows_left(&cluster), "1", "only the qualified delete ran");
    gateway.assert_audit_verifies();
}

#[test]
fn a_reload_takes_effect_a_bad_one_is_refused_and_execute_is_decided_with_its_text() {
    let (cluster, gateway) = cluster_and_gateway();
    cluster.psql_admin(
        "CREATE TABLE guarded (id int); INSERT INTO guarded VALUES (1), (2); \
         CREATE TABLE always_empty (id int)",
    );
    let first = policy_hash(&gateway);
    let original = std::fs::read_to_string(&gateway.config_path).unwrap();

    runtime().block_on(async {
        let (client, _conn) = gateway.main_client().await;
        // Prepared while everything is allowed.
        client
            .batch_execute("PREPARE wipe AS DELETE FROM guarded")
            .await
            .unwrap();

        // The file changes: the new policy takes over without a restart.
        std::fs::write(&gateway.config_path, format!("{original}{RULES}")).unwrap();
        let loaded = wait_kind(&gateway, "policy.loaded", |e| {
            e["what"]["detail"]["trigger"] == "file_change"
        });
        let second = loaded["what"]["detail"]["sha256"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_ne!(second, first);
        assert_eq!(loaded["what"]["detail"]["previous"], first.as_str());
        assert_eq!(loaded["what"]["detail"]["rules"], 5);
        until_in_effect(&client, true).await;

        // EXECUTE runs what was prepared, and is decided with that text.
        let err = client.batch_execute("EXECUTE wipe").await.unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("42501"));
        let record = block_record(&gateway, "EXECUTE wipe");
        assert_eq!(record["what"]["detail"]["rule"], "no-unqualified-writes");
        assert_eq!(record["what"]["detail"]["policy"], second.as_str());

        // An invalid file is refused; the policy in effect stays.
        std::fs::write(
            &gateway.config_path,
            format!(
                "{original}{}",
                RULES.replace(
                    "action: block\n      reason: TRUNCATE",
                    "action: blok\n      reason: TRUNCATE"
                )
            ),
        )
        .unwrap();
        let rejected = wait_kind(&gateway, "policy.rejected", |_| true);
        assert!(
            rejected["outcome"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("blok")),
            "{rejected}"
        );
        assert_eq!(rejected["what"]["detail"]["in_effect"], second.as_str());
        let err = client.batch_execute("TRUNCATE guarded").await.unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("42501"));

        // SIGHUP reloads too (the original file: everything allowed again).
        std::fs::write(&gateway.config_path, &original).unwrap();
        let _ = wait_kind(&gateway, "policy.loaded", |e| {
            e["what"]["detail"]["sha256"] == first.as_str()
                && e["what"]["detail"]["trigger"] == "file_change"
        });
        let status = std::process::Command::new("kill")
            .args(["-HUP", &gateway.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = wait_kind(&gateway, "policy.loaded", |e| {
            e["what"]["detail"]["trigger"] == "sighup"
        });
        until_in_effect(&client, false).await;
        client.batch_execute("EXECUTE wipe").await.unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        cluster.psql_admin("SELECT count(*) FROM guarded").trim(),
        "0",
        "the prepared DELETE ran once the policy allowed it"
    );
    gateway.assert_audit_verifies();
}
