//! The admin API client: finds the server and token, maps errors to advice.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cli::Global;

/// Bound on admin responses read into memory (a listing of 100,000
/// entries is about 40 MB).
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// Longest line of a streamed answer.
const MAX_LINE: usize = 1024 * 1024;

/// The default `lanyard dev` data directory.
pub const DEFAULT_DATA_DIR: &str = ".lanyard-dev";

#[derive(Debug)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Reads `dev.json` from a data directory.
pub fn read_dev_json(dir: &Path) -> anyhow::Result<Value> {
    let path = dir.join("dev.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is `lanyard dev --data-dir {}` running?)",
            path.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

impl AdminClient {
    /// Server and token from flags / environment, else from dev.json in
    /// --data-dir (or ./.lanyard-dev when it exists).
    pub fn from_global(g: &Global) -> anyhow::Result<Self> {
        let client = Self::anonymous(g)?;
        if client.token.is_none() {
            bail!("no admin token given: set LANYARD_ADMIN_TOKEN or pass --admin-token-file FILE, or --data-dir of a running `lanyard dev`");
        }
        Ok(client)
    }

    /// Like [`AdminClient::from_global`], without requiring an admin token
    /// (for the public token endpoint).
    pub fn anonymous(g: &Global) -> anyhow::Result<Self> {
        let dir = g.data_dir.clone().or_else(|| {
            let d = Path::new(DEFAULT_DATA_DIR);
            d.join("dev.json").exists().then(|| d.to_path_buf())
        });
        let file_token = match &g.admin_token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("reading the admin token file {}", f.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let given_token = g.admin_token.clone().or(file_token);
        let dev = match (&g.server, &given_token, &dir) {
            (Some(_), Some(_), _) => None,
            (Some(_), None, None) => None,
            (_, _, Some(dir)) => Some(read_dev_json(dir)?),
            _ => None,
        };
        let from_dev = |key: &str| {
            dev.as_ref()
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let base = g.server.clone().or_else(|| from_dev("issuer")).ok_or_else(|| {
            anyhow!("no server given: pass --server URL (or LANYARD_SERVER), or --data-dir of a running `lanyard dev`")
        })?;
        let token = given_token.or_else(|| from_dev("admin_token"));
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(ca) = &g.ca_cert {
            let pem = std::fs::read(ca)
                .with_context(|| format!("reading CA certificate {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("parsing CA certificate {}", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Calls the admin API; returns the JSON body (Null for 204).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/admin/v1/{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.token.as_deref().unwrap_or(""));
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req, &method, path).await
    }

    /// POSTs `body` to an admin path that answers one JSON object per line
    /// (`entries/apply`), calling `on_line` as each arrives. A slow
    /// operation may take an hour; progress lines keep arriving meanwhile.
    pub async fn call_stream(
        &self,
        path: &str,
        body: &Value,
        mut on_line: impl FnMut(Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let url = format!("{}/admin/v1/{path}", self.base);
        let req = self
            .http
            .post(&url)
            .timeout(std::time::Duration::from_secs(3600))
            .bearer_auth(self.token.as_deref().unwrap_or(""))
            .json(body);
        let mut resp = req.send().await.map_err(|e| {
            anyhow!("cannot reach the Lanyard server at {}: {e}; is it running? (set --server or LANYARD_SERVER)", self.base)
        })?;
        if !resp.status().is_success() {
            // An ordinary error answer: one JSON object.
            return self.finish(resp, &Method::POST, path).await.map(|_| ());
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.context("reading the server's answer")? {
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let v: Value = serde_json::from_slice(&line)
                    .context("the server's answer is not one JSON object per line")?;
                on_line(v)?;
            }
            if buf.len() > MAX_LINE {
                bail!("the server sent a line longer than {MAX_LINE} bytes");
            }
        }
        if !buf.iter().all(u8::is_ascii_whitespace) {
            bail!("the server's answer ended in the middle of a line");
        }
        Ok(())
    }

    /// Calls `/broker/v1/{path}` with a workload's bearer JWT-SVID.
    pub async fn broker(
        &self,
        method: Method,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}/broker/v1/{path}", self.base))
            .bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req, &method, path).await
    }

    /// GETs a public path of the server (no token), e.g. published keys.
    pub async fn get_public(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let resp = self.http.get(&url).send().await.map_err(|e| {
            anyhow!("cannot reach the Lanyard server at {}: {e}; is it running? (set --server or LANYARD_SERVER)", self.base)
        })?;
        if !resp.status().is_success() {
            bail!("GET {url}: HTTP {}", resp.status().as_u16());
        }
        let bytes = resp.bytes().await.context("reading the server's answer")?;
        if bytes.len() > MAX_RESPONSE {
            bail!("the server's answer is larger than {MAX_RESPONSE} bytes");
        }
        Ok(bytes.to_vec())
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// POSTs a form to `path` (no admin token), e.g. the token endpoint.
    pub async fn post_form(&self, path: &str, form: &[(&str, String)]) -> anyhow::Result<Value> {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req, &Method::POST, path).await
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        method: &Method,
        path: &str,
    ) -> anyhow::Result<Value> {
        let resp = req.send().await.map_err(|e| {
            anyhow!("cannot reach the Lanyard server at {}: {e}; is it running? (set --server or LANYARD_SERVER)", self.base)
        })?;
        self.finish(resp, method, path).await
    }

    async fn finish(
        &self,
        resp: reqwest::Response,
        method: &Method,
        path: &str,
    ) -> anyhow::Result<Value> {
        let status = resp.status();
        let correlation = resp
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let bytes = resp.bytes().await.context("reading the server's answer")?;
        if bytes.len() > MAX_RESPONSE {
            bail!("the server's answer is larger than {MAX_RESPONSE} bytes");
        }
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let description = value
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("no details");
        let code = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("error");
        let hint = match status {
            StatusCode::UNAUTHORIZED
                if path.starts_with("creds/") || path.starts_with("leases/") =>
            {
                "; the JWT-SVID must be unexpired, unrevoked and for audience <server>/broker"
            }
            StatusCode::UNAUTHORIZED => "; check LANYARD_ADMIN_TOKEN / --admin-token-file",
            _ => "",
        };
        bail!(
            "{method} {path}: {description} (HTTP {} {code}, correlation id {correlation}){hint}",
            status.as_u16()
        )
    }
}

/// Percent-encodes for `application/x-www-form-urlencoded`.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
