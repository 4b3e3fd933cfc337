//! `/api/v1/approvals`: list, show, approve, deny. Anyone authenticated may call them; what
//! they may see and decide is the broker's separation of duties: approvers (the request's
//! approver groups, or the admin groups) see and decide requests, requesters see their own,
//! admins see all. Every decision is audited by the broker before it takes effect.

use super::{AdminState, ApiError, Authed};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use gatehouse_core::approvals::{
    ApprovalRequest, ApprovalState, Approvals, DecideError, RequestKind,
};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
}

#[derive(Deserialize, Default)]
pub(super) struct ApproveBody {
    comment: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct DenyBody {
    reason: String,
}

fn broker(state: &AdminState) -> Result<&Arc<Approvals>, ApiError> {
    state.gate.approvals().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "approvals_unavailable",
            "approvals are not available on this gateway",
        )
    })
}

/// Whether the caller may see this request.
fn visible(state: &AdminState, authed: &Authed, request: &ApprovalRequest) -> bool {
    let identity = &authed.caller.identity;
    let groups = if request.approver_groups.is_empty() {
        &state.admin_groups
    } else {
        &request.approver_groups
    };
    authed.admin
        || identity.in_any_group(groups)
        || identity.principal() == request.requester.principal
}

fn decide_error(e: DecideError) -> ApiError {
    match e {
        DecideError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        DecideError::Closed { .. } => ApiError::new(StatusCode::CONFLICT, "closed", e.to_string()),
        DecideError::NotAllowed(_) => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
        }
        DecideError::Unavailable(_) => ApiError::audit_unavailable(),
    }
}

fn store_error(e: String) -> ApiError {
    tracing::error!(error = %e, "approvals store error");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the state store is unavailable",
    )
}

pub(super) async fn list(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<ApprovalRequest>>, ApiError> {
    let wanted = match query.state.as_deref() {
        None => None,
        Some(s) => Some(ApprovalState::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown state {s:?}: pending, approved, denied, expired, abandoned, cancelled, executed"),
            )
        })?),
    };
    let requests = broker(&state)?
        .list(wanted, query.limit.unwrap_or(100).min(10_000))
        .await
        .map_err(store_error)?;
    Ok(Json(
        requests
            .into_iter()
            .filter(|r| visible(&state, &authed, r))
            .collect(),
    ))
}

pub(super) async fn show(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
    Path(id): Path<String>,
) -> Result<Json<ApprovalRequest>, ApiError> {
    let request = broker(&state)?.get(&id).await.map_err(store_error)?;
    match request {
        Some(r) if visible(&state, &authed, &r) => Ok(Json(r)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no approval request {id}"),
        )),
    }
}

pub(super) async fn approve(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
    Path(id): Path<String>,
    body: Option<Json<ApproveBody>>,
) -> Result<Json<ApprovalRequest>, ApiError> {
    let comment = body.and_then(|Json(b)| b.comment);
    broker(&state)?
        .approve(
            &id,
            &authed.caller.identity,
            comment,
            authed.caller.who.clone(),
        )
        .await
        .map(Json)
        .map_err(decide_error)
}

pub(super) async fn deny(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
    Path(id): Path<String>,
    Json(body): Json<DenyBody>,
) -> Result<Json<ApprovalRequest>, ApiError> {
    let reason = reason(body, "a denial needs a reason: the caller sees it")?;
    broker(&state)?
        .deny(
            &id,
            &authed.caller.identity,
            reason,
            authed.caller.who.clone(),
        )
        .await
        .map(Json)
        .map_err(decide_error)
}

/// The non-empty reason of a denial or revocation.
fn reason(body: DenyBody, missing: &'static str) -> Result<String, ApiError> {
    if body.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            missing,
        ));
    }
    Ok(body.reason)
}

/// Withdraws an open request, an unused approval or an active grant.
pub(super) async fn revoke(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
    Path(id): Path<String>,
    Json(body): Json<DenyBody>,
) -> Result<Json<ApprovalRequest>, ApiError> {
    let reason = reason(body, "a revocation needs a reason")?;
    broker(&state)?
        .revoke(
            &id,
            &authed.caller.identity,
            reason,
            authed.caller.who.clone(),
        )
        .await
        .map(Json)
        .map_err(decide_error)
}

#[derive(Deserialize)]
pub(super) struct AccessBody {
    connection: String,
    /// `2h`, `30m`, `90s`.
    duration: String,
    reason: String,
}

/// Asks for time-bound access to a connection: a request approvers decide like a held
/// statement; once approved, the caller may connect until it ends.
pub(super) async fn request_access(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
    Json(body): Json<AccessBody>,
) -> Result<(StatusCode, Json<ApprovalRequest>), ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let policy = state.gate.grant_policy(&body.connection).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "connection {:?} does not offer time-bound access",
                body.connection
            ),
        )
    })?;
    let duration = gatehouse_config::parse_duration(&body.duration)
        .map_err(|e| bad(format!("duration {:?}: {e}", body.duration)))?;
    if duration.is_zero() || duration > policy.max {
        return Err(bad(format!(
            "access to {} is granted for at most {}s",
            body.connection,
            policy.max.as_secs()
        )));
    }
    if body.reason.trim().is_empty() {
        return Err(bad("a request needs a reason: approvers see it".into()));
    }
    let request = broker(&state)?
        .request_access(
            &authed.caller.identity,
            authed.caller.who.clone(),
            &body.connection,
            duration,
            &body.reason,
            &policy,
        )
        .await
        .map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(request)))
}

pub(super) async fn list_access(
    State(state): State<AdminState>,
    Extension(authed): Extension<Authed>,
) -> Result<Json<Vec<ApprovalRequest>>, ApiError> {
    let requests = broker(&state)?
        .list(None, 10_000)
        .await
        .map_err(store_error)?;
    Ok(Json(
        requests
            .into_iter()
            .filter(|r| r.kind == RequestKind::Access && visible(&state, &authed, r))
            .collect(),
    ))
}
