//! `/admin/v1/federations` (relationships with other trust domains, whose
//! bundles are fetched from their bundle endpoints) and `/admin/v1/bundles`
//! (the foreign bundles held, including those set by hand).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lanyard_ca::bundle::Bundle;
use lanyard_core::TrustDomain;
use lanyard_store::FederatedRow;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::federation::refresh::refresh_domain;
use crate::federation::{Domain, Endpoint, FederatedSet, Profile, Status};
use crate::http::admin::{audit, refresh, require_tenant};
use crate::http::extract::{Admin, Body, StoreResultExt as _};
use crate::state::{AppState, CorrelationId};

type St = State<AppState>;

/// A foreign trust domain named by the caller: valid, and not ours.
fn foreign_td(state: &AppState, name: &str) -> Result<TrustDomain, ApiError> {
    let td = TrustDomain::parse(name).map_err(|e| {
        ApiError::BadRequest(format!(
            "trust domain {}: {e}",
            lanyard_core::text::shown(name, 64)
        ))
    })?;
    if td == state.settings.trust_domain {
        return Err(ApiError::BadRequest(format!(
            "{td} is this server's own trust domain; its bundle is served at /bundle and by the bundle endpoint"
        )));
    }
    Ok(td)
}

/// The tenant a trust domain is bound to, when given: valid and existing.
async fn check_tenant(
    state: &AppState,
    tenant: Option<&str>,
    cid: &CorrelationId,
) -> Result<(), ApiError> {
    let Some(t) = tenant else { return Ok(()) };
    lanyard_core::TenantId::parse(t).map_err(|e| ApiError::BadRequest(format!("tenant: {e}")))?;
    require_tenant(state, t, &cid.0).await
}

fn view(d: &Domain) -> Value {
    let b = d.bundle.as_ref();
    json!({
        "trust_domain": d.trust_domain.to_string(),
        "tenant": d.tenant.as_ref().map(ToString::to_string),
        "source": if d.endpoint.is_some() { "federation" } else { "static" },
        "bundle_endpoint_url": d.endpoint.as_ref().map(|e| e.url.clone()),
        "profile": d.endpoint.as_ref().map(|e| e.profile.as_str()),
        "endpoint_spiffe_id": d.endpoint.as_ref().and_then(|e| e.endpoint_spiffe_id.clone()),
        "has_bundle": b.is_some(),
        "sequence": b.and_then(|b| b.sequence),
        "refresh_hint": b.and_then(|b| b.refresh_hint),
        "x509_authorities": b.map_or(0, |b| b.x509_authorities.len()),
        "jwt_authorities": b.map_or(0, |b| b.jwt_authorities.len()),
        "last_attempt_at": d.status.last_attempt_at,
        "last_success_at": d.status.last_success_at,
        "next_refresh_at": d.status.next_refresh_at,
        "last_error": d.status.last_error,
        "failures": d.status.failures,
    })
}

/// Reads the domains straight from the store (the status of a refresh made
/// on another replica included).
async fn load(state: &AppState, cid: &CorrelationId) -> Result<FederatedSet, ApiError> {
    FederatedSet::load(&*state.store).await.api(cid)
}

/// `GET /admin/v1/federations`: relationships only.
pub async fn list_federations(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let set = load(&state, &cid).await?;
    let list: Vec<Value> = set
        .domains
        .values()
        .filter(|d| d.endpoint.is_some())
        .map(|d| view(d))
        .collect();
    Ok(Json(json!({ "federations": list })).into_response())
}

/// `GET /admin/v1/federations/{td}` (and `/admin/v1/bundles/{td}`, with the
/// bundle itself).
pub async fn show_federation(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let td = foreign_td(&state, &name)?;
    let set = load(&state, &cid).await?;
    let d = set
        .get(&td)
        .ok_or_else(|| ApiError::NotFound(format!("federated trust domain {td}")))?;
    let mut v = view(d);
    if let (Some(b), Some(o)) = (&d.bundle, v.as_object_mut()) {
        o.insert("bundle".into(), b.to_spiffe_json());
        o.insert("bundle_pem".into(), b.to_pem().into());
    }
    Ok(Json(v).into_response())
}

/// `POST /admin/v1/federations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFederation {
    trust_domain: String,
    bundle_endpoint_url: String,
    profile: Profile,
    #[serde(default)]
    endpoint_spiffe_id: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    /// A bootstrap bundle (SPIFFE JSON or PEM).
    #[serde(default)]
    initial_bundle: Option<String>,
}

/// `POST /admin/v1/federations`: a relationship; its bundle is fetched by
/// the refresh job at once.
pub async fn create_federation(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<CreateFederation>,
) -> Result<Response, ApiError> {
    let td = foreign_td(&state, &req.trust_domain)?;
    let endpoint = Endpoint {
        url: req.bundle_endpoint_url,
        profile: req.profile,
        endpoint_spiffe_id: req.endpoint_spiffe_id,
    };
    let endpoint_id = endpoint.validate().map_err(ApiError::BadRequest)?;
    check_tenant(&state, req.tenant.as_deref(), &cid).await?;
    let bootstrap = match &req.initial_bundle {
        None => None,
        Some(text) => Some(
            Bundle::parse(&td, text.as_bytes())
                .map_err(|e| ApiError::BadRequest(format!("--initial-bundle: {e}")))?,
        ),
    };
    let existing = state.store.fetch_federated(td.as_str()).await.api(&cid)?;
    let has_bundle = bootstrap.is_some() || existing.as_ref().is_some_and(|r| !r.bundle.is_empty());
    if let Some(id) = &endpoint_id {
        let anchored = if id.trust_domain() == &td {
            has_bundle
        } else {
            id.trust_domain() == &state.settings.trust_domain
                || state
                    .registry
                    .federated()
                    .get(id.trust_domain())
                    .is_some_and(|d| d.bundle.is_some())
        };
        if !anchored {
            return Err(ApiError::BadRequest(format!(
                "profile https_spiffe verifies the endpoint's SVID ({id}) against the bundle of {}, and this server holds none: give --initial-bundle FILE (the peer's bundle, e.g. from `lanyard bundle show` or `spire-server bundle show -format spiffe` there)",
                id.trust_domain()
            )));
        }
    }
    let (bundle, sequence) = bootstrap
        .as_ref()
        .map_or_else(|| (String::new(), 0), Bundle::to_stored);
    let now = state.clock.unix_seconds();
    let row = FederatedRow {
        trust_domain: td.to_string(),
        tenant: req.tenant.clone().unwrap_or_default(),
        endpoint: serde_json::to_string(&endpoint).map_err(|_| ApiError::Internal)?,
        bundle,
        sequence,
        status: serde_json::to_string(&Status::default()).map_err(|_| ApiError::Internal)?,
        created_at: now,
        updated_at: now,
    };
    let mut draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "federation.create",
        &td.id_string(),
        req.tenant.as_deref(),
    );
    draft.reason = format!(
        "federates with {td} via {} ({}){}",
        endpoint.url,
        endpoint.profile.as_str(),
        if bootstrap.is_some() {
            ", bootstrap bundle given"
        } else {
            ""
        }
    );
    state.store.create_federation(row, draft).await.api(&cid)?;
    refresh(&state).await;
    tracing::info!(trust_domain = %td, url = %endpoint.url, profile = endpoint.profile.as_str(), actor = %admin.actor, "federation relationship added");
    let set = load(&state, &cid).await?;
    let v = set.get(&td).map_or(Value::Null, |d| view(d));
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `POST /admin/v1/federations/{td}/refresh`: fetch now.
pub async fn refresh_federation(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let td = foreign_td(&state, &name)?;
    let row = state
        .store
        .fetch_federated(td.as_str())
        .await
        .api(&cid)?
        .filter(|r| !r.endpoint.is_empty())
        .ok_or_else(|| ApiError::NotFound(format!("federation relationship with {td}")))?;
    let report = refresh_domain(&state, &row, &admin.actor, &cid.0)
        .await
        .api(&cid)?;
    Ok(Json(report).into_response())
}

/// `DELETE /admin/v1/federations/{td}`: ends the relationship and drops the
/// trust domain's bundle (agents and validators stop trusting it).
pub async fn delete_federation(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let td = foreign_td(&state, &name)?;
    let row = state.store.fetch_federated(td.as_str()).await.api(&cid)?;
    if row.as_ref().is_some_and(|r| r.endpoint.is_empty()) {
        return Err(ApiError::NotFound(format!(
            "federation relationship with {td} (its bundle was set by hand: `lanyard bundle delete --trust-domain {td}`)"
        )));
    }
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "federation.delete",
        &td.id_string(),
        None,
    );
    state
        .store
        .delete_federated(td.as_str(), draft)
        .await
        .api(&cid)?;
    refresh(&state).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /admin/v1/bundles`: every foreign bundle held.
pub async fn list_bundles(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let set = load(&state, &cid).await?;
    let list: Vec<Value> = set.domains.values().map(|d| view(d)).collect();
    Ok(Json(json!({ "bundles": list })).into_response())
}

/// `PUT /admin/v1/bundles/{td}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBundle {
    /// SPIFFE JSON or PEM.
    bundle: String,
    #[serde(default)]
    tenant: Option<String>,
}

/// `PUT /admin/v1/bundles/{td}`: sets a trust domain's bundle by hand (a
/// static relationship, or a new bootstrap for a federated one).
pub async fn set_bundle(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
    Body(req): Body<SetBundle>,
) -> Result<Response, ApiError> {
    let td = foreign_td(&state, &name)?;
    let bundle = Bundle::parse(&td, req.bundle.as_bytes())
        .map_err(|e| ApiError::BadRequest(format!("--file: {e}")))?;
    check_tenant(&state, req.tenant.as_deref(), &cid).await?;
    let (doc, sequence) = bundle.to_stored();
    let mut draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "bundle.set",
        &td.id_string(),
        req.tenant.as_deref(),
    );
    draft.reason = format!("bundle of {td} set by hand: {}", bundle.summary());
    state
        .store
        .put_bundle(
            td.as_str(),
            &doc,
            sequence,
            req.tenant.as_deref(),
            None,
            state.clock.unix_seconds(),
            draft,
        )
        .await
        .api(&cid)?;
    refresh(&state).await;
    let set = load(&state, &cid).await?;
    let v = set.get(&td).map_or(Value::Null, |d| view(d));
    Ok(Json(v).into_response())
}

/// `DELETE /admin/v1/bundles/{td}`: drops a bundle set by hand.
pub async fn delete_bundle(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let td = foreign_td(&state, &name)?;
    let row = state.store.fetch_federated(td.as_str()).await.api(&cid)?;
    if row.as_ref().is_some_and(|r| !r.endpoint.is_empty()) {
        return Err(ApiError::Conflict(format!(
            "{td} has a federation relationship that would fetch its bundle again; end it with `lanyard federation delete {td}`"
        )));
    }
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "bundle.delete",
        &td.id_string(),
        None,
    );
    state
        .store
        .delete_federated(td.as_str(), draft)
        .await
        .api(&cid)?;
    refresh(&state).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
