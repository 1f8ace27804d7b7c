//! The EKS pod identity webhook's mutation (IRSA), as
//! aws/amazon-eks-pod-identity-webhook's `pkg/handler/handler.go` does it.
//!
//! A pod whose service account has a non-empty `eks.amazonaws.com/role-arn`
//! gets the projected volume `aws-iam-token` (prepended to the volumes,
//! unless one of that name exists), the mount
//! `/var/run/secrets/eks.amazonaws.com/serviceaccount` in every container not
//! listed in `eks.amazonaws.com/skip-containers` (comma-separated), and, in
//! this order: `AWS_STS_REGIONAL_ENDPOINTS=regional` (when on),
//! `AWS_DEFAULT_REGION` + `AWS_REGION` (when a region is configured),
//! `AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE`. Either variable of a pair
//! being present suppresses both. No pod label is needed.
//!
//! Kept from upstream, quirks included: token expirations below 600 are
//! raised to 600, unparsable ones ignored; a container that already has the
//! web-identity, a region and the STS variable is left entirely alone (no
//! mount either); Windows pods get a `C:\` token path.
//!
//! Not implemented: EKS Pod Identity's container-credentials mode (it is
//! driven by a ConfigMap of EKS's control plane, not by annotations).

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{json, Value};

use super::{sa_annotation, sa_ref};
use crate::config::AwsConfig;
use crate::pod;

/// The service-account annotation that turns the mutation on.
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// Service-account audience override.
pub const AUDIENCE_ANNOTATION: &str = "eks.amazonaws.com/audience";
/// Service-account `AWS_STS_REGIONAL_ENDPOINTS` override (Go `ParseBool`).
pub const STS_ANNOTATION: &str = "eks.amazonaws.com/sts-regional-endpoints";
/// Token expiration (service account, then the pod overrides).
pub const EXPIRATION_ANNOTATION: &str = "eks.amazonaws.com/token-expiration";
/// Pod annotation: comma-separated containers to leave alone.
pub const SKIP_CONTAINERS_ANNOTATION: &str = "eks.amazonaws.com/skip-containers";
/// The volume (and mount) name.
pub const VOLUME_NAME: &str = "aws-iam-token";
/// Where the token is mounted.
pub const MOUNT_PATH: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
/// Shortest token the kube-apiserver issues.
pub const MIN_EXPIRATION: i64 = 600;

/// Mutates `pod` when `sa` carries a role ARN.
pub fn mutate(pod: &mut Value, sa: &ServiceAccount, cfg: &AwsConfig, warnings: &mut Vec<String>) {
    let role_arn = match sa_annotation(sa, ROLE_ARN_ANNOTATION) {
        Some(arn) if !arn.is_empty() => arn.to_owned(),
        _ => return,
    };
    if !looks_like_role_arn(&role_arn) {
        // Upstream only logs this; the pod is still mutated.
        warnings.push(format!(
            "service account {} annotation {ROLE_ARN_ANNOTATION}={role_arn:?} does not look like arn:aws:iam::<12-digit account>:role/<name>",
            sa_ref(sa)
        ));
    }
    let audience = sa_annotation(sa, AUDIENCE_ANNOTATION)
        .unwrap_or(&cfg.audience)
        .to_owned();
    let regional_sts = sa_annotation(sa, STS_ANNOTATION)
        .and_then(parse_go_bool)
        .unwrap_or(cfg.sts_regional_endpoints);
    let mut expiration = sa_annotation(sa, EXPIRATION_ANNOTATION)
        .and_then(|t| t.parse::<i64>().ok())
        .map(|e| e.max(MIN_EXPIRATION))
        .unwrap_or(cfg.token_expiration);
    if let Some(e) = pod::annotation(pod, EXPIRATION_ANNOTATION).and_then(|t| t.parse::<i64>().ok())
    {
        expiration = e.max(MIN_EXPIRATION);
    }
    let skip: std::collections::HashSet<String> = pod::annotation(pod, SKIP_CONTAINERS_ANNOTATION)
        .map(|s| {
            pod::split_names(s, ',', false)
                .into_iter()
                .map(|n| n.trim_matches('"').to_owned())
                .collect()
        })
        .unwrap_or_default();
    let windows = [
        "/spec/nodeSelector/kubernetes.io~1os",
        "/spec/nodeSelector/beta.kubernetes.io~1os",
    ]
    .iter()
    .any(|p| pod::str_at(pod, p) == Some("windows"));
    let token_file = if windows {
        format!("C:{}", format!("{MOUNT_PATH}/token").replace('/', "\\"))
    } else {
        format!("{MOUNT_PATH}/token")
    };
    let edit = ContainerEdit {
        role_arn: &role_arn,
        token_file: &token_file,
        region: cfg.region.as_deref(),
        regional_sts,
    };
    for list in pod::CONTAINER_LISTS {
        if let Some(containers) = pod::containers_mut(pod, list) {
            for c in containers.iter_mut() {
                if !skip.contains(pod::name(c)) {
                    edit.apply(c);
                }
            }
        }
    }
    if !pod::has_volume(pod, VOLUME_NAME) {
        if let Some(volumes) = pod::volumes_mut(pod) {
            volumes.insert(
                0,
                json!({
                    "name": VOLUME_NAME,
                    "projected": {"sources": [{"serviceAccountToken": {
                        "audience": audience,
                        "expirationSeconds": expiration,
                        "path": "token",
                    }}]},
                }),
            );
        }
    }
}

struct ContainerEdit<'a> {
    role_arn: &'a str,
    token_file: &'a str,
    region: Option<&'a str>,
    regional_sts: bool,
}

impl ContainerEdit<'_> {
    fn apply(&self, c: &mut Value) {
        let web_identity =
            pod::has_env(c, "AWS_ROLE_ARN") || pod::has_env(c, "AWS_WEB_IDENTITY_TOKEN_FILE");
        let region = pod::has_env(c, "AWS_REGION") || pod::has_env(c, "AWS_DEFAULT_REGION");
        let sts = pod::has_env(c, "AWS_STS_REGIONAL_ENDPOINTS");
        if web_identity && region && sts {
            // Upstream (rawPodHasAll): everything is there, the container is
            // returned as it is, without the mount.
            return;
        }
        if !sts && self.regional_sts {
            pod::push_env(c, "AWS_STS_REGIONAL_ENDPOINTS", "regional");
        }
        if let (false, Some(r)) = (region, self.region) {
            pod::push_env(c, "AWS_DEFAULT_REGION", r);
            pod::push_env(c, "AWS_REGION", r);
        }
        if !web_identity {
            pod::push_env(c, "AWS_ROLE_ARN", self.role_arn);
            pod::push_env(c, "AWS_WEB_IDENTITY_TOKEN_FILE", self.token_file);
        }
        pod::add_mount_if_absent(
            c,
            json!({"name": VOLUME_NAME, "readOnly": true, "mountPath": MOUNT_PATH}),
        );
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `^arn:aws[a-z0-9-]*:iam::\d{12}:role\/[\w-\/.@+=,]+$` without a regex engine.
fn looks_like_role_arn(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("arn:aws") else {
        return false;
    };
    let Some((partition, rest)) = rest.split_once(":iam::") else {
        return false;
    };
    if !partition
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return false;
    }
    let Some((account, role)) = rest.split_once(":role/") else {
        return false;
    };
    account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !role.is_empty()
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-/.@+=,".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arn_shape() {
        assert!(looks_like_role_arn(
            "arn:aws:iam::111122223333:role/s3-reader"
        ));
        assert!(looks_like_role_arn(
            "arn:aws-cn:iam::111122223333:role/path/x@y"
        ));
        assert!(!looks_like_role_arn("arn:aws:iam::1111:role/x"));
        assert!(!looks_like_role_arn("arn:aws:iam::111122223333:user/x"));
        assert!(!looks_like_role_arn("s3-reader"));
    }

    #[test]
    fn go_bool() {
        assert_eq!(parse_go_bool("True"), Some(true));
        assert_eq!(parse_go_bool("0"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
