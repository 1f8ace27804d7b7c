//! `/admin/v1`: tenants, keys, audit. Every call needs an admin bearer token;
//! every change is audited in the same transaction as the change.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::time::Duration;

use lanyard_attest::{IssuerConfig, TenantBinding};
use lanyard_core::{Decision, Entry, Selector, SpiffeId, TenantId, TrustDomain};
use lanyard_jose::Algorithm;
use lanyard_store::audit::{verify_chain, GENESIS_HASH};
use lanyard_store::{AuditDraft, AuditQuery, IssuerRow, Revocation, Tenant};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::{AppState, CorrelationId, St};
use crate::correlation::unix_millis;
use crate::error::ApiError;
use crate::exchange::{decide, ExchangeRequest, Facts, Trace};

/// An authenticated admin caller.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `admin:<token id>`, as audit events name it.
    pub actor: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        match crate::admin_token::verify(&*state.store, presented.trim()).await {
            Ok(Some(id)) => Ok(Self {
                actor: format!("admin:{id}"),
            }),
            Ok(None) => {
                tracing::info!("admin call refused: bad token");
                Err(ApiError::Unauthorized)
            }
            Err(e) => {
                tracing::error!(error = %e, "admin token lookup failed");
                Err(ApiError::Unavailable)
            }
        }
    }
}

/// JSON body whose rejections become [`ApiError`]s naming the problem.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(reject(&rejection, state.settings.max_request_bytes)),
        }
    }
}

fn reject(r: &JsonRejection, limit: usize) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit };
    }
    // axum's text names the field and the JSON position, never echoes the body.
    ApiError::BadRequest(r.body_text())
}

fn audit(
    state: &AppState,
    cid: &str,
    actor: &str,
    action: &str,
    subject: &str,
    tenant: Option<&str>,
) -> AuditDraft {
    AuditDraft {
        at_ms: unix_millis(state.clock.now()),
        correlation_id: cid.to_owned(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: subject.to_owned(),
        tenant: tenant.map(str::to_owned),
        decision: Decision::Allow,
        reason: "admin request".into(),
        evidence_digest: None,
    }
}

/// `POST /admin/v1/tenants` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
    #[serde(default)]
    description: String,
}

/// `GET /admin/v1/tenants`.
pub async fn list_tenants(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let tenants = state
        .store
        .list_tenants()
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    Ok(Json(serde_json::json!({ "tenants": tenants })).into_response())
}

/// `POST /admin/v1/tenants`.
pub async fn create_tenant(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<CreateTenant>,
) -> Result<Response, ApiError> {
    let id = TenantId::parse(&req.name)
        .map_err(|e| ApiError::BadRequest(format!("name {:?}: {e}", req.name)))?;
    if req.description.len() > 1024 {
        return Err(ApiError::BadRequest(
            "description is longer than 1024 bytes".into(),
        ));
    }
    let tenant = Tenant {
        id: id.clone(),
        description: req.description,
        created_at: state.clock.unix_seconds(),
    };
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "tenant.create",
        id.as_str(),
        Some(id.as_str()),
    );
    let created = state
        .store
        .create_tenant(tenant, draft)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    tracing::info!(tenant = %created.id, actor = %admin.actor, "tenant created");
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /admin/v1/tenants/{name}`.
pub async fn show_tenant(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = state
        .store
        .fetch_tenant(&name)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    tenant
        .map(|t| Json(t).into_response())
        .ok_or_else(|| ApiError::NotFound(format!("tenant {name:?}")))
}

/// `DELETE /admin/v1/tenants/{name}`.
pub async fn delete_tenant(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "tenant.delete",
        &name,
        Some(&name),
    );
    state
        .store
        .delete_tenant(&name, draft)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    tracing::info!(tenant = %name, actor = %admin.actor, "tenant deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One key as the admin API shows it: metadata, never key material.
#[derive(Debug, Serialize)]
struct KeyView {
    kid: String,
    alg: String,
    state: String,
    created_at: i64,
    activate_at: i64,
    retire_at: Option<i64>,
}

/// `GET /admin/v1/keys`.
pub async fn list_keys(state: St, _admin: Admin) -> Result<Response, ApiError> {
    use lanyard_core::clock::unix_seconds;
    let published = state.keys.current();
    let keys: Vec<KeyView> = published
        .ring
        .keys()
        .iter()
        .map(|k| KeyView {
            kid: k.kid.clone(),
            alg: k.alg.to_string(),
            state: k.state.to_string(),
            created_at: unix_seconds(k.created_at),
            activate_at: unix_seconds(k.activate_at),
            retire_at: k.retire_at.map(unix_seconds),
        })
        .collect();
    let policy = state.keys.policy();
    Ok(Json(serde_json::json!({
        "keys": keys,
        "rotation_period_seconds": policy.rotation_period.as_secs(),
        "publish_lead_seconds": policy.publish_lead.as_secs(),
    }))
    .into_response())
}

/// `POST /admin/v1/keys/rotate` body.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateKeys {
    alg: Option<String>,
    /// The active key is compromised: delete it now, the next key signs now.
    #[serde(default)]
    compromised: bool,
}

/// `POST /admin/v1/keys/rotate`.
pub async fn rotate_keys(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<RotateKeys>,
) -> Result<Response, ApiError> {
    let alg = match req.alg {
        Some(name) => name
            .parse::<Algorithm>()
            .map_err(|e| ApiError::BadRequest(format!("alg: {e}")))?,
        None => state
            .keys
            .algorithms()
            .first()
            .copied()
            .unwrap_or(Algorithm::Es256),
    };
    let result = if req.compromised {
        state
            .keys
            .replace_compromised(alg, &admin.actor, &cid.0)
            .await
    } else {
        state.keys.rotate(alg, &admin.actor, &cid.0).await
    };
    match result {
        Ok(scheduled) => Ok(Json(scheduled).into_response()),
        Err(crate::ServerError::NotEnabled { alg }) => Err(ApiError::BadRequest(format!(
            "algorithm {alg} is not enabled on this server (keys.algorithms)"
        ))),
        Err(e) => {
            tracing::error!(correlation_id = %cid.0, error = %e, "key rotation failed");
            Err(ApiError::Internal)
        }
    }
}

/// `GET /admin/v1/audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQueryParams {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
    since_ms: Option<i64>,
    correlation_id: Option<String>,
}

/// `GET /admin/v1/audit?after=SEQ&limit=N&since_ms=T&correlation_id=C`.
pub async fn list_audit(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Query(q): Query<AuditQueryParams>,
) -> Result<Response, ApiError> {
    let query = AuditQuery {
        after: q.after,
        since_ms: q.since_ms,
        correlation_id: q.correlation_id,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    };
    let events = state
        .store
        .query_audit(query)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    Ok(Json(serde_json::json!({ "events": events })).into_response())
}

/// `GET /admin/v1/audit/verify`: recomputes the whole chain.
pub async fn verify_audit(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let (mut after, mut hash, mut total) = (0i64, GENESIS_HASH.to_owned(), 0usize);
    loop {
        let page = state
            .store
            .query_audit(AuditQuery {
                after,
                limit: 1000,
                ..AuditQuery::default()
            })
            .await
            .map_err(|e| ApiError::from_store(e, &cid.0))?;
        let Some(last) = page.last() else { break };
        let last_seq = last.seq;
        match verify_chain(after, &hash, &page) {
            Ok(h) => hash = h,
            Err(b) => {
                return Ok(Json(serde_json::json!({
                    "ok": false, "verified": total, "first_broken_seq": b.seq, "problem": b.why,
                }))
                .into_response())
            }
        }
        total += page.len();
        after = last_seq;
    }
    Ok(
        Json(serde_json::json!({ "ok": true, "verified": total, "head_hash": hash }))
            .into_response(),
    )
}

// ---- issuers ----

/// `GET /admin/v1/issuers`.
pub async fn list_issuers(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let rows = state
        .store
        .list_issuers()
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    let issuers: Vec<Value> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(&r.config).ok())
        .collect();
    Ok(Json(serde_json::json!({ "issuers": issuers })).into_response())
}

/// `GET /admin/v1/issuers/{name}`.
pub async fn show_issuer(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let rows = state
        .store
        .list_issuers()
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    let row = rows
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("issuer {name:?}")))?;
    let config: Value = serde_json::from_str(&row.config).map_err(|_| ApiError::Internal)?;
    Ok(Json(config).into_response())
}

/// `POST /admin/v1/issuers`: body is the issuer configuration.
pub async fn create_issuer(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(config): Body<IssuerConfig>,
) -> Result<Response, ApiError> {
    config
        .validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // Check the whole set as it would be (unique names, no two issuers with
    // the same iss and audience) before storing anything.
    let rows = state
        .store
        .list_issuers()
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    let mut set: Vec<IssuerConfig> = rows
        .iter()
        .filter_map(|r| serde_json::from_str(&r.config).ok())
        .collect();
    set.push(config.clone());
    match lanyard_attest::validate_set(&set) {
        Err(lanyard_attest::AttestError::DuplicateName { .. }) => {
            return Err(ApiError::Conflict(format!(
                "issuer {:?} already exists",
                config.name
            )))
        }
        Err(e) => return Err(ApiError::BadRequest(e.to_string())),
        Ok(()) => {}
    }
    if let TenantBinding::Fixed(t) = &config.tenant {
        require_tenant(&state, t.as_str(), &cid.0).await?;
    }
    let json = serde_json::to_string(&config).map_err(|_| ApiError::Internal)?;
    let row = IssuerRow {
        name: config.name.clone(),
        config: json,
        created_at: state.clock.unix_seconds(),
    };
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "issuer.create",
        &config.name,
        None,
    );
    state
        .store
        .create_issuer(row, draft)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    refresh(&state).await;
    tracing::info!(issuer = %config.name, actor = %admin.actor, "trusted issuer added");
    Ok((StatusCode::CREATED, Json(config)).into_response())
}

/// `DELETE /admin/v1/issuers/{name}`.
pub async fn delete_issuer(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let draft = audit(&state, &cid.0, &admin.actor, "issuer.delete", &name, None);
    state
        .store
        .delete_issuer(&name, draft)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    refresh(&state).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn require_tenant(state: &AppState, tenant: &str, cid: &str) -> Result<(), ApiError> {
    match state
        .store
        .fetch_tenant(tenant)
        .await
        .map_err(|e| ApiError::from_store(e, cid))?
    {
        Some(_) => Ok(()),
        None => Err(ApiError::BadRequest(format!(
            "tenant {tenant:?} does not exist; create it with `lanyard tenant create {tenant}`"
        ))),
    }
}

/// Makes this replica see a change at once (others poll).
async fn refresh(state: &AppState) {
    if let Err(e) = state.registry.refresh().await {
        tracing::warn!(error = %e, "registry refresh after change failed; the poller will retry");
    }
}

// ---- entries ----

/// `POST /admin/v1/entries` and `PUT /admin/v1/entries/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRequest {
    spiffe_id: String,
    tenant: String,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    dns_names: Vec<String>,
    selectors: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    max_ttl_seconds: Option<u64>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    may_act: Vec<String>,
    #[serde(default)]
    admin: bool,
}

const MAX_LIST: usize = 64;

async fn build_entry(
    state: &AppState,
    id: String,
    req: EntryRequest,
    cid: &str,
) -> Result<Entry, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let spiffe_id = SpiffeId::parse(&req.spiffe_id)
        .map_err(|e| bad(format!("spiffe_id {:?}: {e}", req.spiffe_id)))?;
    if spiffe_id.trust_domain() != &state.settings.trust_domain {
        return Err(bad(format!(
            "spiffe_id {spiffe_id} is not in this server's trust domain {}",
            state.settings.trust_domain
        )));
    }
    let tenant =
        TenantId::parse(&req.tenant).map_err(|e| bad(format!("tenant {:?}: {e}", req.tenant)))?;
    require_tenant(state, tenant.as_str(), cid).await?;
    if let Some(issuer) = &req.issuer {
        let rows = state
            .store
            .list_issuers()
            .await
            .map_err(|e| ApiError::from_store(e, cid))?;
        if !rows.iter().any(|r| &r.name == issuer) {
            return Err(bad(format!(
                "issuer {issuer:?} is not a trusted issuer; add it with `lanyard issuer add`"
            )));
        }
    }
    if req.selectors.is_empty() {
        return Err(bad("at least one selector is required (an entry without selectors would match every workload)".into()));
    }
    for (name, list) in [
        ("selectors", &req.selectors),
        ("audiences", &req.audiences),
        ("scopes", &req.scopes),
        ("may_act", &req.may_act),
        ("dns_names", &req.dns_names),
    ] {
        if list.len() > MAX_LIST || list.iter().any(|v| v.is_empty() || v.len() > 512) {
            return Err(bad(format!(
                "{name}: at most {MAX_LIST} non-empty values of at most 512 bytes"
            )));
        }
    }
    let mut selectors = req
        .selectors
        .iter()
        .map(|s| Selector::parse(s).map_err(|e| bad(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    selectors.sort();
    selectors.dedup();
    for pattern in &req.may_act {
        let base = pattern.strip_suffix("/*").unwrap_or(pattern);
        if SpiffeId::parse(base).is_err()
            && !(pattern.ends_with("/*") && TrustDomain::parse(base).is_ok())
        {
            return Err(bad(format!(
                "may_act {pattern:?} is not a SPIFFE ID or a SPIFFE ID prefix ending in /*"
            )));
        }
    }
    let max = state.settings.jwt_max_ttl;
    let ttl = req.ttl_seconds.map(Duration::from_secs);
    let max_ttl = req.max_ttl_seconds.map(Duration::from_secs);
    for (name, v) in [("ttl", ttl), ("max_ttl", max_ttl)] {
        if v.is_some_and(|d| d.is_zero() || d > max) {
            return Err(bad(format!(
                "{name} must be above zero and at most the server's tokens.max_ttl ({}s)",
                max.as_secs()
            )));
        }
    }
    if let (Some(t), Some(m)) = (ttl, max_ttl) {
        if t > m {
            return Err(bad("ttl must not exceed max_ttl".into()));
        }
    }
    let parent = match &req.parent {
        Some(p) => {
            let id = SpiffeId::parse(p).map_err(|e| bad(format!("parent {p:?}: {e}")))?;
            if id.trust_domain() != &state.settings.trust_domain {
                return Err(bad(format!(
                    "parent {id} is not in this server's trust domain {}",
                    state.settings.trust_domain
                )));
            }
            Some(id)
        }
        // Where the server has a default node (`lanyard dev`), an entry made
        // only of kernel-attested `unix:` selectors belongs to its agent.
        None if req.issuer.is_none() && selectors.iter().all(|s| s.kind() == "unix") => {
            state.settings.default_parent.clone()
        }
        None => None,
    };
    if parent.is_some() && req.issuer.is_some() {
        return Err(bad("an entry is either served by a node agent (parent) or matched in token exchange (issuer), not both".into()));
    }
    if parent.is_none() && selectors.iter().any(|s| s.kind() == "unix") {
        return Err(bad("unix: selectors come from a node agent's kernel attestation: give the entry a parent node (--parent spiffe://TD/lanyard/node/ID)".into()));
    }
    for dns in &req.dns_names {
        let ok = dns.len() <= 253
            && dns.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(bad(format!("dns_names: {dns:?} is not a DNS name")));
        }
    }
    let mut scopes = req.scopes;
    scopes.sort();
    scopes.dedup();
    Ok(Entry {
        id,
        spiffe_id,
        tenant,
        issuer: req.issuer,
        parent,
        dns_names: req.dns_names,
        selectors,
        audiences: req.audiences,
        ttl,
        max_ttl,
        scopes,
        may_act: req.may_act,
        admin: req.admin,
        created_at: state.clock.unix_seconds(),
    })
}

/// `GET /admin/v1/entries?tenant=T`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryFilter {
    tenant: Option<String>,
}

/// `GET /admin/v1/entries`.
pub async fn list_entries(
    state: St,
    _admin: Admin,
    Query(f): Query<EntryFilter>,
) -> Result<Response, ApiError> {
    let index = state.registry.entries();
    let entries: Vec<&Entry> = index
        .iter()
        .map(|e| e.as_ref())
        .filter(|e| f.tenant.as_deref().is_none_or(|t| e.tenant.as_str() == t))
        .collect();
    Ok(Json(serde_json::json!({ "entries": entries })).into_response())
}

/// `GET /admin/v1/entries/{id}`.
pub async fn show_entry(
    state: St,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let index = state.registry.entries();
    let entry = index
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("entry {id:?}")))?;
    Ok(Json(entry.as_ref()).into_response())
}

/// `POST /admin/v1/entries`.
pub async fn create_entry(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<EntryRequest>,
) -> Result<Response, ApiError> {
    let entry = build_entry(&state, crate::correlation::new_id(), req, &cid.0).await?;
    let entry = save_entry(&state, &admin, &cid.0, entry, false).await?;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

/// `PUT /admin/v1/entries/{id}`.
pub async fn update_entry(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(id): Path<String>,
    Body(req): Body<EntryRequest>,
) -> Result<Response, ApiError> {
    let created_at = state
        .registry
        .entries()
        .get(&id)
        .map(|e| e.created_at)
        .ok_or_else(|| ApiError::NotFound(format!("entry {id:?}")))?;
    let mut entry = build_entry(&state, id, req, &cid.0).await?;
    entry.created_at = created_at;
    let entry = save_entry(&state, &admin, &cid.0, entry, true).await?;
    Ok(Json(entry).into_response())
}

/// Refuses an entry that would make identities ambiguous, then stores it
/// (create or replace) with its audit event and refreshes this replica.
async fn save_entry(
    state: &AppState,
    admin: &Admin,
    cid: &str,
    entry: Entry,
    replace: bool,
) -> Result<Entry, ApiError> {
    if let Some(existing) = state.registry.entries().conflict(&entry) {
        return Err(ApiError::Conflict(format!(
            "entry {} already has the same issuer and selectors (it grants {}); update it, or make the selectors differ",
            existing.id, existing.spiffe_id
        )));
    }
    let action = if replace {
        "entry.update"
    } else {
        "entry.create"
    };
    let subject = format!("{} {}", entry.id, entry.spiffe_id);
    let draft = audit(
        state,
        cid,
        &admin.actor,
        action,
        &subject,
        Some(entry.tenant.as_str()),
    );
    let stored = if replace {
        state.store.update_entry(entry.clone(), draft).await
    } else {
        state.store.create_entry(entry.clone(), draft).await
    };
    stored.map_err(|e| ApiError::from_store(e, cid))?;
    refresh(state).await;
    Ok(entry)
}

/// `DELETE /admin/v1/entries/{id}`.
pub async fn delete_entry(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = state
        .registry
        .entries()
        .get(&id)
        .map(|e| e.tenant.to_string());
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "entry.delete",
        &id,
        tenant.as_deref(),
    );
    state
        .store
        .delete_entry(&id, draft)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    refresh(&state).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- revocations ----

/// Kinds of revocation.
pub const REVOCATION_KINDS: [&str; 6] = [
    "jti",
    "spiffe-id",
    "k8s-sa-uid",
    "k8s-pod-uid",
    "entry",
    "subject",
];

/// `POST /admin/v1/revocations` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    kind: String,
    value: String,
    reason: String,
    #[serde(default)]
    until: Option<i64>,
}

/// `POST /admin/v1/revocations`: takes effect on this replica before the answer.
pub async fn create_revocation(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<RevokeRequest>,
) -> Result<Response, ApiError> {
    if !REVOCATION_KINDS.contains(&req.kind.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "kind {:?} is not one of {}",
            req.kind,
            REVOCATION_KINDS.join(", ")
        )));
    }
    if req.value.is_empty()
        || req.value.len() > 512
        || req.reason.trim().is_empty()
        || req.reason.len() > 1024
    {
        return Err(ApiError::BadRequest(
            "value (1..=512 bytes) and a reason (1..=1024 bytes) are required".into(),
        ));
    }
    let now = state.clock.unix_seconds();
    if req.until.is_some_and(|u| u <= now) {
        return Err(ApiError::BadRequest("until is in the past".into()));
    }
    let tenant = (req.kind == "entry")
        .then(|| {
            state
                .registry
                .entries()
                .get(&req.value)
                .map(|e| e.tenant.to_string())
        })
        .flatten();
    let rev = Revocation {
        kind: req.kind,
        value: req.value,
        reason: req.reason,
        until: req.until,
        created_at: now,
        actor: admin.actor.clone(),
    };
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "revoke",
        &format!("{} {}", rev.kind, rev.value),
        tenant.as_deref(),
    );
    state
        .store
        .create_revocation(rev.clone(), draft)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    refresh(&state).await;
    tracing::info!(kind = %rev.kind, actor = %admin.actor, "revocation recorded");
    Ok((StatusCode::CREATED, Json(rev)).into_response())
}

/// `GET /admin/v1/revocations`.
pub async fn list_revocations(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let rows = state
        .store
        .list_revocations(state.clock.unix_seconds())
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    Ok(Json(serde_json::json!({ "revocations": rows })).into_response())
}

// ---- explain ----

/// `POST /admin/v1/explain` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    subject_token: String,
    #[serde(default)]
    actor_token: Option<String>,
    #[serde(default)]
    audience: Vec<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// `POST /admin/v1/explain`: the whole decision, step by step, issuing nothing.
pub async fn explain(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<ExplainRequest>,
) -> Result<Response, ApiError> {
    let request = ExchangeRequest {
        subject_token: req.subject_token,
        actor_token: req.actor_token,
        audiences: if req.audience.is_empty() {
            vec![state.settings.issuer.clone()]
        } else {
            req.audience
        },
        scope: req.scope.map(|s| {
            s.split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        }),
        as_access_token: false,
        tenant: req.tenant,
        ttl: None,
    };
    let mut trace = Trace::recording();
    let mut facts = Facts::default();
    let result = decide(&state, &request, &mut trace, &mut facts).await;
    let (decision, reason) = match &result {
        Ok(i) => (
            "allow",
            format!("would issue {} for tenant {}", i.spiffe_id, i.tenant),
        ),
        Err(d) => ("deny", d.to_string()),
    };
    let mut draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "explain",
        facts.subject.as_deref().unwrap_or("-"),
        facts.tenant.as_deref(),
    );
    draft.reason = format!("{decision}: {reason}");
    draft.evidence_digest = facts.digest;
    state
        .store
        .append_audit(draft)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    Ok(
        Json(serde_json::json!({ "decision": decision, "reason": reason, "steps": trace.steps }))
            .into_response(),
    )
}

// ---- nodes and join tokens ----

/// `POST /admin/v1/jointokens` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenRequest {
    node_id: String,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    selectors: Vec<String>,
}

/// `POST /admin/v1/jointokens`: a one-time node bootstrap token. The token
/// is in this answer only; the store keeps its SHA-256.
pub async fn create_join_token(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<JoinTokenRequest>,
) -> Result<Response, ApiError> {
    let max = state.settings.join_token_max_ttl;
    let ttl = Duration::from_secs(req.ttl_seconds.unwrap_or(600));
    if ttl.is_zero() || ttl > max {
        return Err(ApiError::BadRequest(format!(
            "ttl must be above zero and at most node_api.join_token_max_ttl ({}s)",
            max.as_secs()
        )));
    }
    if req.selectors.len() > MAX_LIST {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_LIST} selectors"
        )));
    }
    for s in &req.selectors {
        Selector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let td = &state.settings.trust_domain;
    let now = state.clock.unix_seconds();
    let (token, row) =
        crate::node_api::new_join_token(td, &req.node_id, req.selectors, now, ttl, &admin.actor)
            .map_err(ApiError::BadRequest)?;
    let spiffe_id =
        crate::node_api::node_spiffe_id(td, &row.node_id).map_err(ApiError::BadRequest)?;
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "jointoken.create",
        &format!("jointoken {} for {spiffe_id}", row.id),
        None,
    );
    state
        .store
        .create_join_token(row.clone(), draft)
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    let roots: Vec<String> = state
        .ca
        .current()
        .roots
        .iter()
        .map(|r| pem_cert(r))
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "id": row.id,
            "token": token,
            "node_id": row.node_id,
            "spiffe_id": spiffe_id.to_string(),
            "expires_at": row.expires_at,
            "trust_domain": td.to_string(),
            "trust_bundle_pem": roots.concat(),
        })),
    )
        .into_response())
}

fn pem_cert(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// `GET /admin/v1/jointokens` (hashes are never shown).
pub async fn list_join_tokens(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let rows = state
        .store
        .list_join_tokens()
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    Ok(Json(serde_json::json!({ "join_tokens": rows })).into_response())
}

/// `GET /admin/v1/nodes`.
pub async fn list_nodes(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let rows = state
        .store
        .list_nodes()
        .await
        .map_err(|e| ApiError::from_store(e, &cid.0))?;
    Ok(Json(serde_json::json!({ "nodes": rows })).into_response())
}

/// `GET /admin/v1/ca`: the X.509 CAs (roots and intermediates).
pub async fn list_cas(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let cas = state.ca.list().await.map_err(|e| {
        tracing::error!(correlation_id = %cid.0, error = %e, "listing CAs failed");
        ApiError::Internal
    })?;
    Ok(Json(serde_json::json!({ "cas": cas })).into_response())
}
