//! Token review (seed 002): who a bearer token proves to be, for integrators
//! that speak only Kubernetes' TokenReview (OpenBao's `auth/kubernetes`,
//! proxies, API servers' webhook authenticators).
//!
//! Two kinds of token are reviewed:
//! - Kubernetes service-account tokens from trusted `kubernetes` issuers
//!   (any number of clusters): `system:serviceaccount:NS:SA`, the
//!   service account's uid, Kubernetes' groups plus `lanyard:tenant:T` and
//!   `lanyard:cluster:C`;
//! - Lanyard JWT-SVIDs: the SPIFFE ID, `lanyard:tenant:T`, the entry id.
//!
//! Lanyard's revocations apply to both, so revoking a pod (or service
//! account) uid in Lanyard makes every TokenReview integrator refuse it.
//! A token that does not verify, is revoked, has no tenant or is not for
//! the asked audiences is reviewed as not authenticated, with a safe reason.

use lanyard_core::policy::{Principal, Trace};
use lanyard_core::{Denial, DenyReason, Evidence};
use serde::Serialize;

use crate::exchange::verify;
use crate::exchange::ExchangeService;

/// The audience of JWT-SVIDs that may call the TokenReview endpoint, under
/// the issuer URL: `<issuer>/tokenreview`.
pub const REVIEWER_AUDIENCE_SUFFIX: &str = "/tokenreview";

/// Kubernetes' `UserInfo` of an authenticated token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// `system:serviceaccount:NS:SA` or a SPIFFE ID.
    pub username: String,
    /// The service account's uid, or the entry id.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (`authentication.kubernetes.io/pod-name`, …).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

/// A review's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    /// Who the token is.
    pub user: UserInfo,
    /// The asked audiences the token is for (or the default one).
    pub audiences: Vec<String>,
    /// The tenant, for audit.
    pub tenant: String,
    /// The token's SHA-256, for audit.
    pub digest: String,
}

impl ExchangeService {
    /// Reviews `token` for `audiences` (none: the issuer's own audience for a
    /// Kubernetes token, the server's issuer URL for a JWT-SVID).
    ///
    /// # Errors
    /// A [`Denial`] saying why the token is not authenticated.
    pub async fn review(&self, token: &str, audiences: &[String]) -> Result<Reviewed, Denial> {
        let snap = self.snapshot_now();
        let own = verify::peek_issuer(token).as_deref() == Some(self.issuer_url());
        if own {
            let wanted: Vec<String> = if audiences.is_empty() {
                vec![self.issuer_url().to_owned()]
            } else {
                audiences.to_vec()
            };
            let mut last = None;
            for aud in &wanted {
                match verify::own_token(self.keys(), token, aud, snap.now()) {
                    Ok((evidence, carried)) => {
                        let entry = snap.entries.match_evidence(&evidence, false).chosen?;
                        let p = Principal {
                            evidence,
                            entry,
                            carried: Some(carried),
                        };
                        let tenant = snap.policy().authorize(&p, None, &mut Trace::for_audit())?;
                        let matched = token_audiences(token)
                            .into_iter()
                            .filter(|a| wanted.contains(a))
                            .collect();
                        let mut extra = std::collections::BTreeMap::new();
                        extra.insert("lanyard.io/entry".into(), vec![p.entry.id.clone()]);
                        if let Some(jti) = &p.evidence.jti {
                            extra.insert(
                                "authentication.kubernetes.io/credential-id".into(),
                                vec![format!("JTI={jti}")],
                            );
                        }
                        return Ok(Reviewed {
                            user: UserInfo {
                                username: p.entry.spiffe_id.to_string(),
                                uid: p.entry.id.clone(),
                                groups: vec![
                                    "system:authenticated".into(),
                                    format!("lanyard:tenant:{tenant}"),
                                ],
                                extra,
                            },
                            audiences: matched,
                            tenant: tenant.to_string(),
                            digest: p.evidence.digest,
                        });
                    }
                    Err(d) if d.reason == DenyReason::WrongAudience => last = Some(d),
                    Err(d) => return Err(d),
                }
            }
            return Err(last.unwrap_or_else(|| {
                Denial::new(
                    DenyReason::WrongAudience,
                    "no audience to review the token for",
                )
            }));
        }
        let evidence = snap.attestor.verify(token).await?;
        let matched = if audiences.is_empty() {
            token_audiences(token)
        } else {
            token_audiences(token)
                .into_iter()
                .filter(|a| audiences.contains(a))
                .collect()
        };
        if matched.is_empty() {
            return Err(Denial::new(
                DenyReason::WrongAudience,
                "the token is for none of the audiences asked for",
            ));
        }
        snap.revocations.check_keys(
            evidence
                .revocation_keys
                .iter()
                .map(|k| (k.kind, k.value.as_str())),
            snap.now(),
        )?;
        let user = service_account_user(&evidence)?;
        let tenant = evidence
            .tenant
            .as_ref()
            .map(ToString::to_string)
            .ok_or_else(|| {
                Denial::new(
                    DenyReason::MissingTenant,
                    format!("issuer {} binds no tenant for this token", evidence.issuer),
                )
            })?;
        let mut user = user;
        user.groups.push(format!("lanyard:tenant:{tenant}"));
        Ok(Reviewed {
            user,
            audiences: matched,
            tenant,
            digest: evidence.digest,
        })
    }
}

/// The Kubernetes user of service-account evidence (`k8s:` selectors).
///
/// # Errors
/// [`DenyReason::UnknownIssuer`] for evidence of another kind of issuer.
fn service_account_user(ev: &Evidence) -> Result<UserInfo, Denial> {
    let value = |key: &str| {
        ev.selectors
            .iter()
            .find(|s| s.kind() == "k8s" && s.key() == key)
            .map(|s| s.value().to_owned())
    };
    let (Some(ns), Some(sa), Some(uid)) = (value("ns"), value("sa"), value("sa-uid")) else {
        return Err(Denial::new(
            DenyReason::UnknownIssuer,
            format!(
                "issuer {} is not a Kubernetes cluster; only service-account tokens and Lanyard JWT-SVIDs are reviewed",
                ev.issuer
            ),
        ));
    };
    let mut groups = vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".to_owned(),
    ];
    let mut extra = std::collections::BTreeMap::new();
    if let Some(c) = value("cluster") {
        groups.push(format!("lanyard:cluster:{c}"));
        extra.insert("lanyard.io/cluster".into(), vec![c]);
    }
    for (key, name) in [
        ("pod-name", "authentication.kubernetes.io/pod-name"),
        ("pod-uid", "authentication.kubernetes.io/pod-uid"),
        ("node-name", "authentication.kubernetes.io/node-name"),
        ("node-uid", "authentication.kubernetes.io/node-uid"),
    ] {
        if let Some(v) = value(key) {
            extra.insert(name.into(), vec![v]);
        }
    }
    if let Some(jti) = &ev.jti {
        extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            vec![format!("JTI={jti}")],
        );
    }
    Ok(UserInfo {
        username: format!("system:serviceaccount:{ns}:{sa}"),
        uid,
        groups,
        extra,
    })
}

/// The `aud` of a token whose signature has been verified (a string or an
/// array; anything else is none).
fn token_audiences(token: &str) -> Vec<String> {
    match lanyard_attest::parse_unverified(token) {
        Ok(t) => match t.claims.get("aud") {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}
