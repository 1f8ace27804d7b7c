//! Public JSON Web Keys (RFC 7517) and key sets.

use aws_lc_rs::digest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A public JWK. The type has no fields for private parameters, so
/// serialising one can never leak `d`, `p`, `q`, `dp`, `dq` or `qi`;
/// deserialising ignores them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `EC` or `RSA`.
    pub kty: String,
    /// Key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Algorithm the key is used with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Public key use: `sig` for OIDC, `jwt-svid` / `x509-svid` in SPIFFE bundles.
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// EC curve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

impl Jwk {
    pub(crate) fn ec_p256(x: String, y: String) -> Self {
        Self {
            crv: Some("P-256".into()),
            x: Some(x),
            y: Some(y),
            ..Self::empty("EC")
        }
    }

    pub(crate) fn rsa(n: String, e: String) -> Self {
        Self {
            n: Some(n),
            e: Some(e),
            ..Self::empty("RSA")
        }
    }

    fn empty(kty: &str) -> Self {
        Self {
            kty: kty.into(),
            kid: None,
            alg: None,
            use_: None,
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
        }
    }

    /// The RFC 7638 thumbprint: SHA-256 over the required members in
    /// lexicographic order, base64url without padding.
    pub fn thumbprint(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        // serde_json escapes strings; base64url and curve names need none, but
        // building through it keeps the canonical form honest.
        let canonical = match self.kty.as_str() {
            "EC" => {
                serde_json::json!({"crv": opt(&self.crv), "kty": "EC", "x": opt(&self.x), "y": opt(&self.y)})
            }
            "RSA" => serde_json::json!({"e": opt(&self.e), "kty": "RSA", "n": opt(&self.n)}),
            other => serde_json::json!({"kty": other}),
        };
        // serde_json's Map is a BTreeMap without the preserve_order feature,
        // so members come out sorted, as RFC 7638 §3.3 requires.
        let text = canonical.to_string();
        B64.encode(digest::digest(&digest::SHA256, text.as_bytes()))
    }
}

/// A JWK set (RFC 7517 §5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1's RSA example key and its published thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = Jwk::rsa(n.into(), "AQAB".into());
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn private_members_are_dropped_on_parse() -> Result<(), serde_json::Error> {
        let jwk: Jwk =
            serde_json::from_str(r#"{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"secret"}"#)?;
        assert!(!serde_json::to_string(&jwk)?.contains("secret"));
        Ok(())
    }
}
