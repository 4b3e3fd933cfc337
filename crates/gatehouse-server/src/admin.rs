//! The admin API: health, metrics, and the key and session endpoints the CLI uses.
//!
//! Every `/api` call is authenticated with a bearer credential (an API key or an OIDC token)
//! and audited with its outcome before the response leaves. Identities in one of the
//! configured admin groups have the admin role; everyone else may only ask who they are.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use gatehouse_audit::{AuditLog, Event, EventKind, Outcome, What, Who};
use gatehouse_core::{Authenticator, Identity, Metrics};
use gatehouse_store::{NewApiKey, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;

#[derive(Clone)]
pub struct AdminState {
    pub authenticator: Arc<dyn Authenticator>,
    pub store: Arc<dyn Store>,
    pub audit: AuditLog,
    pub metrics: Arc<Metrics>,
    pub admin_groups: Vec<String>,
}

/// The authenticated caller of an API request.
#[derive(Clone)]
struct Caller {
    identity: Identity,
    who: Who,
    admin: bool,
}

pub fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/whoami", get(whoami))
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{name}/revoke", post(revoke_key))
        .route("/sessions", get(list_sessions))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .fallback(not_found);
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

async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

fn source_of(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
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
    let what = What {
        protocol: Some("admin-api".to_owned()),
        resource: Some(format!("{method} {path}")),
        ..What::default()
    };
    let credential = bearer(request.headers());
    let identity = match credential {
        Some(credential) => state
            .authenticator
            .authenticate(credential)
            .await
            .map_err(|e| e.to_string()),
        None => Err("missing bearer credential".to_owned()),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(reason) => {
            state
                .metrics
                .auth_failures_total
                .get_or_create(&Metrics::protocol("admin-api"))
                .inc();
            let mut event = Event::now(EventKind::AuthFailure, Outcome::failure(reason));
            event.who = Who {
                method: Some("none".to_owned()),
                source: source.map(|s| s.to_string()),
                ..Who::default()
            };
            event.what = what;
            if state.audit.record(event).await.is_err() {
                return audit_unavailable();
            }
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "a valid bearer credential is required",
            )
            .into_response();
        }
    };
    let who = identity.who(source, None);
    let admin = identity.in_any_group(&state.admin_groups);
    request.extensions_mut().insert(Caller {
        identity,
        who: who.clone(),
        admin,
    });
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
    event.what = what;
    if state.audit.record(event).await.is_err() {
        return audit_unavailable();
    }
    response
}

fn audit_unavailable() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        "the audit log is unavailable",
    )
    .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
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

async fn whoami(Extension(caller): Extension<Caller>) -> Json<serde_json::Value> {
    let id = &caller.identity;
    Json(serde_json::json!({
        "subject": id.subject,
        "issuer": id.issuer,
        "actors": id.actors,
        "groups": id.groups,
        "method": id.method.as_str(),
        "admin": caller.admin,
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
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    require_admin(&caller)?;
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
    Extension(caller): Extension<Caller>,
    body: Result<Json<CreateKey>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
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
    let (key, hash) = gatehouse_auth::api_key::generate();
    let record = NewApiKey {
        name: body.name.clone(),
        groups: body.groups.clone(),
        key_hash: hash,
        prefix: key.chars().take(7).collect(),
        created_at: time::OffsetDateTime::now_utc(),
    };
    match state.store.insert_key(record).await {
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("a key named {:?} already exists", body.name),
            ))
        }
        other => other?,
    }
    let detail = serde_json::json!({ "groups": body.groups });
    record_key_event(
        &state,
        &caller,
        EventKind::KeyCreated,
        &body.name,
        Some(detail),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "name": body.name, "groups": body.groups, "key": key })),
    )
        .into_response())
}

async fn revoke_key(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    require_admin(&caller)?;
    let Some(record) = state
        .store
        .revoke_key(&name, time::OffsetDateTime::now_utc())
        .await?
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no key named {name:?}"),
        ));
    };
    record_key_event(&state, &caller, EventKind::KeyRevoked, &name, None).await?;
    Ok(Json(record.into()))
}

#[derive(Deserialize)]
struct SessionQuery {
    limit: Option<u32>,
}

async fn list_sessions(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<SessionQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&caller)?;
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

/// Audits a change to a key, durably, before the response is sent.
async fn record_key_event(
    state: &AdminState,
    caller: &Caller,
    kind: EventKind,
    name: &str,
    detail: Option<serde_json::Value>,
) -> Result<(), ApiError> {
    let mut event = Event::now(kind, Outcome::success());
    event.who = caller.who.clone();
    event.what = What {
        protocol: Some("admin-api".to_owned()),
        resource: Some(format!("key:{name}")),
        detail,
        ..What::default()
    };
    state.audit.record(event).await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the audit log is unavailable",
        )
    })
}
