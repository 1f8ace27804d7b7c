//! Verified claims → selectors and revocation keys, per issuer kind.

use lanyard_core::{Denial, DenyReason, RevocationKey, RevocationKind, Selector, SelectorError};
use serde_json::{Map, Value};

use crate::claims::opt_str;
use crate::config::{IssuerConfig, IssuerKind};

/// The GitHub Actions claims that become `gha:` selectors (string values).
pub const GITHUB_ACTIONS_CLAIMS: &[&str] = &[
    "repository",
    "repository_owner",
    "repository_id",
    "repository_owner_id",
    "ref",
    "ref_type",
    "environment",
    "workflow",
    "workflow_ref",
    "job_workflow_ref",
    "actor",
    "actor_id",
    "event_name",
    "sha",
    "runner_environment",
];

/// The GitLab CI claims that become `gitlab:` selectors (strings, numbers
/// and booleans, stringified).
pub const GITLAB_CLAIMS: &[&str] = &[
    "project_path",
    "project_id",
    "namespace_path",
    "namespace_id",
    "ref",
    "ref_type",
    "ref_protected",
    "environment",
    "environment_protected",
    "pipeline_source",
    "user_login",
    "ci_config_ref_uri",
];

/// Registered claims that never become `oidc:` selectors (`sub` becomes
/// `oidc:sub` on its own).
const OIDC_SKIPPED: &[&str] = &["iss", "aud", "exp", "nbf", "iat", "jti", "sub"];

/// Who the token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub subject: String,
    pub jti: Option<String>,
    /// Sorted and deduplicated.
    pub selectors: Vec<Selector>,
    pub revocation_keys: Vec<RevocationKey>,
}

/// A Kubernetes service account (and pod, node) from a projected token's
/// `kubernetes.io` claim, a legacy token's flat claims, or a TokenReview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct K8sIdentity {
    pub namespace: String,
    pub sa_name: String,
    pub sa_uid: String,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub node_name: Option<String>,
    pub node_uid: Option<String>,
}

/// The identity in verified `claims`, by the issuer's kind.
pub(crate) fn from_claims(
    config: &IssuerConfig,
    claims: &Map<String, Value>,
    legacy: bool,
) -> Result<Identity, Denial> {
    let subject = subject(claims)?;
    let jti = jti(claims)?;
    let mut sel = Selectors::new(config.kind);
    match config.kind {
        IssuerKind::Kubernetes => {
            let k8s = if legacy {
                k8s_from_legacy(claims)?
            } else {
                k8s_from_projected(claims)?
            };
            let expected = format!("system:serviceaccount:{}:{}", k8s.namespace, k8s.sa_name);
            if subject != expected {
                return Err(Denial::new(
                    DenyReason::Malformed,
                    "sub does not name the service account of the kubernetes.io claims",
                ));
            }
            return k8s_identity(config, subject, jti, &k8s);
        }
        IssuerKind::GithubActions => {
            for name in GITHUB_ACTIONS_CLAIMS {
                match claims.get(*name) {
                    Some(Value::String(v)) if !v.is_empty() => sel.claim(name, name, v)?,
                    _ => {}
                }
            }
        }
        IssuerKind::Gitlab => {
            for name in GITLAB_CLAIMS {
                let value = match claims.get(*name) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Bool(b)) => b.to_string(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => continue,
                };
                if !value.is_empty() {
                    sel.claim(name, name, &value)?;
                }
            }
        }
        IssuerKind::Oidc => {
            sel.claim("sub", "sub", &subject)?;
            for (name, value) in claims {
                if OIDC_SKIPPED.contains(&name.as_str()) {
                    continue;
                }
                if let Value::String(v) = value {
                    // Optional claims nobody asked for: one that cannot be a
                    // selector (odd name, control characters, too long) is
                    // left out rather than failing the token. Entries need
                    // all their selectors, so a missing one never widens
                    // what matches.
                    sel.optional(name, v);
                }
            }
        }
    }
    let mut revocation_keys = Vec::with_capacity(2);
    push_common_keys(&mut revocation_keys, config, &subject, jti.as_deref());
    Ok(Identity {
        subject,
        jti,
        selectors: sel.finish(),
        revocation_keys,
    })
}

/// Selectors and revocation keys of a Kubernetes service account.
pub(crate) fn k8s_identity(
    config: &IssuerConfig,
    subject: String,
    jti: Option<String>,
    k: &K8sIdentity,
) -> Result<Identity, Denial> {
    let mut sel = Selectors::new(IssuerKind::Kubernetes);
    if let Some(cluster) = config.cluster_name() {
        sel.claim("cluster", "the issuer's cluster name", cluster)?;
    }
    sel.claim("ns", "kubernetes.io/namespace", &k.namespace)?;
    sel.claim("sa", "kubernetes.io/serviceaccount/name", &k.sa_name)?;
    sel.claim("sa-uid", "kubernetes.io/serviceaccount/uid", &k.sa_uid)?;
    for (key, claim, value) in [
        ("pod-name", "kubernetes.io/pod/name", &k.pod_name),
        ("pod-uid", "kubernetes.io/pod/uid", &k.pod_uid),
        ("node-name", "kubernetes.io/node/name", &k.node_name),
        ("node-uid", "kubernetes.io/node/uid", &k.node_uid),
    ] {
        if let Some(v) = value {
            sel.claim(key, claim, v)?;
        }
    }
    let mut revocation_keys = vec![RevocationKey::new(RevocationKind::K8sSaUid, &k.sa_uid)];
    if let Some(uid) = &k.pod_uid {
        revocation_keys.push(RevocationKey::new(RevocationKind::K8sPodUid, uid));
    }
    push_common_keys(&mut revocation_keys, config, &subject, jti.as_deref());
    Ok(Identity {
        subject,
        jti,
        selectors: sel.finish(),
        revocation_keys,
    })
}

fn push_common_keys(
    keys: &mut Vec<RevocationKey>,
    config: &IssuerConfig,
    subject: &str,
    jti: Option<&str>,
) {
    if let Some(jti) = jti {
        keys.push(RevocationKey::new(RevocationKind::Jti, jti));
    }
    keys.push(RevocationKey::new(
        RevocationKind::Subject,
        format!("{}:{subject}", config.issuer),
    ));
}

/// `sub`: a non-empty string.
pub(crate) fn subject(claims: &Map<String, Value>) -> Result<String, Denial> {
    match opt_str(claims, "sub")? {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(Denial::new(DenyReason::MissingClaim, "sub is required")),
    }
}

/// `jti`, when present and non-empty.
pub(crate) fn jti(claims: &Map<String, Value>) -> Result<Option<String>, Denial> {
    Ok(opt_str(claims, "jti")?
        .filter(|s| !s.is_empty())
        .map(str::to_owned))
}

fn k8s_from_projected(claims: &Map<String, Value>) -> Result<K8sIdentity, Denial> {
    let k =
        match claims.get("kubernetes.io") {
            None | Some(Value::Null) => return Err(Denial::new(
                DenyReason::MissingClaim,
                "the kubernetes.io claim is required (is this a projected service-account token?)",
            )),
            Some(Value::Object(k)) => k,
            Some(_) => {
                return Err(Denial::new(
                    DenyReason::Malformed,
                    "the kubernetes.io claim is not an object",
                ))
            }
        };
    let object = |name: &'static str| -> Result<Option<&Map<String, Value>>, Denial> {
        match k.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(Denial::new(
                DenyReason::Malformed,
                format!("kubernetes.io/{name} is not an object"),
            )),
        }
    };
    let namespace = required_str(k, "namespace", "kubernetes.io/namespace")?;
    let sa = object("serviceaccount")?.ok_or_else(|| {
        Denial::new(
            DenyReason::MissingClaim,
            "kubernetes.io/serviceaccount is required",
        )
    })?;
    let sa_name = required_str(sa, "name", "kubernetes.io/serviceaccount/name")?;
    let sa_uid = required_str(sa, "uid", "kubernetes.io/serviceaccount/uid")?;
    let (pod_name, pod_uid) = match object("pod")? {
        Some(p) => (
            optional_str(p, "name", "kubernetes.io/pod/name")?,
            optional_str(p, "uid", "kubernetes.io/pod/uid")?,
        ),
        None => (None, None),
    };
    let (node_name, node_uid) = match object("node")? {
        Some(n) => (
            optional_str(n, "name", "kubernetes.io/node/name")?,
            optional_str(n, "uid", "kubernetes.io/node/uid")?,
        ),
        None => (None, None),
    };
    Ok(K8sIdentity {
        namespace,
        sa_name,
        sa_uid,
        pod_name,
        pod_uid,
        node_name,
        node_uid,
    })
}

fn k8s_from_legacy(claims: &Map<String, Value>) -> Result<K8sIdentity, Denial> {
    const NS: &str = "kubernetes.io/serviceaccount/namespace";
    const NAME: &str = "kubernetes.io/serviceaccount/service-account.name";
    const UID: &str = "kubernetes.io/serviceaccount/service-account.uid";
    Ok(K8sIdentity {
        namespace: required_str(claims, NS, NS)?,
        sa_name: required_str(claims, NAME, NAME)?,
        sa_uid: required_str(claims, UID, UID)?,
        pod_name: None,
        pod_uid: None,
        node_name: None,
        node_uid: None,
    })
}

fn optional_str(
    o: &Map<String, Value>,
    key: &str,
    shown_as: &str,
) -> Result<Option<String>, Denial> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Denial::new(
            DenyReason::Malformed,
            format!("{shown_as} is not a string"),
        )),
    }
}

fn required_str(o: &Map<String, Value>, key: &str, shown_as: &str) -> Result<String, Denial> {
    optional_str(o, key, shown_as)?
        .ok_or_else(|| Denial::new(DenyReason::MissingClaim, format!("{shown_as} is required")))
}

/// Collects selectors of one type.
struct Selectors {
    kind: IssuerKind,
    out: Vec<Selector>,
}

impl Selectors {
    fn new(kind: IssuerKind) -> Self {
        Self {
            kind,
            out: Vec::with_capacity(8),
        }
    }

    /// A selector the issuer kind promises: an unusable value is a denial.
    fn claim(&mut self, key: &str, claim: &str, value: &str) -> Result<(), Denial> {
        let s = Selector::new(self.kind.selector_type(), key, value)
            .map_err(|e| selector_denial(claim, &e))?;
        self.out.push(s);
        Ok(())
    }

    /// A selector from a claim nobody required: skipped when unusable.
    fn optional(&mut self, key: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        if let Ok(s) = Selector::new(self.kind.selector_type(), key, value) {
            self.out.push(s);
        }
    }

    fn finish(mut self) -> Vec<Selector> {
        self.out.sort();
        self.out.dedup();
        self.out
    }
}

/// Names the claim and the rule, never the value.
fn selector_denial(claim: &str, e: &SelectorError) -> Denial {
    let why = match e {
        SelectorError::TooLong(n) => format!("is {n} bytes as a selector; the limit is 512"),
        SelectorError::BadValue(_) => "is empty or has control characters".to_owned(),
        _ => "cannot be a selector".to_owned(),
    };
    Denial::new(DenyReason::Malformed, format!("claim {claim} {why}"))
}
