//! `lanyard issuer …`.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use lanyard_attest::{IssuerConfig, IssuerKind, KeySource, TenantBinding};
use lanyard_core::TenantId;
use lanyard_jose::{Algorithm, Jwks};
use reqwest::Method;
use serde_json::{json, Value};

use crate::cli::{Global, IssuerAddArgs, IssuerCommand};
use crate::client::AdminClient;
use crate::output::{self, s};

pub async fn run(g: &Global, cmd: IssuerCommand) -> anyhow::Result<ExitCode> {
    let client = AdminClient::from_global(g)?;
    match cmd {
        IssuerCommand::Add(args) => {
            let config = build(args)?;
            let v = client
                .call(
                    Method::POST,
                    "issuers",
                    Some(serde_json::to_value(&config)?),
                )
                .await?;
            output::print(g.output, &v, |v| {
                println!("trusted issuer {} added", s(v, "name"))
            });
        }
        IssuerCommand::List => {
            let v = client.call(Method::GET, "issuers", None).await?;
            output::print(g.output, &v, |v| {
                println!("{:<20} {:<15} {:<48} AUDIENCE", "NAME", "KIND", "ISSUER");
                for i in v
                    .get("issuers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    println!(
                        "{:<20} {:<15} {:<48} {}",
                        s(&i, "name"),
                        s(&i, "kind"),
                        s(&i, "issuer"),
                        s(&i, "audience")
                    );
                }
            });
        }
        IssuerCommand::Show { name } => {
            let v = client
                .call(Method::GET, &format!("issuers/{name}"), None)
                .await?;
            output::print(g.output, &v, |v| {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default())
            });
        }
        IssuerCommand::Delete { name } => {
            client
                .call(Method::DELETE, &format!("issuers/{name}"), None)
                .await?;
            output::print(g.output, &json!({"deleted": name}), |_| {
                println!("issuer {name} is no longer trusted")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn build(a: IssuerAddArgs) -> anyhow::Result<IssuerConfig> {
    let kind: IssuerKind = serde_json::from_value(json!(a.kind)).map_err(|_| {
        anyhow::anyhow!(
            "--kind {:?}: use kubernetes, github-actions, gitlab or oidc",
            a.kind
        )
    })?;
    let keys = if let Some(path) = a.jwks_file {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading JWKS file {}", path.display()))?;
        let jwks: Jwks = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JWKS document", path.display()))?;
        KeySource::JwksInline(jwks)
    } else if let Some(url) = a.jwks_url {
        KeySource::JwksUrl(url)
    } else if a.discovery {
        KeySource::Discovery
    } else if let Some(url) = a.token_review_url {
        KeySource::TokenReview {
            url,
            bearer_token_file: a.token_review_bearer_file,
            ca_file: a.token_review_ca_file,
        }
    } else {
        bail!("say where the issuer's keys are: --jwks-file, --jwks-url, --discovery or --token-review-url");
    };
    let tenant = match (a.tenant, a.tenant_claim) {
        (Some(t), None) => TenantBinding::Fixed(
            TenantId::parse(&t).map_err(|e| anyhow::anyhow!("--tenant {t:?}: {e}"))?,
        ),
        (None, Some(c)) => TenantBinding::Claim(c),
        _ => bail!("bind the issuer to a tenant: --tenant T, or --tenant-claim /json/pointer"),
    };
    let algorithms = if a.algs.is_empty() {
        Algorithm::ALL.to_vec()
    } else {
        a.algs
            .iter()
            .map(|x| {
                x.parse::<Algorithm>()
                    .map_err(|e| anyhow::anyhow!("--alg {x:?}: {e}"))
            })
            .collect::<Result<_, _>>()?
    };
    let lifetime = lanyard_core::ttl::parse_duration(&a.max_token_lifetime)
        .map_err(|e| anyhow::anyhow!("--max-token-lifetime: {e}"))?;
    let config = IssuerConfig {
        name: a.name,
        kind,
        issuer: a.issuer,
        keys,
        audience: a.audience,
        tenant,
        algorithms,
        max_token_lifetime_secs: lifetime.as_secs(),
        insecure_allow_legacy_tokens: a.insecure_allow_legacy_tokens,
        insecure_http: a.insecure_http,
        cluster: a.cluster,
    };
    config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(config)
}
