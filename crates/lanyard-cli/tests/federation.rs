//! SPIFFE federation end to end (issue 12): two `lanyard dev` servers of
//! different trust domains as processes, federating through each other's
//! real `https_spiffe` bundle endpoints, driven by `lanyard` commands only.
//! Workloads are checked with the `spiffe` crate (crates.io) as Workload API
//! client; the bundle endpoint is also read by Python's `ssl` + `http.client`
//! (a TLS stack no one here wrote) and an `https_web` peer is Python's
//! `http.server` behind `ssl`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod support;

use support::{dev_with, eventually, lanyard, ok_json, uid, Proc, TestResult};

fn dev(
    dir: &Path,
    td: &str,
    env: &[(&str, &str)],
) -> Result<(Proc, Value), Box<dyn std::error::Error>> {
    dev_with(dir, &["--trust-domain", td], env)
}

fn j(dir: &Path, args: &[&str]) -> Result<Value, Box<dyn std::error::Error>> {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    ok_json(&lanyard(dir, &all)?)
}

/// A JWT-SVID for `audience` from the Workload API at `socket`, through
/// `lanyard svid fetch` (retried while the agent signs its first SVIDs).
async fn jwt_svid(
    dir: &Path,
    socket: &str,
    audience: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    eventually(Duration::from_secs(20), || {
        let out = lanyard(
            dir,
            &[
                "--output",
                "json",
                "svid",
                "fetch",
                "--socket",
                socket,
                "--jwt",
                "--audience",
                audience,
            ],
        );
        async move {
            let v: Value = serde_json::from_slice(&out.ok()?.stdout).ok()?;
            v["token"].as_str().map(str::to_owned)
        }
    })
    .await
    .ok_or_else(|| format!("no JWT-SVID from {socket}").into())
}

fn federation_row(dir: &Path, td: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let v = j(dir, &["federation", "list"])?;
    v["federations"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["trust_domain"] == td).cloned())
        .ok_or_else(|| format!("{td} not in federation list: {v}").into())
}

fn audit_events(dir: &Path) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
    // JSON lines, oldest first.
    let out = lanyard(dir, &["--output", "json", "audit", "tail", "-n", "500"])?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    let mut events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    events.reverse();
    Ok(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trust_domains_federate_over_https_spiffe() -> TestResult {
    let (da, db) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (_a, ia) = dev(da.path(), "a.test", &[])?;
    let (_b, ib) = dev(db.path(), "b.test", &[])?;
    let (a, b) = (da.path(), db.path());
    let b_endpoint = ib["federation_bundle_endpoint"]
        .as_str()
        .ok_or("no endpoint")?;
    assert!(b_endpoint.starts_with("https://127.0.0.1:"), "{b_endpoint}");
    assert_eq!(
        ib["federation_endpoint_spiffe_id"],
        "spiffe://b.test/lanyard/server"
    );

    // The bootstrap bundle, out of band: what B's operator prints.
    let b_bundle = lanyard(b, &["bundle", "show"])?;
    assert!(b_bundle.status.success());
    let boot = a.join("b.test.json");
    std::fs::write(&boot, &b_bundle.stdout)?;
    let b_doc: Value = serde_json::from_slice(&b_bundle.stdout)?;
    assert!(b_doc["spiffe_sequence"].is_i64());

    // https_spiffe needs a bootstrap bundle: refused without one, with the fix named.
    let no_boot = lanyard(
        a,
        &[
            "federation",
            "add",
            "--trust-domain",
            "b.test",
            "--bundle-endpoint",
            b_endpoint,
            "--endpoint-spiffe-id",
            "spiffe://b.test/lanyard/server",
            "--tenant",
            "dev",
        ],
    )?;
    assert!(!no_boot.status.success());
    assert!(String::from_utf8_lossy(&no_boot.stderr).contains("--initial-bundle"));

    let added = j(
        a,
        &[
            "federation",
            "add",
            "--trust-domain",
            "b.test",
            "--bundle-endpoint",
            b_endpoint,
            "--profile",
            "https_spiffe",
            "--endpoint-spiffe-id",
            "spiffe://b.test/lanyard/server",
            "--initial-bundle",
            &boot.display().to_string(),
            "--tenant",
            "dev",
        ],
    )?;
    assert_eq!(added["trust_domain"], "b.test");
    let refreshed = j(a, &["federation", "refresh", "b.test"])?;
    assert!(
        matches!(refreshed["outcome"].as_str(), Some("updated" | "unchanged")),
        "{refreshed}"
    );
    let row = federation_row(a, "b.test")?;
    assert!(row["last_error"].is_null(), "{row}");
    assert!(row["last_success_at"].is_i64(), "{row}");
    assert!(row["next_refresh_at"].as_i64() > row["last_success_at"].as_i64());

    // A workload on A receives B's bundle only once its entry federates with b.test.
    let me = format!("unix:uid:{}", uid()?);
    let web = j(
        a,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://a.test/web",
            "--tenant",
            "dev",
            "--selector",
            &me,
        ],
    )?;
    let socket_a = ia["workload_socket"]
        .as_str()
        .ok_or("no socket")?
        .to_owned();
    let client = spiffe::WorkloadApiClient::connect_to(format!("unix:{socket_a}")).await?;
    let b_td = spiffe::TrustDomain::new("b.test")?;
    let own = eventually(Duration::from_secs(20), || {
        let c = client.clone();
        async move { c.fetch_x509_context().await.ok() }
    })
    .await
    .ok_or("no X.509 context on A")?;
    assert!(
        own.bundle_set().get(&b_td).is_none(),
        "b.test bundle handed out without federates_with"
    );
    lanyard(a, &["entry", "delete", web["id"].as_str().ok_or("id")?])?;
    let bad = lanyard(
        a,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://a.test/web",
            "--tenant",
            "dev",
            "--selector",
            &me,
            "--federates-with",
            "nowhere.test",
        ],
    )?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lanyard federation add"));
    j(
        a,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://a.test/web",
            "--tenant",
            "dev",
            "--selector",
            &me,
            "--federates-with",
            "b.test",
        ],
    )?;
    let b_roots: Vec<String> = j(b, &["bundle", "show", "--format", "pem"])?["pem"]
        .as_str()
        .unwrap_or_default()
        .split("-----END CERTIFICATE-----")
        .filter(|p| p.contains("BEGIN"))
        .map(|p| p.trim().to_owned())
        .collect();
    assert!(!b_roots.is_empty());
    let fed = eventually(Duration::from_secs(20), || {
        let c = client.clone();
        let td = b_td.clone();
        async move {
            let ctx = c.fetch_x509_context().await.ok()?;
            let bundle = ctx.bundle_set().get(&td)?;
            Some(bundle.authorities().len())
        }
    })
    .await
    .ok_or("B's bundle never reached A's workload")?;
    assert_eq!(fed, b_roots.len());

    // A JWT-SVID of B's workload, for A's issuer as audience.
    j(
        b,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://b.test/billing",
            "--tenant",
            "dev",
            "--selector",
            &me,
        ],
    )?;
    let a_issuer = ia["issuer"].as_str().ok_or("issuer")?.to_owned();
    let socket_b = ib["workload_socket"]
        .as_str()
        .ok_or("no socket")?
        .to_owned();
    let jwt = jwt_svid(b, &socket_b, &a_issuer).await?;
    let tok = a.join("b.jwt");
    std::fs::write(&tok, &jwt)?;
    let exchange = |dir: &Path| {
        lanyard(
            dir,
            &[
                "--output",
                "json",
                "token",
                "exchange",
                "--subject-token",
                &tok.display().to_string(),
                "--audience",
                "api.a.test",
            ],
        )
    };

    // No entry maps spiffe://b.test/billing: invalid_grant, audited.
    let denied = exchange(a)?;
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("invalid_grant"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let deny = audit_events(a)?
        .into_iter()
        .find(|e| e["action"] == "token.exchange" && e["decision"] == "deny")
        .ok_or("the denial is not audited")?;
    assert!(
        deny["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("b.test"),
        "{deny}"
    );

    // Hostile entries: a reserved or foreign-tenant mapping is refused.
    let wrong_tenant = lanyard(
        a,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://a.test/partner",
            "--tenant",
            "nobody",
            "--selector",
            "spiffe:id:spiffe://b.test/billing",
        ],
    )?;
    assert!(!wrong_tenant.status.success());
    let reserved = lanyard(
        a,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://a.test/lanyard/node/x",
            "--tenant",
            "dev",
            "--selector",
            "spiffe:id:spiffe://b.test/billing",
        ],
    )?;
    assert!(!reserved.status.success());
    assert!(String::from_utf8_lossy(&reserved.stderr).contains("reserved"));

    j(
        a,
        &[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://a.test/partner/billing",
            "--tenant",
            "dev",
            "--selector",
            "spiffe:id:spiffe://b.test/billing",
        ],
    )?;
    let granted = ok_json(&exchange(a)?)?;
    let issued = granted["access_token"].as_str().ok_or("no token")?;
    let claims = lanyard_agent_claims(issued)?;
    assert_eq!(claims["sub"], "spiffe://a.test/partner/billing");
    let allow = audit_events(a)?
        .into_iter()
        .find(|e| e["action"] == "token.exchange" && e["decision"] == "allow")
        .ok_or("the grant is not audited")?;
    assert_eq!(allow["actor"], "spiffe://b.test/billing", "{allow}");
    // Replayed after the foreign ID is revoked here: refused.
    j(
        a,
        &[
            "revoke",
            "--spiffe-id",
            "spiffe://b.test/billing",
            "--reason",
            "partner offboarded",
        ],
    )?;
    let replay = exchange(a)?;
    assert!(
        !replay.status.success(),
        "a revoked foreign identity was exchanged"
    );
    assert!(String::from_utf8_lossy(&replay.stderr).contains("invalid_grant"));

    // B's token is verified with B's keys only: the same token presented
    // to B itself (its own trust domain, own issuer path) is another matter,
    // and a token naming b.test but signed by A is refused at A.
    let a_jwt = jwt_svid(a, &socket_a, &a_issuer).await?;
    let forged = forge_sub(&a_jwt, "spiffe://b.test/billing")?;
    std::fs::write(&tok, forged)?;
    let out = exchange(a)?;
    assert!(
        !out.status.success(),
        "a token with a rewritten sub was accepted"
    );

    // B rotates its JWT keys: A picks the new bundle up at the next refresh.
    let before = federation_row(a, "b.test")?;
    j(b, &["keys", "rotate"])?;
    let after = eventually(Duration::from_secs(20), || {
        let a = a.to_owned();
        let seq = before["sequence"].clone();
        async move {
            let r = j(&a, &["federation", "refresh", "b.test"]).ok()?;
            let row = federation_row(&a, "b.test").ok()?;
            (r["outcome"] == "updated" && row["sequence"] != seq).then_some(row)
        }
    })
    .await
    .ok_or("B's rotation never reached A")?;
    assert!(after["sequence"].as_i64() > before["sequence"].as_i64());

    // A bundle for the wrong trust domain: B's endpoint read as evil.test.
    j(
        a,
        &[
            "federation",
            "add",
            "--trust-domain",
            "evil.test",
            "--bundle-endpoint",
            b_endpoint,
            "--endpoint-spiffe-id",
            "spiffe://b.test/lanyard/server",
        ],
    )?;
    let refused = lanyard(
        a,
        &["--output", "json", "federation", "refresh", "evil.test"],
    )?;
    assert!(!refused.status.success());
    let r: Value = serde_json::from_slice(&refused.stdout)?;
    assert_eq!(r["outcome"], "refused", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("never merged"),
        "{r}"
    );
    let row = federation_row(a, "evil.test")?;
    assert!(
        row["last_error"].as_str().is_some() && row["has_bundle"] == false,
        "{row}"
    );
    assert!(audit_events(a)?
        .iter()
        .any(|e| e["action"] == "federation.bundle.refuse" && e["decision"] == "deny"));

    // An endpoint presenting another SPIFFE ID than configured: the fetch fails.
    j(
        a,
        &[
            "federation",
            "add",
            "--trust-domain",
            "b2.test",
            "--bundle-endpoint",
            b_endpoint,
            "--endpoint-spiffe-id",
            "spiffe://b.test/not-the-server",
        ],
    )?;
    // The refresh job tries it on its own, and the failure shows in the list.
    let auto = eventually(Duration::from_secs(20), || {
        let a = a.to_owned();
        async move {
            let row = federation_row(&a, "b2.test").ok()?;
            row["last_error"].as_str().map(str::to_owned)
        }
    })
    .await
    .ok_or("the refresh job never tried b2.test")?;
    assert!(!auto.is_empty());
    let failed = lanyard(a, &["--output", "json", "federation", "refresh", "b2.test"])?;
    assert!(!failed.status.success());
    let f: Value = serde_json::from_slice(&failed.stdout)?;
    assert_eq!(f["outcome"], "failed", "{f}");

    // Deleting a trust domain entries still use is refused; unused ones go.
    let in_use = lanyard(a, &["federation", "delete", "b.test"])?;
    assert!(!in_use.status.success());
    assert!(String::from_utf8_lossy(&in_use.stderr).contains("still named by entries"));
    j(a, &["federation", "delete", "evil.test"])?;
    assert!(federation_row(a, "evil.test").is_err());
    Ok(())
}

/// The claims of a compact JWT, unverified (the test reads what it got).
fn lanyard_agent_claims(token: &str) -> Result<Value, Box<dyn std::error::Error>> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).ok_or("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// `token` with its `sub` replaced and the signature kept (so it no longer verifies).
fn forge_sub(token: &str, sub: &str) -> Result<String, Box<dyn std::error::Error>> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (h, p, s) = (
        parts.next().ok_or("h")?,
        parts.next().ok_or("p")?,
        parts.next().ok_or("s")?,
    );
    let mut claims: Value = serde_json::from_slice(&b64.decode(p)?)?;
    claims["sub"] = sub.into();
    Ok(format!(
        "{h}.{}.{s}",
        b64.encode(serde_json::to_vec(&claims)?)
    ))
}

/// Our bundle endpoint read by a stranger: Python's `ssl` + `http.client`,
/// trusting only the bundle, checking the SVID's URI SAN as a SPIFFE client
/// does (no host name check: SPIFFE authenticates by URI SAN), then parsing
/// the document by the spec's rules.
#[test]
fn a_python_client_reads_the_bundle_endpoint_by_the_spec() -> TestResult {
    let d = tempfile::tempdir()?;
    let (_p, info) = dev(d.path(), "py.test", &[])?;
    let url = info["federation_bundle_endpoint"]
        .as_str()
        .ok_or("no endpoint")?;
    let pem = j(d.path(), &["bundle", "show", "--format", "pem"])?["pem"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let ca = d.path().join("ca.pem");
    std::fs::write(&ca, pem)?;
    let script = r#"
import json, ssl, sys, http.client, urllib.parse
url, ca, want = sys.argv[1], sys.argv[2], sys.argv[3]
u = urllib.parse.urlparse(url)
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
conn.request("GET", "/")
r = conn.getresponse()
body = r.read()
cert = conn.sock.getpeercert()
uris = [v for k, v in cert.get("subjectAltName", ()) if k == "URI"]
assert uris == [want], uris
assert r.status == 200 and r.getheader("Content-Type") == "application/json", (r.status, r.getheader("Content-Type"))
doc = json.loads(body)
x509 = [k for k in doc["keys"] if k.get("use") == "x509-svid"]
jwt = [k for k in doc["keys"] if k.get("use") == "jwt-svid"]
assert x509 and all(len(k["x5c"]) == 1 and "kid" not in k for k in x509), x509
assert jwt and all(k.get("kid") for k in jwt), jwt
assert isinstance(doc["spiffe_sequence"], int) and isinstance(doc["spiffe_refresh_hint"], int)
for method, path, code in (("POST", "/", 405), ("GET", "/other", 404)):
    c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
    c.request(method, path, body=b"" if method == "POST" else None)
    got = c.getresponse().status
    assert got == code, (method, path, got)
print("ok")
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            url,
            &ca.display().to_string(),
            "spiffe://py.test/lanyard/server",
        ])
        .output()?;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn sh(args: &[&str], cwd: &Path) -> TestResult {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(cwd)
        .output()?;
    if !out.status.success() {
        return Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// `https_web`: the peer's bundle is a file on an ordinary HTTPS server
/// (Python's `http.server` behind `ssl`, certificate from the `openssl`
/// tool), trusted through the platform roots (`SSL_CERT_FILE`). An
/// `https_spiffe` endpoint does not pass as `https_web`.
#[test]
fn an_https_web_peer_is_verified_by_the_web_pki() -> TestResult {
    let (dc, da, web) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    let w = web.path();
    sh(
        &[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=lanyard test web CA",
            "-days",
            "1",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
        w,
    )?;
    sh(
        &[
            "openssl",
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        w,
    )?;
    std::fs::write(
        w.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    sh(
        &[
            "openssl",
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
        w,
    )?;

    let (_c, ic) = dev(dc.path(), "c.test", &[])?;
    let c_bundle = lanyard(dc.path(), &["bundle", "show"])?;
    assert!(c_bundle.status.success());
    std::fs::write(w.join("bundle.json"), &c_bundle.stdout)?;
    let server = r#"
import http.server, ssl, sys
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("leaf.pem", "leaf.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;
    let mut py = Command::new("python3")
        .args(["-c", server])
        .current_dir(w)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(py.stdout.take().ok_or("no stdout")?),
        &mut line,
    )?;
    let _py = Proc(py);
    let url = format!("https://127.0.0.1:{}/bundle.json", line.trim());

    let ca = w.join("ca.pem").display().to_string();
    let (_a, _ia) = dev(da.path(), "a.test", &[("SSL_CERT_FILE", &ca)])?;
    let a = da.path();
    j(
        a,
        &[
            "federation",
            "add",
            "--trust-domain",
            "c.test",
            "--bundle-endpoint",
            &url,
            "--profile",
            "https_web",
            "--tenant",
            "dev",
        ],
    )?;
    let r = j(a, &["federation", "refresh", "c.test"])?;
    assert_eq!(r["outcome"], "updated", "{r}");
    let held = j(a, &["bundle", "show", "--trust-domain", "c.test"])?;
    let served: Value = serde_json::from_slice(&c_bundle.stdout)?;
    assert_eq!(held["spiffe_sequence"], served["spiffe_sequence"]);
    assert_eq!(
        held["keys"].as_array().map(Vec::len),
        served["keys"].as_array().map(Vec::len)
    );
    // https_web and https_spiffe do not stand in for each other.
    let spiffe_url = ic["federation_bundle_endpoint"]
        .as_str()
        .ok_or("endpoint")?;
    j(
        a,
        &[
            "federation",
            "add",
            "--trust-domain",
            "c2.test",
            "--bundle-endpoint",
            spiffe_url,
            "--profile",
            "https_web",
        ],
    )?;
    let out = lanyard(a, &["--output", "json", "federation", "refresh", "c2.test"])?;
    assert!(!out.status.success());
    let f: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(f["outcome"], "failed", "{f}");
    // The profile's rules are checked before anything is stored.
    let bad = lanyard(
        a,
        &[
            "federation",
            "add",
            "--trust-domain",
            "c3.test",
            "--bundle-endpoint",
            "http://127.0.0.1:1/",
            "--profile",
            "https_web",
        ],
    )?;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("https://"));
    let bad = lanyard(
        a,
        &[
            "federation",
            "add",
            "--trust-domain",
            "c3.test",
            "--bundle-endpoint",
            &url,
            "--profile",
            "https_web",
            "--endpoint-spiffe-id",
            "spiffe://c3.test/x",
        ],
    )?;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("https_spiffe only"));
    let own = lanyard(
        a,
        &[
            "federation",
            "add",
            "--trust-domain",
            "a.test",
            "--bundle-endpoint",
            &url,
            "--profile",
            "https_web",
        ],
    )?;
    assert!(String::from_utf8_lossy(&own.stderr).contains("own trust domain"));

    // Static bundles: set by hand from a file, listed, refused when wrong.
    let file = w.join("bundle.json").display().to_string();
    let set = j(
        a,
        &["bundle", "set", "--trust-domain", "s.test", "--file", &file],
    );
    assert!(
        set.is_err_and(|e| e.to_string().contains("never merged")),
        "C's bundle taken as s.test's"
    );
    std::fs::write(
        w.join("empty.json"),
        r#"{"keys": [], "spiffe_sequence": 9}"#,
    )?;
    std::fs::write(w.join("junk.json"), "hello")?;
    for (f, words) in [
        ("empty.json", "empty bundle"),
        ("junk.json", "not a SPIFFE bundle"),
    ] {
        let out = lanyard(
            a,
            &[
                "bundle",
                "set",
                "--trust-domain",
                "s.test",
                "--file",
                &w.join(f).display().to_string(),
            ],
        )?;
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(words),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pem = lanyard(dc.path(), &["bundle", "show", "--format", "pem"])?;
    std::fs::write(w.join("c.pem"), &pem.stdout)?;
    let again = lanyard(a, &["bundle", "delete", "--trust-domain", "c.test"])?;
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("federation delete"),
        "a fetched bundle was deleted as static"
    );
    j(a, &["federation", "delete", "c.test"])?;
    let set = j(
        a,
        &[
            "bundle",
            "set",
            "--trust-domain",
            "c.test",
            "--file",
            &w.join("c.pem").display().to_string(),
            "--tenant",
            "dev",
        ],
    )?;
    assert_eq!(set["source"], "static");
    assert!(
        set["x509_authorities"].as_u64() >= Some(1) && set["jwt_authorities"] == 0,
        "{set}"
    );
    let list = j(a, &["bundle", "list"])?;
    assert!(
        list["bundles"].as_array().is_some_and(|b| b
            .iter()
            .any(|d| d["trust_domain"] == "c.test" && d["tenant"] == "dev")),
        "{list}"
    );
    j(a, &["bundle", "delete", "--trust-domain", "c.test"])?;
    let list = j(a, &["bundle", "list"])?;
    assert!(
        !list["bundles"]
            .as_array()
            .is_some_and(|b| b.iter().any(|d| d["trust_domain"] == "c.test")),
        "{list}"
    );
    Ok(())
}
