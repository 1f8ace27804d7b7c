//! `/admin/v1/entries`: registration entries (selectors -> SPIFFE ID). What
//! an entry may say is decided by `lanyard_core::entry::validate`; this
//! module looks up what that needs and stores the result.

use std::collections::HashMap;

use lanyard_attest::{IssuerConfig, TenantBinding};
use lanyard_core::entry::validate::{EntryContext, EntryDraft, IssuerBinding};
use lanyard_core::Entry;
use serde::Deserialize;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::error::ApiError;
use crate::http::admin::{audit, refresh};
use crate::http::extract::{Admin, Body, StoreResultExt as _};
use crate::state::{AppState, CorrelationId};

type St = State<AppState>;

/// What entry validation looks up in the store, read once per request
/// (one apply file may name thousands of entries of a few tenants).
pub(super) struct Lookup {
    tenants: HashMap<String, bool>,
    issuers: HashMap<String, IssuerConfig>,
    federated: Vec<lanyard_core::entry::validate::Federated>,
}

impl Lookup {
    pub(super) async fn load<'a>(
        state: &AppState,
        drafts: impl IntoIterator<Item = &'a EntryDraft>,
        cid: &CorrelationId,
    ) -> Result<Self, ApiError> {
        let mut tenants = HashMap::new();
        let mut wants_issuers = false;
        let mut wants_grants = false;
        let mut wants_federation = false;
        for d in drafts {
            wants_issuers |= d.issuer.is_some();
            wants_grants |= !d.grants.is_empty();
            wants_federation |= !d.federates_with.is_empty()
                || d.selectors.iter().any(|s| s.starts_with("spiffe:"));
            if tenants.contains_key(&d.tenant) {
                continue;
            }
            let exists = match lanyard_core::TenantId::parse(&d.tenant) {
                Ok(t) => state
                    .store
                    .fetch_tenant(t.as_str())
                    .await
                    .api(cid)?
                    .is_some(),
                // The rules name the bad tenant.
                Err(_) => true,
            };
            tenants.insert(d.tenant.clone(), exists);
        }
        if wants_grants {
            // Another replica may have added the role a moment ago: catch up
            // before the grants are checked (one query when nothing changed).
            state.broker.refresh().await.api(cid)?;
        }
        let mut issuers = HashMap::new();
        if wants_issuers {
            for r in state.store.list_issuers().await.api(cid)? {
                if let Ok(c) = serde_json::from_str::<IssuerConfig>(&r.config) {
                    issuers.insert(r.name, c);
                }
            }
        }
        // Only drafts that name a federated trust domain need the set; one
        // added a moment ago on another replica counts.
        let federated = if wants_federation {
            crate::federation::FederatedSet::load(&*state.store)
                .await
                .api(cid)?
                .for_entries()
        } else {
            Vec::new()
        };
        Ok(Self {
            tenants,
            issuers,
            federated,
        })
    }

    /// Validates `draft` as entry `id` by the core rules, then checks the
    /// broker grants exist.
    pub(super) fn validate(
        &self,
        state: &AppState,
        id: String,
        draft: EntryDraft,
    ) -> Result<Entry, String> {
        let issuer = match draft.issuer.as_ref().and_then(|n| self.issuers.get(n)) {
            None => IssuerBinding::Unknown,
            Some(IssuerConfig {
                tenant: TenantBinding::Fixed(t),
                ..
            }) => IssuerBinding::Fixed(t),
            Some(_) => IssuerBinding::FromClaim,
        };
        let ctx = EntryContext {
            trust_domain: &state.settings.trust_domain,
            jwt_max_ttl: state.settings.limits.jwt_max_ttl,
            default_parent: state.settings.default_parent.as_ref(),
            tenant_exists: self.tenants.get(&draft.tenant).copied().unwrap_or(false),
            issuer,
            federated: &self.federated,
        };
        let entry = draft
            .validate(id, state.clock.unix_seconds(), &ctx)
            .map_err(|e| e.to_string())?;
        for grant in &entry.grants {
            state.broker.check_grant(grant)?;
        }
        Ok(entry)
    }
}

/// Validates one draft (create and update).
async fn build_entry(
    state: &AppState,
    id: String,
    draft: EntryDraft,
    cid: &str,
) -> Result<Entry, ApiError> {
    let lookup = Lookup::load(state, [&draft], &CorrelationId(cid.to_owned())).await?;
    lookup
        .validate(state, id, draft)
        .map_err(ApiError::BadRequest)
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
    Body(req): Body<EntryDraft>,
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
    Body(req): Body<EntryDraft>,
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
    stored.api(&CorrelationId(cid.to_owned()))?;
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
    state.store.delete_entry(&id, draft).await.api(&cid)?;
    refresh(&state).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
