//! The connection pipeline every protocol adapter drives, and the one door for requests.
//!
//! Phases, in order: authenticate the credential, authorise the identity for the connection,
//! open the session (audited before the adapter may touch the target). An adapter can only
//! reach a target through a [`Session`], and a `Session` can only be built by [`Gate::open`],
//! so no adapter can skip a phase. Request-scoped callers (the admin API, later HTTP) go
//! through [`Gate::authenticate_request`], audited and counted the same way.

use crate::approvals::Approvals;
use crate::connection::{Connections, Protocol, Target, UpstreamTls};
use crate::end::EndCause;
use crate::identity::{AuthError, Authenticator, Identity};
use crate::limiter::{Admit, PreAuthLimiter, PreAuthLimits, Summary};
use crate::metrics::Metrics;
use crate::policy::{AllowAll, Policy};
use crate::registry::Registry;
use crate::session::Session;
use crate::sink::{self, AuditSink};
use gatehouse_audit::{AuditError, Event, EventKind, Outcome, What, Who};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Longest client-claimed text (user name, connection name) kept in a record before
/// authentication; longer claims are cut and flagged, so nobody can make records large.
const MAX_CLAIMED: usize = 128;
/// Longest failure reason kept in a pre-authentication record.
const MAX_PRE_AUTH_REASON: usize = 256;

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
    /// Protocol details to keep in `session.start` (e.g. the startup parameters forwarded).
    pub detail: Option<&'a serde_json::Value>,
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

/// An authenticated request-scoped caller (an admin API request).
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    pub who: Who,
}

/// Shared, cheaply cloneable entry point of the pipeline.
#[derive(Clone)]
pub struct Gate {
    pub(crate) inner: Arc<GateInner>,
}

pub(crate) struct GateInner {
    authenticator: Arc<dyn Authenticator>,
    connections: Connections,
    pub(crate) sink: Arc<dyn AuditSink>,
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) index: Arc<dyn SessionIndex>,
    pub(crate) registry: Registry,
    pub(crate) approvals: Option<Arc<Approvals>>,
    recordings: Option<Arc<crate::recording::Recordings>>,
    limiter: Mutex<PreAuthLimiter>,
}

/// What a [`Gate`] is built from.
pub struct GateParts {
    pub authenticator: Arc<dyn Authenticator>,
    pub connections: Connections,
    pub sink: Arc<dyn AuditSink>,
    pub metrics: Arc<Metrics>,
    pub index: Arc<dyn SessionIndex>,
    pub policy: Arc<dyn Policy>,
    /// Holds for approval need a broker; without one, a statement that needs approval is
    /// refused.
    pub approvals: Option<Arc<Approvals>>,
    pub pre_auth: PreAuthLimits,
    /// Sessions are recorded when set.
    pub recordings: Option<Arc<crate::recording::Recordings>>,
}

impl GateParts {
    /// Parts with the allow-all policy and default limits.
    pub fn new(
        authenticator: Arc<dyn Authenticator>,
        connections: Connections,
        sink: Arc<dyn AuditSink>,
        metrics: Arc<Metrics>,
        index: Arc<dyn SessionIndex>,
    ) -> Self {
        GateParts {
            authenticator,
            connections,
            sink,
            metrics,
            index,
            policy: Arc::new(AllowAll),
            approvals: None,
            pre_auth: PreAuthLimits::default(),
            recordings: None,
        }
    }
}

impl Gate {
    pub fn new(parts: GateParts) -> Self {
        Gate {
            inner: Arc::new(GateInner {
                authenticator: parts.authenticator,
                connections: parts.connections,
                sink: parts.sink,
                policy: parts.policy,
                metrics: parts.metrics,
                index: parts.index,
                registry: Registry::default(),
                approvals: parts.approvals,
                recordings: parts.recordings,
                limiter: Mutex::new(PreAuthLimiter::new(parts.pre_auth)),
            }),
        }
    }

    /// What an adapter needs to prepare for its connections before any session: each
    /// connection's name, protocol and upstream TLS settings. Never a credential.
    pub fn setup(&self) -> Vec<(String, Protocol, UpstreamTls)> {
        self.inner
            .connections
            .iter()
            .map(|c| {
                let Target::Postgres(t) = &c.target;
                (c.name.clone(), c.target.protocol(), t.tls.clone())
            })
            .collect()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Authenticates and authorises a connection attempt and opens its session.
    ///
    /// Every outcome is audited and durable before this returns; if the audit log cannot take
    /// the record, the attempt is refused (fail closed).
    pub async fn open(&self, req: ConnectRequest<'_>) -> Result<Session, Denied> {
        let inner = &self.inner;
        let label = Metrics::protocol(req.protocol.as_str());
        let (connection_claim, connection_cut) = cap(req.connection, MAX_CLAIMED);
        let what = What {
            connection: Some(connection_claim.to_owned()),
            protocol: Some(req.protocol.as_str().to_owned()),
            detail: connection_cut.then(|| serde_json::json!({ "connection_truncated": true })),
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
                let denied = match &err {
                    AuthError::Rejected(reason) => Denied::BadCredential(reason.clone()),
                    AuthError::Unavailable(reason) => Denied::Unavailable(reason.clone()),
                };
                let who = Who {
                    method: Some("none".to_owned()),
                    source: Some(req.source.to_string()),
                    claimed_user: req.claimed_user.map(claimed),
                    ..Who::default()
                };
                self.pre_auth_failure(req.source, who, what, &err.to_string())
                    .await?;
                return Err(denied);
            }
        };

        let who = identity.who(Some(req.source), req.claimed_user.map(claimed).as_deref());
        // Standing access, or else an approved, unexpired grant (the session ends with it).
        let mut grant = None;
        let connection = inner
            .connections
            .get(req.connection)
            .filter(|c| c.target.protocol() == req.protocol)
            .filter(|c| {
                if c.access.permits(&identity) {
                    return true;
                }
                grant = c
                    .access
                    .grants
                    .as_ref()
                    .and(inner.approvals.as_ref())
                    .and_then(|a| {
                        a.active_grant(
                            &crate::approvals::Requester::of(&identity),
                            &c.name,
                            time::OffsetDateTime::now_utc(),
                        )
                    });
                grant.is_some()
            })
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
        inner.sink.append(auth).map_err(|e| self.audit_failed(e))?;
        let mut start = Event::now(EventKind::SessionStart, Outcome::success());
        start.session = Some(id.clone());
        start.who = who.clone();
        let mut detail = req.detail.cloned();
        if let Some(g) = &grant {
            let entry =
                serde_json::json!({ "id": g.id, "until": crate::approvals::rfc3339(g.until) });
            match &mut detail {
                Some(serde_json::Value::Object(map)) => {
                    map.insert("grant".into(), entry);
                }
                _ => detail = Some(serde_json::json!({ "grant": entry })),
            }
        }
        start.what = What { detail, ..what };
        let started_at = start.time;
        self.record_or_refuse(start).await?;
        let recorder = match &inner.recordings {
            Some(recordings) => {
                let started = crate::approvals::rfc3339(started_at);
                match recordings.open(&id, req.protocol.as_str(), &connection.name, &started) {
                    Ok(recorder) => Some((recorder, recordings.rows_per_statement)),
                    Err(e) => {
                        // Fail closed: a session that cannot be recorded does not start.
                        tracing::error!(error = %e, session = %id, "cannot record session");
                        let cause = EndCause::RecordingUnavailable(e.to_string());
                        let mut end =
                            Event::now(EventKind::SessionEnd, Outcome::failure(cause.to_string()));
                        end.session = Some(id.clone());
                        end.who = who.clone();
                        end.what = What {
                            connection: Some(connection.name.clone()),
                            protocol: Some(req.protocol.as_str().to_owned()),
                            detail: Some(
                                serde_json::json!({ "statements": 0, "cause": cause.code() }),
                            ),
                            ..What::default()
                        };
                        let _ = self.record(end).await;
                        return Err(Denied::Unavailable(e.to_string()));
                    }
                }
            }
            None => None,
        };

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
        let stop = inner.registry.register(info, &identity);
        let session = Session::new(
            id,
            req.protocol,
            identity,
            connection,
            who,
            self.clone(),
            stop,
        )
        .admitted_by(grant);
        Ok(match recorder {
            Some((recorder, rows)) => session.recorded_by(recorder, rows),
            None => session,
        })
    }

    /// The one authentication door for request-scoped callers: authenticates `credential`,
    /// audits a failure (rate-limited per source) and counts it under `label`.
    pub async fn authenticate_request(
        &self,
        label: &str,
        credential: Option<&str>,
        source: SocketAddr,
        resource: &str,
    ) -> Result<Caller, Denied> {
        let result = match credential {
            Some(credential) => self.inner.authenticator.authenticate(credential).await,
            None => Err(AuthError::Rejected("missing bearer credential".to_owned())),
        };
        match result {
            Ok(identity) => {
                let who = identity.who(Some(source), None);
                Ok(Caller { identity, who })
            }
            Err(err) => {
                self.inner
                    .metrics
                    .auth_failures_total
                    .get_or_create(&Metrics::protocol(label))
                    .inc();
                let who = Who {
                    method: Some("none".to_owned()),
                    source: Some(source.to_string()),
                    ..Who::default()
                };
                let what = What {
                    protocol: Some(label.to_owned()),
                    resource: Some(cap(resource, MAX_CLAIMED).0.to_owned()),
                    ..What::default()
                };
                self.pre_auth_failure(source, who, what, &err.to_string())
                    .await?;
                Err(match err {
                    AuthError::Rejected(r) => Denied::BadCredential(r),
                    AuthError::Unavailable(r) => Denied::Unavailable(r),
                })
            }
        }
    }

    /// Records malformed or hostile input on a connection that has no session yet
    /// (rate-limited per source, like every failure before authentication).
    pub async fn protocol_error(&self, protocol: Protocol, source: SocketAddr, reason: &str) {
        self.inner
            .metrics
            .protocol_errors_total
            .get_or_create(&Metrics::protocol(protocol.as_str()))
            .inc();
        let who = Who {
            source: Some(source.to_string()),
            ..Who::default()
        };
        let what = What {
            protocol: Some(protocol.as_str().to_owned()),
            ..What::default()
        };
        let mut event = Event::now(
            EventKind::ProtocolError,
            Outcome::failure(cap(reason, MAX_PRE_AUTH_REASON).0),
        );
        event.who = who;
        event.what = what;
        // Nothing is left to refuse: the connection is closing either way.
        let _ = self.limited(source, event, reason).await;
    }

    async fn pre_auth_failure(
        &self,
        source: SocketAddr,
        who: Who,
        what: What,
        reason: &str,
    ) -> Result<(), Denied> {
        let mut event = Event::now(
            EventKind::AuthFailure,
            Outcome::failure(cap(reason, MAX_PRE_AUTH_REASON).0),
        );
        event.who = who;
        event.what = what;
        self.limited(source, event, reason)
            .await
            .map_err(|e| self.audit_failed(e))
    }

    /// Writes a pre-authentication event unless its source is over its allowance (then it is
    /// counted into a summary), plus the summaries of windows that closed.
    async fn limited(
        &self,
        source: SocketAddr,
        event: Event,
        reason: &str,
    ) -> Result<(), AuditError> {
        let (admit, summaries) =
            self.limiter()
                .admit(source.ip(), cap(reason, 64).0, Instant::now());
        self.write_summaries(summaries);
        match admit {
            Admit::Record => self.record(event).await,
            Admit::Counted => match self.inner.sink.failure() {
                // Fail closed still: when nothing can be recorded, nothing is admitted.
                Some(why) => Err(AuditError::Unavailable(why)),
                None => Ok(()),
            },
        }
    }

    /// Writes the summaries of pre-authentication windows that are over; call now and then
    /// (and at stop with `all`).
    pub fn sweep_pre_auth(&self, all: bool) {
        let summaries = {
            let mut limiter = self.limiter();
            if all {
                limiter.flush()
            } else {
                limiter.sweep(Instant::now())
            }
        };
        self.write_summaries(summaries);
    }

    fn write_summaries(&self, summaries: Vec<Summary>) {
        for s in summaries {
            let mut event = Event::now(
                EventKind::AuthFailureSummary,
                Outcome::failure(format!(
                    "{} failures before authentication counted, not recorded one by one",
                    s.counted
                )),
            );
            event.who = Who {
                source: s.source.map(|ip| ip.to_string()),
                ..Who::default()
            };
            event.what = What {
                detail: Some(serde_json::json!({
                    "counted": s.counted,
                    "recorded": s.recorded,
                    "window_seconds": s.window_start.elapsed().as_secs(),
                    "reasons": s.reasons,
                    "source": s.source.map_or("other sources".to_owned(), |ip| ip.to_string()),
                })),
                ..What::default()
            };
            if let Err(e) = self.inner.sink.append(event) {
                tracing::error!(error = %e, "could not record a pre-authentication summary");
            }
        }
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, PreAuthLimiter> {
        self.inner
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends any event and waits until it is durable.
    pub async fn record(&self, event: Event) -> Result<(), AuditError> {
        let result = sink::record(self.inner.sink.as_ref(), event).await;
        if result.is_err() {
            self.inner.metrics.audit_failures_total.inc();
        }
        result
    }

    /// Who grants time-bound access to a connection, if it offers it.
    pub fn grant_policy(&self, connection: &str) -> Option<crate::connection::GrantPolicy> {
        self.inner
            .connections
            .get(connection)
            .and_then(|c| c.access.grants.clone())
    }

    /// The approvals broker, when one is configured.
    pub fn approvals(&self) -> Option<&Arc<Approvals>> {
        self.inner.approvals.as_ref()
    }

    /// The open sessions.
    pub fn open_sessions(&self) -> Vec<SessionInfo> {
        self.inner.registry.list()
    }

    /// Ends an open session on an operator's request: records `session.kill` (durable before
    /// anything happens), then tells the session, which records its own end. False when no
    /// such session is open.
    pub async fn kill_session(&self, id: &str, by: &Caller) -> Result<bool, AuditError> {
        if !self.open_sessions().iter().any(|s| s.id == id) {
            return Ok(false);
        }
        let mut event = Event::now(EventKind::SessionKill, Outcome::success());
        event.session = Some(id.to_owned());
        event.who = by.who.clone();
        self.record(event).await?;
        Ok(self.inner.registry.stop(
            id,
            EndCause::Killed {
                by: by.identity.principal(),
            },
        ))
    }

    /// Ends every open session opened with the API key `name` (it was revoked).
    pub fn end_sessions_of_key(&self, name: &str) -> Vec<String> {
        self.inner.registry.stop_where(
            |identity| identity.api_key_name() == Some(name),
            EndCause::CredentialRevoked,
        )
    }

    /// Appends an event without waiting for it (callers that must not block on the disk).
    pub fn append(&self, event: Event) -> Result<gatehouse_audit::Ticket, AuditError> {
        self.inner.sink.append(event)
    }

    /// `Some(reason)` while the audit log refuses records.
    pub fn audit_failure(&self) -> Option<String> {
        self.inner.sink.failure()
    }

    async fn record_or_refuse(&self, event: Event) -> Result<(), Denied> {
        self.record(event).await.map_err(|e| self.audit_failed(e))
    }

    pub(crate) fn audit_failed(&self, err: AuditError) -> Denied {
        tracing::error!(error = %err, "audit log refused a record; refusing the action");
        Denied::Unavailable("audit log unavailable".to_owned())
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary; true when it was cut.
pub(crate) fn cap(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// A claimed name as recorded: capped, with a visible mark when it was cut.
fn claimed(text: &str) -> String {
    match cap(text, MAX_CLAIMED) {
        (t, false) => t.to_owned(),
        (t, true) => format!("{t}… ({} bytes)", text.len()),
    }
}

/// A new session id: time-ordered (nanoseconds) plus 32 random bits, as hex.
fn new_session_id() -> String {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let nanos = u64::try_from(nanos).unwrap_or_default();
    format!("{nanos:016x}{:08x}", rand::random::<u32>())
}
