//! The session pipeline every protocol adapter drives.
//!
//! Phases, in order: authenticate the credential, authorise the identity for the connection,
//! open the session (audited before the adapter may touch the target), then per command:
//! decide, and record the outcome. An adapter can only reach a target through a [`Session`],
//! and a `Session` can only be built by [`Gate::open`], so no adapter can skip a phase.

use crate::command::{Command, CommandOutcome, Verdict};
use crate::connection::{Connection, Connections, Protocol};
use crate::identity::{AuthError, Authenticator, Identity};
use crate::metrics::{Metrics, StatementLabels};
use gatehouse_audit::{AuditError, AuditLog, Event, EventKind, Outcome, Status, Ticket, What, Who};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Longest statement text kept in an audit event; longer text is cut and flagged.
const MAX_AUDITED_STATEMENT: usize = 64 * 1024;
/// Longest upstream error message kept in an audit event.
const MAX_AUDITED_ERROR: usize = 1024;

/// The session index: a derived, rebuildable view of sessions for listing (the audit log is the
/// source of truth). Failures here are logged, never fatal.
#[async_trait::async_trait]
pub trait SessionIndex: Send + Sync {
    async fn started(&self, session: &SessionInfo);
    async fn ended(&self, id: &str, statements: u64, reason: &str);
}

/// What the index keeps about a session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub protocol: Protocol,
    pub connection: String,
    pub subject: String,
    pub actors: Vec<String>,
    pub source: SocketAddr,
    pub started_at: time::OffsetDateTime,
}

/// A connection attempt as an adapter received it.
#[derive(Debug, Clone, Copy)]
pub struct ConnectRequest<'a> {
    pub protocol: Protocol,
    /// The connection name the client asked for (e.g. the PostgreSQL database name).
    pub connection: &'a str,
    /// The presented credential (API key or token). Never logged or audited.
    pub credential: &'a str,
    /// The user name the client claimed; recorded, never trusted.
    pub claimed_user: Option<&'a str>,
    pub source: SocketAddr,
}

/// Why a connection attempt was refused. [`Denied::client_message`] is what the client sees:
/// it never says whether a connection exists or why a credential failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("credential rejected: {0}")]
    BadCredential(String),
    #[error("identity not permitted on the requested connection")]
    NotPermitted,
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl Denied {
    pub fn client_message(&self, connection: &str) -> String {
        match self {
            Denied::BadCredential(_) => "authentication failed".to_owned(),
            Denied::NotPermitted => {
                format!("connection \"{connection}\" is not available to this identity")
            }
            Denied::Unavailable(_) => {
                "the gateway cannot accept connections right now; try again later".to_owned()
            }
        }
    }
}

/// Shared, cheaply cloneable entry point of the pipeline.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    authenticator: Arc<dyn Authenticator>,
    connections: Connections,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    index: Arc<dyn SessionIndex>,
}

impl Gate {
    pub fn new(
        authenticator: Arc<dyn Authenticator>,
        connections: Connections,
        audit: AuditLog,
        metrics: Arc<Metrics>,
        index: Arc<dyn SessionIndex>,
    ) -> Self {
        Gate {
            inner: Arc::new(GateInner {
                authenticator,
                connections,
                audit,
                metrics,
                index,
            }),
        }
    }

    pub fn connections(&self) -> &Connections {
        &self.inner.connections
    }

    /// Authenticates and authorises a connection attempt and opens its session.
    ///
    /// Every outcome is audited and durable before this returns; if the audit log cannot take
    /// the record, the attempt is refused (fail closed).
    pub async fn open(&self, req: ConnectRequest<'_>) -> Result<Session, Denied> {
        let inner = &self.inner;
        let label = Metrics::protocol(req.protocol.as_str());
        let what = What {
            connection: Some(req.connection.to_owned()),
            protocol: Some(req.protocol.as_str().to_owned()),
            ..What::default()
        };

        let identity = match inner.authenticator.authenticate(req.credential).await {
            Ok(identity) => identity,
            Err(err) => {
                inner
                    .metrics
                    .auth_failures_total
                    .get_or_create(&label)
                    .inc();
                let who = Who {
                    method: Some("none".to_owned()),
                    source: Some(req.source.to_string()),
                    claimed_user: req.claimed_user.map(str::to_owned),
                    ..Who::default()
                };
                let denied = match &err {
                    AuthError::Rejected(reason) => Denied::BadCredential(reason.clone()),
                    AuthError::Unavailable(reason) => Denied::Unavailable(reason.clone()),
                };
                let mut event =
                    Event::now(EventKind::AuthFailure, Outcome::failure(err.to_string()));
                event.who = who;
                event.what = what;
                self.record_or_refuse(event).await?;
                return Err(denied);
            }
        };

        let who = identity.who(Some(req.source), req.claimed_user);
        let connection = inner
            .connections
            .get(req.connection)
            .filter(|c| c.target.protocol() == req.protocol && c.access.permits(&identity))
            .cloned();
        let Some(connection) = connection else {
            inner
                .metrics
                .auth_failures_total
                .get_or_create(&label)
                .inc();
            let reason = if inner.connections.get(req.connection).is_some() {
                "identity not permitted on this connection"
            } else {
                "no such connection"
            };
            let mut event = Event::now(EventKind::AuthFailure, Outcome::failure(reason));
            event.who = who;
            event.what = what;
            self.record_or_refuse(event).await?;
            return Err(Denied::NotPermitted);
        };

        let id = new_session_id();
        let mut auth = Event::now(EventKind::AuthSuccess, Outcome::success());
        auth.session = Some(id.clone());
        auth.who = who.clone();
        auth.what = what.clone();
        inner.audit.append(auth).map_err(|e| self.audit_failed(e))?;
        let mut start = Event::now(EventKind::SessionStart, Outcome::success());
        start.session = Some(id.clone());
        start.who = who.clone();
        start.what = what;
        let started_at = start.time;
        self.record_or_refuse(start).await?;

        inner.metrics.sessions_total.get_or_create(&label).inc();
        inner.metrics.sessions_open.get_or_create(&label).inc();
        let info = SessionInfo {
            id: id.clone(),
            protocol: req.protocol,
            connection: connection.name.clone(),
            subject: identity.subject.clone(),
            actors: identity.actors.iter().map(|a| a.subject.clone()).collect(),
            source: req.source,
            started_at,
        };
        inner.index.started(&info).await;
        Ok(Session {
            id,
            protocol: req.protocol,
            identity,
            connection,
            who,
            gate: self.clone(),
            opened: Instant::now(),
            statements: AtomicU64::new(0),
            ended: false,
        })
    }

    /// Records malformed or hostile input on a connection that has no session yet.
    pub async fn protocol_error(&self, protocol: Protocol, source: SocketAddr, reason: &str) {
        self.inner
            .metrics
            .protocol_errors_total
            .get_or_create(&Metrics::protocol(protocol.as_str()))
            .inc();
        let mut event = Event::now(EventKind::ProtocolError, Outcome::failure(reason));
        event.who = Who {
            source: Some(source.to_string()),
            ..Who::default()
        };
        event.what = What {
            protocol: Some(protocol.as_str().to_owned()),
            ..What::default()
        };
        // Nothing is left to refuse: the connection is closing either way.
        let _ = self.record_or_refuse(event).await;
    }

    /// Appends any event and waits until it is durable.
    pub async fn record(&self, event: Event) -> Result<(), AuditError> {
        let result = self.inner.audit.record(event).await;
        if result.is_err() {
            self.inner.metrics.audit_failures_total.inc();
        }
        result
    }

    async fn record_or_refuse(&self, event: Event) -> Result<(), Denied> {
        self.record(event).await.map_err(|e| self.audit_failed(e))
    }

    fn audit_failed(&self, err: AuditError) -> Denied {
        tracing::error!(error = %err, "audit log refused a record; refusing the action");
        Denied::Unavailable("audit log unavailable".to_owned())
    }
}

/// How a session ended, for its `session.end` record.
#[derive(Debug, Clone, Default)]
pub struct SessionEnd {
    pub reason: String,
    /// The session ended in error (protocol violation, upstream failure, audit failure).
    pub failed: bool,
    pub detail: Option<serde_json::Value>,
}

/// An authenticated, authorised, audited session on one connection.
pub struct Session {
    id: String,
    protocol: Protocol,
    identity: Identity,
    connection: Arc<Connection>,
    who: Who,
    gate: Gate,
    opened: Instant,
    statements: AtomicU64,
    ended: bool,
}

impl Session {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// A tracing span carrying the session's identity, for the adapter to run the session in.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "session",
            id = %self.id,
            protocol = self.protocol.as_str(),
            identity = %self.identity,
            connection = %self.connection.name,
        )
    }

    /// Decides a command. Everything is allowed until rules exist; adapters already carry out
    /// `Block` so rules can be added without touching them.
    pub fn decide(&self, _command: &Command) -> Verdict {
        Verdict::Allow
    }

    /// Records a finished command. The returned ticket must be durable (see [`Session::durable`])
    /// before the client is shown the outcome.
    pub fn record(
        &self,
        command: &Command,
        outcome: &CommandOutcome,
    ) -> Result<Ticket, AuditError> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        let metrics = &self.gate.inner.metrics;
        metrics
            .statement_duration_seconds
            .observe(outcome.duration.as_secs_f64());
        metrics
            .statements_total
            .get_or_create(&StatementLabels {
                protocol: self.protocol.as_str(),
                classification: command.kind(),
                outcome: if outcome.error.is_none() {
                    "ok"
                } else {
                    "error"
                },
            })
            .inc();

        let (text, truncated) = truncate(&command.text, MAX_AUDITED_STATEMENT);
        let mut event = Event::now(
            EventKind::Statement,
            Outcome {
                status: if outcome.error.is_none() {
                    Status::Success
                } else {
                    Status::Failure
                },
                reason: outcome
                    .error
                    .as_ref()
                    .map(|e| truncate(&e.message, MAX_AUDITED_ERROR).0.to_owned()),
                code: outcome.error.as_ref().map(|e| e.code.clone()),
                rows: Some(outcome.rows),
                duration_ns: Some(u64::try_from(outcome.duration.as_nanos()).unwrap_or(u64::MAX)),
            },
        );
        event.session = Some(self.id.clone());
        event.who = self.who.clone();
        event.what = What {
            connection: Some(self.connection.name.clone()),
            protocol: Some(self.protocol.as_str().to_owned()),
            statement: Some(text.to_owned()),
            classification: Some(command.kind().to_owned()),
            detail: truncated.then(|| serde_json::json!({ "statement_truncated": true })),
            ..What::default()
        };
        self.gate.inner.audit.append(event).inspect_err(|_| {
            metrics.audit_failures_total.inc();
        })
    }

    /// Records malformed or hostile input from an authenticated client.
    pub async fn protocol_error(&self, reason: &str) {
        self.gate
            .inner
            .metrics
            .protocol_errors_total
            .get_or_create(&Metrics::protocol(self.protocol.as_str()))
            .inc();
        let _ = self
            .record_event(
                EventKind::ProtocolError,
                What::default(),
                Outcome::failure(reason),
            )
            .await;
    }

    /// Records a command the verdict blocked; durable before the client hears of it.
    pub async fn record_blocked(
        &self,
        command: &Command,
        rule: &str,
        reason: &str,
    ) -> Result<(), AuditError> {
        let (text, _) = truncate(&command.text, MAX_AUDITED_STATEMENT);
        let what = What {
            statement: Some(text.to_owned()),
            classification: Some(command.kind().to_owned()),
            detail: Some(serde_json::json!({ "verdict": "block", "rule": rule })),
            ..What::default()
        };
        let mut outcome = Outcome::failure(format!("blocked by rule \"{rule}\": {reason}"));
        outcome.code = Some("42501".to_owned());
        self.record_event(EventKind::Statement, what, outcome).await
    }

    /// Waits until a recorded event is durable.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), AuditError> {
        self.gate.inner.audit.durable(ticket).await
    }

    /// Records any other session event (a cancel request, a protocol error mid-session).
    pub async fn record_event(
        &self,
        kind: EventKind,
        mut what: What,
        outcome: Outcome,
    ) -> Result<(), AuditError> {
        what.connection
            .get_or_insert_with(|| self.connection.name.clone());
        what.protocol
            .get_or_insert_with(|| self.protocol.as_str().to_owned());
        let mut event = Event::now(kind, outcome);
        event.session = Some(self.id.clone());
        event.who = self.who.clone();
        event.what = what;
        self.gate.record(event).await
    }

    /// Ends the session: audits its end with the statement count and duration.
    pub async fn end(self, reason: &str) {
        self.end_with(SessionEnd {
            reason: reason.to_owned(),
            failed: false,
            detail: None,
        })
        .await
    }

    /// Ends the session with a failure status and optional details (never secrets).
    pub async fn end_with(mut self, end: SessionEnd) {
        self.ended = true;
        let reason = end.reason.as_str();
        let statements = self.statements.load(Ordering::Relaxed);
        let mut outcome = if end.failed {
            Outcome::failure(reason)
        } else {
            Outcome::success()
        };
        outcome.reason = Some(reason.to_owned());
        outcome.duration_ns =
            Some(u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let mut detail = serde_json::json!({ "statements": statements });
        if let (Some(extra), Some(map)) = (end.detail, detail.as_object_mut()) {
            map.insert("cause".to_owned(), extra);
        }
        let what = What {
            detail: Some(detail),
            ..What::default()
        };
        if let Err(err) = self
            .record_event(EventKind::SessionEnd, what, outcome)
            .await
        {
            tracing::error!(error = %err, "could not audit session end");
        }
        self.gate
            .inner
            .index
            .ended(&self.id, statements, reason)
            .await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let label = Metrics::protocol(self.protocol.as_str());
        self.gate
            .inner
            .metrics
            .sessions_open
            .get_or_create(&label)
            .dec();
        if !self.ended {
            tracing::warn!(session = %self.id, "session dropped without end()");
        }
    }
}

fn truncate(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// A new session id: time-ordered (nanoseconds) plus 32 random bits, as hex.
fn new_session_id() -> String {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let nanos = u64::try_from(nanos).unwrap_or_default();
    format!("{nanos:016x}{:08x}", rand::random::<u32>())
}
