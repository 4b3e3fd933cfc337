//! Sink settings: plain structs with defaults, no serde. The server's configuration layer maps
//! its YAML (`audit.sinks:`, see `docs/siem.md`) onto these.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

/// One sink: where to send the log and how.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Unique among the sinks; names the cursor file (`sink-<name>.cursor`), the tracing span,
    /// the status and the metrics label. Letters, digits, `-`, `_` and `.`, at most 64.
    pub name: String,
    pub target: Target,
    pub batch: BatchConfig,
    pub backoff: BackoffConfig,
    pub alarm: AlarmConfig,
    /// How often the log file is polled for new records when the sink has caught up.
    pub poll_interval: Duration,
    /// `HOSTNAME` (syslog) and `host` (HEC). `None`: this machine's host name.
    pub hostname: Option<String>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            name: String::new(),
            target: Target::Syslog(SyslogConfig::default()),
            batch: BatchConfig::default(),
            backoff: BackoffConfig::default(),
            alarm: AlarmConfig::default(),
            poll_interval: Duration::from_millis(100),
            hostname: None,
        }
    }
}

impl SinkConfig {
    /// A syslog sink with default settings.
    pub fn syslog(name: impl Into<String>, syslog: SyslogConfig) -> Self {
        SinkConfig {
            name: name.into(),
            target: Target::Syslog(syslog),
            ..SinkConfig::default()
        }
    }

    /// A HEC sink with default settings.
    pub fn hec(name: impl Into<String>, hec: HecConfig) -> Self {
        SinkConfig {
            name: name.into(),
            target: Target::Hec(hec),
            ..SinkConfig::default()
        }
    }

    /// `syslog` or `hec`.
    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Syslog(_) => "syslog",
            Target::Hec(_) => "hec",
        }
    }
}

/// The receiver.
#[derive(Debug, Clone)]
pub enum Target {
    Syslog(SyslogConfig),
    Hec(HecConfig),
}

/// Syslog (RFC 5424 messages, RFC 6587 octet-counted framing) over TCP, optionally TLS.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// `host:port` of the receiver.
    pub address: String,
    /// TLS settings; `None` is plain TCP.
    pub tls: Option<TlsConfig>,
    pub facility: Facility,
    /// `APP-NAME`.
    pub app_name: String,
    /// The SD-ID of the structured-data element carrying `seq` and `hash`.
    pub sd_id: String,
    /// TCP has no application acknowledgement: a flushed batch is only taken as delivered once
    /// the connection has stayed up this long after the flush. When the connection breaks
    /// earlier, the batch is sent again on the next connection.
    pub confirm_window: Duration,
    pub connect_timeout: Duration,
    /// Longest time one batch may take to write and flush.
    pub write_timeout: Duration,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            address: String::new(),
            tls: None,
            facility: Facility::AuthPriv,
            app_name: "gatehouse".into(),
            sd_id: "gatehouse@32473".into(),
            confirm_window: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
        }
    }
}

impl SyslogConfig {
    pub fn new(address: impl Into<String>) -> Self {
        SyslogConfig {
            address: address.into(),
            ..SyslogConfig::default()
        }
    }
}

/// TLS to the receiver (rustls with the ring provider).
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// PEM bundle of the CAs to trust. `None`: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must carry. `None`: the host part of the address.
    pub server_name: Option<String>,
}

/// Splunk HTTP Event Collector (or any receiver speaking its protocol).
#[derive(Clone)]
pub struct HecConfig {
    /// Base URL, e.g. `https://splunk.example:8088`.
    pub url: String,
    /// Path of the event endpoint.
    pub path: String,
    /// Path of the acknowledgement endpoint (used with `channel`).
    pub ack_path: String,
    /// The HEC token (secret: never logged, never in errors or `Debug`).
    pub token: Secret,
    /// `X-Splunk-Request-Channel` (a GUID). When set and the receiver answers with an `ackId`,
    /// the cursor moves only once the acknowledgement endpoint says the batch is indexed.
    pub channel: Option<String>,
    /// PEM bundle of CAs to trust for `https`. `None`: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    pub source: String,
    pub sourcetype: String,
    /// Splunk index; `None`: the token's default index.
    pub index: Option<String>,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// How often the acknowledgement endpoint is asked.
    pub ack_poll_interval: Duration,
    /// How long to wait for an acknowledgement before sending the batch again.
    pub ack_timeout: Duration,
}

impl Default for HecConfig {
    fn default() -> Self {
        HecConfig {
            url: String::new(),
            path: "/services/collector/event".into(),
            ack_path: "/services/collector/ack".into(),
            token: Secret::default(),
            channel: None,
            ca_file: None,
            source: "gatehouse".into(),
            sourcetype: "gatehouse:audit".into(),
            index: None,
            request_timeout: Duration::from_secs(10),
            ack_poll_interval: Duration::from_millis(500),
            ack_timeout: Duration::from_secs(60),
        }
    }
}

impl HecConfig {
    pub fn new(url: impl Into<String>, token: Secret) -> Self {
        HecConfig {
            url: url.into(),
            token,
            ..HecConfig::default()
        }
    }
}

impl fmt::Debug for HecConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HecConfig")
            .field("url", &self.url)
            .field("path", &self.path)
            .field("ack_path", &self.ack_path)
            .field("token", &self.token)
            .field("channel", &self.channel)
            .field("ca_file", &self.ca_file)
            .field("source", &self.source)
            .field("sourcetype", &self.sourcetype)
            .field("index", &self.index)
            .field("request_timeout", &self.request_timeout)
            .field("ack_poll_interval", &self.ack_poll_interval)
            .field("ack_timeout", &self.ack_timeout)
            .finish()
    }
}

/// A secret string (a token). `Debug` and `Display` print `***`; the memory is wiped on drop.
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself: only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How records are grouped into one write (syslog) or one request (HEC).
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub max_records: usize,
    /// Upper bound on the records' bytes in one batch (a single larger record goes alone).
    pub max_bytes: usize,
    /// How long a batch may wait for more records before it is sent part-full.
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: 500,
            max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(200),
        }
    }
}

/// Retry delays after a failed delivery: `initial`, doubling up to `max`, with jitter.
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

/// When a sink counts as lagging (an `sink.lagging` audit event, once per crossing).
#[derive(Debug, Clone, Copy)]
pub struct AlarmConfig {
    /// Lagging when more than this many records are undelivered. 0: no record threshold.
    pub lag_records: u64,
    /// Lagging when the oldest undelivered record is older than this. Zero: no age threshold.
    pub after: Duration,
}

impl Default for AlarmConfig {
    fn default() -> Self {
        AlarmConfig {
            lag_records: 10_000,
            after: Duration::from_secs(300),
        }
    }
}

/// Syslog facility (RFC 5424 section 6.2.1). The default is `authpriv`: the log is security
/// and authorisation evidence, which receivers commonly route to restricted files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Facility {
    Kern,
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    #[default]
    AuthPriv,
    Ftp,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    const NAMES: [(&'static str, Facility); 20] = [
        ("kern", Facility::Kern),
        ("user", Facility::User),
        ("mail", Facility::Mail),
        ("daemon", Facility::Daemon),
        ("auth", Facility::Auth),
        ("syslog", Facility::Syslog),
        ("lpr", Facility::Lpr),
        ("news", Facility::News),
        ("uucp", Facility::Uucp),
        ("cron", Facility::Cron),
        ("authpriv", Facility::AuthPriv),
        ("ftp", Facility::Ftp),
        ("local0", Facility::Local0),
        ("local1", Facility::Local1),
        ("local2", Facility::Local2),
        ("local3", Facility::Local3),
        ("local4", Facility::Local4),
        ("local5", Facility::Local5),
        ("local6", Facility::Local6),
        ("local7", Facility::Local7),
    ];

    /// The numeric code (`local0` is 16).
    pub fn code(self) -> u8 {
        match self {
            Facility::Kern => 0,
            Facility::User => 1,
            Facility::Mail => 2,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Syslog => 5,
            Facility::Lpr => 6,
            Facility::News => 7,
            Facility::Uucp => 8,
            Facility::Cron => 9,
            Facility::AuthPriv => 10,
            Facility::Ftp => 11,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }

    /// Parses a name as used in configuration (`authpriv`, `local0`, ...).
    pub fn from_name(name: &str) -> Option<Facility> {
        Facility::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, f)| f)
    }

    pub fn name(self) -> &'static str {
        Facility::NAMES
            .iter()
            .find(|&&(_, f)| f == self)
            .map_or("authpriv", |&(n, _)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facility_names_round_trip() {
        for (name, facility) in Facility::NAMES {
            assert_eq!(Facility::from_name(name), Some(facility));
            assert_eq!(facility.name(), name);
        }
        assert_eq!(Facility::from_name("LOCAL0").map(Facility::code), Some(16));
        assert_eq!(Facility::default().code(), 10);
        assert_eq!(Facility::from_name("local8"), None);
    }

    #[test]
    fn secret_is_not_printed() {
        let token = "3f1c2a9e-token-value";
        let hec = HecConfig::new("https://splunk.example:8088", Secret::new(token));
        let config = SinkConfig::hec("splunk", hec);
        for text in [
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{}", Secret::new(token)),
            format!("{:?}", Secret::new(token)),
        ] {
            assert!(!text.contains(token), "{text}");
        }
        assert_eq!(Secret::new(token).expose(), token);
    }
}
