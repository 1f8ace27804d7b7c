//! Attestation of Lanyard's own JWT-SVIDs, presented back to it (a
//! delegated token exchanged again, an actor's token, a broker bearer).
//! Tokens from trusted issuers are attested by `lanyard_attest`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use lanyard_core::entry::SELF_ISSUER;
use lanyard_core::policy::Carried;
use lanyard_core::{
    Denial, DenyReason, Evidence, JwtSvidClaims, RevocationKey, RevocationKind, Selector, TenantId,
};
use serde::Deserialize;

use crate::keys::KeyManager;

/// Clock skew tolerated on Lanyard's own tokens.
const SKEW: i64 = 60;

/// The unverified `iss` of a compact JWT, only to route verification.
pub fn peek_issuer(token: &str) -> Option<String> {
    if token.len() > lanyard_jose::MAX_COMPACT_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = B64.decode(payload).ok()?;
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

/// Verifies a JWT-SVID this server issued, for `audience`, at `now`.
///
/// # Security
/// Only the server's published keys and algorithms; `exp`/`iat` with
/// [`SKEW`]; the audience must match exactly. The evidence names the token's
/// `jti` and every actor of its chain as revocation keys, so revoking any of
/// them stops the token.
///
/// # Errors
/// A [`Denial`] naming the failed check.
pub fn own_token(
    keys: &KeyManager,
    token: &str,
    audience: &str,
    now: i64,
) -> Result<(Evidence, Carried), Denial> {
    let published = keys.current();
    let verified =
        lanyard_jose::verify_compact(token, published.ring.verifiers(), keys.algorithms())
            .map_err(|e| lanyard_attest::jose_denial(&e))?;
    let claims: JwtSvidClaims = serde_json::from_slice(&verified.payload).map_err(|_| {
        Denial::new(
            DenyReason::MissingClaim,
            "Lanyard token lacks JWT-SVID claims",
        )
    })?;
    if claims.exp.saturating_add(SKEW) < now {
        return Err(Denial::new(
            DenyReason::Expired,
            format!("Lanyard token {} expired", claims.jti),
        ));
    }
    if claims.iat.saturating_sub(SKEW) > now {
        return Err(Denial::new(
            DenyReason::NotYetValid,
            "Lanyard token issued in the future",
        ));
    }
    if !claims.aud.iter().any(|a| a == audience) {
        return Err(Denial::new(
            DenyReason::WrongAudience,
            format!("a Lanyard token presented here must have audience {audience}"),
        ));
    }
    let tenant = TenantId::parse(&claims.tenant).map_err(|_| {
        Denial::new(
            DenyReason::MissingTenant,
            "Lanyard token has no valid tenant",
        )
    })?;
    let mut revocation_keys = vec![RevocationKey::new(RevocationKind::Jti, &claims.jti)];
    revocation_keys.extend(
        claims
            .act
            .actors()
            .iter()
            .map(|a| RevocationKey::new(RevocationKind::SpiffeId, a.to_string())),
    );
    let selectors = Selector::new("spiffe", "id", &claims.sub)
        .map(|s| vec![s])
        .unwrap_or_default();
    let carried = Carried {
        scopes: claims.scopes(),
        may_act: claims.may_act.as_ref().map(|m| m.sub.clone()),
        act: claims.act,
    };
    let evidence = Evidence {
        issuer: SELF_ISSUER.into(),
        tenant: Some(tenant),
        subject: claims.sub,
        selectors,
        jti: Some(claims.jti),
        expires_at: claims.exp,
        digest: lanyard_attest::digest_hex(token.as_bytes()),
        revocation_keys,
    };
    Ok((evidence, carried))
}

/// The trust domain named by the unverified `sub` of a compact JWT, when it
/// is a SPIFFE ID: only to route verification to that trust domain's bundle.
pub fn peek_spiffe_trust_domain(token: &str) -> Option<lanyard_core::TrustDomain> {
    if token.len() > lanyard_jose::MAX_COMPACT_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = B64.decode(payload).ok()?;
    #[derive(Deserialize)]
    struct Sub {
        sub: Option<String>,
    }
    let sub = serde_json::from_slice::<Sub>(&bytes).ok()?.sub?;
    lanyard_core::SpiffeId::parse(&sub)
        .ok()
        .map(|id| id.trust_domain().clone())
}

/// The claims a JWT-SVID of another trust domain must carry (JWT-SVID §3).
#[derive(Deserialize)]
struct ForeignClaims {
    sub: String,
    #[serde(deserialize_with = "one_or_many")]
    aud: Vec<String>,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    jti: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(a) => vec![a],
        Aud::Many(v) => v,
    })
}

/// Verifies a JWT-SVID of federated trust domain `domain` against that
/// trust domain's JWT bundle only, for `audience`, at `now`.
///
/// # Security
/// Only keys of `domain`'s latest bundle (bundles are never merged); ES256
/// or RS256 as the key's own algorithm; `sub` must be a SPIFFE ID of
/// `domain`; `exp` (and `iat` when present) with [`SKEW`]; the audience must
/// include `audience` exactly. The evidence is issued by
/// [`lanyard_core::entry::foreign_issuer`] with one `spiffe:id:` selector,
/// so it matches only an entry that names that foreign ID, and is bound to
/// the tenant the trust domain is bound to (none: the policy refuses it).
///
/// # Errors
/// A [`Denial`] naming the failed check.
pub fn foreign_token(
    domain: &crate::federation::Domain,
    token: &str,
    audience: &str,
    now: i64,
) -> Result<Evidence, Denial> {
    let td = &domain.trust_domain;
    if domain.keys.is_empty() {
        return Err(Denial::new(
            DenyReason::UnknownIssuer,
            format!("trust domain {td} is federated but its bundle has no JWT authorities"),
        ));
    }
    let verified = lanyard_jose::verify_compact(
        token,
        domain.keys.iter(),
        &[
            lanyard_jose::Algorithm::Es256,
            lanyard_jose::Algorithm::Rs256,
        ],
    )
    .map_err(|e| {
        let d = lanyard_attest::jose_denial(&e);
        Denial::new(
            d.reason,
            format!("JWT-SVID of federated trust domain {td}: {}", d.detail),
        )
    })?;
    let claims: ForeignClaims = serde_json::from_slice(&verified.payload).map_err(|_| {
        Denial::new(
            DenyReason::MissingClaim,
            format!("the JWT-SVID of {td} lacks sub, aud or exp"),
        )
    })?;
    let sub = lanyard_core::SpiffeId::parse(&claims.sub).map_err(|_| {
        Denial::new(
            DenyReason::MissingClaim,
            "the JWT-SVID's sub is not a SPIFFE ID",
        )
    })?;
    if sub.trust_domain() != td {
        return Err(Denial::new(
            DenyReason::UnknownIssuer,
            format!("{sub} is not in trust domain {td}, whose key signed the token"),
        ));
    }
    if claims.exp.saturating_add(SKEW) < now {
        return Err(Denial::new(
            DenyReason::Expired,
            format!("the JWT-SVID of {sub} expired"),
        ));
    }
    if claims.iat.is_some_and(|iat| iat.saturating_sub(SKEW) > now) {
        return Err(Denial::new(
            DenyReason::NotYetValid,
            format!("the JWT-SVID of {sub} is issued in the future"),
        ));
    }
    if !claims.aud.iter().any(|a| a == audience) {
        return Err(Denial::new(
            DenyReason::WrongAudience,
            format!(
                "a JWT-SVID of another trust domain presented here must have audience {audience}"
            ),
        ));
    }
    let mut revocation_keys = vec![RevocationKey::new(
        RevocationKind::SpiffeId,
        sub.to_string(),
    )];
    if let Some(jti) = &claims.jti {
        revocation_keys.push(RevocationKey::new(RevocationKind::Jti, jti));
    }
    let selectors = Selector::new("spiffe", "id", &sub.to_string())
        .map(|s| vec![s])
        .map_err(|_| Denial::new(DenyReason::MissingClaim, "the JWT-SVID's sub is too long"))?;
    Ok(Evidence {
        issuer: lanyard_core::entry::foreign_issuer(td),
        tenant: domain.tenant.clone(),
        subject: sub.to_string(),
        selectors,
        jti: claims.jti,
        expires_at: claims.exp,
        digest: lanyard_attest::digest_hex(token.as_bytes()),
        revocation_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lanyard_core::{DenyReason, TrustDomain};
    use lanyard_jose::{Algorithm, SigningKey};

    use crate::federation::Domain;

    const AUD: &str = "https://lanyard.a.test";
    const NOW: i64 = 1_800_000_000;

    fn key() -> SigningKey {
        SigningKey::generate(Algorithm::Es256)
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    }

    fn domain(trusted: &SigningKey, tenant: Option<&str>) -> Domain {
        Domain {
            trust_domain: TrustDomain::parse("b.test").unwrap_or_else(|e| panic!("{e}")),
            tenant: tenant.map(|t| TenantId::parse(t).unwrap_or_else(|e| panic!("{e}"))),
            endpoint: None,
            bundle: None,
            keys: vec![trusted.verifying_key().unwrap_or_else(|e| panic!("{e}"))],
            jwks_json: Vec::new(),
            sequence: 1,
            status: crate::federation::Status::default(),
        }
    }

    fn token(k: &SigningKey, claims: serde_json::Value) -> String {
        lanyard_jose::encode_jwt(k, &claims).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_foreign_jwt_svid_is_held_to_its_own_trust_domain() {
        let k = key();
        let d = domain(&k, Some("dev"));
        let ok = token(
            &k,
            serde_json::json!({"sub": "spiffe://b.test/billing", "aud": AUD, "exp": NOW + 60, "jti": "j1"}),
        );
        let ev = foreign_token(&d, &ok, AUD, NOW).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ev.issuer, "spiffe://b.test");
        assert_eq!(ev.tenant.as_ref().map(|t| t.as_str()), Some("dev"));
        assert_eq!(ev.selectors.len(), 1);
        assert_eq!(
            ev.selectors[0].to_string(),
            "spiffe:id:spiffe://b.test/billing"
        );
        assert_eq!(
            ev.revocation_keys.len(),
            2,
            "SPIFFE ID and jti are revocable"
        );
        // `aud` as an array works too (JWT-SVID §3).
        let arr = token(
            &k,
            serde_json::json!({"sub": "spiffe://b.test/x", "aud": ["other", AUD], "exp": NOW + 60}),
        );
        assert!(foreign_token(&d, &arr, AUD, NOW).is_ok());

        let other_key = key();
        let cases: Vec<(String, DenyReason, &str)> = vec![
            (
                token(
                    &other_key,
                    serde_json::json!({"sub": "spiffe://b.test/billing", "aud": AUD, "exp": NOW + 60}),
                ),
                DenyReason::UnknownKey,
                "b.test",
            ),
            (
                token(
                    &k,
                    serde_json::json!({"sub": "spiffe://c.test/billing", "aud": AUD, "exp": NOW + 60}),
                ),
                DenyReason::UnknownIssuer,
                "not in trust domain b.test",
            ),
            (
                token(
                    &k,
                    serde_json::json!({"sub": "spiffe://b.test/billing", "aud": "elsewhere", "exp": NOW + 60}),
                ),
                DenyReason::WrongAudience,
                AUD,
            ),
            (
                token(
                    &k,
                    serde_json::json!({"sub": "spiffe://b.test/billing", "aud": AUD, "exp": NOW - 61}),
                ),
                DenyReason::Expired,
                "expired",
            ),
            (
                token(
                    &k,
                    serde_json::json!({"sub": "spiffe://b.test/billing", "aud": AUD, "exp": NOW + 600, "iat": NOW + 120}),
                ),
                DenyReason::NotYetValid,
                "future",
            ),
            (
                token(
                    &k,
                    serde_json::json!({"sub": "billing", "aud": AUD, "exp": NOW + 60}),
                ),
                DenyReason::MissingClaim,
                "SPIFFE ID",
            ),
            (
                token(
                    &k,
                    serde_json::json!({"sub": "spiffe://b.test/billing", "exp": NOW + 60}),
                ),
                DenyReason::MissingClaim,
                "lacks",
            ),
        ];
        for (t, reason, words) in cases {
            match foreign_token(&d, &t, AUD, NOW) {
                Ok(ev) => panic!("accepted {ev:?}"),
                Err(e) => {
                    assert_eq!(e.reason, reason, "{e}");
                    assert!(e.detail.contains(words), "{e}");
                }
            }
        }
        // A bundle without JWT authorities verifies nothing.
        let mut empty = domain(&k, Some("dev"));
        empty.keys.clear();
        assert!(foreign_token(&empty, &ok, AUD, NOW).is_err());
        // No tenant bound: the evidence says so, and the policy refuses it.
        let unbound = domain(&k, None);
        let ev = foreign_token(&unbound, &ok, AUD, NOW).unwrap_or_else(|e| panic!("{e}"));
        assert!(ev.tenant.is_none());
    }
}
