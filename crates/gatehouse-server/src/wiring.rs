//! Turns the validated configuration into the core's and the adapters' types.

use crate::config::{self, Config};
use anyhow::Context;
use gatehouse_auth::{
    ApiKeyAuthenticator, CombinedAuthenticator, KeyInfo, KeyLookup, OidcAuthenticator, OidcIssuer,
};
use gatehouse_core::connection::GrantPolicy;
use gatehouse_core::{
    Access, Connection, Connections, PostgresTarget, Secret, Target, UpstreamAuth, UpstreamTls,
    UpstreamTlsMode,
};
use gatehouse_store::Store;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

pub fn connections(config: &Config) -> Connections {
    Connections::new(config.connections.values().map(|c| {
        let up = &c.upstream;
        let target = match c.protocol {
            config::Protocol::Postgres => Target::Postgres(PostgresTarget {
                host: up.host.clone(),
                port: up.port,
                database: up.database.clone(),
                user: up.user.clone(),
                password: up.password.as_ref().map(|p| Secret::new(p.expose())),
                tls: UpstreamTls {
                    mode: match up.tls.mode {
                        config::UpstreamTlsMode::Disable => UpstreamTlsMode::Disable,
                        config::UpstreamTlsMode::Prefer => UpstreamTlsMode::Prefer,
                        config::UpstreamTlsMode::Require => UpstreamTlsMode::Require,
                        config::UpstreamTlsMode::VerifyFull => UpstreamTlsMode::VerifyFull,
                    },
                    ca_file: up.tls.ca_file.clone(),
                    server_name: up.tls.server_name.clone(),
                },
                auth_methods: up
                    .auth
                    .iter()
                    .map(|a| match a {
                        config::UpstreamAuth::ScramSha256 => UpstreamAuth::ScramSha256,
                        config::UpstreamAuth::Md5 => UpstreamAuth::Md5,
                        config::UpstreamAuth::Password => UpstreamAuth::Password,
                    })
                    .collect(),
                allow_fastpath: c.allow_fastpath,
            }),
        };
        Connection {
            name: c.name.clone(),
            access: Access {
                subjects: c.allow.subjects.clone(),
                groups: c.allow.groups.clone(),
                any_authenticated: c.allow.any_authenticated,
                grants: c.grants.as_ref().map(|g| GrantPolicy {
                    approvers: g.approvers.clone(),
                    required: g.required,
                    max: g.max_duration,
                }),
            },
            target,
        }
    }))
}

/// Looks API keys up in the state store.
struct StoreKeys(Arc<dyn Store>);

#[async_trait::async_trait]
impl KeyLookup for StoreKeys {
    async fn find_by_hash(&self, hash: &str) -> Result<Option<KeyInfo>, String> {
        let record = self.0.key_by_hash(hash).await.map_err(|e| e.to_string())?;
        Ok(record.map(|r| KeyInfo {
            revoked: r.is_revoked(),
            name: r.name,
            groups: r.groups,
        }))
    }
}

pub fn authenticator(
    config: &Config,
    store: Arc<dyn Store>,
) -> anyhow::Result<CombinedAuthenticator> {
    let api_keys = config.auth.api_keys.enabled.then(|| {
        let lookup: Arc<dyn KeyLookup> = Arc::new(StoreKeys(store));
        ApiKeyAuthenticator::new(lookup)
    });
    let oidc = if config.auth.oidc.is_empty() {
        None
    } else {
        let mut issuers = Vec::new();
        for o in &config.auth.oidc {
            let mut issuer = OidcIssuer::new(o.issuer.clone(), o.audiences.clone());
            issuer.groups_claim = o.groups_claim.clone();
            issuer.subject_claim = o.subject_claim.clone();
            issuer.algorithms = o
                .algorithms
                .iter()
                .map(|a| match a {
                    config::JwtAlgorithm::RS256 => gatehouse_auth::Algorithm::RS256,
                    config::JwtAlgorithm::ES256 => gatehouse_auth::Algorithm::ES256,
                    config::JwtAlgorithm::EdDSA => gatehouse_auth::Algorithm::EdDSA,
                })
                .collect();
            issuer.clock_skew = o.clock_skew;
            issuer.jwks_refetch_cooldown = o.jwks_refetch_cooldown;
            if let Some(path) = &o.ca_file {
                issuer.extra_ca_pem = Some(
                    std::fs::read(path)
                        .with_context(|| format!("reading CA file {}", path.display()))?,
                );
            }
            issuers.push(issuer);
        }
        Some(OidcAuthenticator::new(issuers).context("OIDC configuration")?)
    };
    Ok(CombinedAuthenticator::new(api_keys, oidc))
}

pub fn server_tls(files: &config::TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificate {}", files.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .with_context(|| format!("reading private key {}", files.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    Ok(Arc::new(config))
}

pub fn pg_config(config: &Config) -> anyhow::Result<gatehouse_postgres::PgConfig> {
    let pg = &config.postgres;
    Ok(gatehouse_postgres::PgConfig {
        tls: pg.tls.as_ref().map(server_tls).transpose()?,
        require_tls: pg.require_tls,
        handshake_timeout: pg.handshake_timeout,
        limits: gatehouse_postgres::RelayLimits {
            max_message: pg.max_message,
            idle_timeout: pg.idle_timeout,
        },
    })
}
