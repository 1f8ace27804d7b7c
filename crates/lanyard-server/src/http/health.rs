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
    if problems.is_empty() {
        (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready" })),
        )
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
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
