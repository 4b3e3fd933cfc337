//! The admin API: health, metrics, and the key and session endpoints the CLI uses.
//!
//! Every `/api/v1` request, unknown paths included, is authenticated through the gate's one
//! request door (an API key or an OIDC token; failures audited and rate-limited like every
//! failure before authentication) and audited with its outcome before the response leaves.
//! Identities in one of the configured admin groups have the admin role; everyone else may
//! only ask who they are. A change (key created or revoked, session ended) is recorded before
//! it takes effect, and refused when it cannot be recorded.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use gatehouse_audit::{AuditLog, Event, EventKind, Outcome, What};
use gatehouse_core::{Caller, Denied, Gate, Metrics};
use gatehouse_store::{NewApiKey, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;

mod approvals;
mod serve;
pub use serve::{serve, ServeLimits};

#[derive(Clone)]
pub struct AdminState {
    pub gate: Gate,
    pub store: Arc<dyn Store>,
    pub audit: AuditLog,
    pub metrics: Arc<Metrics>,
    pub admin_groups: Vec<String>,
    pub metrics_require_auth: bool,
    pub recordings: Arc<RecordingAccess>,
    /// The SIEM sinks' live status, for `/metrics`.
    pub sinks: Arc<Vec<Arc<gatehouse_sink::StatusCell>>>,
    pub witnesses: Arc<Vec<Arc<gatehouse_witness::StatusCell>>>,
}

/// Where recordings are and how to open them, for replay.
pub struct RecordingAccess {
    pub dir: std::path::PathBuf,
    pub key: Option<gatehouse_core::record::Key>,
    /// The audit log whose `session.end` records vouch for recordings.
    pub audit_log: std::path::PathBuf,
}

/// The authenticated caller of an API request.
#[derive(Clone)]
struct Authed {
    caller: Caller,
    admin: bool,
}

pub fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/whoami", get(whoami))
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{name}/revoke", post(revoke_key))
        .route("/audit/checkpoint", post(checkpoint_now))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}/kill", post(kill_session))
        .route("/sessions/{id}/recording", get(replay_session))
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}", get(approvals::show))
        .route("/approvals/{id}/approve", post(approvals::approve))
        .route("/approvals/{id}/deny", post(approvals::deny))
        .route("/approvals/{id}/revoke", post(approvals::revoke))
        .route(
            "/access",
            get(approvals::list_access).post(approvals::request_access),
        )
        // Before the layer, so unknown paths are authenticated and audited too.
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .fallback(not_found)
        .with_state(state)
}

/// A JSON error body: `{"error": {"code": "...", "message": "..."}}`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn audit_unavailable() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the audit log is unavailable; nothing was changed",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            Json(serde_json::json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "state store error");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the state store is unavailable",
        )
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn healthz(State(state): State<AdminState>) -> Response {
    match state.audit.failure() {
        None => Json(serde_json::json!({ "status": "ok" })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "failing", "reason": format!("audit log: {reason}") })),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AdminState>, request: Request) -> Response {
    if state.metrics_require_auth {
        let source = source_of(&request);
        let credential = bearer(request.headers());
        match state
            .gate
            .authenticate_request("admin-api", credential, source, "GET /metrics")
            .await
        {
            Ok(caller) if caller.identity.in_any_group(&state.admin_groups) => {}
            Ok(_) => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "/metrics needs the admin role",
                )
                .into_response()
            }
            Err(denied) => return unauthenticated(&denied).into_response(),
        }
    }
    let stats = state.audit.stats();
    let mut text = state.metrics.render();
    // The audit log's own figures, appended in the same exposition format.
    if let Some(eof) = text.rfind("# EOF") {
        text.truncate(eof);
    }
    text.push_str(&format!(
        "# HELP gatehouse_audit_available_bytes Free space on the audit log's file system.\n\
         # TYPE gatehouse_audit_available_bytes gauge\n\
         gatehouse_audit_available_bytes {}\n\
         # HELP gatehouse_audit_refused Records the audit log refused while failed.\n\
         # TYPE gatehouse_audit_refused counter\n\
         gatehouse_audit_refused_total {}\n\
         # HELP gatehouse_audit_checkpoints Signed checkpoints written since start.\n\
         # TYPE gatehouse_audit_checkpoints counter\n\
         gatehouse_audit_checkpoints_total {}\n",
        stats.available_bytes, stats.refused, stats.checkpoints
    ));
    text.push_str(&sink_metrics(&state.sinks));
    text.push_str(&witness_metrics(&state.witnesses));
    text.push_str("# EOF\n");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Per-sink lag and delivery figures, in the exposition format.
fn sink_metrics(sinks: &[Arc<gatehouse_sink::StatusCell>]) -> String {
    if sinks.is_empty() {
        return String::new();
    }
    let statuses: Vec<gatehouse_sink::SinkStatus> = sinks.iter().map(|s| s.snapshot()).collect();
    let mut out = String::new();
    let labels = |s: &gatehouse_sink::SinkStatus| {
        format!("sink=\"{}\",type=\"{}\"", label_value(&s.name), s.kind)
    };
    let mut family = |name: &str,
                      kind: &str,
                      help: &str,
                      value: &dyn Fn(&gatehouse_sink::SinkStatus) -> String| {
        metric_family(&mut out, name, kind, help, &statuses, &labels, value);
    };
    let flag = |b: bool| u8::from(b).to_string();
    family(
        "gatehouse_sink_acked_seq",
        "gauge",
        "seq of the last record the receiver acknowledged.",
        &|s| s.acked_seq.to_string(),
    );
    family(
        "gatehouse_sink_log_seq",
        "gauge",
        "seq of the last durable record in the log.",
        &|s| s.log_seq.to_string(),
    );
    family(
        "gatehouse_sink_lag_records",
        "gauge",
        "Durable records the receiver has not acknowledged.",
        &|s| s.lag_records.to_string(),
    );
    family(
        "gatehouse_sink_lag_seconds",
        "gauge",
        "Age of the oldest unacknowledged record.",
        &|s| format!("{:.3}", s.lag_seconds),
    );
    family(
        "gatehouse_sink_connected",
        "gauge",
        "1 when the last attempt to reach the receiver succeeded.",
        &|s| flag(s.connected),
    );
    family(
        "gatehouse_sink_lagging",
        "gauge",
        "1 between sink.lagging and sink.recovered.",
        &|s| flag(s.lagging),
    );
    family(
        "gatehouse_sink_up",
        "gauge",
        "1 while the sink runs; 0 once it stopped or failed.",
        &|s| flag(s.state == gatehouse_sink::SinkState::Running),
    );
    family(
        "gatehouse_sink_delivered_records",
        "counter",
        "Records acknowledged by the receiver (a record sent twice counts twice).",
        &|s| s.delivered_records.to_string(),
    );
    family(
        "gatehouse_sink_delivered_batches",
        "counter",
        "Batches acknowledged by the receiver.",
        &|s| s.delivered_batches.to_string(),
    );
    family(
        "gatehouse_sink_failures",
        "counter",
        "Failed delivery attempts.",
        &|s| s.failures.to_string(),
    );
    family(
        "gatehouse_sink_rewinds",
        "counter",
        "Times the sink went back to its cursor to send again.",
        &|s| s.rewinds.to_string(),
    );
    out
}

/// One metric family in the exposition format: HELP, TYPE and a sample per item.
fn metric_family<T>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    items: &[T],
    labels: &dyn Fn(&T) -> String,
    value: &dyn Fn(&T) -> String,
) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    let suffix = if kind == "counter" { "_total" } else { "" };
    for item in items {
        let _ = writeln!(out, "{name}{suffix}{{{}}} {}", labels(item), value(item));
    }
}

/// A label value with `\\` and `"` escaped, as the exposition format wants.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Per-witness figures: what it last cosigned, and how often it did not.
fn witness_metrics(witnesses: &[Arc<gatehouse_witness::StatusCell>]) -> String {
    let statuses: Vec<gatehouse_witness::WitnessStatus> =
        witnesses.iter().map(|w| w.snapshot()).collect();
    let mut out = String::new();
    if statuses.is_empty() {
        return out;
    }
    let labels =
        |s: &gatehouse_witness::WitnessStatus| format!("witness=\"{}\"", label_value(&s.name));
    let mut family =
        |name: &str,
         kind: &str,
         help: &str,
         value: &dyn Fn(&gatehouse_witness::WitnessStatus) -> u64| {
            metric_family(&mut out, name, kind, help, &statuses, &labels, &|s| {
                value(s).to_string()
            });
        };
    family(
        "gatehouse_witness_cosigned_size",
        "gauge",
        "Tree size of the latest checkpoint the witness cosigned (0: none yet).",
        &|s| s.cosigned_size,
    );
    family(
        "gatehouse_witness_cosigned_timestamp_seconds",
        "gauge",
        "When the witness says it cosigned it (POSIX seconds).",
        &|s| s.cosigned_at,
    );
    family(
        "gatehouse_witness_ok",
        "gauge",
        "1 when the latest submission was cosigned.",
        &|s| u64::from(s.ok),
    );
    family(
        "gatehouse_witness_failures",
        "counter",
        "Submissions recorded as audit.witness_failed.",
        &|s| s.failures,
    );
    out
}

fn source_of(request: &Request) -> SocketAddr {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0)
}

fn unauthenticated(denied: &Denied) -> ApiError {
    match denied {
        Denied::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "authentication or the audit log is unavailable",
        ),
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a valid bearer credential is required",
        ),
    }
}

/// Authenticates the bearer credential and audits the call with its final status.
async fn authenticate(
    State(state): State<AdminState>,
    mut request: Request,
    next: Next,
) -> Response {
    let source = source_of(&request);
    let method = request.method().clone();
    // Inside the nested router the URI has lost its `/api/v1` prefix; audit the full path.
    let path = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| request.uri().path().to_owned(), |u| u.path().to_owned());
    let resource = format!("{method} {path}");
    let credential = bearer(request.headers());
    let caller = match state
        .gate
        .authenticate_request("admin-api", credential, source, &resource)
        .await
    {
        Ok(caller) => caller,
        Err(denied) => return unauthenticated(&denied).into_response(),
    };
    let admin = caller.identity.in_any_group(&state.admin_groups);
    let who = caller.who.clone();
    request.extensions_mut().insert(Authed { caller, admin });
    let response = next.run(request).await;

    let status = response.status();
    let mut outcome = if status.is_success() {
        Outcome::success()
    } else {
        Outcome::failure(status.to_string())
    };
    outcome.code = Some(status.as_u16().to_string());
    let mut event = Event::now(EventKind::AdminRequest, outcome);
    event.who = who;
    event.what = What {
        protocol: Some("admin-api".to_owned()),
        resource: Some(resource),
        ..What::default()
    };
    if state.gate.record(event).await.is_err() {
        return ApiError::audit_unavailable().into_response();
    }
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn require_admin(authed: &Authed) -> Result<(), ApiError> {
    if authed.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this endpoint needs the admin role",
        ))
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

async fn whoami(Extension(authed): Extension<Authed>) -> Json<serde_json::Value> {
    let id = &authed.caller.identity;
    Json(serde_json::json!({
        "subject": id.subject,
        "principal": id.principal(),
        "issuer": id.issuer,
        "actors": id.actors,
        "groups": id.groups,
        "method": id.method.as_str(),
        "admin": authed.admin,
    }))
}

#[derive(Serialize)]
struct KeyView {
    name: String,
    groups: Vec<String>,
    prefix: String,
    created_at: String,
    revoked_at: Option<String>,
}

impl From<gatehouse_store::ApiKeyRecord> for KeyView {
    fn from(r: gatehouse_store::ApiKeyRecord) -> Self {
        KeyView {
            name: r.name,
            groups: r.groups,
            prefix: r.prefix,
            created_at: rfc3339(r.created_at),
            revoked_at: r.revoked_at.map(rfc3339),
        }
    }
}

async fn list_keys(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    require_admin(&authed)?;
    Ok(Json(
        state
            .store
            .list_keys()
            .await?
            .into_iter()
            .map(KeyView::from)
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
}

async fn create_key(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
    body: Result<Json<CreateKey>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    require_admin(&authed)?;
    let Json(body) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    if !valid_name(&body.name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            "a key name is 1-64 characters of A-Z a-z 0-9 - _ . : @",
        ));
    }
    if let Some(bad) = body.groups.iter().find(|g| !valid_name(g)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_group",
            format!("invalid group name {bad:?}"),
        ));
    }
    let conflict = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("a key named {:?} already exists", body.name),
        )
    };
    if state
        .store
        .list_keys()
        .await?
        .iter()
        .any(|k| k.name == body.name)
    {
        return Err(conflict());
    }
    let (key, hash) = gatehouse_auth::api_key::generate();
    let detail = serde_json::json!({ "groups": body.groups });
    // Recorded before the key exists: a key the log does not know of never works.
    record_key_event(
        &state,
        &authed,
        EventKind::KeyCreated,
        &body.name,
        Outcome::success(),
        Some(detail),
    )
    .await?;
    let record = NewApiKey {
        name: body.name.clone(),
        groups: body.groups.clone(),
        key_hash: hash,
        prefix: key.chars().take(7).collect(),
        created_at: time::OffsetDateTime::now_utc(),
    };
    if let Err(e) = state.store.insert_key(record).await {
        let reason = format!("not applied: {e}");
        let _ = record_key_event(
            &state,
            &authed,
            EventKind::KeyCreated,
            &body.name,
            Outcome::failure(reason),
            None,
        )
        .await;
        return Err(match e {
            StoreError::Conflict(_) => conflict(),
            other => other.into(),
        });
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "name": body.name, "groups": body.groups, "key": key })),
    )
        .into_response())
}

async fn revoke_key(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&authed)?;
    let existing = state.store.list_keys().await?;
    let Some(current) = existing.into_iter().find(|k| k.name == name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key named {name:?}"),
        ));
    };
    // Recorded before the revocation takes effect; then the key's open sessions end too.
    let open: Vec<String> = state
        .gate
        .open_sessions()
        .into_iter()
        .filter(|s| s.subject == format!("key:{name}"))
        .map(|s| s.id)
        .collect();
    let detail =
        serde_json::json!({ "ends_sessions": open, "already_revoked": current.is_revoked() });
    record_key_event(
        &state,
        &authed,
        EventKind::KeyRevoked,
        &name,
        Outcome::success(),
        Some(detail),
    )
    .await?;
    let record = match state
        .store
        .revoke_key(&name, time::OffsetDateTime::now_utc())
        .await
    {
        Ok(Some(record)) => record,
        Ok(None) | Err(_) => {
            let _ = record_key_event(
                &state,
                &authed,
                EventKind::KeyRevoked,
                &name,
                Outcome::failure("not applied: the state store did not revoke the key"),
                None,
            )
            .await;
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the key could not be revoked",
            ));
        }
    };
    let ended = state.gate.end_sessions_of_key(&name);
    let mut view = serde_json::to_value(KeyView::from(record)).unwrap_or_default();
    if let Some(map) = view.as_object_mut() {
        map.insert("sessions_ended".into(), ended.into());
    }
    Ok(Json(view))
}

#[derive(Deserialize)]
struct SessionQuery {
    limit: Option<u32>,
    /// Only the sessions open now.
    open: Option<bool>,
}

async fn list_sessions(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
    Query(query): Query<SessionQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&authed)?;
    if query.open == Some(true) {
        let list: Vec<serde_json::Value> = state
            .gate
            .open_sessions()
            .into_iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id, "protocol": s.protocol.as_str(), "connection": s.connection,
                    "subject": s.subject, "actors": s.actors, "source": s.source.to_string(),
                    "started_at": rfc3339(s.started_at), "ended_at": null,
                })
            })
            .collect();
        return Ok(Json(serde_json::Value::Array(list)));
    }
    let sessions = state
        .store
        .list_sessions(query.limit.unwrap_or(100).min(10_000))
        .await?;
    let list: Vec<serde_json::Value> = sessions
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id, "protocol": s.protocol, "connection": s.connection, "subject": s.subject,
                "actors": s.actors, "source": s.source, "started_at": rfc3339(s.started_at),
                "ended_at": s.ended_at.map(rfc3339), "statements": s.statements, "end_reason": s.end_reason,
            })
        })
        .collect();
    Ok(Json(serde_json::Value::Array(list)))
}

/// Signs a checkpoint of everything recorded so far, to admins: a bundle or proof made right
/// after covers up to this moment. Returns once the checkpoint is durable in the log.
async fn checkpoint_now(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&authed)?;
    if !state.audit.signs_checkpoints() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "checkpoints_off",
            "audit.checkpoints.enabled is false: this gateway signs no checkpoints",
        ));
    }
    match state.audit.checkpoint().await {
        Ok(c) => Ok(Json(serde_json::json!({
            "size": c.size,
            "root": c.root,
            "record_seq": c.record_seq,
            "note": c.note,
        }))),
        Err(_) => Err(ApiError::audit_unavailable()),
    }
}

async fn kill_session(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&authed)?;
    match state.gate.kill_session(&id, &authed.caller).await {
        Ok(true) => Ok(Json(serde_json::json!({ "id": id, "ended": true }))),
        Ok(false) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no open session {id:?}"),
        )),
        Err(_) => Err(ApiError::audit_unavailable()),
    }
}

/// A session's recording as replay events, to admins only. Every replay is audited (who
/// watched which session) before anything is shown; a recording that does not match its
/// audit record is refused.
async fn replay_session(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&authed)?;
    let access = state.recordings.clone();
    let session = id.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        crate::recordings::load(
            &access.dir,
            &access.audit_log,
            &session,
            access.key.as_ref(),
        )
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let (outcome, detail) = match &loaded {
        Ok(replay) => (
            Outcome::success(),
            serde_json::json!({ "sha256": replay.sha256, "verified": matches!(replay.integrity, crate::recordings::Integrity::Verified { .. }) }),
        ),
        Err(e) => (Outcome::failure(e.to_string()), serde_json::json!({})),
    };
    let mut event = Event::now(EventKind::RecordingReplayed, outcome);
    event.who = authed.caller.who.clone();
    event.session = Some(id.clone());
    event.what = What {
        protocol: Some("admin-api".to_owned()),
        resource: Some(format!("session:{id}")),
        detail: Some(detail),
        ..What::default()
    };
    state
        .gate
        .record(event)
        .await
        .map_err(|_| ApiError::audit_unavailable())?;
    let replay = loaded.map_err(|e| match e {
        crate::recordings::ReplayError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        crate::recordings::ReplayError::Altered { .. } => {
            ApiError::new(StatusCode::CONFLICT, "recording_altered", e.to_string())
        }
        crate::recordings::ReplayError::Unreadable(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "recording_unreadable",
            e.to_string(),
        ),
    })?;
    let integrity = match replay.integrity {
        crate::recordings::Integrity::Verified { seq } => {
            serde_json::json!({ "verified": true, "session_end_seq": seq })
        }
        crate::recordings::Integrity::Unaudited => serde_json::json!({
            "verified": false,
            "why": "no session.end holds its hash yet: the session is open, or the gateway stopped before it ended",
        }),
    };
    Ok(Json(serde_json::json!({
        "session": replay.header.session,
        "protocol": replay.header.protocol,
        "connection": replay.header.connection,
        "started": replay.header.started,
        "encrypted": replay.header.encryption.is_some(),
        "sha256": replay.sha256,
        "integrity": integrity,
        "events": replay.events,
    })))
}

/// Audits a change to a key, durably, before the response is sent.
async fn record_key_event(
    state: &AdminState,
    authed: &Authed,
    kind: EventKind,
    name: &str,
    outcome: Outcome,
    detail: Option<serde_json::Value>,
) -> Result<(), ApiError> {
    let mut event = Event::now(kind, outcome);
    event.who = authed.caller.who.clone();
    event.what = What {
        protocol: Some("admin-api".to_owned()),
        resource: Some(format!("key:{name}")),
        detail,
        ..What::default()
    };
    state
        .gate
        .record(event)
        .await
        .map_err(|_| ApiError::audit_unavailable())
}
