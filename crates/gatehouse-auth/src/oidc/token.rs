//! Looking at a JWT before trusting it: size, shape, header `alg`, and the unverified `iss`
//! that tells us which issuer's keys to verify it with. Nothing read here is trusted beyond
//! routing; the signature check comes later.

use super::error::TokenError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

/// Tokens above this are rejected before any parsing (a hostile client cannot make us decode
/// megabytes of JSON).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The only algorithms a configuration may ever allow: asymmetric, no `none`, no HS*.
pub const SUPPORTED_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// What the header and payload claim, before verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unverified {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub iss: String,
    /// The whole payload, unverified; only for refining rejection reasons after verification.
    pub claims: Map<String, Value>,
}

/// Whether `credential` has a JWS compact shape: three base64url segments, the first two
/// non-empty (the signature may be empty, as in `alg: none`, so that gets a precise reason).
pub fn looks_like_jwt(credential: &str) -> bool {
    let mut parts = credential.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => {
            !h.is_empty() && !p.is_empty() && is_b64url(h) && is_b64url(p) && is_b64url(s)
        }
        _ => false,
    }
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks size and shape, rejects disallowed algorithms, and reads `kid` and `iss`.
pub(crate) fn inspect(token: &str) -> Result<Unverified, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    if !looks_like_jwt(token) {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };

    let mut header = decode_object(header)?;
    let alg = match header.remove("alg") {
        Some(Value::String(alg)) => parse_alg(&alg)?,
        _ => return Err(TokenError::Malformed),
    };
    let kid = match header.remove("kid") {
        Some(Value::String(kid)) => Some(kid),
        None => None,
        Some(_) => return Err(TokenError::Malformed),
    };
    // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
    if header.contains_key("crit") {
        return Err(TokenError::CriticalHeader);
    }

    let claims = decode_object(payload)?;
    let iss = match claims.get("iss") {
        Some(Value::String(iss)) => iss.clone(),
        Some(_) => return Err(TokenError::MalformedClaim("iss".into())),
        None => return Err(TokenError::MissingClaim("iss".into())),
    };

    Ok(Unverified {
        alg,
        kid,
        iss,
        claims,
    })
}

/// A base64url segment holding a JSON object.
fn decode_object(segment: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Maps a header `alg` to one we support; anything else is named (safely) in the rejection.
fn parse_alg(alg: &str) -> Result<Algorithm, TokenError> {
    match alg {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(TokenError::AlgorithmNotAllowed(sanitise(other))),
    }
}

/// The `alg` text is attacker-chosen and goes into the audit log: printable ASCII, 16 chars.
pub(crate) fn sanitise(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(16)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if s.chars().count() > 16 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn jwt_shape() {
        let cases: &[(&str, bool)] = &[
            ("a.b.c", true),
            ("a.b.", true),
            (".b.c", false),
            ("a..c", false),
            ("a.b", false),
            ("a.b.c.d", false),
            ("a.b+.c", false),
            ("a.b.c=", false),
            ("gh_abc", false),
            ("", false),
        ];
        for (input, want) in cases {
            assert_eq!(looks_like_jwt(input), *want, "{input:?}");
        }
    }

    #[test]
    fn reads_alg_kid_iss() {
        let t = token(
            r#"{"alg":"ES256","kid":"k1"}"#,
            r#"{"iss":"https://idp","sub":"x"}"#,
        );
        let u = inspect(&t).unwrap();
        assert_eq!(
            (u.alg, u.kid.as_deref(), u.iss.as_str()),
            (Algorithm::ES256, Some("k1"), "https://idp")
        );
        assert_eq!(u.claims.get("sub"), Some(&Value::from("x")));
    }

    #[test]
    fn rejections() {
        let p = r#"{"iss":"https://idp"}"#;
        let cases: Vec<(String, TokenError)> = vec![
            (
                token(r#"{"alg":"none"}"#, p),
                TokenError::AlgorithmNotAllowed("none".into()),
            ),
            (
                token(r#"{"alg":"HS256"}"#, p),
                TokenError::AlgorithmNotAllowed("HS256".into()),
            ),
            (
                token(r#"{"alg":"RS256\n\u0000xxxxxxxxxxxxxxxxxxxx"}"#, p),
                TokenError::AlgorithmNotAllowed("RS256??xxxxxxxxx…".into()),
            ),
            (token(r#"{"alg":7}"#, p), TokenError::Malformed),
            (token(r#"{"typ":"JWT"}"#, p), TokenError::Malformed),
            (
                token(r#"{"alg":"RS256","crit":["exp"]}"#, p),
                TokenError::CriticalHeader,
            ),
            (
                token(r#"{"alg":"RS256"}"#, r#"{"sub":"x"}"#),
                TokenError::MissingClaim("iss".into()),
            ),
            (
                token(r#"{"alg":"RS256"}"#, r#"{"iss":["a"]}"#),
                TokenError::MalformedClaim("iss".into()),
            ),
            (token(r#"{"alg":"RS256"}"#, "[1]"), TokenError::Malformed),
            (token(r#"["RS256"]"#, p), TokenError::Malformed),
            (
                token(r#"{"alg":"RS256","kid":1}"#, p),
                TokenError::Malformed,
            ),
            (token("not json", p), TokenError::Malformed),
            ("a.b.c".into(), TokenError::Malformed),
            ("x".repeat(MAX_TOKEN_BYTES + 1), TokenError::TooLarge),
        ];
        for (input, want) in cases {
            assert_eq!(inspect(&input).err(), Some(want), "{input:.60}");
        }
    }
}
