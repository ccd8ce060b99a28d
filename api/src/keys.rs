//! The ledger signing key ring on disk: one 0600 file per key under `<data_dir>/keys/`.
//!
//! A server keeps each 32-byte Ed25519 seed wrapped by the KMS in
//! `ledger-<key id>.wrapped` (the JSON of [`crate::kms::wrapped_file`]), so a copy of the
//! data directory without the KMS signs nothing. A data directory from before the KMS
//! keeps plain `ledger-<key id>.key` files (the seed as 64 hex digits). They still load,
//! and `folio keys wrap-signing-keys` wraps them. The file named in `keys/current` seals
//! genesis events of new ledgers; existing ledgers keep the key their chain names until a
//! rotation event changes it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use domain::crypto::LedgerKey;
use zeroize::Zeroizing;

use crate::kms::Kms;

/// Extension of a plain key file, from before the KMS.
const PLAIN: &str = "key";

/// Extension of a key file wrapped by the KMS.
const WRAPPED: &str = "wrapped";

/// Signing keys found in the data directory, the current one first.
pub struct KeyRing {
    /// Every key, current first.
    pub keys: Vec<Arc<LedgerKey>>,
}

impl KeyRing {
    /// Opens the ring with `kms`, unwrapping wrapped keys and reading plain ones. On a
    /// data directory without keys it creates a first key, wrapped.
    ///
    /// # Errors
    /// Fails on unreadable or malformed key files, naming the file, or when the KMS
    /// cannot unwrap a key or an unwrapped seed does not match the key id of its file.
    pub async fn open(data_dir: &Path, kms: &dyn Kms) -> anyhow::Result<KeyRing> {
        let dir = data_dir.join("keys");
        crate::files::create_private_dir(&dir)?;
        let current_path = dir.join("current");
        if !current_path.exists() {
            let key = LedgerKey::generate();
            let name = write_wrapped_key(&dir, &key, kms).await?;
            write_current(&dir, &name)?;
            tracing::info!(key_id = %key.key_id().to_hex(), "created ledger signing key");
        }
        let current_name = std::fs::read_to_string(&current_path)?.trim().to_owned();
        let mut keys = vec![Arc::new(open_key(&dir.join(&current_name), kms).await?)];
        for path in key_files(&dir)? {
            if path
                .file_name()
                .is_some_and(|name| name != current_name.as_str())
            {
                keys.push(Arc::new(open_key(&path, kms).await?));
            }
        }
        Ok(KeyRing { keys })
    }

    /// Loads a ring of plain key files, creating a first plain key if the directory has
    /// none. For scratch data directories (benchmarks) that have no KMS.
    ///
    /// # Errors
    /// Fails on unreadable or malformed key files, naming the file, and on a wrapped key,
    /// which only [`KeyRing::open`] can read.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<KeyRing> {
        let dir = data_dir.join("keys");
        crate::files::create_private_dir(&dir)?;
        let current_path = dir.join("current");
        if !current_path.exists() {
            let key = LedgerKey::generate();
            let name = write_plain_key(&dir, &key)?;
            write_current(&dir, &name)?;
            tracing::info!(key_id = %key.key_id().to_hex(), "created ledger signing key");
        }
        let current_name = std::fs::read_to_string(&current_path)?.trim().to_owned();
        let mut keys = vec![Arc::new(read_plain_key(&dir.join(&current_name))?)];
        for path in key_files(&dir)? {
            if path
                .file_name()
                .is_some_and(|name| name != current_name.as_str())
            {
                keys.push(Arc::new(read_plain_key(&path)?));
            }
        }
        Ok(KeyRing { keys })
    }

    /// Returns the key that seals new ledgers.
    pub fn current(&self) -> Arc<LedgerKey> {
        // Both constructors put the current key first.
        Arc::clone(&self.keys[0])
    }
}

/// Writes a new signing key under `<data_dir>/keys/`, wrapped by `kms`, and makes it the
/// key of new ledgers; existing ledgers switch to it only through a rotation event.
///
/// # Errors
/// Names the file that cannot be written, or the KMS failure.
pub async fn add_current_key(
    data_dir: &Path,
    key: &LedgerKey,
    kms: &dyn Kms,
) -> anyhow::Result<()> {
    let dir = data_dir.join("keys");
    let name = write_wrapped_key(&dir, key, kms).await?;
    write_current(&dir, &name)
}

/// Paths of the wrapped key files under `<data_dir>/keys/`, for rewrapping and for
/// counting what a KEK version still wraps.
///
/// # Errors
/// A directory that cannot be read.
pub fn wrapped_key_files(data_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = data_dir.join("keys");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    Ok(key_files(&dir)?
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == WRAPPED))
        .collect())
}

/// Paths of the plain key files under `<data_dir>/keys/`, from before the KMS.
///
/// # Errors
/// A directory that cannot be read.
pub fn plain_key_files(data_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = data_dir.join("keys");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    Ok(key_files(&dir)?
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == PLAIN))
        .collect())
}

/// Associated data of a wrapped signing key: its purpose and file name, which carries the
/// key id, so a wrapped seed moved to another file does not unwrap.
pub fn wrap_context(path: &Path) -> Vec<u8> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    format!("folio/ledger-signing-key/{name}").into_bytes()
}

/// Wraps every plain key file of `data_dir` with `kms`: writes the wrapped file, checks
/// that it unwraps to the same key, points `keys/current` at it if needed, then deletes
/// the plain file. Returns the key ids wrapped.
///
/// # Errors
/// A file that cannot be read or written, or a KMS failure; a plain file is deleted only
/// after its wrapped copy was read back.
pub async fn wrap_plain_keys(data_dir: &Path, kms: &dyn Kms) -> anyhow::Result<Vec<String>> {
    let dir = data_dir.join("keys");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let current = std::fs::read_to_string(dir.join("current")).unwrap_or_default();
    let mut wrapped = Vec::new();
    for path in key_files(&dir)? {
        if path.extension().is_none_or(|ext| ext != PLAIN) {
            continue;
        }
        let key = read_plain_key(&path)?;
        let name = write_wrapped_key(&dir, &key, kms).await?;
        let reopened = open_key(&dir.join(&name), kms).await?;
        anyhow::ensure!(
            reopened.seed_bytes() == key.seed_bytes(),
            "the wrapped copy of {} does not unwrap to the same key; the plain file is kept",
            path.display()
        );
        let plain_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if plain_name.as_deref() == Some(current.trim()) {
            write_current(&dir, &name)?;
        }
        std::fs::remove_file(&path).with_context(|| format!("cannot delete {}", path.display()))?;
        wrapped.push(key.key_id().to_hex());
    }
    Ok(wrapped)
}

/// Key files (plain or wrapped) in `dir`, sorted by name.
fn key_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let named = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("ledger-"));
        let extension = path.extension().and_then(|ext| ext.to_str());
        if named && matches!(extension, Some(PLAIN | WRAPPED)) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

fn write_current(dir: &Path, name: &str) -> anyhow::Result<()> {
    let current = dir.join("current");
    let temporary = dir.join("current.new");
    std::fs::write(&temporary, format!("{name}\n"))
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &current)
        .with_context(|| format!("cannot replace {}", current.display()))
}

async fn write_wrapped_key(dir: &Path, key: &LedgerKey, kms: &dyn Kms) -> anyhow::Result<String> {
    let name = format!("ledger-{}.{WRAPPED}", key.key_id().to_hex());
    let path = dir.join(&name);
    let seed = Zeroizing::new(key.seed_bytes());
    let wrapped = kms.wrap(&seed, &wrap_context(&path)).await?;
    crate::kms::wrapped_file::write(&path, &wrapped)?;
    Ok(name)
}

/// Opens a plain or wrapped key file, checking that the key matches the id in its name.
async fn open_key(path: &Path, kms: &dyn Kms) -> anyhow::Result<LedgerKey> {
    let key = if path.extension().is_some_and(|ext| ext == WRAPPED) {
        let wrapped = crate::kms::wrapped_file::read(path)?;
        let seed = kms
            .unwrap(&wrapped, &wrap_context(path))
            .await
            .with_context(|| format!("cannot unwrap the signing key in {}", path.display()))?;
        LedgerKey::from_seed(*seed)
    } else {
        read_plain_key(path)?
    };
    let expected = format!("ledger-{}", key.key_id().to_hex());
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned());
    if stem.as_deref() != Some(expected.as_str()) {
        bail!(
            "key file {} contains the key {}, not the key its name gives; rename the file to \
             ledger-<key id> with its extension",
            path.display(),
            key.key_id().to_hex()
        );
    }
    Ok(key)
}

fn write_plain_key(dir: &Path, key: &LedgerKey) -> anyhow::Result<String> {
    let name = format!("ledger-{}.{PLAIN}", key.key_id().to_hex());
    let path: PathBuf = dir.join(&name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    file.write_all(hex::encode(key.seed_bytes()).as_bytes())?;
    file.sync_all()?;
    Ok(name)
}

fn read_plain_key(path: &Path) -> anyhow::Result<LedgerKey> {
    if path.extension().is_some_and(|ext| ext == WRAPPED) {
        bail!(
            "signing key file {} is wrapped by the KMS, but this command reads plain keys only",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read key file {}", path.display()))?;
    let bytes = hex::decode(text.trim()).ok();
    let Some(seed) = bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
        bail!(
            "key file {} must hold 64 hex digits (an Ed25519 seed)",
            path.display()
        );
    };
    Ok(LedgerKey::from_seed(seed))
}
