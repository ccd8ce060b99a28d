//! The SQLite backend, Folio's embedded default.
//!
//! File layout: a data directory (by default `./folio-data/`) contains `events.sqlite`, this
//! backend's database, with its `-wal` and `-shm` files while open. Projections can keep their
//! own database file beside it, so a rebuild never touches the events.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a commit is on disk when
//! [`Backend::commit`] returns. Triggers reject every `UPDATE` and `DELETE` on `events` and
//! `idempotency_keys`; only the `ledgers` row with the head moves.
//!
//! Writes go through a pool of one connection, so commits of different ledgers queue in the
//! process instead of contending for SQLite's write lock. Reads use a separate pool.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use domain::events::{EventPayload, LedgerCreated};
use domain::record::{SealedEvent, HASH_LEN};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::{
    BackendError, ChainHead, CommitBatch, IdempotencyClaim, IdempotencyRecord, LedgerInfo,
    SignedHead,
};

/// Default file name of the event database inside the data directory.
pub const EVENTS_FILE: &str = "events.sqlite";

/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Number of read connections.
const READ_CONNECTIONS: u32 = 4;

/// Rows per multi-row `INSERT` into `events`: 9 bound values each, well under SQLite's
/// limit of 32,766 variables per statement.
const EVENT_ROWS_PER_INSERT: usize = 64;

/// Rows per multi-row `INSERT` into `idempotency_keys` (8 values each).
const KEY_ROWS_PER_INSERT: usize = 64;

/// Values per batched lookup query, far below SQLite's limit of 32,766 bound variables.
const LOOKUPS_PER_QUERY: usize = 256;

/// Schema, created on open. Ids are 16-byte blobs; positions and versions are stored as
/// INTEGER (i64), so the store refuses to go past `i64::MAX`.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS ledgers (
    ledger_id     BLOB PRIMARY KEY NOT NULL,
    tenant        TEXT NOT NULL,
    head_position INTEGER NOT NULL,
    head_hash     BLOB NOT NULL,
    signed_head   BLOB NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS events (
    ledger_id      BLOB NOT NULL REFERENCES ledgers (ledger_id),
    position       INTEGER NOT NULL,
    stream_id      TEXT NOT NULL,
    stream_version INTEGER NOT NULL,
    event_id       BLOB NOT NULL,
    event_type     TEXT NOT NULL,
    recorded_at    INTEGER NOT NULL,
    record         BLOB NOT NULL,
    hash           BLOB NOT NULL,
    PRIMARY KEY (ledger_id, position),
    UNIQUE (ledger_id, stream_id, stream_version),
    UNIQUE (event_id)
) STRICT;

CREATE TABLE IF NOT EXISTS idempotency_keys (
    ledger_id       BLOB NOT NULL REFERENCES ledgers (ledger_id),
    key             TEXT NOT NULL,
    request_hash    BLOB NOT NULL,
    request         BLOB NOT NULL,
    response_status INTEGER NOT NULL,
    response_body   BLOB NOT NULL,
    first_position  INTEGER NOT NULL,
    last_position   INTEGER NOT NULL,
    PRIMARY KEY (ledger_id, key)
) STRICT;

CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: update rejected'); END;

CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: delete rejected'); END;

CREATE TRIGGER IF NOT EXISTS idempotency_keys_no_update BEFORE UPDATE ON idempotency_keys
BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only: update rejected'); END;

CREATE TRIGGER IF NOT EXISTS idempotency_keys_no_delete BEFORE DELETE ON idempotency_keys
BEGIN SELECT RAISE(ABORT, 'idempotency keys are append-only: delete rejected'); END;
"#;

/// Columns that [`decode_event`] reads.
const EVENT_COLUMNS: &str =
    "position, stream_id, stream_version, event_id, event_type, recorded_at, hash, record";

/// A [`Backend`](crate::Backend) on one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    writer: Option<SqlitePool>,
    reader: SqlitePool,
}

/// Connect options with Folio's settings for a database file.
///
/// Projections can use these for their own file, with the same durability settings.
pub fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
}

impl SqliteBackend {
    /// Opens or creates the database at `path` and creates the schema if missing.
    ///
    /// # Errors
    /// A database error if the file cannot be opened or the schema cannot be created.
    pub async fn open(path: &Path) -> Result<Self, BackendError> {
        let options = connect_options(path).create_if_missing(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::raw_sql(SCHEMA).execute(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options)
            .await?;
        Ok(SqliteBackend {
            writer: Some(writer),
            reader,
        })
    }

    /// Opens an existing database for reading only, as `folio verify` needs. Commits fail with
    /// [`BackendError::Unavailable`].
    ///
    /// # Errors
    /// A database error if the file does not exist or cannot be opened.
    pub async fn open_read_only(path: &Path) -> Result<Self, BackendError> {
        let options = connect_options(path).read_only(true);
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options)
            .await?;
        Ok(SqliteBackend {
            writer: None,
            reader,
        })
    }

    /// Opens the event database in a data directory, creating the directory if needed.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] if the directory cannot be created, or a database error.
    pub async fn open_dir(data_dir: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            BackendError::Unavailable(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        Self::open(&data_dir.join(EVENTS_FILE)).await
    }

    /// Returns the read pool, for ad-hoc queries on the event database.
    pub fn pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// Closes both pools, waiting for their connections to finish.
    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.reader.close().await;
    }
}

/// Converts a position or version to SQLite's i64.
fn to_i64(value: u64) -> i64 {
    // Positions and versions grow by one per event, so 2^63 is out of reach in practice. A
    // wrapped value would corrupt the order, so stop instead.
    i64::try_from(value).expect("position or version fits in i64")
}

fn to_u64(ledger_id: Uuid, position: u64, value: i64, column: &str) -> Result<u64, BackendError> {
    u64::try_from(value).map_err(|_| BackendError::Corrupt {
        ledger_id,
        position,
        reason: format!("negative {column} {value}"),
    })
}

fn to_hash(ledger_id: Uuid, position: u64, bytes: &[u8]) -> Result<[u8; HASH_LEN], BackendError> {
    bytes.try_into().map_err(|_| BackendError::Corrupt {
        ledger_id,
        position,
        reason: format!("hash column has {} bytes", bytes.len()),
    })
}

/// Decodes an event row and checks that the index columns match the sealed record.
fn decode_event(ledger_id: Uuid, row: &SqliteRow) -> Result<SealedEvent, BackendError> {
    let position = to_u64(ledger_id, 0, row.try_get("position")?, "position")?;
    let corrupt = |reason: String| BackendError::Corrupt {
        ledger_id,
        position,
        reason,
    };
    let record: &[u8] = row.try_get("record")?;
    let event = SealedEvent::from_bytes(record).map_err(|e| corrupt(e.to_string()))?;

    let stream_id: &str = row.try_get("stream_id")?;
    let version = to_u64(
        ledger_id,
        position,
        row.try_get("stream_version")?,
        "stream_version",
    )?;
    let event_id: &[u8] = row.try_get("event_id")?;
    let event_type: &str = row.try_get("event_type")?;
    let recorded_at: i64 = row.try_get("recorded_at")?;
    let hash = to_hash(ledger_id, position, row.try_get("hash")?)?;
    let mismatch = [
        (event.ledger_id != ledger_id, "ledger_id"),
        (event.position != position, "position"),
        (event.stream_id != stream_id, "stream_id"),
        (event.stream_version != version, "stream_version"),
        (event.event_id.as_bytes() != event_id, "event_id"),
        (event.event_type != event_type, "event_type"),
        (event.recorded_at_micros != recorded_at, "recorded_at"),
        (event.hash != hash, "hash"),
    ];
    if let Some((_, column)) = mismatch.iter().find(|(differs, _)| *differs) {
        return Err(corrupt(format!(
            "column {column} does not match the sealed record"
        )));
    }
    Ok(event)
}

fn decode_idempotency(ledger_id: Uuid, row: &SqliteRow) -> Result<IdempotencyRecord, BackendError> {
    let first = to_u64(
        ledger_id,
        0,
        row.try_get("first_position")?,
        "first_position",
    )?;
    let last = to_u64(
        ledger_id,
        first,
        row.try_get("last_position")?,
        "last_position",
    )?;
    let status: i64 = row.try_get("response_status")?;
    let response_status = u16::try_from(status).map_err(|_| BackendError::Corrupt {
        ledger_id,
        position: first,
        reason: format!("response status {status} out of range"),
    })?;
    let claim = IdempotencyClaim {
        key: row.try_get("key")?,
        request_hash: to_hash(ledger_id, first, row.try_get("request_hash")?)?,
        request: row.try_get("request")?,
        response_status,
        response_body: row.try_get("response_body")?,
    };
    Ok(IdempotencyRecord {
        claim,
        first_position: first,
        last_position: last,
    })
}

/// Maps a uniqueness failure to [`BackendError::ConstraintViolation`].
fn classify(ledger_id: Uuid, error: sqlx::Error) -> BackendError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            BackendError::ConstraintViolation {
                ledger_id,
                reason: db.message().to_owned(),
            }
        }
        _ => BackendError::Database(error),
    }
}

/// Moves the head row from `batch.expected_head`, or creates it for a new ledger.
async fn move_head(
    tx: &mut Transaction<'_, Sqlite>,
    batch: &CommitBatch,
) -> Result<(), BackendError> {
    let id = batch.ledger_id;
    let new_head = &batch.signed_head.head;
    let moved = match batch.expected_head {
        None => {
            let tenant = genesis_tenant(batch)?;
            sqlx::query(
                "INSERT INTO ledgers (ledger_id, tenant, head_position, head_hash, signed_head) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (ledger_id) DO NOTHING",
            )
            .bind(id.as_bytes().as_slice())
            .bind(tenant)
            .bind(to_i64(new_head.position))
            .bind(new_head.hash.as_slice())
            .bind(batch.signed_head.record.as_slice())
            .execute(&mut **tx)
            .await?
        }
        Some(expected) => {
            sqlx::query(
                "UPDATE ledgers SET head_position = ?, head_hash = ?, signed_head = ? \
             WHERE ledger_id = ? AND head_position = ? AND head_hash = ?",
            )
            .bind(to_i64(new_head.position))
            .bind(new_head.hash.as_slice())
            .bind(batch.signed_head.record.as_slice())
            .bind(id.as_bytes().as_slice())
            .bind(to_i64(expected.position))
            .bind(expected.hash.as_slice())
            .execute(&mut **tx)
            .await?
        }
    };
    if moved.rows_affected() != 1 {
        let expected = batch.expected_head.map(|h| h.position);
        return Err(BackendError::HeadMoved {
            ledger_id: id,
            expected,
        });
    }
    Ok(())
}

/// Reads the tenant from the genesis event that starts a new ledger.
fn genesis_tenant(batch: &CommitBatch) -> Result<String, BackendError> {
    let corrupt = |reason: String| BackendError::Corrupt {
        ledger_id: batch.ledger_id,
        position: 0,
        reason,
    };
    let genesis = batch
        .events
        .first()
        .ok_or_else(|| corrupt("new ledger without events".into()))?;
    if genesis.event_type != LedgerCreated::EVENT_TYPE || genesis.position != 0 {
        return Err(corrupt(format!(
            "first event has type {}",
            genesis.event_type
        )));
    }
    let created = LedgerCreated::decode(&genesis.payload).map_err(|e| corrupt(e.to_string()))?;
    Ok(created.tenant)
}

async fn insert_events(
    tx: &mut Transaction<'_, Sqlite>,
    events: &[SealedEvent],
) -> Result<(), BackendError> {
    for chunk in events.chunks(EVENT_ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (ledger_id, position, stream_id, stream_version, event_id, \
             event_type, recorded_at, record, hash) ",
        );
        insert.push_values(chunk, |mut row, event| {
            row.push_bind(event.ledger_id.as_bytes().to_vec())
                .push_bind(to_i64(event.position))
                .push_bind(event.stream_id.clone())
                .push_bind(to_i64(event.stream_version))
                .push_bind(event.event_id.as_bytes().to_vec())
                .push_bind(event.event_type.clone())
                .push_bind(event.recorded_at_micros)
                .push_bind(event.to_bytes())
                .push_bind(event.hash.to_vec());
        });
        let ledger_id = chunk[0].ledger_id;
        insert
            .build()
            .execute(&mut **tx)
            .await
            .map_err(|e| classify(ledger_id, e))?;
    }
    Ok(())
}

async fn insert_keys(
    tx: &mut Transaction<'_, Sqlite>,
    ledger_id: Uuid,
    records: &[IdempotencyRecord],
) -> Result<(), BackendError> {
    for chunk in records.chunks(KEY_ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO idempotency_keys (ledger_id, key, request_hash, request, \
             response_status, response_body, first_position, last_position) ",
        );
        insert.push_values(chunk, |mut row, record| {
            row.push_bind(ledger_id.as_bytes().to_vec())
                .push_bind(record.claim.key.clone())
                .push_bind(record.claim.request_hash.to_vec())
                .push_bind(record.claim.request.clone())
                .push_bind(i64::from(record.claim.response_status))
                .push_bind(record.claim.response_body.clone())
                .push_bind(to_i64(record.first_position))
                .push_bind(to_i64(record.last_position));
        });
        insert
            .build()
            .execute(&mut **tx)
            .await
            .map_err(|e| classify(ledger_id, e))?;
    }
    Ok(())
}

/// Asserts that the batch's events follow the expected head and end at the signed head.
fn assert_batch_shape(batch: &CommitBatch) {
    let first = batch.expected_head.map_or(0, |h| h.position + 1);
    for (position, event) in (first..).zip(&batch.events) {
        assert_eq!(event.ledger_id, batch.ledger_id, "batch holds one ledger");
        assert_eq!(event.position, position, "batch positions are gapless");
    }
    let last = batch.events.last().expect("a commit batch has events");
    assert_eq!(
        batch.signed_head.head.position, last.position,
        "signed head is the last event"
    );
    assert_eq!(
        batch.signed_head.head.hash, last.hash,
        "signed head is the last event"
    );
}

#[async_trait]
impl crate::Backend for SqliteBackend {
    async fn commit(&self, batch: CommitBatch) -> Result<(), BackendError> {
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| BackendError::Unavailable("database opened read-only".into()))?;
        assert_batch_shape(&batch);

        // The head row moves first because that one statement checks the expected head, and
        // `BEGIN IMMEDIATE` already holds the write lock, so nothing can move it before commit.
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        move_head(&mut tx, &batch).await?;
        insert_events(&mut tx, &batch.events).await?;
        insert_keys(&mut tx, batch.ledger_id, &batch.idempotency).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn head(&self, ledger_id: Uuid) -> Result<Option<ChainHead>, BackendError> {
        let row = sqlx::query("SELECT head_position, head_hash FROM ledgers WHERE ledger_id = ?")
            .bind(ledger_id.as_bytes().as_slice())
            .fetch_optional(&self.reader)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let position = to_u64(ledger_id, 0, row.try_get("head_position")?, "head_position")?;
        let hash = to_hash(ledger_id, position, row.try_get("head_hash")?)?;
        Ok(Some(ChainHead {
            ledger_id,
            position,
            hash,
        }))
    }

    async fn signed_head(&self, ledger_id: Uuid) -> Result<Option<SignedHead>, BackendError> {
        let row = sqlx::query(
            "SELECT head_position, head_hash, signed_head FROM ledgers WHERE ledger_id = ?",
        )
        .bind(ledger_id.as_bytes().as_slice())
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let position = to_u64(ledger_id, 0, row.try_get("head_position")?, "head_position")?;
        let hash = to_hash(ledger_id, position, row.try_get("head_hash")?)?;
        let head = ChainHead {
            ledger_id,
            position,
            hash,
        };
        Ok(Some(SignedHead {
            head,
            record: row.try_get("signed_head")?,
        }))
    }

    async fn stream_version(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
    ) -> Result<Option<u64>, BackendError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(stream_version) FROM events WHERE ledger_id = ? AND stream_id = ?",
        )
        .bind(ledger_id.as_bytes().as_slice())
        .bind(stream_id)
        .fetch_one(&self.reader)
        .await?;
        version
            .map(|v| to_u64(ledger_id, 0, v, "stream_version"))
            .transpose()
    }

    async fn idempotency(
        &self,
        ledger_id: Uuid,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, BackendError> {
        let row = sqlx::query(
            "SELECT key, request_hash, request, response_status, response_body, first_position, \
             last_position FROM idempotency_keys WHERE ledger_id = ? AND key = ?",
        )
        .bind(ledger_id.as_bytes().as_slice())
        .bind(key)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| decode_idempotency(ledger_id, &row))
            .transpose()
    }

    async fn stream_versions(
        &self,
        ledger_id: Uuid,
        stream_ids: &[&str],
    ) -> Result<HashMap<String, u64>, BackendError> {
        let mut versions = HashMap::with_capacity(stream_ids.len());
        for chunk in stream_ids.chunks(LOOKUPS_PER_QUERY) {
            // A correlated subquery per stream reads the last entry of the unique
            // (ledger_id, stream_id, stream_version) index, so a long stream costs one seek
            // where `MAX ... GROUP BY` would scan all its versions.
            let mut query = QueryBuilder::<Sqlite>::new("WITH wanted (stream_id) AS (");
            query.push_values(chunk, |mut row, stream_id| {
                row.push_bind(*stream_id);
            });
            query.push(
                ") SELECT wanted.stream_id, (SELECT stream_version FROM events \
                 WHERE ledger_id = ",
            );
            query.push_bind(ledger_id.as_bytes().as_slice());
            query.push(
                " AND events.stream_id = wanted.stream_id \
                 ORDER BY stream_version DESC LIMIT 1) FROM wanted",
            );
            let rows = query.build().fetch_all(&self.reader).await?;
            for row in rows {
                let version: Option<i64> = row.try_get(1)?;
                if let Some(version) = version {
                    let version = to_u64(ledger_id, 0, version, "stream_version")?;
                    versions.insert(row.try_get(0)?, version);
                }
            }
        }
        Ok(versions)
    }

    async fn idempotency_records(
        &self,
        ledger_id: Uuid,
        keys: &[&str],
    ) -> Result<HashMap<String, IdempotencyRecord>, BackendError> {
        let mut records = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(LOOKUPS_PER_QUERY) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT key, request_hash, request, response_status, response_body, \
                 first_position, last_position FROM idempotency_keys WHERE ledger_id = ",
            );
            query.push_bind(ledger_id.as_bytes().as_slice());
            query.push(" AND key IN (");
            let mut list = query.separated(", ");
            for key in chunk {
                list.push_bind(*key);
            }
            query.push(")");
            let rows = query.build().fetch_all(&self.reader).await?;
            for row in rows {
                let record = decode_idempotency(ledger_id, &row)?;
                records.insert(record.claim.key.clone(), record);
            }
        }
        Ok(records)
    }

    async fn read_ledger(
        &self,
        ledger_id: Uuid,
        from_position: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, BackendError> {
        let Ok(from) = i64::try_from(from_position) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE ledger_id = ? AND position >= ? \
             ORDER BY position LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(ledger_id.as_bytes().as_slice())
            .bind(from)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| decode_event(ledger_id, row))
            .collect()
    }

    async fn read_stream(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, BackendError> {
        let Ok(from) = i64::try_from(from_version) else {
            return Ok(Vec::new());
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE ledger_id = ? AND stream_id = ? \
             AND stream_version >= ? ORDER BY stream_version LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(ledger_id.as_bytes().as_slice())
            .bind(stream_id)
            .bind(from)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| decode_event(ledger_id, row))
            .collect()
    }

    async fn idempotency_range(
        &self,
        ledger_id: Uuid,
        from_position: u64,
        to_position: u64,
    ) -> Result<Vec<IdempotencyRecord>, BackendError> {
        let (Ok(from), Ok(to)) = (i64::try_from(from_position), i64::try_from(to_position)) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT key, request_hash, request, response_status, response_body, first_position, \
             last_position FROM idempotency_keys WHERE ledger_id = ? \
             AND last_position BETWEEN ? AND ? ORDER BY last_position",
        )
        .bind(ledger_id.as_bytes().as_slice())
        .bind(from)
        .bind(to)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| decode_idempotency(ledger_id, row))
            .collect()
    }

    async fn ledgers(&self) -> Result<Vec<LedgerInfo>, BackendError> {
        let rows = sqlx::query(
            "SELECT ledger_id, tenant, head_position, head_hash FROM ledgers ORDER BY ledger_id",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(decode_ledger).collect()
    }
}

fn decode_ledger(row: &SqliteRow) -> Result<LedgerInfo, BackendError> {
    let id_bytes: &[u8] = row.try_get("ledger_id")?;
    let ledger_id = Uuid::from_slice(id_bytes).map_err(|e| BackendError::Corrupt {
        ledger_id: Uuid::nil(),
        position: 0,
        reason: format!("invalid ledger id: {e}"),
    })?;
    let position = to_u64(ledger_id, 0, row.try_get("head_position")?, "head_position")?;
    let hash = to_hash(ledger_id, position, row.try_get("head_hash")?)?;
    let head = ChainHead {
        ledger_id,
        position,
        hash,
    };
    Ok(LedgerInfo {
        ledger_id,
        tenant: row.try_get("tenant")?,
        head,
    })
}
