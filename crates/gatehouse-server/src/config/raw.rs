//! The file as written: serde structs mirroring the YAML, unknown keys refused.
//!
//! Everything optional is an `Option` here; defaults live in `resolve`, so one place
//! decides them. Checks that need only one value (durations, listen addresses, enum
//! spellings, secret reference syntax) happen during deserialisation, which gives their
//! errors a line and key path for free.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::model::{
    Fsync, JwtAlgorithm, LogFormat, LogLevel, Protocol, UpstreamAuth, UpstreamTlsMode,
    WebhookFormat,
};
use super::secret::SecretRef;
use gatehouse_config::{ConfigDuration, ConfigSize, Listen};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub data_dir: Option<PathBuf>,
    pub log: Option<RawLog>,
    pub admin: Option<RawAdmin>,
    pub audit: Option<RawAudit>,
    pub state: Option<RawState>,
    pub auth: Option<RawAuth>,
    pub postgres: Option<gatehouse_postgres::settings::RawSection>,
    pub connections: Option<UniqueMap<RawConnection>>,
    pub policy: Option<gatehouse_policy::config::RawPolicy>,
    pub notifications: Option<RawNotifications>,
    pub recording: Option<RawRecording>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecording {
    pub enabled: Option<bool>,
    pub dir: Option<PathBuf>,
    pub max_session_bytes: Option<ConfigSize>,
    pub rows_per_statement: Option<u64>,
    pub retention: Option<ConfigDuration>,
    pub encryption_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotifications {
    pub webhooks: Option<Vec<RawWebhook>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub name: String,
    pub url: String,
    pub format: Option<WebhookFormat>,
    pub secret: Option<SecretRef>,
    pub events: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub level: Option<LogLevel>,
    pub format: Option<LogFormat>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<Listen>,
    pub admin_groups: Option<Vec<String>>,
    pub metrics_require_auth: Option<bool>,
    pub max_connections: Option<usize>,
    pub request_timeout: Option<ConfigDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub dir: Option<PathBuf>,
    pub fsync: Option<Fsync>,
    pub fsync_interval: Option<String>,
    pub low_space_warning: Option<ConfigSize>,
    pub checkpoints: Option<RawCheckpoints>,
    pub sinks: Option<Vec<RawSink>>,
    pub witnesses: Option<Vec<RawWitness>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWitness {
    pub url: String,
    pub key: String,
    pub timeout: Option<ConfigDuration>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSink {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    // syslog
    pub address: Option<String>,
    pub tls: Option<RawSinkTls>,
    pub facility: Option<String>,
    pub app_name: Option<String>,
    pub confirm_window: Option<ConfigDuration>,
    pub connect_timeout: Option<ConfigDuration>,
    pub write_timeout: Option<ConfigDuration>,
    // hec
    pub url: Option<String>,
    pub token: Option<String>,
    pub channel: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub path: Option<String>,
    pub ack_path: Option<String>,
    pub index: Option<String>,
    pub source: Option<String>,
    pub sourcetype: Option<String>,
    pub request_timeout: Option<ConfigDuration>,
    pub ack_timeout: Option<ConfigDuration>,
    // both
    pub hostname: Option<String>,
    pub batch: Option<RawSinkBatch>,
    pub backoff: Option<RawSinkBackoff>,
    pub alarm_lag: Option<u64>,
    pub alarm_after: Option<ConfigDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSinkTls {
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSinkBackoff {
    pub initial: Option<ConfigDuration>,
    pub max: Option<ConfigDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSinkBatch {
    pub max_records: Option<usize>,
    pub max_bytes: Option<ConfigSize>,
    pub max_wait: Option<ConfigDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheckpoints {
    pub enabled: Option<bool>,
    pub signing_key: Option<String>,
    pub state_file: Option<PathBuf>,
    pub origin: Option<String>,
    pub interval: Option<ConfigDuration>,
    pub every: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    pub sqlite: Option<RawSqlite>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSqlite {
    pub path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub api_keys: Option<RawApiKeys>,
    pub oidc: Option<Vec<RawOidc>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKeys {
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOidc {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub groups_claim: Option<String>,
    pub subject_claim: Option<String>,
    pub algorithms: Option<Vec<JwtAlgorithm>>,
    pub clock_skew: Option<ConfigDuration>,
    pub jwks_refetch_cooldown: Option<ConfigDuration>,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnection {
    pub protocol: Protocol,
    pub upstream: RawUpstream,
    pub allow: Option<RawAllow>,
    pub allow_fastpath: Option<bool>,
    pub rules: Option<Vec<gatehouse_policy::config::RawRule>>,
    pub grants: Option<RawGrants>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrants {
    pub approvers: Option<Vec<String>>,
    pub required: Option<u32>,
    pub max_duration: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub host: String,
    pub port: Option<u16>,
    pub database: String,
    pub user: String,
    pub password: Option<SecretRef>,
    pub tls: Option<RawUpstreamTls>,
    pub auth: Option<Vec<UpstreamAuth>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub mode: Option<UpstreamTlsMode>,
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAllow {
    pub groups: Option<Vec<String>>,
    pub subjects: Option<Vec<String>>,
    pub any_authenticated: Option<bool>,
}

/// A mapping whose keys must be unique. serde_norway keeps the last of duplicate keys
/// silently; a second `demo:` connection overriding the first must be an error instead.
#[derive(Debug)]
pub(crate) struct UniqueMap<V>(pub BTreeMap<String, V>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap(BTreeMap::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of names to settings")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("{key:?} is defined twice")));
                    }
                    let value = map.next_value()?;
                    out.insert(key, value);
                }
                Ok(UniqueMap(out))
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for JwtAlgorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = JwtAlgorithm;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of RS256, ES256, EdDSA")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<JwtAlgorithm, E> {
                if let Some(alg) = JwtAlgorithm::ALL.into_iter().find(|a| a.as_str() == v) {
                    return Ok(alg);
                }
                let why = if v.starts_with("HS") || v.eq_ignore_ascii_case("none") {
                    "shared-secret (HS*) and unsigned (none) tokens are never accepted"
                } else {
                    "not supported"
                };
                Err(E::custom(format_args!(
                    "algorithm {v:?}: {why}; allowed: RS256, ES256, EdDSA"
                )))
            }
        }
        deserializer.deserialize_str(V)
    }
}
