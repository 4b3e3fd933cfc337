//! The resolved configuration the server runs on: defaults applied, paths absolute,
//! secrets read, everything validated.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::Issue;
use super::secret::Secret;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Absolute path of the file this was loaded from.
    pub source: PathBuf,
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub admin: AdminConfig,
    pub audit: AuditConfig,
    pub state: StateConfig,
    pub auth: AuthConfig,
    pub postgres: PostgresConfig,
    pub connections: BTreeMap<String, ConnectionConfig>,
    /// Guardrail rules: the global ones and each connection's (docs/policy.md).
    pub policy: gatehouse_policy::RuleSet,
    pub notifications: NotificationsConfig,
    pub recording: RecordingConfig,
    /// Valid but risky settings (plaintext on a non-loopback address, fsync off...), for
    /// `config check` and the startup log.
    pub warnings: Vec<Issue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Identities in any of these groups get the admin role.
    pub admin_groups: Vec<String>,
    /// `/metrics` needs a bearer credential of an admin.
    pub metrics_require_auth: bool,
    /// Most admin API connections open at once (further ones wait in the kernel's backlog).
    pub max_connections: usize,
    /// Longest an admin connection may take to send a request's headers, and may stay idle.
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub dir: PathBuf,
    pub fsync: Fsync,
    /// With `fsync: periodic`, the longest a written record waits for its sync.
    pub fsync_interval: Duration,
    /// Free space below which an `audit.disk_low` record and a warning are written (0: off).
    pub low_space_warning: u64,
    /// Signed checkpoints of the log's Merkle tree (docs/audit-checkpoints.md).
    pub checkpoints: CheckpointConfig,
    /// SIEM receivers the log is streamed to (docs/siem.md).
    pub sinks: Sinks,
    /// Witnesses each checkpoint is submitted to (docs/witnesses.md).
    pub witnesses: Vec<gatehouse_witness::WitnessTarget>,
}

/// The configured sinks. Compared by their printed form, which never shows a token.
#[derive(Debug, Clone, Default)]
pub struct Sinks(pub Vec<gatehouse_sink::SinkConfig>);

impl PartialEq for Sinks {
    fn eq(&self, other: &Self) -> bool {
        format!("{:?}", self.0) == format!("{:?}", other.0)
    }
}

impl Eq for Sinks {}

/// Signed checkpoints: where the key and the kept checkpoint live, and how often to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    pub enabled: bool,
    /// The Ed25519 signing key (C2SP note key text); created with mode 0600 if absent.
    pub signing_key: PathBuf,
    /// The latest checkpoint, kept outside the audit directory.
    pub state_file: PathBuf,
    /// The checkpoints' origin line: this log's name.
    pub origin: String,
    pub interval: Duration,
    pub every: u64,
}

/// Session recording (docs/recording.md).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    pub max_session_bytes: u64,
    pub rows_per_statement: u64,
    /// Recordings older than this are pruned (audited); `None` keeps them.
    pub retention: Option<Duration>,
    /// The secret recordings are sealed with; never formatted.
    pub encryption_key: Option<super::secret::Secret>,
}

/// Whether each audit record is fsynced before the action it records proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    Always,
    /// Written before the action proceeds (survives a gateway crash), synced within
    /// `fsync_interval` (a power loss can lose that window).
    Periodic,
    /// Not durable: a crash can lose the latest records. Benchmarks only.
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateConfig {
    Sqlite { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub api_keys: ApiKeysConfig,
    pub oidc: Vec<OidcConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeysConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// Exactly as the tokens' `iss` claim must read; discovery is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub audiences: Vec<String>,
    pub groups_claim: String,
    pub subject_claim: String,
    pub algorithms: Vec<JwtAlgorithm>,
    pub clock_skew: Duration,
    pub jwks_refetch_cooldown: Duration,
    pub ca_file: Option<PathBuf>,
}

/// The only JWT signature algorithms accepted. Shared-secret (HS*) and unsigned (`none`)
/// tokens are refused at config check, so no configuration can enable them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    RS256,
    ES256,
    EdDSA,
}

impl JwtAlgorithm {
    pub const ALL: [JwtAlgorithm; 3] = [
        JwtAlgorithm::RS256,
        JwtAlgorithm::ES256,
        JwtAlgorithm::EdDSA,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `postgres:` section (owned and checked by the PostgreSQL adapter).
pub use gatehouse_config::TlsFiles;
pub use gatehouse_postgres::settings::Settings as PostgresConfig;
pub use gatehouse_postgres::RequireTls;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The map key; clients select the connection by this name.
    pub name: String,
    pub protocol: Protocol,
    pub upstream: UpstreamConfig,
    pub allow: AllowConfig,
    /// Whether clients may call server functions directly (PostgreSQL fastpath).
    pub allow_fastpath: bool,
    /// Time-bound access by request (`gatehouse access request`), when set.
    pub grants: Option<GrantsConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantsConfig {
    /// Groups whose members approve grants; empty: the admin groups.
    pub approvers: Vec<String>,
    pub required: u32,
    pub max_duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    /// Held by the gateway, never shown to the client.
    pub password: Option<Secret>,
    pub tls: UpstreamTls,
    /// How the password may be proven to the server.
    pub auth: Vec<UpstreamAuth>,
}

/// Ways the gateway may prove the held password to the upstream (libpq's `require_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UpstreamAuth {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "password")]
    Password,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    pub mode: UpstreamTlsMode,
    /// Extra trusted CA (PEM) in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Name to verify in the server certificate; defaults to `host`.
    pub server_name: Option<String>,
}

/// libpq's `sslmode` values, minus `allow`/`verify-ca`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    Disable,
    /// TLS if the server offers it, unverified; plaintext otherwise.
    Prefer,
    /// TLS or fail; certificate not verified.
    Require,
    /// TLS with the certificate chain and host name verified.
    VerifyFull,
}

/// Who may use a connection. An identity is allowed when any rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowConfig {
    pub groups: Vec<String>,
    /// `key:<name>` for API keys, `<issuer>#<sub>` for OIDC identities.
    pub subjects: Vec<String>,
    pub any_authenticated: bool,
}

/// Where approval transitions are announced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationsConfig {
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    pub format: WebhookFormat,
    /// The signing key (the bytes behind `whsec_...`), for `standard`.
    pub secret: Option<Secret>,
    /// Event kinds sent (`approval.requested`, ...).
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// A Slack-compatible incoming webhook: `{"text": ...}`.
    Slack,
    /// Standard Webhooks: a JSON event, signed with HMAC-SHA256 in `webhook-signature`.
    Standard,
}

/// The approval events a webhook can be sent.
pub const APPROVAL_EVENTS: [&str; 7] = [
    "approval.requested",
    "approval.approved",
    "approval.denied",
    "approval.expired",
    "approval.abandoned",
    "approval.cancelled",
    "approval.executed",
];
