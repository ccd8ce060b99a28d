//! The read-model database: opening it, applying events with their checkpoint in one
//! transaction, waiting for a position, and dumping every row.
//!
//! Every query goes through sqlx's `Any` driver, so one code path serves an SQLite file
//! (the default, private to one node) and a PostgreSQL database (shared by every node).
//! The SQL sticks to what both engines accept: see [`crate::schema`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use domain::events::EventPayload as _;
use domain::personal::SubjectErased;
use domain::record::{SealedEvent, GENESIS_PREV_HASH, HASH_LEN};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyConnection, AnyPool, Column, ConnectOptions, Executor, Row, ValueRef};
use tokio::sync::watch;
use uuid::Uuid;

use crate::row::{get_u64, to_db};
use crate::{apply, schema, ProjectionError};

/// How long a connection waits for another writer before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often [`ReadModels::wait_for_position`] rereads the checkpoint, so it also
/// notices progress made by another process on the same file.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Connections in the pool of a file database: one writer and a few readers (WAL mode).
const FILE_POOL_SIZE: u32 = 4;

/// Connections in the pool of a PostgreSQL database: the runner's writer and the queries
/// of one node's HTTP workers.
const SERVER_POOL_SIZE: u32 = 8;

/// Settings applied to every connection of an SQLite file. A commit lost to a power cut is
/// projected again from the event store, so the read models do not need a sync on every
/// commit (`synchronous = NORMAL`). `secure_delete` overwrites the bytes of a changed or
/// deleted row, so an erased payee's name does not linger in the file's free space.
const SQLITE_FILE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
    PRAGMA busy_timeout = 5000; PRAGMA secure_delete = ON;";

/// Location of a read-model database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// An SQLite file.
    File(std::path::PathBuf),
    /// A database server, by URL.
    Server(String),
    /// An SQLite database in memory.
    Memory,
}

/// The position and head hash that every read model of a ledger reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Ledger id.
    pub ledger_id: Uuid,
    /// Position of the last applied event.
    pub position: u64,
    /// Hash of the last applied event.
    pub head_hash: [u8; HASH_LEN],
}

/// Every row of every read-model table, sorted by primary key, as JSON values.
///
/// Two databases built from the same events have equal dumps.
pub type Dump = BTreeMap<String, Vec<serde_json::Map<String, serde_json::Value>>>;

/// The read-model database, shared by the runner (which writes) and queries (which read).
///
/// Cloning is cheap and clones share the pool.
#[derive(Debug, Clone)]
pub struct ReadModels {
    pub(crate) pool: AnyPool,
    /// Location of the models, so a rebuild can place its fresh copy beside them.
    pub(crate) location: Location,
    // Bumped after every committed batch so waiters recheck their ledger's checkpoint.
    applied: Arc<watch::Sender<u64>>,
    // Opens sealed personal fields before the models see them.
    opener: crate::opener::Opener,
}

impl ReadModels {
    /// Opens or creates the SQLite read-model database at `path` in WAL mode, creating its parent
    /// directory and the schema if missing.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] if the file cannot be opened or the schema not created.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, ProjectionError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(sqlx::Error::Io)?;
        }
        // The `Any` driver takes a URL, which carries the file name and mode but no
        // pragmas, so those are set on each new connection instead.
        let url = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .to_url_lossy();
        let options = any_options(url.as_str())?;
        let pool = AnyPoolOptions::new()
            .max_connections(FILE_POOL_SIZE)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    connection.execute(SQLITE_FILE_PRAGMAS).await?;
                    Ok(())
                })
            })
            .connect_with(options);
        Self::with_pool(pool.await?, Location::File(path.to_owned())).await
    }

    /// Connects to read models on a database server, such as
    /// `postgres://folio@db.internal:5432/folio_read`, creating the tables if missing.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] if the URL is invalid, the server cannot be reached or
    /// the schema not created.
    pub async fn connect(url: &str) -> Result<Self, ProjectionError> {
        let options = any_options(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(SERVER_POOL_SIZE)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options);
        Self::with_pool(pool.await?, Location::Server(url.to_owned())).await
    }

    /// Returns the connection pool, so the caller can give it new connect options (a
    /// rotated password).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Creates an empty read-model database in memory, for tests and one-off rebuilds.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] if SQLite fails.
    pub async fn in_memory() -> Result<Self, ProjectionError> {
        let options = any_options("sqlite::memory:")?;
        // Each in-memory connection is a separate database, so the pool keeps exactly
        // one connection open for its whole life.
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options);
        Self::with_pool(pool.await?, Location::Memory).await
    }

    async fn with_pool(pool: AnyPool, location: Location) -> Result<Self, ProjectionError> {
        // Two nodes creating the same PostgreSQL table at once can both pass `IF NOT
        // EXISTS`, and the later one can fail on a unique index of the catalog. A second pass
        // then finds the table.
        if let Err(error) = create_schema(&pool).await {
            tracing::debug!(%error, "read-model schema creation failed once; retrying");
            create_schema(&pool).await?;
        }
        let (applied, _) = watch::channel(0);
        Ok(ReadModels {
            pool,
            location,
            applied: Arc::new(applied),
            opener: crate::opener::Opener(None),
        })
    }

    /// Opens sealed personal fields with `opener` before applying events; without one
    /// they read as `[encrypted]`.
    pub fn with_opener(mut self, opener: Arc<dyn crate::EventOpener>) -> Self {
        self.opener = crate::opener::Opener(Some(opener));
        self
    }

    /// Returns the checkpoint of a ledger, or `None` if none of its events is applied.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn checkpoint(&self, ledger_id: Uuid) -> Result<Option<Checkpoint>, ProjectionError> {
        let mut conn = self.pool.acquire().await?;
        load_checkpoint(&mut conn, ledger_id).await
    }

    /// Applies events to every read model and advances the checkpoint, all in one
    /// transaction, and returns the new checkpoint.
    ///
    /// The events must continue the stored checkpoint exactly: the first has position
    /// checkpoint + 1 (or 0) and links to the checkpoint's hash (or the genesis value).
    /// Nothing of the batch is stored when any event fails.
    ///
    /// # Errors
    /// [`ProjectionError::Gap`], [`ProjectionError::BrokenLink`] or
    /// [`ProjectionError::WrongLedger`] when an event does not continue the chain;
    /// [`ProjectionError::Payload`] when a known event type does not decode;
    /// [`ProjectionError::Inconsistent`] when an event contradicts the models;
    /// [`ProjectionError::Database`] when the database fails.
    pub async fn apply_batch(
        &self,
        ledger_id: Uuid,
        events: &[SealedEvent],
    ) -> Result<Option<Checkpoint>, ProjectionError> {
        // Sealed fields are opened before the transaction, so no KMS call holds it open.
        let mut decoded = Vec::with_capacity(events.len());
        for event in events {
            decoded.push(apply::decode(ledger_id, event)?);
        }
        let mut opened = Vec::with_capacity(events.len());
        for (event, raw) in events.iter().zip(&decoded) {
            let plain = match raw {
                Some(raw) => Some(
                    self.opener
                        .open(ledger_id, event, raw.clone())
                        .await
                        .map_err(|reason| ProjectionError::Opening {
                            ledger_id,
                            position: event.position,
                            reason,
                        })?,
                ),
                None => None,
            };
            opened.push(plain);
        }

        let mut tx = self.pool.begin().await?;
        let mut tip = load_checkpoint(&mut tx, ledger_id).await?;
        for ((event, raw), plain) in events.iter().zip(decoded).zip(opened) {
            check_continuity(ledger_id, tip.as_ref(), event)?;
            apply::apply_event(&mut tx, ledger_id, event, raw, plain).await?;
            tip = Some(Checkpoint {
                ledger_id,
                position: event.position,
                head_hash: event.hash,
            });
        }
        if let Some(tip) = &tip {
            save_checkpoint(&mut tx, tip).await?;
        }
        tx.commit().await?;
        let erasure = (events.iter()).any(|event| event.event_type == SubjectErased::EVENT_TYPE);
        if erasure {
            self.forget_old_pages().await;
        }

        self.applied
            .send_modify(|generation| *generation = generation.wrapping_add(1));
        Ok(tip)
    }

    /// After an erasure, moves the write-ahead log of an SQLite file into the database and
    /// empties it. The log's pages from before the change contained the erased fields,
    /// which `secure_delete` has already cleared in the file itself. A busy
    /// reader can leave part of the log in place; the log is then emptied at a later
    /// checkpoint, and a warning is logged.
    async fn forget_old_pages(&self) {
        if !matches!(self.location, Location::File(_)) {
            return;
        }
        let result: Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&self.pool)
                .await;
        match result {
            Ok((0, _, _)) => {}
            Ok((_, log, done)) => tracing::warn!(
                log_pages = log,
                checkpointed = done,
                "after an erasure the read models' write-ahead log could not be emptied \
                 while readers held it; it is emptied at a later checkpoint"
            ),
            Err(error) => tracing::warn!(%error, "read-model checkpoint after an erasure failed"),
        }
    }

    /// Waits until the ledger's read models reach `min_position` or `timeout` passes, and
    /// returns whether the position was reached.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] if the checkpoint cannot be read.
    pub async fn wait_for_position(
        &self,
        ledger_id: Uuid,
        min_position: u64,
        timeout: Duration,
    ) -> Result<bool, ProjectionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut applied = self.applied.subscribe();
        loop {
            // Subscribing before the read means a commit after it wakes the loop.
            applied.mark_unchanged();
            let reached = self.checkpoint(ledger_id).await?;
            if reached.is_some_and(|c| c.position >= min_position) {
                return Ok(true);
            }
            let next_check = deadline.min(tokio::time::Instant::now() + WAIT_POLL_INTERVAL);
            if tokio::time::timeout_at(next_check, applied.changed())
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return Ok(false);
            }
        }
    }

    /// Returns every row of every table, sorted by primary key.
    ///
    /// Meant for tests and rebuild checks: it reads whole tables into memory.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] if a table cannot be read.
    pub async fn dump(&self) -> Result<Dump, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let mut dump = Dump::new();
        for (table, order) in schema::TABLES {
            let sql = format!("SELECT * FROM {table} ORDER BY {order}");
            let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
            let rows = rows
                .iter()
                .map(row_to_json)
                .collect::<Result<Vec<_>, _>>()?;
            dump.insert((*table).to_owned(), rows);
        }
        Ok(dump)
    }
}

async fn create_schema(pool: &AnyPool) -> Result<(), sqlx::Error> {
    sqlx::query(schema::VERSION_TABLE).execute(pool).await?;
    let stored: Option<i64> =
        sqlx::query_scalar("SELECT version FROM read_model_schema WHERE id = 1")
            .fetch_optional(pool)
            .await?;
    if stored != Some(schema::SCHEMA_VERSION) {
        // Tables of another version are dropped, and the runner projects the ledger again
        // from position 0, because the checkpoints go with them.
        if stored.is_some() || has_checkpoints_table(pool).await? {
            tracing::warn!(
                ?stored,
                current = schema::SCHEMA_VERSION,
                "read-model schema changed; rebuilding every read model from the ledger"
            );
        }
        for (table, _) in schema::TABLES {
            sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute(pool)
                .await?;
        }
    }
    for statement in schema::CREATE {
        sqlx::query(statement).execute(pool).await?;
    }
    sqlx::query(
        "INSERT INTO read_model_schema (id, version) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET version = $1",
    )
    .bind(schema::SCHEMA_VERSION)
    .execute(pool)
    .await?;
    Ok(())
}

/// Returns whether the database has a `checkpoints` table, that is, read models written
/// before the schema version was recorded.
async fn has_checkpoints_table(pool: &AnyPool) -> Result<bool, sqlx::Error> {
    // Selecting from a missing table fails on both engines; any other failure repeats on
    // the next statement and is reported there.
    Ok(sqlx::query("SELECT 1 FROM checkpoints LIMIT 1")
        .fetch_optional(pool)
        .await
        .is_ok())
}

fn check_continuity(
    ledger_id: Uuid,
    tip: Option<&Checkpoint>,
    event: &SealedEvent,
) -> Result<(), ProjectionError> {
    if event.ledger_id != ledger_id {
        return Err(ProjectionError::WrongLedger {
            ledger_id,
            position: event.position,
            found: event.ledger_id,
        });
    }
    let (expected, expected_prev) = match tip {
        None => (0, GENESIS_PREV_HASH),
        Some(tip) => (tip.position.saturating_add(1), tip.head_hash),
    };
    if event.position != expected {
        return Err(ProjectionError::Gap {
            ledger_id,
            expected,
            found: event.position,
        });
    }
    if event.prev_hash != expected_prev {
        return Err(ProjectionError::BrokenLink {
            ledger_id,
            position: event.position,
            expected: hex::encode(expected_prev),
            found: hex::encode(event.prev_hash),
        });
    }
    Ok(())
}

pub(crate) async fn load_checkpoint(
    conn: &mut AnyConnection,
    ledger_id: Uuid,
) -> Result<Option<Checkpoint>, ProjectionError> {
    let row = sqlx::query("SELECT position, head_hash FROM checkpoints WHERE ledger_id = $1")
        .bind(ledger_id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let position = get_u64(&row, "checkpoints", "position")?;
    let hash_hex: String = row.try_get("head_hash")?;
    let corrupt = |reason: String| ProjectionError::CorruptRow {
        table: "checkpoints",
        reason,
    };
    let bytes = hex::decode(&hash_hex).map_err(|e| corrupt(format!("head_hash: {e}")))?;
    let head_hash = <[u8; HASH_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| corrupt(format!("head_hash has {} bytes", bytes.len())))?;
    Ok(Some(Checkpoint {
        ledger_id,
        position,
        head_hash,
    }))
}

async fn save_checkpoint(
    conn: &mut AnyConnection,
    checkpoint: &Checkpoint,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO checkpoints (ledger_id, position, head_hash) VALUES ($1, $2, $3)
         ON CONFLICT (ledger_id) DO UPDATE SET position = $2, head_hash = $3",
    )
    .bind(checkpoint.ledger_id.to_string())
    .bind(to_db("position", checkpoint.position)?)
    .bind(hex::encode(checkpoint.head_hash))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Parses a database URL for the `Any` driver, installing the drivers on first use.
fn any_options(url: &str) -> Result<AnyConnectOptions, ProjectionError> {
    sqlx::any::install_default_drivers();
    let options = url.parse::<AnyConnectOptions>()?;
    Ok(options.disable_statement_logging())
}

fn row_to_json(
    row: &AnyRow,
) -> Result<serde_json::Map<String, serde_json::Value>, ProjectionError> {
    let mut object = serde_json::Map::new();
    for column in row.columns() {
        let index = column.ordinal();
        let raw = row.try_get_raw(index)?;
        let value = if raw.is_null() {
            serde_json::Value::Null
        } else if raw.type_info().kind().is_integer() {
            serde_json::Value::from(row.try_get::<i64, _>(index)?)
        } else {
            serde_json::Value::from(row.try_get::<String, _>(index)?)
        };
        object.insert(column.name().to_owned(), value);
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_database_gets_its_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let models = ReadModels::open(dir.path().join("read.sqlite"))
            .await
            .unwrap();
        let mut connection = models.pool.acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *connection)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *connection)
            .await
            .unwrap();
        assert_eq!(timeout, 5_000);
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *connection)
            .await
            .unwrap();
        assert_eq!(synchronous, 1, "NORMAL is 1");
    }
}
