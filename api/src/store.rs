//! Opening the event store backend that the configuration or a command line names.
//!
//! A store is either the SQLite file `events.sqlite` of a data directory or a PostgreSQL
//! database. On the command line a store is written `sqlite:PATH` (a data directory or a
//! database file) or as a `postgres://` URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use eventstore_adapter::postgres::PostgresBackend;
use eventstore_adapter::sqlite::{SqliteBackend, EVENTS_FILE};
use eventstore_adapter::Backend;

use crate::config::{Config, StoreBackend};

/// Setting that names the secret of the event store's PostgreSQL password.
pub const STORE_PASSWORD: &str = "store.password_secret";

/// Location of a store's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL.
    Postgres(String),
}

impl StoreLocation {
    /// Returns the store that `config` names: `store.url` for PostgreSQL, otherwise
    /// `events.sqlite` in the data directory.
    pub fn from_config(config: &Config) -> StoreLocation {
        match config.store.backend {
            StoreBackend::Sqlite => StoreLocation::Sqlite(config.data_dir.join(EVENTS_FILE)),
            StoreBackend::Postgres => StoreLocation::Postgres(config.store.url.clone()),
        }
    }

    /// Returns the store of a data directory, or the PostgreSQL database at `url` when one is
    /// given.
    pub fn from_dir_or_url(data_dir: &Path, url: Option<&str>) -> StoreLocation {
        match url {
            Some(url) if !url.is_empty() => StoreLocation::Postgres(url.to_owned()),
            _ => StoreLocation::Sqlite(data_dir.join(EVENTS_FILE)),
        }
    }

    /// Parses `sqlite:PATH` or a `postgres://` URL. PATH is an SQLite file if it is one or ends
    /// in `.sqlite`, and otherwise a data directory holding `events.sqlite`.
    ///
    /// # Errors
    /// Any other text, with the two accepted forms in the message.
    pub fn parse(text: &str) -> anyhow::Result<StoreLocation> {
        if let Some(path) = text.strip_prefix("sqlite:") {
            if path.is_empty() {
                bail!("store {text:?} is missing a path: write sqlite:/path/to/folio-data");
            }
            // A directory, or a new path without a `.sqlite` extension, is a data directory.
            let path = PathBuf::from(path);
            let is_file = path.is_file()
                || (!path.exists() && path.extension().is_some_and(|ext| ext == "sqlite"));
            return Ok(match is_file {
                true => StoreLocation::Sqlite(path),
                false => StoreLocation::Sqlite(path.join(EVENTS_FILE)),
            });
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(text.to_owned()));
        }
        bail!(
            "invalid store {:?}: write sqlite:PATH or a postgres:// URL, such as \
             sqlite:/path/to/folio-data or postgres://user@host:5432/database",
            redact(text)
        )
    }

    /// Opens the store for reading and writing, creating the SQLite file or the PostgreSQL
    /// schema if missing.
    ///
    /// # Errors
    /// The store cannot be opened; the message names it without any password.
    pub async fn open(&self, max_connections: u32) -> anyhow::Result<Arc<dyn Backend>> {
        self.open_watched(max_connections, None).await
    }

    /// Opens the store as [`StoreLocation::open`] does and, on PostgreSQL, gives the pool
    /// to `passwords` so a rotated `store.password_secret` reaches its new connections.
    ///
    /// # Errors
    /// As [`StoreLocation::open`].
    pub async fn open_watched(
        &self,
        max_connections: u32,
        passwords: Option<&crate::db_password::DbPasswords>,
    ) -> anyhow::Result<Arc<dyn Backend>> {
        let backend: Arc<dyn Backend> = match self {
            StoreLocation::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    crate::files::create_private_dir(parent)?;
                }
                crate::files::create_private_file(path)?;
                Arc::new(
                    SqliteBackend::open(path)
                        .await
                        .with_context(|| format!("cannot open event store {}", path.display()))?,
                )
            }
            StoreLocation::Postgres(url) => {
                let backend = PostgresBackend::connect_with(url, max_connections)
                    .await
                    .with_context(|| format!("cannot open event store {}", self.describe()))?;
                if let Some(passwords) = passwords {
                    let pool = crate::db_password::PasswordPool::Postgres(backend.pool().clone());
                    passwords.watch(STORE_PASSWORD, pool);
                }
                Arc::new(backend)
            }
        };
        Ok(backend)
    }

    /// Opens an existing store for reading: SQLite read-only, PostgreSQL with two connections
    /// and without creating a schema.
    ///
    /// # Errors
    /// The SQLite file does not exist, or the store cannot be opened.
    pub async fn open_read_only(&self) -> anyhow::Result<Arc<dyn Backend>> {
        match self {
            StoreLocation::Sqlite(path) => {
                if !path.exists() {
                    bail!(
                        "event store {} not found: pass --data-dir, --store-url or an export file",
                        path.display()
                    );
                }
                let backend = SqliteBackend::open_read_only(path)
                    .await
                    .with_context(|| format!("cannot open {} read-only", path.display()))?;
                Ok(Arc::new(backend))
            }
            StoreLocation::Postgres(url) => {
                let backend = PostgresBackend::connect_existing(url, 2)
                    .await
                    .with_context(|| format!("cannot open event store {}", self.describe()))?;
                Ok(Arc::new(backend))
            }
        }
    }

    /// Names the store for messages, with any password in a URL replaced by `***`.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => path.display().to_string(),
            StoreLocation::Postgres(url) => redact(url),
        }
    }
}

/// Replaces the password of a `scheme://user:password@host` URL with `***`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end],
        &authority[..colon],
        &url[scheme_end + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_names_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("sqlite:{}", dir.path().display());
        assert_eq!(
            StoreLocation::parse(&text).unwrap(),
            StoreLocation::Sqlite(dir.path().join(EVENTS_FILE))
        );
        assert_eq!(
            StoreLocation::parse("sqlite:/nonexistent/x.sqlite").unwrap(),
            StoreLocation::Sqlite(PathBuf::from("/nonexistent/x.sqlite"))
        );
        assert_eq!(
            StoreLocation::parse("sqlite:/nonexistent/folio-data").unwrap(),
            StoreLocation::Sqlite(PathBuf::from("/nonexistent/folio-data").join(EVENTS_FILE))
        );
        let url = "postgres://folio@127.0.0.1:5432/folio";
        assert_eq!(
            StoreLocation::parse(url).unwrap(),
            StoreLocation::Postgres(url.to_owned())
        );
        let error = StoreLocation::parse("mysql://root:hunter2@db/x").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("sqlite:PATH"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn passwords_never_appear_in_descriptions() {
        assert_eq!(
            redact("postgres://folio:s3cret@db:5432/folio?sslmode=require"),
            "postgres://folio:***@db:5432/folio?sslmode=require"
        );
        assert_eq!(
            redact("postgres://folio@db/folio"),
            "postgres://folio@db/folio"
        );
        assert_eq!(redact("postgres://db/folio"), "postgres://db/folio");
    }
}
