//! Where operators, sessions, second factors and API tokens are kept.
//!
//! On one node they live in two SQLite files of the data directory, `operators.sqlite` and
//! `auth.sqlite`. When several nodes share a PostgreSQL event store they live in that
//! database too, or in the one `operators.url` names. An operator who enrolled on one node
//! then signs in on another, and a revoked session or token is refused everywhere.
//!
//! Both stores run their queries through sqlx's `Any` driver, with SQL that SQLite and
//! PostgreSQL both accept: `$n` parameters, `BIGINT` and `TEXT` columns, `ON CONFLICT`,
//! `RETURNING`. Only the blob type differs (`BLOB` against `BYTEA`), and [`Dialect`]
//! rewrites it when the schema is created.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions, Executor};

use crate::config::{Config, StoreBackend};

mod copy;

pub use copy::{copy_credentials, CopiedCredentials};

/// File of the operator store in a data directory.
pub const OPERATORS_FILE: &str = "operators.sqlite";

/// File of the token store in a data directory.
pub const TOKENS_FILE: &str = "auth.sqlite";

/// Connections per store and node. Sign-in and token checks are short single statements.
const POOL_SIZE: u32 = 4;

/// How long a request waits for a connection or a locked SQLite file before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of every connection to an SQLite file: WAL lets readers go on during a write.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;";

/// Key of the transaction-level advisory lock that serialises schema creation on
/// PostgreSQL, so nodes that start together do not race on `CREATE TABLE`.
const SCHEMA_LOCK_KEY: i64 = 0x666f_6c69_6f5f_6f70;

/// Location of the operator and token stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsLocation {
    /// `operators.sqlite` and `auth.sqlite` in this data directory (one node).
    Files(PathBuf),
    /// A PostgreSQL database that every node shares.
    Postgres(String),
}

impl CredentialsLocation {
    /// Returns the location that `config` names: `operators.url` when set, else the
    /// PostgreSQL event store's database, else the data directory.
    pub fn from_config(config: &Config) -> CredentialsLocation {
        if !config.operators.url.is_empty() {
            return CredentialsLocation::Postgres(config.operators.url.clone());
        }
        match config.store.backend {
            StoreBackend::Postgres => CredentialsLocation::Postgres(config.store.url.clone()),
            StoreBackend::Sqlite => CredentialsLocation::Files(config.data_dir.clone()),
        }
    }

    /// Returns the location a command line names: `operators_url`, else `store_url`, else
    /// the data directory. Empty strings count as absent.
    pub fn from_args(
        data_dir: &Path,
        store_url: Option<&str>,
        operators_url: Option<&str>,
    ) -> CredentialsLocation {
        let url = [operators_url, store_url]
            .into_iter()
            .flatten()
            .find(|url| !url.is_empty());
        match url {
            Some(url) => CredentialsLocation::Postgres(url.to_owned()),
            None => CredentialsLocation::Files(data_dir.to_path_buf()),
        }
    }

    /// Returns whether several nodes may share these stores.
    pub fn is_shared(&self) -> bool {
        matches!(self, CredentialsLocation::Postgres(_))
    }

    /// Names the location for messages, without any password.
    pub fn describe(&self) -> String {
        match self {
            CredentialsLocation::Files(dir) => dir.display().to_string(),
            CredentialsLocation::Postgres(url) => crate::store::redact(url),
        }
    }

    /// Connects to the database holding `file` (in the data directory) or to the shared
    /// database, and creates `schema` unless every table of `tables` exists.
    ///
    /// # Errors
    /// Names the file or the database (without password) that cannot be opened.
    pub(crate) async fn connect(
        &self,
        file: &str,
        schema: &[&str],
        tables: &[&str],
    ) -> anyhow::Result<Database> {
        let database = match self {
            CredentialsLocation::Files(dir) => {
                crate::files::create_private_dir(dir)?;
                let path = dir.join(file);
                crate::files::create_private_file(&path)?;
                Database::open_file(&path)
                    .await
                    .with_context(|| format!("cannot open {}", path.display()))?
            }
            CredentialsLocation::Postgres(url) => Database::connect(url)
                .await
                .with_context(|| format!("cannot open {}", crate::store::redact(url)))?,
        };
        database
            .create_schema(schema, tables)
            .await
            .with_context(|| format!("cannot create the {file} tables in {}", self.describe()))?;
        Ok(database)
    }
}

/// SQL dialect of a [`Database`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Rewrites a portable `CREATE` statement for this database.
    fn adapt(self, statement: &str) -> String {
        match self {
            Dialect::Sqlite => statement.to_owned(),
            Dialect::Postgres => statement.replace(" BLOB", " BYTEA"),
        }
    }
}

/// A pool over an SQLite file or a PostgreSQL database, through the `Any` driver.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    pub(crate) pool: AnyPool,
    pub(crate) dialect: Dialect,
}

impl Database {
    /// Opens (creating) the SQLite file at `path`.
    pub(crate) async fn open_file(path: &Path) -> Result<Database, sqlx::Error> {
        // The `Any` driver takes a URL, which carries no pragmas, so each new connection
        // sets them.
        let url = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .to_url_lossy();
        let pool = AnyPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(BUSY_TIMEOUT)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    connection.execute(SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            })
            .connect_with(any_options(url.as_str())?)
            .await?;
        Ok(Database {
            pool,
            dialect: Dialect::Sqlite,
        })
    }

    /// Connects to the PostgreSQL database at `url`.
    pub(crate) async fn connect(url: &str) -> Result<Database, sqlx::Error> {
        let pool = AnyPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(any_options(url)?)
            .await?;
        Ok(Database {
            pool,
            dialect: Dialect::Postgres,
        })
    }

    /// Returns whether every table of `tables` exists in the connection's search path.
    pub(crate) async fn tables_exist(&self, tables: &[&str]) -> Result<bool, sqlx::Error> {
        for table in tables {
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(*table)
                .fetch_one(&self.pool)
                .await?;
            if !exists {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs the idempotent `schema` statements in one transaction. On PostgreSQL it first
    /// checks whether every table of `tables` exists, and then runs nothing, because
    /// PostgreSQL checks the right to create before it checks `IF NOT EXISTS`, and a role
    /// with only the rights its queries need has none. Otherwise it takes an advisory
    /// lock. Without it, two `CREATE TABLE IF NOT EXISTS` at once can both pass the check,
    /// and the later one then fails on the catalog's unique index.
    pub(crate) async fn create_schema(
        &self,
        schema: &[&str],
        tables: &[&str],
    ) -> Result<(), sqlx::Error> {
        if self.dialect == Dialect::Postgres && self.tables_exist(tables).await? {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(SCHEMA_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        for statement in schema {
            sqlx::query(&self.dialect.adapt(statement))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}

/// Parses a database URL for the `Any` driver, installing the drivers on first use. Bound
/// values can be secrets, so statements are not logged.
fn any_options(url: &str) -> Result<AnyConnectOptions, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let options = url.parse::<AnyConnectOptions>()?;
    Ok(options.disable_statement_logging())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_follows_the_store_unless_named() {
        let mut config = Config::default();
        assert_eq!(
            CredentialsLocation::from_config(&config),
            CredentialsLocation::Files(config.data_dir.clone())
        );
        config.store.backend = StoreBackend::Postgres;
        config.store.url = "postgres://folio@db/events".to_owned();
        assert_eq!(
            CredentialsLocation::from_config(&config),
            CredentialsLocation::Postgres("postgres://folio@db/events".to_owned())
        );
        config.operators.url = "postgres://folio@db/people".to_owned();
        assert_eq!(
            CredentialsLocation::from_config(&config),
            CredentialsLocation::Postgres("postgres://folio@db/people".to_owned())
        );
    }

    #[test]
    fn command_line_prefers_the_operators_url() {
        let dir = Path::new("/srv/folio");
        let files = CredentialsLocation::Files(dir.to_path_buf());
        assert_eq!(CredentialsLocation::from_args(dir, None, None), files);
        assert_eq!(CredentialsLocation::from_args(dir, Some(""), None), files);
        let shared =
            CredentialsLocation::from_args(dir, Some("postgres://a"), Some("postgres://b"));
        assert_eq!(
            shared,
            CredentialsLocation::Postgres("postgres://b".to_owned())
        );
        assert!(shared.is_shared());
    }

    #[test]
    fn postgres_gets_bytea() {
        let statement = "CREATE TABLE t (a BLOB NOT NULL, b BIGINT)";
        assert_eq!(Dialect::Sqlite.adapt(statement), statement);
        assert_eq!(
            Dialect::Postgres.adapt(statement),
            "CREATE TABLE t (a BYTEA NOT NULL, b BIGINT)"
        );
    }
}
