//! `/broker/v1` (credentials for a JWT-SVID holder), `/admin/v1/broker`
//! (backends, roles, leases) and the broker's RFC 8693 path.
//!
//! A `/broker/v1` caller presents `Authorization: Bearer <JWT-SVID>` whose
//! audience is the broker's (`<issuer>/broker`, see
//! [`crate::broker::BrokerService::audience`]); the token must be one this
//! server issued, unexpired, unrevoked, and its entry must grant the role.
//! Every decision is audited with the request's correlation id.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lanyard_core::policy::{Principal, Trace};
use lanyard_core::{ActChain, Decision, Denial, DenyReason, RevocationKey, RevocationKind};
use lanyard_store::{AuditDraft, BrokerRoleRow, LeaseQuery, LeaseRow, LeaseState};
use serde::Deserialize;

use crate::broker::{Caller, Issued, Refusal, DEFAULT_LEASE_MAX_TTL, DEFAULT_LEASE_TTL};
use crate::error::ApiError;
use crate::exchange::{ExchangeRequest, Facts, TYPE_POSTGRES_CREDENTIALS};
use crate::http::admin::audit;
use crate::http::extract::{Admin, Body, StoreResultExt as _};
use crate::http::oauth::OAuthError;
use crate::issuer::AuditContext;
use crate::state::{AppState, CorrelationId};

type St = State<AppState>;

/// Optional body of `POST /broker/v1/creds/{backend}/{role}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredsRequest {
    /// Requested lease TTL (capped by the role's max TTL).
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// Optional body of `POST /broker/v1/leases/{id}/renew`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// How far from now to extend (default: the role's TTL).
    #[serde(default)]
    increment_seconds: Option<u64>,
}

/// `POST /broker/v1/creds/{backend}/{role}`.
pub async fn creds(
    state: St,
    Extension(cid): Extension<CorrelationId>,
    headers: HeaderMap,
    Path((backend, role)): Path<(String, String)>,
    body: Option<Json<CredsRequest>>,
) -> Response {
    let grant = format!("{backend}/{role}");
    let caller = match bearer(&state, &headers) {
        Ok(c) => c,
        Err(d) => return deny_bearer(&state, &cid.0, &grant, &d).await,
    };
    let ttl = body
        .and_then(|Json(b)| b.ttl_seconds)
        .map(Duration::from_secs);
    match state.broker.issue(&caller, &grant, ttl, &cid.0).await {
        Ok(issued) => credential_response(&state, &issued),
        Err(r) => refused(&state, &cid.0, &caller, &grant, r).await,
    }
}

/// `POST /broker/v1/leases/{id}/renew`.
pub async fn renew(
    state: St,
    Extension(cid): Extension<CorrelationId>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<RenewRequest>>,
) -> Response {
    let caller = match bearer(&state, &headers) {
        Ok(c) => c,
        Err(d) => return deny_bearer(&state, &cid.0, &format!("lease {id}"), &d).await,
    };
    let inc = body
        .and_then(|Json(b)| b.increment_seconds)
        .map(Duration::from_secs);
    let revocations = state.registry.revocations();
    match state
        .broker
        .renew(&caller, &id, inc, &cid.0, &revocations)
        .await
    {
        Ok(lease) => Json(serde_json::json!({
            "lease_id": lease.id,
            "expires_at": lease.expires_at,
            "max_expires_at": lease.max_expires_at,
        }))
        .into_response(),
        Err(r) => refused(&state, &cid.0, &caller, &format!("lease {id}"), r).await,
    }
}

/// `DELETE /broker/v1/leases/{id}`: 200 when the user is gone, 202 when the
/// backend could not be reached (the reaper keeps trying).
pub async fn revoke(
    state: St,
    Extension(cid): Extension<CorrelationId>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let caller = match bearer(&state, &headers) {
        Ok(c) => c,
        Err(d) => return deny_bearer(&state, &cid.0, &format!("lease {id}"), &d).await,
    };
    match state.broker.revoke_own(&caller, &id, &cid.0).await {
        Ok(lease) => lease_answer(lease),
        Err(r) => refused(&state, &cid.0, &caller, &format!("lease {id}"), r).await,
    }
}

/// RFC 8693 with `requested_token_type=urn:lanyard:params:token-type:postgres-credentials`:
/// the subject is attested as for any exchange, then the credential is
/// issued as if asked on `/broker/v1`. `access_token` is the password.
pub async fn exchange(state: &AppState, cid: &str, req: &ExchangeRequest) -> Response {
    let grant = req.broker_role.clone().unwrap_or_default();
    let mut trace = Trace::for_audit();
    let mut facts = Facts::default();
    let (principal, chain) = match state
        .exchange
        .authenticate(req, &mut trace, &mut facts)
        .await
    {
        Ok(p) => p,
        Err(d) => {
            let actor = facts
                .subject
                .clone()
                .unwrap_or_else(|| "unauthenticated".into());
            let ctx = AuditContext {
                correlation_id: cid,
                actor: &actor,
                action: "broker.creds",
                evidence_digest: facts.digest.as_deref(),
            };
            let mut facts = facts.clone();
            facts.subject = Some(grant.chars().take(256).collect());
            if state.exchange.deny(ctx, &facts, &trace, &d).await.is_err() {
                return OAuthError::unaudited(cid).into_response();
            }
            return OAuthError::denial(&d, cid).into_response();
        }
    };
    let caller = caller_of(&principal, &chain);
    match state.broker.issue(&caller, &grant, req.ttl, cid).await {
        Ok(issued) => {
            let Issued { lease, credential } = issued;
            let now = state.clock.unix_seconds();
            let body = serde_json::json!({
                "access_token": credential.password.expose(),
                "issued_token_type": TYPE_POSTGRES_CREDENTIALS,
                "token_type": "N_A",
                "expires_in": (lease.expires_at - now).max(0),
                "username": credential.username,
                "lease_id": lease.id,
                "expires_at": lease.expires_at,
                "database_url": database_url(state, &lease),
            });
            no_store(Json(body).into_response())
        }
        Err(r) => refused(state, cid, &caller, &grant, r).await,
    }
}

// ---- admin ----

/// `POST /admin/v1/broker/backends` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBackend {
    kind: String,
    name: String,
    url: String,
}

/// `POST /admin/v1/broker/backends`: logs in once to check, then stores the
/// password sealed.
pub async fn add_backend(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<AddBackend>,
) -> Result<Response, ApiError> {
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "broker.backend.create",
        &format!("{} {}", req.kind, req.name),
        None,
    );
    let view = state
        .broker
        .add_backend(&req.kind, &req.name, &req.url, draft)
        .await
        .map_err(|r| admin_error(r, &cid.0))?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /admin/v1/broker/backends`.
pub async fn list_backends(state: St, _admin: Admin) -> Result<Response, ApiError> {
    refresh(&state).await;
    Ok(Json(serde_json::json!({ "backends": state.broker.backends() })).into_response())
}

/// `POST /admin/v1/broker/backends/{name}/rotate-root`.
pub async fn rotate_root(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "broker.backend.rotate-root",
        &name,
        None,
    );
    let view = state
        .broker
        .rotate_root(&name, draft)
        .await
        .map_err(|r| admin_error(r, &cid.0))?;
    tracing::info!(backend = %name, actor = %admin.actor, "broker backend root password rotated");
    Ok(Json(view).into_response())
}

/// `POST /admin/v1/broker/roles` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddRole {
    /// `backend/role`.
    role: String,
    creation_sql: String,
    #[serde(default)]
    revocation_sql: String,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    max_ttl_seconds: Option<u64>,
}

/// `POST /admin/v1/broker/roles`.
pub async fn add_role(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<AddRole>,
) -> Result<Response, ApiError> {
    let Some((backend, name)) = req.role.split_once('/') else {
        return Err(ApiError::BadRequest(format!(
            "role {:?} must be backend/role, e.g. appdb/readonly",
            req.role.chars().take(64).collect::<String>()
        )));
    };
    let secs =
        |v: Option<u64>, d: Duration| i64::try_from(v.unwrap_or(d.as_secs())).unwrap_or(i64::MAX);
    let row = BrokerRoleRow {
        backend: backend.to_owned(),
        name: name.to_owned(),
        creation_sql: req.creation_sql,
        revocation_sql: req.revocation_sql,
        ttl_secs: secs(req.ttl_seconds, DEFAULT_LEASE_TTL),
        max_ttl_secs: secs(req.max_ttl_seconds, DEFAULT_LEASE_MAX_TTL),
        created_at: state.clock.unix_seconds(),
    };
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "broker.role.create",
        &req.role,
        None,
    );
    state
        .broker
        .add_role(row.clone(), draft)
        .await
        .map_err(|r| admin_error(r, &cid.0))?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

/// `GET /admin/v1/broker/roles`.
pub async fn list_roles(state: St, _admin: Admin) -> Result<Response, ApiError> {
    refresh(&state).await;
    Ok(Json(serde_json::json!({ "roles": state.broker.roles() })).into_response())
}

/// `GET /admin/v1/broker/leases` filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseFilter {
    /// `active`, `revoking` (pending revocation) or `revoked`.
    state: Option<String>,
    tenant: Option<String>,
    limit: Option<i64>,
}

/// `GET /admin/v1/broker/leases`.
pub async fn list_leases(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Query(f): Query<LeaseFilter>,
) -> Result<Response, ApiError> {
    let lease_state = f
        .state
        .as_deref()
        .map(|s| {
            LeaseState::parse(s).map_err(|_| {
                ApiError::BadRequest(format!(
                    "state {:?} is not active, revoking or revoked",
                    s.chars().take(32).collect::<String>()
                ))
            })
        })
        .transpose()?;
    let leases = state
        .store
        .list_leases(LeaseQuery {
            state: lease_state,
            tenant: f.tenant,
            limit: f.limit.unwrap_or(1000).clamp(1, 10_000),
            ..LeaseQuery::default()
        })
        .await
        .api(&cid)?;
    Ok(Json(serde_json::json!({ "leases": leases })).into_response())
}

/// `DELETE /admin/v1/broker/leases/{id}`: an operator revokes a lease.
pub async fn admin_revoke_lease(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let lease = state
        .broker
        .revoke(&id, &format!("revoked by {}", admin.actor), &cid.0)
        .await
        .map_err(|r| admin_error(r, &cid.0))?;
    Ok(lease_answer(lease))
}

// ---- helpers ----

async fn refresh(state: &AppState) {
    if let Err(e) = state.broker.refresh().await {
        tracing::warn!(error = %e, "broker refresh failed; showing the previous view");
    }
}

fn bearer(state: &AppState, headers: &HeaderMap) -> Result<Caller, Denial> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            Denial::new(
                DenyReason::InvalidRequest,
                "Authorization: Bearer <JWT-SVID> is required",
            )
        })?;
    let principal = state
        .exchange
        .verify_bearer(token, state.broker.audience())?;
    let chain = principal
        .carried
        .as_ref()
        .map(|c| c.act.clone())
        .unwrap_or_default();
    Ok(caller_of(&principal, &chain))
}

/// The broker's caller: the principal's entry, the chain that acts for it,
/// and every key that, revoked, ends its leases.
fn caller_of(p: &Principal, chain: &ActChain) -> Caller {
    let mut keys = vec![
        RevocationKey::new(RevocationKind::Entry, &p.entry.id),
        RevocationKey::new(RevocationKind::SpiffeId, p.entry.spiffe_id.to_string()),
    ];
    if p.evidence.subject != p.entry.spiffe_id.to_string() {
        keys.push(RevocationKey::new(
            RevocationKind::Subject,
            &p.evidence.subject,
        ));
    }
    for k in p.evidence.revocation_keys.iter().cloned().chain(
        chain
            .actors()
            .iter()
            .map(|a| RevocationKey::new(RevocationKind::SpiffeId, a.to_string())),
    ) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    Caller {
        entry: p.entry.clone(),
        revocation_keys: keys,
        chain: chain.describe(&p.entry.spiffe_id.to_string()),
    }
}

fn decision_audit(
    state: &AppState,
    cid: &str,
    actor: &str,
    subject: &str,
    tenant: Option<&str>,
    decision: Decision,
    reason: String,
) -> AuditDraft {
    AuditDraft {
        at_ms: crate::correlation::unix_millis(state.clock.now()),
        correlation_id: cid.to_owned(),
        actor: actor.to_owned(),
        action: "broker.creds".into(),
        subject: subject.chars().take(256).collect(),
        tenant: tenant.map(str::to_owned),
        decision,
        reason,
        evidence_digest: None,
    }
}

async fn deny_bearer(state: &AppState, cid: &str, subject: &str, d: &Denial) -> Response {
    let draft = decision_audit(
        state,
        cid,
        "unauthenticated",
        subject,
        None,
        Decision::Deny,
        d.to_string(),
    );
    if state.audit.append(draft).await.is_err() {
        return OAuthError::unaudited(cid).into_response();
    }
    tracing::info!(correlation_id = %cid, reason = d.reason.as_str(), detail = %d.detail, "broker request denied");
    let mut e = OAuthError::denial(d, cid);
    e.status = StatusCode::UNAUTHORIZED;
    if d.reason != DenyReason::InvalidRequest && e.code == "invalid_grant" {
        e.code = "invalid_token";
    }
    e.www_authenticate = Some("Bearer realm=\"lanyard-broker\", error=\"invalid_token\"");
    no_store(e.into_response())
}

async fn refused(
    state: &AppState,
    cid: &str,
    caller: &Caller,
    subject: &str,
    r: Refusal,
) -> Response {
    let (status, code, text) = match &r {
        Refusal::BadRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m.clone()),
        Refusal::NotGranted(_) => (
            StatusCode::FORBIDDEN,
            "access_denied",
            "the identity's entry does not grant this broker role".to_owned(),
        ),
        Refusal::NotFound(m) => (
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{m} does not exist"),
        ),
        Refusal::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
        Refusal::Backend { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the credential backend is unavailable; try again later".to_owned(),
        ),
        Refusal::Revoked(_) => (
            StatusCode::FORBIDDEN,
            "access_denied",
            "the credential or identity has been revoked".to_owned(),
        ),
        Refusal::Store(_) | Refusal::Audit => (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the broker cannot record leases right now".to_owned(),
        ),
    };
    tracing::info!(correlation_id = %cid, error = %r, "broker request refused");
    let draft = decision_audit(
        state,
        cid,
        &caller.chain,
        subject,
        Some(caller.entry.tenant.as_str()),
        Decision::Deny,
        r.to_string(),
    );
    if state.audit.append(draft).await.is_err() {
        return OAuthError::unaudited(cid).into_response();
    }
    no_store(OAuthError::new(status, code, text, cid).into_response())
}

fn admin_error(r: Refusal, cid: &str) -> ApiError {
    match r {
        Refusal::BadRequest(m) | Refusal::NotGranted(m) => ApiError::BadRequest(m),
        Refusal::NotFound(m) => ApiError::NotFound(m),
        Refusal::Conflict(m) => ApiError::Conflict(m),
        // The operator's own backend: say what it answered (never a password).
        Refusal::Backend { backend, source } => {
            tracing::warn!(correlation_id = cid, backend = %backend, error = %source, "broker backend failed");
            ApiError::BadRequest(format!("backend {backend}: {source}"))
        }
        Refusal::Store(e) => ApiError::from_store(e, cid),
        Refusal::Audit => ApiError::Unavailable,
        Refusal::Revoked(m) => ApiError::Conflict(m),
    }
}

fn credential_response(state: &AppState, issued: &Issued) -> Response {
    let body = serde_json::json!({
        "username": issued.credential.username,
        "password": issued.credential.password.expose(),
        "lease_id": issued.lease.id,
        "expires_at": issued.lease.expires_at,
        "max_expires_at": issued.lease.max_expires_at,
        "database_url": database_url(state, &issued.lease),
    });
    no_store((StatusCode::OK, Json(body)).into_response())
}

fn lease_answer(lease: LeaseRow) -> Response {
    let status = if lease.state == LeaseState::Revoked {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (
        status,
        Json(serde_json::json!({
            "lease_id": lease.id,
            "state": lease.state,
            "attempts": lease.attempts,
            "last_error": lease.last_error,
        })),
    )
        .into_response()
}

/// The backend URL with the issued user in place of the admin (no password).
fn database_url(state: &AppState, lease: &LeaseRow) -> Option<String> {
    let url = state
        .broker
        .backends()
        .into_iter()
        .find(|b| b.name == lease.backend)?
        .url;
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    Some(format!("{scheme}://{}@{host}", lease.username))
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
