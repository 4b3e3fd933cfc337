//! Caller authentication for Gatehouse: gateway-issued API keys and OIDC bearer JWTs (with
//! RFC 8693 delegation chains), behind the core [`Authenticator`] trait.
//!
//! The credential's shape decides which authenticator sees it, so a JWT never reaches the key
//! store and an API key never reaches an identity provider.

pub mod api_key;
pub mod oidc;

pub use api_key::{ApiKeyAuthenticator, KeyInfo, KeyLookup};
pub use jsonwebtoken::Algorithm;
pub use oidc::{ConfigError, OidcAuthenticator, OidcError, OidcIssuer};

use async_trait::async_trait;
use gatehouse_core::{AuthError, Authenticator, Identity};
use std::sync::Arc;

/// Routes a credential by shape: `gh_…` API keys to `api_keys`, JWTs to `oidc`; anything else
/// is rejected without touching either.
pub struct CombinedAuthenticator {
    pub api_keys: Option<ApiKeyAuthenticator<Arc<dyn KeyLookup>>>,
    pub oidc: Option<OidcAuthenticator>,
}

impl CombinedAuthenticator {
    pub fn new(
        api_keys: Option<ApiKeyAuthenticator<Arc<dyn KeyLookup>>>,
        oidc: Option<OidcAuthenticator>,
    ) -> Self {
        CombinedAuthenticator { api_keys, oidc }
    }
}

#[async_trait]
impl Authenticator for CombinedAuthenticator {
    async fn authenticate(&self, credential: &str) -> Result<Identity, AuthError> {
        if api_key::looks_like_api_key(credential) {
            match &self.api_keys {
                Some(keys) => keys.authenticate(credential).await,
                None => Err(AuthError::Rejected("API keys are not enabled".into())),
            }
        } else if oidc::looks_like_jwt(credential) {
            match &self.oidc {
                Some(oidc) => oidc.authenticate(credential).await,
                None => Err(AuthError::Rejected("OIDC tokens are not enabled".into())),
            }
        } else {
            Err(AuthError::Rejected("unrecognised credential".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    struct OneKey(String);

    #[async_trait]
    impl KeyLookup for OneKey {
        async fn find_by_hash(&self, hash: &str) -> Result<Option<KeyInfo>, String> {
            Ok((hash == self.0).then(|| KeyInfo {
                name: "ci".into(),
                groups: vec![],
                revoked: false,
            }))
        }
    }

    #[tokio::test]
    async fn routes_by_shape() {
        let (key, hash) = api_key::generate();
        let lookup: Arc<dyn KeyLookup> = Arc::new(OneKey(hash));
        let oidc = OidcAuthenticator::new(vec![OidcIssuer::new(
            "http://127.0.0.1:9",
            vec!["gatehouse".into()],
        )])
        .unwrap();
        let auth = CombinedAuthenticator::new(Some(ApiKeyAuthenticator::new(lookup)), Some(oidc));

        assert_eq!(auth.authenticate(&key).await.unwrap().subject, "key:ci");
        // A JWT goes to OIDC (and fails there on the issuer, not as an unknown API key).
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2V2aWwifQ.c2ln";
        assert_eq!(
            auth.authenticate(jwt).await,
            Err(AuthError::Rejected("untrusted issuer".into()))
        );
        for other in ["", "hunter2", "gh_short", "a.b", "Bearer x.y.z"] {
            assert_eq!(
                auth.authenticate(other).await,
                Err(AuthError::Rejected("unrecognised credential".into())),
                "{other:?}"
            );
        }

        let none = CombinedAuthenticator::new(None, None);
        assert_eq!(
            none.authenticate(&key).await,
            Err(AuthError::Rejected("API keys are not enabled".into()))
        );
        assert_eq!(
            none.authenticate(jwt).await,
            Err(AuthError::Rejected("OIDC tokens are not enabled".into()))
        );
    }
}
