//! Raw file → [`Config`]: applies defaults, resolves paths and secrets, and checks what
//! spans several values. Collects every problem instead of stopping at the first.

use std::collections::BTreeMap;
use std::env::VarError;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::duration::parse_duration;
use super::error::{ConfigError, Issue};
use super::locate::{display_path, locate_nearest};
use super::model::*;
use super::raw::*;
use super::secret::{Secret, SecretRef};

pub(crate) const DEFAULT_DATA_DIR: &str = "data";
pub(crate) const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8080";
pub(crate) const DEFAULT_ADMIN_GROUP: &str = "gatehouse-admins";
pub(crate) const DEFAULT_UPSTREAM_PORT: u16 = 5432;
const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
const DEFAULT_JWKS_COOLDOWN: Duration = Duration::from_secs(30);
const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 256;
const DEFAULT_ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_LOW_SPACE_WARNING: u64 = 1 << 30;
const DEFAULT_MAX_GRANT: Duration = Duration::from_secs(8 * 3600);
const MAX_GRANT: Duration = Duration::from_secs(7 * 24 * 3600);

pub(crate) struct Resolver<'a> {
    text: &'a str,
    /// The config file as the user named it (for messages).
    file: &'a Path,
    /// Absolute directory of the config file; relative paths resolve against it.
    base: PathBuf,
    env: &'a dyn Fn(&str) -> Result<String, VarError>,
    /// Offline tools (audit verify/export) check references but never read secrets.
    pub(crate) read_secrets: bool,
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(
        text: &'a str,
        file: &'a Path,
        base: PathBuf,
        env: &'a dyn Fn(&str) -> Result<String, VarError>,
    ) -> Self {
        Resolver {
            text,
            file,
            base,
            env,
            read_secrets: true,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn resolve(
        mut self,
        raw: RawConfig,
        source: PathBuf,
    ) -> Result<Config, ConfigError> {
        let data_dir = self.dir(&["data_dir"], raw.data_dir, DEFAULT_DATA_DIR.into());
        let log = log(raw.log.unwrap_or_default());
        let admin = self.admin(raw.admin.unwrap_or_default());
        let audit = self.audit(raw.audit.unwrap_or_default(), &data_dir);
        let state = self.state(raw.state.unwrap_or_default(), &data_dir);
        let auth = self.auth(raw.auth.unwrap_or_default());
        let postgres =
            gatehouse_postgres::settings::resolve(raw.postgres.unwrap_or_default(), &mut self);
        let mut raw_connections = raw.connections.unwrap_or_default().0;
        let connection_rules: Vec<_> = raw_connections
            .iter_mut()
            .filter_map(|(name, c)| c.rules.take().map(|rules| (name.clone(), rules)))
            .collect();
        let connections = self.connections(raw_connections);
        let policy = gatehouse_policy::config::resolve(&mut self, raw.policy, connection_rules);
        let notifications = self.notifications(raw.notifications.unwrap_or_default());
        let recording = self.recording(raw.recording.unwrap_or_default(), &data_dir);

        let by_line = |i: &Issue| i.line.unwrap_or(usize::MAX);
        if !self.errors.is_empty() {
            self.errors.sort_by_key(by_line);
            return Err(ConfigError::Invalid {
                issues: self.errors,
            });
        }
        self.warnings.sort_by_key(by_line);
        Ok(Config {
            source,
            data_dir,
            log,
            admin,
            audit,
            state,
            auth,
            postgres,
            connections,
            policy,
            notifications,
            recording,
            warnings: self.warnings,
        })
    }

    fn issue(&self, path: &[&str], message: String) -> Issue {
        Issue {
            file: self.file.to_path_buf(),
            line: locate_nearest(self.text, path),
            key: display_path(path),
            message,
        }
    }

    fn error(&mut self, path: &[&str], message: impl Into<String>) {
        let issue = self.issue(path, message.into());
        self.errors.push(issue);
    }

    fn warn(&mut self, path: &[&str], message: impl Into<String>) {
        let issue = self.issue(path, message.into());
        self.warnings.push(issue);
    }

    /// Makes `p` absolute against the config directory, dropping `.` components.
    fn absolute(&self, p: &Path) -> PathBuf {
        self.base.join(p).components().collect()
    }

    fn dir(&mut self, key: &[&str], given: Option<PathBuf>, default: PathBuf) -> PathBuf {
        let p = given.unwrap_or(default);
        if p.as_os_str().is_empty() {
            self.error(key, "path must not be empty");
        }
        self.absolute(&p)
    }

    /// A file that must exist now (certificates, keys, CA bundles): catching a typo at
    /// `config check` beats failing at the first TLS handshake.
    fn existing_file(&mut self, key: &[&str], p: &Path) -> PathBuf {
        if p.as_os_str().is_empty() {
            self.error(key, "path must not be empty");
            return PathBuf::new();
        }
        let abs = self.absolute(p);
        if !abs.is_file() {
            self.error(key, format!("file not found: {}", abs.display()));
        }
        abs
    }

    /// Group names, subjects, audiences: non-empty and without stray whitespace.
    fn names(&mut self, key: &[&str], list: Vec<String>) -> Vec<String> {
        for (i, name) in list.iter().enumerate() {
            if name.is_empty() || name.trim() != name {
                let idx = format!("[{i}]");
                let path: Vec<&str> = key.iter().copied().chain([idx.as_str()]).collect();
                self.error(
                    &path,
                    "must be non-empty without leading or trailing spaces",
                );
            }
        }
        list
    }

    fn non_empty(&mut self, key: &[&str], value: String) -> String {
        if value.trim().is_empty() {
            self.error(key, "must not be empty");
        }
        value
    }

    fn admin(&mut self, raw: RawAdmin) -> AdminConfig {
        let listen = raw
            .listen
            .map_or_else(|| default_addr(DEFAULT_ADMIN_LISTEN), |l| l.0);
        if !listen.ip().is_loopback() {
            self.warn(
                &["admin", "listen"],
                "the admin API is plain HTTP: bearer tokens cross the network in clear; \
                 keep it on loopback or behind a TLS proxy",
            );
        }
        let groups = raw
            .admin_groups
            .unwrap_or_else(|| vec![DEFAULT_ADMIN_GROUP.to_string()]);
        let admin_groups = self.names(&["admin", "admin_groups"], groups);
        if admin_groups.is_empty() {
            self.warn(
                &["admin", "admin_groups"],
                "no group gets the admin role: nobody (not even the bootstrap key) can use \
                 the admin API",
            );
        }
        let max_connections = raw.max_connections.unwrap_or(DEFAULT_ADMIN_MAX_CONNECTIONS);
        if !(1..=65_536).contains(&max_connections) {
            self.error(&["admin", "max_connections"], "must be between 1 and 65536");
        }
        let request_timeout = raw
            .request_timeout
            .map_or(DEFAULT_ADMIN_REQUEST_TIMEOUT, |d| d.0);
        if request_timeout.is_zero() {
            self.error(
                &["admin", "request_timeout"],
                "must be greater than 0: an idle connection would be kept forever",
            );
        }
        AdminConfig {
            listen,
            admin_groups,
            metrics_require_auth: raw.metrics_require_auth.unwrap_or(false),
            max_connections: max_connections.clamp(1, 65_536),
            request_timeout,
        }
    }

    fn audit(&mut self, raw: RawAudit, data_dir: &Path) -> AuditConfig {
        let dir = self.dir(&["audit", "dir"], raw.dir, data_dir.join("audit"));
        let fsync = raw.fsync.unwrap_or(Fsync::Always);
        if fsync == Fsync::Never {
            self.warn(
                &["audit", "fsync"],
                "audit records are not durable: a crash can lose the latest ones \
                 (use only for benchmarks)",
            );
        }
        let fsync_interval = match raw.fsync_interval {
            None => Duration::from_millis(10),
            Some(text) => match parse_duration(&text) {
                Ok(d) if !d.is_zero() && d <= Duration::from_secs(10) => d,
                Ok(_) => {
                    self.error(&["audit", "fsync_interval"], "must be between 1ms and 10s");
                    Duration::from_millis(10)
                }
                Err(e) => {
                    self.error(&["audit", "fsync_interval"], e.to_string());
                    Duration::from_millis(10)
                }
            },
        };
        let checkpoints = self.checkpoints(raw.checkpoints.unwrap_or_default(), data_dir, &dir);
        let sinks = Sinks(
            raw.sinks
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .filter_map(|(i, sink)| self.sink(i, sink))
                .collect(),
        );
        let mut names: Vec<&str> = sinks.0.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            self.error(
                &["audit", "sinks"],
                "sink names must be unique (they name the cursor files)",
            );
        }
        let witnesses: Vec<gatehouse_witness::WitnessTarget> = raw
            .witnesses
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, w)| self.witness(i, w))
            .collect();
        let mut witness_names: Vec<&str> = witnesses.iter().map(|w| w.key.name()).collect();
        witness_names.sort_unstable();
        if witness_names.windows(2).any(|w| w[0] == w[1]) {
            self.error(
                &["audit", "witnesses"],
                "each witness key may be listed once",
            );
        }
        if !witnesses.is_empty() && !checkpoints.enabled {
            self.error(
                &["audit", "witnesses"],
                "witnesses cosign checkpoints: turn audit.checkpoints on",
            );
        }
        AuditConfig {
            witnesses,
            dir,
            fsync,
            fsync_interval,
            low_space_warning: raw
                .low_space_warning
                .map_or(DEFAULT_LOW_SPACE_WARNING, |s| s.0),
            checkpoints,
            sinks,
        }
    }

    fn witness(
        &mut self,
        index: usize,
        raw: RawWitness,
    ) -> Option<gatehouse_witness::WitnessTarget> {
        let at = index.to_string();
        let fail = |this: &mut Self, field: &'static str, why: String| {
            this.error(&["audit", "witnesses", &at, field], why);
        };
        let key = gatehouse_tlog::CosignatureVerifier::parse(raw.key.trim())
            .map_err(|e| {
                fail(
                    self,
                    "key",
                    format!("not a witness key (NAME+KEYID+BASE64, type 0x04): {e}"),
                )
            })
            .ok();
        let url = raw.url.trim_end_matches('/').to_owned();
        // No user:password@ (it would be written into every audit.witness_failed record).
        let authority = url
            .split_once("://")
            .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
        let url_ok = (url.starts_with("http://") || url.starts_with("https://"))
            && !url.contains(char::is_whitespace)
            && !authority.contains('@');
        if !url_ok {
            fail(
                self,
                "url",
                "must be an http:// or https:// URL without credentials (the submission prefix)"
                    .into(),
            );
        }
        let timeout = raw.timeout.map_or(Duration::from_secs(10), |d| d.0);
        let timeout_ok = !timeout.is_zero() && timeout <= Duration::from_secs(300);
        if !timeout_ok {
            fail(self, "timeout", "must be between 1ms and 5m".into());
        }
        let ca_file = raw.ca_file.map(|p| self.absolute(&p));
        let key = key?;
        (url_ok && timeout_ok).then_some(gatehouse_witness::WitnessTarget {
            url,
            key,
            timeout,
            ca_file,
        })
    }

    fn sink(&mut self, index: usize, raw: RawSink) -> Option<gatehouse_sink::SinkConfig> {
        use gatehouse_sink::{Facility, HecConfig, SinkConfig, SyslogConfig, Target, TlsConfig};
        let at = index.to_string();
        let key = |field: &'static str| ["audit", "sinks", "", field];
        let fail = |this: &mut Self, field: &'static str, why: &str| {
            let mut path = key(field);
            path[2] = &at;
            this.error(&path, why.to_owned());
        };
        let valid_name = !raw.name.is_empty()
            && raw.name.len() <= 64
            && raw
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid_name {
            fail(
                self,
                "name",
                "letters, digits, '-', '_' and '.', at most 64",
            );
        }
        let target = match raw.kind.as_str() {
            "syslog" => {
                let Some(address) = raw.address.clone() else {
                    fail(self, "address", "a syslog sink needs address: HOST:PORT");
                    return None;
                };
                let mut syslog = SyslogConfig::new(address);
                if let Some(tls) = raw.tls {
                    syslog.tls = Some(TlsConfig {
                        ca_file: tls.ca_file.map(|p| self.absolute(&p)),
                        server_name: tls.server_name,
                    });
                }
                if let Some(name) = &raw.facility {
                    match Facility::from_name(name) {
                        Some(f) => syslog.facility = f,
                        None => fail(self, "facility", "not an RFC 5424 facility name"),
                    }
                }
                if let Some(app) = raw.app_name {
                    syslog.app_name = app;
                }
                if let Some(d) = raw.confirm_window {
                    syslog.confirm_window = d.0;
                }
                if let Some(d) = raw.connect_timeout {
                    syslog.connect_timeout = d.0;
                }
                if let Some(d) = raw.write_timeout {
                    syslog.write_timeout = d.0;
                }
                Target::Syslog(syslog)
            }
            "hec" => {
                let Some(url) = raw.url.clone() else {
                    fail(self, "url", "a hec sink needs url: https://HOST:PORT");
                    return None;
                };
                let mut path = key("token");
                path[2] = &at;
                let token = match raw.token.as_deref() {
                    Some(reference) => gatehouse_config::Checks::secret(self, &path, reference),
                    None => {
                        fail(self, "token", "a hec sink needs token: ${file:PATH}");
                        None
                    }
                };
                let mut hec =
                    HecConfig::new(url, gatehouse_sink::Secret::new(token.unwrap_or_default()));
                hec.channel = raw.channel;
                hec.ca_file = raw.ca_file.map(|p| self.absolute(&p));
                if let Some(p) = raw.path {
                    hec.path = p;
                }
                if let Some(p) = raw.ack_path {
                    hec.ack_path = p;
                }
                hec.index = raw.index;
                if let Some(s) = raw.source {
                    hec.source = s;
                }
                if let Some(s) = raw.sourcetype {
                    hec.sourcetype = s;
                }
                if let Some(d) = raw.request_timeout {
                    hec.request_timeout = d.0;
                }
                if let Some(d) = raw.ack_timeout {
                    hec.ack_timeout = d.0;
                }
                Target::Hec(hec)
            }
            _ => {
                fail(self, "type", "must be syslog or hec");
                return None;
            }
        };
        let mut config = SinkConfig {
            name: raw.name,
            target,
            hostname: raw.hostname,
            ..SinkConfig::default()
        };
        if let Some(batch) = raw.batch {
            if let Some(n) = batch.max_records {
                config.batch.max_records = n;
            }
            if let Some(n) = batch.max_bytes {
                config.batch.max_bytes = usize::try_from(n.0).unwrap_or(usize::MAX);
            }
            if let Some(d) = batch.max_wait {
                config.batch.max_wait = d.0;
            }
            if config.batch.max_records == 0 || config.batch.max_bytes == 0 {
                fail(self, "batch", "limits must be above zero");
            }
        }
        if let Some(backoff) = raw.backoff {
            if let Some(d) = backoff.initial {
                config.backoff.initial = d.0;
            }
            if let Some(d) = backoff.max {
                config.backoff.max = d.0;
            }
            if config.backoff.initial.is_zero() || config.backoff.max < config.backoff.initial {
                fail(
                    self,
                    "backoff",
                    "initial must be above zero and at most max",
                );
            }
        }
        if let Some(n) = raw.alarm_lag {
            config.alarm.lag_records = n;
        }
        if let Some(d) = raw.alarm_after {
            config.alarm.after = d.0;
        }
        Some(config)
    }

    fn checkpoints(
        &mut self,
        raw: RawCheckpoints,
        data_dir: &Path,
        audit_dir: &Path,
    ) -> CheckpointConfig {
        const KEY: &[&str] = &["audit", "checkpoints", "signing_key"];
        let default_key = data_dir.join("signing").join("audit.key");
        let signing_key = match raw.signing_key.as_deref().map(SecretRef::parse) {
            None => default_key,
            Some(Ok(SecretRef::File(path))) => self.absolute(&path),
            Some(Ok(SecretRef::Env(_))) => {
                self.error(
                    KEY,
                    "must be ${file:PATH}: the gateway creates the key there on first start",
                );
                default_key
            }
            Some(Err(why)) => {
                self.error(KEY, why);
                default_key
            }
        };
        let state_file = match raw.state_file {
            Some(p) => self.dir(
                &["audit", "checkpoints", "state_file"],
                Some(p),
                PathBuf::new(),
            ),
            None => signing_key.with_file_name("audit-checkpoint.json"),
        };
        for (key, path) in [
            (KEY, &signing_key),
            (&["audit", "checkpoints", "state_file"][..], &state_file),
        ] {
            if path.starts_with(audit_dir) {
                self.error(
                    key,
                    "must be outside the audit directory: whoever can rewrite the log must not                      also hold what proves it was rewritten",
                );
            }
        }
        let origin = raw.origin.unwrap_or_else(default_origin);
        if !gatehouse_tlog::note::is_valid_key_name(&origin) {
            self.error(
                &["audit", "checkpoints", "origin"],
                "must be non-empty, without spaces or '+' (a C2SP key name)",
            );
        }
        let interval = raw.interval.map_or(Duration::from_secs(10), |d| d.0);
        if interval < Duration::from_millis(100) || interval > Duration::from_secs(86_400) {
            self.error(
                &["audit", "checkpoints", "interval"],
                "must be between 100ms and 24h",
            );
        }
        let every = raw.every.unwrap_or(10_000);
        if every == 0 {
            self.error(&["audit", "checkpoints", "every"], "must be at least 1");
        }
        let enabled = raw.enabled.unwrap_or(true);
        if !enabled {
            self.warn(
                &["audit", "checkpoints", "enabled"],
                "without signed checkpoints a cut or rewritten audit log cannot be proven",
            );
        }
        CheckpointConfig {
            enabled,
            signing_key,
            state_file,
            origin,
            interval,
            every,
        }
    }

    fn recording(&mut self, raw: RawRecording, data_dir: &Path) -> RecordingConfig {
        let dir = self.dir(&["recording", "dir"], raw.dir, data_dir.join("recordings"));
        let max_session_bytes = raw.max_session_bytes.map_or(64 << 20, |s| s.0);
        if max_session_bytes < gatehouse_core::record::MIN_MAX_BYTES {
            self.error(
                &["recording", "max_session_bytes"],
                "must be at least 64KiB",
            );
        }
        let retention = raw.retention.map(|d| d.0);
        if retention.is_some_and(|d| d < Duration::from_secs(3600)) {
            self.error(&["recording", "retention"], "must be at least 1h");
        }
        let encryption_key = raw.encryption_key.as_deref().and_then(|reference| {
            let secret = gatehouse_config::Checks::secret(
                self,
                &["recording", "encryption_key"],
                reference,
            )?;
            if self.read_secrets && secret.len() < 16 {
                self.error(
                    &["recording", "encryption_key"],
                    "must be at least 16 bytes",
                );
                return None;
            }
            Some(Secret::new(secret))
        });
        RecordingConfig {
            enabled: raw.enabled.unwrap_or(true),
            dir,
            max_session_bytes,
            rows_per_statement: raw.rows_per_statement.unwrap_or(1000),
            retention,
            encryption_key,
        }
    }

    fn state(&mut self, raw: RawState, data_dir: &Path) -> StateConfig {
        let sqlite = raw.sqlite.unwrap_or_default();
        let path = self.dir(
            &["state", "sqlite", "path"],
            sqlite.path,
            data_dir.join("state.db"),
        );
        StateConfig::Sqlite { path }
    }

    fn auth(&mut self, raw: RawAuth) -> AuthConfig {
        let api_keys = ApiKeysConfig {
            enabled: raw.api_keys.and_then(|k| k.enabled).unwrap_or(true),
        };
        let mut oidc = Vec::new();
        for (i, provider) in raw.oidc.unwrap_or_default().into_iter().enumerate() {
            let idx = format!("[{i}]");
            let resolved = self.oidc(&["auth", "oidc", &idx], provider);
            if oidc
                .iter()
                .any(|o: &OidcConfig| o.issuer == resolved.issuer)
            {
                self.error(&["auth", "oidc", &idx, "issuer"], "issuer is listed twice");
            }
            oidc.push(resolved);
        }
        AuthConfig { api_keys, oidc }
    }

    fn oidc(&mut self, at: &[&str], raw: RawOidc) -> OidcConfig {
        let key = |k: &'static str| -> Vec<&str> { at.iter().copied().chain([k]).collect() };
        if let Err(why) = check_issuer(&raw.issuer) {
            self.error(&key("issuer"), why);
        }
        let audiences = self.names(&key("audiences"), raw.audiences);
        if audiences.is_empty() {
            self.error(
                &key("audiences"),
                "list at least one audience: tokens minted for other services must not be accepted",
            );
        }
        let groups_claim = self.non_empty(
            &key("groups_claim"),
            raw.groups_claim.unwrap_or_else(|| "groups".into()),
        );
        let subject_claim = self.non_empty(
            &key("subject_claim"),
            raw.subject_claim.unwrap_or_else(|| "sub".into()),
        );
        let mut algorithms = raw.algorithms.unwrap_or_else(|| JwtAlgorithm::ALL.to_vec());
        if algorithms.is_empty() {
            self.error(
                &key("algorithms"),
                "list at least one of RS256, ES256, EdDSA",
            );
        }
        let mut seen = Vec::new();
        algorithms.retain(|a| {
            !seen.contains(a) && {
                seen.push(*a);
                true
            }
        });
        let ca_file = raw.ca_file.map(|p| self.existing_file(&key("ca_file"), &p));
        OidcConfig {
            issuer: raw.issuer,
            audiences,
            groups_claim,
            subject_claim,
            algorithms,
            clock_skew: raw.clock_skew.map_or(DEFAULT_CLOCK_SKEW, |d| d.0),
            jwks_refetch_cooldown: raw
                .jwks_refetch_cooldown
                .map_or(DEFAULT_JWKS_COOLDOWN, |d| d.0),
            ca_file,
        }
    }

    fn notifications(&mut self, raw: RawNotifications) -> NotificationsConfig {
        let mut webhooks = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, raw) in raw.webhooks.unwrap_or_default().into_iter().enumerate() {
            let index = format!("[{i}]");
            let at = |k: &'static str| -> Vec<String> {
                vec![
                    "notifications".into(),
                    "webhooks".into(),
                    index.clone(),
                    k.into(),
                ]
            };
            let key = at("url");
            let key: Vec<&str> = key.iter().map(String::as_str).collect();
            if !(raw.url.starts_with("http://") || raw.url.starts_with("https://")) {
                self.error(&key, "a webhook URL starts with http:// or https://");
            }
            let name_key = at("name");
            let name_key: Vec<&str> = name_key.iter().map(String::as_str).collect();
            if raw.name.trim().is_empty() || !names.insert(raw.name.clone()) {
                self.error(&name_key, "webhook names are non-empty and unique");
            }
            let format = raw.format.unwrap_or(WebhookFormat::Standard);
            let secret_key = at("secret");
            let secret_key: Vec<&str> = secret_key.iter().map(String::as_str).collect();
            let secret = match (format, raw.secret) {
                (WebhookFormat::Standard, None) => {
                    self.error(
                        &secret_key,
                        "a standard webhook is signed: set secret (whsec_ and base64, e.g. ${env:NAME})",
                    );
                    None
                }
                (WebhookFormat::Slack, Some(_)) => {
                    self.error(
                        &secret_key,
                        "a Slack webhook is not signed; its URL is the secret (put it in ${env:...})",
                    );
                    None
                }
                (_, None) => None,
                (_, Some(_)) if !self.read_secrets => Some(Secret::new(String::new())),
                (_, Some(r)) => match r.resolve(&self.base, self.env) {
                    Ok(secret) => {
                        let bytes = secret
                            .expose()
                            .strip_prefix("whsec_")
                            .and_then(|b| {
                                use base64::Engine as _;
                                base64::engine::general_purpose::STANDARD.decode(b).ok()
                            })
                            .filter(|b| b.len() >= 16);
                        match bytes {
                            Some(bytes) => Some(Secret::new(hex::encode(bytes))),
                            None => {
                                self.error(
                                    &secret_key,
                                    "the secret is whsec_ followed by the base64 of at least 16 random bytes",
                                );
                                None
                            }
                        }
                    }
                    Err(why) => {
                        self.error(&secret_key, &why);
                        None
                    }
                },
            };
            let events = match raw.events {
                None => APPROVAL_EVENTS.iter().map(|e| e.to_string()).collect(),
                Some(events) => {
                    let events_key = at("events");
                    let events_key: Vec<&str> = events_key.iter().map(String::as_str).collect();
                    for e in &events {
                        if !APPROVAL_EVENTS.contains(&e.as_str()) {
                            self.error(
                                &events_key,
                                format!(
                                    "{e:?} is not an approval event: {}",
                                    APPROVAL_EVENTS.join(", ")
                                ),
                            );
                        }
                    }
                    events
                }
            };
            webhooks.push(WebhookConfig {
                name: raw.name,
                url: raw.url,
                format,
                secret,
                events,
            });
        }
        NotificationsConfig { webhooks }
    }

    fn connections(
        &mut self,
        raw: BTreeMap<String, RawConnection>,
    ) -> BTreeMap<String, ConnectionConfig> {
        raw.into_iter()
            .map(|(name, conn)| {
                let resolved = self.connection(&name, conn);
                (name, resolved)
            })
            .collect()
    }

    fn connection(&mut self, name: &str, raw: RawConnection) -> ConnectionConfig {
        let at = ["connections", name];
        if !valid_connection_name(name) {
            self.error(
                &at,
                "connection names are non-empty and use only letters, digits, '_', '.' and '-'",
            );
        }
        let upstream = self.upstream(name, raw.upstream);
        let allow = self.allow(name, raw.allow.unwrap_or_default());
        ConnectionConfig {
            name: name.to_string(),
            protocol: raw.protocol,
            upstream,
            allow,
            allow_fastpath: raw.allow_fastpath.unwrap_or(false),
            grants: raw.grants.map(|g| self.grants(name, g)),
        }
    }

    fn grants(&mut self, name: &str, raw: RawGrants) -> GrantsConfig {
        let required = raw.required.unwrap_or(1);
        if !(1..=10).contains(&required) {
            self.error(
                &["connections", name, "grants", "required"],
                "between 1 and 10 approvers",
            );
        }
        let max_duration = raw.max_duration.map_or(DEFAULT_MAX_GRANT, |d| d.0);
        if max_duration.is_zero() || max_duration > MAX_GRANT {
            self.error(
                &["connections", name, "grants", "max_duration"],
                "between 1s and 7d",
            );
        }
        GrantsConfig {
            approvers: raw.approvers.unwrap_or_default(),
            required: required.clamp(1, 10),
            max_duration,
        }
    }

    fn upstream(&mut self, name: &str, raw: RawUpstream) -> UpstreamConfig {
        let key = |k: &'static str| ["connections", name, "upstream", k];
        let host = self.non_empty(&key("host"), raw.host);
        let port = raw.port.unwrap_or(DEFAULT_UPSTREAM_PORT);
        if port == 0 {
            self.error(&key("port"), "must be between 1 and 65535");
        }
        let database = self.non_empty(&key("database"), raw.database);
        let user = self.non_empty(&key("user"), raw.user);
        let password = raw.password.and_then(|r| match self.read_secrets {
            false => Some(Secret::new(String::new())),
            true => match r.resolve(&self.base, self.env) {
                Ok(secret) => Some(secret),
                Err(why) => {
                    self.error(&key("password"), why);
                    None
                }
            },
        });
        let tls_raw = raw.tls.unwrap_or_default();
        let tls_key = |k: &'static str| ["connections", name, "upstream", "tls", k];
        let ca_file = tls_raw
            .ca_file
            .map(|p| self.existing_file(&tls_key("ca_file"), &p));
        let server_name = tls_raw
            .server_name
            .map(|s| self.non_empty(&tls_key("server_name"), s));
        let mode = tls_raw.mode.unwrap_or(UpstreamTlsMode::Prefer);
        let auth = raw.auth.unwrap_or_else(|| vec![UpstreamAuth::ScramSha256]);
        if auth.is_empty() {
            self.error(
                &key("auth"),
                "list at least one of scram-sha-256, md5, password (or remove it for scram-sha-256)",
            );
        }
        if password.is_some()
            && !is_loopback_host(&host)
            && matches!(mode, UpstreamTlsMode::Prefer | UpstreamTlsMode::Require)
        {
            self.warn(
                &tls_key("mode"),
                "the password goes to a non-loopback host whose certificate is not verified: \
                 a server in the middle could receive it (use verify-full)",
            );
        }
        if auth.contains(&UpstreamAuth::Password) && mode != UpstreamTlsMode::VerifyFull {
            self.warn(
                &key("auth"),
                "password authentication sends the password itself; without tls verify-full \
                 a server in the middle can read it",
            );
        }
        UpstreamConfig {
            host,
            port,
            database,
            user,
            password,
            tls: UpstreamTls {
                mode,
                ca_file,
                server_name,
            },
            auth,
        }
    }

    fn allow(&mut self, name: &str, raw: RawAllow) -> AllowConfig {
        let groups = self.names(
            &["connections", name, "allow", "groups"],
            raw.groups.unwrap_or_default(),
        );
        let subjects = self.names(
            &["connections", name, "allow", "subjects"],
            raw.subjects.unwrap_or_default(),
        );
        for subject in &subjects {
            if !valid_subject(subject) {
                self.error(
                    &["connections", name, "allow", "subjects"],
                    format!(
                        "{subject:?}: subjects are qualified by how they authenticate: \
                         key:<name> for an API key, <issuer>#<sub> for an OIDC token \
                         (e.g. https://idp.example.com#alice)"
                    ),
                );
            }
        }
        let any_authenticated = raw.any_authenticated.unwrap_or(false);
        if groups.is_empty() && subjects.is_empty() && !any_authenticated {
            self.error(
                &["connections", name, "allow"],
                "nobody may use this connection: list groups and/or subjects, or set \
                 any_authenticated: true",
            );
        }
        AllowConfig {
            groups,
            subjects,
            any_authenticated,
        }
    }
}

/// Config sections owned by the adapters report through the same checks.
impl gatehouse_config::Checks for Resolver<'_> {
    fn error(&mut self, path: &[&str], message: &str) {
        Resolver::error(self, path, message);
    }

    fn warn(&mut self, path: &[&str], message: &str) {
        Resolver::warn(self, path, message);
    }

    fn existing_file(&mut self, path: &[&str], file: &Path) -> PathBuf {
        Resolver::existing_file(self, path, file)
    }

    fn secret(&mut self, path: &[&str], reference: &str) -> Option<String> {
        let parsed = match super::secret::SecretRef::parse(reference) {
            Ok(r) => r,
            Err(why) => {
                self.error(path, why);
                return None;
            }
        };
        if !self.read_secrets {
            return Some(String::new());
        }
        match parsed.resolve(&self.base, self.env) {
            Ok(secret) => Some(secret.expose().to_owned()),
            Err(why) => {
                self.error(path, why);
                None
            }
        }
    }
}

fn log(raw: RawLog) -> LogConfig {
    LogConfig {
        level: raw.level.unwrap_or(LogLevel::Info),
        format: raw.format.unwrap_or(LogFormat::Text),
    }
}

fn default_addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// `key:<name>`, or `<issuer>#<sub>` with an http(s) issuer.
fn valid_subject(subject: &str) -> bool {
    if let Some(name) = subject.strip_prefix("key:") {
        return !name.is_empty();
    }
    match subject.split_once('#') {
        Some((issuer, sub)) => {
            !sub.is_empty() && (issuer.starts_with("https://") || issuer.starts_with("http://"))
        }
        None => false,
    }
}

fn valid_connection_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An issuer is an `https://host[:port][/path]` URL (plain `http` only for loopback hosts,
/// for tests). It is compared verbatim with the tokens' `iss`, so nothing is normalised.
pub(crate) fn check_issuer(issuer: &str) -> Result<(), &'static str> {
    let (scheme, rest) = issuer
        .split_once("://")
        .ok_or("issuer must be an absolute https:// URL")?;
    if rest.contains(['?', '#']) {
        return Err("issuer must not have a query or fragment");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err("issuer must not contain user information");
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6
            .split_once(']')
            .map(|(h, _)| h)
            .ok_or("issuer has a malformed IPv6 host")?,
        None => authority.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err("issuer has no host");
    }
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback_host(host) => Ok(()),
        "http" => {
            Err("issuer must use https (http is accepted only for loopback hosts, for tests)")
        }
        _ => Err("issuer must be an absolute https:// URL"),
    }
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `<hostname>/gatehouse-audit`: distinct per host unless configured.
fn default_origin() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| gatehouse_tlog::note::is_valid_key_name(h))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}/gatehouse-audit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_table() {
        let ok = [
            "https://idp.example.com",
            "https://idp.example.com/realms/main",
            "https://idp.example.com:8443/",
            "http://127.0.0.1:9000",
            "http://localhost:9000/x",
            "http://[::1]:9000",
        ];
        for i in ok {
            assert_eq!(check_issuer(i), Ok(()), "{i}");
        }
        let bad = [
            "idp.example.com",
            "http://idp.example.com",
            "http://10.0.0.1",
            "ftp://idp.example.com",
            "https://",
            "https://user@idp.example.com",
            "https://idp.example.com/?x=1",
            "https://[::1",
        ];
        for i in bad {
            assert!(check_issuer(i).is_err(), "{i}");
        }
    }

    #[test]
    fn connection_name_table() {
        for ok in ["demo", "prod-db.eu_1", "A9"] {
            assert!(valid_connection_name(ok), "{ok}");
        }
        for bad in ["", "has space", "slash/x", "ünï", "a:b"] {
            assert!(!valid_connection_name(bad), "{bad}");
        }
    }

    #[test]
    fn default_addresses_parse() {
        assert_eq!(
            default_addr(DEFAULT_ADMIN_LISTEN).to_string(),
            DEFAULT_ADMIN_LISTEN
        );
    }
}
