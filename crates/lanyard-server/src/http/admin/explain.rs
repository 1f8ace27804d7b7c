//! `/admin/v1/explain`: the whole decision for a token, step by step,
//! issuing nothing (and audited).

use serde::Deserialize;

use crate::exchange::ExchangeRequest;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::error::ApiError;
use crate::http::extract::{Admin, Body};
use crate::state::{AppState, CorrelationId};

type St = State<AppState>;

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
        subject_token: req.subject_token.trim_ascii().to_owned(),
        actor_token: req.actor_token.map(|t| t.trim_ascii().to_owned()),
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
        broker_role: None,
    };
    let explained = state
        .exchange
        .explain(&request, &cid.0, &admin.actor)
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(Json(serde_json::json!({
        "decision": explained.decision.as_str(),
        "reason": explained.reason,
        "steps": explained.steps,
    }))
    .into_response())
}
