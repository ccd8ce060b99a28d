//! Encryption of secrets at rest behind a small trait, so a KMS can take the place of
//! the local key without touching the callers.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{bail, Context};
use zeroize::Zeroizing;

/// Format byte of a sealed value: AES-256-GCM, 12-byte random nonce, then the ciphertext
/// with its 16-byte tag.
const FORMAT_AES_256_GCM: u8 = 1;

/// A sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretBoxError {
    /// The value was sealed in another format or is truncated.
    #[error("sealed value has an unknown format or is truncated")]
    Format,
    /// Authentication failed: wrong key, wrong associated data or altered bytes.
    #[error("sealed value failed authentication (wrong key, wrong owner or altered)")]
    Authentication,
    /// The random source failed.
    #[error("the system random source failed")]
    Random,
}

/// Seals and opens small secrets. The associated data binds a sealed value to its owner
/// and purpose, so a value copied to another row does not open.
pub trait SecretBox: Send + Sync {
    /// Encrypts `plaintext` bound to `associated_data`.
    ///
    /// # Errors
    /// [`SecretBoxError::Random`] if no nonce can be drawn.
    fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, SecretBoxError>;

    /// Decrypts a value sealed with the same associated data.
    ///
    /// # Errors
    /// [`SecretBoxError::Format`] or [`SecretBoxError::Authentication`].
    fn open(
        &self,
        sealed: &[u8],
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretBoxError>;
}

/// [`SecretBox`] over a local AES-256-GCM key.
pub struct AesGcmBox {
    cipher: Aes256Gcm,
}

impl AesGcmBox {
    /// Builds the box from a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        AesGcmBox {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// Loads the key from `path` (64 hex digits), creating it with mode 0600 when
    /// `create` is set and the file does not exist.
    ///
    /// # Errors
    /// Names the file and the expected form.
    pub fn load_or_create(path: &Path, create: bool) -> anyhow::Result<Self> {
        if create && !path.exists() {
            let mut key = Zeroizing::new([0u8; 32]);
            getrandom::getrandom(key.as_mut())?;
            crate::files::create_private_file(path)?;
            std::fs::write(path, hex::encode(key.as_ref()))
                .with_context(|| format!("cannot write MFA secret key {}", path.display()))?;
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read MFA secret key {}", path.display()))?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if hex::decode_to_slice(text.trim(), key.as_mut()).is_err() {
            bail!(
                "MFA secret key {} must hold 64 hex digits (32 bytes); generate one with \
                 `openssl rand -hex 32` or let Folio create it by leaving mfa.secret_key_file empty",
                path.display()
            );
        }
        Ok(AesGcmBox::new(&key))
    }
}

impl SecretBox for AesGcmBox {
    fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).map_err(|_| SecretBoxError::Random)?;
        let payload = Payload {
            msg: plaintext,
            aad: associated_data,
        };
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| SecretBoxError::Authentication)?;
        let mut sealed = Vec::with_capacity(1 + nonce.len() + ciphertext.len());
        sealed.push(FORMAT_AES_256_GCM);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    fn open(
        &self,
        sealed: &[u8],
        associated_data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretBoxError> {
        let Some((&FORMAT_AES_256_GCM, rest)) = sealed.split_first() else {
            return Err(SecretBoxError::Format);
        };
        if rest.len() < 12 + 16 {
            return Err(SecretBoxError::Format);
        }
        let (nonce, ciphertext) = rest.split_at(12);
        let payload = Payload {
            msg: ciphertext,
            aad: associated_data,
        };
        self.cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| SecretBoxError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let sealer = AesGcmBox::new(&[7; 32]);
        let sealed = sealer.seal(b"secret bytes", b"op-1|totp").unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"secret bytes"));
        assert_eq!(
            sealer.open(&sealed, b"op-1|totp").unwrap().as_slice(),
            b"secret bytes"
        );
        assert!(matches!(
            sealer.open(&sealed, b"op-2|totp"),
            Err(SecretBoxError::Authentication)
        ));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(&altered, b"op-1|totp").is_err());
        assert!(matches!(
            sealer.open(&sealed[..10], b"x"),
            Err(SecretBoxError::Format)
        ));
        let other = AesGcmBox::new(&[8; 32]);
        assert!(other.open(&sealed, b"op-1|totp").is_err());
    }

    #[test]
    fn key_file_is_created_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mfa.key");
        let first = AesGcmBox::load_or_create(&path, true).unwrap();
        let sealed = first.seal(b"x", b"a").unwrap();
        let second = AesGcmBox::load_or_create(&path, false).unwrap();
        assert_eq!(second.open(&sealed, b"a").unwrap().as_slice(), b"x");
        std::fs::write(&path, "not hex").unwrap();
        let error = AesGcmBox::load_or_create(&path, false).err().unwrap();
        assert!(error.to_string().contains("64 hex digits"), "{error}");
    }
}
