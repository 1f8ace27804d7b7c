//! The key ring: stored keys opened with the KEK and parsed once, ready to sign.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use lanyard_core::KeyState;
use lanyard_jose::{Algorithm, Jwk, Jwks, Pkcs8Der, SigningKey, VerifyingKey};

use crate::{CaError, Kek, KeyMeta};

/// A key as the store holds it: metadata plus the sealed PKCS#8.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    /// Rotation metadata.
    pub meta: KeyMeta,
    /// `Kek::seal(pkcs8, kid)`.
    pub sealed: Vec<u8>,
    /// Fingerprint of the KEK that sealed it.
    pub kek_fingerprint: String,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKey")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl SealedKey {
    /// Generates a key for `alg` and seals it with `kek`.
    ///
    /// # Errors
    /// [`CaError`] if generation or sealing fails.
    pub fn generate(
        kek: &Kek,
        alg: Algorithm,
        state: KeyState,
        created_at: SystemTime,
        activate_at: SystemTime,
    ) -> Result<Self, CaError> {
        let (key, der) = SigningKey::generate(alg)?;
        let sealed = kek.seal(der.expose(), key.kid())?;
        Ok(Self {
            meta: KeyMeta {
                kid: key.kid().to_owned(),
                alg,
                state,
                created_at,
                activate_at,
                retire_at: None,
            },
            sealed,
            kek_fingerprint: kek.fingerprint().to_owned(),
        })
    }

    /// The same key sealed under `new` (KEK rotation). The key is opened and
    /// checked with `old` first, so a wrong KEK or a corrupt row is reported,
    /// never re-sealed.
    ///
    /// # Errors
    /// As [`SealedKey::open`], or [`CaError::Random`].
    pub fn reseal(&self, old: &Kek, new: &Kek) -> Result<Self, CaError> {
        self.open(old)?;
        let der = old.open(&self.sealed, &self.meta.kid)?;
        Ok(Self {
            meta: self.meta.clone(),
            sealed: new.seal(&der, &self.meta.kid)?,
            kek_fingerprint: new.fingerprint().to_owned(),
        })
    }

    /// Opens and parses the key, checking that it is the key its id names.
    ///
    /// # Errors
    /// [`CaError::WrongKek`] when another KEK sealed it; [`CaError::CorruptKey`]
    /// when it does not decrypt, parse, or match its id.
    pub fn open(&self, kek: &Kek) -> Result<SigningKey, CaError> {
        let kid = &self.meta.kid;
        if self.kek_fingerprint != kek.fingerprint() {
            return Err(CaError::WrongKek {
                kid: kid.clone(),
                sealed_with: self.kek_fingerprint.clone(),
                configured: kek.fingerprint().to_owned(),
            });
        }
        let der = Pkcs8Der::new(kek.open(&self.sealed, kid)?.to_vec());
        let key = SigningKey::from_pkcs8(self.meta.alg, &der)
            .map_err(|_| CaError::CorruptKey { kid: kid.clone() })?;
        if key.kid() != kid {
            return Err(CaError::CorruptKey { kid: kid.clone() });
        }
        Ok(key)
    }
}

/// Signing keys by algorithm plus every published public key. Immutable:
/// a rotation builds a new ring and swaps it in.
#[derive(Debug)]
pub struct KeyRing {
    signers: HashMap<Algorithm, Arc<SigningKey>>,
    verifiers: Vec<VerifyingKey>,
    published: Vec<KeyMeta>,
    jwks: Jwks,
}

impl KeyRing {
    /// Opens every stored key. Only `Active` keys sign; `Next`, `Active` and
    /// `Previous` keys are all published.
    ///
    /// # Errors
    /// The first key that fails to open: a wrong KEK or a corrupt row stops
    /// start-up rather than being silently replaced.
    pub fn load(kek: &Kek, keys: &[SealedKey]) -> Result<Self, CaError> {
        let mut ordered: Vec<&SealedKey> = keys.iter().collect();
        let rank = |s: KeyState| match s {
            KeyState::Active => 0,
            KeyState::Next => 1,
            KeyState::Previous => 2,
        };
        ordered.sort_by_key(|k| {
            (
                rank(k.meta.state),
                k.meta.alg,
                std::cmp::Reverse(k.meta.activate_at),
            )
        });
        let mut signers = HashMap::new();
        let mut verifiers = Vec::with_capacity(ordered.len());
        let mut jwks = Jwks::default();
        for stored in &ordered {
            let key = stored.open(kek)?;
            jwks.keys.push(key.public_jwk());
            verifiers.push(key.verifying_key()?);
            if stored.meta.state == KeyState::Active {
                // Sorted newest first, so the newest active key of an algorithm wins.
                signers
                    .entry(stored.meta.alg)
                    .or_insert_with(|| Arc::new(key));
            }
        }
        Ok(Self {
            signers,
            verifiers,
            published: ordered.into_iter().map(|k| k.meta.clone()).collect(),
            jwks,
        })
    }

    /// The key that signs with `alg` now, if that algorithm is enabled.
    pub fn signer(&self, alg: Algorithm) -> Option<&Arc<SigningKey>> {
        self.signers.get(&alg)
    }

    /// Public keys of every published key (active, next, previous).
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// The published public JWK for `kid`.
    pub fn jwk(&self, kid: &str) -> Option<&Jwk> {
        self.jwks
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some(kid))
    }

    /// Verifying keys for every published key.
    pub fn verifiers(&self) -> &[VerifyingKey] {
        &self.verifiers
    }

    /// Metadata of every published key, active first.
    pub fn keys(&self) -> &[KeyMeta] {
        &self.published
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_signs_with_active_and_publishes_all() -> Result<(), CaError> {
        let kek = Kek::from_bytes(&[3; 32], "test")?;
        let now = SystemTime::UNIX_EPOCH;
        let active = SealedKey::generate(&kek, Algorithm::Es256, KeyState::Active, now, now)?;
        let next = SealedKey::generate(&kek, Algorithm::Es256, KeyState::Next, now, now)?;
        let ring = KeyRing::load(&kek, &[next.clone(), active.clone()])?;
        assert_eq!(
            ring.signer(Algorithm::Es256).map(|k| k.kid()),
            Some(active.meta.kid.as_str())
        );
        assert!(ring.signer(Algorithm::Rs256).is_none());
        let kids: Vec<_> = ring
            .jwks()
            .keys
            .iter()
            .filter_map(|k| k.kid.clone())
            .collect();
        assert_eq!(kids, [active.meta.kid.clone(), next.meta.kid.clone()]);
        Ok(())
    }

    #[test]
    fn reseal_moves_a_key_to_a_new_kek() -> Result<(), CaError> {
        let (old, new) = (
            Kek::from_bytes(&[3; 32], "old")?,
            Kek::from_bytes(&[4; 32], "new")?,
        );
        let now = SystemTime::UNIX_EPOCH;
        let key = SealedKey::generate(&old, Algorithm::Es256, KeyState::Active, now, now)?;
        let moved = key.reseal(&old, &new)?;
        assert_eq!(moved.open(&new)?.kid(), key.meta.kid);
        assert!(matches!(moved.open(&old), Err(CaError::WrongKek { .. })));
        assert!(
            matches!(key.reseal(&new, &old), Err(CaError::WrongKek { .. })),
            "the wrong old KEK is refused"
        );
        Ok(())
    }

    #[test]
    fn wrong_kek_and_tampering_are_reported_not_replaced() -> Result<(), CaError> {
        let kek = Kek::from_bytes(&[3; 32], "test")?;
        let other = Kek::from_bytes(&[4; 32], "test")?;
        let now = SystemTime::UNIX_EPOCH;
        let key = SealedKey::generate(&kek, Algorithm::Es256, KeyState::Active, now, now)?;
        let err = KeyRing::load(&other, std::slice::from_ref(&key)).err();
        assert!(matches!(err, Some(CaError::WrongKek { .. })), "{err:?}");
        // A sealed key moved under another key's id fails authentication.
        let second = SealedKey::generate(&kek, Algorithm::Es256, KeyState::Next, now, now)?;
        let mut swapped = key.clone();
        swapped.sealed = second.sealed.clone();
        assert!(matches!(
            KeyRing::load(&kek, &[swapped]),
            Err(CaError::CorruptKey { .. })
        ));
        Ok(())
    }
}
