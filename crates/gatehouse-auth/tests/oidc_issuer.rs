//! End to end against a real OpenID provider: `node tests/oidc-issuer/server.mjs`
//! (panva/oidc-provider), tokens obtained with the client_credentials grant over HTTP.
//!
//! Needs Node.js and `npm ci --prefix tests/oidc-issuer` (run from the repository root).

use gatehouse_audit::ActorRef;
use gatehouse_auth::{OidcAuthenticator, OidcIssuer};
use gatehouse_core::{AuthError, Authenticator};
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The running provider; killed (by its pid, which we own) when dropped.
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

fn issuer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc-issuer")
}

fn start(alg: &str) -> Issuer {
    let dir = issuer_dir();
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "the test OIDC issuer's dependencies are missing: run `npm ci --prefix tests/oidc-issuer` \
         from the repository root (needs Node.js 20+)"
    );
    let mut child = Command::new("node")
        .args(["server.mjs", "--port", "0", "--alg", alg])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("could not run `node`; Node.js 20+ is needed for this test");

    let stderr_text = Arc::new(Mutex::new(String::new()));
    if let Some(mut stderr) = child.stderr.take() {
        let sink = stderr_text.clone();
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = stderr.read_to_string(&mut buf);
            if let Ok(mut s) = sink.lock() {
                s.push_str(&buf);
            }
        });
    }
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("READY ") {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let url = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(url) => url,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(200));
            let stderr = stderr_text.lock().map(|s| s.clone()).unwrap_or_default();
            panic!("OIDC issuer did not print READY within 30 s; stderr:\n{stderr}");
        }
    };
    Issuer { child, url }
}

fn http() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// An access token for `client` (secret `<client>-secret`), optionally for `resource`.
async fn token(issuer: &Issuer, client: &str, resource: Option<&str>) -> String {
    let mut body = "grant_type=client_credentials".to_owned();
    if let Some(r) = resource {
        // Resource indicators used here are `urn:<name>`; only ':' needs escaping.
        body.push_str(&format!("&resource={}", r.replace(':', "%3A")));
    }
    let response = http()
        .post(format!("{}/token", issuer.url))
        .basic_auth(client, Some(format!("{client}-secret")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("token request");
    let status = response.status();
    let json: serde_json::Value = response.json().await.expect("token response JSON");
    assert!(status.is_success(), "token endpoint said {status}: {json}");
    json["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

fn authenticator(issuer: &str) -> OidcAuthenticator {
    OidcAuthenticator::new(vec![OidcIssuer {
        clock_skew: Duration::ZERO,
        ..OidcIssuer::new(issuer, vec!["gatehouse".into()])
    }])
    .unwrap()
}

fn actor(subject: &str, issuer: Option<&str>) -> ActorRef {
    ActorRef {
        subject: subject.into(),
        issuer: issuer.map(Into::into),
    }
}

#[tokio::test]
async fn real_issuer_rs256() {
    let issuer = start("RS256");
    let auth = authenticator(&issuer.url);
    auth.warm_up().await;

    // An agent acting for a person.
    let id = auth
        .authenticate(&token(&issuer, "agent-7", None).await)
        .await
        .unwrap();
    assert_eq!(id.subject, "alice@example.com");
    assert_eq!(id.issuer.as_deref(), Some(issuer.url.as_str()));
    assert_eq!(id.groups, ["analysts"]);
    assert_eq!(id.actors, [actor("agent-7", None)]);
    assert_eq!(id.to_string(), "agent-7 for alice@example.com");

    // A nested chain, nearest actor first.
    let id = auth
        .authenticate(&token(&issuer, "sub-agent-3", None).await)
        .await
        .unwrap();
    assert_eq!(
        id.actors,
        [
            actor("sub-agent-3", None),
            actor("agent-7", Some("https://agents.example.com"))
        ]
    );

    // Plain service accounts; groups as an array and as a single string.
    let id = auth
        .authenticate(&token(&issuer, "svc-reporting", Some("urn:gatehouse")).await)
        .await
        .unwrap();
    assert_eq!(id.subject, "svc-reporting");
    assert_eq!(id.groups, ["reporting", "readonly"]);
    assert!(id.actors.is_empty());
    let id = auth
        .authenticate(&token(&issuer, "svc-dba", None).await)
        .await
        .unwrap();
    assert_eq!(id.groups, ["dba"]);

    // A token for another resource server.
    let other = token(&issuer, "svc-dba", Some("urn:other-api")).await;
    assert_eq!(
        auth.authenticate(&other).await,
        Err(AuthError::Rejected("audience not accepted".into()))
    );

    // The same provider configured under another issuer URL: not trusted.
    let port = issuer.url.rsplit(':').next().unwrap();
    let elsewhere = authenticator(&format!("http://localhost:{port}"));
    assert_eq!(
        elsewhere
            .authenticate(&token(&issuer, "agent-7", None).await)
            .await,
        Err(AuthError::Rejected("untrusted issuer".into()))
    );
}

#[tokio::test]
async fn real_issuer_expired_token() {
    let issuer = start("RS256");
    let auth = authenticator(&issuer.url);
    // `short-lived` tokens live one second.
    let short = token(&issuer, "short-lived", None).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        auth.authenticate(&short).await,
        Err(AuthError::Rejected("token expired".into()))
    );
}

#[tokio::test]
async fn real_issuer_es256_and_eddsa() {
    for alg in ["ES256", "EdDSA"] {
        let issuer = start(alg);
        let auth = authenticator(&issuer.url);
        let id = auth
            .authenticate(&token(&issuer, "agent-7", None).await)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(id.subject, "alice@example.com", "{alg}");
    }
}
