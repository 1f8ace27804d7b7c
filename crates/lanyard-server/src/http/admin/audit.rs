//! `/admin/v1/audit`: the hash-chained audit log, its verification against
//! the stored head, and signed checkpoints.

use lanyard_store::audit::{verify_chain, GENESIS_HASH};
use lanyard_store::AuditQuery;
use serde::Deserialize;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::error::ApiError;
use crate::http::extract::{Admin, StoreResultExt as _};
use crate::state::{AppState, CorrelationId};

type St = State<AppState>;

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
    let events = state.store.query_audit(query).await.api(&cid)?;
    Ok(Json(serde_json::json!({ "events": events })).into_response())
}

/// `GET /admin/v1/audit/verify` query: a checkpoint's state to look for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyParams {
    /// A checkpoint's sequence number.
    at_seq: Option<i64>,
    /// The hash the checkpoint says the event at `at_seq` had.
    at_hash: Option<String>,
}

/// `GET /admin/v1/audit/verify[?at_seq=N&at_hash=H]`: recomputes the whole
/// chain up to the head read first (writers keep appending meanwhile),
/// checks that it reaches exactly where that head says (so
/// deleting the newest events is caught), and, given a checkpoint's state,
/// that the event at `at_seq` still has that hash (so a truncation, a
/// rollback to a backup, or a chain rewritten from an earlier point is
/// caught).
pub async fn verify_audit(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Query(q): Query<VerifyParams>,
) -> Result<Response, ApiError> {
    let (head_seq, head_hash) = state.store.fetch_audit_head().await.api(&cid)?;
    let (mut after, mut hash, mut total) = (0i64, GENESIS_HASH.to_owned(), 0usize);
    let mut at_found = None;
    let fail = |total: usize, seq: i64, problem: String| {
        Ok(Json(serde_json::json!({
            "ok": false, "verified": total, "first_broken_seq": seq, "problem": problem,
            "head_seq": head_seq,
        }))
        .into_response())
    };
    loop {
        let page = state
            .store
            .query_audit(AuditQuery {
                after,
                limit: 1000,
                ..AuditQuery::default()
            })
            .await
            .api(&cid)?;
        // The chain as of the head read above: events appended since (other
        // requests, other replicas) are after it and checked next time.
        let page: Vec<_> = page.into_iter().take_while(|e| e.seq <= head_seq).collect();
        let Some(last) = page.last() else { break };
        let last_seq = last.seq;
        if let Some(at) = q.at_seq {
            if let Some(e) = page.iter().find(|e| e.seq == at) {
                at_found = Some(e.hash.clone());
            }
        }
        match verify_chain(after, &hash, &page) {
            Ok(h) => hash = h,
            Err(b) => return fail(total, b.seq, b.why.to_owned()),
        }
        total += page.len();
        after = last_seq;
        if after >= head_seq {
            break;
        }
    }
    if after != head_seq || hash != head_hash {
        return fail(
            total,
            after + 1,
            format!(
                "the log ends at sequence {after} but its head names sequence {head_seq}: events were removed (or the head was changed)"
            ),
        );
    }
    if let Some(at) = q.at_seq {
        let want = q.at_hash.as_deref().unwrap_or("");
        match at_found {
            None => {
                return fail(
                    total,
                    at,
                    format!("the checkpoint covers sequence {at}, but the log ends at {after}: it was truncated or rolled back"),
                )
            }
            Some(h) if h != want => {
                return fail(
                    total,
                    at,
                    format!("event {at} no longer has the hash the checkpoint signed: the log was rewritten"),
                )
            }
            Some(_) => {}
        }
    }
    Ok(Json(serde_json::json!({
        "ok": true, "verified": total, "head_seq": head_seq, "head_hash": hash,
        "checkpoint_seq": q.at_seq,
    }))
    .into_response())
}

/// `GET /admin/v1/audit/checkpoints?limit=N`: the newest signed checkpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    limit: Option<i64>,
}

/// `GET /admin/v1/audit/checkpoints`.
pub async fn list_checkpoints(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
    Query(q): Query<CheckpointQuery>,
) -> Result<Response, ApiError> {
    let rows = state
        .store
        .list_audit_checkpoints(q.limit.unwrap_or(1))
        .await
        .api(&cid)?;
    Ok(Json(serde_json::json!({ "checkpoints": rows })).into_response())
}

/// `POST /admin/v1/audit/checkpoints`: signs a checkpoint of the log now.
pub async fn create_checkpoint(
    state: St,
    _admin: Admin,
    Extension(cid): Extension<CorrelationId>,
) -> Result<Response, ApiError> {
    let row = state.checkpoints.checkpoint().await.api(&cid)?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}
