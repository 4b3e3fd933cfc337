//! Named connections: which target a connection name reaches and who may use it.

use crate::identity::Identity;
use crate::secret::Secret;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The wire protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Postgres,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
        }
    }
}

/// Who may use a connection. An identity matches when its principal (see
/// [`Identity::principal`]: `key:<name>` or `<issuer>#<sub>`) is listed, it is in a listed
/// group, or the connection is explicitly open to every authenticated identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    pub subjects: Vec<String>,
    pub groups: Vec<String>,
    pub any_authenticated: bool,
    /// Time-bound access: identities without standing access may ask for a grant.
    pub grants: Option<GrantPolicy>,
}

/// Who approves access grants to a connection, and for how long one may be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantPolicy {
    pub approvers: Vec<String>,
    pub required: u32,
    pub max: std::time::Duration,
}

impl Access {
    pub fn permits(&self, identity: &Identity) -> bool {
        self.any_authenticated
            || self.subjects.contains(&identity.principal())
            || identity.in_any_group(&self.groups)
    }
}

/// TLS towards the upstream, with libpq's mode names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTlsMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub mode: UpstreamTlsMode,
    /// Extra trusted CA certificates (PEM) for verify-full; system roots are trusted too.
    pub ca_file: Option<PathBuf>,
    /// Name to verify the certificate against; defaults to the host.
    pub server_name: Option<String>,
}

/// A PostgreSQL server the gateway connects to with the credential it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTarget {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
    pub tls: UpstreamTls,
    /// How the gateway may prove the password to the server. The password is only ever sent
    /// by a method listed here (like libpq's `require_auth`).
    pub auth_methods: Vec<UpstreamAuth>,
    /// Whether clients may call server functions directly (fastpath); refused otherwise.
    pub allow_fastpath: bool,
}

/// Ways of proving the held password to an upstream PostgreSQL server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// SCRAM-SHA-256 (with channel binding when the connection is TLS and the server offers it).
    ScramSha256,
    /// MD5 challenge-response: replayable and crackable; off unless configured.
    Md5,
    /// The password itself: only over TLS it is not seen by the network; off unless configured.
    Password,
}

impl UpstreamAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamAuth::ScramSha256 => "scram-sha-256",
            UpstreamAuth::Md5 => "md5",
            UpstreamAuth::Password => "password",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Postgres(PostgresTarget),
}

impl Target {
    pub fn protocol(&self) -> Protocol {
        match self {
            Target::Postgres(_) => Protocol::Postgres,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub name: String,
    pub access: Access,
    pub target: Target,
}

/// All configured connections, by name.
#[derive(Debug, Clone, Default)]
pub struct Connections(HashMap<String, Arc<Connection>>);

impl Connections {
    pub fn new(list: impl IntoIterator<Item = Connection>) -> Self {
        Connections(
            list.into_iter()
                .map(|c| (c.name.clone(), Arc::new(c)))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Connection>> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Connection>> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
