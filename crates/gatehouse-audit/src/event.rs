//! The audit event schema: what callers hand to the log.
//!
//! A stored record is this body plus `seq`, `prev` and `hash` (see `record`). Field order is
//! fixed by the struct definitions, which makes the JSON canonical: the same event always
//! serialises to the same bytes.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What happened. Serialised as dotted lowercase names (`session.start`, `auth.failure`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "gateway.start")]
    GatewayStart,
    #[serde(rename = "gateway.stop")]
    GatewayStop,
    #[serde(rename = "config.loaded")]
    ConfigLoaded,
    #[serde(rename = "auth.success")]
    AuthSuccess,
    #[serde(rename = "auth.failure")]
    AuthFailure,
    #[serde(rename = "session.start")]
    SessionStart,
    #[serde(rename = "session.end")]
    SessionEnd,
    /// A statement the gateway decided on: written before it is forwarded (or refused), with
    /// outcome `pending` when forwarded; its result follows as a `statement.result`.
    #[serde(rename = "statement")]
    Statement,
    /// How a forwarded statement ended; `ref` is the `seq` of its `statement` record.
    #[serde(rename = "statement.result")]
    StatementResult,
    #[serde(rename = "cancel")]
    Cancel,
    #[serde(rename = "protocol.error")]
    ProtocolError,
    #[serde(rename = "key.created")]
    KeyCreated,
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    #[serde(rename = "admin.request")]
    AdminRequest,
    #[serde(rename = "bootstrap.key")]
    BootstrapKey,
    /// An operator ended an open session (the session's own `session.end` follows).
    #[serde(rename = "session.kill")]
    SessionKill,
    /// At start: the previous run ended without a `gateway.stop`; names the head it left.
    #[serde(rename = "gateway.unclean_stop")]
    GatewayUncleanStop,
    /// The log took records again after a failure; says when and why it stopped taking them.
    #[serde(rename = "audit.gap")]
    AuditGap,
    /// The audit directory's file system is running out of space.
    #[serde(rename = "audit.disk_low")]
    AuditDiskLow,
    /// Failures before authentication from one source, counted instead of recorded one by one.
    #[serde(rename = "auth.failure.summary")]
    AuthFailureSummary,
    /// A guardrail policy took effect (at start or on reload), named by its SHA-256.
    #[serde(rename = "policy.loaded")]
    PolicyLoaded,
    /// A reload was refused (the file is invalid); the policy in effect stays.
    #[serde(rename = "policy.rejected")]
    PolicyRejected,
    /// A statement was held for approval: the request, with the statement and its effect.
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    /// An approver approved a request (the request is approved once it has its required approvals).
    #[serde(rename = "approval.approved")]
    ApprovalApproved,
    /// An approver denied a request: final.
    #[serde(rename = "approval.denied")]
    ApprovalDenied,
    /// A request (or an unused approval) passed its validity.
    #[serde(rename = "approval.expired")]
    ApprovalExpired,
    /// The client waiting on a request left.
    #[serde(rename = "approval.abandoned")]
    ApprovalAbandoned,
    /// The client waiting on a request cancelled it (a cancel request).
    #[serde(rename = "approval.cancelled")]
    ApprovalCancelled,
    /// An approval was used: the approved statement runs (its statement record names the request).
    #[serde(rename = "approval.executed")]
    ApprovalExecuted,
    /// An admin was shown a session's recording (who watched what).
    #[serde(rename = "recording.replayed")]
    RecordingReplayed,
    /// Recordings past the retention age were deleted: which, with their hashes.
    #[serde(rename = "recording.pruned")]
    RecordingPruned,
    /// A signed checkpoint of the log's Merkle tree: the records before it, by size and root.
    #[serde(rename = "audit.checkpoint")]
    AuditCheckpoint,
    /// An operator acknowledged that the log disagrees with its last signed checkpoint (cut
    /// or rewritten); names what was wrong, so the gateway starts again on the log as it is.
    #[serde(rename = "audit.acknowledged")]
    AuditAcknowledged,
    /// The gateway generated the key that signs checkpoints (its public key in the detail).
    #[serde(rename = "audit.key_created")]
    AuditKeyCreated,
    /// A SIEM sink fell behind the log past its alarm threshold (once per crossing).
    #[serde(rename = "sink.lagging")]
    SinkLagging,
    /// A SIEM sink that was lagging caught up again.
    #[serde(rename = "sink.recovered")]
    SinkRecovered,
    /// A witness cosigned a checkpoint: its cosignature line, which the bundle carries.
    #[serde(rename = "audit.witnessed")]
    AuditWitnessed,
    /// A witness did not cosign a checkpoint: unreachable, or it refused (why, in the detail).
    #[serde(rename = "audit.witness_failed")]
    AuditWitnessFailed,
}

impl EventKind {
    /// Every kind, in declaration order (for docs, tests and exhaustive tables).
    pub const ALL: [EventKind; 38] = [
        EventKind::GatewayStart,
        EventKind::GatewayStop,
        EventKind::ConfigLoaded,
        EventKind::AuthSuccess,
        EventKind::AuthFailure,
        EventKind::SessionStart,
        EventKind::SessionEnd,
        EventKind::Statement,
        EventKind::StatementResult,
        EventKind::Cancel,
        EventKind::ProtocolError,
        EventKind::KeyCreated,
        EventKind::KeyRevoked,
        EventKind::AdminRequest,
        EventKind::BootstrapKey,
        EventKind::SessionKill,
        EventKind::GatewayUncleanStop,
        EventKind::AuditGap,
        EventKind::AuditDiskLow,
        EventKind::AuthFailureSummary,
        EventKind::PolicyLoaded,
        EventKind::PolicyRejected,
        EventKind::ApprovalRequested,
        EventKind::ApprovalApproved,
        EventKind::ApprovalDenied,
        EventKind::ApprovalExpired,
        EventKind::ApprovalAbandoned,
        EventKind::ApprovalCancelled,
        EventKind::ApprovalExecuted,
        EventKind::RecordingReplayed,
        EventKind::RecordingPruned,
        EventKind::AuditCheckpoint,
        EventKind::AuditAcknowledged,
        EventKind::AuditKeyCreated,
        EventKind::SinkLagging,
        EventKind::SinkRecovered,
        EventKind::AuditWitnessed,
        EventKind::AuditWitnessFailed,
    ];

    /// The serialised name, e.g. `session.start`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::GatewayStart => "gateway.start",
            EventKind::GatewayStop => "gateway.stop",
            EventKind::ConfigLoaded => "config.loaded",
            EventKind::AuthSuccess => "auth.success",
            EventKind::AuthFailure => "auth.failure",
            EventKind::SessionStart => "session.start",
            EventKind::SessionEnd => "session.end",
            EventKind::Statement => "statement",
            EventKind::StatementResult => "statement.result",
            EventKind::Cancel => "cancel",
            EventKind::ProtocolError => "protocol.error",
            EventKind::KeyCreated => "key.created",
            EventKind::KeyRevoked => "key.revoked",
            EventKind::AdminRequest => "admin.request",
            EventKind::BootstrapKey => "bootstrap.key",
            EventKind::SessionKill => "session.kill",
            EventKind::GatewayUncleanStop => "gateway.unclean_stop",
            EventKind::AuditGap => "audit.gap",
            EventKind::PolicyLoaded => "policy.loaded",
            EventKind::PolicyRejected => "policy.rejected",
            EventKind::ApprovalRequested => "approval.requested",
            EventKind::ApprovalApproved => "approval.approved",
            EventKind::ApprovalDenied => "approval.denied",
            EventKind::ApprovalExpired => "approval.expired",
            EventKind::ApprovalAbandoned => "approval.abandoned",
            EventKind::ApprovalCancelled => "approval.cancelled",
            EventKind::ApprovalExecuted => "approval.executed",
            EventKind::RecordingReplayed => "recording.replayed",
            EventKind::RecordingPruned => "recording.pruned",
            EventKind::AuditCheckpoint => "audit.checkpoint",
            EventKind::AuditAcknowledged => "audit.acknowledged",
            EventKind::AuditKeyCreated => "audit.key_created",
            EventKind::AuditDiskLow => "audit.disk_low",
            EventKind::AuthFailureSummary => "auth.failure.summary",
            EventKind::SinkLagging => "sink.lagging",
            EventKind::SinkRecovered => "sink.recovered",
            EventKind::AuditWitnessed => "audit.witnessed",
            EventKind::AuditWitnessFailed => "audit.witness_failed",
        }
    }
}

/// One link of a delegation chain: somebody acting on behalf of the subject (RFC 8693 `act`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorRef {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// Who: the caller as authenticated, or as claimed when authentication failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Who {
    /// Authenticated subject; `None` when authentication failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Delegation chain, nearest actor first: `actors[0]` acts directly for `subject`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<ActorRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// `api_key`, `oidc`, or `none` before authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Peer address of the client connection (`ip:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The user name the client claimed in its protocol handshake (recorded, never trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_user: Option<String>,
}

/// What: the resource and the action on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct What {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// First classification of the statement: `read`, `write`, `ddl`, `other`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// Any other affected resource (an API path, a key name, a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Free-form, event-specific details (never secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// Whether the action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failure,
    /// The action was started and its result is recorded later (a forwarded statement).
    Pending,
    /// The action started but its result could not be observed (the session ended first).
    Unknown,
}

impl Status {
    /// The serialised name: `success`, `failure`, `pending` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Pending => "pending",
            Status::Unknown => "unknown",
        }
    }
}

/// The outcome of the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Protocol error code where there is one (a SQLSTATE, an HTTP status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
}

impl Outcome {
    /// A success with no further detail.
    pub fn success() -> Self {
        Outcome {
            status: Status::Success,
            reason: None,
            code: None,
            rows: None,
            duration_ns: None,
        }
    }
    /// A failure with a human-readable reason.
    pub fn failure(reason: impl Into<String>) -> Self {
        Outcome {
            status: Status::Failure,
            reason: Some(reason.into()),
            ..Outcome::success()
        }
    }
    /// An action that was started; its result follows in a later record.
    pub fn pending() -> Self {
        Outcome {
            status: Status::Pending,
            ..Outcome::success()
        }
    }
}

/// An event as handed to the log. `time` is when it happened (UTC, nanosecond precision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Written as RFC 3339 UTC with nine fractional digits (see [`crate::timefmt`]).
    #[serde(with = "crate::timefmt::rfc3339_nanos")]
    pub time: OffsetDateTime,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The `seq` of the record this one completes (a `statement.result`'s statement).
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub refers: Option<u64>,
    #[serde(default)]
    pub who: Who,
    #[serde(default)]
    pub what: What,
    pub outcome: Outcome,
}

impl Event {
    /// A new event stamped with the current UTC time.
    pub fn now(kind: EventKind, outcome: Outcome) -> Self {
        Event {
            time: OffsetDateTime::now_utc(),
            kind,
            session: None,
            refers: None,
            who: Who::default(),
            what: What::default(),
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn all_kinds_serialise_as_their_names() {
        let mut names = HashSet::new();
        for kind in EventKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            let back: EventKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, kind);
            assert!(
                names.insert(kind.as_str()),
                "duplicate name {}",
                kind.as_str()
            );
        }
    }

    #[test]
    fn every_kind_is_documented() {
        let doc = include_str!("../../../docs/audit-events.md");
        for kind in EventKind::ALL {
            let row = format!("| `{}` |", kind.as_str());
            assert!(doc.contains(&row), "docs/audit-events.md lacks {row}");
        }
    }
}
