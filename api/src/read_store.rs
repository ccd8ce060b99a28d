//! Location of the read models: an SQLite file in the data directory (the default, one per
//! node) or a PostgreSQL database that every node of a cluster shares.

use std::path::Path;

use anyhow::Context;
use projections::ReadModels;
use serde::Deserialize;

/// Database engine of the read models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadModelsBackend {
    /// `read.sqlite` in the data directory, private to this node.
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by every node, named by `read_models.url`.
    Postgres,
}

/// The `[read_models]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadModelsConfig {
    /// `sqlite` (default) or `postgres`.
    pub backend: ReadModelsBackend,
    /// PostgreSQL URL when `backend = "postgres"`; must be empty for `sqlite`.
    pub url: String,
    /// Secret reference of the password for `url`, such as `file:/run/secrets/db-password`;
    /// read again every `secrets.ttl_seconds`. Empty: the password in `url`, if any.
    pub password_secret: String,
}

impl ReadModelsConfig {
    /// Checks that `url` is set exactly when the backend needs one.
    ///
    /// # Errors
    /// Names the key and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self.backend {
            ReadModelsBackend::Sqlite if !self.url.is_empty() => anyhow::bail!(
                "read_models.url is set but read_models.backend is \"sqlite\"; \
                 set backend = \"postgres\" or remove the url"
            ),
            ReadModelsBackend::Postgres if !self.url.starts_with("postgres") => anyhow::bail!(
                "read_models.backend is \"postgres\" but read_models.url is not a PostgreSQL \
                 URL; set it to postgres://user@host:port/database"
            ),
            ReadModelsBackend::Sqlite if !self.password_secret.is_empty() => anyhow::bail!(
                "read_models.password_secret is set but read_models.backend is \"sqlite\"; \
                 set backend = \"postgres\" or remove password_secret"
            ),
            _ => crate::secrets::check_reference(
                "read_models.password_secret",
                &self.password_secret,
            ),
        }
    }

    /// Returns whether every node writes the same read models, so only the holder of a
    /// ledger's lease may run that ledger's projection.
    pub fn is_shared(&self) -> bool {
        self.backend == ReadModelsBackend::Postgres
    }

    /// Opens the configured read models, creating their tables if missing.
    ///
    /// # Errors
    /// Fails when the file or database cannot be opened, naming it without credentials.
    pub async fn open(
        &self,
        data_dir: &Path,
        passwords: &crate::db_password::DbPasswords,
    ) -> anyhow::Result<ReadModels> {
        match self.backend {
            ReadModelsBackend::Sqlite => {
                let path = data_dir.join("read.sqlite");
                crate::files::create_private_file(&path)?;
                ReadModels::open(&path)
                    .await
                    .with_context(|| format!("cannot open read models {}", path.display()))
            }
            ReadModelsBackend::Postgres => {
                let setting = "read_models.password_secret";
                let url = passwords
                    .resolve(setting, &self.password_secret, &self.url)
                    .await?;
                let models = ReadModels::connect(url.expose())
                    .await
                    .context("cannot open the PostgreSQL read models at read_models.url")?;
                let pool = crate::db_password::PasswordPool::Any(models.pool().clone());
                passwords.watch(setting, pool);
                Ok(models)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_with_url_is_rejected() {
        let config = ReadModelsConfig {
            backend: ReadModelsBackend::Sqlite,
            url: "postgres://localhost/x".to_owned(),
            password_secret: String::new(),
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("read_models.url is set"), "{error}");
    }

    #[test]
    fn postgres_without_url_is_rejected() {
        let config = ReadModelsConfig {
            backend: ReadModelsBackend::Postgres,
            url: String::new(),
            password_secret: String::new(),
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("read_models.url"), "{error}");
    }
}
