//! An open session: the statement pipeline an adapter drives for each command.
//!
//! Per statement, in order: [`Session::admit`] asks the policy and writes the `statement`
//! record — before the statement reaches the server — and returns what to do: forward it
//! (after its record's ticket is durable, which the [`Gated`] upstream writer enforces) or
//! refuse it. When the server has answered, [`Session::complete`] writes its
//! `statement.result`. A statement the server never answered is completed as unknown, with the
//! rows and bytes that had already reached the client.

use crate::approvals::{
    new_request, ApprovalRequest, ApprovalState, Binding, Requester, Standing, Waiting,
};
use crate::barrier::Gated;
use crate::command::Command;
use crate::connection::{Connection, Protocol};
use crate::end::EndCause;
use crate::gate::{cap, Gate};
use crate::identity::Identity;
use crate::metrics::{Metrics, StatementLabels};
use crate::policy::{
    Decision, MaskVerdict, PendingApproval, Refusal, ResponsePlan, Ruling, StatementContext, Step,
    Transaction,
};
use gatehouse_audit::{AuditError, Event, EventKind, Outcome, Status, Ticket, What, Who};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWrite;
use tokio::sync::watch;

/// Statement text up to this length is recorded whole; longer text keeps its first and last
/// halves of this, with its full length and SHA-256.
const MAX_AUDITED_STATEMENT: usize = 64 * 1024;
/// Longest upstream error message kept in a record.
const MAX_AUDITED_ERROR: usize = 1024;

/// A statement as the adapter presents it for a decision.
#[derive(Clone)]
pub struct Statement<'a> {
    pub command: &'a Command,
    pub step: Step<'a>,
    pub transaction: Transaction,
    /// Protocol details for the record (never secrets).
    pub detail: Option<serde_json::Value>,
    /// What else fixes what runs, beyond the text, for an approval to bind to: the values
    /// bound to an Execute (a digest), the texts an `EXECUTE name` runs. Starting with `!`:
    /// it cannot be fixed, and the statement cannot be approved.
    pub bound: Option<String>,
    /// For an Execute: reads what its Bind bound — a digest for the binding and the values as
    /// approvers see them, masked with the masker it is given (over the raw bytes, before any
    /// encoding for display); `None` when it cannot be read. Called only when the statement is
    /// held or the session recorded, so the statement path otherwise pays nothing for it.
    pub binder: Option<&'a Binder<'a>>,
}

/// Reads an Execute's bound values on demand (see [`Statement::binder`]).
pub type Binder<'a> =
    dyn Fn(Option<&crate::mask::Masker>) -> Option<(String, serde_json::Value)> + 'a;

/// Identifies a forwarded statement: the `seq` of its `statement` record (and its kind, for
/// the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementId {
    seq: u64,
    kind: &'static str,
}

impl StatementId {
    pub fn seq(self) -> u64 {
        self.seq
    }
}

/// A statement allowed to run. Its record is written; the message may be forwarded once
/// `ticket` is durable (hold it on the upstream [`Gated`] writer).
#[derive(Debug, Clone)]
pub struct Admitted {
    pub id: StatementId,
    pub ticket: Ticket,
    pub plan: ResponsePlan,
}

/// A statement refused; its record is written. Show the refusal once `ticket` is durable.
#[derive(Debug, Clone)]
pub struct Refused {
    pub ticket: Ticket,
    pub refusal: Refusal,
}

impl Refused {
    /// The message the caller sees.
    pub fn message(&self) -> String {
        self.refusal.message()
    }
}

impl Refusal {
    /// `blocked by rule "R": reason`, or the reason alone for the gateway's own limits.
    pub fn message(&self) -> String {
        if self.rule.is_empty() {
            self.reason.clone()
        } else {
            format!("blocked by rule \"{}\": {}", self.rule, self.reason)
        }
    }
}

/// The policy's decision, carried out as records.
#[derive(Debug)]
pub enum Admission {
    Forward(Admitted),
    Refuse(Refused),
    /// Held for approval: wait (reading the client meanwhile), then present the statement
    /// again; it is then admitted with its approval, or refused with the outcome.
    Hold(Hold),
}

/// A held statement.
#[derive(Debug)]
pub enum Hold {
    /// A request for exactly this statement is pending: wait on it.
    Waiting(Waiting),
    /// Its approval is there: claim it with [`Session::claim_approval`], then present the
    /// statement again to run it.
    Claim(String),
    /// No request yet: open this one with [`Session::request_approval`], then wait on it.
    New(Box<ApprovalRequest>),
}

/// How a forwarded statement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultStatus {
    Succeeded,
    /// The server reported an error.
    Failed {
        code: String,
        message: String,
    },
    /// The server skipped it: an earlier message of the same batch failed.
    NotRun {
        reason: String,
    },
    /// Its outcome was never seen (the session ended first). It may have run.
    Unknown {
        reason: String,
    },
}

/// The result of a forwarded statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementResult {
    pub status: ResultStatus,
    /// Rows reported by the server (or, when unknown, rows already relayed to the client).
    pub rows: u64,
    /// Bytes of response relayed to the client.
    pub bytes: u64,
    /// From when the statement became the server's current one to its end.
    pub duration: Duration,
    /// Values masked in the response, by detector or pattern name.
    pub masked: Vec<(String, u64)>,
}

/// What ends a session from outside its connection: an operator, a revocation, the
/// credential's expiry.
pub struct StopSignal {
    stop: watch::Receiver<Option<EndCause>>,
    expires_at: Option<time::OffsetDateTime>,
    /// For a session admitted by a time-bound grant: when the grant ends, and its state.
    grant_until: Option<time::OffsetDateTime>,
    grant_state: Option<watch::Receiver<ApprovalState>>,
}

impl StopSignal {
    /// Resolves when the session must end, with the cause.
    pub async fn wait(&mut self) -> EndCause {
        let until = |at: Option<time::OffsetDateTime>| async move {
            match at {
                Some(at) => {
                    let left = at - time::OffsetDateTime::now_utc();
                    let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
                    tokio::time::sleep(left).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let expiry = until(self.expires_at);
        let grant = until(self.grant_until);
        // The grant's state leaves `approved`: revoked, or expired by the sweep.
        let revoked = async {
            match self.grant_state.as_mut() {
                Some(state) => match state.wait_for(|s| *s != ApprovalState::Approved).await {
                    Ok(s) if *s == ApprovalState::Expired => EndCause::GrantExpired,
                    Ok(_) | Err(_) => EndCause::GrantRevoked,
                },
                None => std::future::pending().await,
            }
        };
        let stopped = async {
            match self.stop.wait_for(Option::is_some).await {
                Ok(cause) => cause.clone(),
                Err(_) => None,
            }
        };
        tokio::select! {
            () = expiry => EndCause::CredentialExpired,
            () = grant => EndCause::GrantExpired,
            cause = revoked => cause,
            cause = stopped => match cause {
                Some(cause) => cause,
                None => std::future::pending().await,
            },
        }
    }
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
    stop: watch::Receiver<Option<EndCause>>,
    /// Admitted by a time-bound grant ending then (no standing access), and its state.
    grant_until: Option<time::OffsetDateTime>,
    grant_state: Option<watch::Receiver<ApprovalState>>,
    recorder: Option<gatehouse_record::Recorder>,
    rows_per_statement: u64,
}

impl Session {
    pub(crate) fn new(
        id: String,
        protocol: Protocol,
        identity: Identity,
        connection: Arc<Connection>,
        who: Who,
        gate: Gate,
        stop: watch::Receiver<Option<EndCause>>,
    ) -> Self {
        Session {
            id,
            protocol,
            identity,
            connection,
            who,
            gate,
            opened: Instant::now(),
            statements: AtomicU64::new(0),
            ended: false,
            stop,
            grant_until: None,
            grant_state: None,
            recorder: None,
            rows_per_statement: 0,
        }
    }

    /// The session is recorded, keeping at most `rows` rows per statement.
    pub(crate) fn recorded_by(mut self, recorder: gatehouse_record::Recorder, rows: u64) -> Self {
        self.recorder = Some(recorder);
        self.rows_per_statement = rows;
        self
    }

    /// The session's recording, when sessions are recorded: the adapter adds every message
    /// the client is shown (masked) and flushes it as it writes to the client.
    pub fn recorder(&self) -> Option<&gatehouse_record::Recorder> {
        self.recorder.as_ref()
    }

    /// How many rows of each statement's result the recording keeps.
    pub fn recorded_rows(&self) -> u64 {
        self.rows_per_statement
    }

    /// The session was admitted by a time-bound grant: it ends when the grant ends or is
    /// revoked.
    pub(crate) fn admitted_by(mut self, grant: Option<crate::approvals::Grant>) -> Self {
        if let Some(grant) = grant {
            self.grant_until = Some(grant.until);
            self.grant_state = Some(grant.state);
        }
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The connection, its target and held credential included: only a session has it.
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

    /// Wraps the upstream write half: nothing is written before the records it depends on
    /// are durable, and nothing at all once the audit log refuses records.
    pub fn upstream_writer<W: AsyncWrite + Unpin>(&self, writer: W) -> Gated<W> {
        Gated::new(writer, self.gate.inner.sink.clone(), true)
    }

    /// Wraps the client write half: refusals are shown only once recorded.
    pub fn client_writer<W: AsyncWrite + Unpin>(&self, writer: W) -> Gated<W> {
        Gated::new(writer, self.gate.inner.sink.clone(), false)
    }

    /// What ends the session from outside (kill, revocation, credential expiry).
    pub fn stop_signal(&self) -> StopSignal {
        StopSignal {
            stop: self.stop.clone(),
            expires_at: self.identity.expires_at,
            grant_until: self.grant_until,
            grant_state: self.grant_state.clone(),
        }
    }

    /// Decides a statement and writes its record. Call before the statement's message is
    /// forwarded; forward only on [`Admission::Forward`], after its ticket is durable.
    pub fn admit(&self, statement: Statement<'_>) -> Result<Admission, AuditError> {
        let ruling = self.decide(&statement);
        match &ruling.decision {
            Decision::Allow { plan } => {
                let event =
                    self.statement_event(&statement, Outcome::pending(), "allow", None, &ruling);
                let ticket =
                    self.append_statement(event, self.recorded_parameters(&statement, &ruling))?;
                self.statements.fetch_add(1, Ordering::Relaxed);
                Ok(Admission::Forward(Admitted {
                    id: StatementId {
                        seq: ticket.seq(),
                        kind: statement.command.kind(),
                    },
                    ticket,
                    plan: plan.clone(),
                }))
            }
            Decision::Block(refusal) => self
                .refuse_with(statement, refusal.clone(), &ruling)
                .map(Admission::Refuse),
            Decision::Hold(pending) => self.held(statement, pending, &ruling),
        }
    }

    /// A statement the policy holds: admitted with a usable approval of exactly it, waiting
    /// on a pending request for it, or a new request.
    fn held(
        &self,
        statement: Statement<'_>,
        pending: &PendingApproval,
        ruling: &Ruling,
    ) -> Result<Admission, AuditError> {
        // Refused instead of held, with the rule's reason and why it cannot be approved.
        let refuse = |statement, why: &str| {
            let refusal = Refusal {
                rule: pending.rule.clone(),
                reason: format!("{} (it needs approval, and {why})", pending.reason),
                code: crate::rules::BLOCKED,
            };
            self.refuse_with(statement, refusal, ruling)
                .map(Admission::Refuse)
        };
        let Some(approvals) = &self.gate.inner.approvals else {
            return refuse(statement, "approvals are not available");
        };
        let command = statement.command;
        let (bound, parameters) = match statement.binder {
            Some(read) => match read(ruling.masking.kept().map(|m| &**m)) {
                Some((digest, values)) => (Some(digest), Some(values)),
                None => (Some("!unread".to_owned()), None),
            },
            None => (statement.bound.clone(), None),
        };
        let unapprovable = if !command.known {
            Some("the gateway does not know its text, so approvers could not see what would run")
        } else if let Step::FunctionCall { .. } = statement.step {
            Some("a direct function call (fastpath) shows approvers only a function's object id")
        } else if command.text.len() > MAX_AUDITED_STATEMENT {
            Some("its text is longer than approvers are shown (64 KiB)")
        } else if bound.as_deref().is_some_and(|b| b.starts_with('!')) {
            Some("the values bound to it could not be read, so approvers could not see them")
        } else {
            None
        };
        if let Some(why) = unapprovable {
            return refuse(statement, &format!("cannot be approved: {why}"));
        }
        let mut digest = Sha256::new();
        digest.update(command.text.as_bytes());
        if let Some(bound) = &bound {
            digest.update([0]);
            digest.update(bound.as_bytes());
        }
        let binding = Binding {
            statement_sha256: hex::encode(digest.finalize()),
            principal: self.identity.principal(),
            actors: self
                .identity
                .actors
                .iter()
                .map(|a| a.subject.clone())
                .collect(),
            connection: self.connection.name.clone(),
        };
        match approvals.standing(&binding, &self.id, time::OffsetDateTime::now_utc()) {
            Standing::Claimable(id) => Ok(Admission::Hold(Hold::Claim(id))),
            Standing::Approved(request) => {
                let mut event =
                    self.statement_event(&statement, Outcome::pending(), "allow", None, ruling);
                if let Some(serde_json::Value::Object(detail)) = &mut event.what.detail {
                    detail.insert("rule".into(), pending.rule.clone().into());
                    detail.insert("approval".into(), request.id.clone().into());
                    let by: Vec<&str> = request.approvals.iter().map(|v| v.by.as_str()).collect();
                    detail.insert("approved_by".into(), by.into());
                }
                let ticket =
                    self.append_statement(event, self.recorded_parameters(&statement, ruling))?;
                self.statements.fetch_add(1, Ordering::Relaxed);
                Ok(Admission::Forward(Admitted {
                    id: StatementId {
                        seq: ticket.seq(),
                        kind: command.kind(),
                    },
                    ticket,
                    plan: ResponsePlan {
                        masking: ruling.masking.clone(),
                    },
                }))
            }
            Standing::Pending(waiting) => Ok(Admission::Hold(Hold::Waiting(waiting))),
            Standing::None => {
                let effect = serde_json::json!({
                    "kind": command.kind(),
                    "step": statement.step.as_str(),
                    "runs": command
                        .classification
                        .detail
                        .iter()
                        .flat_map(|s| s.runs.iter())
                        .collect::<Vec<_>>(),
                    "tables_written": command
                        .classification
                        .detail
                        .iter()
                        .flat_map(|s| s.tables_written.iter())
                        .collect::<Vec<_>>(),
                    "text_known": command.known,
                    "functions": command
                        .classification
                        .detail
                        .iter()
                        .flat_map(|s| s.functions.iter())
                        .collect::<Vec<_>>(),
                    "parameters": parameters,
                });
                let masked = ruling.masking.kept().and_then(|m| {
                    mask_statement(m, &command.text, &mut crate::mask::Counts::default())
                });
                let text = cap(
                    masked.as_deref().unwrap_or(&command.text),
                    MAX_AUDITED_STATEMENT,
                )
                .0;
                let mut request = new_request(
                    &self.identity,
                    &self.connection.name,
                    &self.id,
                    text,
                    binding.statement_sha256,
                    &pending.rule,
                    &pending.reason,
                    effect,
                    &pending.spec,
                );
                if masked.is_some() {
                    request.planned_text = Some(command.text.to_string());
                }
                Ok(Admission::Hold(Hold::New(Box::new(request))))
            }
        }
    }

    /// Opens an approval request for a held statement; its record is durable and it is stored
    /// when this returns.
    pub async fn request_approval(&self, request: ApprovalRequest) -> Result<Waiting, String> {
        match &self.gate.inner.approvals {
            Some(approvals) => approvals.request(request, self.who.clone()).await,
            None => Err("approvals are not available".into()),
        }
    }

    /// An approval request, as it stands.
    pub async fn approval(&self, id: &str) -> Option<ApprovalRequest> {
        match &self.gate.inner.approvals {
            Some(approvals) => approvals.get(id).await.ok().flatten(),
            None => None,
        }
    }

    /// Closes a request this session was waiting on: the client left or cancelled.
    pub async fn close_approval(&self, id: &str, state: ApprovalState) {
        if let Some(approvals) = &self.gate.inner.approvals {
            approvals.close(id, state, self.who.clone()).await;
        }
    }

    /// Uses up an approval for this session; its record is durable when this returns. Then
    /// present the statement again: it is admitted with the approval.
    pub async fn claim_approval(&self, id: &str) -> Result<(), String> {
        match &self.gate.inner.approvals {
            Some(approvals) => approvals.claim(id, &self.id, self.who.clone()).await,
            None => Err("approvals are not available".into()),
        }
    }

    /// Decides a statement that does not run yet (a Parse): writes a record only when it is
    /// refused. The Execute that runs it is admitted (and recorded) on its own.
    pub fn screen(&self, statement: Statement<'_>) -> Result<Option<Refused>, AuditError> {
        let ruling = self.decide(&statement);
        match &ruling.decision {
            Decision::Allow { .. } | Decision::Hold(_) => Ok(None),
            Decision::Block(refusal) => self
                .refuse_with(statement, refusal.clone(), &ruling)
                .map(Some),
        }
    }

    /// Changes whenever the policy is replaced.
    pub fn policy_generation(&self) -> u64 {
        self.gate.inner.policy.generation()
    }

    /// The masking that applies to this session's caller now.
    pub fn masking(&self) -> MaskVerdict {
        self.gate
            .inner
            .policy
            .masking(&self.identity, &self.connection, self.granted())
    }

    fn decide(&self, statement: &Statement<'_>) -> Ruling {
        self.gate.inner.policy.decide(&StatementContext {
            identity: &self.identity,
            connection: &self.connection,
            command: statement.command,
            step: statement.step,
            transaction: statement.transaction,
            granted: self.granted(),
        })
    }

    /// Whether the caller holds an approved, unexpired access grant to this connection now.
    fn granted(&self) -> bool {
        let now = time::OffsetDateTime::now_utc();
        if self.grant_until.is_some_and(|until| until > now)
            && self
                .grant_state
                .as_ref()
                .is_some_and(|s| *s.borrow() == ApprovalState::Approved)
        {
            return true;
        }
        self.connection.access.grants.is_some()
            && self.gate.inner.approvals.as_ref().is_some_and(|a| {
                a.active_grant(&Requester::of(&self.identity), &self.connection.name, now)
                    .is_some()
            })
    }

    /// Refuses a statement without asking the policy (the gateway's own limits) and writes its
    /// record. An empty `rule` means the gateway itself refused it.
    pub fn refuse(
        &self,
        statement: Statement<'_>,
        refusal: Refusal,
    ) -> Result<Refused, AuditError> {
        let ruling = Ruling {
            masking: self.masking(),
            ..Ruling::allow()
        };
        self.refuse_with(statement, refusal, &ruling)
    }

    fn refuse_with(
        &self,
        statement: Statement<'_>,
        refusal: Refusal,
        ruling: &Ruling,
    ) -> Result<Refused, AuditError> {
        let mut outcome = Outcome::failure(refusal.message());
        outcome.code = Some(refusal.code.to_owned());
        let rule = (!refusal.rule.is_empty()).then_some(refusal.rule.as_str());
        let event = self.statement_event(&statement, outcome, "block", rule, ruling);
        let ticket = self.append_statement(event, self.recorded_parameters(&statement, ruling))?;
        self.count(statement.command.kind(), "blocked");
        Ok(Refused { ticket, refusal })
    }

    /// Records a statement the server refused before running anything (a Parse that failed):
    /// written after the fact, since nothing ran.
    pub fn server_refused(
        &self,
        command: &Command,
        step: Step<'_>,
        code: &str,
        message: &str,
    ) -> Result<Ticket, AuditError> {
        let mut outcome = Outcome::failure(cap(message, MAX_AUDITED_ERROR).0);
        outcome.code = Some(code.to_owned());
        let statement = Statement {
            command,
            step,
            transaction: Transaction::Idle,
            detail: Some(serde_json::json!({ "refused_by": "server" })),
            bound: None,
            binder: None,
        };
        let ruling = Ruling {
            masking: self.masking(),
            ..Ruling::allow()
        };
        let event = self.statement_event(&statement, outcome, "allow", None, &ruling);
        self.count(command.kind(), "error");
        self.append_statement(event, None)
    }

    /// Writes the result of a forwarded statement.
    pub fn complete(
        &self,
        id: StatementId,
        result: &StatementResult,
    ) -> Result<Ticket, AuditError> {
        let metrics = &self.gate.inner.metrics;
        metrics
            .statement_duration_seconds
            .observe(result.duration.as_secs_f64());
        let (status, label, reason, code) = match &result.status {
            ResultStatus::Succeeded => (Status::Success, "ok", None, None),
            ResultStatus::Failed { code, message } => (
                Status::Failure,
                "error",
                Some(cap(message, MAX_AUDITED_ERROR).0.to_owned()),
                Some(code.clone()),
            ),
            ResultStatus::NotRun { reason } => {
                (Status::Failure, "not_run", Some(reason.clone()), None)
            }
            ResultStatus::Unknown { reason } => {
                (Status::Unknown, "unknown", Some(reason.clone()), None)
            }
        };
        metrics
            .statements_total
            .get_or_create(&StatementLabels {
                protocol: self.protocol.as_str(),
                classification: id.kind,
                outcome: label,
            })
            .inc();
        let mut event = Event::now(
            EventKind::StatementResult,
            Outcome {
                status,
                reason,
                code,
                rows: Some(result.rows),
                duration_ns: Some(u64::try_from(result.duration.as_nanos()).unwrap_or(u64::MAX)),
            },
        );
        // Who, where and what are in the statement record `ref` names; this one stays small.
        event.session = Some(self.id.clone());
        event.refers = Some(id.seq);
        let mut detail = serde_json::json!({ "bytes": result.bytes });
        if !result.masked.is_empty() {
            let masked: serde_json::Map<String, serde_json::Value> = result
                .masked
                .iter()
                .map(|(name, n)| (name.clone(), (*n).into()))
                .collect();
            detail["masked"] = serde_json::Value::Object(masked);
        }
        if let Some(recorder) = &self.recorder {
            let mut frame = serde_json::json!({
                "seq": id.seq,
                "status": label,
                "rows": result.rows,
                "duration_ns": event.outcome.duration_ns,
            });
            if let Some(code) = &event.outcome.code {
                frame["code"] = code.as_str().into();
            }
            if let Some(reason) = &event.outcome.reason {
                frame["message"] = reason.as_str().into();
            }
            if let Some(masked) = detail.get("masked") {
                frame["masked"] = masked.clone();
            }
            recorder.json(gatehouse_record::FrameKind::Result, &frame);
        }
        event.what = What {
            detail: Some(detail),
            ..What::default()
        };
        self.append(event)
    }

    fn statement_event(
        &self,
        statement: &Statement<'_>,
        outcome: Outcome,
        decision: &str,
        rule: Option<&str>,
        ruling: &Ruling,
    ) -> Event {
        let command = statement.command;
        let text = &command.text;
        let mut detail = serde_json::Map::new();
        detail.insert("step".into(), statement.step.as_str().into());
        match statement.step {
            Step::Prepare { name } => {
                detail.insert("prepared".into(), name.into());
            }
            Step::Execute { portal, statement } => {
                detail.insert("portal".into(), portal.into());
                if let Some(name) = statement {
                    detail.insert("prepared".into(), name.into());
                }
            }
            Step::FunctionCall { oid } => {
                detail.insert("function_oid".into(), oid.into());
            }
            Step::Query => {}
        }
        detail.insert("decision".into(), decision.into());
        if let Some(rule) = rule {
            detail.insert("rule".into(), rule.into());
        }
        if let Some(policy) = &ruling.policy {
            detail.insert("policy".into(), policy.as_ref().into());
        }
        if ruling.unseen {
            detail.insert("unseen".into(), true.into());
        }
        if !ruling.observed.is_empty() {
            let observed: Vec<serde_json::Value> = ruling
                .observed
                .iter()
                .map(|(rule, would)| serde_json::json!({ "rule": rule, "would": would }))
                .collect();
            detail.insert("observed".into(), observed.into());
        }
        detail.insert("parsed".into(), command.classification.parsed.into());
        detail.insert(
            "statements".into(),
            command.classification.statements.into(),
        );
        if !command.known {
            detail.insert("text_known".into(), false.into());
        }
        if let Some(encoding) = command.decoded_from {
            detail.insert("client_encoding".into(), encoding.into());
        }
        // What the gateway keeps is masked like what the caller is shown: the whole text first,
        // then cut, so no value is split by the cut.
        let mut masked_in_text = crate::mask::Counts::default();
        let masked = ruling
            .masking
            .kept()
            .and_then(|m| mask_statement(m, text, &mut masked_in_text));
        let shown: &str = masked.as_deref().unwrap_or(text);
        if masked.is_some() || text.len() > MAX_AUDITED_STATEMENT {
            detail.insert(
                "statement_sha256".into(),
                hex::encode(Sha256::digest(text.as_bytes())).into(),
            );
        }
        let recorded = if shown.len() > MAX_AUDITED_STATEMENT {
            let half = MAX_AUDITED_STATEMENT / 2;
            let head = cap(shown, half).0;
            let mut tail_start = shown.len() - half;
            while !shown.is_char_boundary(tail_start) {
                tail_start += 1;
            }
            detail.insert("statement_truncated".into(), true.into());
            detail.insert("statement_bytes".into(), text.len().into());
            detail.insert("statement_tail".into(), shown[tail_start..].into());
            head.to_owned()
        } else {
            shown.to_owned()
        };
        if let Some(masker) = ruling.masking.kept() {
            if !masked_in_text.is_empty() {
                detail.insert(
                    "masked_in_text".into(),
                    counts_json(masker, &masked_in_text),
                );
            }
            // Names are the client's to choose: a value fits in one.
            for key in ["portal", "prepared"] {
                if let Some(serde_json::Value::String(name)) = detail.get(key) {
                    let mut counts = crate::mask::Counts::default();
                    if let Some(m) = masker.mask_copy(name.as_bytes(), &mut counts) {
                        let m = String::from_utf8_lossy(&m).into_owned();
                        detail.insert(key.into(), m.into());
                    }
                }
            }
        }
        match &ruling.masking {
            MaskVerdict::Mask { rule, .. } => {
                detail.insert("masking".into(), rule.as_ref().into());
            }
            MaskVerdict::Exempt { rule, .. } => {
                detail.insert("unmasked".into(), rule.as_ref().into());
            }
            MaskVerdict::None => {}
        }
        if let Some(serde_json::Value::Object(extra)) = &statement.detail {
            for (k, v) in extra {
                detail.insert(k.clone(), v.clone());
            }
        }
        let mut event = Event::now(EventKind::Statement, outcome);
        event.session = Some(self.id.clone());
        event.who = self.who.clone();
        event.what = What {
            connection: Some(self.connection.name.clone()),
            protocol: Some(self.protocol.as_str().to_owned()),
            statement: Some(recorded),
            classification: Some(command.kind().to_owned()),
            detail: Some(serde_json::Value::Object(detail)),
            ..What::default()
        };
        event
    }

    /// The values bound to an Execute, masked like everything the gateway keeps, for the
    /// recording (read only when the session is recorded).
    fn recorded_parameters(
        &self,
        statement: &Statement<'_>,
        ruling: &Ruling,
    ) -> Option<serde_json::Value> {
        self.recorder.as_ref()?;
        let (_, values) = (statement.binder?)(ruling.masking.kept().map(|m| &**m))?;
        Some(values)
    }

    /// Appends a statement record, and the statement (with its bound values) to the recording.
    fn append_statement(
        &self,
        event: Event,
        parameters: Option<serde_json::Value>,
    ) -> Result<Ticket, AuditError> {
        let Some(recorder) = &self.recorder else {
            return self.append(event);
        };
        let mut frame = crate::recording::statement_frame(&event);
        if let Some(parameters) = parameters {
            frame.insert("parameters".into(), parameters);
        }
        let ticket = self.append(event)?;
        crate::recording::write_statement(recorder, ticket.seq(), frame);
        Ok(ticket)
    }

    fn append(&self, event: Event) -> Result<Ticket, AuditError> {
        self.gate.inner.sink.append(event).inspect_err(|_| {
            self.gate.inner.metrics.audit_failures_total.inc();
        })
    }

    fn count(&self, classification: &'static str, outcome: &'static str) {
        self.gate
            .inner
            .metrics
            .statements_total
            .get_or_create(&StatementLabels {
                protocol: self.protocol.as_str(),
                classification,
                outcome,
            })
            .inc();
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

    /// Ends the session: audits its end with the cause, statement count and duration (and any
    /// protocol details, never secrets).
    pub async fn end(mut self, cause: &EndCause, detail: Option<serde_json::Value>) {
        self.ended = true;
        self.gate.inner.registry.remove(&self.id);
        let reason = cause.to_string();
        let statements = self.statements.load(Ordering::Relaxed);
        let mut outcome = if cause.failed() {
            Outcome::failure(reason.clone())
        } else {
            Outcome::success()
        };
        outcome.reason = Some(reason.clone());
        outcome.duration_ns =
            Some(u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let mut body = serde_json::json!({ "statements": statements, "cause": cause.code() });
        // The recording is complete and synced before the record that holds its hash.
        if let Some(recorder) = self.recorder.take() {
            let end = serde_json::json!({ "cause": cause.code(), "reason": reason });
            match recorder.finish(&end).await {
                Ok(summary) => {
                    body["recording"] = serde_json::json!({
                        "file": summary.file,
                        "sha256": summary.sha256,
                        "bytes": summary.bytes,
                        "truncated": summary.truncated,
                        "dropped_frames": summary.dropped_frames,
                        "encrypted": summary.encrypted,
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "session recording incomplete");
                    outcome.status = gatehouse_audit::Status::Failure;
                    body["recording_error"] = e.to_string().into();
                }
            }
        }
        if let (Some(serde_json::Value::Object(extra)), Some(map)) = (detail, body.as_object_mut())
        {
            for (k, v) in extra {
                map.entry(k).or_insert(v);
            }
        }
        let what = What {
            detail: Some(body),
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
            .ended(&self.id, statements, &reason)
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
            self.gate.inner.registry.remove(&self.id);
            tracing::warn!(session = %self.id, "session dropped without end()");
        }
    }
}

/// Masked counts by kind name, for a record.
pub(crate) fn counts_json(
    masker: &crate::mask::Masker,
    counts: &crate::mask::Counts,
) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .map(|(kind, n)| (masker.kind_name(kind).to_owned(), n.into()))
        .collect();
    serde_json::Value::Object(map)
}

/// A statement's text with the values in it masked, or `None` when it holds none. Only values
/// that cover no code are masked (see [`gatehouse_inspect::tokens`]): the record never hides
/// what ran.
pub(crate) fn mask_statement(
    masker: &crate::mask::Masker,
    text: &str,
    counts: &mut crate::mask::Counts,
) -> Option<String> {
    let mut findings = Vec::new();
    masker.find(text.as_bytes(), &mut findings);
    if findings.is_empty() {
        return None;
    }
    if let Some(code) = gatehouse_inspect::tokens::code_ranges(text) {
        findings.retain(|f| !code.iter().any(|r| r.start < f.end && f.start < r.end));
    }
    if findings.is_empty() {
        return None;
    }
    let mut bytes = text.as_bytes().to_vec();
    masker.apply(&mut bytes, &findings, counts);
    Some(String::from_utf8_lossy(&bytes).into_owned())
}
