//! The JWT-SVID claims Lanyard issues and reads back (JWT-SVID §3, plus
//! `tenant`, RFC 8693 `act`, `scope` and `may_act`).

use crate::ActChain;

/// RFC 8693 §4.4 `may_act`: who may act for the subject.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MayAct {
    /// The actor's SPIFFE ID.
    pub sub: String,
}

/// The claims of a Lanyard JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JwtSvidClaims {
    /// Issuer URL.
    pub iss: String,
    /// The SPIFFE ID (or an audience profile's rendered subject).
    pub sub: String,
    /// Audiences; always written as an array (OpenBao and others require
    /// one), read as a string or an array.
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// Tenant (INV-5).
    pub tenant: String,
    /// RFC 8693 §4.1 actor chain.
    #[serde(default, skip_serializing_if = "ActChain::is_empty")]
    pub act: ActChain,
    /// Space-separated scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// RFC 8693 §4.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<MayAct>,
}

impl JwtSvidClaims {
    /// The scopes, split.
    pub fn scopes(&self) -> Option<Vec<String>> {
        self.scope.as_deref().map(|s| {
            s.split(' ')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match <OneOrMany as serde::Deserialize>::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aud_is_written_as_an_array_and_read_either_way() {
        let c = JwtSvidClaims {
            iss: "https://i".into(),
            sub: "spiffe://td/a".into(),
            aud: vec!["x".into()],
            exp: 2,
            iat: 1,
            jti: "j".into(),
            tenant: "dev".into(),
            act: ActChain::none(),
            scope: None,
            may_act: None,
        };
        let v = serde_json::to_value(&c).unwrap_or_default();
        assert_eq!(v["aud"], serde_json::json!(["x"]));
        assert!(v.get("act").is_none() && v.get("scope").is_none());
        let mut one = v.clone();
        one["aud"] = serde_json::json!("x");
        let back: Option<JwtSvidClaims> = serde_json::from_value(one).ok();
        assert_eq!(back, Some(c));
    }
}
