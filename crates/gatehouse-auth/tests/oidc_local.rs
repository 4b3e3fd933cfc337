//! OIDC validation against a local discovery/JWKS server with keys generated at test time.

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use gatehouse_audit::ActorRef;
use gatehouse_auth::oidc::MAX_TOKEN_BYTES;
use gatehouse_auth::{Algorithm, OidcAuthenticator, OidcIssuer};
use gatehouse_core::{AuthError, AuthMethod, Authenticator};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::{keys, now, Idp, Mode};

const AUD: &str = "gatehouse";

fn config(idp: &Idp) -> OidcIssuer {
    OidcIssuer {
        clock_skew: Duration::from_secs(5),
        jwks_refetch_cooldown: Duration::from_secs(60),
        ..OidcIssuer::new(idp.issuer(), vec![AUD.into()])
    }
}

fn auth(cfg: OidcIssuer) -> OidcAuthenticator {
    OidcAuthenticator::new(vec![cfg]).unwrap()
}

fn claims(idp: &Idp) -> Value {
    json!({
        "iss": idp.issuer(),
        "sub": "alice",
        "aud": AUD,
        "iat": now(),
        "exp": now() + 300,
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    base
}

fn rejected(reason: &str) -> Result<gatehouse_core::Identity, AuthError> {
    Err(AuthError::Rejected(reason.into()))
}

async fn check_rejected(auth: &OidcAuthenticator, token: &str, reason: &str) {
    let got = auth.authenticate(token).await;
    assert_eq!(got, rejected(reason));
    if let Err(e) = got {
        assert!(!e.to_string().contains(token), "reason leaks the token");
    }
}

#[tokio::test]
async fn accepts_rs256_es256_and_eddsa() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa, &k.ec, &k.ed]).await;
    let auth = auth(config(&idp));
    for key in [&k.rsa, &k.ec, &k.ed] {
        let token = key.sign(&with(claims(&idp), json!({"groups": ["dba", "ops"]})));
        let id = auth
            .authenticate(&token)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", key.alg));
        assert_eq!(id.subject, "alice");
        assert_eq!(id.issuer.as_deref(), Some(idp.issuer()));
        assert_eq!(id.groups, ["dba", "ops"]);
        assert_eq!(id.method, AuthMethod::Oidc);
        assert!(id.actors.is_empty());
    }
    // Keys were fetched once, lazily, and then served from the cache.
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn time_claims() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let auth = auth(config(&idp));
    let cases = [
        (json!({"exp": now() - 60}), "token expired"),
        (json!({"exp": null}), "missing claim: exp"),
        (json!({"exp": "tomorrow"}), "malformed claim: exp"),
        (json!({"nbf": now() + 120}), "token not yet valid"),
        (json!({"iat": now() + 120}), "token issued in the future"),
        (json!({"iat": "yesterday"}), "malformed claim: iat"),
    ];
    for (extra, reason) in cases {
        check_rejected(&auth, &k.rsa.sign(&with(claims(&idp), extra)), reason).await;
    }
    // Within the skew is fine.
    let within = with(
        claims(&idp),
        json!({"exp": now() - 2, "nbf": now() + 2, "iat": now() + 2}),
    );
    assert!(auth.authenticate(&k.rsa.sign(&within)).await.is_ok());
}

#[tokio::test]
async fn audience() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let auth = auth(config(&idp));
    let token = |aud: Value| k.rsa.sign(&with(claims(&idp), json!({ "aud": aud })));
    check_rejected(&auth, &token(json!("other-api")), "audience not accepted").await;
    check_rejected(&auth, &token(json!(["a", "b"])), "audience not accepted").await;
    check_rejected(
        &auth,
        &k.rsa.sign(&with(claims(&idp), json!({"aud": null}))),
        "missing claim: aud",
    )
    .await;
    assert!(auth
        .authenticate(&token(json!(["other-api", AUD])))
        .await
        .is_ok());
}

#[tokio::test]
async fn issuer_must_be_configured_and_exact() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let auth = auth(config(&idp));
    for iss in [
        "https://evil.example.com".to_string(),
        format!("{}/", idp.issuer()),
        idp.issuer().to_uppercase(),
    ] {
        let token = k.rsa.sign(&with(claims(&idp), json!({ "iss": iss })));
        check_rejected(&auth, &token, "untrusted issuer").await;
    }
    check_rejected(
        &auth,
        &k.rsa.sign(&with(claims(&idp), json!({"iss": null}))),
        "missing claim: iss",
    )
    .await;
    // Untrusted issuers never cause a fetch.
    assert_eq!(idp.discovery_hits(), 0);
}

#[tokio::test]
async fn algorithm_attacks_are_rejected_before_key_lookup() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let auth = auth(OidcIssuer {
        algorithms: vec![Algorithm::RS256],
        ..config(&idp)
    });
    let body = claims(&idp);

    // alg: none, empty signature.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(body.to_string())
    );
    check_rejected(&auth, &none, "algorithm not allowed: none").await;

    // Key confusion: HS256 keyed with the RSA public key as the HMAC secret.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(k.rsa.kid.clone());
    let hs =
        jsonwebtoken::encode(&header, &body, &EncodingKey::from_secret(&k.rsa.public_pem)).unwrap();
    check_rejected(&auth, &hs, "algorithm not allowed: HS256").await;

    // A supported algorithm this issuer does not allow.
    check_rejected(&auth, &k.ec.sign(&body), "algorithm not allowed: ES256").await;

    assert_eq!(idp.jwks_hits(), 0, "no key lookup for a disallowed alg");
}

#[tokio::test]
async fn key_must_match_the_header_alg() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa, &k.ec]).await;
    let auth = auth(config(&idp));
    // Signed with the EC key but naming the RSA key's kid.
    let token = k.ec.sign_with_kid(&claims(&idp), Some(&k.rsa.kid));
    check_rejected(&auth, &token, "signing key does not match algorithm").await;
}

#[tokio::test]
async fn tampering() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa, &k.ed]).await;
    let auth = auth(config(&idp));
    for key in [&k.rsa, &k.ed] {
        let token = key.sign(&claims(&idp));
        let parts: Vec<&str> = token.split('.').collect();

        let forged = URL_SAFE_NO_PAD.encode(with(claims(&idp), json!({"sub": "root"})).to_string());
        let payload_swapped = format!("{}.{}.{}", parts[0], forged, parts[2]);
        check_rejected(&auth, &payload_swapped, "invalid signature").await;

        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[10] ^= 0x01;
        let sig_flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
        check_rejected(&auth, &sig_flipped, "invalid signature").await;

        let stripped = format!("{}.{}.", parts[0], parts[1]);
        check_rejected(&auth, &stripped, "invalid signature").await;
    }
}

#[tokio::test]
async fn oversized_and_malformed_tokens() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let auth = auth(config(&idp));
    let big = k.rsa.sign(&with(
        claims(&idp),
        json!({"padding": "x".repeat(MAX_TOKEN_BYTES)}),
    ));
    check_rejected(&auth, &big, "token too large").await;
    for junk in ["a.b.c", "not a token", "eyJ.eyJ.", "..."] {
        check_rejected(&auth, junk, "malformed token").await;
    }
    assert_eq!(idp.jwks_hits(), 0);
}

#[tokio::test]
async fn delegation_chain_and_groups() {
    let k = keys();
    let idp = Idp::start(&[&k.ec]).await;
    let auth = auth(config(&idp));

    let token = k.ec.sign(&with(
        claims(&idp),
        json!({
            "groups": "analysts",
            "act": {"sub": "sub-agent-3", "act": {"sub": "agent-7", "iss": "https://agents"}}
        }),
    ));
    let id = auth.authenticate(&token).await.unwrap();
    assert_eq!(id.groups, ["analysts"]);
    assert_eq!(
        id.actors,
        [
            ActorRef {
                subject: "sub-agent-3".into(),
                issuer: None
            },
            ActorRef {
                subject: "agent-7".into(),
                issuer: Some("https://agents".into())
            },
        ]
    );
    assert_eq!(id.to_string(), "agent-7 for sub-agent-3 for alice");

    let mut deep = json!({"sub": "a8"});
    for i in (0..8).rev() {
        deep = json!({"sub": format!("a{i}"), "act": deep});
    }
    let token = k.ec.sign(&with(claims(&idp), json!({ "act": deep })));
    check_rejected(&auth, &token, "delegation chain too deep").await;

    let odd = k.ec.sign(&with(claims(&idp), json!({"groups": {"x": 1}})));
    assert!(auth.authenticate(&odd).await.unwrap().groups.is_empty());
}

#[tokio::test]
async fn custom_subject_and_groups_claims() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let auth = auth(OidcIssuer {
        subject_claim: "email".into(),
        groups_claim: "roles".into(),
        ..config(&idp)
    });
    let token = k.rsa.sign(&with(
        claims(&idp),
        json!({"email": "alice@example.com", "roles": ["dba"], "groups": ["ignored"]}),
    ));
    let id = auth.authenticate(&token).await.unwrap();
    assert_eq!(id.subject, "alice@example.com");
    assert_eq!(id.groups, ["dba"]);
    check_rejected(&auth, &k.rsa.sign(&claims(&idp)), "missing claim: email").await;
}

#[tokio::test]
async fn rotated_key_is_picked_up_by_refetch() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let auth = auth(OidcIssuer {
        jwks_refetch_cooldown: Duration::ZERO,
        ..config(&idp)
    });
    auth.warm_up().await;
    assert_eq!(idp.jwks_hits(), 1);
    assert!(auth.authenticate(&k.rsa.sign(&claims(&idp))).await.is_ok());
    assert_eq!(idp.jwks_hits(), 1);

    idp.set_keys(&[&k.rsa, &k.rsa_next]);
    let id = auth
        .authenticate(&k.rsa_next.sign(&claims(&idp)))
        .await
        .unwrap();
    assert_eq!(id.subject, "alice");
    assert_eq!(idp.jwks_hits(), 2);

    // Still unknown after a refetch.
    let stranger = k.rsa.with_kid("nobody");
    check_rejected(&auth, &stranger.sign(&claims(&idp)), "unknown signing key").await;
    assert_eq!(idp.jwks_hits(), 3);

    // A key withdrawn from the JWKS is gone after the next refetch.
    idp.set_keys(&[&k.rsa_next]);
    check_rejected(&auth, &stranger.sign(&claims(&idp)), "unknown signing key").await;
    check_rejected(&auth, &k.rsa.sign(&claims(&idp)), "unknown signing key").await;
}

#[tokio::test]
async fn cooldown_prevents_a_refetch_storm() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let auth = Arc::new(auth(config(&idp)));

    // Cold cache, 20 concurrent callers with unknown kids: one fetch, shared.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let auth = auth.clone();
        let token = k.rsa.with_kid(&format!("forged-{i}")).sign(&claims(&idp));
        tasks.push(tokio::spawn(async move { auth.authenticate(&token).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), rejected("unknown signing key"));
    }
    assert_eq!(idp.jwks_hits(), 1);

    // Within the cooldown, even a genuinely rotated key is not fetched yet.
    idp.set_keys(&[&k.rsa, &k.rsa_next]);
    for _ in 0..5 {
        check_rejected(
            &auth,
            &k.rsa_next.sign(&claims(&idp)),
            "unknown signing key",
        )
        .await;
    }
    assert_eq!(idp.jwks_hits(), 1);
    // Known keys keep working without fetches.
    assert!(auth.authenticate(&k.rsa.sign(&claims(&idp))).await.is_ok());
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn concurrent_cold_start_shares_one_fetch() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let auth = Arc::new(auth(config(&idp)));
    let token = k.rsa.sign(&claims(&idp));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (auth, token) = (auth.clone(), token.clone());
        tasks.push(tokio::spawn(async move { auth.authenticate(&token).await }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_ok());
    }
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1));
}

fn unavailable(got: Result<gatehouse_core::Identity, AuthError>, needle: &str) {
    match got {
        Err(AuthError::Unavailable(msg)) => assert!(msg.contains(needle), "{msg}"),
        other => panic!("expected Unavailable containing {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn idp_failures_are_unavailable() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let token = k.rsa.sign(&claims(&idp));

    idp.set_mode(Mode::WrongIssuer);
    unavailable(
        auth(config(&idp)).authenticate(&token).await,
        "discovery document names issuer",
    );
    idp.set_mode(Mode::HugeJwks);
    unavailable(
        auth(config(&idp)).authenticate(&token).await,
        "response larger than",
    );
    idp.set_mode(Mode::Broken);
    let a = auth(config(&idp));
    unavailable(a.authenticate(&token).await, "HTTP 500");
    // Within the cooldown a failed fetch is not retried.
    let before = idp.discovery_hits();
    unavailable(a.authenticate(&token).await, "not retrying yet");
    assert_eq!(idp.discovery_hits(), before);

    // Nothing listening at all.
    let dead = OidcIssuer::new("http://127.0.0.1:9", vec![AUD.into()]);
    let dead_token = k
        .rsa
        .sign(&with(claims(&idp), json!({"iss": "http://127.0.0.1:9"})));
    unavailable(auth(dead).authenticate(&dead_token).await, "127.0.0.1:9");
}

#[tokio::test]
async fn cached_keys_survive_an_idp_outage() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    let auth = auth(OidcIssuer {
        jwks_refetch_cooldown: Duration::ZERO,
        ..config(&idp)
    });
    auth.warm_up().await;
    idp.set_mode(Mode::Broken);
    assert!(auth.authenticate(&k.rsa.sign(&claims(&idp))).await.is_ok());
    // An unknown kid now needs the IdP, which is down: undecidable, not "unknown".
    unavailable(
        auth.authenticate(&k.rsa_next.sign(&claims(&idp))).await,
        "HTTP 500",
    );
}

#[tokio::test]
async fn warm_up_failure_is_not_fatal() {
    let k = keys();
    let idp = Idp::start(&[&k.rsa]).await;
    idp.set_mode(Mode::Broken);
    let auth = auth(OidcIssuer {
        jwks_refetch_cooldown: Duration::ZERO,
        ..config(&idp)
    });
    auth.warm_up().await;
    idp.set_mode(Mode::Normal);
    assert!(auth.authenticate(&k.rsa.sign(&claims(&idp))).await.is_ok());
}
