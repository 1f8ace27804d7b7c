//! The `mtls_pair` example as two real processes fetching their SVIDs from
//! one Workload API socket (the test agent from `workload_api`), with the
//! server's SVID rotated while the client's long-lived connection is open.
//!
//! Like two processes of one Unix user under `lanyard dev`, both are
//! entitled to both SVIDs; each picks its own with `--spiffe-id`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::Ca;
use crate::workload_api::{leaf, response, Agent};

const SERVER: &str = "spiffe://example.org/server";
const CLIENT: &str = "spiffe://example.org/client";

/// `target/<profile>/examples/mtls_pair`, built by `cargo test` / nextest
/// along with this test binary (`target/<profile>/deps/tests-…`).
fn example_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no target dir")?;
    let bin = profile_dir.join("examples").join("mtls_pair");
    if !bin.exists() {
        bail!(
            "{} is missing; run the tests with `cargo test` or `cargo nextest run`, which build examples",
            bin.display()
        );
    }
    Ok(bin)
}

fn serial_hex(der: &[u8]) -> String {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    X509Certificate::from_der(der)
        .map(|(_, c)| c.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_default()
}

struct Proc {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(example_binary()?)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next JSON event, or `None` at end of output; bounded in time.
    async fn next(&mut self) -> anyhow::Result<Option<Value>> {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .context("no output from the example within 30 s")??;
        match line {
            Some(l) => Ok(Some(
                serde_json::from_str(&l).with_context(|| format!("not JSON: {l}"))?,
            )),
            None => Ok(None),
        }
    }

    async fn next_event(&mut self, event: &str) -> anyhow::Result<Value> {
        while let Some(v) = self.next().await? {
            if v["event"] == event {
                return Ok(v);
            }
        }
        bail!("the example ended before a {event:?} event")
    }
}

#[tokio::test]
async fn two_processes_talk_mtls_through_a_rotation() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("example.org");
    let server_svid = ca.svid(SERVER);
    let client_svid = ca.svid(CLIENT);
    let agent = Agent::start(
        dir.path(),
        "agent.sock",
        response(&[&client_svid, &server_svid], &ca, &[]),
    )
    .await?;
    let socket = agent.endpoint();

    let mut server = Proc::spawn(&[
        "--socket",
        &socket,
        "--spiffe-id",
        SERVER,
        "--output",
        "json",
        "server",
        "--listen",
        "127.0.0.1:0",
        "--allow-trust-domain",
        "example.org",
        "--max-connections",
        "100",
    ])?;
    let addr = server.next_event("listening").await?["addr"]
        .as_str()
        .context("no addr")?
        .to_owned();
    let mut client = Proc::spawn(&[
        "--socket",
        &socket,
        "--spiffe-id",
        CLIENT,
        "--output",
        "json",
        "client",
        "--connect",
        &addr,
        "--allow",
        SERVER,
        "--rounds",
        "40",
        "--interval",
        "100ms",
        "--reconnect-every",
        "1",
    ])?;

    let old_serial = serial_hex(&leaf(&server_svid));
    let long = client.next_event("connected").await?;
    assert_eq!(long["conn"], "long");
    assert_eq!(long["peer"], SERVER);
    assert_eq!(long["peer_serial"], old_serial.as_str());
    let accepted = server.next_event("accepted").await?;
    assert_eq!(accepted["peer"], CLIENT);
    assert_eq!(
        accepted["peer_serial"],
        serial_hex(&leaf(&client_svid)).as_str()
    );

    // Rotate the server's SVID once the client has exchanged some data.
    let first_fresh = client.next_event("connected").await?;
    assert_eq!(first_fresh["peer_serial"], old_serial.as_str());
    let rotated = ca.svid(SERVER);
    let new_serial = serial_hex(&leaf(&rotated));
    agent.rotate(response(&[&client_svid, &rotated], &ca, &[]));

    // Fresh connections switch to the new serial (within the bounded run);
    // the long-lived connection keeps echoing to the end.
    let mut saw_new = false;
    let mut last_round = 0;
    while let Some(event) = client.next().await? {
        match event["event"].as_str() {
            Some("connected") => {
                assert_eq!(event["peer"], SERVER);
                let serial = event["peer_serial"].as_str().unwrap_or_default();
                if saw_new {
                    assert_eq!(serial, new_serial, "went back to the old SVID");
                }
                saw_new |= serial == new_serial;
            }
            Some("echo") => {
                assert_eq!(event["conn"], "long");
                last_round = event["round"].as_u64().unwrap_or_default();
            }
            _ => {}
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(10), client.child.wait()).await??;
    assert!(status.success(), "client exited with {status}");
    assert!(saw_new, "no fresh connection presented the rotated SVID");
    assert_eq!(last_round, 40, "the long-lived connection did not last");
    server.child.start_kill()?;
    server.child.wait().await?;
    Ok(())
}
