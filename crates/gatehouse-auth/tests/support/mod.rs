//! Test signing keys (made with the `openssl` CLI) and a minimal discovery + JWKS server that
//! counts its hits and can rotate keys or misbehave on demand.

#![allow(dead_code)]

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// A private key plus its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
    /// SubjectPublicKeyInfo PEM, e.g. for the HS256 confusion attack.
    pub public_pem: Vec<u8>,
}

impl TestKey {
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(claims, Some(&self.kid))
    }

    pub fn sign_with_kid(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }

    /// The same key material under another kid.
    pub fn with_kid(&self, kid: &str) -> TestKey {
        let mut k = self.clone();
        k.kid = kid.to_owned();
        k.jwk["kid"] = json!(kid);
        k
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("the openssl CLI is needed to generate test keys");
    assert!(status.success(), "openssl {args:?} failed");
}

fn generate(dir: &Path, alg: Algorithm, kid: &str) -> TestKey {
    let (name, genargs): (&str, &[&str]) = match alg {
        Algorithm::RS256 => (
            "rsa",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
        Algorithm::ES256 => (
            "ec",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        ),
        Algorithm::EdDSA => ("ed", &["-algorithm", "ED25519"]),
        other => panic!("no test keys for {other:?}"),
    };
    let private = format!("{name}-{kid}.pem");
    let public = format!("{name}-{kid}.pub.pem");
    let public_der = format!("{name}-{kid}.pub.der");
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genargs);
    args.extend_from_slice(&["-out", &private]);
    openssl(dir, &args);
    openssl(dir, &["pkey", "-in", &private, "-pubout", "-out", &public]);
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            &private,
            "-pubout",
            "-outform",
            "DER",
            "-out",
            &public_der,
        ],
    );
    let pem = std::fs::read(dir.join(&private)).unwrap();
    let public_pem = std::fs::read(dir.join(&public)).unwrap();

    let (encoding, mut jwk) = match alg {
        Algorithm::RS256 => {
            let k = EncodingKey::from_rsa_pem(&pem).unwrap();
            let jwk = serde_json::to_value(Jwk::from_encoding_key(&k, alg).unwrap()).unwrap();
            (k, jwk)
        }
        Algorithm::ES256 => {
            let k = EncodingKey::from_ec_pem(&pem).unwrap();
            let jwk = serde_json::to_value(Jwk::from_encoding_key(&k, alg).unwrap()).unwrap();
            (k, jwk)
        }
        _ => {
            let k = EncodingKey::from_ed_pem(&pem).unwrap();
            // The raw public key is the last 32 bytes of the SubjectPublicKeyInfo DER.
            let der = std::fs::read(dir.join(&public_der)).unwrap();
            let x = URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
            (
                k,
                json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA"}),
            )
        }
    };
    jwk["kid"] = json!(kid);
    jwk["use"] = serde_json::to_value(PublicKeyUse::Signature).unwrap();
    TestKey {
        alg,
        kid: kid.to_owned(),
        encoding,
        jwk,
        public_pem,
    }
}

/// RSA, EC and Ed25519 keys, plus a second RSA key for rotation; generated once per binary.
pub struct Keys {
    pub rsa: TestKey,
    pub ec: TestKey,
    pub ed: TestKey,
    pub rsa_next: TestKey,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        Keys {
            rsa: generate(dir.path(), Algorithm::RS256, "rsa-1"),
            ec: generate(dir.path(), Algorithm::ES256, "ec-1"),
            ed: generate(dir.path(), Algorithm::EdDSA, "ed-1"),
            rsa_next: generate(dir.path(), Algorithm::RS256, "rsa-2"),
        }
    })
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// How the fake IdP behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Discovery names another issuer.
    WrongIssuer,
    /// The JWKS response is over the size limit.
    HugeJwks,
    /// Every request fails with HTTP 500.
    Broken,
}

struct IdpState {
    issuer: String,
    keys: Mutex<Vec<Value>>,
    mode: Mutex<Mode>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

/// A discovery + JWKS server on 127.0.0.1:0.
#[derive(Clone)]
pub struct Idp {
    state: Arc<IdpState>,
}

impl Idp {
    pub async fn start(keys: &[&TestKey]) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(IdpState {
            issuer,
            keys: Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()),
            mode: Mutex::new(Mode::Normal),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Idp { state }
    }

    pub fn issuer(&self) -> &str {
        &self.state.issuer
    }

    pub fn set_keys(&self, keys: &[&TestKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }
}

type Reply = Result<Json<Value>, (axum::http::StatusCode, &'static str)>;

fn broken() -> (axum::http::StatusCode, &'static str) {
    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "broken")
}

async fn discovery(State(s): State<Arc<IdpState>>) -> Reply {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let mode = *s.mode.lock().unwrap();
    let issuer = match mode {
        Mode::Broken => return Err(broken()),
        Mode::WrongIssuer => format!("{}/other", s.issuer),
        _ => s.issuer.clone(),
    };
    Ok(Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{}/jwks", s.issuer),
    })))
}

async fn jwks(State(s): State<Arc<IdpState>>) -> Reply {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let mode = *s.mode.lock().unwrap();
    match mode {
        Mode::Broken => Err(broken()),
        Mode::HugeJwks => Ok(Json(json!({
            "keys": [], "padding": "x".repeat(2 * 1024 * 1024)
        }))),
        _ => Ok(Json(json!({ "keys": *s.keys.lock().unwrap() }))),
    }
}
