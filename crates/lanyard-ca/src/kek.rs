//! The key-encryption key: AES-256-GCM over every private key at rest.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::CaError;

/// The environment variable that may carry the key-encryption key (base64).
pub const KEK_ENV: &str = "LANYARD_KEK";

/// Format version byte of a sealed blob: `1 || nonce (12) || ciphertext || tag (16)`.
const SEALED_V1: u8 = 1;

/// The key-encryption key. `Debug` prints only its fingerprint.
pub struct Kek {
    key: LessSafeKey,
    fingerprint: String,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// Builds a KEK from 32 key bytes.
    ///
    /// # Errors
    /// [`CaError::KekFormat`] if `bytes` is not 32 bytes long.
    pub fn from_bytes(bytes: &[u8], source_name: &str) -> Result<Self, CaError> {
        let format_err = || CaError::KekFormat {
            source_name: source_name.to_owned(),
        };
        if bytes.len() != 32 {
            return Err(format_err());
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| format_err())?;
        // A fingerprint, not the key: a domain-separated hash, first 8 bytes.
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"lanyard kek fingerprint v1\0");
        ctx.update(bytes);
        let fingerprint =
            lanyard_core::hex::encode(ctx.finish().as_ref().get(..8).unwrap_or_default());
        Ok(Self {
            key: LessSafeKey::new(key),
            fingerprint,
        })
    }

    /// Parses a KEK given as text: base64 of 32 bytes (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`CaError::KekFormat`] naming `source_name`.
    pub fn from_base64(text: &str, source_name: &str) -> Result<Self, CaError> {
        let bytes = Zeroizing::new(B64.decode(text.trim()).map_err(|_| CaError::KekFormat {
            source_name: source_name.to_owned(),
        })?);
        Self::from_bytes(&bytes, source_name)
    }

    /// Reads a KEK file holding base64 text or 32 raw bytes. The file must not
    /// be readable by group or others.
    ///
    /// # Errors
    /// [`CaError::KekIo`], [`CaError::KekPermissions`], [`CaError::KekFormat`].
    pub fn from_file(path: &Path) -> Result<Self, CaError> {
        let io = |source| CaError::KekIo {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(CaError::KekPermissions {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        let raw = Zeroizing::new(std::fs::read(path).map_err(io)?);
        let name = path.display().to_string();
        if raw.len() == 32 {
            return Self::from_bytes(&raw, &name);
        }
        let text = std::str::from_utf8(&raw).map_err(|_| CaError::KekFormat {
            source_name: name.clone(),
        })?;
        Self::from_base64(text, &name)
    }

    /// Generates a new KEK and writes it, base64, to a new file with mode 0600.
    /// Refuses to overwrite an existing file.
    ///
    /// # Errors
    /// [`CaError::KekIo`] if the file exists or cannot be written.
    pub fn generate_file(path: &Path) -> Result<Self, CaError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(bytes.as_mut()).map_err(|_| CaError::Random)?;
        let text = Zeroizing::new(B64.encode(bytes.as_ref()));
        let io = |source| CaError::KekIo {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        file.sync_all().map_err(io)?;
        Self::from_bytes(bytes.as_ref(), &path.display().to_string())
    }

    /// A short public fingerprint of this KEK, stored beside what it sealed so
    /// a wrong KEK is reported as such rather than as corruption.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Encrypts `plaintext`, binding it to `aad` (the key id), so a sealed
    /// blob cannot be moved to another row.
    ///
    /// # Errors
    /// [`CaError::Random`] if no nonce can be drawn.
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Result<Vec<u8>, CaError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CaError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| CaError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        in_out.iter_mut().for_each(|b| *b = 0);
        Ok(out)
    }

    /// Decrypts a blob made by [`Kek::seal`] with the same `aad`.
    ///
    /// # Errors
    /// [`CaError::CorruptKey`] (named by `aad`) if the blob is malformed,
    /// was sealed with another key, or was bound to another `aad`.
    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<Zeroizing<Vec<u8>>, CaError> {
        let corrupt = || CaError::CorruptKey {
            kid: aad.to_owned(),
        };
        let (version, rest) = sealed.split_first().ok_or_else(corrupt)?;
        if *version != SEALED_V1 {
            return Err(corrupt());
        }
        let (nonce, ciphertext) = rest.split_at_checked(NONCE_LEN).ok_or_else(corrupt)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let mut in_out = Zeroizing::new(ciphertext.to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut in_out)
            .map_err(|_| corrupt())?
            .len();
        in_out.truncate(plain_len);
        Ok(in_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() -> Result<(), CaError> {
        let dir = tempfile::tempdir().map_err(|source| CaError::KekIo {
            path: "tmp".into(),
            source,
        })?;
        let path = dir.path().join("kek");
        let kek = Kek::generate_file(&path)?;
        let sealed = kek.seal(b"private key", "kid-1")?;
        assert_eq!(kek.open(&sealed, "kid-1")?.as_slice(), b"private key");
        assert!(
            !sealed.windows(11).any(|w| w == b"private key"),
            "ciphertext must not contain the plaintext"
        );
        // Bound to its key id.
        assert!(matches!(
            kek.open(&sealed, "kid-2"),
            Err(CaError::CorruptKey { .. })
        ));
        // Any flipped bit is detected.
        let mut flipped = sealed.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert!(kek.open(&flipped, "kid-1").is_err());
        assert!(kek.open(&[], "kid-1").is_err());
        assert!(kek.open(&[1, 2, 3], "kid-1").is_err());
        // Reading the file back gives the same key; another key cannot open.
        let again = Kek::from_file(&path)?;
        assert_eq!(again.fingerprint(), kek.fingerprint());
        assert_eq!(again.open(&sealed, "kid-1")?.as_slice(), b"private key");
        let other = Kek::from_bytes(&[7; 32], "test")?;
        assert_ne!(other.fingerprint(), kek.fingerprint());
        assert!(other.open(&sealed, "kid-1").is_err());
        // Never overwrites.
        assert!(matches!(
            Kek::generate_file(&path),
            Err(CaError::KekIo { .. })
        ));
        assert!(!format!("{kek:?}").contains(&B64.encode([7u8; 32])));
        Ok(())
    }

    #[test]
    fn refuses_loose_permissions_and_bad_formats() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("kek");
        std::fs::write(&path, B64.encode([1u8; 32]))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        let err = Kek::from_file(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("644") && err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        assert!(Kek::from_file(&path).is_ok());
        std::fs::write(&path, "too short")?;
        assert!(matches!(
            Kek::from_file(&path),
            Err(CaError::KekFormat { .. })
        ));
        assert!(matches!(
            Kek::from_base64(&B64.encode([1u8; 16]), "env"),
            Err(CaError::KekFormat { .. })
        ));
        assert!(matches!(
            Kek::from_file(&dir.path().join("missing")),
            Err(CaError::KekIo { .. })
        ));
        Ok(())
    }
}
