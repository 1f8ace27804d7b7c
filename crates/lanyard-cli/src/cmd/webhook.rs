//! `lanyard webhook --config F` (the admission webhooks over HTTPS) and
//! `lanyard webhook render --pod F` (the same code path on one pod).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::cli::{Global, Output, WebhookAction, WebhookArgs, WebhookRenderArgs};

/// Largest pod or service-account file read (an object in etcd is ≤ 1.5 MiB).
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

pub async fn run(g: &Global, args: WebhookArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(WebhookAction::Render(r)) => render(g, r).await,
        None => {
            let Some(path) = args.config else {
                bail!("`lanyard webhook` needs --config FILE (see `lanyard webhook --help` and docs/kubernetes/install.md); to try it on one pod without a cluster: `lanyard webhook render --pod POD.yaml`");
            };
            serve(&path).await
        }
    }
}

async fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let config = lanyard_k8s::config::load(path)?;
    tracing::info!(config = %path.display(), "webhook config loaded");
    let listen = config.listen;
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    let running = lanyard_k8s::server::Running::start(config, listener)
        .await
        .context("starting the webhook")?;
    running.run_until(lanyard_server::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Reads a YAML or JSON file (the first document of a YAML stream).
fn read_object(path: &Path, what: &str) -> anyhow::Result<Value> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("reading {what} {}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        bail!(
            "{what} {} is {} bytes; the limit is {MAX_FILE_BYTES}",
            path.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return Ok(v);
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("{what} {} is neither JSON nor YAML", path.display()))?;
    docs.into_iter()
        .find(|d| !d.is_null())
        .with_context(|| format!("{what} {} is empty", path.display()))
}

async fn render(g: &Global, args: WebhookRenderArgs) -> anyhow::Result<ExitCode> {
    let object = read_object(&args.pod, "pod file")?;
    let sa = args
        .service_account
        .as_deref()
        .map(|p| read_object(p, "service account file"))
        .transpose()?;
    let (config, note) = match &args.config {
        Some(path) => (lanyard_k8s::config::read(path)?.mutation()?, None),
        None => (
            lanyard_k8s::MutationConfig::render_default()?,
            Some("no --config: every convention on with upstream defaults; AZURE_TENANT_ID only from the service account's azure.workload.identity/tenant-id"),
        ),
    };
    let sa_note = match (&sa, &args.service_account) {
        (None, _) => {
            Some("no --service-account: the service account is treated as not found".to_owned())
        }
        (Some(v), Some(p)) if v.get("kind").and_then(Value::as_str) != Some("ServiceAccount") => {
            bail!("{} is not a ServiceAccount (kind {:?}); export one with kubectl get serviceaccount NAME -o yaml", p.display(), v.get("kind"))
        }
        _ => None,
    };
    let rendered =
        lanyard_k8s::render::render(&object, sa.as_ref(), args.namespace.as_deref(), config)
            .await?;
    let workload_note = (object.get("kind").and_then(Value::as_str).unwrap_or("Pod") != "Pod").then_some(
        "the file holds a workload: its pod is named from generateName, so Azure v1.6's hashed volume name differs from the one a real pod (<name>-<hash>-) gets",
    );
    let text = match g.output {
        Output::Json => serde_json::to_string_pretty(&serde_json::to_value(&rendered)?)? + "\n",
        Output::Text => text(
            &rendered,
            note.into_iter()
                .chain(sa_note.as_deref())
                .chain(workload_note),
        ),
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(if rendered.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn text<'a>(r: &lanyard_k8s::render::Rendered, notes: impl Iterator<Item = &'a str>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
    if r.allowed {
        let _ = writeln!(out, "admitted: {}", r.message);
    } else {
        let _ = writeln!(out, "REFUSED: {}", r.message);
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if !r.allowed || r.patch.is_empty() {
        return out;
    }
    let _ = writeln!(out, "--- pod as given\n+++ pod as admitted");
    for line in diff_lines(&yaml(&r.original), &yaml(&r.pod)) {
        let _ = writeln!(out, "{line}");
    }
    out
}

fn yaml(v: &Value) -> Vec<String> {
    let text = serde_saphyr::to_string(v)
        .unwrap_or_else(|_| serde_json::to_string_pretty(v).unwrap_or_default());
    text.lines().map(str::to_owned).collect()
}

/// A line diff with 3 lines of context. Pods are small, but a hostile one
/// can be large: beyond 4 million line pairs the middle is shown whole.
fn diff_lines(a: &[String], b: &[String]) -> Vec<String> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a_rest, b_rest) = (
        a.get(prefix..).unwrap_or_default(),
        b.get(prefix..).unwrap_or_default(),
    );
    let suffix = a_rest
        .iter()
        .rev()
        .zip(b_rest.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let am = a_rest
        .get(..a_rest.len().saturating_sub(suffix))
        .unwrap_or_default();
    let bm = b_rest
        .get(..b_rest.len().saturating_sub(suffix))
        .unwrap_or_default();
    let mut ops: Vec<(char, &str)> = Vec::new();
    if am.len().saturating_mul(bm.len()) > 4_000_000 {
        ops.extend(am.iter().map(|l| ('-', l.as_str())));
        ops.extend(bm.iter().map(|l| ('+', l.as_str())));
    } else {
        // Longest common subsequence table, then walk it.
        let (n, m) = (am.len(), bm.len());
        let mut t = vec![0u32; (n + 1) * (m + 1)];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                t[i * (m + 1) + j] = if am[i] == bm[j] {
                    t[(i + 1) * (m + 1) + j + 1] + 1
                } else {
                    t[(i + 1) * (m + 1) + j].max(t[i * (m + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && am[i] == bm[j] {
                ops.push((' ', am[i].as_str()));
                i += 1;
                j += 1;
            } else if j < m && (i == n || t[i * (m + 1) + j + 1] >= t[(i + 1) * (m + 1) + j]) {
                ops.push(('+', bm[j].as_str()));
                j += 1;
            } else {
                ops.push(('-', am[i].as_str()));
                i += 1;
            }
        }
    }
    let context: Vec<(char, &str)> = a[prefix.saturating_sub(3)..prefix]
        .iter()
        .map(|l| (' ', l.as_str()))
        .chain(ops)
        .chain(
            a[a.len() - suffix..]
                .iter()
                .take(3)
                .map(|l| (' ', l.as_str())),
        )
        .collect();
    // Drop long unchanged stretches inside, keeping 3 lines around changes.
    let changed: Vec<bool> = context.iter().map(|(c, _)| *c != ' ').collect();
    let near = |k: usize| {
        let lo = k.saturating_sub(3);
        let hi = (k + 4).min(changed.len());
        changed[lo..hi].iter().any(|c| *c)
    };
    let mut out = Vec::new();
    let mut skipped = false;
    for (k, (c, l)) in context.iter().enumerate() {
        if near(k) {
            if skipped {
                out.push("@@".to_owned());
                skipped = false;
            }
            out.push(format!("{c} {l}"));
        } else {
            skipped = true;
        }
    }
    out
}

#[cfg(test)]
mod chart_tests;

#[cfg(test)]
mod tests {
    use super::diff_lines;

    fn lines(s: &str) -> Vec<String> {
        s.lines().map(str::to_owned).collect()
    }

    #[test]
    fn diff_shows_additions_with_context() {
        let a = lines("a\nb\nc\nd\ne\nf\ng\nh");
        let b = lines("a\nb\nc\nd\nX\ne\nf\ng\nh");
        let d = diff_lines(&a, &b);
        assert_eq!(d, ["  b", "  c", "  d", "+ X", "  e", "  f", "  g"]);
        assert!(diff_lines(&a, &a).is_empty());
    }
}
