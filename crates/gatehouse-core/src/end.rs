//! Why a session ended: one vocabulary for every protocol, written into `session.end`.

use std::fmt;

/// The cause of a session's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    /// The client said goodbye in its protocol (PostgreSQL Terminate).
    ClientTerminated,
    /// The client closed the connection.
    ClientClosed,
    /// The upstream server closed the connection.
    UpstreamClosed,
    IdleTimeout,
    /// The gateway is stopping.
    Shutdown,
    /// An operator ended the session (`gatehouse sessions kill`).
    Killed {
        by: String,
    },
    /// The credential the session was opened with was revoked.
    CredentialRevoked,
    /// The credential the session was opened with expired (a token's `exp`).
    CredentialExpired,
    /// The time-bound access grant the session was admitted by ended.
    GrantExpired,
    /// The time-bound access grant the session was admitted by was revoked.
    GrantRevoked,
    /// The client broke its protocol; the text says how.
    ClientProtocol(String),
    /// The server's responses no longer matched the requests, or broke the protocol.
    UpstreamProtocol(String),
    ClientIo(String),
    UpstreamIo(String),
    /// The audit log refused a record: nothing more may reach the server.
    AuditUnavailable(String),
    /// The session's recording could not be written: the session may not go on unrecorded.
    RecordingUnavailable(String),
    /// The server entered a state the gateway cannot read safely (e.g. a client encoding whose
    /// multi-byte characters can contain quote or backslash bytes).
    UnsafeSessionState(String),
    /// The upstream connection could not be opened (the reason goes into the record's detail).
    UpstreamConnectFailed(String),
}

impl EndCause {
    /// Whether the session ended in error (for the `session.end` status).
    pub fn failed(&self) -> bool {
        !matches!(
            self,
            EndCause::ClientTerminated
                | EndCause::ClientClosed
                | EndCause::IdleTimeout
                | EndCause::Shutdown
                | EndCause::Killed { .. }
                | EndCause::CredentialRevoked
                | EndCause::CredentialExpired
                | EndCause::GrantExpired
                | EndCause::GrantRevoked
        )
    }

    /// A short machine-readable name.
    pub fn code(&self) -> &'static str {
        match self {
            EndCause::ClientTerminated => "client_terminated",
            EndCause::ClientClosed => "client_closed",
            EndCause::UpstreamClosed => "upstream_closed",
            EndCause::IdleTimeout => "idle_timeout",
            EndCause::Shutdown => "shutdown",
            EndCause::Killed { .. } => "killed",
            EndCause::CredentialRevoked => "credential_revoked",
            EndCause::CredentialExpired => "credential_expired",
            EndCause::GrantExpired => "grant_expired",
            EndCause::GrantRevoked => "grant_revoked",
            EndCause::ClientProtocol(_) => "client_protocol",
            EndCause::UpstreamProtocol(_) => "upstream_protocol",
            EndCause::ClientIo(_) => "client_io",
            EndCause::UpstreamIo(_) => "upstream_io",
            EndCause::AuditUnavailable(_) => "audit_unavailable",
            EndCause::RecordingUnavailable(_) => "recording_unavailable",
            EndCause::UnsafeSessionState(_) => "unsafe_session_state",
            EndCause::UpstreamConnectFailed(_) => "upstream_connect_failed",
        }
    }
}

impl fmt::Display for EndCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndCause::ClientTerminated => f.write_str("client terminated the session"),
            EndCause::ClientClosed => f.write_str("client disconnected"),
            EndCause::UpstreamClosed => f.write_str("upstream closed the connection"),
            EndCause::IdleTimeout => f.write_str("idle timeout"),
            EndCause::Shutdown => f.write_str("gateway shutting down"),
            EndCause::Killed { by } => write!(f, "ended by {by}"),
            EndCause::CredentialRevoked => f.write_str("credential revoked"),
            EndCause::CredentialExpired => f.write_str("credential expired"),
            EndCause::GrantExpired => f.write_str("access grant ended"),
            EndCause::GrantRevoked => f.write_str("access grant revoked"),
            EndCause::ClientProtocol(why) => write!(f, "client protocol error: {why}"),
            EndCause::UpstreamProtocol(why) => write!(f, "upstream protocol error: {why}"),
            EndCause::ClientIo(why) => write!(f, "client i/o: {why}"),
            EndCause::UpstreamIo(why) => write!(f, "upstream i/o: {why}"),
            EndCause::AuditUnavailable(why) => write!(f, "audit log unavailable: {why}"),
            EndCause::RecordingUnavailable(why) => {
                write!(f, "session recording unavailable: {why}")
            }
            EndCause::UnsafeSessionState(why) => write!(f, "unsafe session state: {why}"),
            EndCause::UpstreamConnectFailed(_) => f.write_str("upstream connection failed"),
        }
    }
}
