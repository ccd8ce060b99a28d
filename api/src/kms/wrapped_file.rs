//! A data key kept in a file, wrapped by the KMS: the key of the TOTP secrets. The file
//! holds only the wrapped form, so a copy of the data directory without the KMS opens
//! nothing.

use std::path::Path;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{random_key, KeyBytes, Kms, WrappedKey};

/// The file's JSON form.
#[derive(Serialize, Deserialize)]
struct WrappedFile {
    provider: String,
    kek_id: String,
    kek_version: String,
    ciphertext: String,
}

/// Reads the data key wrapped in `path` and unwraps it with `kms`, or, when the file does
/// not exist, draws a new key, wraps it and writes the file (mode 0600). `context` binds
/// the wrapped key to its purpose.
///
/// # Errors
/// Names the file, or the KMS failure.
pub async fn load_or_create(
    kms: &dyn Kms,
    path: &Path,
    context: &[u8],
) -> anyhow::Result<KeyBytes> {
    if !path.exists() {
        let key = random_key()?;
        let wrapped = kms.wrap(&key, context).await?;
        write(path, &wrapped)?;
        return Ok(key);
    }
    let wrapped = read(path)?;
    kms.unwrap(&wrapped, context)
        .await
        .with_context(|| format!("cannot unwrap the data key in {}", path.display()))
}

/// Wraps the key in `path` again under the KMS's current KEK version; returns the
/// version it had before.
///
/// # Errors
/// Names the file, or the KMS failure.
pub async fn rewrap(kms: &dyn Kms, path: &Path, context: &[u8]) -> anyhow::Result<String> {
    let old = read(path)?;
    let new = kms.rewrap(&old, context).await?;
    write(path, &new)?;
    Ok(old.kek_version)
}

/// Reads the wrapped key in `path`.
///
/// # Errors
/// Names the file and what is wrong with it.
pub fn read(path: &Path) -> anyhow::Result<WrappedKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read wrapped key file {}", path.display()))?;
    let file: WrappedFile = serde_json::from_str(&text)
        .with_context(|| format!("wrapped key file {} is not valid JSON", path.display()))?;
    let ciphertext = BASE64
        .decode(file.ciphertext)
        .with_context(|| format!("wrapped key file {} has bad base64", path.display()))?;
    Ok(WrappedKey {
        provider: file.provider,
        kek_id: file.kek_id,
        kek_version: file.kek_version,
        ciphertext,
    })
}

/// Writes `wrapped` to `path` (mode 0600) through a temporary file and a rename.
///
/// # Errors
/// Names the file that cannot be written.
pub fn write(path: &Path, wrapped: &WrappedKey) -> anyhow::Result<()> {
    let file = WrappedFile {
        provider: wrapped.provider.clone(),
        kek_id: wrapped.kek_id.clone(),
        kek_version: wrapped.kek_version.clone(),
        ciphertext: BASE64.encode(&wrapped.ciphertext),
    };
    let temporary = path.with_extension("wrapped.new");
    let _ = std::fs::remove_file(&temporary);
    crate::files::create_private_file(&temporary)?;
    std::fs::write(&temporary, serde_json::to_vec_pretty(&file)?)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::local::LocalKms;

    #[tokio::test]
    async fn created_then_unwrapped_then_rewrapped() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open(&dir.path().join("kek.key")).unwrap();
        let path = dir.path().join("mfa.wrapped");
        let first = load_or_create(&kms, &path, b"mfa").await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&hex::encode(first.as_ref())));
        kms.rotate().await.unwrap();
        assert_eq!(rewrap(&kms, &path, b"mfa").await.unwrap(), "1");
        assert_eq!(read(&path).unwrap().kek_version, "2");
        let again = load_or_create(&kms, &path, b"mfa").await.unwrap();
        assert_eq!(*first, *again);
        assert!(load_or_create(&kms, &path, b"other").await.is_err());
    }
}
