//! OIDC / JWT bearer tokens from the organisation's identity providers.
//!
//! Order of checks, cheapest and most dangerous first: size and shape; header `alg` against the
//! allow-list (before any key is looked up, so `none` and HS* confusion never reach crypto);
//! the unverified `iss` picks the configured issuer; that issuer's key for `kid` (fetched and
//! cached, see [`keys`]); signature and registered claims; then claims → identity.

mod claims;
mod error;
mod fetch;
mod keys;
mod token;
mod verify;

pub use claims::MAX_ACT_DEPTH;
pub use error::{ConfigError, FetchError, OidcError, TokenError};
pub use fetch::{MAX_RESPONSE_BYTES, REQUEST_TIMEOUT};
pub use keys::MAX_KEY_AGE;
pub use token::{looks_like_jwt, MAX_TOKEN_BYTES, SUPPORTED_ALGORITHMS};

use async_trait::async_trait;
use gatehouse_core::{AuthError, Authenticator, Identity};
use jsonwebtoken::Algorithm;
use keys::KeyCache;
use reqwest::Url;
use std::time::Duration;

/// Largest accepted clock skew; more would make `exp` meaningless.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);

/// One trusted identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIssuer {
    /// Must equal the token's `iss` and the discovery document's `issuer` exactly.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    pub groups_claim: String,
    pub subject_claim: String,
    /// Subset of [`SUPPORTED_ALGORITHMS`].
    pub algorithms: Vec<Algorithm>,
    /// Leeway for `exp`, `nbf` and `iat` (whole seconds; at most [`MAX_CLOCK_SKEW`]).
    pub clock_skew: Duration,
    /// Minimum time between JWKS fetches triggered by unknown `kid`s.
    pub jwks_refetch_cooldown: Duration,
    /// PEM CA certificates trusted for this issuer in addition to the system roots.
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl OidcIssuer {
    /// An issuer with the usual defaults: `sub`, `groups`, all supported algorithms, 60 s skew,
    /// 30 s refetch cooldown, system roots only.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        OidcIssuer {
            issuer: issuer.into(),
            audiences,
            groups_claim: "groups".into(),
            subject_claim: "sub".into(),
            algorithms: SUPPORTED_ALGORITHMS.to_vec(),
            clock_skew: Duration::from_secs(60),
            jwks_refetch_cooldown: Duration::from_secs(30),
            extra_ca_pem: None,
        }
    }

    /// Checks the configuration; returns whether the issuer is a loopback `http` URL.
    fn validate(&self) -> Result<bool, ConfigError> {
        let invalid = |reason: &str| ConfigError::InvalidIssuer {
            issuer: self.issuer.clone(),
            reason: reason.into(),
        };
        let url = Url::parse(&self.issuer).map_err(|e| invalid(&e.to_string()))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("must not have a query or fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must not contain credentials"));
        }
        let loopback_http = match url.scheme() {
            "https" => false,
            "http" if is_loopback(&url) => true,
            "http" => return Err(ConfigError::InsecureIssuer(self.issuer.clone())),
            _ => return Err(invalid("scheme must be https")),
        };
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(ConfigError::NoAudience(self.issuer.clone()));
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::NoAlgorithms(self.issuer.clone()));
        }
        if let Some(alg) = self
            .algorithms
            .iter()
            .find(|a| !SUPPORTED_ALGORITHMS.contains(a))
        {
            return Err(ConfigError::AlgorithmNotAllowed {
                issuer: self.issuer.clone(),
                alg: format!("{alg:?}"),
            });
        }
        for (field, value) in [
            ("subject_claim", &self.subject_claim),
            ("groups_claim", &self.groups_claim),
        ] {
            if value.is_empty() {
                return Err(ConfigError::EmptyClaimName {
                    issuer: self.issuer.clone(),
                    field,
                });
            }
        }
        if self.clock_skew > MAX_CLOCK_SKEW {
            return Err(invalid("clock_skew is larger than 10 minutes"));
        }
        Ok(loopback_http)
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some(host) if host.eq_ignore_ascii_case("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

struct TrustedIssuer {
    config: OidcIssuer,
    keys: KeyCache,
}

/// Verifies bearer JWTs from a fixed set of issuers.
pub struct OidcAuthenticator {
    issuers: Vec<TrustedIssuer>,
}

impl OidcAuthenticator {
    /// Validates the configuration and builds one HTTP client per issuer. No network access:
    /// keys are fetched on first use or by [`OidcAuthenticator::warm_up`].
    pub fn new(issuers: Vec<OidcIssuer>) -> Result<Self, ConfigError> {
        if issuers.is_empty() {
            return Err(ConfigError::NoIssuers);
        }
        let mut loopback = Vec::with_capacity(issuers.len());
        for (i, issuer) in issuers.iter().enumerate() {
            loopback.push(issuer.validate()?);
            if issuers[..i].iter().any(|o| o.issuer == issuer.issuer) {
                return Err(ConfigError::DuplicateIssuer(issuer.issuer.clone()));
            }
        }
        // Reading the system store is slow-ish and pointless for loopback-only test setups.
        let system = if loopback.iter().all(|l| *l) {
            rustls::RootCertStore::empty()
        } else {
            fetch::system_roots()
        };

        let mut trusted = Vec::with_capacity(issuers.len());
        for (config, loopback_http) in issuers.into_iter().zip(loopback) {
            let mut roots = system.clone();
            if let Some(pem) = &config.extra_ca_pem {
                fetch::add_pem_roots(&mut roots, pem).map_err(|reason| ConfigError::ExtraCa {
                    issuer: config.issuer.clone(),
                    reason,
                })?;
            }
            let keys = KeyCache::new(
                config.issuer.clone(),
                loopback_http,
                fetch::client(roots)?,
                config.jwks_refetch_cooldown,
            );
            trusted.push(TrustedIssuer { config, keys });
        }
        Ok(OidcAuthenticator { issuers: trusted })
    }

    /// Prefetches every issuer's keys. Failures are logged, not returned: the gateway should
    /// start even when an IdP is briefly down (tokens from it fail closed until it is back).
    pub async fn warm_up(&self) {
        for issuer in &self.issuers {
            match issuer.keys.refresh().await {
                Ok(count) => {
                    tracing::info!(issuer = %issuer.config.issuer, keys = count, "OIDC issuer ready")
                }
                Err(e) => {
                    tracing::warn!(issuer = %issuer.config.issuer, error = %e, "OIDC issuer not reachable at start")
                }
            }
        }
    }

    /// Verifies `token` and returns the identity it carries.
    pub async fn verify(&self, token: &str) -> Result<Identity, OidcError> {
        let unverified = token::inspect(token)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == unverified.iss)
            .ok_or(TokenError::UntrustedIssuer)?;
        let config = &issuer.config;
        if !config.algorithms.contains(&unverified.alg) {
            return Err(TokenError::AlgorithmNotAllowed(format!("{:?}", unverified.alg)).into());
        }
        let key = issuer
            .keys
            .key_for(unverified.kid.as_deref(), unverified.alg)
            .await?;
        let claims = verify::verify(
            token,
            unverified.alg,
            &key.key,
            &verify::Expectations {
                issuer: &config.issuer,
                audiences: &config.audiences,
                clock_skew: config.clock_skew,
            },
            &unverified.claims,
        )?;
        Ok(claims::identity(
            &claims,
            &config.issuer,
            &claims::ClaimNames {
                subject: &config.subject_claim,
                groups: &config.groups_claim,
            },
        )?)
    }
}

#[async_trait]
impl Authenticator for OidcAuthenticator {
    async fn authenticate(&self, credential: &str) -> Result<Identity, AuthError> {
        self.verify(credential).await.map_err(AuthError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        let ok = OidcIssuer::new("https://idp.example.com", vec!["gatehouse".into()]);
        assert_eq!(ok.validate(), Ok(false));
        let local = OidcIssuer::new("http://127.0.0.1:8080", vec!["g".into()]);
        assert_eq!(local.validate(), Ok(true));
        let cases = [
            OidcIssuer::new("http://idp.example.com", vec!["g".into()]),
            OidcIssuer::new("ftp://idp", vec!["g".into()]),
            OidcIssuer::new("not a url", vec!["g".into()]),
            OidcIssuer::new("https://idp?x=1", vec!["g".into()]),
            OidcIssuer::new("https://idp", vec![]),
            OidcIssuer {
                algorithms: vec![Algorithm::HS256],
                ..ok.clone()
            },
            OidcIssuer {
                algorithms: vec![],
                ..ok.clone()
            },
            OidcIssuer {
                subject_claim: String::new(),
                ..ok.clone()
            },
            OidcIssuer {
                clock_skew: Duration::from_secs(3600),
                ..ok.clone()
            },
        ];
        for c in cases {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }

    #[test]
    fn new_rejects_duplicates_bad_ca_and_empty() {
        let a = OidcIssuer::new("http://127.0.0.1:1", vec!["g".into()]);
        assert!(matches!(
            OidcAuthenticator::new(vec![]),
            Err(ConfigError::NoIssuers)
        ));
        assert!(matches!(
            OidcAuthenticator::new(vec![a.clone(), a.clone()]),
            Err(ConfigError::DuplicateIssuer(_))
        ));
        let bad_ca = OidcIssuer {
            extra_ca_pem: Some(b"not pem".to_vec()),
            ..a.clone()
        };
        assert!(matches!(
            OidcAuthenticator::new(vec![bad_ca]),
            Err(ConfigError::ExtraCa { .. })
        ));
        assert!(OidcAuthenticator::new(vec![a]).is_ok());
    }
}
