//! The ledger signing key ring on disk: one 0600 file per key under `<data_dir>/keys/`.
//!
//! A key file contains the 32-byte Ed25519 seed as 64 hex digits. The file named in
//! `keys/current` seals genesis events of new ledgers; existing ledgers keep the
//! key their chain names until a rotation event changes it.
// TODO(kms): replace the key files with the KMS provider once envelope encryption lands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use domain::crypto::LedgerKey;

/// Signing keys found in the data directory, the current one first.
pub struct KeyRing {
    /// Every key, current first.
    pub keys: Vec<Arc<LedgerKey>>,
}

impl KeyRing {
    /// Loads the ring, creating a first key if the directory has none.
    ///
    /// # Errors
    /// Fails on unreadable or malformed key files, naming the file.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<KeyRing> {
        let dir = data_dir.join("keys");
        crate::files::create_private_dir(&dir)?;
        let current_path = dir.join("current");
        if !current_path.exists() {
            let key = LedgerKey::generate();
            let name = write_key(&dir, &key)?;
            std::fs::write(&current_path, format!("{name}\n"))?;
            tracing::info!(key_id = %key.key_id().to_hex(), "created ledger signing key");
        }
        let current_name = std::fs::read_to_string(&current_path)?.trim().to_owned();
        let mut keys = vec![Arc::new(read_key(&dir.join(&current_name))?)];
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let is_key = path.extension().is_some_and(|ext| ext == "key");
            if is_key
                && path
                    .file_name()
                    .is_some_and(|name| name != current_name.as_str())
            {
                keys.push(Arc::new(read_key(&path)?));
            }
        }
        Ok(KeyRing { keys })
    }

    /// Returns the key that seals new ledgers.
    pub fn current(&self) -> Arc<LedgerKey> {
        // load_or_create always puts the current key first.
        Arc::clone(&self.keys[0])
    }
}

/// Writes a new signing key file (mode 0600) under `<data_dir>/keys/` and makes it the
/// key of new ledgers; existing ledgers switch to it only through a rotation event.
///
/// # Errors
/// Names the file that cannot be written.
pub fn add_current_key(data_dir: &Path, key: &LedgerKey) -> anyhow::Result<()> {
    let dir = data_dir.join("keys");
    let name = write_key(&dir, key)?;
    let current = dir.join("current");
    let temporary = dir.join("current.new");
    std::fs::write(&temporary, format!("{name}\n"))
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &current)
        .with_context(|| format!("cannot replace {}", current.display()))
}

fn write_key(dir: &Path, key: &LedgerKey) -> anyhow::Result<String> {
    let name = format!("ledger-{}.key", key.key_id().to_hex());
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

fn read_key(path: &Path) -> anyhow::Result<LedgerKey> {
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
