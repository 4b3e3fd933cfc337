//! Just-in-time approvals through the gateway: a statement held while psql waits, decided by
//! another identity through the CLI; denial, timeout and the single-use re-run; separation of
//! duties; two-of-N; cancel and disconnect during a hold; a restart with a request pending.

use crate::harness::*;
use serde_json::Value;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const RULES: &str = "policy:
  rules:
    - name: ledger-writes-need-approval
      action: approve
      reason: writes to the ledger need a second person
      approval: { approvers: [dba], hold: 12s, valid_for: 10m }
      match: { tables_written: [ledger] }
    - name: drops-need-two
      action: approve
      reason: dropping a table needs two approvers
      approval: { required: 2, approvers: [dba], hold: 30s }
      match: { statements: [DROP TABLE] }
";

struct Setup {
    cluster: PgCluster,
    gateway: Gateway,
    dba1: String,
    dba2: String,
    dev: String,
}

fn setup() -> Setup {
    let (cluster, gateway) =
        cluster_and_gateway_with(|b| b.top(RULES).postgres("  idle_timeout: 2s\n"));
    cluster.psql_admin("CREATE TABLE ledger (id int); CREATE TABLE scratch (id int)");
    let dba1 = gateway.create_key("dba1", &["dba"]);
    let dba2 = gateway.create_key("dba2", &["dba"]);
    let dev = gateway.create_key("dev", &["developers"]);
    Setup {
        cluster,
        gateway,
        dba1,
        dba2,
        dev,
    }
}

/// psql through the gateway with the admin key, started in the background.
fn psql_background(gateway: &Gateway, sql: &str) -> Child {
    psql_command(&gateway.url(&gateway.admin_key, "main"))
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql")
}

/// Waits for a pending request for `sql` to be listed to `token`; returns it.
fn pending_request(gateway: &Gateway, token: &str, sql: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = gateway.cli_as(
            token,
            &["approvals", "list", "--state", "pending", "--json"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let list: Value = serde_json::from_slice(&out.stdout).expect("json");
        if let Some(r) = list
            .as_array()
            .and_then(|l| l.iter().find(|r| r["statement"] == sql))
        {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no pending request for {sql}: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The id of the pending request for `sql`, once it is listed.
fn pending_id(gateway: &Gateway, token: &str, sql: &str) -> String {
    pending_request(gateway, token, sql)["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

fn count(cluster: &PgCluster, table: &str) -> String {
    cluster
        .psql_admin(&format!("SELECT count(*) FROM {table}"))
        .trim()
        .to_owned()
}

fn events(gateway: &Gateway, kind: &str, id: &str) -> Vec<Value> {
    gateway
        .events_of_kind(kind)
        .into_iter()
        .filter(|e| e["what"]["resource"] == id)
        .collect()
}

#[test]
fn a_held_statement_runs_when_another_person_approves_it() {
    let s = setup();
    let sql = "INSERT INTO ledger VALUES (1)";
    let psql = psql_background(&s.gateway, sql);
    let request = pending_request(&s.gateway, &s.dba1, sql);
    let id = request["id"].as_str().unwrap().to_owned();
    // Approvers see what they approve.
    assert_eq!(request["rule"], "ledger-writes-need-approval");
    assert_eq!(
        request["reason"],
        "writes to the ledger need a second person"
    );
    assert_eq!(request["connection"], "main");
    assert_eq!(request["requester"]["principal"], "key:bootstrap-admin");
    assert_eq!(request["effect"]["kind"], "write");
    assert_eq!(
        request["effect"]["tables_written"],
        serde_json::json!(["ledger"])
    );
    // Longer than the 2 s idle timeout: a held session is not idle.
    std::thread::sleep(Duration::from_secs(3));

    // The requester is an admin, and still may not approve its own request.
    let own = s.gateway.cli(&["approvals", "approve", &id]);
    assert!(!own.status.success());
    assert!(
        text(&own.stderr).contains("own request"),
        "{}",
        text(&own.stderr)
    );
    // Someone outside the approver groups may not either.
    let dev = s.gateway.cli_as(&s.dev, &["approvals", "approve", &id]);
    assert!(!dev.status.success());

    let ok = s.gateway.cli_as(
        &s.dba1,
        &["approvals", "approve", &id, "--comment", "checked"],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let out = psql.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "INSERT 0 1");
    assert_eq!(count(&s.cluster, "ledger"), "1");

    // The record: requested, approved by whom, executed, and the statement names the request.
    assert_eq!(events(&s.gateway, "approval.requested", &id).len(), 1);
    let approved = events(&s.gateway, "approval.approved", &id);
    assert_eq!(approved[0]["who"]["subject"], "key:dba1");
    assert_eq!(approved[0]["what"]["detail"]["comment"], "checked");
    assert_eq!(events(&s.gateway, "approval.executed", &id).len(), 1);
    let stmt = s.gateway.wait_for_statement(sql);
    assert_eq!(stmt["what"]["detail"]["approval"], id.as_str());
    assert_eq!(
        stmt["what"]["detail"]["approved_by"],
        serde_json::json!(["key:dba1"])
    );
    assert_eq!(stmt["outcome"]["status"], "success");
    s.gateway.assert_audit_verifies();
}

#[test]
fn denied_timed_out_and_re_run_once_after_approval() {
    let s = setup();
    // Denied: the caller sees who denied it and why; nothing ran.
    let sql = "INSERT INTO ledger VALUES (2)";
    let psql = psql_background(&s.gateway, sql);
    let id = pending_id(&s.gateway, &s.dba1, sql);
    let deny = s.gateway.cli_as(
        &s.dba2,
        &["approvals", "deny", &id, "--reason", "not during close"],
    );
    assert!(deny.status.success(), "{}", text(&deny.stderr));
    let out = psql.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("42501") && stderr.contains(&id) && stderr.contains("not during close"),
        "{stderr}"
    );
    assert_eq!(count(&s.cluster, "ledger"), "0");
    let again = s.gateway.cli_as(&s.dba1, &["approvals", "approve", &id]);
    assert!(!again.status.success(), "a denial is final");

    // Timed out: the error names the request and how to get it approved.
    let sql = "INSERT INTO ledger VALUES (3)";
    let out = s.gateway.psql_args("main", &["-c", sql]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    let id = stderr
        .split_whitespace()
        .find(|w| w.starts_with("apr_"))
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
        .unwrap_or_else(|| panic!("the error names the request: {stderr}"))
        .to_owned();
    assert!(stderr.contains("gatehouse approvals approve"), "{stderr}");
    assert_eq!(count(&s.cluster, "ledger"), "0");

    // Approved afterwards: the same statement, same identity, same connection runs once.
    let ok = s.gateway.cli_as(&s.dba1, &["approvals", "approve", &id]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(s.gateway.psql("main", sql).trim(), "INSERT 0 1");
    assert_eq!(count(&s.cluster, "ledger"), "1");
    // A different statement is not covered by it.
    let other = s
        .gateway
        .psql_args("main", &["-c", "INSERT INTO ledger VALUES (4)"]);
    assert!(!other.status.success());
    // And the approval is used up: the same statement is held again (and times out).
    let second = s.gateway.psql_args("main", &["-c", sql]);
    assert!(!second.status.success());
    assert!(
        !text(&second.stderr).contains(&id),
        "a new request: {}",
        text(&second.stderr)
    );
    assert_eq!(count(&s.cluster, "ledger"), "1");
    assert_eq!(events(&s.gateway, "approval.executed", &id).len(), 1);
    s.gateway.assert_audit_verifies();
}

#[test]
fn two_of_n_approvals_from_the_named_group() {
    let s = setup();
    let sql = "DROP TABLE scratch";
    let psql = psql_background(&s.gateway, sql);
    let id = pending_id(&s.gateway, &s.dba1, sql);
    let first = s.gateway.cli_as(&s.dba1, &["approvals", "approve", &id]);
    assert!(
        text(&first.stderr).contains("pending (1/2"),
        "{}",
        text(&first.stderr)
    );
    let twice = s.gateway.cli_as(&s.dba1, &["approvals", "approve", &id]);
    assert!(!twice.status.success());
    assert!(
        text(&twice.stderr).contains("already"),
        "{}",
        text(&twice.stderr)
    );
    // Still held after one approval.
    std::thread::sleep(Duration::from_millis(500));
    assert!(s
        .cluster
        .psql_admin("SELECT to_regclass('scratch') IS NOT NULL")
        .contains('t'));
    let second = s.gateway.cli_as(&s.dba2, &["approvals", "approve", &id]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let out = psql.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s
        .cluster
        .psql_admin("SELECT to_regclass('scratch') IS NULL")
        .contains('t'));
}

#[test]
fn cancel_and_disconnect_end_a_hold() {
    let s = setup();
    runtime().block_on(async {
        let (client, _conn) = s.gateway.main_client().await;
        let token = client.cancel_token();
        let held = tokio::spawn(async move {
            let result = client.execute("INSERT INTO ledger VALUES (5)", &[]).await;
            (client, result)
        });
        let dba1 = s.dba1.clone();
        let gateway = &s.gateway;
        let id = tokio::task::block_in_place(|| {
            pending_id(gateway, &dba1, "INSERT INTO ledger VALUES (5)")
        });
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let (client, result) = held.await.unwrap();
        let err = result.unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
        // The session goes on.
        let row = client.query_one("SELECT 7::int", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 7);
        let cancelled = tokio::task::block_in_place(|| {
            s.gateway.wait_for_event("approval.cancelled", |e| {
                e["kind"] == "approval.cancelled" && e["what"]["resource"] == id.as_str()
            })
        });
        assert_eq!(cancelled["what"]["detail"]["state"], "cancelled");
    });

    // A client that leaves abandons its request.
    let mut psql = psql_background(&s.gateway, "INSERT INTO ledger VALUES (6)");
    let id = pending_id(&s.gateway, &s.dba1, "INSERT INTO ledger VALUES (6)");
    psql.kill().unwrap();
    let _ = psql.wait();
    s.gateway.wait_for_event("approval.abandoned", |e| {
        e["kind"] == "approval.abandoned" && e["what"]["resource"] == id.as_str()
    });
    let late = s.gateway.cli_as(&s.dba1, &["approvals", "approve", &id]);
    assert!(
        !late.status.success(),
        "an abandoned request cannot be approved"
    );
    assert_eq!(count(&s.cluster, "ledger"), "0");
}

#[test]
fn a_pending_request_survives_a_gateway_crash_and_restart() {
    let mut s = setup();
    let sql = "INSERT INTO ledger VALUES (8)";
    let out = s.gateway.psql_args("main", &["-c", sql]);
    assert!(!out.status.success(), "held, then timed out");
    let id = pending_id(&s.gateway, &s.dba1, sql);
    // A crash, not a clean stop: the request was stored before the statement was held.
    s.gateway.kill_hard();
    s.gateway.restart();
    let ok = s.gateway.cli_as(&s.dba1, &["approvals", "approve", &id]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(s.gateway.psql("main", sql).trim(), "INSERT 0 1");
    assert_eq!(count(&s.cluster, "ledger"), "1");
    s.gateway.assert_audit_verifies();
}

/// The test webhook receiver (`tests/webhook-receiver/receiver.py`), killed on drop.
struct Receiver {
    child: Child,
    port: u16,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(secret: &str) -> Receiver {
        use std::io::BufRead as _;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("received.jsonl");
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/webhook-receiver/receiver.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .args(["--port", "0", "--fail-first", "--out"])
            .arg(&out)
            .env("WEBHOOK_SECRET", secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .expect("READY <port>");
        Receiver {
            child,
            port,
            out,
            _dir: dir,
        }
    }

    /// Waits until a received request satisfies `pred`.
    fn wait_for(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            if let Some(v) = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| pred(v))
            {
                return v;
            }
            assert!(Instant::now() < deadline, "not received; got:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn approval_requests_are_announced_to_signed_and_slack_webhooks_with_retries() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let receiver = Receiver::start(secret);
    let (cluster, gateway) = cluster_and_gateway_with(|b| {
        b.top(RULES).env("GH_WEBHOOK_SECRET", secret).top(&format!(
            "notifications:
  webhooks:
    - name: siem
      url: http://127.0.0.1:{port}/standard
      format: standard
      secret: ${{env:GH_WEBHOOK_SECRET}}
    - name: chat
      url: http://127.0.0.1:{port}/slack
      format: slack
      events: [approval.requested]
",
            port = receiver.port
        ))
    });
    cluster.psql_admin("CREATE TABLE ledger (id int)");
    let dba = gateway.create_key("dba1", &["dba"]);
    let sql = "INSERT INTO ledger VALUES (9)";
    let psql = psql_background(&gateway, sql);
    let request = pending_request(&gateway, &dba, sql);
    let id = request["id"].as_str().unwrap();

    // Each first delivery is answered 500; the retry arrives, signed and verified by the
    // receiver's own check.
    let requested = receiver
        .wait_for(|v| v["path"] == "/standard" && v["body"]["type"] == "approval.requested");
    assert_eq!(requested["verified"], true, "{requested}");
    assert_eq!(requested["body"]["data"]["id"], id);
    assert_eq!(requested["body"]["data"]["statement"], sql);
    assert_eq!(
        requested["body"]["data"]["rule"],
        "ledger-writes-need-approval"
    );
    let chat = receiver.wait_for(|v| v["path"] == "/slack");
    let message = chat["body"]["text"].as_str().unwrap();
    assert!(message.contains(sql) && message.contains(id), "{message}");

    let ok = gateway.cli_as(&dba, &["approvals", "approve", id]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(psql.wait_with_output().unwrap().status.success());
    for kind in ["approval.approved", "approval.executed"] {
        let got = receiver.wait_for(|v| v["path"] == "/standard" && v["body"]["type"] == kind);
        assert_eq!(got["verified"], true, "{got}");
    }
    // Only the events the chat webhook asked for.
    std::thread::sleep(Duration::from_secs(1));
    let all = std::fs::read_to_string(&receiver.out).unwrap();
    assert_eq!(all.lines().filter(|l| l.contains("\"/slack\"")).count(), 1);
    // The secret never reaches the gateway's log or audit log.
    let audit = std::fs::read_to_string(gateway.audit_path()).unwrap();
    assert!(!audit.contains("MfKQ9r8G") && !gateway.log().contains("MfKQ9r8G"));
}

#[test]
fn time_bound_access_lets_a_caller_in_until_it_ends_and_rules_can_require_it() {
    let cluster = PgCluster::start();
    let gateway = Gateway::builder()
        .main_connection(&cluster)
        .raw_connection(&format!(
            "  prod:
    protocol: postgres
    upstream:
      host: 127.0.0.1
      port: {}
      database: postgres
      user: postgres
      password: ${{env:GH_TEST_PW_MAIN}}
      tls: {{ mode: disable }}
    allow:
      groups: [dba]
    grants: {{ approvers: [dba], max_duration: 1h }}
    rules:
      - name: writes-with-a-grant
        action: allow
        match: {{ grant: true, kinds: [write] }}
      - name: no-standing-writes
        action: block
        reason: writes on prod need a time-bound grant
        match: {{ kinds: [write] }}
",
            cluster.port
        ))
        .start();
    cluster.psql_admin("CREATE TABLE incidents (id int)");
    let dba = gateway.create_key("dba1", &["dba"]);
    let dev = gateway.create_key("dev", &["developers"]);

    // No standing access.
    let out = gateway.psql_raw(&dev, "prod", &["-c", "SELECT 1"]);
    assert!(!out.status.success());

    // Asked for, with a reason; the requester cannot grant it to itself.
    let asked = gateway.cli_as(
        &dev,
        &[
            "access",
            "request",
            "prod",
            "--for",
            "5s",
            "--reason",
            "incident 42",
        ],
    );
    assert!(asked.status.success(), "{}", text(&asked.stderr));
    let id = text(&asked.stdout).trim().to_owned();
    assert!(id.starts_with("apr_"), "{id}");
    let own = gateway.cli_as(&dev, &["approvals", "approve", &id]);
    assert!(!own.status.success());
    let too_long = gateway.cli_as(
        &dev,
        &["access", "request", "prod", "--for", "2h", "--reason", "x"],
    );
    assert!(!too_long.status.success(), "over grants.max_duration");
    let ok = gateway.cli_as(&dba, &["approvals", "approve", &id]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let listed = gateway.cli_as(&dev, &["access", "list"]);
    assert!(text(&listed.stdout).contains(&id) && text(&listed.stdout).contains("approved"));

    runtime().block_on(async {
        let (client, conn) = gateway.pg_client(&dev, "prod").await;
        // Writes are allowed with the grant; the same write without one is blocked.
        client
            .execute("INSERT INTO incidents VALUES (42)", &[])
            .await
            .unwrap();
        let out = tokio::task::block_in_place(|| {
            gateway.psql_raw(&dba, "prod", &["-c", "INSERT INTO incidents VALUES (1)"])
        });
        assert!(
            text(&out.stderr).contains("no-standing-writes"),
            "{}",
            text(&out.stderr)
        );
        // The granted session ends with the grant.
        let ended = tokio::time::timeout(Duration::from_secs(15), conn).await;
        assert!(ended.is_ok(), "the session outlived its grant");
        assert!(client.query_one("SELECT 1", &[]).await.is_err());
    });
    let end = gateway.wait_for_event("session.end", |e| {
        e["kind"] == "session.end" && e["what"]["detail"]["cause"] == "grant_expired"
    });
    assert_eq!(end["who"]["subject"], "key:dev");
    let start = gateway
        .events_of_kind("session.start")
        .into_iter()
        .find(|e| e["session"] == end["session"])
        .unwrap();
    assert_eq!(start["what"]["detail"]["grant"]["id"], id.as_str());
    // And no new session once it has ended.
    let out = gateway.psql_raw(&dev, "prod", &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert_eq!(
        cluster.psql_admin("SELECT count(*) FROM incidents").trim(),
        "1"
    );
    gateway.assert_audit_verifies();
}

#[test]
fn an_approval_covers_one_identity_and_what_follows_a_held_statement_waits_for_it() {
    let s = setup();
    runtime().block_on(async {
        let (client, _conn) = s.gateway.main_client().await;
        let client = std::sync::Arc::new(client);
        // Pipelined behind the held write: nothing after it overtakes it.
        let held = {
            let client = client.clone();
            tokio::spawn(async move { client.execute("INSERT INTO ledger VALUES (11)", &[]).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let behind = {
            let client = client.clone();
            tokio::spawn(async move { client.query_one("SELECT count(*) FROM ledger", &[]).await })
        };
        let id = tokio::task::block_in_place(|| {
            pending_id(&s.gateway, &s.dba1, "INSERT INTO ledger VALUES (11)")
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !behind.is_finished(),
            "a statement behind the held one ran first"
        );
        let ok = tokio::task::block_in_place(|| {
            s.gateway.cli_as(&s.dba1, &["approvals", "approve", &id])
        });
        assert!(ok.status.success(), "{}", text(&ok.stderr));
        assert_eq!(held.await.unwrap().unwrap(), 1);
        let count: i64 = behind.await.unwrap().unwrap().get(0);
        assert_eq!(count, 1, "it ran after the approved write");
    });

    // Approved for the admin key's statement: the same text from another identity is held
    // with a request of its own and does not use the approval.
    let sql = "INSERT INTO ledger VALUES (12)";
    let out = s.gateway.psql_args("main", &["-c", sql]);
    assert!(!out.status.success(), "held, then timed out");
    let id = pending_id(&s.gateway, &s.dba1, sql);
    let ok = s.gateway.cli_as(&s.dba1, &["approvals", "approve", &id]);
    assert!(ok.status.success());
    let dev_try = psql_command(&s.gateway.url(&s.dev, "main"))
        .args(["-c", sql])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !dev_try.status.success(),
        "another identity does not use the approval"
    );
    assert!(
        !text(&dev_try.stderr).contains(&id),
        "{}",
        text(&dev_try.stderr)
    );
    assert_eq!(s.gateway.psql("main", sql).trim(), "INSERT 0 1");
    assert_eq!(count(&s.cluster, "ledger"), "2");
}

#[test]
fn an_approval_binds_the_values_an_execute_runs_with_and_approvers_see_them() {
    let s = setup();
    s.cluster.psql_admin("INSERT INTO ledger VALUES (1), (2)");
    let sql = "UPDATE ledger SET id = $1 WHERE id = $2";
    runtime().block_on(async {
        let (client, _conn) = s.gateway.main_client().await;
        let stmt = client.prepare(sql).await.unwrap();
        // Held, and timed out: approvers saw the values it would run with.
        let err = client.execute(&stmt, &[&10i32, &1i32]).await.unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("42501"));
        let request = tokio::task::block_in_place(|| pending_request(&s.gateway, &s.dba1, sql));
        let params = &request["effect"]["parameters"];
        assert_eq!(params.as_array().map(Vec::len), Some(2), "{request}");
        assert!(
            params[0].as_str().unwrap().starts_with("\\x"),
            "binary int4: {params}"
        );
        let id = request["id"].as_str().unwrap().to_owned();
        let ok = tokio::task::block_in_place(|| {
            s.gateway.cli_as(&s.dba1, &["approvals", "approve", &id])
        });
        assert!(ok.status.success());
        // Other values are not covered by the approval: held again (and timed out).
        let other = client.execute(&stmt, &[&20i32, &2i32]).await;
        assert!(
            other.is_err(),
            "different values must not run on this approval"
        );
        // The approved values run once.
        assert_eq!(client.execute(&stmt, &[&10i32, &1i32]).await.unwrap(), 1);
    });
    assert_eq!(
        s.cluster
            .psql_admin("SELECT string_agg(id::text, ',' ORDER BY id) FROM ledger")
            .trim(),
        "2,10"
    );
}

#[test]
fn what_approvers_cannot_be_shown_is_not_held_but_refused() {
    let s = setup();
    // Longer than approvers are shown: refused at once, not held.
    let padded = format!("INSERT INTO ledger VALUES (1) /* {} */", "x".repeat(70_000));
    let started = Instant::now();
    let out = s.gateway.psql_args("main", &["-c", &padded]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot be approved"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused, not held"
    );
    assert_eq!(count(&s.cluster, "ledger"), "0");
    assert!(s.gateway.events_of_kind("approval.requested").is_empty());
}

#[test]
fn a_revoked_grant_ends_its_sessions_and_a_revoked_approval_is_not_used() {
    let cluster = PgCluster::start();
    let gateway = Gateway::builder()
        .main_connection(&cluster)
        .top(RULES)
        .raw_connection(&format!(
            "  prod:
    protocol: postgres
    upstream:
      host: 127.0.0.1
      port: {}
      database: postgres
      user: postgres
      password: ${{env:GH_TEST_PW_MAIN}}
      tls: {{ mode: disable }}
    allow:
      groups: [dba]
    grants: {{ approvers: [dba], max_duration: 1h }}
",
            cluster.port
        ))
        .start();
    cluster.psql_admin("CREATE TABLE ledger (id int)");
    let dba = gateway.create_key("dba1", &["dba"]);
    let dev = gateway.create_key("dev", &["developers"]);

    let asked = gateway.cli_as(
        &dev,
        &[
            "access",
            "request",
            "prod",
            "--for",
            "1h",
            "--reason",
            "incident 7",
        ],
    );
    let grant = text(&asked.stdout).trim().to_owned();
    assert!(gateway
        .cli_as(&dba, &["approvals", "approve", &grant])
        .status
        .success());
    runtime().block_on(async {
        let (client, conn) = gateway.pg_client(&dev, "prod").await;
        client.query_one("SELECT 1", &[]).await.unwrap();
        // The developer cannot revoke, an approver can; the session ends at once.
        let own = tokio::task::block_in_place(|| {
            gateway.cli_as(&dev, &["approvals", "revoke", &grant, "--reason", "mine"])
        });
        assert!(!own.status.success());
        let revoked = tokio::task::block_in_place(|| {
            gateway.cli_as(
                &dba,
                &["approvals", "revoke", &grant, "--reason", "incident over"],
            )
        });
        assert!(revoked.status.success(), "{}", text(&revoked.stderr));
        let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
        assert!(ended.is_ok(), "the session outlived its revoked grant");
    });
    gateway.wait_for_event("session.end", |e| {
        e["kind"] == "session.end" && e["what"]["detail"]["cause"] == "grant_revoked"
    });
    assert!(!gateway
        .psql_raw(&dev, "prod", &["-c", "SELECT 1"])
        .status
        .success());

    // An approval withdrawn before it is used: the re-run is held again.
    let sql = "INSERT INTO ledger VALUES (1)";
    assert!(!gateway.psql_args("main", &["-c", sql]).status.success());
    let id = pending_id(&gateway, &dba, sql);
    assert!(gateway
        .cli_as(&dba, &["approvals", "approve", &id])
        .status
        .success());
    assert!(gateway
        .cli_as(&dba, &["approvals", "revoke", &id, "--reason", "wrong day"])
        .status
        .success());
    let again = gateway.psql_args("main", &["-c", sql]);
    assert!(!again.status.success(), "a revoked approval is not used");
    assert_eq!(
        cluster.psql_admin("SELECT count(*) FROM ledger").trim(),
        "0"
    );
    let cancelled = gateway
        .events_of_kind("approval.cancelled")
        .into_iter()
        .find(|e| e["what"]["resource"] == id.as_str())
        .expect("the revocation is recorded");
    assert_eq!(cancelled["who"]["subject"], "key:dba1");
    assert_eq!(cancelled["what"]["detail"]["reason"], "wrong day");
    gateway.assert_audit_verifies();
}
