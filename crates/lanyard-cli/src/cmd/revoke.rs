//! `lanyard revoke …`.

use std::process::ExitCode;

use anyhow::bail;
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{Global, RevokeAction, RevokeArgs};
use crate::client::AdminClient;
use crate::output::{self, s};

pub async fn run(g: &Global, a: RevokeArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    if let Some(RevokeAction::List) = a.action {
        let v = client.call(Method::GET, "revocations", None).await?;
        output::print(g.output, &v, |v| {
            println!("{:<12} {:<48} {:<22} REASON", "KIND", "VALUE", "UNTIL");
            for r in v
                .get("revocations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let until = if r["until"].is_null() {
                    "forever".into()
                } else {
                    output::time(&r["until"])
                };
                println!(
                    "{:<12} {:<48} {:<22} {}",
                    s(&r, "kind"),
                    s(&r, "value"),
                    until,
                    s(&r, "reason")
                );
            }
        });
        return Ok(ExitCode::SUCCESS);
    }
    let t = a.target.unwrap_or_default();
    let (kind, value) = match (t.jti, t.spiffe_id, t.k8s_sa_uid, t.k8s_pod_uid, t.entry, t.subject) {
        (Some(v), ..) => ("jti", v),
        (_, Some(v), ..) => ("spiffe-id", v),
        (_, _, Some(v), ..) => ("k8s-sa-uid", v),
        (_, _, _, Some(v), ..) => ("k8s-pod-uid", v),
        (_, _, _, _, Some(v), _) => ("entry", v),
        (.., Some(v)) => ("subject", v),
        _ => bail!("say what to revoke: --jti, --spiffe-id, --k8s-sa-uid, --k8s-pod-uid, --entry or --subject ISSUER:SUBJECT"),
    };
    let Some(reason) = a.reason else {
        bail!("--reason is required: it is recorded in the audit log");
    };
    let until = a
        .until
        .as_deref()
        .map(crate::cmd::audit::parse_time)
        .transpose()?
        .map(|ms| ms / 1000);
    let v = client
        .call(
            Method::POST,
            "revocations",
            Some(json!({"kind": kind, "value": value, "reason": reason, "until": until})),
        )
        .await?;
    output::print(g.output, &v, |v| {
        println!("revoked {} {}", s(v, "kind"), s(v, "value"))
    });
    Ok(ExitCode::SUCCESS)
}
