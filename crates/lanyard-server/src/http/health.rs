//! Liveness, readiness and metrics.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use crate::state::AppState;

type St = axum::extract::State<AppState>;

/// `/healthz`: the process is up.
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `/readyz`: the store answers and signing keys are loaded.
pub async fn readyz(state: St) -> impl IntoResponse {
    let mut problems = Vec::new();
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: store unreachable");
        problems.push("store unreachable");
    }
    let published = state.keys.current();
    if state
        .keys
        .algorithms()
        .iter()
        .any(|alg| published.ring.signer(*alg).is_none())
    {
        problems.push("signing keys not loaded");
    }
    // A failing federation relationship does not make this replica unready
    // (it keeps the last good bundle), but readiness says so.
    let federation: Vec<serde_json::Value> = state
        .store
        .list_federated()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            let st: crate::federation::Status = serde_json::from_str(&r.status).ok()?;
            let err = st.last_error?;
            Some(serde_json::json!({
                "trust_domain": r.trust_domain,
                "last_error": err,
                "last_success_at": st.last_success_at,
                "failures": st.failures,
            }))
        })
        .collect();
    if problems.is_empty() {
        let mut body = serde_json::json!({ "status": "ready" });
        if let (false, Some(o)) = (federation.is_empty(), body.as_object_mut()) {
            o.insert("federation_failing".into(), federation.into());
        }
        (StatusCode::OK, Json(body))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "not ready", "problems": problems })),
        )
    }
}

/// `/metrics`: Prometheus text format.
pub async fn metrics(state: St) -> impl IntoResponse {
    let head = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.store.fetch_change_head(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|(_, r)| r);
    state
        .metrics
        .set_replication(state.registry.head().revision, head);
    state
        .metrics
        .set_verified_cache(state.registry.attestor().verified_cache_stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
