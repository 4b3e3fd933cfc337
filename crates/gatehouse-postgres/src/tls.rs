//! TLS towards upstream servers, with libpq's sslmode semantics.
//!
//! `prefer` and `require` encrypt without verifying the certificate, exactly as libpq does;
//! `verify-full` checks the chain against the system roots plus an optional CA file, and the
//! host name. Use `verify-full` in production.

use gatehouse_core::{UpstreamTls, UpstreamTlsMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The client TLS configuration for an upstream, or `None` for `disable`.
pub fn client_config(tls: &UpstreamTls) -> Result<Option<Arc<ClientConfig>>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match tls.mode {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        UpstreamTlsMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if let Some(path) = &tls.ca_file {
                let ca_error = |reason: String| TlsSetupError::CaFile {
                    path: path.display().to_string(),
                    reason,
                };
                let certs =
                    CertificateDer::pem_file_iter(path).map_err(|e| ca_error(e.to_string()))?;
                for cert in certs {
                    roots
                        .add(cert.map_err(|e| ca_error(e.to_string()))?)
                        .map_err(|e| ca_error(e.to_string()))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

/// Encrypts without authenticating the server (libpq `prefer`/`require`).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `tls-server-end-point` channel binding data (RFC 5929): a hash of the server's
/// certificate with the hash of its signature algorithm (SHA-256 for MD5 and SHA-1). `None`
/// when the algorithm is one PostgreSQL does not bind either (Ed25519, RSA-PSS, unknown).
pub fn end_point_hash(der: &[u8]) -> Option<Vec<u8>> {
    use sha2::{Digest, Sha256, Sha384, Sha512};
    let oid = signature_algorithm(der)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let hash = match oid {
        // md5WithRSA (1.2.840.113549.1.1.4), sha1WithRSA (.5), sha256WithRSA (.11)
        [prefix @ .., 4 | 5 | 11] if prefix == RSA => 256,
        [prefix @ .., 12] if prefix == RSA => 384,
        [prefix @ .., 13] if prefix == RSA => 512,
        // ecdsa-with-SHA1 (1.2.840.10045.4.1), -SHA256 (.4.3.2), -SHA384 (.4.3.3), -SHA512 (.4.3.4)
        [prefix @ .., 1] if prefix == ECDSA => 256,
        [prefix @ .., 3, 2] if prefix == ECDSA => 256,
        [prefix @ .., 3, 3] if prefix == ECDSA => 384,
        [prefix @ .., 3, 4] if prefix == ECDSA => 512,
        _ => return None,
    };
    Some(match hash {
        256 => Sha256::digest(der).to_vec(),
        384 => Sha384::digest(der).to_vec(),
        _ => Sha512::digest(der).to_vec(),
    })
}

/// The signatureAlgorithm OID of an X.509 certificate (DER): `Certificate ::= SEQUENCE {
/// tbsCertificate, signatureAlgorithm AlgorithmIdentifier, signature }`.
fn signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    let (outer, _) = der_element(der, 0x30)?;
    let (_, after_tbs) = der_element(outer, 0x30)?;
    let (algorithm, _) = der_element(after_tbs, 0x30)?;
    let (oid, _) = der_element(algorithm, 0x06)?;
    Some(oid)
}

/// The contents of a DER element with tag `tag` at the front of `input`, and what follows.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        // rcgen signs with ECDSA P-256 SHA-256 by default.
        let der = cert.cert.der().to_vec();
        let hash = super::end_point_hash(&der).unwrap();
        assert_eq!(hash.len(), 32);
        assert_eq!(hash, <sha2::Sha256 as sha2::Digest>::digest(&der).to_vec());
        assert!(super::end_point_hash(b"\x30\x03garbage").is_none());
        assert!(super::end_point_hash(&[]).is_none());
    }
}
