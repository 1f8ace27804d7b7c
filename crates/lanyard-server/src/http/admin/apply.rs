//! `POST /admin/v1/entries/apply` (`lanyard entry apply -f FILE`): a list of
//! entries a scope should have, validated as a whole, planned by
//! [`lanyard_core::entry::apply::plan`], then applied in transactions of
//! [`BATCH`] changes, each with one audit event per change.
//!
//! The answer streams one JSON object per line (`application/x-ndjson`), so
//! a large file shows progress: `{"plan": counts}` first, then (dry run)
//! one `{"step": …}` per change, or (apply) `{"applied": n, "total": t}`
//! after each committed batch, and last `{"done": counts}` or
//! `{"error": {"message", "applied"}}`. Anything wrong with the file is a
//! plain 400 before anything is written.

use std::collections::HashSet;

use axum::body::Body as HttpBody;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use lanyard_core::entry::apply::{plan, Desired, EntrySpec, PruneScope, Step, MAX_APPLY};
use lanyard_core::TenantId;
use lanyard_store::EntryBatch;
use serde::Deserialize;
use serde_json::json;

use super::entries::Lookup;
use crate::error::ApiError;
use crate::http::admin::{audit, refresh};
use crate::http::extract::Admin;
use crate::state::{AppState, CorrelationId};

/// Changes per transaction.
pub const BATCH: usize = 1000;

/// Largest apply body (an admin-only route; 100,000 entries are ~30 MB).
pub const MAX_APPLY_BYTES: usize = 64 * 1024 * 1024;

/// The route's body limit.
pub fn body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_APPLY_BYTES)
}

/// The request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// The entries the scope should have.
    pub entries: Vec<EntrySpec>,
    /// Only this tenant: entries without a tenant get it, others are refused.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Delete entries of the scope (`tenant`, or the tenants the file
    /// names) that the file does not list.
    #[serde(default)]
    pub prune: bool,
    /// Plan only.
    #[serde(default)]
    pub dry_run: bool,
}

fn second<A, B>(pair: &(A, B)) -> &B {
    &pair.1
}

fn line(v: &serde_json::Value) -> Result<axum::body::Bytes, std::convert::Infallible> {
    let mut out = v.to_string().into_bytes();
    out.push(b'\n');
    Ok(axum::body::Bytes::from(out))
}

fn counts(plan: &lanyard_core::entry::apply::Plan) -> serde_json::Value {
    json!({
        "create": plan.count("create"),
        "update": plan.count("update"),
        "delete": plan.count("delete"),
        "unchanged": plan.count("unchanged"),
    })
}

fn step_json(step: &Step) -> serde_json::Value {
    let e = step.entry();
    json!({
        "action": step.action(),
        "id": e.id,
        "spiffe_id": e.spiffe_id.to_string(),
        "tenant": e.tenant.as_str(),
    })
}

/// `POST /admin/v1/entries/apply`.
pub async fn apply_entries(
    State(state): State<AppState>,
    admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    body: Result<axum::Json<ApplyRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let req = match body {
        Ok(axum::Json(r)) => r,
        Err(r) if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_APPLY_BYTES,
            })
        }
        Err(r) => return Err(ApiError::BadRequest(r.body_text())),
    };
    if req.entries.len() > MAX_APPLY {
        return Err(ApiError::BadRequest(format!(
            "{} entries in one apply; at most {MAX_APPLY} (split the file)",
            req.entries.len()
        )));
    }
    let scope = match &req.tenant {
        Some(t) => Some(TenantId::parse(t).map_err(|e| {
            ApiError::BadRequest(format!("tenant {}: {e}", lanyard_core::text::shown(t, 64)))
        })?),
        None => None,
    };
    if let Some(t) = &scope {
        super::require_tenant(&state, t.as_str(), &cid.0).await?;
    }
    let mut drafts = Vec::with_capacity(req.entries.len());
    for (i, spec) in req.entries.into_iter().enumerate() {
        let (id, draft) = spec
            .into_draft(scope.as_ref())
            .map_err(|e| ApiError::BadRequest(format!("entry #{}: {e}", i + 1)))?;
        drafts.push((id, draft));
    }
    let refs: Vec<&lanyard_core::entry::validate::EntryDraft> = drafts.iter().map(second).collect();
    let lookup = Lookup::load(&state, refs, &cid).await?;
    let mut desired = Vec::with_capacity(drafts.len());
    let mut tenants = HashSet::new();
    for (i, (id, draft)) in drafts.into_iter().enumerate() {
        let named = id.is_some();
        let id = id.unwrap_or_else(crate::correlation::new_id);
        let entry = lookup
            .validate(&state, id, draft)
            .map_err(|e| ApiError::BadRequest(format!("entry #{}: {e}", i + 1)))?;
        tenants.insert(entry.tenant.clone());
        desired.push(Desired { entry, named });
    }
    let prune = match (req.prune, scope) {
        (false, _) => PruneScope::None,
        (true, Some(t)) => PruneScope::Tenants(HashSet::from([t])),
        (true, None) => PruneScope::Tenants(tenants),
    };
    let index = state.registry.entries();
    let plan = plan(&index, desired, &prune).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<serde_json::Value>(64);
    let dry_run = req.dry_run;
    let actor = admin.actor.clone();
    tokio::spawn(async move {
        let _ = tx.send(json!({ "plan": counts(&plan) })).await;
        if dry_run {
            for step in plan
                .steps
                .iter()
                .filter(|s| !matches!(s, Step::Unchanged(_)))
            {
                if tx.send(json!({ "step": step_json(step) })).await.is_err() {
                    return;
                }
            }
            let _ = tx
                .send(json!({ "done": counts(&plan), "dry_run": true }))
                .await;
            return;
        }
        let changes: Vec<&Step> = plan
            .steps
            .iter()
            .filter(|s| !matches!(s, Step::Unchanged(_)))
            .collect();
        let total = changes.len();
        let mut applied = 0;
        let mut revision = None;
        for chunk in changes.chunks(BATCH) {
            let mut batch = EntryBatch::default();
            let mut audits = Vec::with_capacity(chunk.len());
            for step in chunk {
                let e = step.entry();
                let action = match step {
                    Step::Create(e) => {
                        batch.create.push(e.clone());
                        "entry.create"
                    }
                    Step::Update { after, .. } => {
                        batch.update.push(after.clone());
                        "entry.update"
                    }
                    Step::Delete(e) => {
                        batch.delete.push(e.id.clone());
                        "entry.delete"
                    }
                    Step::Unchanged(_) => continue,
                };
                let mut draft = audit(
                    &state,
                    &cid.0,
                    &actor,
                    action,
                    &format!("{} {}", e.id, e.spiffe_id),
                    Some(e.tenant.as_str()),
                );
                draft.reason = "entry apply".into();
                audits.push(draft);
            }
            match state.store.apply_entries(batch, audits).await {
                Ok(r) => {
                    applied += chunk.len();
                    revision = Some(r);
                    let _ = tx
                        .send(json!({ "applied": applied, "total": total, "revision": r }))
                        .await;
                }
                Err(e) => {
                    let message = ApiError::from_store(e, &cid.0).to_string();
                    refresh(&state).await;
                    let _ = tx
                        .send(json!({ "error": {
                            "message": format!("{message}; {applied} of {total} changes were applied (apply the file again to finish)"),
                            "applied": applied,
                        }}))
                        .await;
                    return;
                }
            }
        }
        refresh(&state).await;
        let mut done = counts(&plan);
        if let (Some(obj), Some(r)) = (done.as_object_mut(), revision) {
            obj.insert("revision".into(), json!(r));
        }
        let _ = tx.send(json!({ "done": done, "dry_run": false })).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        Some((line(&v), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        HttpBody::from_stream(stream),
    )
        .into_response())
}
