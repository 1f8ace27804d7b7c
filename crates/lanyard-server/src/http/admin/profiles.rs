//! `/admin/v1/audience-profiles`: how tokens for one audience are issued
//! (signing algorithm, subject template), for every tenant, one tenant or one
//! entry. The rules are in [`lanyard_core::audience`]; every change is
//! audited with the change.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lanyard_core::audience::{validate_audience, Variable};
use lanyard_core::{AudienceProfile, SubjectTemplate, TenantId};
use lanyard_jose::Algorithm;
use serde::Deserialize;

use crate::error::ApiError;
use crate::http::admin::{audit, refresh, require_tenant};
use crate::http::extract::{Admin, Body, StoreResultExt as _};
use crate::state::{AppState, CorrelationId};

type St = axum::extract::State<AppState>;

/// The audience Azure Entra federated identity credentials expect.
pub const AZURE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// `POST /admin/v1/audience-profiles` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProfile {
    audience: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    entry: Option<String>,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    subject_template: Option<String>,
}

/// `GET /admin/v1/audience-profiles?tenant=T`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFilter {
    tenant: Option<String>,
}

/// `GET /admin/v1/audience-profiles`.
pub async fn list_profiles(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Query(f): Query<ProfileFilter>,
) -> Result<Response, ApiError> {
    let profiles: Vec<AudienceProfile> = state
        .store
        .list_audience_profiles()
        .await
        .api(&cid)?
        .into_iter()
        .filter(|p| {
            f.tenant
                .as_deref()
                .is_none_or(|t| p.tenant.as_ref().is_none_or(|pt| pt.as_str() == t))
        })
        .collect();
    Ok(Json(serde_json::json!({ "audience_profiles": profiles })).into_response())
}

/// `POST /admin/v1/audience-profiles`.
pub async fn create_profile(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Body(req): Body<CreateProfile>,
) -> Result<Response, ApiError> {
    let bad = ApiError::BadRequest;
    validate_audience(&req.audience).map_err(|e| bad(format!("audience: {e}")))?;
    if req.audience == state.settings.issuer {
        return Err(bad(format!(
            "audience {} is Lanyard itself; tokens for Lanyard always name the SPIFFE ID",
            req.audience
        )));
    }
    let algorithm = req
        .algorithm
        .as_deref()
        .map(|a| {
            a.parse::<Algorithm>()
                .map_err(|_| bad(format!("algorithm {a:?}: use ES256 or RS256")))
        })
        .transpose()?;
    let algorithms = state.keys.algorithms();
    if let Some(alg) = algorithm {
        if !algorithms.contains(&alg) {
            return Err(bad(format!(
                "algorithm {alg}: this server has no {alg} key; add it to keys.algorithms (now {:?})",
                algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>()
            )));
        }
    }
    let effective = algorithm.or_else(|| algorithms.first().copied());
    if req.audience == AZURE_AUDIENCE && effective != Some(Algorithm::Rs256) {
        return Err(bad(format!(
            "audience {AZURE_AUDIENCE}: Azure Entra accepts only RS256-signed federated tokens; pass --algorithm RS256"
        )));
    }
    let template = req
        .subject_template
        .as_deref()
        .map(SubjectTemplate::parse)
        .transpose()
        .map_err(|e| bad(format!("subject_template: {e}")))?;
    let mut tenant = req
        .tenant
        .as_deref()
        .map(|t| TenantId::parse(t).map_err(|e| bad(format!("tenant {t:?}: {e}"))))
        .transpose()?;
    if let Some(id) = &req.entry {
        let entries = state.registry.entries();
        let entry = entries.get(id).ok_or_else(|| {
            bad(format!(
                "entry {id:?} does not exist; see `lanyard entry list`"
            ))
        })?;
        if tenant.as_ref().is_some_and(|t| *t != entry.tenant) {
            return Err(bad(format!(
                "entry {id} is in tenant {}, not {}",
                entry.tenant,
                tenant.as_ref().map(TenantId::as_str).unwrap_or("")
            )));
        }
        if template.as_ref().is_some_and(|t| t.uses(Variable::Role)) && entry.role.is_none() {
            return Err(bad(format!(
                "the subject template uses {{role}} but entry {id} has no role; set one with `lanyard entry update {id} --role NAME`"
            )));
        }
        tenant = Some(entry.tenant.clone());
    }
    if let Some(t) = &tenant {
        require_tenant(&state, t.as_str(), &cid.0).await?;
    }
    let profile = AudienceProfile {
        id: crate::correlation::new_id(),
        audience: req.audience,
        tenant,
        entry: req.entry,
        algorithm: algorithm.map(|a| a.as_str().to_owned()),
        subject_template: template,
        created_at: state.clock.unix_seconds(),
    };
    profile.check().map_err(bad)?;
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "audience_profile.create",
        &describe(&profile),
        profile.tenant.as_ref().map(TenantId::as_str),
    );
    state
        .store
        .create_audience_profile(profile.clone(), draft)
        .await
        .api(&cid)?;
    refresh(&state).await;
    tracing::info!(profile = %profile.id, audience = %profile.audience, actor = %admin.actor, "audience profile added");
    Ok((StatusCode::CREATED, Json(profile)).into_response())
}

/// `DELETE /admin/v1/audience-profiles/{id}`.
pub async fn delete_profile(
    state: St,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let existing = state.registry.profiles();
    let found = existing.iter().find(|p| p.id == id).cloned();
    let subject = found
        .as_deref()
        .map_or_else(|| format!("profile {id}"), describe);
    let tenant = found
        .as_ref()
        .and_then(|p| p.tenant.as_ref())
        .map(TenantId::as_str);
    let draft = audit(
        &state,
        &cid.0,
        &admin.actor,
        "audience_profile.delete",
        &subject,
        tenant,
    );
    state
        .store
        .delete_audience_profile(&id, draft)
        .await
        .api(&cid)?;
    refresh(&state).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What the audit event names: the profile, its audience, scope and effect.
fn describe(p: &AudienceProfile) -> String {
    format!(
        "profile {} aud={} scope={} alg={} sub={}",
        p.id,
        p.audience,
        p.scope(),
        p.algorithm.as_deref().unwrap_or("default"),
        p.subject_template
            .as_ref()
            .map_or("spiffe-id", SubjectTemplate::as_str)
    )
}
