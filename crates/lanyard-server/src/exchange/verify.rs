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
