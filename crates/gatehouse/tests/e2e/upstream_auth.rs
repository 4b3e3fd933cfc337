//! The gateway's side of the hop to the upstream: SCRAM and md5 with the password it holds,
//! upstream TLS modes and verification, clean failures, client TLS to the gateway, and that
//! held secrets never show up anywhere a client or operator can read.

use crate::harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// A held password the upstream does not accept.
const WRONG_PASSWORD: &str = "Wrong-Held-Pw-0000";

/// A connection to `tls_only` with explicit TLS settings (`ca_file` and `server_name` only
/// when given).
fn tls_only_connection(
    name: &str,
    cluster: &PgCluster,
    mode: &str,
    ca_file: Option<&Path>,
    server_name: Option<&str>,
) -> String {
    let mut tls = format!("mode: {mode}");
    if let Some(ca) = ca_file {
        tls.push_str(&format!(", ca_file: {}", ca.display()));
    }
    if let Some(sn) = server_name {
        tls.push_str(&format!(", server_name: {sn}"));
    }
    format!(
        "  {name}:\n    protocol: postgres\n    upstream:\n      host: 127.0.0.1\n      port: {port}\n      database: postgres\n      user: tls_only\n      password: ${{env:GH_TLS_ONLY_PW}}\n      tls: {{ {tls} }}\n    allow:\n      groups: [developers, gatehouse-admins]\n",
        port = cluster.port,
    )
}

/// The failed session's audit records, found by connection name.
fn upstream_failure(gateway: &Gateway, connection: &str) -> Value {
    gateway.wait_for_event("upstream failure", |e| {
        e["kind"] == "session.end"
            && e["what"]["connection"] == connection
            && e["outcome"]["status"] == "failure"
    })
}

/// The upstream's error kept in a failed session end.
fn upstream_error(end: &Value) -> &str {
    end["what"]["detail"]["upstream_error"]
        .as_str()
        .unwrap_or_default()
}

/// Asserts the client saw only the gateway's own FATAL about the target, nothing of the
/// upstream's error, with psql and with tokio-postgres.
fn assert_clean_target_failure(gateway: &Gateway, connection: &str, upstream_words: &[&str]) {
    let out = gateway.psql_args(connection, &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "FATAL:  could not connect to the target of connection \"{connection}\""
        )),
        "psql stderr: {stderr}"
    );
    for word in upstream_words {
        assert!(
            !stderr.contains(word),
            "the client must not see the upstream's error ({word:?}): {stderr}"
        );
    }
    let (severity, code, message) =
        pg_try(&gateway.conninfo(&gateway.admin_key, connection)).expect_err("connection fails");
    assert_eq!(severity, "FATAL");
    assert_eq!(code, "08001");
    assert_eq!(
        message,
        format!("could not connect to the target of connection \"{connection}\"")
    );
}

#[test]
fn scram_and_md5_upstreams_with_the_held_password() {
    let cluster = PgCluster::start();
    let gateway = Gateway::builder()
        .upstream_auth("[scram-sha-256, md5]")
        .pg_connections(
            &cluster,
            &[
                ("scram", "scram_user", Some(SCRAM_PASSWORD), "disable"),
                ("md5", "md5_user", Some(MD5_PASSWORD), "disable"),
            ],
        )
        .start();
    // The stored verifiers (and pg_hba.conf) force SCRAM for one role and md5 for the other.
    assert_eq!(
        cluster.psql_admin(
            "SELECT rolname, CASE WHEN rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram' \
             WHEN rolpassword LIKE 'md5%' THEN 'md5' END FROM pg_authid \
             WHERE rolname IN ('scram_user', 'md5_user') ORDER BY 1"
        ),
        "md5_user|md5\nscram_user|scram\n"
    );

    // The client claims user "tester"; the upstream role is the connection's.
    assert_eq!(
        gateway.psql("scram", "SELECT current_user, session_user"),
        "scram_user|scram_user\n"
    );
    assert_eq!(
        gateway.psql("md5", "SELECT current_user, session_user"),
        "md5_user|md5_user\n"
    );

    let stmts = gateway.statements();
    assert_eq!(stmts.len(), 2);
    for (e, conn) in stmts.iter().zip(["scram", "md5"]) {
        assert_eq!(e["what"]["connection"], conn);
        assert_eq!(e["who"]["claimed_user"], "tester");
        assert_eq!(e["who"]["subject"], "key:bootstrap-admin");
        assert_eq!(e["outcome"]["status"], "success");
    }
}

#[test]
fn upstream_tls_verify_full_require_and_prefer() {
    let cluster = PgCluster::start();
    let gateway = Gateway::builder()
        .pg_connections(
            &cluster,
            &[
                ("vfull", "tls_only", Some(SCRAM_PASSWORD), "verify-full"),
                ("req", "tls_only", Some(SCRAM_PASSWORD), "require"),
                ("pref", "tls_only", Some(SCRAM_PASSWORD), "prefer"),
            ],
        )
        .env("GH_TLS_ONLY_PW", SCRAM_PASSWORD)
        // The certificate is for localhost and 127.0.0.1: naming it explicitly works too.
        .raw_connection(&tls_only_connection(
            "vfull-named",
            &cluster,
            "verify-full",
            Some(&cluster.cert_file),
            Some("localhost"),
        ))
        .start();
    for conn in ["vfull", "req", "pref", "vfull-named"] {
        assert_eq!(
            gateway.psql(
                conn,
                "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ),
            "tls_only|t\n",
            "{conn}"
        );
    }
}

/// A cancel request reaches an upstream that is only reachable over verified TLS.
#[test]
fn cancel_reaches_a_tls_upstream() {
    let cluster = PgCluster::start();
    let gateway = Gateway::builder()
        .pg_connection(
            "vfull",
            &cluster,
            "tls_only",
            Some(SCRAM_PASSWORD),
            "verify-full",
        )
        .start();
    runtime().block_on(async {
        let (client, _connection) = gateway.pg_client(&gateway.admin_key, "vfull").await;
        let token = client.cancel_token();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            token.cancel_query(tokio_postgres::NoTls).await
        });
        let started = std::time::Instant::now();
        let err = client
            .simple_query("SELECT pg_sleep(20)")
            .await
            .expect_err("cancelled");
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    });
    let cancel = gateway.wait_for_event("cancel", |e| e["kind"] == "cancel");
    assert_eq!(cancel["outcome"]["status"], "success", "{cancel:#}");
    assert_eq!(cancel["what"]["connection"], "vfull");
}

#[test]
fn upstream_tls_disable_to_a_tls_only_role_fails_cleanly() {
    let cluster = PgCluster::start();
    let gateway = Gateway::builder()
        .pg_connection(
            "plain",
            &cluster,
            "tls_only",
            Some(SCRAM_PASSWORD),
            "disable",
        )
        .main_connection(&cluster)
        .start();
    assert_clean_target_failure(
        &gateway,
        "plain",
        &["pg_hba", "no encryption", "tls_only", "28000"],
    );

    let end = upstream_failure(&gateway, "plain");
    assert_eq!(
        end["outcome"]["reason"], "upstream connection failed",
        "{end:#}"
    );
    let detail = upstream_error(&end);
    assert!(
        detail.contains("pg_hba.conf") && detail.contains("no encryption"),
        "the audit keeps the upstream's reason: {end:#}"
    );
    // The caller was authenticated; the failure is the target's.
    let session = end["session"].clone();
    assert!(gateway
        .audit_events()
        .iter()
        .any(|e| e["kind"] == "auth.success" && e["session"] == session));
    // The gateway keeps serving other connections.
    assert_eq!(gateway.psql("main", "SELECT 7"), "7\n");
}

#[test]
fn upstream_tls_verify_full_checks_the_name_and_the_issuer() {
    let cluster = PgCluster::start();
    let gateway = Gateway::builder()
        .env("GH_TLS_ONLY_PW", SCRAM_PASSWORD)
        .raw_connection(&tls_only_connection(
            "wrong-name",
            &cluster,
            "verify-full",
            Some(&cluster.cert_file),
            Some("db.wrong.example"),
        ))
        .raw_connection(&tls_only_connection(
            "no-ca",
            &cluster,
            "verify-full",
            None,
            None,
        ))
        .start();

    // A name the certificate is not for; and, without the CA, the self-signed certificate is
    // not trusted.
    for (connection, upstream_words, cause) in [
        (
            "wrong-name",
            ["certificate", "TLS", "db.wrong.example"],
            "not valid for name",
        ),
        (
            "no-ca",
            ["certificate", "TLS", "UnknownIssuer"],
            "UnknownIssuer",
        ),
    ] {
        assert_clean_target_failure(&gateway, connection, &upstream_words);
        let end = upstream_failure(&gateway, connection);
        let detail = upstream_error(&end);
        assert!(
            detail.starts_with("TLS handshake with the upstream server failed")
                && detail.contains(cause),
            "{end:#}"
        );
    }
}

#[test]
fn wrong_or_missing_held_password_fails_cleanly() {
    let cluster = PgCluster::start();
    let gateway = Gateway::builder()
        .upstream_auth("[scram-sha-256, md5]")
        .pg_connections(
            &cluster,
            &[
                ("bad-scram", "scram_user", Some(WRONG_PASSWORD), "disable"),
                ("bad-md5", "md5_user", Some(WRONG_PASSWORD), "disable"),
                ("no-pw", "scram_user", None, "disable"),
            ],
        )
        .start();

    for (connection, upstream_words, cause) in [
        (
            "bad-scram",
            &["password authentication", "28P01", "scram_user"][..],
            "the upstream server refused the connection: 28P01 password authentication failed for user \"scram_user\"",
        ),
        (
            "bad-md5",
            &["password authentication", "28P01", "md5_user"],
            "the upstream server refused the connection: 28P01 password authentication failed for user \"md5_user\"",
        ),
        (
            "no-pw",
            &["password"],
            "the upstream server asked for a password and the connection has none configured",
        ),
    ] {
        assert_clean_target_failure(&gateway, connection, upstream_words);
        let end = upstream_failure(&gateway, connection);
        assert_eq!(
            end["what"]["detail"]["upstream_error"], cause,
            "{end:#}"
        );
    }
}

/// Each session that could not reach its target ends once, as a failure.
#[test]
fn an_upstream_failure_ends_the_session_once_as_a_failure() {
    // Regression: on an upstream connection failure the handshake used to record a failed
    // `session.end` and then a second one with status success.
    let cluster = PgCluster::start();
    let gateway = Gateway::builder()
        .pg_connection(
            "bad-scram",
            &cluster,
            "scram_user",
            Some(WRONG_PASSWORD),
            "disable",
        )
        .start();
    let out = gateway.psql_args("bad-scram", &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    let first = upstream_failure(&gateway, "bad-scram");
    gateway.assert_session_ended_once_as_failure(&first["session"], Duration::from_millis(300));
}

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn held_secrets_never_leak() {
    let secrets = [SUPER_PASSWORD, SCRAM_PASSWORD, MD5_PASSWORD, WRONG_PASSWORD];
    let cluster = PgCluster::start();
    let mut gateway = Gateway::builder()
        .upstream_auth("[scram-sha-256, md5]")
        .pg_connections(
            &cluster,
            &[
                ("super", "postgres", Some(SUPER_PASSWORD), "disable"),
                ("scram", "scram_user", Some(SCRAM_PASSWORD), "require"),
                ("md5", "md5_user", Some(MD5_PASSWORD), "disable"),
                ("vfull", "tls_only", Some(SCRAM_PASSWORD), "verify-full"),
                ("plain", "tls_only", Some(SCRAM_PASSWORD), "disable"),
                ("wrong", "scram_user", Some(WRONG_PASSWORD), "disable"),
            ],
        )
        .env("GH_TLS_ONLY_PW", SCRAM_PASSWORD)
        .raw_connection(&tls_only_connection(
            "wrong-name",
            &cluster,
            "verify-full",
            Some(&cluster.cert_file),
            Some("db.wrong.example"),
        ))
        // As much logging as there is.
        .env("GATEHOUSE_LOG", "trace")
        .start();

    let mut client_output = String::new();
    let mut run = |gateway: &Gateway, conn: &str, sql: &str| -> Output {
        let out = gateway.psql_args(conn, &["-c", sql]);
        client_output.push_str(&text(&out.stdout));
        client_output.push_str(&text(&out.stderr));
        out
    };
    for conn in ["super", "scram", "md5", "vfull"] {
        assert!(
            run(&gateway, conn, "SELECT current_user").status.success(),
            "{conn}"
        );
        assert!(!run(&gateway, conn, "SELECT 1/0").status.success());
    }
    for conn in ["plain", "wrong", "wrong-name"] {
        assert!(!run(&gateway, conn, "SELECT 1").status.success(), "{conn}");
    }
    // A failed client authentication too.
    let bad = gateway.psql_raw("not-a-key", "super", &["-c", "SELECT 1"]);
    client_output.push_str(&text(&bad.stderr));
    let keys = gateway.cli(&["keys", "list"]);
    client_output.push_str(&text(&keys.stdout));
    client_output.push_str(&text(&keys.stderr));
    let csv = gateway.cli(&["audit", "export", "--format", "csv"]);
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    let jsonl = gateway.cli(&["audit", "export", "--format", "jsonl"]);
    assert!(jsonl.status.success(), "{}", text(&jsonl.stderr));
    assert!(
        text(&csv.stdout).contains("SELECT current_user"),
        "the export has the statements"
    );
    gateway.stop();

    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("psql output".into(), client_output.into_bytes()),
        ("audit export csv".into(), csv.stdout),
        ("audit export jsonl".into(), jsonl.stdout),
        (
            "gateway log".into(),
            std::fs::read(&gateway.log_path).expect("log"),
        ),
        (
            "config file".into(),
            std::fs::read(gateway.config_path()).expect("config"),
        ),
    ];
    let mut files = Vec::new();
    all_files(&gateway.data_dir(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("state.db")), "{files:?}");
    assert!(
        files.iter().any(|f| f.ends_with("audit/audit.log")),
        "{files:?}"
    );
    for f in files {
        places.push((
            f.display().to_string(),
            std::fs::read(&f).expect("data file"),
        ));
    }
    let log = text(&places[3].1);
    assert!(log.contains("DEBUG"), "GATEHOUSE_LOG=trace took effect");
    assert!(
        log.contains("upstream connection failed"),
        "the log does record the failures"
    );
    for (place, bytes) in &places {
        for secret in secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret:?} found in {place}"
            );
        }
    }
}

/// The shared cluster and a gateway offering TLS to clients with a fresh self-signed
/// certificate (`extra`: more keys under `postgres:`); the certificate's directory and file.
fn tls_gateway(extra: &str) -> (PgCluster, tempfile::TempDir, PathBuf, Gateway) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("gateway.crt");
    let key = dir.path().join("gateway.key");
    write_self_signed(&cert, &key);
    let (cluster, gateway) = cluster_and_gateway_with(|b| {
        b.postgres(&format!(
            "  tls: {{ cert_file: {}, key_file: {} }}\n{extra}",
            cert.display(),
            key.display()
        ))
    });
    (cluster, dir, cert, gateway)
}

/// psql on `main` with the admin key and the URL parameters `params`.
fn psql_url(gateway: &Gateway, params: &str, sql: &str) -> Output {
    psql_command(&gateway.url_with(&gateway.admin_key, "main", params))
        .args(["-c", sql])
        .output()
        .expect("psql")
}

#[test]
fn clients_can_use_tls_to_the_gateway() {
    let (_cluster, _dir, cert, gateway) = tls_gateway("");

    let out = psql_url(&gateway, "sslmode=require", "SELECT 40 + 2");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42\n");
    let out = psql_url(&gateway, "sslmode=require", "\\conninfo");
    assert!(
        text(&out.stdout).contains("SSL connection (protocol: TLSv1."),
        "{}",
        text(&out.stdout)
    );
    // The certificate the gateway presents is the configured one (verified by libpq).
    let out = psql_url(
        &gateway,
        &format!("sslmode=verify-full&sslrootcert={}", cert.display()),
        "SELECT 'verified'",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "verified\n");
    // With the default require_tls (non_loopback), loopback plaintext still works.
    let out = psql_url(&gateway, "sslmode=disable", "SELECT 'plain'");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn require_tls_always_refuses_plaintext() {
    let (_cluster, _dir, _cert, gateway) = tls_gateway("  require_tls: always\n");

    let out = psql_url(&gateway, "sslmode=disable", "SELECT 1");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("FATAL:  TLS is required: connect with sslmode=require"),
        "{}",
        text(&out.stderr)
    );
    let (severity, code, message) =
        pg_try(&gateway.conninfo(&gateway.admin_key, "main")).expect_err("plaintext refused");
    assert_eq!(
        (severity.as_str(), code.as_str(), message.as_str()),
        (
            "FATAL",
            "28000",
            "TLS is required: connect with sslmode=require"
        )
    );

    // Audited as a protocol error, before any credential was asked for. (The harness's
    // readiness probe, a bare TCP connect, is a protocol error of its own: "closed before
    // startup".) A refusal before any session may be recorded just after the client hears it.
    let refusals = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| {
                e["kind"] == "protocol.error" && e["outcome"]["reason"] != "closed before startup"
            })
            .cloned()
            .collect()
    };
    let refusals = refusals(
        &gateway.audit_events_until(Duration::from_secs(5), |events| refusals(events).len() >= 2),
    );
    assert_eq!(refusals.len(), 2, "{refusals:#?}");
    for e in &refusals {
        assert_eq!(e["outcome"]["status"], "failure");
        assert_eq!(
            e["outcome"]["reason"],
            "TLS is required: connect with sslmode=require"
        );
        assert!(e["who"]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")));
    }
    assert!(
        !gateway
            .audit_events()
            .iter()
            .any(|e| e["kind"] == "auth.success" || e["kind"] == "auth.failure"),
        "no credential was read over plaintext"
    );

    let out = psql_url(&gateway, "sslmode=require", "SELECT 'over tls'");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "over tls\n");
}

/// A hostile endpoint posing as the upstream (a stand-in: no real server asks like this
/// unless misconfigured or impersonated). It declines TLS and asks for the password in clear
/// (or by md5); returns its port and what it received after asking.
fn password_phishing_upstream(method: i32) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut body = vec![0u8; i32::from_be_bytes(len) as usize - 4];
            let _ = s.read_exact(&mut body);
            if body.starts_with(&80_877_103i32.to_be_bytes()) {
                // SSLRequest: decline, then read the startup message.
                let _ = s.write_all(b"N");
                if s.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut body = vec![0u8; i32::from_be_bytes(len) as usize - 4];
                let _ = s.read_exact(&mut body);
            }
            let mut ask = vec![b'R'];
            let mut payload = method.to_be_bytes().to_vec();
            if method == 5 {
                payload.extend_from_slice(b"salt");
            }
            ask.extend_from_slice(&((payload.len() + 4) as i32).to_be_bytes());
            ask.extend_from_slice(&payload);
            let _ = s.write_all(&ask);
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            let _ = tx.send(got);
        }
    });
    (port, rx)
}

#[test]
fn the_held_password_is_never_sent_by_a_method_the_connection_does_not_allow() {
    let (clear_port, clear_rx) = password_phishing_upstream(3);
    let (md5_port, md5_rx) = password_phishing_upstream(5);
    let connection = |name: &str, port: u16| {
        format!(
            "  {name}:\n    protocol: postgres\n    upstream:\n      host: 127.0.0.1\n      port: {port}\n      database: postgres\n      user: postgres\n      password: ${{env:GH_PHISH_PW}}\n      tls: {{ mode: prefer }}\n    allow:\n      groups: [gatehouse-admins]\n"
        )
    };
    let gateway = Gateway::builder()
        .env("GH_PHISH_PW", SUPER_PASSWORD)
        .raw_connection(&connection("clear", clear_port))
        .raw_connection(&connection("md5ask", md5_port))
        .start();
    for (name, rx, method) in [("clear", &clear_rx, "password"), ("md5ask", &md5_rx, "md5")] {
        assert_clean_target_failure(&gateway, name, &[]);
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the endpoint saw a connection");
        assert!(
            got.is_empty(),
            "{name}: the endpoint received {} bytes after asking",
            got.len()
        );
        let end = upstream_failure(&gateway, name);
        let error = upstream_error(&end);
        assert!(
            error.contains(&format!("asked for the password by {method}"))
                && error.contains("was not sent"),
            "{end:#}"
        );
    }
    let log = gateway.log();
    assert!(!log.contains(SUPER_PASSWORD));
}
