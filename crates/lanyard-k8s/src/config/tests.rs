use super::*;

fn parse(text: &str) -> Result<WebhookConfig, ConfigError> {
    RawFile::parse(text, "test")?.validate()
}

const BASE: &str = "[webhook]\ntls_cert = \"/c\"\ntls_key = \"/k\"\n";

fn key_of(text: &str) -> String {
    match parse(text) {
        Err(ConfigError::Invalid { key, .. }) => key.to_owned(),
        Err(ConfigError::Syntax { message, .. }) => format!("syntax: {message}"),
        other => format!("{other:?}"),
    }
}

#[test]
fn the_issue_example_validates_with_its_values() -> Result<(), ConfigError> {
    let c = parse(
        r#"[webhook]
listen = "0.0.0.0:9443"
tls_cert = "/etc/lanyard/webhook/tls.crt"
tls_key = "/etc/lanyard/webhook/tls.key"
[webhook.azure]
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
cloud = "AzurePublicCloud"
token_layout = "v1.6"
[webhook.aws]
region = "eu-west-1"
[webhook.lanyard]
audience = "lanyard"
"#,
    )?;
    assert_eq!(c.listen.port(), 9443);
    let azure = c
        .mutation
        .azure
        .as_ref()
        .map(|a| (a.cloud, a.token_layout, a.audience.as_str()));
    assert_eq!(
        azure,
        Some((
            AzureCloud::Public,
            TokenLayout::V1_6,
            AZURE_DEFAULT_AUDIENCE
        ))
    );
    assert_eq!(
        c.mutation.aws.as_ref().and_then(|a| a.region.as_deref()),
        Some("eu-west-1")
    );
    assert_eq!(
        c.mutation.lanyard.as_ref().map(|l| l.token_expiration),
        Some(600)
    );
    assert_eq!(c.kube.on_error, FailureMode::Deny);
    assert_eq!(c.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
    Ok(())
}

#[test]
fn every_bad_value_names_its_key() {
    let cases = [
        ("", "webhook"),
        ("[webhook]\ntls_key = \"/k\"\n", "webhook.tls_cert"),
        ("[webhook]\ntls_cert = \"/c\"\n", "webhook.tls_key"),
        ("listen = \"nine\"\n", "webhook.listen"),
        ("api_timeout = \"1h\"\n", "webhook.api_timeout"),
        ("api_timeout = \"soon\"\n", "webhook.api_timeout"),
        ("on_api_error = \"ignore\"\n", "webhook.on_api_error"),
        ("max_request_bytes = 10\n", "webhook.max_request_bytes"),
        (
            "service_account_cache_ttl = \"2h\"\n",
            "webhook.service_account_cache_ttl",
        ),
        (
            "[webhook.azure]\ncloud = \"AzurePublicCloud\"\n",
            "webhook.azure.tenant_id",
        ),
        (
            "[webhook.azure]\ntenant_id = \"t\"\ncloud = \"Mars\"\n",
            "webhook.azure.cloud",
        ),
        (
            "[webhook.azure]\ntenant_id = \"t\"\ntoken_layout = \"legacy\"\n",
            "webhook.azure.token_layout",
        ),
        (
            "[webhook.azure]\ntenant_id = \"t\"\naudience = \"\"\n",
            "webhook.azure.audience",
        ),
        (
            "[webhook.aws]\nregion = \"EU West\"\n",
            "webhook.aws.region",
        ),
        (
            "[webhook.aws]\ntoken_expiration = 100\n",
            "webhook.aws.token_expiration",
        ),
        (
            "[webhook.lanyard]\ntoken_expiration = \"5m\"\n",
            "webhook.lanyard.token_expiration",
        ),
        (
            "[webhook.lanyard]\ntoken_expiration = \"2h\"\n",
            "webhook.lanyard.token_expiration",
        ),
        (
            "[webhook.lanyard]\nsocket_host_dir = \"run/x\"\n",
            "webhook.lanyard.socket_host_dir",
        ),
        (
            "[webhook.lanyard]\nsocket_name = \"a/b\"\n",
            "webhook.lanyard.socket_name",
        ),
    ];
    for (text, key) in cases {
        let full = if text.is_empty() || text.starts_with("[webhook]") {
            text.to_owned()
        } else {
            format!("{BASE}{text}")
        };
        assert_eq!(key_of(&full), key, "{text}");
    }
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let k = key_of(&format!(
        "{BASE}[webhook.azure]\ntenant_id = \"t\"\nclient_id = \"x\"\n"
    ));
    assert!(k.starts_with("syntax") && k.contains("client_id"), "{k}");
    let k = key_of(&format!("{BASE}failurePolicy = \"Fail\"\n"));
    assert!(k.contains("failurePolicy"), "{k}");
}

#[test]
fn clouds_and_their_authority_hosts() {
    for (name, host) in [
        ("AzurePublicCloud", "https://login.microsoftonline.com/"),
        ("azurepubliccloud", "https://login.microsoftonline.com/"),
        (
            "AzureUSGovernmentCloud",
            "https://login.microsoftonline.us/",
        ),
        ("AzureChinaCloud", "https://login.chinacloudapi.cn/"),
        ("AzureGermanCloud", "https://login.microsoftonline.de/"),
    ] {
        assert_eq!(
            AzureCloud::parse(name).map(AzureCloud::authority_host),
            Some(host),
            "{name}"
        );
    }
    assert_eq!(AzureCloud::parse("AzureStackCloud"), None);
}

#[test]
fn render_defaults_validate_and_need_no_tenant() -> Result<(), ConfigError> {
    let m = MutationConfig::render_default()?;
    assert_eq!(m.azure.as_ref().map(|a| a.tenant_id.as_str()), Some(""));
    assert!(m.aws.is_some() && m.lanyard.is_some());
    // A render --config needs no TLS files.
    let m = RawFile::parse("[webhook.azure]\ntenant_id = \"t\"\n", "x")?.mutation()?;
    assert!(m.azure.is_some() && m.aws.is_none());
    Ok(())
}
