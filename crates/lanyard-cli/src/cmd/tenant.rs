//! `lanyard tenant …`.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{Global, TenantCommand};
use crate::client::AdminClient;
use crate::output::{self, s};

pub async fn run(g: &Global, cmd: TenantCommand) -> anyhow::Result<ExitCode> {
    // Validate locally first: a clear error without a round trip.
    let check = |name: &str| {
        lanyard_core::TenantId::parse(name)
            .map_err(|e| anyhow::anyhow!("tenant name {name:?}: {e}"))
    };
    let client = AdminClient::from_global(g)?;
    match cmd {
        TenantCommand::Create { name, description } => {
            check(&name)?;
            let t = client
                .call(
                    Method::POST,
                    "tenants",
                    Some(json!({"name": name, "description": description})),
                )
                .await?;
            output::print(g.output, &t, |t| println!("created tenant {}", s(t, "id")));
        }
        TenantCommand::List => {
            let v = client.call(Method::GET, "tenants", None).await?;
            output::print(g.output, &v, |v| {
                let tenants = v
                    .get("tenants")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                println!("{:<24} {:<26} DESCRIPTION", "NAME", "CREATED");
                for t in &tenants {
                    println!(
                        "{:<24} {:<26} {}",
                        s(t, "id"),
                        output::time(&t["created_at"]),
                        s(t, "description")
                    );
                }
            });
        }
        TenantCommand::Show { name } => {
            let t = client
                .call(Method::GET, &format!("tenants/{name}"), None)
                .await?;
            output::print(g.output, &t, |t| {
                println!("name         {}", s(t, "id"));
                println!("description  {}", s(t, "description"));
                println!("created      {}", output::time(&t["created_at"]));
            });
        }
        TenantCommand::Delete { name } => {
            check(&name)?;
            client
                .call(Method::DELETE, &format!("tenants/{name}"), None)
                .await?;
            output::print(g.output, &json!({"deleted": name}), |_| {
                println!("deleted tenant {name}")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
