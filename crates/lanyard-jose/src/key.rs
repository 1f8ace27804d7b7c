//! Signing and verifying keys: generated or loaded once, used many times.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, KeyPair, ParsedPublicKey, RsaKeyPair, RsaPublicKeyComponents,
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::{Algorithm, JoseError, Jwk};

/// A private key in PKCS#8 DER, wiped from memory on drop. Its `Debug` is
/// redacted so it cannot reach a log by accident.
pub struct Pkcs8Der(Zeroizing<Vec<u8>>);

impl Pkcs8Der {
    /// Wraps DER bytes.
    pub fn new(der: Vec<u8>) -> Self {
        Self(Zeroizing::new(der))
    }

    /// The DER bytes. Handle with care: this is the private key.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Pkcs8Der {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pkcs8Der(***)")
    }
}

/// A private signing key with its key id and algorithm, parsed once.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    inner: Inner,
}

enum Inner {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh key for `alg` (P-256 for ES256, 2048-bit RSA for
    /// RS256) and returns it with its PKCS#8 encoding for storage.
    ///
    /// # Errors
    /// [`JoseError::Key`] if the crypto library fails.
    pub fn generate(alg: Algorithm) -> Result<(Self, Pkcs8Der), JoseError> {
        let der = match alg {
            Algorithm::Es256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map(|d| d.as_ref().to_vec()),
            Algorithm::Rs256 => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| JoseError::Key {
            what: "key generation failed",
        })?;
        let der = Pkcs8Der::new(der);
        let key = Self::from_pkcs8(alg, &der)?;
        Ok((key, der))
    }

    /// Loads a key from PKCS#8 DER. The key id is the RFC 7638 thumbprint of
    /// the public key, so the same key always has the same `kid`.
    ///
    /// # Errors
    /// [`JoseError::Key`] if the DER is not a key of `alg`'s type; RSA keys
    /// under 2048 bits are refused.
    pub fn from_pkcs8(alg: Algorithm, der: &Pkcs8Der) -> Result<Self, JoseError> {
        let inner = match alg {
            Algorithm::Es256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.expose())
                    .map(Inner::Ec)
                    .map_err(|_| JoseError::Key {
                        what: "not a PKCS#8 P-256 private key",
                    })?
            }
            Algorithm::Rs256 => {
                let k = RsaKeyPair::from_pkcs8(der.expose()).map_err(|_| JoseError::Key {
                    what: "not a PKCS#8 RSA private key",
                })?;
                if k.public_modulus_len() < 256 {
                    return Err(JoseError::Key {
                        what: "RSA keys under 2048 bits are refused",
                    });
                }
                Inner::Rsa(k)
            }
        };
        let mut key = Self {
            kid: String::new(),
            alg,
            inner,
        };
        key.kid = key.public_jwk_without_kid().thumbprint();
        Ok(key)
    }

    /// The key id (RFC 7638 thumbprint, base64url).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Signs `message`, returning the JWS signature bytes (for ES256 the
    /// fixed-width `r || s` form RFC 7518 §3.4 requires).
    ///
    /// # Errors
    /// [`JoseError::Key`] if the crypto library fails.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JoseError> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Ec(k) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| JoseError::Key {
                    what: "signing failed",
                }),
            Inner::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| JoseError::Key {
                        what: "signing failed",
                    })?;
                Ok(sig)
            }
        }
    }

    /// The public half as a JWK with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> Jwk {
        let mut jwk = self.public_jwk_without_kid();
        jwk.kid = Some(self.kid.clone());
        jwk.alg = Some(self.alg.as_str().to_owned());
        jwk.use_ = Some("sig".to_owned());
        jwk
    }

    /// The matching verifying key.
    ///
    /// # Errors
    /// [`JoseError::Key`] if the public key cannot be parsed (never for a key
    /// this type produced).
    pub fn verifying_key(&self) -> Result<VerifyingKey, JoseError> {
        VerifyingKey::from_jwk(&self.public_jwk())
    }

    fn public_jwk_without_kid(&self) -> Jwk {
        match &self.inner {
            Inner::Ec(k) => {
                // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
                let point = k.public_key().as_ref();
                let x = point.get(1..33).unwrap_or_default();
                let y = point.get(33..65).unwrap_or_default();
                Jwk::ec_p256(B64.encode(x), B64.encode(y))
            }
            Inner::Rsa(k) => {
                let public = k.public_key();
                Jwk::rsa(
                    B64.encode(public.modulus().big_endian_without_leading_zero()),
                    B64.encode(public.exponent().big_endian_without_leading_zero()),
                )
            }
        }
    }
}

/// A public key ready to verify signatures, parsed once from a JWK.
pub struct VerifyingKey {
    kid: String,
    alg: Algorithm,
    inner: VerifyInner,
}

enum VerifyInner {
    Ec(ParsedPublicKey),
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Parses a public JWK. The JWK must name its `kid`; its algorithm comes
    /// from `alg` or, if absent, from the key type (EC P-256 → ES256,
    /// RSA → RS256), never from a token.
    ///
    /// # Errors
    /// [`JoseError::Key`] for a JWK that is not a usable public key,
    /// [`JoseError::UnsupportedAlgorithm`] for an algorithm Lanyard does not verify.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JoseError> {
        let kid = jwk.kid.clone().ok_or(JoseError::Key {
            what: "JWK has no kid",
        })?;
        let decode = |field: &Option<String>, what: &'static str| {
            field
                .as_deref()
                .and_then(|v| B64.decode(v).ok())
                .ok_or(JoseError::Key { what })
        };
        let (alg, inner) = match jwk.kty.as_str() {
            "EC" => {
                if jwk.crv.as_deref() != Some("P-256") {
                    return Err(JoseError::Key {
                        what: "EC JWK is not on P-256",
                    });
                }
                let x = decode(&jwk.x, "EC JWK has no valid x")?;
                let y = decode(&jwk.y, "EC JWK has no valid y")?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(JoseError::Key {
                        what: "EC JWK coordinates are not 32 bytes",
                    });
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let parsed =
                    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).map_err(|_| {
                        JoseError::Key {
                            what: "EC JWK is not a point on P-256",
                        }
                    })?;
                (Algorithm::Es256, VerifyInner::Ec(parsed))
            }
            "RSA" => {
                let n = decode(&jwk.n, "RSA JWK has no valid n")?;
                let e = decode(&jwk.e, "RSA JWK has no valid e")?;
                if n.len() < 256 {
                    return Err(JoseError::Key {
                        what: "RSA JWK is under 2048 bits",
                    });
                }
                (Algorithm::Rs256, VerifyInner::Rsa { n, e })
            }
            _ => {
                return Err(JoseError::Key {
                    what: "JWK kty is neither EC nor RSA",
                })
            }
        };
        if let Some(named) = jwk.alg.as_deref() {
            let named: Algorithm = named.parse()?;
            if named != alg {
                return Err(JoseError::Key {
                    what: "JWK alg does not match its key type",
                });
            }
        }
        Ok(Self { kid, alg, inner })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Verifies `signature` over `message`.
    ///
    /// # Errors
    /// [`JoseError::BadSignature`] if it does not verify.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<(), JoseError> {
        let ok = match &self.inner {
            VerifyInner::Ec(k) => k.verify_sig(message, sig).is_ok(),
            VerifyInner::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(JoseError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_round_trip_keeps_the_kid() -> Result<(), JoseError> {
        for alg in Algorithm::ALL {
            let (key, der) = SigningKey::generate(alg)?;
            let again = SigningKey::from_pkcs8(alg, &der)?;
            assert_eq!(key.kid(), again.kid());
            assert_eq!(key.kid().len(), 43, "SHA-256 thumbprint, base64url");
            let sig = key.sign(b"msg")?;
            again.verifying_key()?.verify(b"msg", &sig)?;
            assert!(matches!(
                again.verifying_key()?.verify(b"other", &sig),
                Err(JoseError::BadSignature)
            ));
        }
        Ok(())
    }

    #[test]
    fn loading_a_key_as_the_wrong_algorithm_fails() -> Result<(), JoseError> {
        let (_, ec) = SigningKey::generate(Algorithm::Es256)?;
        assert!(SigningKey::from_pkcs8(Algorithm::Rs256, &ec).is_err());
        assert!(
            SigningKey::from_pkcs8(Algorithm::Es256, &Pkcs8Der::new(vec![0x30, 0x00])).is_err()
        );
        assert_eq!(format!("{ec:?}"), "Pkcs8Der(***)");
        Ok(())
    }

    #[test]
    fn public_jwk_has_no_private_members() -> Result<(), JoseError> {
        for alg in Algorithm::ALL {
            let (key, _) = SigningKey::generate(alg)?;
            let json = serde_json::to_value(key.public_jwk()).map_err(JoseError::Serialize)?;
            let obj = json.as_object().ok_or(JoseError::Key {
                what: "not an object",
            })?;
            for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
                assert!(!obj.contains_key(private), "{alg}: {private} present");
            }
            for required in ["kid", "alg", "use", "kty"] {
                assert!(obj.contains_key(required), "{alg}: {required} missing");
            }
        }
        Ok(())
    }

    #[test]
    fn jwk_whose_alg_contradicts_its_type_is_refused() -> Result<(), JoseError> {
        let (key, _) = SigningKey::generate(Algorithm::Es256)?;
        let mut jwk = key.public_jwk();
        jwk.alg = Some("RS256".into());
        assert!(VerifyingKey::from_jwk(&jwk).is_err());
        jwk.alg = Some("HS256".into());
        assert!(matches!(
            VerifyingKey::from_jwk(&jwk),
            Err(JoseError::UnsupportedAlgorithm { .. })
        ));
        Ok(())
    }
}
