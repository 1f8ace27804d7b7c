//! Token minting for attestation tests: a throwaway issuer with a signing
//! key and its JWKS, claim sets shaped like real Kubernetes, GitHub Actions
//! and GitLab tokens, and the classic forgeries (`alg: none`, HS256 keyed
//! with the public key) that verifiers must refuse.

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use lanyard_jose::{Algorithm, Jwks, SigningKey};
use serde_json::{json, Value};

/// An issuer for tests: a fresh key, its public JWKS, and signing.
#[derive(Debug)]
pub struct TestIssuer {
    /// The `iss` its tokens carry.
    pub iss: String,
    key: SigningKey,
}

impl TestIssuer {
    /// A new issuer named `iss` with a fresh key for `alg`.
    pub fn new(iss: &str, alg: Algorithm) -> Self {
        let (key, _) = SigningKey::generate(alg)
            .expect("aws-lc-rs generates ES256/RS256 keys from fixed parameters");
        Self {
            iss: iss.to_owned(),
            key,
        }
    }

    /// The signing key (its `kid` is the RFC 7638 thumbprint).
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The public JWKS a verifier should trust.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: vec![self.key.public_jwk()],
        }
    }

    /// Signs `claims` as a compact JWT with this issuer's key.
    pub fn sign(&self, claims: &Value) -> String {
        lanyard_jose::encode_jwt(&self.key, claims)
            .expect("a serde_json::Value always serialises and signing cannot fail")
    }

    /// A projected service-account token's claims from this issuer: see
    /// [`k8s_claims`].
    pub fn k8s_claims(&self, now: i64, ns: &str, sa: &str) -> Value {
        k8s_claims(&self.iss, "lanyard", now, ns, sa)
    }
}

/// The claims of a Kubernetes projected service-account token for pod
/// `{sa}-0` on node `node-1`, issued at `now` for one hour, with audience
/// `aud`.
pub fn k8s_claims(iss: &str, aud: &str, now: i64, ns: &str, sa: &str) -> Value {
    json!({
        "iss": iss,
        "aud": [aud],
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": format!("jti-{ns}-{sa}"),
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": {"name": sa, "uid": format!("sa-uid-{sa}")},
            "pod": {"name": format!("{sa}-0"), "uid": format!("pod-uid-{sa}")},
            "node": {"name": "node-1", "uid": "node-uid-1"},
            "warnafter": now + 3000,
        },
    })
}

/// The claims of a legacy (secret-based) service-account token: issuer
/// `kubernetes/serviceaccount`, flat claims, no audience, no expiry.
pub fn legacy_k8s_claims(ns: &str, sa: &str) -> Value {
    json!({
        "iss": "kubernetes/serviceaccount",
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/secret.name": format!("{sa}-token-abcde"),
        "kubernetes.io/serviceaccount/service-account.name": sa,
        "kubernetes.io/serviceaccount/service-account.uid": format!("sa-uid-{sa}"),
    })
}

/// The claims of a GitHub Actions OIDC token for `repo` (`owner/name`) on
/// `refs/heads/main`, environment `prod`, valid for five minutes.
pub fn github_actions_claims(iss: &str, aud: &str, now: i64, repo: &str) -> Value {
    let owner = repo.split('/').next().unwrap_or(repo);
    json!({
        "iss": iss,
        "aud": aud,
        "sub": format!("repo:{repo}:environment:prod"),
        "jti": "gha-jti-1",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "repository": repo,
        "repository_owner": owner,
        "repository_id": "123456",
        "repository_owner_id": "654321",
        "repository_visibility": "private",
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "environment": "prod",
        "workflow": "deploy",
        "workflow_ref": format!("{repo}/.github/workflows/deploy.yml@refs/heads/main"),
        "job_workflow_ref": format!("{repo}/.github/workflows/deploy.yml@refs/heads/main"),
        "actor": "octocat",
        "actor_id": "1",
        "event_name": "push",
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "run_id": "42",
        "runner_environment": "github-hosted",
    })
}

/// The claims of a GitLab CI `id_token` for project `path` (`group/project`),
/// with GitLab's mix of string, number and boolean values.
pub fn gitlab_claims(iss: &str, aud: &str, now: i64, path: &str) -> Value {
    let namespace = path.rsplit_once('/').map_or(path, |(ns, _)| ns);
    json!({
        "iss": iss,
        "aud": aud,
        "sub": format!("project_path:{path}:ref_type:branch:ref:main"),
        "jti": "gitlab-jti-1",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "project_path": path,
        "project_id": 22,
        "namespace_path": namespace,
        "namespace_id": "72",
        "ref": "main",
        "ref_type": "branch",
        "ref_protected": true,
        "environment": "production",
        "environment_protected": false,
        "pipeline_source": "push",
        "user_login": "alice",
        "ci_config_ref_uri": format!("gitlab.example.com/{path}//.gitlab-ci.yml@refs/heads/main"),
    })
}

/// A compact JWS with an arbitrary header and claims and the given
/// signature bytes: for forged and malformed tokens.
pub fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        B64.encode(signature)
    )
}

/// `alg: none` with `key`'s `kid` and an empty signature.
pub fn alg_none_token(key: &SigningKey, claims: &Value) -> String {
    raw_token(
        &json!({"alg": "none", "kid": key.kid(), "typ": "JWT"}),
        claims,
        b"",
    )
}

/// The key-confusion forgery: HS256 "signed" with the issuer's public JWK
/// text as the HMAC secret, naming the issuer's `kid`.
pub fn hs256_confusion_token(key: &SigningKey, claims: &Value) -> String {
    let header = json!({"alg": "HS256", "kid": key.kid(), "typ": "JWT"});
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let secret = serde_json::to_vec(&key.public_jwk()).unwrap_or_default();
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &secret),
        input.as_bytes(),
    );
    format!("{input}.{}", B64.encode(tag.as_ref()))
}

/// `token` with its payload replaced by `claims` and the original
/// signature kept.
pub fn tampered(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap_or_default();
    let _payload = parts.next();
    let sig = parts.next().unwrap_or_default();
    format!("{header}.{}.{sig}", B64.encode(claims.to_string()))
}

/// The decoded (unverified) claims of a compact JWT, or `Null`.
pub fn claims_of(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|p| B64.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}
