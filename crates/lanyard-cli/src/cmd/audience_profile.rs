//! `lanyard audience-profile …`.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{AudienceProfileCommand, Global};
use crate::client::AdminClient;
use crate::output::{self, s};

pub async fn run(g: &Global, cmd: AudienceProfileCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    match cmd {
        AudienceProfileCommand::Add(a) => {
            // Checked here too, so a typo is named before any request.
            if let Some(t) = &a.subject_template {
                lanyard_core::SubjectTemplate::parse(t)
                    .map_err(|e| anyhow::anyhow!("--subject-template {t:?}: {e}"))?;
            }
            let body = json!({
                "audience": a.audience,
                "tenant": a.tenant,
                "entry": a.entry,
                "algorithm": a.algorithm,
                "subject_template": a.subject_template,
            });
            let v = client
                .call(Method::POST, "audience-profiles", Some(body))
                .await?;
            output::print(g.output, &v, |v| {
                println!(
                    "created audience profile {} for {} ({})",
                    s(v, "id"),
                    s(v, "audience"),
                    scope(v)
                )
            });
        }
        AudienceProfileCommand::List { tenant } => {
            let path = tenant.map_or_else(
                || "audience-profiles".to_owned(),
                |t| format!("audience-profiles?tenant={t}"),
            );
            let v = client.call(Method::GET, &path, None).await?;
            output::print(g.output, &v, |v| {
                println!(
                    "{:<34} {:<40} {:<28} {:<6} SUBJECT",
                    "ID", "AUDIENCE", "SCOPE", "ALG"
                );
                for p in v
                    .get("audience_profiles")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    println!(
                        "{:<34} {:<40} {:<28} {:<6} {}",
                        s(&p, "id"),
                        s(&p, "audience"),
                        scope(&p),
                        p["algorithm"].as_str().unwrap_or("default"),
                        p["subject_template"].as_str().unwrap_or("(SPIFFE ID)")
                    );
                }
            });
        }
        AudienceProfileCommand::Delete { id } => {
            client
                .call(Method::DELETE, &format!("audience-profiles/{id}"), None)
                .await?;
            output::print(g.output, &json!({"deleted": id}), |_| {
                println!("deleted audience profile {id}")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn scope(p: &Value) -> String {
    match (p["tenant"].as_str(), p["entry"].as_str()) {
        (Some(t), Some(e)) => format!("entry {e} ({t})"),
        (Some(t), None) => format!("tenant {t}"),
        _ => "every tenant".into(),
    }
}
