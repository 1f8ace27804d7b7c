use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const GOOD: &str = r#"
trust_domain = "prod.example.com"
issuer = "https://lanyard.example.com"
[server]
listen = "0.0.0.0:8443"
tls_cert = "/etc/lanyard/tls.crt"
tls_key = "/etc/lanyard/tls.key"
[store]
url = "postgres://lanyard@db/lanyard"
[keys]
kek_file = "/etc/lanyard/kek"
algorithms = ["ES256", "RS256"]
rotation_period = "12h"
[tokens]
default_ttl = "5m"
max_ttl = "30m"
"#;

fn parse(text: &str, env: &BTreeMap<String, String>) -> Result<ServerConfig, ConfigError> {
    RawConfig::parse(text, "test.toml", env)?.validate(env)
}

#[test]
fn full_config_validates() -> Result<(), ConfigError> {
    let c = parse(GOOD, &BTreeMap::new())?;
    assert_eq!(c.trust_domain.as_str(), "prod.example.com");
    assert_eq!(c.algorithms, [Algorithm::Es256, Algorithm::Rs256]);
    assert_eq!(c.rotation.rotation_period, Duration::from_secs(12 * 3600));
    assert_eq!(
        c.rotation.retain_after,
        Duration::from_secs(30 * 60) + CLOCK_SKEW
    );
    assert!(c.tls.is_some());
    // Node SVIDs keep their own lifetime whatever the workload SVIDs get.
    assert_eq!(c.ca.node_svid_ttl, Duration::from_secs(3600));
    let short = parse(GOOD, &env(&[("LANYARD__CA__SVID_TTL", "60s")]))?;
    assert_eq!(
        (short.ca.svid_ttl, short.ca.node_svid_ttl),
        (Duration::from_secs(60), Duration::from_secs(3600))
    );
    Ok(())
}

#[test]
fn env_overrides_win_and_are_typed() -> Result<(), ConfigError> {
    let e = env(&[
        ("LANYARD__SERVER__LISTEN", "0.0.0.0:9443"),
        ("LANYARD__KEYS__ALGORITHMS", r#"["RS256"]"#),
        ("LANYARD__SERVER__MAX_REQUEST_BYTES", "2048"),
        ("LANYARD_SERVER", "not an override: single underscore"),
    ]);
    let c = parse(GOOD, &e)?;
    assert_eq!(c.listen.port(), 9443);
    assert_eq!(c.algorithms, [Algorithm::Rs256]);
    assert_eq!(c.max_request_bytes, 2048);
    assert_eq!(
        c.verified_token_cache,
        lanyard_attest::DEFAULT_VERIFIED_CACHE_ENTRIES
    );
    let off = parse(
        GOOD,
        &env(&[("LANYARD__TOKENS__VERIFIED_CACHE_ENTRIES", "0")]),
    )?;
    assert_eq!(off.verified_token_cache, 0);
    Ok(())
}

#[test]
fn every_bad_input_names_its_key() {
    let no_tls = "[server]\nlisten = \"0.0.0.0:80\"\ninsecure_plain_http = true\n[store]\nurl = \"sqlite://x\"\n[keys]\nkek_file = \"k\"";
    let cases: Vec<(String, BTreeMap<String, String>, &str)> = vec![
        (
            "trust_domain = \"x\"\nbogus = 1".into(),
            BTreeMap::new(),
            "bogus",
        ),
        ("[server]\nlisten = 5".into(), BTreeMap::new(), "listen"),
        ("[server\n".into(), BTreeMap::new(), "test.toml"),
        (
            GOOD.replace("0.0.0.0:8443", "nowhere"),
            BTreeMap::new(),
            "server.listen",
        ),
        (
            GOOD.replace("\"ES256\", ", "\"none\", "),
            BTreeMap::new(),
            "keys.algorithms",
        ),
        (
            GOOD.replace("\"HS256\"", ""),
            env(&[("LANYARD__KEYS__ALGORITHMS", "[\"HS256\"]")]),
            "keys.algorithms",
        ),
        (
            GOOD.replace("12h", "soon"),
            BTreeMap::new(),
            "keys.rotation_period",
        ),
        (
            GOOD.replace("max_ttl = \"30m\"", "max_ttl = \"48h\""),
            BTreeMap::new(),
            "tokens.max_ttl",
        ),
        (
            GOOD.replace("default_ttl = \"5m\"", "default_ttl = \"2h\""),
            BTreeMap::new(),
            "tokens.default_ttl",
        ),
        (
            GOOD.replace("https://lanyard.example.com", "http://lanyard.example.com"),
            BTreeMap::new(),
            "issuer",
        ),
        (
            GOOD.replace(
                "https://lanyard.example.com",
                "https://lanyard.example.com/",
            ),
            BTreeMap::new(),
            "issuer",
        ),
        (
            GOOD.replace("url = \"postgres://lanyard@db/lanyard\"", ""),
            BTreeMap::new(),
            "store.url",
        ),
        (
            GOOD.replace("kek_file = \"/etc/lanyard/kek\"", ""),
            BTreeMap::new(),
            "keys.kek_file",
        ),
        (
            GOOD.replace("tls_key = \"/etc/lanyard/tls.key\"", ""),
            BTreeMap::new(),
            "server.tls_cert",
        ),
        (no_tls.into(), BTreeMap::new(), "server.insecure_plain_http"),
        (
            GOOD.into(),
            env(&[("LANYARD__CA__NODE_SVID_TTL", "30s")]),
            "ca.node_svid_ttl",
        ),
        (
            GOOD.into(),
            env(&[("LANYARD__CA__NODE_SVID_TTL", "48h")]),
            "ca.node_svid_ttl",
        ),
        (
            GOOD.into(),
            env(&[("LANYARD__TOKENS__VERIFIED_CACHE_ENTRIES", "2000000")]),
            "tokens.verified_cache_entries",
        ),
        (GOOD.into(), env(&[("LANYARD__SERVER__NOPE", "1")]), "nope"),
        (
            GOOD.into(),
            env(&[("LANYARD__ISSUER__X", "1")]),
            "LANYARD__ISSUER__X",
        ),
    ];
    for (text, env, key) in cases {
        let err = parse(&text, &env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "accepted".into());
        assert!(
            err.contains(key),
            "expected an error naming {key:?}, got {err:?}"
        );
    }
}

#[test]
fn kek_from_env_is_redacted_in_debug() -> Result<(), ConfigError> {
    let text = GOOD.replace("kek_file = \"/etc/lanyard/kek\"", "");
    let c = parse(
        &text,
        &env(&[(
            "LANYARD_KEK",
            "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
        )]),
    )?;
    assert!(matches!(c.kek, KekSource::Env(_)));
    assert!(!format!("{c:?}").contains("c2VjcmV0"));
    Ok(())
}

#[test]
fn loopback_plain_http_is_allowed_when_asked() -> Result<(), ConfigError> {
    let text = "[server]\nlisten = \"127.0.0.1:8080\"\ninsecure_plain_http = true\n[store]\nurl = \"sqlite://x\"\n[keys]\nkek_file = \"k\"";
    let c = parse(text, &BTreeMap::new())?;
    assert_eq!(c.issuer, "http://127.0.0.1:8080");
    assert!(c.tls.is_none());
    Ok(())
}
