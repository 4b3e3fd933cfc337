//! The `postgres:` section of the configuration: the PostgreSQL listener's settings, read and
//! checked here, by the adapter that uses them. The server owns the file and reports through
//! [`Checks`]; see docs/configuration.md for every key.

use crate::startup::RequireTls;
use gatehouse_config::{Checks, ConfigDuration, ConfigSize, Listen, RawTlsFiles, TlsFiles};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_MAX_MESSAGE: u64 = 16 << 20;
/// PostgreSQL's own limit for a message.
const MAX_MAX_MESSAGE: u64 = 1 << 30;
const DEFAULT_FIRST_PACKET_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_MAX_HANDSHAKES: usize = 256;
const DEFAULT_MAX_HANDSHAKES_PER_SOURCE: usize = 32;

/// The section as written; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSection {
    pub listen: Option<Listen>,
    pub tls: Option<RawTlsFiles>,
    pub require_tls: Option<RequireTls>,
    pub handshake_timeout: Option<ConfigDuration>,
    pub idle_timeout: Option<ConfigDuration>,
    pub workers: Option<usize>,
    pub max_message: Option<ConfigSize>,
    pub first_packet_timeout: Option<ConfigDuration>,
    pub max_handshakes: Option<usize>,
    pub max_handshakes_per_source: Option<usize>,
}

/// The listener's settings, defaults applied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Without it, SSLRequest is answered `N`.
    pub tls: Option<TlsFiles>,
    pub require_tls: RequireTls,
    pub handshake_timeout: Duration,
    /// `None`: idle sessions are never closed.
    pub idle_timeout: Option<Duration>,
    /// Threads serving PostgreSQL sessions, each a single-threaded runtime sharing the port.
    pub workers: usize,
    /// Largest client message that is not streamed (a query, a Parse); larger ones are refused.
    pub max_message: usize,
    /// Longest a new connection may take to send its first byte.
    pub first_packet_timeout: Duration,
    /// Connections at most in their unauthenticated handshake at once, and per source address.
    pub max_handshakes: usize,
    pub max_handshakes_per_source: usize,
}

/// Applies defaults and checks the section.
pub fn resolve(raw: RawSection, checks: &mut dyn Checks) -> Settings {
    let listen = raw
        .listen
        .map_or(SocketAddr::from(([127, 0, 0, 1], 15432)), |l| l.0);
    let tls = raw
        .tls
        .and_then(|t| gatehouse_config::tls_files(checks, &["postgres", "tls"], t));
    let require_tls = raw.require_tls.unwrap_or(RequireTls::NonLoopback);
    if tls.is_none() {
        if require_tls == RequireTls::Always {
            checks.error(
                &["postgres", "require_tls"],
                "always needs postgres.tls (cert_file and key_file); without it no client could connect",
            );
        } else if !listen.ip().is_loopback() {
            let consequence = match require_tls {
                RequireTls::Never => "credentials from remote clients cross the network in clear",
                _ => "remote clients will be refused (require_tls: non_loopback)",
            };
            checks.warn(
                &["postgres", "listen"],
                &format!("listening on a non-loopback address without postgres.tls: {consequence}"),
            );
        }
    }
    let handshake_timeout = raw
        .handshake_timeout
        .map_or(DEFAULT_HANDSHAKE_TIMEOUT, |d| d.0);
    if handshake_timeout.is_zero() {
        checks.error(
            &["postgres", "handshake_timeout"],
            "must be greater than 0: a client that never finishes its handshake would hold a slot forever",
        );
    }
    let idle_timeout = raw.idle_timeout.map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = raw.workers.unwrap_or(cores);
    if !(1..=256).contains(&workers) {
        checks.error(&["postgres", "workers"], "must be between 1 and 256");
    }
    let max_message = raw
        .max_message
        .map_or(DEFAULT_MAX_MESSAGE, |ConfigSize(s)| s);
    if !(1024..=MAX_MAX_MESSAGE).contains(&max_message) {
        checks.error(
            &["postgres", "max_message"],
            "must be between 1KiB and 1GiB (PostgreSQL's own limit)",
        );
    }
    let first_packet_timeout = raw
        .first_packet_timeout
        .map_or(DEFAULT_FIRST_PACKET_TIMEOUT.min(handshake_timeout), |d| d.0);
    if first_packet_timeout.is_zero() || first_packet_timeout > handshake_timeout {
        checks.error(
            &["postgres", "first_packet_timeout"],
            "must be greater than 0 and at most handshake_timeout",
        );
    }
    let max_handshakes = raw.max_handshakes.unwrap_or(DEFAULT_MAX_HANDSHAKES);
    let per_source = raw
        .max_handshakes_per_source
        .unwrap_or(DEFAULT_MAX_HANDSHAKES_PER_SOURCE);
    if max_handshakes == 0 || per_source == 0 || per_source > max_handshakes {
        checks.error(
            &["postgres", "max_handshakes_per_source"],
            "max_handshakes and max_handshakes_per_source must be at least 1, the second at most the first",
        );
    }
    Settings {
        workers: workers.clamp(1, 256),
        listen,
        tls,
        require_tls,
        handshake_timeout,
        idle_timeout: (!idle_timeout.is_zero()).then_some(idle_timeout),
        max_message: max_message.clamp(1024, MAX_MAX_MESSAGE) as usize,
        first_packet_timeout,
        max_handshakes: max_handshakes.max(1),
        max_handshakes_per_source: per_source.clamp(1, max_handshakes.max(1)),
    }
}
