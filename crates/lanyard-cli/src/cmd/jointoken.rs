//! `lanyard jointoken create|list`: one-time node bootstrap tokens.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{Global, JoinTokenCommand};
use crate::client::AdminClient;
use crate::output::{self, raw, s};

pub async fn run(g: &Global, cmd: JoinTokenCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    match cmd {
        JoinTokenCommand::Create {
            node_id,
            ttl,
            selector,
            cloud_init,
            server_address,
        } => {
            let ttl = lanyard_core::ttl::parse_duration(&ttl)
                .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            let v = client
                .call(
                    Method::POST,
                    "jointokens",
                    Some(json!({ "node_id": node_id, "ttl_seconds": ttl.as_secs(), "selectors": selector })),
                )
                .await?;
            if cloud_init {
                let addr = server_address.unwrap_or_else(|| "lanyard.example.org:8081".into());
                print!("{}", cloud_init_snippet(&v, &addr));
                return Ok(ExitCode::SUCCESS);
            }
            output::print(g.output, &v, |v| {
                println!("{}", s(v, "token"));
                eprintln!(
                    "one-time join token for {} (id {}), valid until {}; it works once",
                    s(v, "spiffe_id"),
                    s(v, "id"),
                    output::time(&v["expires_at"])
                );
            });
        }
        JoinTokenCommand::List => {
            let v = client.call(Method::GET, "jointokens", None).await?;
            output::print(g.output, &v, |v| {
                println!("{:<14} {:<24} {:<22} USED", "ID", "NODE", "EXPIRES");
                for t in v["join_tokens"].as_array().cloned().unwrap_or_default() {
                    let used = if t["used_at"].is_null() {
                        "-".into()
                    } else {
                        output::time(&t["used_at"])
                    };
                    println!(
                        "{:<14} {:<24} {:<22} {}",
                        s(&t, "id"),
                        s(&t, "node_id"),
                        output::time(&t["expires_at"]),
                        used
                    );
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A `#cloud-config` that installs the agent's config, the trust bundle and
/// the token on first boot and starts the agent.
fn cloud_init_snippet(v: &Value, server_address: &str) -> String {
    let indent = |text: &str| {
        text.lines()
            .map(|l| format!("      {l}\n"))
            .collect::<String>()
    };
    let config = format!(
        "server_address = \"{server_address}\"\ntrust_domain = \"{}\"\ntrust_bundle = \"/etc/lanyard/bundle.pem\"\njoin_token_file = \"/etc/lanyard/join-token\"\nstate_dir = \"/var/lib/lanyard-agent\"\nsocket = \"/run/lanyard/workload.sock\"\n",
        s(v, "trust_domain")
    );
    format!(
        "#cloud-config\n# Lanyard node bootstrap for {spiffe}. The join token works once and expires {exp}.\nwrite_files:\n  - path: /etc/lanyard/agent.toml\n    permissions: '0644'\n    content: |\n{config}  - path: /etc/lanyard/bundle.pem\n    permissions: '0644'\n    content: |\n{bundle}  - path: /etc/lanyard/join-token\n    permissions: '0600'\n    content: |\n      {token}\nruncmd:\n  - [ systemctl, enable, --now, lanyard-agent.service ]\n",
        spiffe = s(v, "spiffe_id"),
        exp = output::time(&v["expires_at"]),
        config = indent(&config),
        bundle = indent(raw(v, "trust_bundle_pem")),
        token = raw(v, "token"),
    )
}
