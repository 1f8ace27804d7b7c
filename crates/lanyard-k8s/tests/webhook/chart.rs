//! The Helm chart: `scripts/chart.sh` lints it, renders it for the default
//! values and every example, validates each object against Kubernetes'
//! schemas and checks that deploy/manifests/ is what it renders.
//!
//! Needs helm and kubernetes-validate: `LANYARD_TEST_HELM=/path/to/helm`
//! and `LANYARD_TEST_KUBE_VALIDATE=/path/to/kubernetes-validate`
//! (scripts/test.sh installs both into the cache and sets them).

use std::process::Command;

use crate::support::TestResult;

const HELM_ENV: &str = "LANYARD_TEST_HELM";
const VALIDATE_ENV: &str = "LANYARD_TEST_KUBE_VALIDATE";

#[test]
fn the_chart_lints_renders_and_validates() -> TestResult {
    let (Some(helm), Some(validate)) = (std::env::var_os(HELM_ENV), std::env::var_os(VALIDATE_ENV))
    else {
        eprintln!(
            "SKIPPED (helm chart): the_chart_lints_renders_and_validates: set {HELM_ENV} and {VALIDATE_ENV} \
             (scripts/test.sh installs helm and kubernetes-validate and sets them)"
        );
        return Ok(());
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg("scripts/chart.sh")
        .current_dir(&root)
        .env(HELM_ENV, helm)
        .env(VALIDATE_ENV, validate)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/chart.sh failed:\n{stderr}");
    assert!(stderr.contains("chart OK: lint, template"), "{stderr}");
    Ok(())
}
