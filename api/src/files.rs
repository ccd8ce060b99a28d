//! Files of the data directory: private permissions and the single-process lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use anyhow::{bail, Context};

/// Name of the lock file inside the data directory.
const LOCK_FILE: &str = "folio.lock";

/// Creates a directory (and its parents) readable only by its owner, and warns when an
/// existing one is readable by others.
///
/// # Errors
/// Fails when the path exists and is not a directory, or cannot be created.
pub fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    if path.exists() && !path.is_dir() {
        bail!(
            "data directory {} is a file; point data_dir at a directory",
            path.display()
        );
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder
            .create(path)
            .with_context(|| format!("cannot create directory {}", path.display()))?;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "data directory is readable by other users; run chmod 700 on it"
            );
        }
    }
    #[cfg(not(unix))]
    builder
        .create(path)
        .with_context(|| format!("cannot create directory {}", path.display()))?;
    Ok(())
}

/// Creates an empty file readable only by its owner if it does not exist yet.
///
/// SQLite gives its `-wal` and `-shm` files the permissions of the database file, so
/// creating the database file first keeps all three private.
///
/// # Errors
/// Fails when the file cannot be created.
pub fn create_private_file(path: &Path) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(())
}

/// Takes the data directory's exclusive lock, so a second `folio serve` on the same
/// directory stops at start instead of racing the first one's sequencer.
///
/// # Errors
/// Fails when another process holds the lock, naming the directory.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    let path = data_dir.join(LOCK_FILE);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => bail!(
            "data directory {} is in use by another folio process; stop it first, or give \
             this one its own data_dir",
            data_dir.display()
        ),
        Err(TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_data_dir_fails() {
        let dir = tempfile::tempdir().unwrap();
        let _first = lock_data_dir(dir.path()).unwrap();
        let error = lock_data_dir(dir.path()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("in use by another folio process"),
            "{error}"
        );
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(lock_data_dir(dir.path()).unwrap());
        assert!(lock_data_dir(dir.path()).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        create_private_dir(&data).unwrap();
        create_private_file(&data.join("events.sqlite")).unwrap();
        let dir_mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        let file_mode = std::fs::metadata(data.join("events.sqlite"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(file_mode, 0o600);
    }

    #[test]
    fn file_as_data_dir_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let error = create_private_dir(&file).unwrap_err();
        assert!(error.to_string().contains("is a file"), "{error}");
    }
}
