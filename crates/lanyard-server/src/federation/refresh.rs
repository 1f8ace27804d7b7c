//! Fetching a peer's bundle and deciding whether to take it.
//!
//! A fetch follows the relationship's profile exactly (no fallback):
//! `https_spiffe` verifies the endpoint's X.509-SVID against the latest
//! bundle of the endpoint's trust domain (for a self-serving endpoint, the
//! bundle being refreshed: the bootstrap bundle first, then whatever was
//! last accepted, so the peer can rotate its CA) and requires the configured
//! endpoint SPIFFE ID; `https_web` verifies a Web PKI certificate against
//! the platform roots plus `federation.web_roots`.
//!
//! A fetched bundle replaces the held one only if it parses completely, is
//! not empty, names no other trust domain, and its `spiffe_sequence` does
//! not go backwards ([`accept`]). A refused bundle is audited and the held
//! one kept; so is the held one on any fetch failure, which shows in
//! `lanyard federation list`, `/readyz` and the metrics.

use std::sync::Arc;
use std::time::Duration;

use lanyard_ca::bundle::{Bundle, MAX_BUNDLE_BYTES};
use lanyard_core::{Decision, SpiffeId, TrustDomain};
use lanyard_spiffe_tls::{Authorizer, X509Material};
use lanyard_store::{AuditDraft, FederatedRow};

use super::{Domain, Endpoint, Profile, Status};
use crate::state::AppState;

/// Longest a fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Refresh interval when the peer's bundle has no (or no positive) hint.
pub const DEFAULT_HINT_SECS: i64 = 300;
/// Longest interval between refreshes, whatever the hint.
pub const MAX_INTERVAL_SECS: i64 = 86_400;
/// Interval for a relationship that has no bundle yet.
pub const NO_BUNDLE_RETRY_SECS: i64 = 60;
/// How often the refresh job looks for relationships that are due.
pub const TICK: Duration = Duration::from_secs(1);

/// Whether `next` may replace `current`: `Ok(true)` when it changes
/// something, `Ok(false)` when it is the bundle already held.
///
/// # Errors
/// Why it is refused (the held bundle stays).
pub fn accept(current: Option<&Bundle>, next: &Bundle) -> Result<bool, String> {
    let Some(cur) = current else {
        return Ok(true);
    };
    match (cur.sequence, next.sequence) {
        (Some(a), Some(b)) if b < a => Err(format!(
            "spiffe_sequence went backwards from {a} to {b}; keeping the bundle with sequence {a}"
        )),
        (Some(a), Some(b)) if a == b && !cur.same_keys(next) => Err(format!(
            "the keys changed but spiffe_sequence stayed at {a} (the spec requires it to change with the contents); keeping the bundle held"
        )),
        _ => Ok(!cur.same_keys(next) || cur.sequence != next.sequence),
    }
}

/// Seconds until the next refresh after one that fetched `hint`:
/// the peer's hint, at least `floor`, at most a day, less up to a tenth
/// (jitter, so replicas and peers do not refresh in lockstep).
pub fn interval(hint: Option<i64>, floor: Duration, jitter: u8) -> i64 {
    let floor = i64::try_from(floor.as_secs()).unwrap_or(1).max(1);
    let base = hint
        .filter(|h| *h > 0)
        .unwrap_or(DEFAULT_HINT_SECS)
        .clamp(floor, MAX_INTERVAL_SECS.max(floor));
    let less = base / 10 * i64::from(jitter) / 255;
    (base - less).max(floor)
}

fn jitter() -> u8 {
    let mut b = [0u8; 1];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[0]
}

/// The roots of one trust domain, for the `https_spiffe` client.
#[derive(Debug)]
struct Anchors(Arc<lanyard_spiffe_tls::Bundle>);

impl X509Material for Anchors {
    fn svid(&self) -> Result<Arc<lanyard_spiffe_tls::Svid>, lanyard_spiffe_tls::Error> {
        Err(lanyard_spiffe_tls::Error::SourceUnavailable(
            "a bundle endpoint client presents no certificate".into(),
        ))
    }

    fn bundle(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<Arc<lanyard_spiffe_tls::Bundle>>, lanyard_spiffe_tls::Error> {
        Ok((self.0.trust_domain() == trust_domain).then(|| self.0.clone()))
    }
}

/// The X.509 roots an `https_spiffe` endpoint's SVID must chain to: the
/// latest bundle of the endpoint SPIFFE ID's trust domain.
fn spiffe_anchors(state: &AppState, endpoint_id: &SpiffeId) -> Result<Vec<Vec<u8>>, String> {
    let td = endpoint_id.trust_domain();
    if td == &state.settings.trust_domain {
        return Ok(state.ca.current().roots.clone());
    }
    let set = state.registry.federated();
    let roots = set
        .get(td)
        .and_then(|d| d.bundle.as_ref())
        .map(|b| b.x509_authorities.clone())
        .unwrap_or_default();
    if roots.is_empty() {
        return Err(format!(
            "no X.509 bundle of trust domain {td} to verify the endpoint's SVID with; give the relationship a bootstrap bundle (--initial-bundle FILE, e.g. what `spire-server bundle show -format spiffe` prints there)"
        ));
    }
    Ok(roots)
}

/// Fetches the bundle of `td` from `endpoint` and parses it.
///
/// # Errors
/// `Err((message, refused))`: `refused` is true when the endpoint answered
/// with something that is not an acceptable bundle (audited), false for a
/// transport failure.
pub async fn fetch(
    state: &AppState,
    td: &TrustDomain,
    endpoint: &Endpoint,
) -> Result<Bundle, (String, bool)> {
    let transport = |m: String| (m, false);
    let endpoint_id = endpoint.validate().map_err(transport)?;
    let builder = reqwest::Client::builder()
        .https_only(true)
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("lanyard/", env!("CARGO_PKG_VERSION")));
    let client = match (endpoint.profile, endpoint_id) {
        (Profile::HttpsSpiffe, Some(id)) => {
            let roots = spiffe_anchors(state, &id).map_err(transport)?;
            let bundle = lanyard_spiffe_tls::Bundle::new(
                id.trust_domain().clone(),
                roots
                    .into_iter()
                    .map(rustls::pki_types::CertificateDer::from)
                    .collect(),
            )
            .map_err(|e| transport(e.to_string()))?;
            // A redirect target is held to the same SPIFFE ID (same config).
            let tls = lanyard_spiffe_tls::server_auth_client_config(
                Arc::new(Anchors(Arc::new(bundle))),
                Authorizer::exact([id]),
            )
            .map_err(|e| transport(e.to_string()))?;
            builder.use_preconfigured_tls(tls)
        }
        _ => {
            let mut b = builder;
            if !state.federation.web_roots.is_empty() {
                b = b.tls_certs_merge(state.federation.web_roots.iter().cloned());
            }
            b
        }
    };
    let client = client
        .build()
        .map_err(|e| transport(format!("building the HTTPS client: {e}")))?;
    let mut resp = client
        .get(&endpoint.url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| transport(describe(&e)))?;
    if !resp.status().is_success() {
        return Err(transport(format!(
            "the bundle endpoint answered HTTP {}",
            resp.status().as_u16()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport(format!("reading the bundle: {}", describe(&e))))?
    {
        if body.len() + chunk.len() > MAX_BUNDLE_BYTES {
            return Err((
                format!("the bundle endpoint sent more than {MAX_BUNDLE_BYTES} bytes"),
                true,
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Bundle::parse(td, &body).map_err(|e| (e.to_string(), true))
}

/// A reqwest error with its causes (the TLS reason is in a source).
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let more = s.to_string();
        if !out.contains(&more) {
            out.push_str(": ");
            out.push_str(&more);
        }
        src = s.source();
    }
    lanyard_core::text::shown(&out, 400)
}

/// What one refresh did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new bundle was stored.
    Updated,
    /// The peer serves the bundle already held.
    Unchanged,
    /// The peer's bundle was refused (audited); the held one stays.
    Refused,
    /// The fetch failed; the held bundle stays.
    Failed,
}

/// The result of [`refresh_domain`], as the admin API reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The trust domain.
    pub trust_domain: String,
    /// What happened.
    pub outcome: Outcome,
    /// The sequence held afterwards.
    pub sequence: i64,
    /// Why it failed or was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix seconds of the next scheduled refresh.
    pub next_refresh_at: i64,
}

fn draft(
    state: &AppState,
    cid: &str,
    actor: &str,
    action: &str,
    td: &TrustDomain,
    decision: Decision,
    reason: String,
) -> AuditDraft {
    AuditDraft {
        at_ms: crate::correlation::unix_millis(state.clock.now()),
        correlation_id: cid.to_owned(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        subject: td.id_string(),
        tenant: None,
        decision,
        reason,
        evidence_digest: None,
    }
}

/// Fetches `row`'s bundle now, stores it if acceptable, and records the
/// status. `actor` is `system:federation` for the job, the admin otherwise.
///
/// # Errors
/// Store errors (the fetch's own failures are the report's outcome).
pub async fn refresh_domain(
    state: &AppState,
    row: &FederatedRow,
    actor: &str,
    cid: &str,
) -> Result<Report, lanyard_store::StoreError> {
    let now = state.clock.unix_seconds();
    let domain = Domain::from_row(row).map_err(|detail| lanyard_store::StoreError::Invalid {
        what: "federated trust domain",
        detail,
    })?;
    let td = domain.trust_domain.clone();
    let mut status = domain.status.clone();
    status.last_attempt_at = Some(now);
    let Some(endpoint) = domain.endpoint.clone() else {
        return Ok(Report {
            trust_domain: td.to_string(),
            outcome: Outcome::Unchanged,
            sequence: domain.sequence,
            error: Some("this trust domain's bundle was set by hand; it has no bundle endpoint to refresh from".into()),
            next_refresh_at: 0,
        });
    };
    let floor = state.federation.refresh_floor;
    let fetched = fetch(state, &td, &endpoint).await;
    let (outcome, error, next_bundle) = match fetched {
        Ok(b) => match accept(domain.bundle.as_ref(), &b) {
            Ok(true) => (Outcome::Updated, None, Some(b)),
            Ok(false) => (Outcome::Unchanged, None, Some(b)),
            Err(why) => (Outcome::Refused, Some(why), None),
        },
        Err((why, true)) => (Outcome::Refused, Some(why), None),
        Err((why, false)) => (Outcome::Failed, Some(why), None),
    };
    let hint = next_bundle
        .as_ref()
        .and_then(|b| b.refresh_hint)
        .or_else(|| domain.bundle.as_ref().and_then(|b| b.refresh_hint));
    let mut every = interval(hint, floor, jitter());
    if domain.bundle.is_none() && next_bundle.is_none() {
        every = every.min(NO_BUNDLE_RETRY_SECS.max(i64::try_from(floor.as_secs()).unwrap_or(1)));
    }
    status.next_refresh_at = Some(now + every);
    let mut sequence = domain.sequence;
    let mut outcome = outcome;
    let mut error = error;
    if let (Outcome::Updated, Some(b)) = (&outcome, &next_bundle) {
        let (doc, seq) = b.to_stored();
        let audit = draft(
            state,
            cid,
            actor,
            "federation.bundle.update",
            &td,
            Decision::Allow,
            format!(
                "bundle of {td} from {} ({}): {}",
                endpoint.url,
                endpoint.profile.as_str(),
                b.summary()
            ),
        );
        let stored = state
            .store
            .put_bundle(
                td.as_str(),
                &doc,
                seq,
                None,
                Some(domain.sequence),
                now,
                audit,
            )
            .await?;
        if stored {
            sequence = seq;
            tracing::info!(trust_domain = %td, sequence = seq, url = %endpoint.url, "federated bundle updated");
        } else {
            outcome = Outcome::Failed;
            error = Some("another refresh stored a bundle meanwhile; this one was dropped".into());
        }
    }
    let audit_refusal = match (&outcome, &error) {
        (Outcome::Refused, Some(why)) => {
            tracing::warn!(trust_domain = %td, url = %endpoint.url, reason = %why, "federated bundle refused; keeping the one held");
            Some(draft(
                state,
                cid,
                actor,
                "federation.bundle.refuse",
                &td,
                Decision::Deny,
                format!("bundle from {} refused: {why}", endpoint.url),
            ))
        }
        (Outcome::Failed, Some(why)) => {
            tracing::warn!(trust_domain = %td, url = %endpoint.url, error = %why, "fetching the federated bundle failed; keeping the one held");
            None
        }
        _ => None,
    };
    match &error {
        None => {
            status.last_success_at = Some(now);
            status.last_error = None;
            status.failures = 0;
        }
        Some(e) => {
            status.last_error = Some(e.clone());
            status.failures = status.failures.saturating_add(1);
        }
    }
    state
        .metrics
        .federation_refresh(td.as_str(), &outcome, status.last_success_at);
    let text = serde_json::to_string(&status).unwrap_or_else(|_| "{}".into());
    state
        .store
        .set_federation_status(td.as_str(), &text, audit_refusal)
        .await?;
    if outcome == Outcome::Updated {
        crate::http::admin::refresh(state).await;
    }
    Ok(Report {
        trust_domain: td.to_string(),
        outcome,
        sequence,
        error,
        next_refresh_at: now + every,
    })
}

/// Refreshes every relationship that is due, on the replica holding the
/// `bundle_refresh` job; runs until the task is dropped.
pub async fn run(state: AppState) {
    let lease = crate::jobs::JobLease::new(
        "bundle_refresh",
        &crate::correlation::new_id(),
        30,
        state.store.clone(),
        state.clock.clone(),
    );
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // Every replica holds the set (reloaded on each federation change):
        // without a relationship there is nothing to read or claim.
        if state
            .registry
            .federated()
            .domains
            .values()
            .all(|d| d.endpoint.is_none())
        {
            continue;
        }
        let rows = match state.store.list_federated().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "federation: cannot list relationships; retrying");
                continue;
            }
        };
        let now = state.clock.unix_seconds();
        let due: Vec<&FederatedRow> = rows
            .iter()
            .filter(|r| !r.endpoint.is_empty())
            .filter(|r| {
                serde_json::from_str::<Status>(&r.status)
                    .ok()
                    .and_then(|s| s.next_refresh_at)
                    .is_none_or(|at| at <= now)
            })
            .collect();
        if due.is_empty() {
            continue;
        }
        match lease.claim().await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, job = lease.name(), "cannot claim the job's lease; not refreshing");
                continue;
            }
        }
        for row in due {
            if !lease.held() {
                break;
            }
            let cid = crate::correlation::new_id();
            if let Err(e) = refresh_domain(&state, row, "system:federation", &cid).await {
                tracing::warn!(trust_domain = %row.trust_domain, error = %e, "federation refresh could not record its result");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(seq: Option<u64>, kid: &str) -> Bundle {
        let (k, _) = lanyard_jose::SigningKey::generate(lanyard_jose::Algorithm::Es256)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut jwk = k.public_jwk();
        jwk.kid = Some(kid.into());
        jwk.use_ = Some("jwt-svid".into());
        Bundle {
            trust_domain: TrustDomain::parse("other.org").unwrap_or_else(|e| panic!("{e}")),
            x509_authorities: Vec::new(),
            jwt_authorities: vec![jwk],
            sequence: seq,
            refresh_hint: None,
        }
    }

    #[test]
    fn a_bundle_going_back_or_changing_under_one_sequence_is_refused() {
        let held = bundle(Some(5), "a");
        assert_eq!(accept(None, &held), Ok(true));
        assert_eq!(accept(Some(&held), &held.clone()), Ok(false));
        let newer = bundle(Some(6), "b");
        assert_eq!(accept(Some(&held), &newer), Ok(true));
        let older = bundle(Some(4), "c");
        let e = accept(Some(&held), &older).err().unwrap_or_default();
        assert!(e.contains("backwards from 5 to 4"), "{e}");
        let same_seq = bundle(Some(5), "d");
        let e = accept(Some(&held), &same_seq).err().unwrap_or_default();
        assert!(e.contains("stayed at 5"), "{e}");
        // Without sequences the newest fetch wins.
        assert_eq!(
            accept(Some(&bundle(None, "e")), &bundle(None, "f")),
            Ok(true)
        );
    }

    #[test]
    fn refreshes_follow_the_hint_within_the_floor_and_a_day() {
        let floor = Duration::from_secs(30);
        assert_eq!(interval(Some(600), floor, 0), 600);
        assert_eq!(interval(Some(600), floor, 255), 540);
        assert_eq!(interval(Some(1), floor, 0), 30);
        assert_eq!(interval(None, floor, 0), DEFAULT_HINT_SECS);
        assert_eq!(interval(Some(-5), floor, 0), DEFAULT_HINT_SECS);
        assert_eq!(interval(Some(i64::MAX), floor, 0), MAX_INTERVAL_SECS);
        assert!(interval(Some(31), floor, 255) >= 30);
    }
}
