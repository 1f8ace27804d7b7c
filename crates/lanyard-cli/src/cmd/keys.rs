//! `lanyard keys …`.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{Global, KeysCommand};
use crate::client::AdminClient;
use crate::output::{self, s};

pub async fn run(g: &Global, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    match cmd {
        KeysCommand::List => {
            let v = client.call(Method::GET, "keys", None).await?;
            output::print(g.output, &v, |v| {
                println!(
                    "{:<44} {:<6} {:<9} {:<26} RETIRES",
                    "KID", "ALG", "STATE", "SIGNS FROM"
                );
                for k in v
                    .get("keys")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    println!(
                        "{:<44} {:<6} {:<9} {:<26} {}",
                        s(&k, "kid"),
                        s(&k, "alg"),
                        s(&k, "state"),
                        output::time(&k["activate_at"]),
                        output::time(&k["retire_at"])
                    );
                }
            });
        }
        KeysCommand::Rotate { alg, compromised } => {
            let mut body = alg.map_or_else(|| json!({}), |a| json!({"alg": a}));
            body["compromised"] = json!(compromised);
            let v = client.call(Method::POST, "keys/rotate", Some(body)).await?;
            output::print(g.output, &v, |v| {
                if v.get("immediate").and_then(Value::as_bool).unwrap_or(false) {
                    println!("{} key {} now signs", s(v, "alg"), s(v, "kid"));
                } else {
                    println!(
                        "{} key {} signs from {} (it must be published in the JWKS for the configured lead first)",
                        s(v, "alg"),
                        s(v, "kid"),
                        output::time(&v["activates_at"])
                    );
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
