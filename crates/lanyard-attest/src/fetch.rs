//! Bounded HTTP for issuer documents: HTTPS only (unless the issuer is
//! configured `insecure_http`), a total timeout, a body size limit enforced
//! while reading, and `Cache-Control: max-age` within bounds.

use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, CACHE_CONTROL};
use reqwest::Url;

/// Connect and total timeout of every fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS or discovery document read, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// How long fetched keys are fresh when the response says nothing usable.
pub const DEFAULT_MAX_AGE_SECS: i64 = 300;
/// Bounds applied to a response's `Cache-Control: max-age`.
pub const MAX_AGE_BOUNDS_SECS: (i64, i64) = (30, 3600);

/// Why a fetch failed. Messages name the URL and the problem, never a
/// credential (URLs with credentials are refused at validation).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("{url}: {reason}")]
    Refused { url: String, reason: String },
    #[error("GET {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge { url: String },
    #[error("GET {url}: {what}")]
    Shape { url: String, what: &'static str },
}

/// A fetched document and how long it may be cached.
#[derive(Debug)]
pub(crate) struct Document {
    pub body: Vec<u8>,
    pub max_age: i64,
}

/// GETs `url` (already checked by `config::check_url`) with the limits.
pub(crate) async fn get(
    http: &reqwest::Client,
    url: &Url,
    insecure_http: bool,
) -> Result<Document, FetchError> {
    let shown = url.as_str().to_owned();
    let mut resp = http
        .get(url.clone())
        .timeout(FETCH_TIMEOUT)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|source| FetchError::Transport {
            url: shown.clone(),
            source,
        })?;
    // The client may follow redirects: the final hop must be as safe as the first.
    let scheme_ok = match resp.url().scheme() {
        "https" => true,
        "http" => insecure_http,
        _ => false,
    };
    if !scheme_ok {
        return Err(FetchError::Refused {
            url: shown,
            reason: "redirected to a URL that is not https".into(),
        });
    }
    if !resp.status().is_success() {
        return Err(FetchError::Status {
            url: shown,
            status: resp.status().as_u16(),
        });
    }
    let max_age = max_age(resp.headers());
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(FetchError::TooLarge { url: shown });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|source| FetchError::Transport {
        url: shown.clone(),
        source,
    })? {
        if body.len().saturating_add(chunk.len()) > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge { url: shown });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Document { body, max_age })
}

/// `Cache-Control: max-age=N` bounded to [`MAX_AGE_BOUNDS_SECS`];
/// `no-cache`/`no-store` mean the lower bound; absent or unreadable,
/// [`DEFAULT_MAX_AGE_SECS`].
pub(crate) fn max_age(headers: &HeaderMap) -> i64 {
    let (lo, hi) = MAX_AGE_BOUNDS_SECS;
    let mut found: Option<i64> = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            if directive == "no-cache" || directive == "no-store" {
                return lo;
            }
            if let Some(n) = directive.strip_prefix("max-age=") {
                let n = n.trim_matches('"');
                if let Ok(n) = n.parse::<u64>() {
                    found = Some(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
        }
    }
    found.unwrap_or(DEFAULT_MAX_AGE_SECS).clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn max_age_is_bounded() {
        let cases: &[(&[&str], i64)] = &[
            (&[], 300),
            (&["max-age=120"], 120),
            (&["public, max-age=86400"], 3600),
            (&["max-age=0"], 30),
            (&["no-store"], 30),
            (&["Max-Age=600, must-revalidate"], 600),
            (&["max-age=\"90\""], 90),
            (&["max-age=nonsense"], 300),
            (&["max-age=99999999999999999999"], 300),
            (&["private", "max-age=45"], 45),
        ];
        for (values, want) in cases {
            let mut h = HeaderMap::new();
            for v in *values {
                h.append(CACHE_CONTROL, HeaderValue::from_static(v));
            }
            assert_eq!(max_age(&h), *want, "{values:?}");
        }
    }
}
