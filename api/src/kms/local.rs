//! The local KMS: KEK versions in a key file beside the data, for development and tests
//! only. `[kms]` rejects it under the production profile, because anyone who can read the
//! data directory could then read the key too.
//!
//! The file (mode 0600) starts with `id local-<16 hex digits>`, a random name that stays
//! when versions come and go, then has one line per KEK version, `v<N> <64 hex digits>`,
//! oldest first; the last line is the current version. A wrapped key is: format byte 1, the
//! version (u32 big-endian), a 12-byte random nonce, then the AES-256-GCM ciphertext of
//! the data key with its tag. The associated data is `folio/kms-local/v1` NUL followed by
//! the caller's context.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{bail, Context};
use zeroize::Zeroizing;

use super::{random_key, KeyBytes, Kms, KmsError, WrappedKey};

const PROVIDER: &str = "local";
const FORMAT: u8 = 1;
const AAD_PREFIX: &[u8] = b"folio/kms-local/v1\0";
const HEADER_LEN: usize = 1 + 4 + 12;

/// KEK versions held in a local key file.
pub struct LocalKms {
    path: PathBuf,
    kek_id: String,
    versions: RwLock<Vec<(u32, KeyBytes)>>,
}

impl LocalKms {
    /// Opens the key file, creating it with one version when it does not exist.
    ///
    /// # Errors
    /// Names the file and the expected line format.
    pub fn open(path: &Path) -> anyhow::Result<LocalKms> {
        if !path.exists() {
            if let Some(dir) = path.parent() {
                crate::files::create_private_dir(dir)?;
            }
            let key = random_key()?;
            let id = format!("local-{}", hex::encode(&key[..8]));
            let first = random_key()?;
            write_versions(path, &id, &[(1, first)])?;
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read local KMS key file {}", path.display()))?,
        );
        let (kek_id, versions) = parse_versions(&text)
            .with_context(|| format!("local KMS key file {} is malformed", path.display()))?;
        Ok(LocalKms {
            path: path.to_owned(),
            kek_id,
            versions: RwLock::new(versions),
        })
    }

    /// The KEK versions in the file, oldest first.
    pub fn versions(&self) -> Vec<u32> {
        self.read().iter().map(|(version, _)| *version).collect()
    }

    /// Deletes KEK version `version` from the file. The caller must have checked that
    /// no data key is still wrapped by it; the current version cannot be retired.
    ///
    /// # Errors
    /// An unknown or current version, or a file that cannot be written.
    pub fn retire(&self, version: u32) -> Result<(), KmsError> {
        let mut versions = self.write();
        let current = versions.last().map(|(v, _)| *v);
        if current == Some(version) {
            return Err(KmsError::Local(format!(
                "KEK version {version} is the current one; rotate first, then retire it"
            )));
        }
        let before = versions.len();
        versions.retain(|(v, _)| *v != version);
        if versions.len() == before {
            return Err(KmsError::Local(format!(
                "KEK version {version} does not exist"
            )));
        }
        write_versions(&self.path, &self.kek_id, &versions)
            .map_err(|error| KmsError::Local(format!("{error:#}")))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<(u32, KeyBytes)>> {
        // A panic while holding the lock leaves the list itself intact.
        self.versions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<(u32, KeyBytes)>> {
        self.versions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl Kms for LocalKms {
    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn kek_id(&self) -> &str {
        &self.kek_id
    }

    async fn wrap(&self, key: &KeyBytes, context: &[u8]) -> Result<WrappedKey, KmsError> {
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).map_err(|error| {
            KmsError::Local(format!("the system random source failed: {error}"))
        })?;
        let versions = self.read();
        // The file always holds at least one version (checked when it is parsed).
        let (version, kek) = versions.last().expect("at least one KEK version");
        let aad = [AAD_PREFIX, context].concat();
        let sealed = Aes256Gcm::new(kek.as_ref().into())
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key.as_ref(),
                    aad: &aad,
                },
            )
            .map_err(|_| KmsError::Local("AES-GCM refused to wrap a 32-byte key".to_owned()))?;
        let mut ciphertext = Vec::with_capacity(HEADER_LEN + sealed.len());
        ciphertext.push(FORMAT);
        ciphertext.extend_from_slice(&version.to_be_bytes());
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&sealed);
        Ok(WrappedKey {
            provider: PROVIDER.to_owned(),
            kek_id: self.kek_id.clone(),
            kek_version: version.to_string(),
            ciphertext,
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<KeyBytes, KmsError> {
        self.check_owner(wrapped)?;
        let bytes = &wrapped.ciphertext;
        if bytes.len() != HEADER_LEN + 32 + 16 || bytes[0] != FORMAT {
            return Err(KmsError::Authentication { provider: PROVIDER });
        }
        let version = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let versions = self.read();
        let Some((_, kek)) = versions.iter().find(|(v, _)| *v == version) else {
            return Err(KmsError::Local(format!(
                "KEK version {version} is not in {} (retired?)",
                self.path.display()
            )));
        };
        let aad = [AAD_PREFIX, context].concat();
        let plain = Aes256Gcm::new(kek.as_ref().into())
            .decrypt(
                Nonce::from_slice(&bytes[5..HEADER_LEN]),
                Payload {
                    msg: &bytes[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KmsError::Authentication { provider: PROVIDER })?;
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plain);
        Ok(key)
    }

    async fn rotate(&self) -> Result<String, KmsError> {
        let mut versions = self.write();
        let next = versions.last().map_or(1, |(v, _)| v + 1);
        versions.push((next, random_key()?));
        write_versions(&self.path, &self.kek_id, &versions)
            .map_err(|error| KmsError::Local(format!("{error:#}")))?;
        Ok(next.to_string())
    }
}

type Versions = Vec<(u32, KeyBytes)>;

fn parse_versions(text: &str) -> anyhow::Result<(String, Versions)> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let id = lines
        .next()
        .and_then(|(_, line)| line.trim().strip_prefix("id local-"))
        .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|id| format!("local-{id}"))
        .context("the first line is not `id local-<16 hex digits>`")?;
    let mut versions: Versions = Vec::new();
    for (index, line) in lines {
        let parsed = line.trim().split_once(' ').and_then(|(version, hex_key)| {
            let version = version.strip_prefix('v')?.parse::<u32>().ok()?;
            let mut key = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(hex_key.trim(), key.as_mut()).ok()?;
            Some((version, key))
        });
        let Some((version, key)) = parsed else {
            bail!("line {} is not `v<N> <64 hex digits>`", index + 1);
        };
        if versions.last().is_some_and(|(last, _)| *last >= version) {
            bail!("line {}: versions must increase", index + 1);
        }
        versions.push((version, key));
    }
    if versions.is_empty() {
        bail!("no KEK version; delete the file to let Folio create one");
    }
    Ok((id, versions))
}

/// Writes the versions to a temporary file beside `path`, then renames it over `path`,
/// so a crash leaves either the old or the new list.
fn write_versions(path: &Path, id: &str, versions: &[(u32, KeyBytes)]) -> anyhow::Result<()> {
    let mut text = Zeroizing::new(format!("id {id}\n"));
    for (version, key) in versions {
        text.push_str(&format!("v{version} {}\n", hex::encode(key.as_ref())));
    }
    let temporary = path.with_extension("kek.new");
    let _ = std::fs::remove_file(&temporary);
    crate::files::create_private_file(&temporary)?;
    std::fs::write(&temporary, text.as_bytes())
        .with_context(|| format!("cannot write local KMS key file {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace local KMS key file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wrap_unwrap_rotate_retire() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open(&dir.path().join("keys/kms.key")).unwrap();
        let key = random_key().unwrap();
        let old = kms.wrap(&key, b"ctx").await.unwrap();
        assert_eq!(old.kek_version, "1");
        assert!(matches!(
            kms.unwrap(&old, b"other").await,
            Err(KmsError::Authentication { .. })
        ));
        assert_eq!(kms.rotate().await.unwrap(), "2");
        let new = kms.rewrap(&old, b"ctx").await.unwrap();
        assert_eq!(new.kek_version, "2");
        assert_eq!(*kms.unwrap(&new, b"ctx").await.unwrap(), *key);
        assert!(kms.retire(2).is_err(), "the current version stays");
        kms.retire(1).unwrap();
        assert!(kms.unwrap(&old, b"ctx").await.is_err());

        // The file is read back with the same id and versions.
        let again = LocalKms::open(&dir.path().join("keys/kms.key")).unwrap();
        assert_eq!(again.kek_id(), kms.kek_id());
        assert_eq!(again.versions(), vec![2]);
        assert_eq!(*again.unwrap(&new, b"ctx").await.unwrap(), *key);
    }

    #[test]
    fn malformed_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.key");
        std::fs::write(&path, "id local-0011223344556677\nv1 nothex\n").unwrap();
        let error = LocalKms::open(&path).err().unwrap();
        assert!(
            format!("{error:#}").contains("v<N> <64 hex digits>"),
            "{error:#}"
        );
    }
}
