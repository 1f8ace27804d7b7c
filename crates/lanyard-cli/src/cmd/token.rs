//! `lanyard token exchange` and `lanyard explain`.

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{ExchangeArgs, ExplainArgs, Global, TokenCommand};
use crate::client::AdminClient;
use crate::output::{self, s};

/// Reads a token from a file or stdin ('-'), trimmed.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the token from stdin")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading token file {}", path.display()))?;
    }
    Ok(text.trim().to_owned())
}

pub async fn run(g: &Global, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let TokenCommand::Exchange(a) = cmd;
    exchange(g, a).await
}

async fn exchange(g: &Global, a: ExchangeArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::anonymous(g)?;
    let mut form: Vec<(&str, String)> = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".into(),
        ),
        ("subject_token", read_token(&a.subject_token)?),
        ("subject_token_type", a.subject_token_type),
    ];
    if let Some(actor) = &a.actor_token {
        form.push(("actor_token", read_token(actor)?));
        form.push((
            "actor_token_type",
            "urn:ietf:params:oauth:token-type:jwt".into(),
        ));
    }
    for aud in a.audiences {
        form.push(("audience", aud));
    }
    if let Some(scope) = a.scope {
        form.push(("scope", scope));
    }
    if let Some(tenant) = a.tenant {
        form.push(("tenant", tenant));
    }
    if let Some(t) = a.requested_token_type {
        form.push(("requested_token_type", t));
    }
    let v = client.post_form("/oauth2/token", &form).await?;
    output::print(g.output, &v, |v| println!("{}", s(v, "access_token")));
    Ok(ExitCode::SUCCESS)
}

pub async fn explain(g: &Global, a: ExplainArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    let body = json!({
        "subject_token": read_token(a.subject_token.as_deref().ok_or_else(|| anyhow::anyhow!("--subject-token or --pid is required"))?)?,
        "actor_token": a.actor_token.as_deref().map(read_token).transpose()?,
        "audience": a.audiences,
        "tenant": a.tenant,
        "scope": a.scope,
    });
    let v = client.call(Method::POST, "explain", Some(body)).await?;
    output::print(g.output, &v, print_steps);
    Ok(if s(&v, "decision") == "allow" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_steps(v: &Value) {
    for step in v
        .get("steps")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let mark = if step["ok"].as_bool().unwrap_or(false) {
            "ok  "
        } else {
            "FAIL"
        };
        println!("{mark} {:<20} {}", s(&step, "step"), s(&step, "detail"));
    }
    println!();
    println!("decision: {} ({})", s(v, "decision"), s(v, "reason"));
}
