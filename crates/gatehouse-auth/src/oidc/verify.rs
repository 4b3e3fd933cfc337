//! Signature and registered-claim checks with `jsonwebtoken`, mapped to audit reasons.

use super::error::TokenError;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the claims must satisfy, besides the signature.
pub(crate) struct Expectations<'a> {
    pub issuer: &'a str,
    pub audiences: &'a [String],
    pub clock_skew: Duration,
}

/// Verifies the signature with `key` under exactly `alg`, then `iss` (exact), `aud`
/// (intersects), `exp` (required), `nbf` and `iat`, all with the clock skew. Returns the claims.
///
/// `payload` is the unverified payload, used only to word a rejection precisely.
pub(crate) fn verify(
    token: &str,
    alg: Algorithm,
    key: &DecodingKey,
    expect: &Expectations<'_>,
    payload: &Map<String, Value>,
) -> Result<Map<String, Value>, TokenError> {
    let mut validation = Validation::new(alg);
    validation.leeway = expect.clock_skew.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.set_issuer(&[expect.issuer]);
    validation.set_audience(expect.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);

    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
        .map_err(|e| reason(e.kind(), payload))?
        .claims;
    check_iat(&claims, expect.clock_skew)?;
    Ok(claims)
}

/// `jsonwebtoken` does not look at `iat`; a token issued in the future is a clock problem or a
/// forgery either way.
fn check_iat(claims: &Map<String, Value>, skew: Duration) -> Result<(), TokenError> {
    let Some(iat) = claims.get("iat") else {
        return Ok(());
    };
    let iat = iat
        .as_f64()
        .ok_or_else(|| TokenError::MalformedClaim("iat".into()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    if iat > now + skew.as_secs_f64() {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(())
}

fn reason(kind: &ErrorKind, payload: &Map<String, Value>) -> TokenError {
    match kind {
        // jsonwebtoken reports a present but unparsable required claim as missing.
        ErrorKind::MissingRequiredClaim(c) if payload.contains_key(c) => {
            TokenError::MalformedClaim(c.clone())
        }
        ErrorKind::InvalidSignature => TokenError::InvalidSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::InvalidIssuer => TokenError::UntrustedIssuer,
        ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        ErrorKind::InvalidClaimFormat(c) => TokenError::MalformedClaim(c.clone()),
        ErrorKind::InvalidAlgorithm => TokenError::KeyMismatch,
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => TokenError::UnusableKey,
        _ => TokenError::Malformed,
    }
}
