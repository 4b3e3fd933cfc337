//! Bounded HTTP GETs of JSON documents from an identity provider.
//!
//! The IdP is outside our control, so every request has a timeout and a response size cap,
//! redirects are not followed (a redirect could downgrade https to http), and TLS uses rustls
//! with the ring provider and an explicit root store.

use super::error::{ConfigError, FetchError};
use reqwest::header::{ACCEPT, CONTENT_LENGTH};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// Whole-request timeout (connect, headers and body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery document or JWKS we read.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The operating system's trusted roots. Unreadable entries are logged and skipped.
pub(crate) fn system_roots() -> RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    for err in &loaded.errors {
        tracing::warn!(error = %err, "could not load some system CA certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if ignored > 0 {
        tracing::warn!(ignored, "ignored unparsable system CA certificates");
    }
    if added == 0 {
        tracing::warn!("no system CA certificates found; https issuers need an extra CA");
    }
    roots
}

/// Adds the certificates of a PEM bundle to `roots`.
pub(crate) fn add_pem_roots(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), String> {
    let mut count = 0usize;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("invalid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("invalid certificate: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("no certificates in PEM".into());
    }
    Ok(())
}

/// An HTTP client trusting exactly `roots`.
pub(crate) fn client(roots: RootCertStore) -> Result<reqwest::Client, ConfigError> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ConfigError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::HttpClient(e.to_string()))
}

/// GETs `url` and parses the body as JSON, reading at most [`MAX_RESPONSE_BYTES`].
pub(crate) async fn get_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, FetchError> {
    let request_error = |e: reqwest::Error| FetchError::Request {
        url: url.to_owned(),
        reason: e.without_url().to_string(),
    };
    let too_large = || FetchError::TooLarge {
        url: url.to_owned(),
        limit: MAX_RESPONSE_BYTES,
    };

    let mut response = client
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(request_error)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }

    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(request_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::Json {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}
