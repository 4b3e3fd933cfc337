//! Who the caller is: API keys (create, use, revoke, list), refusals that reveal nothing, OIDC
//! tokens from a real identity provider with delegation chains, forged and stale tokens, and
//! the admin API's authentication.

use crate::harness::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn auth_failures(gateway: &Gateway) -> Vec<Value> {
    gateway.events_of_kind("auth.failure")
}

/// psql with `credential` on `connection`: must fail with exactly `FATAL:  {message}`.
fn assert_psql_refused(gateway: &Gateway, credential: &str, connection: &str, message: &str) {
    let out = gateway.psql_raw(credential, connection, &["-c", "SELECT 1"]);
    assert!(!out.status.success(), "{connection}: psql succeeded");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("FATAL:  {message}\n")),
        "{connection}: expected FATAL {message:?}, got: {stderr}"
    );
}

/// The most recent auth.failure, which must be for `connection` with `reason`.
fn assert_last_failure(gateway: &Gateway, connection: &str, reason: &str) -> Value {
    let last = auth_failures(gateway).pop().expect("an auth.failure event");
    assert_eq!(last["outcome"]["status"], "failure", "{last:#}");
    assert_eq!(last["outcome"]["reason"], reason, "{last:#}");
    assert_eq!(last["what"]["connection"], connection, "{last:#}");
    assert_eq!(last["what"]["protocol"], "postgres", "{last:#}");
    assert_eq!(last["who"]["claimed_user"], "tester", "{last:#}");
    last
}

// ---------------------------------------------------------------------------------------------
// API keys
// ---------------------------------------------------------------------------------------------

#[test]
fn api_key_create_use_and_revoke() {
    let (_cluster, gateway) = cluster_and_gateway();
    let key = gateway.create_key("ci", &["developers"]);
    assert!(
        key.starts_with("gh_") && key.len() == 46,
        "key shape: {key:?}"
    );

    let out = gateway.psql_raw(&key, "main", &["-c", "SELECT current_user"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stmt = gateway.statements().into_iter().next().expect("statement");
    assert_eq!(stmt["who"]["subject"], "key:ci");
    assert_eq!(stmt["who"]["method"], "api_key");
    assert_eq!(stmt["who"]["groups"], serde_json::json!(["developers"]));

    // A session opened before the revocation.
    let rt = current_thread_runtime();
    let open = rt.block_on(async {
        let (client, _connection) = gateway.pg_client(&key, "main").await;
        client.simple_query("SELECT 'before'").await.expect("query");
        client
    });

    let out = gateway.cli(&["keys", "revoke", "ci"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), "revoked ci");
    let revoked = gateway.wait_for_event("key.revoked", |e| e["kind"] == "key.revoked");
    assert_eq!(revoked["what"]["resource"], "key:ci");
    assert_eq!(revoked["who"]["subject"], "key:bootstrap-admin");

    // New connections are refused at once, with the generic message.
    assert_psql_refused(&gateway, &key, "main", "authentication failed");
    assert_eq!(
        pg_try(&gateway.conninfo(&key, "main")),
        Err((
            "FATAL".into(),
            "28P01".into(),
            "authentication failed".into()
        ))
    );
    let failure = assert_last_failure(&gateway, "main", "API key revoked");
    assert_eq!(failure["who"]["method"], "none");
    assert!(failure["who"].get("subject").is_none(), "{failure:#}");

    // A session opened with the key ends too: its client is told why, and the end is
    // recorded with the cause.
    rt.block_on(async {
        let err = open
            .simple_query("SELECT 'after revocation'")
            .await
            .expect_err("the open session was ended");
        if let Some(db) = err.as_db_error() {
            assert_eq!(db.code().code(), "28000", "{db:?}");
            assert!(db.message().contains("revoked"), "{db:?}");
        }
    });
    let end = gateway.wait_for_event("the revoked key's session ends", |e| {
        e["kind"] == "session.end"
            && e["who"]["subject"] == "key:ci"
            && e["what"]["detail"]["cause"] == "credential_revoked"
    });
    assert_eq!(end["outcome"]["reason"], "credential revoked");
    let revoked = gateway.events_of_kind("key.revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        revoked[0]["what"]["detail"]["ends_sessions"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert!(
        revoked[0]["seq"].as_u64() < end["seq"].as_u64(),
        "the revocation is recorded before it takes effect"
    );

    let list = gateway.cli(&["keys", "list"]);
    let line = text(&list.stdout)
        .lines()
        .find(|l| l.starts_with("ci "))
        .map(str::to_owned)
        .expect("ci listed");
    assert!(!line.trim_end().ends_with(" -"), "shown as revoked: {line}");
}

#[test]
fn not_permitted_and_unknown_connection_look_the_same() {
    let (_cluster, gateway) = cluster_and_gateway();
    let outsider = gateway.create_key("outsider", &["contractors"]);

    let not_permitted = pg_try(&gateway.conninfo(&outsider, "main")).expect_err("refused");
    let unknown = pg_try(&gateway.conninfo(&outsider, "ledger-prod")).expect_err("refused");
    let unknown_admin =
        pg_try(&gateway.conninfo(&gateway.admin_key, "ledger-prod")).expect_err("refused");
    // Same severity, code and text; the text only echoes the name the client asked for.
    let normalise = |(sev, code, msg): (String, String, String), name: &str| {
        (sev, code, msg.replace(&format!("\"{name}\""), "\"NAME\""))
    };
    let expected = (
        "FATAL".to_owned(),
        "28000".to_owned(),
        "connection \"NAME\" is not available to this identity".to_owned(),
    );
    assert_eq!(normalise(not_permitted, "main"), expected);
    assert_eq!(normalise(unknown, "ledger-prod"), expected);
    assert_eq!(normalise(unknown_admin, "ledger-prod"), expected);
    assert_psql_refused(
        &gateway,
        &outsider,
        "main",
        "connection \"main\" is not available to this identity",
    );

    // The audit log tells the two apart.
    let failures = auth_failures(&gateway);
    let reasons: Vec<(&str, &str, &str)> = failures
        .iter()
        .map(|e| {
            (
                e["what"]["connection"].as_str().unwrap_or(""),
                e["who"]["subject"].as_str().unwrap_or(""),
                e["outcome"]["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "main",
                "key:outsider",
                "identity not permitted on this connection"
            ),
            ("ledger-prod", "key:outsider", "no such connection"),
            ("ledger-prod", "key:bootstrap-admin", "no such connection"),
            (
                "main",
                "key:outsider",
                "identity not permitted on this connection"
            ),
        ]
    );

    // A bad credential on an unknown connection learns nothing about the connection either.
    assert_psql_refused(&gateway, "hunter2", "ledger-prod", "authentication failed");
    assert_last_failure(&gateway, "ledger-prod", "unrecognised credential");
}

#[test]
fn garbage_and_empty_credentials_are_refused_and_audited() {
    let (_cluster, gateway) = cluster_and_gateway();
    let unknown_key = format!("gh_{}", "A".repeat(43));
    let cases: [(&str, &str); 4] = [
        ("hunter2-Garbage-Credential", "unrecognised credential"),
        (&unknown_key, "unknown API key"),
        (
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
            "OIDC tokens are not enabled",
        ),
        ("", "unrecognised credential"),
    ];
    for (credential, reason) in cases {
        if !credential.is_empty() {
            // (libpq never sends an empty password; tokio-postgres does.)
            assert_psql_refused(&gateway, credential, "main", "authentication failed");
            assert_last_failure(&gateway, "main", reason);
        }
        assert_eq!(
            pg_try(&gateway.conninfo(credential, "main")),
            Err((
                "FATAL".into(),
                "28P01".into(),
                "authentication failed".into()
            )),
            "{credential:?}"
        );
        let failure = assert_last_failure(&gateway, "main", reason);
        assert_eq!(failure["who"]["method"], "none");
    }
    // The presented credentials are never written down.
    let audit = std::fs::read_to_string(gateway.audit_path()).unwrap();
    let log = gateway.log();
    for (credential, _) in &cases[..3] {
        assert!(!audit.contains(credential), "{credential} in the audit log");
        assert!(!log.contains(credential), "{credential} in the gateway log");
    }
    assert!(!gateway
        .audit_events()
        .iter()
        .any(|e| e["kind"] == "session.start"));
}

// ---------------------------------------------------------------------------------------------
// Admin API and key listing
// ---------------------------------------------------------------------------------------------

fn metric_value(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn admin_api_health_metrics_and_authorisation() {
    let (_cluster, gateway) = cluster_and_gateway();
    let (status, _, body) = gateway.http("/healthz", None);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ok"
    );

    // Some traffic: two statements (one failing) and one failed authentication.
    gateway.psql("main", "SELECT 1");
    let out = gateway.psql_args("main", &["-c", "SELECT 1/0"]);
    assert!(!out.status.success());
    assert_psql_refused(&gateway, "wrong", "main", "authentication failed");

    let (status, head, metrics) = gateway.http("/metrics", None);
    assert_eq!(status, 200);
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    for (metric, value) in [
        (
            "gatehouse_statements_total{protocol=\"postgres\",classification=\"read\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "gatehouse_statements_total{protocol=\"postgres\",classification=\"read\",outcome=\"error\"}",
            1.0,
        ),
        ("gatehouse_auth_failures_total{protocol=\"postgres\"}", 1.0),
        ("gatehouse_statement_duration_seconds_count", 2.0),
    ] {
        assert_eq!(metric_value(&metrics, metric), value, "{metric}: {metrics}");
    }
    assert!(
        metrics.contains("gatehouse_statement_duration_seconds_bucket{le="),
        "{metrics}"
    );
    assert!(metric_value(&metrics, "gatehouse_statement_duration_seconds_sum") > 0.0);

    // /api requires a credential, and the admin role for keys.
    let (status, head, body) = gateway.http("/api/v1/keys", None);
    assert_eq!(status, 401);
    assert!(
        head.to_lowercase().contains("www-authenticate: bearer"),
        "{head}"
    );
    let json: Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(json["error"]["code"], "unauthenticated");
    assert!(json["error"]["message"].is_string());

    let (status, _, body) = gateway.http("/api/v1/keys", Some("gh_not-a-real-key"));
    assert_eq!(status, 401, "{body}");

    let developer = gateway.create_key("dev", &["developers"]);
    let (status, _, body) = gateway.http("/api/v1/keys", Some(&developer));
    assert_eq!(status, 403, "{body}");
    let json: Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(json["error"]["code"], "forbidden");
    let (status, _, body) = gateway.http("/api/v1/whoami", Some(&developer));
    assert_eq!(status, 200);
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (me["subject"].as_str(), me["admin"].as_bool()),
        (Some("key:dev"), Some(false))
    );

    let (status, _, body) = gateway.http("/api/v1/keys", Some(&gateway.admin_key));
    assert_eq!(status, 200);
    let keys: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert!(
        names.contains(&"dev") && names.contains(&"bootstrap-admin"),
        "{names:?}"
    );

    // Each call is audited.
    let events = gateway.audit_events();
    let admin_failures: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "auth.failure" && e["what"]["protocol"] == "admin-api")
        .collect();
    assert_eq!(admin_failures.len(), 2, "{admin_failures:#?}");
    assert_eq!(
        admin_failures[0]["outcome"]["reason"],
        "missing bearer credential"
    );
    let forbidden = events
        .iter()
        .find(|e| {
            e["kind"] == "admin.request"
                && e["who"]["subject"] == "key:dev"
                && e["what"]["resource"] == "GET /api/v1/keys"
        })
        .expect("the forbidden request is audited");
    assert_eq!(forbidden["outcome"]["status"], "failure");
    assert_eq!(forbidden["outcome"]["code"], "403");
}

#[test]
fn key_material_is_shown_once_and_never_listed_or_logged() {
    let (_cluster, gateway) = cluster_and_gateway();
    let ci = gateway.create_key("ci", &["developers"]);
    let ops = gateway.create_key("ops-bot", &["developers", "gatehouse-admins"]);
    assert_ne!(ci, ops);
    // Use both, so they pass through authentication and the session index.
    for key in [&ci, &ops] {
        let out = gateway.psql_raw(key, "main", &["-c", "SELECT 1"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    let list = gateway.cli(&["keys", "list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let listing = text(&list.stdout);
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"))
            .to_owned()
    };
    assert!(line("ci").contains("developers"), "{listing}");
    assert!(
        line("ops-bot").contains("developers,gatehouse-admins"),
        "{listing}"
    );
    assert!(
        line("bootstrap-admin").contains("gatehouse-admins"),
        "{listing}"
    );
    assert!(
        line("ci").contains(&ci[..7]),
        "the short prefix identifies the key: {listing}"
    );

    let sessions = gateway.cli(&["sessions", "list"]);
    let mut places: Vec<(&str, String)> = vec![
        ("keys list", listing.clone()),
        ("keys list stderr", text(&list.stderr)),
        ("sessions list", text(&sessions.stdout)),
        (
            "audit log",
            std::fs::read_to_string(gateway.audit_path()).unwrap(),
        ),
        ("gateway log", gateway.log()),
    ];
    let admin_json = gateway.http("/api/v1/keys", Some(&gateway.admin_key)).2;
    places.push(("GET /api/v1/keys", admin_json));
    let state = std::fs::read(gateway.data_dir().join("state.db")).unwrap();
    for (label, key) in [
        ("ci", &ci),
        ("ops-bot", &ops),
        ("bootstrap-admin", &gateway.admin_key),
    ] {
        for (place, content) in &places {
            assert!(
                !content.contains(key.as_str()),
                "key {label} appears in {place}"
            );
        }
        assert!(
            !state.windows(key.len()).any(|w| w == key.as_bytes()),
            "key {label} stored in state.db"
        );
        // At most the 7-character prefix is ever shown.
        assert!(
            !listing.contains(&key[..12]),
            "more than the prefix of {label} listed"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// OIDC with a real identity provider
// ---------------------------------------------------------------------------------------------

/// The test OIDC provider (`tests/oidc-issuer`), killed by its own pid when dropped.
struct Issuer {
    child: Child,
    url: String,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_issuer() -> Issuer {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc-issuer");
    if !dir.join("node_modules/oidc-provider").is_dir() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("npm ci --prefix tests/oidc-issuer (Node.js 20+ is needed)");
        assert!(out.status.success(), "npm ci: {}", text(&out.stderr));
    }
    let mut child = Command::new("node")
        .args(["server.mjs", "--port", "0"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("READY ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the OIDC issuer prints READY");
    Issuer { child, url }
}

/// An access token from the provider (client_credentials, HTTP Basic `<client>:<client>-secret`).
fn token(issuer: &Issuer, client: &str, resource: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "10",
            "-u",
            &format!("{client}:{client}-secret"),
        ])
        .args(["-d", "grant_type=client_credentials", "--data-urlencode"])
        .arg(format!("resource={resource}"))
        .arg(format!("{}/token", issuer.url))
        .output()
        .expect("curl");
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("token response: {}{}", text(&out.stdout), text(&out.stderr)));
    json["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token: {json}"))
        .to_owned()
}

/// The OIDC provider, the cluster, and a gateway trusting the provider's tokens with an
/// `analytics` connection open to the `analysts` group.
fn oidc_gateway() -> (Issuer, PgCluster, Gateway) {
    let issuer = start_issuer();
    let cluster = PgCluster::start();
    let gateway = trusting(Gateway::builder(), &issuer)
        .env("GH_ANALYTICS_PW", SUPER_PASSWORD)
        .raw_connection(&format!(
            "  analytics:\n    protocol: postgres\n    upstream:\n      host: 127.0.0.1\n      port: {}\n      database: postgres\n      user: postgres\n      password: ${{env:GH_ANALYTICS_PW}}\n      tls: {{ mode: disable }}\n    allow:\n      groups: [analysts]\n",
            cluster.port
        ))
        .start();
    (issuer, cluster, gateway)
}

/// `builder` with API keys and the test issuer's tokens accepted (no clock skew).
fn trusting(builder: GatewayBuilder, issuer: &Issuer) -> GatewayBuilder {
    builder.top(&format!(
        "auth:\n  api_keys: {{ enabled: true }}\n  oidc:\n    - issuer: {}\n      audiences: [gatehouse]\n      clock_skew: 0s\n",
        issuer.url
    ))
}

fn jwt_parts(token: &str) -> (Value, Value, String) {
    let mut parts = token.split('.');
    let header = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    let payload = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&header).unwrap(),
        serde_json::from_slice(&payload).unwrap(),
        parts.next().unwrap().to_owned(),
    )
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[test]
fn oidc_tokens_with_delegation_chains_are_recorded() {
    let (issuer, _cluster, gateway) = oidc_gateway();

    let agent = token(&issuer, "agent-7", "urn:gatehouse");
    let out = gateway.psql_raw(&agent, "analytics", &["-c", "SELECT 'as agent-7'"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        gateway.log()
    );
    assert_eq!(text(&out.stdout), "as agent-7\n");

    let nested = token(&issuer, "sub-agent-3", "urn:gatehouse");
    let out = gateway.psql_raw(&nested, "analytics", &["-c", "SELECT 'as sub-agent-3'"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let stmt = |sql: &str| {
        gateway
            .statements_with_text(sql)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no statement record for {sql}"))
    };
    let first = stmt("SELECT 'as agent-7'");
    assert_eq!(first["who"]["subject"], "alice@example.com");
    assert_eq!(
        first["who"]["actors"],
        serde_json::json!([{ "subject": "agent-7" }])
    );
    assert_eq!(first["who"]["issuer"], issuer.url.as_str());
    assert_eq!(first["who"]["method"], "oidc");
    assert_eq!(first["who"]["groups"], serde_json::json!(["analysts"]));
    let second = stmt("SELECT 'as sub-agent-3'");
    assert_eq!(second["who"]["subject"], "alice@example.com");
    assert_eq!(
        second["who"]["actors"],
        serde_json::json!([
            { "subject": "sub-agent-3" },
            { "subject": "agent-7", "issuer": "https://agents.example.com" }
        ]),
        "the whole chain, nearest actor first"
    );
    // The session's start carries the same identity.
    let start = gateway
        .audit_events()
        .into_iter()
        .find(|e| e["kind"] == "session.start" && e["session"] == second["session"])
        .expect("session.start");
    assert_eq!(start["who"]["actors"], second["who"]["actors"]);

    // Tokens never reach the audit log or the log.
    let audit = std::fs::read_to_string(gateway.audit_path()).unwrap();
    let signature = agent.rsplit('.').next().unwrap();
    assert!(!audit.contains(signature) && !gateway.log().contains(signature));
}

#[test]
fn forged_stale_and_foreign_tokens_are_refused() {
    let (issuer, _cluster, gateway) = oidc_gateway();
    // Fetched first: it expires one second after it is issued.
    let short_lived = token(&issuer, "short-lived", "urn:gatehouse");
    let started = std::time::Instant::now();
    let good = token(&issuer, "agent-7", "urn:gatehouse");
    let (header, payload, signature) = jwt_parts(&good);
    let (h, p, _) = {
        let mut it = good.split('.');
        (
            it.next().unwrap().to_owned(),
            it.next().unwrap().to_owned(),
            it.next(),
        )
    };

    // A private key the provider never published.
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("rogue.pem");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem_path)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rogue =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&pem_path).unwrap()).unwrap();
    let sign = |kid: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&h, &payload, &rogue).unwrap()
    };
    let real_kid = header["kid"]
        .as_str()
        .expect("the provider's tokens carry a kid")
        .to_owned();

    let mut tampered = payload.clone();
    tampered["sub"] = "mallory@example.com".into();
    let mut none_header = header.clone();
    none_header["alg"] = "none".into();
    none_header.as_object_mut().unwrap().remove("kid");

    let mut cases: Vec<(&str, String, &str)> = vec![
        (
            "other audience",
            token(&issuer, "agent-7", "urn:other-api"),
            "audience not accepted",
        ),
        (
            "tampered payload",
            format!("{h}.{}.{signature}", b64json(&tampered)),
            "invalid signature",
        ),
        (
            "alg none",
            format!("{}.{p}.", b64json(&none_header)),
            "algorithm not allowed: none",
        ),
        (
            "unknown kid",
            sign("rogue-key-not-in-jwks"),
            "unknown signing key",
        ),
        ("known kid, wrong key", sign(&real_kid), "invalid signature"),
        (
            "tampered signature",
            format!("{h}.{p}.{}", flip_first_char(&signature)),
            "invalid signature",
        ),
        (
            "wrong issuer",
            {
                let mut foreign = payload.clone();
                foreign["iss"] = "https://idp.attacker.example".into();
                let mut fh = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
                fh.kid = Some(real_kid.clone());
                jsonwebtoken::encode(&fh, &foreign, &rogue).unwrap()
            },
            "untrusted issuer",
        ),
    ];
    // The short-lived token, once expired (clock_skew is 0 here).
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(started.elapsed()));
    cases.push(("expired", short_lived, "token expired"));

    for (label, credential, reason) in &cases {
        assert_psql_refused(&gateway, credential, "analytics", "authentication failed");
        let failure = assert_last_failure(&gateway, "analytics", reason);
        assert_eq!(failure["who"]["method"], "none", "{label}");
        assert!(
            failure["who"].get("subject").is_none(),
            "{label}: {failure:#}"
        );
    }
    assert_eq!(auth_failures(&gateway).len(), cases.len());

    // The genuine token still works, and a genuine identity without the group is refused
    // with the connection-level message.
    let out = gateway.psql_raw(&good, "analytics", &["-c", "SELECT 1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reporting = token(&issuer, "svc-reporting", "urn:gatehouse");
    assert_psql_refused(
        &gateway,
        &reporting,
        "analytics",
        "connection \"analytics\" is not available to this identity",
    );
    let failure = assert_last_failure(
        &gateway,
        "analytics",
        "identity not permitted on this connection",
    );
    assert_eq!(failure["who"]["subject"], "svc-reporting");
}

/// The same base64url text with its first character changed to another valid one.
fn flip_first_char(text: &str) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// A token whose `sub` is `key:nightly-report` is the issuer's subject of that name, not the
/// API key: a connection open to the key refuses it, and one open to the qualified OIDC
/// subject (`<issuer>#key:nightly-report`) admits it.
#[test]
fn subjects_are_qualified_by_method_and_issuer() {
    let issuer = start_issuer();
    let cluster = PgCluster::start();
    let gateway = trusting(Gateway::builder(), &issuer)
        .env("GH_NS_PW", SUPER_PASSWORD)
        .raw_connection(&format!(
            "  nightly:\n    protocol: postgres\n    upstream:\n      host: 127.0.0.1\n      port: {port}\n      database: postgres\n      user: postgres\n      password: ${{env:GH_NS_PW}}\n      tls: {{ mode: disable }}\n    allow:\n      subjects: [\"key:nightly-report\"]\n  federated:\n    protocol: postgres\n    upstream:\n      host: 127.0.0.1\n      port: {port}\n      database: postgres\n      user: postgres\n      password: ${{env:GH_NS_PW}}\n      tls: {{ mode: disable }}\n    allow:\n      subjects: [\"{url}#key:nightly-report\"]\n",
            port = cluster.port,
            url = issuer.url,
        ))
        .start();
    let impostor = token(&issuer, "impostor", "urn:gatehouse");
    assert_eq!(jwt_parts(&impostor).1["sub"], "key:nightly-report");
    let refused = pg_try(&gateway.conninfo(&impostor, "nightly"));
    assert_eq!(
        refused.map_err(|(_, code, _)| code),
        Err("28000".to_owned()),
        "the token does not pass for the API key"
    );
    let failure = gateway.wait_for_event("refused impostor", |e| {
        e["kind"] == "auth.failure" && e["what"]["connection"] == "nightly"
    });
    assert_eq!(failure["who"]["method"], "oidc");
    assert_eq!(failure["who"]["subject"], "key:nightly-report");
    assert_eq!(failure["who"]["issuer"], issuer.url.as_str());
    pg_try(&gateway.conninfo(&impostor, "federated")).expect("the qualified subject is admitted");
    // The real key is admitted where the key is listed.
    let key = gateway.create_key("nightly-report", &[]);
    pg_try(&gateway.conninfo(&key, "nightly")).expect("the key itself");
    assert!(pg_try(&gateway.conninfo(&key, "federated")).is_err());
}

/// A session opened with a token ends (audited) when the token expires.
#[test]
fn a_session_ends_when_its_token_expires() {
    let (issuer, _cluster, gateway) = oidc_gateway();
    let short = token(&issuer, "expiring-analyst", "urn:gatehouse");
    let exp = jwt_parts(&short).1["exp"].as_i64().unwrap();
    let rt = current_thread_runtime();
    rt.block_on(async {
        let (client, connection) = gateway.pg_client(&short, "analytics").await;
        client
            .simple_query("SELECT 1")
            .await
            .expect("works while valid");
        let ended = tokio::time::timeout(Duration::from_secs(15), connection)
            .await
            .expect("the session ended within 15 s")
            .unwrap();
        let err = ended.expect_err("ended by the gateway");
        let db = err.as_db_error().expect("with the gateway's error");
        assert_eq!(db.code().code(), "28000");
        assert!(db.message().contains("expired"), "{db:?}");
    });
    let end = gateway.wait_for_event("session.end at expiry", |e| {
        e["kind"] == "session.end" && e["what"]["detail"]["cause"] == "credential_expired"
    });
    let ended_at = time::OffsetDateTime::parse(
        end["time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!(
        (exp..exp + 3).contains(&ended_at),
        "ended at {ended_at}, token exp {exp}"
    );
}

/// Agents acting for a person are held for approval on writes; the same person signing in
/// directly is not; the person behind the agent may not approve its statement; a CI token's
/// claims select the rule that lets its migrations through.
#[test]
fn delegated_writes_are_held_and_claims_select_rules() {
    let issuer = start_issuer();
    let cluster = PgCluster::start();
    cluster.psql_admin("CREATE TABLE notes (id int)");
    let gateway = trusting(Gateway::builder(), &issuer)
        .env("GH_ANALYTICS_PW", SUPER_PASSWORD)
        .raw_connection(&format!(
            "  analytics:\n    protocol: postgres\n    upstream:\n      host: 127.0.0.1\n      port: {}\n      database: postgres\n      user: postgres\n      password: ${{env:GH_ANALYTICS_PW}}\n      tls: {{ mode: disable }}\n    allow:\n      groups: [analysts, ci]\n",
            cluster.port
        ))
        .top(
            "policy:
  rules:
    - name: ci-migrations-from-main
      action: allow
      match: { groups: [ci], claims: { ref: refs/heads/main, environment: production }, kinds: [ddl] }
    - name: ci-migrations-elsewhere
      action: block
      reason: schema changes from CI run only from main's production job
      match: { groups: [ci], kinds: [ddl] }
    - name: agents-writes-need-approval
      action: approve
      reason: an agent's writes need a person's approval
      approval: { approvers: [dba], hold: 20s }
      match: { delegated: true, kinds: [write, ddl] }
",
        )
        .start();
    let alice = token(&issuer, "alice", "urn:gatehouse");
    let agent = token(&issuer, "agent-7", "urn:gatehouse");
    let dba = gateway.create_key("dba-on-call", &["dba"]);

    // Alice herself writes directly.
    let out = gateway.psql_raw(&alice, "analytics", &["-c", "INSERT INTO notes VALUES (1)"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Her agent's write is held.
    let held = psql_command(&gateway.url(&agent, "analytics"))
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            "INSERT INTO notes VALUES (2)",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let requested = gateway.wait_for_event("approval.requested", |e| {
        e["kind"] == "approval.requested"
            && e["what"]["statement"] == "INSERT INTO notes VALUES (2)"
    });
    let id = requested["what"]["resource"].as_str().unwrap().to_owned();
    assert_eq!(requested["who"]["subject"], "alice@example.com");
    assert_eq!(
        requested["who"]["actors"],
        serde_json::json!([{ "subject": "agent-7" }])
    );

    // The person behind the agent may not approve it, nor the agent.
    for (who, token) in [("alice", &alice), ("agent-7", &agent)] {
        let out = gateway.cli_as(token, &["approvals", "approve", &id]);
        assert!(!out.status.success(), "{who} must not approve");
        assert!(
            text(&out.stderr).contains("403"),
            "{who}: {}",
            text(&out.stderr)
        );
    }
    let ok = gateway.cli_as(&dba, &["approvals", "approve", &id]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let out = held.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(cluster.psql_admin("SELECT count(*) FROM notes").trim(), "2");

    // CI: the main branch's production token may migrate; a feature branch's may not.
    let main = token(&issuer, "ci-main", "urn:gatehouse");
    let branch = token(&issuer, "ci-branch", "urn:gatehouse");
    let migrate = "ALTER TABLE notes ADD COLUMN body text";
    let out = gateway.psql_raw(&branch, "analytics", &["-c", migrate]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ci-migrations-elsewhere"),
        "{}",
        text(&out.stderr)
    );
    let out = gateway.psql_raw(&main, "analytics", &["-c", migrate]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
