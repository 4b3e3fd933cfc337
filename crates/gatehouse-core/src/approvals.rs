//! Just-in-time approvals: a statement an `approve` rule holds becomes a request; people decide
//! it; an approval lets exactly that statement run once, for exactly that identity on exactly
//! that connection, before it expires.
//!
//! The broker keeps requests in memory (decisions are taken on the statement path, which must
//! not wait for a database) and writes every change through to an [`ApprovalStore`], from
//! which a restarted gateway reloads the open ones. Every transition is an audit record,
//! written before it takes effect: requested, approved (by whom), denied (with the reason),
//! expired, abandoned (the client left), cancelled (a cancel request), executed.

use crate::identity::Identity;
use crate::sink::{self, AuditSink};
use gatehouse_audit::{Event, EventKind, Outcome, What, Who};
use gatehouse_policy::ApprovalSpec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use time::OffsetDateTime;
use tokio::sync::watch;

/// Where a request stands. Everything but `Pending` and `Approved` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    Expired,
    Abandoned,
    Cancelled,
    Executed,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
            ApprovalState::Abandoned => "abandoned",
            ApprovalState::Cancelled => "cancelled",
            ApprovalState::Executed => "executed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ApprovalState::Pending,
            ApprovalState::Approved,
            ApprovalState::Denied,
            ApprovalState::Expired,
            ApprovalState::Abandoned,
            ApprovalState::Cancelled,
            ApprovalState::Executed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }

    fn open(self) -> bool {
        matches!(self, ApprovalState::Pending | ApprovalState::Approved)
    }
}

/// Who asked, as the separation-of-duties checks need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    pub principal: String,
    pub subject: String,
    /// The actor chain, nearest first.
    pub actors: Vec<String>,
    pub groups: Vec<String>,
}

impl Requester {
    pub fn of(identity: &Identity) -> Self {
        Requester {
            principal: identity.principal(),
            subject: identity.subject.clone(),
            actors: identity.actors.iter().map(|a| a.subject.clone()).collect(),
            groups: identity.groups.clone(),
        }
    }
}

/// One approver's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub by: String,
    pub comment: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// What is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// One statement, held while it waits.
    #[default]
    Statement,
    /// Time-bound access to a connection.
    Access,
}

/// A request for approval, as approvers see it and as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    #[serde(default)]
    pub kind: RequestKind,
    pub state: ApprovalState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Until when the statement that asked waits.
    #[serde(with = "time::serde::rfc3339")]
    pub hold_until: OffsetDateTime,
    /// Until when the request can be approved and the approval used.
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: OffsetDateTime,
    pub connection: String,
    pub session: String,
    pub requester: Requester,
    pub statement: String,
    pub statement_sha256: String,
    pub rule: String,
    pub reason: String,
    /// What the statement does, as analysed: kind, commands it runs, tables written.
    pub effect: serde_json::Value,
    pub required: u32,
    /// Groups approvers must be in; empty: the gateway's admin groups.
    pub approver_groups: Vec<String>,
    pub approvals: Vec<Verdict>,
    pub denial: Option<Verdict>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub closed_at: Option<OffsetDateTime>,
    /// For access: how long the grant lasts once approved, and until when it does.
    #[serde(default)]
    pub duration_secs: Option<u64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub granted_until: Option<OffsetDateTime>,
    /// The statement's real text when `statement` shows it masked: what the planner's row
    /// estimate is asked about. Never stored or recorded.
    #[serde(skip)]
    pub planned_text: Option<String>,
}

/// What binds an approval: what exactly runs (the statement's text, with what it executes and
/// the values bound to it), who runs it (with the whole actor chain), where.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Binding {
    pub statement_sha256: String,
    pub principal: String,
    pub actors: Vec<String>,
    pub connection: String,
}

impl ApprovalRequest {
    /// When the request stops being open: a granted access at the end of its grant, anything
    /// else at the end of its validity.
    fn ends_at(&self) -> OffsetDateTime {
        match (self.kind, self.state, self.granted_until) {
            (RequestKind::Access, ApprovalState::Approved, Some(until)) => until,
            _ => self.valid_until,
        }
    }

    fn binding(&self) -> Binding {
        Binding {
            statement_sha256: self.statement_sha256.clone(),
            principal: self.requester.principal.clone(),
            actors: self.requester.actors.clone(),
            connection: self.connection.clone(),
        }
    }
}

/// Why a decision was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("no approval request {0}")]
    NotFound(String),
    #[error("approval request {id} is {state} and can no longer be decided")]
    Closed { id: String, state: &'static str },
    #[error("{0}")]
    NotAllowed(String),
    #[error("the decision could not be recorded: {0}")]
    Unavailable(String),
}

/// Separation of duties: may `approver` decide `request`? Nobody approves their own request —
/// admins included — nor anyone in its actor chain (a person does not approve the agent acting
/// for them), nor an agent at all: approvals are made by a person directly. The approver must
/// be in one of the request's approver groups (the admin groups when it names none), and may
/// approve a request once.
pub fn may_approve(
    request: &ApprovalRequest,
    approver: &Identity,
    admin_groups: &[String],
) -> Result<(), String> {
    let principal = approver.principal();
    let requester = &request.requester;
    if principal == requester.principal || approver.subject == requester.subject {
        return Err("nobody approves their own request".into());
    }
    if !approver.actors.is_empty() {
        return Err(format!(
            "{approver} acts for someone else: approvals are made by a person directly"
        ));
    }
    if requester.actors.contains(&approver.subject) {
        return Err(format!(
            "{} is in the requester's actor chain and may not approve its statements",
            approver.subject
        ));
    }
    let groups = if request.approver_groups.is_empty() {
        admin_groups
    } else {
        &request.approver_groups
    };
    if !approver.in_any_group(groups) {
        return Err(format!(
            "approving this request needs membership of one of: {}",
            groups.join(", ")
        ));
    }
    if request.approvals.iter().any(|v| v.by == principal) {
        return Err(format!("{principal} has already approved this request"));
    }
    Ok(())
}

/// Persists requests (SQL common to SQLite and PostgreSQL, in the state store).
#[async_trait::async_trait]
pub trait ApprovalStore: Send + Sync {
    /// Inserts or replaces the request with this id.
    async fn save(&self, request: &ApprovalRequest) -> Result<(), String>;
    /// One request by id.
    async fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, String>;
    /// Every request that is still pending or approved.
    async fn open(&self) -> Result<Vec<ApprovalRequest>, String>;
    /// Requests, newest first, optionally in one state.
    async fn list(
        &self,
        state: Option<ApprovalState>,
        limit: u32,
    ) -> Result<Vec<ApprovalRequest>, String>;
}

/// A request being waited on: its id and a receiver that sees its state change.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub id: String,
    pub hold_until: OffsetDateTime,
    pub state: watch::Receiver<ApprovalState>,
}

/// An active access grant: until when, and its state (it ends early when revoked).
#[derive(Debug, Clone)]
pub struct Grant {
    pub id: String,
    pub until: OffsetDateTime,
    pub state: watch::Receiver<ApprovalState>,
}

/// What the broker knows about a statement asking to run.
pub enum Standing {
    /// Its approval was claimed by this session (durably used up): run it now.
    Approved(Box<ApprovalRequest>),
    /// Approved and unused: claim it ([`Approvals::claim`]), then present the statement again.
    Claimable(String),
    /// A request for it is pending: wait on it.
    Pending(Waiting),
    /// Nothing yet: a new request is needed.
    None,
}

struct Entry {
    request: ApprovalRequest,
    tx: watch::Sender<ApprovalState>,
    /// The session that claimed this approval; it runs the statement once.
    claimed_by: Option<String>,
}

/// Open requests one principal may have pending at once.
const MAX_PENDING_PER_PRINCIPAL: usize = 20;

/// A transition, for notifications (webhooks): the event kind and the request after it.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: &'static str,
    pub request: ApprovalRequest,
}

/// The approvals broker, shared by sessions and the admin API.
pub struct Approvals {
    entries: Mutex<HashMap<String, Entry>>,
    store: Arc<dyn ApprovalStore>,
    sink: Arc<dyn AuditSink>,
    admin_groups: Vec<String>,
    notices: Option<tokio::sync::mpsc::Sender<Notice>>,
    /// Every change of state is made under this lock, from reading the request to storing
    /// it, so two decisions (an approval and a denial, a claim and an expiry) never race.
    changes: tokio::sync::Mutex<()>,
}

impl Approvals {
    /// A broker over `store`, with the open requests it holds.
    pub async fn load(
        store: Arc<dyn ApprovalStore>,
        sink: Arc<dyn AuditSink>,
        admin_groups: Vec<String>,
    ) -> Result<Self, String> {
        let open = store.open().await?;
        let entries = open
            .into_iter()
            .map(|request| {
                let (tx, _) = watch::channel(request.state);
                let entry = Entry {
                    request,
                    tx,
                    claimed_by: None,
                };
                (entry.request.id.clone(), entry)
            })
            .collect();
        Ok(Approvals {
            entries: Mutex::new(entries),
            store,
            sink,
            admin_groups,
            notices: None,
            changes: tokio::sync::Mutex::new(()),
        })
    }

    /// Sends every transition, after its record, to `notices` (a bounded queue: when it is
    /// full, a notice is dropped and logged; the audit log still has the transition).
    pub fn with_notices(mut self, notices: tokio::sync::mpsc::Sender<Notice>) -> Self {
        self.notices = Some(notices);
        self
    }

    fn notify(&self, kind: &'static str, request: &ApprovalRequest) {
        if let Some(tx) = &self.notices {
            let notice = Notice {
                kind,
                request: request.clone(),
            };
            if tx.try_send(notice).is_err() {
                tracing::warn!(request = %request.id, kind, "notification queue full; notice dropped");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where a statement with this binding stands, for `session`. Read-only, except that a
    /// claimed approval is handed over (once) to the session that claimed it.
    pub fn standing(&self, binding: &Binding, session: &str, now: OffsetDateTime) -> Standing {
        let mut entries = self.lock();
        let mut pending = None;
        let mut approved = None;
        let mut claimed = None;
        for entry in entries.values() {
            let r = &entry.request;
            if r.kind != RequestKind::Statement || r.binding() != *binding {
                continue;
            }
            match r.state {
                ApprovalState::Executed if entry.claimed_by.as_deref() == Some(session) => {
                    claimed = Some(r.id.clone())
                }
                ApprovalState::Approved if r.valid_until > now => approved = Some(r.id.clone()),
                ApprovalState::Pending if r.valid_until > now => {
                    pending = Some(Waiting {
                        id: r.id.clone(),
                        hold_until: r.hold_until,
                        state: entry.tx.subscribe(),
                    })
                }
                _ => {}
            }
        }
        if let Some(entry) = claimed.and_then(|id| entries.remove(&id)) {
            return Standing::Approved(Box::new(entry.request));
        }
        match (approved, pending) {
            (Some(id), _) => Standing::Claimable(id),
            (None, Some(waiting)) => Standing::Pending(waiting),
            (None, None) => Standing::None,
        }
    }

    /// Uses up an approved request for `session`: `approval.executed` is durable and the
    /// request is stored as executed before the session may run the statement. A crash after
    /// this and before the statement runs loses the approval, never repeats it.
    pub async fn claim(&self, id: &str, session: &str, who: Who) -> Result<(), String> {
        let _changing = self.changes.lock().await;
        let now = OffsetDateTime::now_utc();
        let mut request = {
            let entries = self.lock();
            let entry = entries.get(id).ok_or("the approval is gone")?;
            if entry.request.state != ApprovalState::Approved || entry.request.valid_until <= now {
                return Err(format!("the approval is {}", entry.request.state.as_str()));
            }
            entry.request.clone()
        };
        request.state = ApprovalState::Executed;
        request.closed_at = Some(now);
        // In memory first: from here on the approval cannot be claimed twice, even if
        // recording or storing the claim fails (then nobody gets it: fail closed).
        if let Some(entry) = self.lock().get_mut(id) {
            entry.request = request.clone();
            entry.tx.send_replace(ApprovalState::Executed);
        }
        self.record(&request, EventKind::ApprovalExecuted, who, None)
            .await?;
        self.store.save(&request).await?;
        if let Some(entry) = self.lock().get_mut(id) {
            entry.claimed_by = Some(session.to_owned());
        }
        Ok(())
    }

    /// The approved, unexpired access grant `requester` (principal and actor chain alike)
    /// holds to `connection`, if any (the one that lasts longest).
    pub fn active_grant(
        &self,
        requester: &Requester,
        connection: &str,
        now: OffsetDateTime,
    ) -> Option<Grant> {
        let entries = self.lock();
        entries
            .values()
            .filter(|e| {
                let r = &e.request;
                r.kind == RequestKind::Access
                    && r.state == ApprovalState::Approved
                    && r.requester.principal == requester.principal
                    && r.requester.actors == requester.actors
                    && r.connection == connection
            })
            .filter_map(|e| {
                let until = e.request.granted_until.filter(|u| *u > now)?;
                Some(Grant {
                    id: e.request.id.clone(),
                    until,
                    state: e.tx.subscribe(),
                })
            })
            .max_by_key(|g| g.until)
    }

    /// Withdraws an open request, an unused approval or an active grant (`Cancelled`, with who
    /// and why); sessions admitted by a withdrawn grant end. Approvers and admins may.
    pub async fn revoke(
        &self,
        id: &str,
        by: &Identity,
        reason: String,
        who: Who,
    ) -> Result<ApprovalRequest, DecideError> {
        let _changing = self.changes.lock().await;
        let now = OffsetDateTime::now_utc();
        let mut request = self.open_request(id, now)?;
        self.may_withdraw(&request, by, true, "revoking")?;
        request.state = ApprovalState::Cancelled;
        request.closed_at = Some(now);
        request.denial = Some(Verdict {
            by: by.principal(),
            comment: Some(reason.clone()),
            at: now,
        });
        let detail = serde_json::json!({ "reason": reason, "state": "cancelled", "revoked": true });
        self.decide(request, EventKind::ApprovalCancelled, who, detail)
            .await
    }

    /// Opens a request for time-bound access to `connection`.
    pub async fn request_access(
        &self,
        identity: &Identity,
        who: Who,
        connection: &str,
        duration: std::time::Duration,
        reason: &str,
        policy: &crate::connection::GrantPolicy,
    ) -> Result<ApprovalRequest, String> {
        let now = OffsetDateTime::now_utc();
        let secs = duration.as_secs();
        let request = ApprovalRequest {
            id: new_id(),
            kind: RequestKind::Access,
            state: ApprovalState::Pending,
            created_at: now,
            hold_until: now,
            // An hour to decide it, as for statements.
            valid_until: now + time::Duration::hours(1),
            connection: connection.to_owned(),
            session: String::new(),
            requester: Requester::of(identity),
            statement: format!("access to {connection} for {}", human(secs)),
            statement_sha256: String::new(),
            rule: "access-grant".into(),
            reason: reason.to_owned(),
            effect: serde_json::json!({ "access": connection, "duration_secs": secs }),
            required: policy.required,
            approver_groups: policy.approvers.clone(),
            approvals: Vec::new(),
            denial: None,
            closed_at: None,
            duration_secs: Some(secs),
            granted_until: None,
            planned_text: None,
        };
        self.request(request.clone(), who).await?;
        Ok(request)
    }

    /// Opens a request; its `approval.requested` record is durable and it is stored before
    /// this returns.
    pub async fn request(&self, request: ApprovalRequest, who: Who) -> Result<Waiting, String> {
        let _changing = self.changes.lock().await;
        let pending = self
            .lock()
            .values()
            .filter(|e| {
                e.request.state == ApprovalState::Pending
                    && e.request.requester.principal == request.requester.principal
            })
            .count();
        if pending >= MAX_PENDING_PER_PRINCIPAL {
            return Err(format!(
                "{} already has {pending} pending approval requests",
                request.requester.principal
            ));
        }
        let mut event = Event::now(EventKind::ApprovalRequested, Outcome::pending());
        event.session = Some(request.session.clone());
        event.who = who;
        event.what = What {
            connection: Some(request.connection.clone()),
            statement: Some(request.statement.clone()),
            resource: Some(request.id.clone()),
            detail: Some(serde_json::json!({
                "kind": request.kind,
                "rule": request.rule,
                "reason": request.reason,
                "statement_sha256": request.statement_sha256,
                "effect": request.effect,
                "required": request.required,
                "approvers": request.approver_groups,
                "hold_until": rfc3339(request.hold_until),
                "valid_until": rfc3339(request.valid_until),
            })),
            ..What::default()
        };
        sink::record(self.sink.as_ref(), event)
            .await
            .map_err(|e| e.to_string())?;
        self.store.save(&request).await?;
        self.notify("approval.requested", &request);
        let (tx, rx) = watch::channel(ApprovalState::Pending);
        let waiting = Waiting {
            id: request.id.clone(),
            hold_until: request.hold_until,
            state: rx,
        };
        self.lock().insert(
            request.id.clone(),
            Entry {
                request,
                tx,
                claimed_by: None,
            },
        );
        Ok(waiting)
    }

    /// One approver approves; the request is approved once it has its required approvals.
    pub async fn approve(
        &self,
        id: &str,
        approver: &Identity,
        comment: Option<String>,
        who: Who,
    ) -> Result<ApprovalRequest, DecideError> {
        let _changing = self.changes.lock().await;
        let now = OffsetDateTime::now_utc();
        let mut request = self.pending_request(id, now)?;
        may_approve(&request, approver, &self.admin_groups).map_err(DecideError::NotAllowed)?;
        request.approvals.push(Verdict {
            by: approver.principal(),
            comment: comment.clone(),
            at: now,
        });
        let done = request.approvals.len() as u32 >= request.required;
        if done {
            request.state = ApprovalState::Approved;
            if let (RequestKind::Access, Some(secs)) = (request.kind, request.duration_secs) {
                request.granted_until =
                    Some(now + time::Duration::seconds(i64::try_from(secs).unwrap_or(0)));
            }
        }
        let mut detail = serde_json::json!({
            "approvals": request.approvals.len(),
            "required": request.required,
            "comment": comment,
            "state": request.state.as_str(),
        });
        if let (Some(until), Some(map)) = (request.granted_until, detail.as_object_mut()) {
            map.insert("granted_until".into(), rfc3339(until).into());
        }
        self.decide(request, EventKind::ApprovalApproved, who, detail)
            .await
    }

    /// One approver denies: final.
    pub async fn deny(
        &self,
        id: &str,
        approver: &Identity,
        reason: String,
        who: Who,
    ) -> Result<ApprovalRequest, DecideError> {
        let _changing = self.changes.lock().await;
        let now = OffsetDateTime::now_utc();
        let mut request = self.pending_request(id, now)?;
        self.may_withdraw(&request, approver, false, "denying")?;
        request.state = ApprovalState::Denied;
        request.closed_at = Some(now);
        request.denial = Some(Verdict {
            by: approver.principal(),
            comment: Some(reason.clone()),
            at: now,
        });
        let detail = serde_json::json!({ "reason": reason, "state": "denied" });
        self.decide(request, EventKind::ApprovalDenied, who, detail)
            .await
    }

    async fn decide(
        &self,
        request: ApprovalRequest,
        kind: EventKind,
        who: Who,
        detail: serde_json::Value,
    ) -> Result<ApprovalRequest, DecideError> {
        let mut event = Event::now(kind, Outcome::success());
        event.who = who;
        event.what = What {
            connection: Some(request.connection.clone()),
            resource: Some(request.id.clone()),
            detail: Some(detail),
            ..What::default()
        };
        // Recorded first: a decision takes effect only once the log has it.
        sink::record(self.sink.as_ref(), event)
            .await
            .map_err(|e| DecideError::Unavailable(e.to_string()))?;
        self.store
            .save(&request)
            .await
            .map_err(DecideError::Unavailable)?;
        self.notify(kind.as_str(), &request);
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(&request.id) {
            entry.request = request.clone();
            entry.tx.send_replace(request.state);
            if !request.state.open() {
                entries.remove(&request.id);
            }
        }
        Ok(request)
    }

    /// Whether `by` may deny or revoke `request`: a person (not an agent) in one of its
    /// approver groups (the admin groups when it names none), or, with `admins_too`, an admin.
    fn may_withdraw(
        &self,
        request: &ApprovalRequest,
        by: &Identity,
        admins_too: bool,
        doing: &str,
    ) -> Result<(), DecideError> {
        if !by.actors.is_empty() {
            return Err(DecideError::NotAllowed(format!(
                "{by} acts for someone else: decisions are made by a person directly"
            )));
        }
        let groups = if request.approver_groups.is_empty() {
            &self.admin_groups
        } else {
            &request.approver_groups
        };
        if by.in_any_group(groups) || (admins_too && by.in_any_group(&self.admin_groups)) {
            return Ok(());
        }
        Err(DecideError::NotAllowed(format!(
            "{doing} this request needs membership of one of: {}",
            groups.join(", ")
        )))
    }

    /// The request, if it is still waiting for a decision.
    fn pending_request(
        &self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<ApprovalRequest, DecideError> {
        let request = self.open_request(id, now)?;
        if request.state != ApprovalState::Pending {
            return Err(DecideError::Closed {
                id: id.to_owned(),
                state: request.state.as_str(),
            });
        }
        Ok(request)
    }

    fn open_request(&self, id: &str, now: OffsetDateTime) -> Result<ApprovalRequest, DecideError> {
        let entries = self.lock();
        let entry = entries
            .get(id)
            .ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
        if entry.request.ends_at() <= now {
            return Err(DecideError::Closed {
                id: id.to_owned(),
                state: "expired",
            });
        }
        Ok(entry.request.clone())
    }

    /// The waiting client left (`Abandoned`) or cancelled (`Cancelled`): the request closes.
    pub async fn close(&self, id: &str, state: ApprovalState, who: Who) {
        let _changing = self.changes.lock().await;
        let request = {
            let mut entries = self.lock();
            let Some(entry) = entries.get_mut(id) else {
                return;
            };
            if entry.request.state != ApprovalState::Pending {
                return;
            }
            entry.request.state = state;
            entry.request.closed_at = Some(OffsetDateTime::now_utc());
            entry.tx.send_replace(state);
            let request = entry.request.clone();
            entries.remove(id);
            request
        };
        let kind = match state {
            ApprovalState::Abandoned => EventKind::ApprovalAbandoned,
            _ => EventKind::ApprovalCancelled,
        };
        self.settle(&request, kind, who).await;
    }

    /// Expires every open request past its end; returns how many.
    pub async fn expire(&self, now: OffsetDateTime) -> usize {
        let _changing = self.changes.lock().await;
        let expired: Vec<ApprovalRequest> = {
            let mut entries = self.lock();
            let ids: Vec<String> = entries
                .values()
                .filter(|e| e.request.state.open() && e.request.ends_at() <= now)
                .map(|e| e.request.id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| entries.remove(&id))
                .map(|mut entry| {
                    entry.request.state = ApprovalState::Expired;
                    entry.request.closed_at = Some(now);
                    entry.tx.send_replace(ApprovalState::Expired);
                    entry.request
                })
                .collect()
        };
        for request in &expired {
            self.settle(request, EventKind::ApprovalExpired, Who::default())
                .await;
        }
        expired.len()
    }

    /// Records and stores a closing the broker made itself (memory already says so, so the
    /// request is closed whatever happens here; failures are logged).
    async fn settle(&self, request: &ApprovalRequest, kind: EventKind, who: Who) {
        if let Err(err) = self.record(request, kind, who, None).await {
            tracing::error!(error = %err, request = %request.id, "could not audit an approval transition");
        }
        if let Err(err) = self.store.save(request).await {
            tracing::error!(error = %err, request = %request.id, "could not store an approval transition");
        }
    }

    /// An open request (from memory), or any request (from the store).
    pub async fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, String> {
        if let Some(entry) = self.lock().get(id) {
            return Ok(Some(entry.request.clone()));
        }
        self.store.get(id).await
    }

    pub async fn list(
        &self,
        state: Option<ApprovalState>,
        limit: u32,
    ) -> Result<Vec<ApprovalRequest>, String> {
        self.store.list(state, limit).await
    }

    /// The audit record of a transition, durable when this returns; then the notice.
    async fn record(
        &self,
        request: &ApprovalRequest,
        kind: EventKind,
        who: Who,
        reason: Option<String>,
    ) -> Result<(), String> {
        let mut event = Event::now(kind, Outcome::success());
        if !request.session.is_empty() {
            event.session = Some(request.session.clone());
        }
        event.who = who;
        event.what = What {
            connection: Some(request.connection.clone()),
            resource: Some(request.id.clone()),
            detail: Some(serde_json::json!({ "state": request.state.as_str(), "reason": reason })),
            ..What::default()
        };
        sink::record(self.sink.as_ref(), event)
            .await
            .map_err(|e| e.to_string())?;
        self.notify(kind.as_str(), request);
        Ok(())
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A new request id: `apr_` and 16 random hex digits.
pub fn new_id() -> String {
    format!("apr_{:016x}", rand::random::<u64>())
}

/// Builds the request for a held statement.
#[allow(clippy::too_many_arguments)]
pub fn new_request(
    identity: &Identity,
    connection: &str,
    session: &str,
    statement: &str,
    statement_sha256: String,
    rule: &str,
    reason: &str,
    effect: serde_json::Value,
    spec: &ApprovalSpec,
) -> ApprovalRequest {
    let now = OffsetDateTime::now_utc();
    ApprovalRequest {
        id: new_id(),
        kind: RequestKind::Statement,
        state: ApprovalState::Pending,
        created_at: now,
        hold_until: now + time::Duration::seconds(i64::try_from(spec.hold_secs).unwrap_or(120)),
        valid_until: now + time::Duration::seconds(i64::try_from(spec.valid_secs).unwrap_or(3600)),
        connection: connection.to_owned(),
        session: session.to_owned(),
        requester: Requester::of(identity),
        statement: statement.to_owned(),
        statement_sha256,
        rule: rule.to_owned(),
        reason: reason.to_owned(),
        effect,
        required: spec.required,
        approver_groups: spec.approvers.clone(),
        approvals: Vec::new(),
        denial: None,
        closed_at: None,
        duration_secs: None,
        granted_until: None,
        planned_text: None,
    }
}

/// `2h`, `90m`, `45s`.
fn human(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AuthMethod;
    use gatehouse_audit::ActorRef;

    fn person(subject: &str, groups: &[&str]) -> Identity {
        Identity {
            subject: subject.into(),
            issuer: Some("https://idp".into()),
            actors: vec![],
            groups: groups.iter().map(|g| g.to_string()).collect(),
            method: AuthMethod::Oidc,
            expires_at: None,
            claims: Default::default(),
        }
    }

    fn agent_for(subject: &str, agent: &str) -> Identity {
        let mut id = person(subject, &["analysts"]);
        id.actors = vec![ActorRef {
            subject: agent.into(),
            issuer: None,
        }];
        id
    }

    fn request_by(identity: &Identity, approvers: &[&str]) -> ApprovalRequest {
        let spec = ApprovalSpec {
            required: 2,
            approvers: approvers.iter().map(|g| g.to_string()).collect(),
            hold_secs: 60,
            valid_secs: 600,
        };
        new_request(
            identity,
            "prod",
            "s1",
            "DELETE FROM t WHERE id = 1",
            "h".into(),
            "r",
            "because",
            serde_json::Value::Null,
            &spec,
        )
    }

    /// A store in memory: this unit test has no database (the e2e tests use SQLite).
    #[derive(Default)]
    struct Kept(Mutex<HashMap<String, ApprovalRequest>>);

    #[async_trait::async_trait]
    impl ApprovalStore for Kept {
        async fn save(&self, request: &ApprovalRequest) -> Result<(), String> {
            self.0
                .lock()
                .unwrap()
                .insert(request.id.clone(), request.clone());
            Ok(())
        }
        async fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, String> {
            Ok(self.0.lock().unwrap().get(id).cloned())
        }
        async fn open(&self) -> Result<Vec<ApprovalRequest>, String> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .values()
                .filter(|r| r.state.open())
                .cloned()
                .collect())
        }
        async fn list(
            &self,
            _: Option<ApprovalState>,
            _: u32,
        ) -> Result<Vec<ApprovalRequest>, String> {
            Ok(self.0.lock().unwrap().values().cloned().collect())
        }
    }

    #[tokio::test]
    async fn an_approval_is_used_once_by_exactly_the_binding_it_was_given_for() {
        let store = Arc::new(Kept::default());
        let sink = Arc::new(crate::sink::MemorySink::default());
        let admins = vec!["gatehouse-admins".to_owned()];
        let broker = Approvals::load(store.clone(), sink, admins.clone())
            .await
            .unwrap();
        let agent = agent_for("alice@example.com", "agent-7");
        let request = request_by(&agent, &["dba"]);
        let binding = request.binding();
        let id = request.id.clone();
        broker.request(request, Who::default()).await.unwrap();
        let bob = person("bob@example.com", &["dba"]);
        let carol = person("carol@example.com", &["dba"]);
        broker
            .approve(&id, &bob, None, Who::default())
            .await
            .unwrap();
        broker
            .approve(&id, &carol, None, Who::default())
            .await
            .unwrap();
        let now = OffsetDateTime::now_utc();

        // Alice herself, or another agent for her, does not match the agent's binding.
        let mut direct = binding.clone();
        direct.actors.clear();
        assert!(matches!(
            broker.standing(&direct, "s1", now),
            Standing::None
        ));
        let mut other_text = binding.clone();
        other_text.statement_sha256 = "other".into();
        assert!(matches!(
            broker.standing(&other_text, "s1", now),
            Standing::None
        ));

        // Claimed once, durably, then handed to the claiming session only, once.
        assert!(matches!(
            broker.standing(&binding, "s1", now),
            Standing::Claimable(_)
        ));
        broker.claim(&id, "s1", Who::default()).await.unwrap();
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().state,
            ApprovalState::Executed
        );
        assert!(broker.claim(&id, "s2", Who::default()).await.is_err());
        assert!(matches!(
            broker.standing(&binding, "s2", now),
            Standing::None
        ));
        assert!(matches!(
            broker.standing(&binding, "s1", now),
            Standing::Approved(_)
        ));
        assert!(matches!(
            broker.standing(&binding, "s1", now),
            Standing::None
        ));

        // After a restart the used approval is not usable again.
        let reloaded = Approvals::load(
            store.clone(),
            Arc::new(crate::sink::MemorySink::default()),
            admins,
        )
        .await
        .unwrap();
        assert!(matches!(
            reloaded.standing(&binding, "s3", now),
            Standing::None
        ));
    }

    #[tokio::test]
    async fn nothing_changes_that_the_audit_log_cannot_record() {
        let store = Arc::new(Kept::default());
        let sink = Arc::new(crate::sink::MemorySink::default());
        let admins = vec!["gatehouse-admins".to_owned()];
        let broker = Approvals::load(store.clone(), sink.clone(), admins)
            .await
            .unwrap();
        let alice = person("alice@example.com", &["analysts"]);
        let request = request_by(&alice, &["dba"]);
        let (id, binding) = (request.id.clone(), request.binding());

        // The log refuses records: no request is opened, nothing is stored.
        sink.fail("disk full");
        assert!(broker
            .request(request.clone(), Who::default())
            .await
            .is_err());
        assert!(store.get(&id).await.unwrap().is_none());
        sink.recover();
        broker.request(request, Who::default()).await.unwrap();

        // An approval the log cannot take does not count, in memory or in the store.
        let bob = person("bob@example.com", &["dba"]);
        let carol = person("carol@example.com", &["dba"]);
        broker
            .approve(&id, &bob, None, Who::default())
            .await
            .unwrap();
        sink.fail("disk full");
        let refused = broker.approve(&id, &carol, None, Who::default()).await;
        assert!(
            matches!(refused, Err(DecideError::Unavailable(_))),
            "{refused:?}"
        );
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().state,
            ApprovalState::Pending
        );
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            broker.standing(&binding, "s1", now),
            Standing::Pending(_)
        ));
        let recorded = sink
            .events()
            .iter()
            .filter(|e| e.kind == EventKind::ApprovalApproved)
            .count();
        assert_eq!(recorded, 1, "only the approval the log took");

        // Once approved, a claim the log cannot take does not let the statement run.
        sink.recover();
        broker
            .approve(&id, &carol, None, Who::default())
            .await
            .unwrap();
        sink.fail("disk full");
        assert!(broker.claim(&id, "s1", Who::default()).await.is_err());
        assert!(matches!(
            broker.standing(&binding, "s1", now),
            Standing::None
        ));
    }

    #[test]
    fn separation_of_duties() {
        let admins = vec!["gatehouse-admins".to_owned()];
        let alice = person("alice@example.com", &["dba", "gatehouse-admins"]);
        let bob = person("bob@example.com", &["dba"]);
        let carol = person("carol@example.com", &["analysts"]);

        let own = request_by(&alice, &["dba"]);
        assert!(may_approve(&own, &alice, &admins)
            .unwrap_err()
            .contains("own request"));
        assert!(may_approve(&own, &bob, &admins).is_ok());
        assert!(may_approve(&own, &carol, &admins)
            .unwrap_err()
            .contains("membership"));

        // The person behind an agent may not approve its statements, nor may the agent.
        let by_agent = request_by(&agent_for("alice@example.com", "agent-7"), &["dba"]);
        assert!(may_approve(&by_agent, &alice, &admins).is_err());
        let mut agent_as_approver = person("agent-7", &["dba"]);
        agent_as_approver.issuer = Some("https://agents".into());
        assert!(may_approve(&by_agent, &agent_as_approver, &admins)
            .unwrap_err()
            .contains("actor chain"));
        assert!(
            may_approve(&by_agent, &agent_for("bob@example.com", "agent-9"), &admins)
                .unwrap_err()
                .contains("person directly")
        );
        assert!(may_approve(&by_agent, &bob, &admins).is_ok());

        // No approver groups named: the admin groups decide.
        let default_groups = request_by(&carol, &[]);
        assert!(may_approve(&default_groups, &bob, &admins).is_err());
        assert!(may_approve(&default_groups, &alice, &admins).is_ok());

        // Once per approver.
        let mut once = request_by(&carol, &["dba"]);
        once.approvals.push(Verdict {
            by: bob.principal(),
            comment: None,
            at: OffsetDateTime::now_utc(),
        });
        assert!(may_approve(&once, &bob, &admins)
            .unwrap_err()
            .contains("already"));
    }
}
