//! Compact JWS (RFC 7515 §7.1) signing and verification.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::alg::truncate;
use crate::{Algorithm, JoseError, SigningKey, VerifyingKey};

/// The largest compact JWS accepted for verification. Kubernetes and CI
/// tokens are 1-2 KiB; 16 KiB leaves room for big claim sets while keeping
/// parsing cost bounded.
pub const MAX_COMPACT_LEN: usize = 16 * 1024;

/// The JOSE header Lanyard writes and reads. JWT-SVID §3 allows only `alg`,
/// `kid` and `typ`; other members of incoming headers are ignored except
/// `crit`, which is refused since no extension is understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Signature algorithm.
    pub alg: String,
    /// Key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Media type, `JWT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Critical extensions: present means refused.
    #[serde(skip_serializing)]
    pub crit: Option<serde_json::Value>,
}

/// Signs `claims` as a compact JWT with header `{alg, kid, typ: "JWT"}`.
///
/// # Errors
/// [`JoseError::Serialize`] if the claims do not serialise;
/// [`JoseError::Key`] if signing fails.
pub fn encode_jwt<C: Serialize>(key: &SigningKey, claims: &C) -> Result<String, JoseError> {
    let header = Header {
        alg: key.alg().as_str().into(),
        kid: Some(key.kid().into()),
        typ: Some("JWT".into()),
        crit: None,
    };
    let header = serde_json::to_vec(&header).map_err(JoseError::Serialize)?;
    let payload = serde_json::to_vec(claims).map_err(JoseError::Serialize)?;
    let mut out = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 400);
    B64.encode_string(&header, &mut out);
    out.push('.');
    B64.encode_string(&payload, &mut out);
    let sig = key.sign(out.as_bytes())?;
    out.push('.');
    B64.encode_string(&sig, &mut out);
    Ok(out)
}

/// A JWS whose signature verified: its header and raw payload bytes. Claim
/// checks (issuer, audience, expiry) are the caller's: this layer only
/// proves who signed the bytes.
#[derive(Debug, Clone)]
pub struct VerifiedJws {
    /// The parsed header.
    pub header: Header,
    /// The verified algorithm.
    pub alg: Algorithm,
    /// The payload bytes (JSON for a JWT).
    pub payload: Vec<u8>,
}

/// Verifies a compact JWS against `keys`, accepting only algorithms in `allowed`.
///
/// # Security
/// The key is chosen by `kid` and must exist; the header's `alg` must equal
/// the key's own algorithm and be in `allowed`, so `none`, HMAC-with-a-public-key
/// and algorithm substitution all fail. Size is checked before any decoding.
///
/// # Errors
/// The [`JoseError`] naming the first check that failed.
pub fn verify_compact<'k, I>(
    token: &str,
    keys: I,
    allowed: &[Algorithm],
) -> Result<VerifiedJws, JoseError>
where
    I: IntoIterator<Item = &'k VerifyingKey>,
{
    if token.len() > MAX_COMPACT_LEN {
        return Err(JoseError::TooLarge {
            len: token.len(),
            max: MAX_COMPACT_LEN,
        });
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JoseError::Malformed {
            what: "expected three dot-separated parts",
        });
    };
    let header_bytes = B64.decode(h64).map_err(|_| JoseError::Malformed {
        what: "header is not base64url",
    })?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|_| JoseError::Malformed {
            what: "header is not a JSON object",
        })?;
    if header.crit.is_some() {
        return Err(JoseError::Malformed {
            what: "crit header is not supported",
        });
    }
    let alg: Algorithm = header.alg.parse()?;
    if !allowed.contains(&alg) {
        return Err(JoseError::AlgorithmNotAllowed { alg });
    }
    let kid = header.kid.as_deref().ok_or(JoseError::Malformed {
        what: "header has no kid",
    })?;
    let key = keys
        .into_iter()
        .find(|k| k.kid() == kid)
        .ok_or_else(|| JoseError::UnknownKeyId { kid: truncate(kid) })?;
    if key.alg() != alg {
        return Err(JoseError::AlgorithmMismatch {
            token: alg,
            key: key.alg(),
            kid: truncate(kid),
        });
    }
    let sig = B64.decode(s64).map_err(|_| JoseError::Malformed {
        what: "signature is not base64url",
    })?;
    let signed_len = h64.len() + 1 + p64.len();
    let signed = token.get(..signed_len).ok_or(JoseError::Malformed {
        what: "bad part boundaries",
    })?;
    key.verify(signed.as_bytes(), &sig)?;
    let payload = B64.decode(p64).map_err(|_| JoseError::Malformed {
        what: "payload is not base64url",
    })?;
    Ok(VerifiedJws {
        header,
        alg,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Result<(SigningKey, SigningKey), JoseError> {
        Ok((
            SigningKey::generate(Algorithm::Es256)?.0,
            SigningKey::generate(Algorithm::Rs256)?.0,
        ))
    }

    #[test]
    fn sign_then_verify_both_algorithms() -> Result<(), JoseError> {
        let (es, rs) = keys()?;
        let verifiers = [es.verifying_key()?, rs.verifying_key()?];
        for key in [&es, &rs] {
            let token = encode_jwt(key, &serde_json::json!({"sub": "spiffe://example.org/a"}))?;
            let v = verify_compact(&token, &verifiers, &Algorithm::ALL)?;
            assert_eq!(v.alg, key.alg());
            assert_eq!(v.header.typ.as_deref(), Some("JWT"));
            assert_eq!(v.payload, br#"{"sub":"spiffe://example.org/a"}"#);
        }
        Ok(())
    }

    #[test]
    fn refuses_what_must_fail() -> Result<(), JoseError> {
        let (es, rs) = keys()?;
        let verifiers = [es.verifying_key()?, rs.verifying_key()?];
        let good = encode_jwt(&es, &serde_json::json!({"sub": "a"}))?;
        let mut parts: Vec<&str> = good.split('.').collect();
        let tampered_payload = B64.encode(br#"{"sub":"b"}"#);
        let none_header = B64.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, es.kid()));
        let hs_header = B64.encode(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, es.kid()));
        let swapped_alg = B64.encode(format!(r#"{{"alg":"RS256","kid":"{}"}}"#, es.kid()));
        let unknown_kid = B64.encode(r#"{"alg":"ES256","kid":"nope"}"#);
        let crit = B64.encode(format!(
            r#"{{"alg":"ES256","kid":"{}","crit":["x"]}}"#,
            es.kid()
        ));
        let with_header = |h: &str, parts: &[&str]| {
            format!(
                "{h}.{}.{}",
                parts.get(1).copied().unwrap_or(""),
                parts.get(2).copied().unwrap_or("")
            )
        };
        let cases: Vec<(String, &str)> = vec![
            (with_header(&none_header, &parts), "UnsupportedAlgorithm"),
            (with_header(&hs_header, &parts), "UnsupportedAlgorithm"),
            (with_header(&swapped_alg, &parts), "AlgorithmMismatch"),
            (with_header(&unknown_kid, &parts), "UnknownKeyId"),
            (with_header(&crit, &parts), "Malformed"),
            (
                {
                    if let Some(p) = parts.get_mut(1) {
                        *p = &tampered_payload;
                    }
                    parts.join(".")
                },
                "BadSignature",
            ),
            ("a.b".into(), "Malformed"),
            ("a.b.c.d".into(), "Malformed"),
            ("!!!.b.c".into(), "Malformed"),
            ("x".repeat(MAX_COMPACT_LEN + 1), "TooLarge"),
        ];
        for (token, want) in cases {
            let got = verify_compact(&token, &verifiers, &Algorithm::ALL)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"));
            assert!(
                matches!(&got, Err(e) if e.starts_with(want)),
                "want {want}, got {got:?}"
            );
        }
        // An algorithm outside the allow-list is refused even with a valid signature.
        let rs_token = encode_jwt(&rs, &serde_json::json!({}))?;
        assert!(matches!(
            verify_compact(&rs_token, &verifiers, &[Algorithm::Es256]),
            Err(JoseError::AlgorithmNotAllowed {
                alg: Algorithm::Rs256
            })
        ));
        Ok(())
    }
}
