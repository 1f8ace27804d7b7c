//! The `lanyard` binary end to end: `lanyard dev` in a temp dir on a free
//! port, then admin commands against it, a restart, and config errors.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");

struct Dev {
    child: Child,
    info: Value,
}

impl Dev {
    /// Starts `lanyard dev` and waits (bounded) until it has written a
    /// dev.json naming its own pid.
    fn start(dir: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        let child = Command::new(BIN)
            .args([
                "--data-dir",
                &dir.display().to_string(),
                "--output",
                "json",
                "dev",
                "--listen",
                "127.0.0.1:0",
            ])
            .env("LANYARD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(info) = std::fs::read_to_string(dir.join("dev.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            {
                if info["pid"].as_u64() == Some(u64::from(child.id())) {
                    return Ok(Self { child, info });
                }
            }
            if Instant::now() > deadline {
                return Err("lanyard dev did not write dev.json within 60s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM by pid, then wait: a graceful stop exits 0.
    fn stop(mut self) -> TestResult {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        assert!(status.success());
        let exit = self.child.wait()?;
        assert!(exit.success(), "lanyard dev exited with {exit}");
        Ok(())
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lanyard(dir: &Path, args: &[&str]) -> Result<Output, std::io::Error> {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("LANYARD_LOG", "warn")
        .output()
}

fn json_of(out: &Output) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(&out.stdout)
}

#[test]
fn dev_then_admin_commands_then_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let dev = Dev::start(d)?;
    for key in [
        "issuer",
        "admin_token",
        "workload_socket",
        "bundle_endpoint",
    ] {
        assert!(dev.info[key].is_string(), "dev.json lacks {key}");
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(d.join("dev.json"))?.permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(d.join("kek"))?.permissions().mode() & 0o777,
        0o600
    );

    let out = lanyard(
        d,
        &[
            "--output",
            "json",
            "tenant",
            "create",
            "payments",
            "--description",
            "pay team",
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out)?["id"], "payments");

    let dup = lanyard(d, &["tenant", "create", "payments"])?;
    assert_eq!(dup.status.code(), Some(1));
    let err = String::from_utf8_lossy(&dup.stderr);
    assert!(
        err.contains("already exists") && err.contains("409"),
        "{err}"
    );

    let bad = lanyard(d, &["tenant", "create", "Bad_Name"])?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lowercase"));

    let list = json_of(&lanyard(d, &["--output", "json", "tenant", "list"])?)?;
    let names: Vec<&str> = list["tenants"]
        .as_array()
        .ok_or("tenants")?
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(names, ["dev", "payments"]);
    let text = lanyard(d, &["tenant", "list"])?;
    assert!(String::from_utf8_lossy(&text.stdout).contains("pay team"));

    let keys = json_of(&lanyard(d, &["--output", "json", "keys", "list"])?)?;
    let kids: Vec<String> = keys["keys"]
        .as_array()
        .ok_or("keys")?
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(kids.len(), 4);

    let wrong = Command::new(BIN)
        .args([
            "--server",
            dev.info["issuer"].as_str().unwrap_or(""),
            "--admin-token",
            "lya1.0000000000000000.nope",
            "tenant",
            "list",
        ])
        .output()?;
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));

    let token = dev.info["admin_token"].as_str().unwrap_or("").to_owned();
    dev.stop()?;

    // Restart on the same directory: same keys, tenants and admin token.
    let dev = Dev::start(d)?;
    assert_eq!(dev.info["admin_token"].as_str(), Some(token.as_str()));
    let keys = json_of(&lanyard(d, &["--output", "json", "keys", "list"])?)?;
    let again: Vec<String> = keys["keys"]
        .as_array()
        .ok_or("keys")?
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(kids, again);
    let show = json_of(&lanyard(
        d,
        &["--output", "json", "tenant", "show", "payments"],
    )?)?;
    assert_eq!(show["description"], "pay team");
    dev.stop()
}

#[test]
fn admin_commands_without_a_server_explain_what_to_do() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = lanyard(dir.path(), &["tenant", "list"])?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dev.json") && err.contains("lanyard dev"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args([
            "--server",
            "http://127.0.0.1:1",
            "--admin-token",
            "x",
            "tenant",
            "list",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach") && err.contains("127.0.0.1:1"),
        "{err}"
    );
    Ok(())
}

#[test]
fn server_config_errors_name_the_key_and_exit_1() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("lanyard.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n")?;
    let out = Command::new(BIN)
        .args(["server", "--config"])
        .arg(&cfg)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lisen") && err.contains("lanyard.toml"),
        "{err}"
    );

    // A plain-HTTP server on a non-loopback address is refused.
    std::fs::write(&cfg, "[server]\nlisten = \"0.0.0.0:0\"\n[store]\nurl = \"sqlite://x.db\"\n[keys]\nkek_file = \"k\"\n")?;
    let out = Command::new(BIN)
        .args(["server", "--insecure-plain-http", "--config"])
        .arg(&cfg)
        .output()?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    // `server init` on a fresh config creates keys and a one-time admin token file.
    let kek = dir.path().join("kek");
    let db = dir.path().join("lanyard.db");
    let out = Command::new(BIN).args(["dev", "--help"]).output()?;
    assert!(out.status.success());
    std::fs::write(
        &cfg,
        format!(
            "issuer = \"http://127.0.0.1:8443\"\n[server]\nlisten = \"127.0.0.1:8443\"\n[store]\nurl = \"sqlite://{}\"\n[keys]\nkek_file = \"{}\"\n",
            db.display(),
            kek.display()
        ),
    )?;
    let out = Command::new(BIN)
        .args(["server", "init", "--insecure-plain-http", "--config"])
        .arg(&cfg)
        .output()?;
    assert_eq!(out.status.code(), Some(1), "no KEK file yet: refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("kek"));
    std::fs::write(&kek, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")?;
    std::fs::set_permissions(&kek, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let token_file = dir.path().join("admin.token");
    let out = Command::new(BIN)
        .args([
            "--output",
            "json",
            "server",
            "init",
            "--insecure-plain-http",
            "--config",
        ])
        .arg(&cfg)
        .arg("--token-file")
        .arg(&token_file)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert!(
        v.get("admin_token").is_none(),
        "token goes to the file only"
    );
    assert!(std::fs::read_to_string(&token_file)?.starts_with("lya1."));
    assert_eq!(
        std::fs::metadata(&db)?.permissions().mode() & 0o777,
        0o600,
        "the database file is private"
    );

    // KEK rotation: re-seal under a new KEK, then only the new KEK opens the keys.
    let new_kek = dir.path().join("kek.new");
    std::fs::write(&new_kek, "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=\n")?;
    std::fs::set_permissions(
        &new_kek,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let rekey = |new: &std::path::Path| {
        Command::new(BIN)
            .args([
                "--output",
                "json",
                "server",
                "rekey",
                "--insecure-plain-http",
                "--config",
            ])
            .arg(&cfg)
            .arg("--new-kek-file")
            .arg(new)
            .output()
    };
    let out = rekey(&new_kek)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(done["resealed"], 2, "active + next ES256");
    assert_eq!(
        done["resealed_cas"], 3,
        "root, active and next intermediates"
    );
    assert_eq!(done["audit_keys_resealed"], 1);
    // issue 9: a rekey that stopped half-way (here: all of it done, the
    // operator not sure) can be run again and finishes; each step skips
    // what is already under the new KEK.
    let out = rekey(&new_kek)?;
    assert!(
        out.status.success(),
        "a rerun finishes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        (
            again["resealed"].as_u64(),
            again["resealed_cas"].as_u64(),
            again["audit_keys_resealed"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    let init_again = || {
        Command::new(BIN)
            .args(["server", "init", "--insecure-plain-http", "--config"])
            .arg(&cfg)
            .output()
    };
    let out = init_again()?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "the old KEK no longer opens the keys"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("key-encryption key"));
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)?
            .replace(&kek.display().to_string(), &new_kek.display().to_string()),
    )?;
    let out = init_again()?;
    assert!(
        out.status.success(),
        "the new KEK opens them: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = rekey(&new_kek)?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("current key-encryption key"));
    Ok(())
}

/// Issue 3 end to end through `lanyard` commands against `lanyard dev`.
#[test]
fn exchange_explain_revoke_and_audit_through_the_cli() -> TestResult {
    use lanyard_jose::{Algorithm, Jwks, SigningKey};
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let dev = Dev::start(d)?;
    let ok = |args: &[&str]| -> Result<Output, Box<dyn std::error::Error>> {
        let out = lanyard(d, args)?;
        if !out.status.success() {
            return Err(format!(
                "lanyard {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(out)
    };
    let (key, _) = SigningKey::generate(Algorithm::Es256)?;
    let jwks_path = d.join("cluster-jwks.json");
    std::fs::write(
        &jwks_path,
        serde_json::to_vec(&Jwks {
            keys: vec![key.public_jwk()],
        })?,
    )?;
    ok(&["tenant", "create", "payments"])?;
    ok(&[
        "issuer",
        "add",
        "--name",
        "prod",
        "--kind",
        "kubernetes",
        "--issuer",
        "https://kubernetes.default.svc.cluster.local",
        "--jwks-file",
        &jwks_path.display().to_string(),
        "--audience",
        "lanyard",
        "--tenant",
        "payments",
    ])?;
    let entry = json_of(&ok(&[
        "--output",
        "json",
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/ns/payments/sa/api",
        "--tenant",
        "payments",
        "--issuer",
        "prod",
        "--selector",
        "k8s:ns:payments",
        "--selector",
        "k8s:sa:api",
        "--audience",
        "api://AzureADTokenExchange",
    ])?)?;
    assert!(entry["id"].is_string());
    // An entry with the same issuer and selectors is refused, naming the fix.
    let dup = lanyard(
        d,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/x",
            "--tenant",
            "payments",
            "--issuer",
            "prod",
            "--selector",
            "k8s:sa:api",
            "--selector",
            "k8s:ns:payments",
        ],
    )?;
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("same issuer and selectors"));

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mint = |sa: &str| {
        lanyard_jose::encode_jwt(
            &key,
            &serde_json::json!({
                "iss": "https://kubernetes.default.svc.cluster.local", "aud": ["lanyard"], "sub": format!("system:serviceaccount:payments:{sa}"),
                "iat": now, "exp": now + 600,
                "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": sa, "uid": format!("uid-{sa}")}, "pod": {"name": "p", "uid": "pod-123"}},
            }),
        )
    };
    let token_file = d.join("token.jwt");
    std::fs::write(&token_file, mint("api")?)?;
    let token_path = token_file.display().to_string();
    let out = ok(&[
        "token",
        "exchange",
        "--subject-token",
        &token_path,
        "--audience",
        "api://AzureADTokenExchange",
    ])?;
    let svid = String::from_utf8(out.stdout)?.trim().to_owned();
    let payload = svid.split('.').nth(1).ok_or("not a JWT")?;
    use base64::Engine as _;
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    assert_eq!(claims["sub"], "spiffe://example.org/ns/payments/sa/api");
    assert_eq!(claims["tenant"], "payments");
    assert_eq!(claims["iss"], dev.info["issuer"]);

    // explain: allow, then a wrong service account denied with the reason.
    ok(&[
        "explain",
        "--subject-token",
        &token_path,
        "--audience",
        "api://AzureADTokenExchange",
    ])?;
    let wrong = d.join("wrong.jwt");
    std::fs::write(&wrong, mint("web")?)?;
    let out = lanyard(
        d,
        &[
            "explain",
            "--subject-token",
            &wrong.display().to_string(),
            "--audience",
            "api://AzureADTokenExchange",
        ],
    )?;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL") && text.contains("no_matching_entry") && text.contains("k8s:sa:web"),
        "{text}"
    );

    // Revoke the pod: the next exchange is refused, with a correlation id audit can expand.
    ok(&[
        "revoke",
        "--k8s-pod-uid",
        "pod-123",
        "--reason",
        "pod compromised",
    ])?;
    let listed = json_of(&ok(&["--output", "json", "revoke", "list"])?)?;
    assert_eq!(listed["revocations"][0]["value"], "pod-123");
    let out = lanyard(
        d,
        &[
            "token",
            "exchange",
            "--subject-token",
            &token_path,
            "--audience",
            "api://AzureADTokenExchange",
        ],
    )?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("invalid_grant") && err.contains("revoked"),
        "{err}"
    );
    let cid = err
        .split("correlation id ")
        .nth(1)
        .map(|s| {
            s.chars()
                .take_while(char::is_ascii_hexdigit)
                .collect::<String>()
        })
        .ok_or("no correlation id")?;
    let shown = String::from_utf8(ok(&["audit", "show", &cid])?.stdout)?;
    assert!(
        shown.contains("deny")
            && shown.contains("revoked")
            && shown.contains("k8s-pod-uid pod-123"),
        "{shown}"
    );
    // ...with the steps that led to the denial.
    assert!(
        shown.contains("ok   attestation") && shown.contains("FAIL revocation"),
        "{shown}"
    );

    // The audit chain verifies; the export is JSON lines.
    let verify = json_of(&ok(&["--output", "json", "audit", "verify"])?)?;
    assert_eq!(verify["ok"], true);
    let export = String::from_utf8(ok(&["audit", "export", "--since", "1h"])?.stdout)?;
    let lines: Vec<Value> = export
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert!(lines
        .iter()
        .any(|e| e["action"] == "token.exchange" && e["decision"] == "allow"));
    assert!(lines.iter().any(|e| e["action"] == "revoke"));
    dev.stop()
}

#[test]
fn audience_profiles_through_the_cli() -> TestResult {
    use base64::Engine as _;
    use lanyard_jose::{Algorithm, Jwks, SigningKey};
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let _dev = Dev::start(d)?;
    let ok = |args: &[&str]| -> Result<Output, Box<dyn std::error::Error>> {
        let out = lanyard(d, args)?;
        if !out.status.success() {
            return Err(format!(
                "lanyard {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(out)
    };
    let (key, _) = SigningKey::generate(Algorithm::Es256)?;
    let jwks_path = d.join("cluster-jwks.json");
    std::fs::write(
        &jwks_path,
        serde_json::to_vec(&Jwks {
            keys: vec![key.public_jwk()],
        })?,
    )?;
    ok(&["tenant", "create", "payments"])?;
    let k8s = "https://kubernetes.default.svc.cluster.local";
    ok(&[
        "issuer",
        "add",
        "--name",
        "prod",
        "--kind",
        "kubernetes",
        "--issuer",
        k8s,
        "--jwks-file",
        &jwks_path.display().to_string(),
        "--audience",
        "lanyard",
        "--tenant",
        "payments",
    ])?;
    ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/ns/payments/sa/api",
        "--tenant",
        "payments",
        "--issuer",
        "prod",
        "--selector",
        "k8s:ns:payments",
        "--role",
        "reader",
    ])?;
    let azure = "api://AzureADTokenExchange";
    // A bad template is refused before any request, naming the rule.
    let bad = lanyard(
        d,
        &[
            "audience-profile",
            "add",
            "--audience",
            azure,
            "--tenant",
            "payments",
            "--algorithm",
            "RS256",
            "--subject-template",
            "role/{role}",
        ],
    )?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("{tenant}"));
    // The server refuses ES256 for Entra, naming the fix.
    let es = lanyard(
        d,
        &[
            "audience-profile",
            "add",
            "--audience",
            azure,
            "--algorithm",
            "ES256",
        ],
    )?;
    assert_eq!(es.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&es.stderr).contains("--algorithm RS256"));

    let created = json_of(&ok(&[
        "--output",
        "json",
        "audience-profile",
        "add",
        "--audience",
        azure,
        "--tenant",
        "payments",
        "--algorithm",
        "RS256",
        "--subject-template",
        "tenant/{tenant}/role/{role}",
    ])?)?;
    let id = created["id"].as_str().ok_or("no id")?.to_owned();
    assert_eq!(created["subject_template"], "tenant/{tenant}/role/{role}");
    assert_eq!(created["algorithm"], "RS256");
    let listed = json_of(&ok(&[
        "--output",
        "json",
        "audience-profile",
        "list",
        "--tenant",
        "payments",
    ])?)?;
    assert_eq!(listed["audience_profiles"][0]["id"], id.as_str());
    let text = String::from_utf8(ok(&["audience-profile", "list"])?.stdout)?;
    assert!(
        text.contains("tenant payments") && text.contains("RS256"),
        "{text}"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let token = lanyard_jose::encode_jwt(
        &key,
        &serde_json::json!({
            "iss": k8s, "aud": ["lanyard"], "sub": "system:serviceaccount:payments:api",
            "iat": now, "exp": now + 600,
            "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api", "uid": "uid-api"}},
        }),
    )?;
    let token_file = d.join("token.jwt");
    std::fs::write(&token_file, token)?;
    let exchange = || -> Result<(Value, Value), Box<dyn std::error::Error>> {
        let out = ok(&[
            "token",
            "exchange",
            "--subject-token",
            &token_file.display().to_string(),
            "--audience",
            azure,
        ])?;
        let jwt = String::from_utf8(out.stdout)?.trim().to_owned();
        let part = |i: usize| -> Result<Value, Box<dyn std::error::Error>> {
            let p = jwt.split('.').nth(i).ok_or("not a JWT")?;
            Ok(serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p)?,
            )?)
        };
        Ok((part(0)?, part(1)?))
    };
    let (header, claims) = exchange()?;
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["sub"], "tenant/payments/role/reader");
    assert_eq!(claims["aud"], serde_json::json!([azure]));

    let deleted = json_of(&ok(&[
        "--output",
        "json",
        "audience-profile",
        "delete",
        &id,
    ])?)?;
    assert_eq!(deleted["deleted"], id.as_str());
    let (_, claims) = exchange()?;
    assert_eq!(claims["sub"], "spiffe://example.org/ns/payments/sa/api");
    Ok(())
}

/// `psql` from the PostgreSQL that scripts/test.sh installs.
fn psql() -> Option<std::path::PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    dirs.filter_map(Result::ok)
        .map(|d| d.path().join("bin/psql"))
        .find(|p| p.exists())
}

fn run_psql(psql: &Path, url: &str, sql: &str) -> Result<Output, std::io::Error> {
    Command::new(psql)
        .args([url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
}

/// The broker through the CLI against a real PostgreSQL: an admin adds a
/// backend, a role and a granted entry; a local process gets credentials
/// through `lanyard dev`'s Workload API socket (and from a token file), logs
/// in with them, and after `lease revoke` cannot.
#[test]
fn broker_commands_and_creds_through_the_workload_api() -> TestResult {
    let (Ok(base), Some(psql)) = (std::env::var("LANYARD_TEST_POSTGRES_URL"), psql()) else {
        eprintln!("SKIPPED (PostgreSQL): set LANYARD_TEST_POSTGRES_URL (scripts/test.sh does)");
        return Ok(());
    };
    let tag = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos()
    );
    let db = format!("lanyard_cli_{tag}");
    let (admin, group) = (format!("adm_cli_{tag}"), format!("ro_cli_{tag}"));
    let out = run_psql(&psql, &base, &format!("CREATE DATABASE {db}"))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = base.rsplit_once('/').map_or(base.as_str(), |(p, _)| p);
    let db_url = format!("{prefix}/{db}");
    let out = run_psql(
        &psql,
        &db_url,
        &format!(
            "CREATE ROLE \"{admin}\" LOGIN CREATEROLE PASSWORD 'cli-pass'; CREATE ROLE \"{group}\" NOLOGIN; \
             GRANT \"{group}\" TO \"{admin}\" WITH ADMIN OPTION; CREATE TABLE visible (v int); \
             INSERT INTO visible VALUES (42); GRANT SELECT ON visible TO \"{group}\";"
        ),
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir()?;
    let dev = Dev::start(dir.path())?;
    let d = dir.path();
    let admin_url = db_url.replacen("://postgres@", &format!("://{admin}:cli-pass@"), 1);
    let out = lanyard(
        d,
        &[
            "broker", "backend", "add", "postgres", "--name", "appdb", "--url", &admin_url,
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("cli-pass"));
    let creation = d.join("create.sql");
    std::fs::write(
        &creation,
        format!("CREATE ROLE \"{{{{name}}}}\" LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}';\nGRANT \"{group}\" TO \"{{{{name}}}}\";\n"),
    )?;
    let revocation = d.join("revoke.sql");
    std::fs::write(
        &revocation,
        format!("REVOKE \"{group}\" FROM \"{{{{name}}}}\";\n"),
    )?;
    let out = lanyard(
        d,
        &[
            "broker",
            "role",
            "add",
            "appdb/readonly",
            "--creation-sql",
            &creation.display().to_string(),
            "--revocation-sql",
            &revocation.display().to_string(),
            "--ttl",
            "10m",
            "--max-ttl",
            "1h",
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A template with an unquoted placeholder is refused, naming the fix.
    let bad = d.join("bad.sql");
    std::fs::write(&bad, "CREATE ROLE {{name}} PASSWORD '{{password}}'")?;
    let out = lanyard(
        d,
        &[
            "broker",
            "role",
            "add",
            "appdb/bad",
            "--creation-sql",
            &bad.display().to_string(),
        ],
    )?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"{{name}}\""));

    let uid = String::from_utf8(Command::new("id").arg("-u").output()?.stdout)?;
    let out = lanyard(
        d,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/cli-broker",
            "--tenant",
            "dev",
            "--selector",
            &format!("unix:uid:{}", uid.trim()),
            "--grant",
            "appdb/readonly",
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Through the Workload API socket (the agent picks the entry up at its next sync).
    let socket = dev.info["workload_socket"]
        .as_str()
        .ok_or("no workload_socket")?
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let env_out = loop {
        let out = lanyard(
            d,
            &[
                "broker",
                "creds",
                "appdb/readonly",
                "--socket",
                &socket,
                "--format",
                "env",
            ],
        )?;
        if out.status.success() {
            break String::from_utf8(out.stdout)?;
        }
        assert!(
            Instant::now() < deadline,
            "no credentials within 30 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let var = |name: &str| {
        env_out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(|v| v.trim_matches('\'').to_owned())
            .unwrap_or_default()
    };
    let (user, password, lease) = (var("PGUSER"), var("PGPASSWORD"), var("LANYARD_LEASE_ID"));
    assert!(user.starts_with("lanyard_readonly_"), "{env_out}");
    let user_url = db_url.replacen("://postgres@", &format!("://{user}:{password}@"), 1);
    let out = run_psql(&psql, &user_url, "SELECT v FROM visible")?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // From a token file: a JWT-SVID for <issuer>/broker, printed as a URI.
    let audience = format!("{}/broker", dev.info["issuer"].as_str().unwrap_or_default());
    let out = lanyard(
        d,
        &[
            "svid",
            "fetch",
            "--socket",
            &socket,
            "--jwt",
            "--audience",
            &audience,
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_file = d.join("svid.jwt");
    std::fs::write(&token_file, &out.stdout)?;
    let out = lanyard(
        d,
        &[
            "broker",
            "creds",
            "appdb/readonly",
            "--token-file",
            &token_file.display().to_string(),
        ],
    )?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uri = String::from_utf8(out.stdout)?;
    let out = run_psql(&psql, uri.trim(), "SELECT v FROM visible")?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = lanyard(
        d,
        &["--output", "json", "broker", "lease", "list", "--active"],
    )?;
    assert_eq!(json_of(&out)?["leases"].as_array().map(Vec::len), Some(2));
    let out = lanyard(d, &["broker", "lease", "revoke", &lease])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("the user is gone"));
    assert!(!run_psql(&psql, &user_url, "SELECT 1")?.status.success());
    let out = lanyard(
        d,
        &[
            "--output",
            "json",
            "broker",
            "lease",
            "list",
            "--pending-revocation",
        ],
    )?;
    assert_eq!(json_of(&out)?["leases"].as_array().map(Vec::len), Some(0));
    dev.stop()
}

/// `lanyard webhook render`: the webhook's code path on one pod, JSON and
/// text, exit 1 when the pod would be refused.
#[test]
fn webhook_render_shows_the_mutation_or_the_refusal() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pod = dir.path().join("deploy.yaml");
    std::fs::write(
        &pod,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: payments}\nspec:\n  template:\n    metadata:\n      labels: {azure.workload.identity/use: \"true\"}\n    spec:\n      serviceAccountName: api\n      containers: [{name: app, image: nginx}]\n",
    )?;
    let sa = dir.path().join("sa.json");
    std::fs::write(
        &sa,
        r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"api","namespace":"payments","annotations":{"azure.workload.identity/client-id":"c-1"}}}"#,
    )?;
    let cfg = dir.path().join("webhook.toml");
    std::fs::write(
        &cfg,
        "[webhook.azure]\ntenant_id = \"t-1\"\ntoken_layout = \"v1.5\"\n",
    )?;

    let render = |extra: &[&Path], json: bool| -> Result<Output, std::io::Error> {
        let mut c = Command::new(BIN);
        c.args(["webhook", "render", "--pod"]).arg(&pod);
        for (flag, p) in ["--service-account", "--config"].iter().zip(extra) {
            c.arg(flag).arg(p);
        }
        if json {
            c.args(["--output", "json"]);
        }
        c.output()
    };

    let out = render(&[&sa, &cfg], true)?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["allowed"], true);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("mutated (azure)"),
        "{v}"
    );
    assert!(v["patch"].as_array().is_some_and(|p| !p.is_empty()));
    let env = &v["pod"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env[0],
        serde_json::json!({"name": "AZURE_CLIENT_ID", "value": "c-1"})
    );
    assert_eq!(
        env[1],
        serde_json::json!({"name": "AZURE_TENANT_ID", "value": "t-1"})
    );
    assert_eq!(
        env[2]["value"],
        "/var/run/secrets/azure/tokens/azure-identity-token"
    );
    assert_eq!(
        v["pod"]["spec"]["volumes"][0]["name"],
        "azure-identity-token"
    );

    // Text: a readable diff.
    let out = render(&[&sa, &cfg], false)?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("admitted: mutated (azure)"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with('+') && l.contains("name: AZURE_CLIENT_ID")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("--- pod as given")),
        "{text}"
    );

    // No service account: refused as the webhook would refuse it, exit 1.
    let out = render(&[], true)?;
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["allowed"], false);
    assert_eq!(v["message"], "serviceaccounts \"api\" not found");

    // A bad config names its key.
    std::fs::write(
        &cfg,
        "[webhook.azure]\ntenant_id = \"t\"\ncloud = \"Mars\"\n",
    )?;
    let out = render(&[&sa, &cfg], false)?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("webhook.azure.cloud") && err.contains("AzureChinaCloud"),
        "{err}"
    );

    // `lanyard webhook` without --config says what to do; a config without TLS names the key.
    let out = Command::new(BIN).arg("webhook").output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhook render --pod"));
    std::fs::write(&cfg, "[webhook]\nlisten = \"127.0.0.1:0\"\n")?;
    let out = Command::new(BIN)
        .args(["webhook", "--config"])
        .arg(&cfg)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhook.tls_cert"));
    Ok(())
}

// issue 9: `lanyard server` on a missing or 0-byte database started afresh,
// with new signing keys, a new CA and an audit log restarting at sequence 1;
// and it started with the audit table's append-only triggers gone.
#[test]
fn server_never_creates_or_recreates_a_store() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("lanyard.toml");
    let kek = dir.path().join("kek");
    let db = dir.path().join("lanyard.db");
    std::fs::write(&kek, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")?;
    std::fs::set_permissions(&kek, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::write(
        &cfg,
        format!(
            "issuer = \"http://127.0.0.1:1\"\n[server]\nlisten = \"127.0.0.1:1\"\n[store]\nurl = \"sqlite://{}\"\n[keys]\nkek_file = \"{}\"\n[node_api]\nlisten = \"\"\n",
            db.display(),
            kek.display()
        ),
    )?;
    let serve = || {
        Command::new(BIN)
            .args(["server", "--insecure-plain-http", "--config"])
            .arg(&cfg)
            .env("LANYARD_LOG", "error")
            .output()
    };
    let out = serve()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lanyard server init"), "{err}");
    assert!(!db.exists(), "nothing was created");
    let out = Command::new(BIN)
        .args(["server", "init", "--insecure-plain-http", "--config"])
        .arg(&cfg)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Truncated to zero bytes (and its WAL gone): refused and left alone.
    let files = ["lanyard.db", "lanyard.db-wal", "lanyard.db-shm"];
    let saved: Vec<Option<Vec<u8>>> = files
        .iter()
        .map(|f| std::fs::read(dir.path().join(f)).ok())
        .collect();
    for f in &files[1..] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    std::fs::write(&db, b"")?;
    let out = serve()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never creates one"));
    assert_eq!(std::fs::metadata(&db)?.len(), 0);
    // Restored, but with the append-only triggers dropped: refused, saying why.
    for (f, bytes) in files.iter().zip(&saved) {
        if let Some(b) = bytes {
            std::fs::write(dir.path().join(f), b)?;
        }
    }
    let dropped = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DROP TRIGGER audit_events_no_delete'); c.commit()",
        ])
        .arg(&db)
        .status()?;
    assert!(dropped.success());
    let out = serve()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("append-only"), "{err}");
    Ok(())
}

/// Rewrites a Lanyard SQLite database as someone with write access could:
/// `action` is `truncate N` (drop the events after N and move the head
/// back, consistently) or `rewrite N` (change event N's reason and re-hash
/// the chain from there, consistently). The hash is recomputed here in
/// Python, independently of Lanyard's code.
const TAMPER: &str = r#"
import hashlib, json, sqlite3, sys
db, action, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = sqlite3.connect(db)
c.execute("DROP TRIGGER audit_events_no_update")
c.execute("DROP TRIGGER audit_events_no_delete")
if action == "delete_newest":
    c.execute("DELETE FROM audit_events WHERE seq > ?", (n,))
if action == "truncate":
    c.execute("DELETE FROM audit_events WHERE seq > ?", (n,))
    seq, h = c.execute("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1").fetchone()
    c.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq, h))
if action == "rewrite":
    rows = c.execute("SELECT seq, at_ms, correlation_id, actor, action, subject, tenant, decision, reason, evidence_digest, prev_hash FROM audit_events WHERE seq >= ? ORDER BY seq", (n,)).fetchall()
    prev = rows[0][10]
    for r in rows:
        r = list(r)
        if r[0] == n:
            r[8] = "nothing to see here"
        fields = json.dumps(r[:10], separators=(",", ":"), ensure_ascii=False)
        h = hashlib.sha256((prev + "\n" + fields).encode()).hexdigest()
        c.execute("UPDATE audit_events SET reason = ?, prev_hash = ?, hash = ? WHERE seq = ?", (r[8], prev, h, r[0]))
        prev = h
    c.execute("UPDATE audit_head SET hash = ?", (prev,))
c.execute("CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END")
c.execute("CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END")
c.commit()
"#;

// issue 9: deleting the newest audit events (after dropping the triggers)
// left `lanyard audit verify` saying "intact"; nothing caught a truncated,
// rolled-back or consistently rewritten log.
#[test]
fn audit_tampering_is_caught_by_the_head_and_signed_checkpoints() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ok = |args: &[&str]| -> Result<Output, Box<dyn std::error::Error>> {
        let out = lanyard(d, args)?;
        if !out.status.success() {
            return Err(
                format!("lanyard {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into(),
            );
        }
        Ok(out)
    };
    let verify = |checkpoint: Option<&Path>| {
        let mut args = vec!["--output", "json", "audit", "verify"];
        let shown;
        if let Some(c) = checkpoint {
            shown = c.display().to_string();
            args.extend(["--checkpoint", shown.as_str()]);
        }
        lanyard(d, &args)
    };
    let tamper = |action: &str, n: i64| -> TestResult {
        let s = Command::new("python3")
            .args(["-c", TAMPER])
            .arg(d.join("lanyard.db"))
            .args([action, &n.to_string()])
            .status()?;
        if s.success() {
            Ok(())
        } else {
            Err(format!("tamper {action} {n} failed").into())
        }
    };
    // A log with a signed checkpoint in the middle, and the published key.
    let dev = Dev::start(d)?;
    for t in ["a", "b", "c"] {
        ok(&["tenant", "create", t])?;
    }
    let cp = d.join("checkpoint.json");
    std::fs::write(
        &cp,
        ok(&["--output", "json", "audit", "checkpoint", "--now"])?.stdout,
    )?;
    let signed: Value = serde_json::from_slice(&std::fs::read(&cp)?)?;
    let seq = signed["seq"].as_i64().ok_or("seq")?;
    for t in ["d", "e"] {
        ok(&["tenant", "create", t])?;
    }
    let keys_url = dev.info["audit_keys_uri"]
        .as_str()
        .ok_or("audit_keys_uri")?
        .to_owned();
    let keys = d.join("audit-keys.json");
    let fetched = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())",
            &keys_url,
        ])
        .output()?;
    assert!(fetched.status.success(), "the audit keys are public");
    std::fs::write(&keys, &fetched.stdout)?;
    let out = verify(Some(&cp))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The server also wrote its checkpoints to the configured file.
    let sink = std::fs::read_to_string(d.join("audit-checkpoints.jsonl"))?;
    assert!(sink
        .lines()
        .any(|l| l.contains(signed["jws"].as_str().unwrap_or("-"))));
    // A checkpoint forged with another key is refused.
    let mut forged = signed.clone();
    forged["jws"] = json_str(&format!("{}x", signed["jws"].as_str().unwrap_or("")));
    let forged_path = d.join("forged.json");
    std::fs::write(&forged_path, forged.to_string())?;
    let out = verify(Some(&forged_path))?;
    assert_eq!(out.status.code(), Some(1), "a bad signature is refused");
    dev.stop()?;

    // A stopped SQLite store is its file and its write-ahead log.
    let files = ["lanyard.db", "lanyard.db-wal", "lanyard.db-shm"];
    let backup: Vec<Option<Vec<u8>>> = files
        .iter()
        .map(|f| std::fs::read(d.join(f)).ok())
        .collect();
    let restore = || -> TestResult {
        for (f, bytes) in files.iter().zip(&backup) {
            let _ = std::fs::remove_file(d.join(f));
            if let Some(b) = bytes {
                std::fs::write(d.join(f), b)?;
            }
        }
        Ok(())
    };
    let broken = |out: &Output, words: &str| {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let hit = out.status.code() == Some(1)
            && v["problem"].as_str().is_some_and(|p| p.contains(words));
        if !hit {
            eprintln!(
                "expected {words:?}: {} / {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        hit
    };

    // 1. The newest events deleted, the head left: plain verify catches it.
    tamper("delete_newest", seq + 1)?;
    let dev = Dev::start(d)?;
    let out = verify(None)?;
    assert!(
        broken(&out, "events were removed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    dev.stop()?;

    // 2. Truncated below the checkpoint with the head moved back: a
    //    consistent chain, so only the checkpoint shows it.
    restore()?;
    tamper("truncate", seq - 2)?;
    let dev = Dev::start(d)?;
    assert!(
        verify(None)?.status.success(),
        "consistent after the rollback"
    );
    let out = verify(Some(&cp))?;
    assert!(
        broken(&out, "truncated or rolled back") || broken(&out, "rewritten"),
        "the log no longer holds the checkpointed state"
    );
    dev.stop()?;

    // 3. An event before the checkpoint rewritten and every hash after it
    //    recomputed: consistent again, and again only the checkpoint shows it.
    restore()?;
    tamper("rewrite", seq - 1)?;
    let dev = Dev::start(d)?;
    assert!(
        verify(None)?.status.success(),
        "consistent after the rewrite"
    );
    let out = verify(Some(&cp))?;
    assert!(
        broken(&out, "rewritten"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The published key alone checks the checkpoint's signature (offline copy).
    let out = lanyard(
        d,
        &[
            "--output",
            "json",
            "audit",
            "verify",
            "--checkpoint",
            &cp.display().to_string(),
            "--audit-keys",
            &keys.display().to_string(),
        ],
    )?;
    assert!(broken(&out, "rewritten"));
    dev.stop()?;
    Ok(())
}

fn json_str(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// Runs `lanyard` with `args` and asserts it succeeded.
fn ok(dir: &Path, args: &[&str]) -> Result<Output, Box<dyn std::error::Error>> {
    let out = lanyard(dir, args)?;
    if !out.status.success() {
        return Err(format!(
            "lanyard {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

// issue 13: declarative entries.
#[test]
fn entry_apply_is_declarative_idempotent_and_scoped() -> TestResult {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let _dev = Dev::start(d)?;
    ok(d, &["tenant", "create", "pay"])?;
    ok(d, &["tenant", "create", "ops"])?;
    ok(
        d,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://example.org/ops/db",
            "--tenant",
            "ops",
            "--selector",
            "k8s:ns:ops",
            "--selector",
            "k8s:sa:db",
            "--selector",
            "k8s:cluster:prod",
        ],
    )?;
    let entry = |n: &str, aud: &str| {
        format!(
            "- spiffe_id: spiffe://example.org/pay/{n}\n  selectors: [k8s:ns:pay, 'k8s:sa:{n}', k8s:cluster:prod]\n  audiences: ['{aud}']\n"
        )
    };
    let file = d.join("pay.yaml");
    std::fs::write(
        &file,
        [
            entry("a", "api://x"),
            entry("b", "api://x"),
            entry("c", "api://x"),
        ]
        .concat(),
    )?;
    let f = file.display().to_string();
    let pay_entries = |d: &Path| -> Result<Vec<Value>, Box<dyn std::error::Error>> {
        let out = ok(d, &["--output", "json", "entry", "list", "--tenant", "pay"])?;
        Ok(json_of(&out)?["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    };

    // A dry run prints the plan and changes nothing.
    let out = ok(
        d,
        &["entry", "apply", "-f", &f, "--tenant", "pay", "--dry-run"],
    )?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("create")).count(),
        3,
        "{text}"
    );
    assert!(text.contains("nothing was changed"), "{text}");
    assert!(pay_entries(d)?.is_empty());

    let out = ok(d, &["entry", "apply", "-f", &f, "--tenant", "pay"])?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("created 3"),
        "{out:?}"
    );
    assert_eq!(pay_entries(d)?.len(), 3);
    // Twice: nothing changes, and it says so.
    let out = ok(d, &["entry", "apply", "-f", &f, "--tenant", "pay"])?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to change: 3 entries unchanged"),
        "{out:?}"
    );
    // What `entry list --output json` prints is itself a file to apply.
    let listed = d.join("listed.json");
    std::fs::write(
        &listed,
        &ok(d, &["--output", "json", "entry", "list", "--tenant", "pay"])?.stdout,
    )?;
    let out = ok(
        d,
        &[
            "--output",
            "json",
            "entry",
            "apply",
            "-f",
            &listed.display().to_string(),
        ],
    )?;
    let v = json_of(&out)?;
    assert_eq!(
        (v["unchanged"].as_u64(), v["create"].as_u64()),
        (Some(3), Some(0)),
        "{v}"
    );

    // Change one, drop one, add one; prune deletes only in the scope.
    std::fs::write(
        &file,
        [
            entry("a", "api://changed"),
            entry("c", "api://x"),
            entry("d", "api://x"),
        ]
        .concat(),
    )?;
    let out = ok(
        d,
        &[
            "--output",
            "json",
            "entry",
            "apply",
            "-f",
            &f,
            "--tenant",
            "pay",
            "--prune",
            "--dry-run",
        ],
    )?;
    let v = json_of(&out)?;
    assert_eq!(
        (
            v["create"].as_u64(),
            v["update"].as_u64(),
            v["delete"].as_u64(),
            v["unchanged"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(pay_entries(d)?.len(), 3, "a dry run changes nothing");
    let out = ok(
        d,
        &[
            "--output", "json", "entry", "apply", "-f", &f, "--tenant", "pay", "--prune",
        ],
    )?;
    assert!(json_of(&out)?["revision"].is_i64());
    let mut ids: Vec<String> = pay_entries(d)?
        .iter()
        .map(|e| e["spiffe_id"].as_str().unwrap_or("").to_owned())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "spiffe://example.org/pay/a",
            "spiffe://example.org/pay/c",
            "spiffe://example.org/pay/d"
        ]
    );
    let all = json_of(&ok(d, &["--output", "json", "entry", "list"])?)?;
    assert!(
        all["entries"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["tenant"] == "ops")),
        "another tenant's entry survives --prune"
    );

    // Hostile files are refused, by entry position, before anything is written.
    let before = pay_entries(d)?.len();
    for (body, expect) in [
        ("- {spiffe_id: 'spiffe://example.org/x', tenant: ops, selectors: ['k8s:sa:x', 'k8s:cluster:prod']}\n", "outside --tenant pay"),
        ("- {spiffe_id: 'spiffe://example.org/lanyard/node/n1', selectors: ['k8s:sa:x', 'k8s:cluster:prod']}\n", "reserved"),
        ("- {spiffe_id: 'spiffe://example.org/steal', selectors: ['k8s:ns:ops', 'k8s:sa:db', 'k8s:cluster:prod']}\n", "tenant ops"),
        ("- {spiffe_id: 'spiffe://example.org/ok', selectors: ['k8s:sa:y', 'k8s:cluster:prod']}\n- {spiffe_id: 'spiffe://example.org/ok2', selectors: ['k8s:sa:y', 'k8s:cluster:prod']}\n", "entry #2"),
        ("- {spiffe_id: 'spiffe://example.org/ok', selectors: ['k8s:sa:y'], bogus: 1}\n", "bogus"),
        ("{spiffe_id: 1}\n", "expected a list"),
    ] {
        std::fs::write(&file, body)?;
        let out = lanyard(d, &["entry", "apply", "-f", &f, "--tenant", "pay", "--prune"])?;
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{body} was accepted");
        assert!(err.contains(expect), "{body}: {err}");
    }
    assert_eq!(pay_entries(d)?.len(), before);

    // Each change is audited, in the admin's name.
    let export = String::from_utf8(ok(d, &["audit", "export"])?.stdout)?;
    let applied = export
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["reason"] == "entry apply")
        .count();
    assert_eq!(
        applied,
        3 + 3,
        "3 creates, then 1 create + 1 update + 1 delete"
    );
    Ok(())
}

// issue 13: after restoring a backup, a new change-log epoch makes every
// agent resync in full (they never take an older revision within one).
#[test]
fn new_epoch_after_a_restore_is_audited() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("lanyard.toml");
    let kek = dir.path().join("kek");
    std::fs::write(&kek, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")?;
    std::fs::set_permissions(&kek, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::write(
        &cfg,
        format!(
            "issuer = \"http://127.0.0.1:1\"\n[server]\nlisten = \"127.0.0.1:1\"\n[store]\nurl = \"sqlite://{}\"\n[keys]\nkek_file = \"{}\"\n[node_api]\nlisten = \"\"\n",
            dir.path().join("lanyard.db").display(),
            kek.display()
        ),
    )?;
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .args(["--insecure-plain-http", "--output", "json"])
            .env("LANYARD_LOG", "error")
            .output()
    };
    let out = run(&["server", "new-epoch"])?;
    assert!(!out.status.success(), "no store yet: refused");
    assert!(run(&["server", "init"])?.status.success());
    let out = run(&["server", "new-epoch"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(&out)?;
    assert_ne!(v["epoch"], v["old_epoch"]);
    let again = json_of(&run(&["server", "new-epoch"])?)?;
    assert_eq!(again["old_epoch"], v["epoch"], "the epoch was stored");
    let db = dir.path().join("lanyard.db");
    let audited = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT count(*) FROM audit_events WHERE action='changes.epoch'\").fetchone()[0])",
        ])
        .arg(&db)
        .output()?;
    assert_eq!(String::from_utf8_lossy(&audited.stdout).trim(), "2");
    Ok(())
}
