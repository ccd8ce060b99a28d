//! The PostgreSQL backend, for several Folio nodes on one database.
//!
//! Tables: `ledger_heads` (one row per ledger with its head and signed head), `events` and
//! `idempotency_keys`, created on open in one transaction and recorded in
//! `folio_store_schema`. `docs/operations/postgres.md` describes the schema, the roles and the
//! settings.
//!
//! A commit locks its ledger's head row with `SELECT ... FOR UPDATE`, compares it with the
//! batch's expected head and only then inserts the events and moves the head. Positions are
//! assigned by the sequencer that sealed the batch, never by a database sequence. Sequence
//! values are handed out before commit and become visible out of order, so a reader that
//! follows them can skip an event whose transaction commits late. Under the row lock, the
//! commits of one ledger are serialised, and a reader sees the events of a ledger appear in
//! position order.
//!
//! Triggers reject every `UPDATE`, `DELETE` and `TRUNCATE` on `events` and `idempotency_keys`,
//! and every `DELETE` and `TRUNCATE` on `ledger_heads`. A head row may only move forward, to
//! an event that is stored.

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use domain::events::{EventPayload, LedgerCreated};
use domain::record::{SealedEvent, HASH_LEN};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use crate::{
    BackendError, ChainHead, CommitBatch, IdempotencyClaim, IdempotencyRecord, LedgerInfo,
    SignedHead,
};

/// Version of the schema this code creates and expects.
pub const SCHEMA_VERSION: i32 = 1;

/// Default number of pooled connections.
const DEFAULT_CONNECTIONS: u32 = 8;

/// Rows per `INSERT ... SELECT FROM UNNEST(...)` statement. A group of 1024 events is one
/// statement, and the largest append (10,000 events) is three.
const ROWS_PER_INSERT: usize = 4096;

/// Key of the transaction-level advisory lock that serialises schema creation, so two nodes
/// opening an empty database at once do not race on `CREATE TABLE`.
const SCHEMA_LOCK_KEY: i64 = 0x666f_6c69_6f5f_7631;

/// Schema version 1. Ids are `uuid`, and positions and versions are `bigint`, so the store
/// stops before `i64::MAX`.
const SCHEMA_V1: &str = r#"
CREATE TABLE ledger_heads (
    ledger_id     uuid PRIMARY KEY,
    tenant        text NOT NULL UNIQUE,
    head_position bigint NOT NULL CHECK (head_position >= 0),
    head_hash     bytea NOT NULL,
    signed_head   bytea NOT NULL
);

CREATE TABLE events (
    ledger_id      uuid NOT NULL REFERENCES ledger_heads (ledger_id),
    position       bigint NOT NULL CHECK (position >= 0),
    stream_id      text NOT NULL,
    stream_version bigint NOT NULL CHECK (stream_version >= 0),
    event_id       uuid NOT NULL,
    event_type     text NOT NULL,
    recorded_at    bigint NOT NULL,
    record         bytea NOT NULL,
    hash           bytea NOT NULL,
    PRIMARY KEY (ledger_id, position),
    UNIQUE (ledger_id, stream_id, stream_version),
    UNIQUE (event_id)
);

CREATE TABLE idempotency_keys (
    ledger_id       uuid NOT NULL REFERENCES ledger_heads (ledger_id),
    key             text NOT NULL,
    request_hash    bytea NOT NULL,
    request         bytea NOT NULL,
    response_status integer NOT NULL,
    response_body   bytea NOT NULL,
    first_position  bigint NOT NULL,
    last_position   bigint NOT NULL,
    PRIMARY KEY (ledger_id, key)
);

CREATE FUNCTION folio_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % rejected', TG_TABLE_NAME, TG_OP;
END;
$$;

CREATE FUNCTION folio_check_head_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.ledger_id <> OLD.ledger_id OR NEW.tenant <> OLD.tenant THEN
        RAISE EXCEPTION 'ledger_heads: the ledger id and tenant never change';
    END IF;
    IF NEW.head_position <= OLD.head_position THEN
        RAISE EXCEPTION 'ledger_heads: head of % may only move forward (% to %)',
            OLD.ledger_id, OLD.head_position, NEW.head_position;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM events WHERE ledger_id = NEW.ledger_id
                   AND position = NEW.head_position AND hash = NEW.head_hash) THEN
        RAISE EXCEPTION 'ledger_heads: head of % names no stored event', NEW.ledger_id;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION folio_reject_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION folio_reject_change();
CREATE TRIGGER idempotency_keys_append_only BEFORE UPDATE OR DELETE ON idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION folio_reject_change();
CREATE TRIGGER idempotency_keys_no_truncate BEFORE TRUNCATE ON idempotency_keys
    FOR EACH STATEMENT EXECUTE FUNCTION folio_reject_change();
CREATE TRIGGER ledger_heads_no_delete BEFORE DELETE ON ledger_heads
    FOR EACH ROW EXECUTE FUNCTION folio_reject_change();
CREATE TRIGGER ledger_heads_no_truncate BEFORE TRUNCATE ON ledger_heads
    FOR EACH STATEMENT EXECUTE FUNCTION folio_reject_change();
CREATE TRIGGER ledger_heads_forward_only BEFORE UPDATE ON ledger_heads
    FOR EACH ROW EXECUTE FUNCTION folio_check_head_move();
"#;

/// Columns that [`decode_event`] reads.
const EVENT_COLUMNS: &str = "position, stream_id, stream_version, event_id::text AS event_id, \
     event_type, recorded_at, hash, record";

/// Columns that [`decode_idempotency`] reads.
const KEY_COLUMNS: &str =
    "key, request_hash, request, response_status, response_body, first_position, last_position";

/// A [`Backend`](crate::Backend) on a PostgreSQL database, shared by every node of a cluster.
#[derive(Debug, Clone)]
pub struct PostgresBackend {
    pool: PgPool,
}

impl PostgresBackend {
    /// Connects to `url` (`postgres://user@host:port/database`, with `sslmode=require` or
    /// `verify-full` for TLS through rustls) and creates the schema if the database has none.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] for a malformed URL or a schema newer than this code, or a
    /// database error if the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        Self::connect_with(url, DEFAULT_CONNECTIONS).await
    }

    /// Connects as [`PostgresBackend::connect`] does, with at most `connections` pooled
    /// connections.
    ///
    /// # Errors
    /// As [`PostgresBackend::connect`].
    pub async fn connect_with(url: &str, connections: u32) -> Result<Self, BackendError> {
        Self::open(url, connections, true).await
    }

    /// Connects to a database that already has the Folio schema, as readers such as
    /// `folio verify` need, without creating anything.
    ///
    /// # Errors
    /// As [`PostgresBackend::connect`], and [`BackendError::Unavailable`] when the database has
    /// no Folio schema.
    pub async fn connect_existing(url: &str, connections: u32) -> Result<Self, BackendError> {
        Self::open(url, connections, false).await
    }

    async fn open(url: &str, connections: u32, create: bool) -> Result<Self, BackendError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            BackendError::Unavailable(format!(
                "invalid PostgreSQL URL (expected postgres://user@host:port/database): {e}"
            ))
        })?;
        // Every acknowledged event must survive a server crash, whatever the server's default.
        let options = options.options([("synchronous_commit", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .connect_with(options)
            .await?;
        create_schema(&pool, create).await?;
        Ok(PostgresBackend { pool })
    }

    /// Returns the connection pool, for ad-hoc queries on the event tables.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for its connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates schema version 1 if the database has no Folio schema and `create` is set, under an
/// advisory lock.
///
/// An existing schema is only read, so a role without `CREATE` rights (see the operations
/// guide) can open a database that the owner set up.
async fn create_schema(pool: &PgPool, create: bool) -> Result<(), BackendError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let table: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('folio_store_schema')::text")
            .fetch_one(&mut *tx)
            .await?;
    let version: Option<i32> = match table {
        None => None,
        Some(_) => {
            sqlx::query_scalar("SELECT max(version) FROM folio_store_schema")
                .fetch_one(&mut *tx)
                .await?
        }
    };
    match version {
        None if !create => {
            return Err(BackendError::Unavailable(
                "the database has no Folio store schema; check that the URL names the \
                 database the nodes write to"
                    .into(),
            ))
        }
        None => {
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS folio_store_schema (version integer PRIMARY KEY)",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::raw_sql(SCHEMA_V1).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO folio_store_schema (version) VALUES ($1)")
                .bind(SCHEMA_VERSION)
                .execute(&mut *tx)
                .await?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(BackendError::Unavailable(format!(
                "the database has Folio store schema version {other}, but this build knows \
                 version {SCHEMA_VERSION}; upgrade folio on this node"
            )))
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Converts a position or version to PostgreSQL's bigint.
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

fn to_uuid(ledger_id: Uuid, position: u64, text: &str) -> Result<Uuid, BackendError> {
    Uuid::parse_str(text).map_err(|e| BackendError::Corrupt {
        ledger_id,
        position,
        reason: format!("invalid uuid {text:?}: {e}"),
    })
}

/// Decodes an event row and checks that the index columns match the sealed record.
fn decode_event(ledger_id: Uuid, row: &PgRow) -> Result<SealedEvent, BackendError> {
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
    let event_id = to_uuid(ledger_id, position, row.try_get("event_id")?)?;
    let event_type: &str = row.try_get("event_type")?;
    let recorded_at: i64 = row.try_get("recorded_at")?;
    let hash = to_hash(ledger_id, position, row.try_get("hash")?)?;
    let mismatch = [
        (event.ledger_id != ledger_id, "ledger_id"),
        (event.position != position, "position"),
        (event.stream_id != stream_id, "stream_id"),
        (event.stream_version != version, "stream_version"),
        (event.event_id != event_id, "event_id"),
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

fn decode_idempotency(ledger_id: Uuid, row: &PgRow) -> Result<IdempotencyRecord, BackendError> {
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
    let status: i32 = row.try_get("response_status")?;
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

fn decode_head(ledger_id: Uuid, row: &PgRow) -> Result<ChainHead, BackendError> {
    let position = to_u64(ledger_id, 0, row.try_get("head_position")?, "head_position")?;
    let hash = to_hash(ledger_id, position, row.try_get("head_hash")?)?;
    Ok(ChainHead {
        ledger_id,
        position,
        hash,
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

/// Locks the ledger's head row and checks it is the batch's expected head. For a new ledger,
/// inserts the head row instead; a concurrent creation of the same ledger waits on the primary
/// key and then finds the row taken.
async fn lock_head(
    tx: &mut Transaction<'_, Postgres>,
    batch: &CommitBatch,
) -> Result<(), BackendError> {
    let id = batch.ledger_id;
    let moved = || BackendError::HeadMoved {
        ledger_id: id,
        expected: batch.expected_head.map(|h| h.position),
    };
    let Some(expected) = batch.expected_head else {
        let head = &batch.signed_head.head;
        let inserted = sqlx::query(
            "INSERT INTO ledger_heads (ledger_id, tenant, head_position, head_hash, signed_head) \
             VALUES ($1::uuid, $2, $3, $4, $5) ON CONFLICT (ledger_id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(genesis_tenant(batch)?)
        .bind(to_i64(head.position))
        .bind(head.hash.as_slice())
        .bind(batch.signed_head.record.as_slice())
        .execute(&mut **tx)
        .await
        // One tenant has one ledger: a second node creating a ledger for the same tenant at
        // the same moment gets a constraint violation here.
        .map_err(|error| classify(id, error))?;
        return match inserted.rows_affected() {
            1 => Ok(()),
            _ => Err(moved()),
        };
    };
    let row = sqlx::query(
        "SELECT head_position, head_hash FROM ledger_heads WHERE ledger_id = $1::uuid FOR UPDATE",
    )
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Err(moved()) };
    if decode_head(id, &row)? != expected {
        return Err(moved());
    }
    Ok(())
}

/// Moves the locked head row to the batch's signed head.
async fn move_head(
    tx: &mut Transaction<'_, Postgres>,
    batch: &CommitBatch,
) -> Result<(), BackendError> {
    let head = &batch.signed_head.head;
    let updated = sqlx::query(
        "UPDATE ledger_heads SET head_position = $1, head_hash = $2, signed_head = $3 \
         WHERE ledger_id = $4::uuid",
    )
    .bind(to_i64(head.position))
    .bind(head.hash.as_slice())
    .bind(batch.signed_head.record.as_slice())
    .bind(batch.ledger_id.to_string())
    .execute(&mut **tx)
    .await?;
    // The row is locked by this transaction, so it is still there.
    assert_eq!(updated.rows_affected(), 1, "the locked head row is updated");
    Ok(())
}

/// Inserts events with one statement per [`ROWS_PER_INSERT`] rows, each column bound as an
/// array and expanded by `UNNEST`.
async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    ledger_id: Uuid,
    events: &[SealedEvent],
) -> Result<(), BackendError> {
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let positions: Vec<i64> = chunk.iter().map(|e| to_i64(e.position)).collect();
        let streams: Vec<&str> = chunk.iter().map(|e| e.stream_id.as_str()).collect();
        let versions: Vec<i64> = chunk.iter().map(|e| to_i64(e.stream_version)).collect();
        let ids: Vec<String> = chunk.iter().map(|e| e.event_id.to_string()).collect();
        let types: Vec<&str> = chunk.iter().map(|e| e.event_type.as_str()).collect();
        let recorded: Vec<i64> = chunk.iter().map(|e| e.recorded_at_micros).collect();
        let records: Vec<Vec<u8>> = chunk.iter().map(SealedEvent::to_bytes).collect();
        let hashes: Vec<&[u8]> = chunk.iter().map(|e| e.hash.as_slice()).collect();
        sqlx::query(
            "INSERT INTO events (ledger_id, position, stream_id, stream_version, event_id, \
             event_type, recorded_at, record, hash) \
             SELECT $1::uuid, p, s, v, i::uuid, t, r, b, h \
             FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], \
             $7::bigint[], $8::bytea[], $9::bytea[]) AS u (p, s, v, i, t, r, b, h)",
        )
        .bind(ledger_id.to_string())
        .bind(positions)
        .bind(streams)
        .bind(versions)
        .bind(ids)
        .bind(types)
        .bind(recorded)
        .bind(records)
        .bind(hashes)
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(ledger_id, e))?;
    }
    Ok(())
}

/// Inserts idempotency records with one `UNNEST` statement per [`ROWS_PER_INSERT`] rows.
async fn insert_keys(
    tx: &mut Transaction<'_, Postgres>,
    ledger_id: Uuid,
    records: &[IdempotencyRecord],
) -> Result<(), BackendError> {
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let keys: Vec<&str> = chunk.iter().map(|r| r.claim.key.as_str()).collect();
        let hashes: Vec<&[u8]> = chunk
            .iter()
            .map(|r| r.claim.request_hash.as_slice())
            .collect();
        let requests: Vec<&[u8]> = chunk.iter().map(|r| r.claim.request.as_slice()).collect();
        let statuses: Vec<i32> = chunk
            .iter()
            .map(|r| i32::from(r.claim.response_status))
            .collect();
        let bodies: Vec<&[u8]> = chunk
            .iter()
            .map(|r| r.claim.response_body.as_slice())
            .collect();
        let firsts: Vec<i64> = chunk.iter().map(|r| to_i64(r.first_position)).collect();
        let lasts: Vec<i64> = chunk.iter().map(|r| to_i64(r.last_position)).collect();
        sqlx::query(
            "INSERT INTO idempotency_keys (ledger_id, key, request_hash, request, \
             response_status, response_body, first_position, last_position) \
             SELECT $1::uuid, k, h, q, s, b, f, l \
             FROM UNNEST($2::text[], $3::bytea[], $4::bytea[], $5::integer[], $6::bytea[], \
             $7::bigint[], $8::bigint[]) AS u (k, h, q, s, b, f, l)",
        )
        .bind(ledger_id.to_string())
        .bind(keys)
        .bind(hashes)
        .bind(requests)
        .bind(statuses)
        .bind(bodies)
        .bind(firsts)
        .bind(lasts)
        .execute(&mut **tx)
        .await
        .map_err(|e| classify(ledger_id, e))?;
    }
    Ok(())
}

#[async_trait]
impl crate::Backend for PostgresBackend {
    async fn commit(&self, batch: CommitBatch) -> Result<(), BackendError> {
        assert_batch_shape(&batch);
        // The head row lock is taken first and held to commit, so the commits of one ledger
        // run one at a time and its events become visible in position order.
        let mut tx = self.pool.begin().await?;
        lock_head(&mut tx, &batch).await?;
        insert_events(&mut tx, batch.ledger_id, &batch.events).await?;
        insert_keys(&mut tx, batch.ledger_id, &batch.idempotency).await?;
        if batch.expected_head.is_some() {
            move_head(&mut tx, &batch).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn head(&self, ledger_id: Uuid) -> Result<Option<ChainHead>, BackendError> {
        let row = sqlx::query(
            "SELECT head_position, head_hash FROM ledger_heads WHERE ledger_id = $1::uuid",
        )
        .bind(ledger_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| decode_head(ledger_id, &row)).transpose()
    }

    async fn signed_head(&self, ledger_id: Uuid) -> Result<Option<SignedHead>, BackendError> {
        let row = sqlx::query(
            "SELECT head_position, head_hash, signed_head FROM ledger_heads \
             WHERE ledger_id = $1::uuid",
        )
        .bind(ledger_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(SignedHead {
            head: decode_head(ledger_id, &row)?,
            record: row.try_get("signed_head")?,
        }))
    }

    async fn stream_version(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
    ) -> Result<Option<u64>, BackendError> {
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT max(stream_version) FROM events WHERE ledger_id = $1::uuid AND stream_id = $2",
        )
        .bind(ledger_id.to_string())
        .bind(stream_id)
        .fetch_one(&self.pool)
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
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM idempotency_keys WHERE ledger_id = $1::uuid AND key = $2"
        );
        let row = sqlx::query(&sql)
            .bind(ledger_id.to_string())
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| decode_idempotency(ledger_id, &row))
            .transpose()
    }

    async fn stream_versions(
        &self,
        ledger_id: Uuid,
        stream_ids: &[&str],
    ) -> Result<HashMap<String, u64>, BackendError> {
        // One index seek per stream, on the last entry of (ledger_id, stream_id,
        // stream_version), in one round trip for the whole group.
        let rows = sqlx::query(
            "SELECT w.stream_id, (SELECT e.stream_version FROM events e \
             WHERE e.ledger_id = $1::uuid AND e.stream_id = w.stream_id \
             ORDER BY e.stream_version DESC LIMIT 1) AS version \
             FROM UNNEST($2::text[]) AS w (stream_id)",
        )
        .bind(ledger_id.to_string())
        .bind(stream_ids)
        .fetch_all(&self.pool)
        .await?;
        let mut versions = HashMap::with_capacity(rows.len());
        for row in rows {
            let version: Option<i64> = row.try_get("version")?;
            if let Some(version) = version {
                let version = to_u64(ledger_id, 0, version, "stream_version")?;
                versions.insert(row.try_get("stream_id")?, version);
            }
        }
        Ok(versions)
    }

    async fn idempotency_records(
        &self,
        ledger_id: Uuid,
        keys: &[&str],
    ) -> Result<HashMap<String, IdempotencyRecord>, BackendError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM idempotency_keys \
             WHERE ledger_id = $1::uuid AND key = ANY($2::text[])"
        );
        let rows = sqlx::query(&sql)
            .bind(ledger_id.to_string())
            .bind(keys)
            .fetch_all(&self.pool)
            .await?;
        let mut records = HashMap::with_capacity(rows.len());
        for row in rows {
            let record = decode_idempotency(ledger_id, &row)?;
            records.insert(record.claim.key.clone(), record);
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE ledger_id = $1::uuid AND position >= $2 \
             ORDER BY position LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(ledger_id.to_string())
            .bind(from)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE ledger_id = $1::uuid AND stream_id = $2 \
             AND stream_version >= $3 ORDER BY stream_version LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(ledger_id.to_string())
            .bind(stream_id)
            .bind(from)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
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
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM idempotency_keys WHERE ledger_id = $1::uuid \
             AND last_position BETWEEN $2 AND $3 ORDER BY last_position"
        );
        let rows = sqlx::query(&sql)
            .bind(ledger_id.to_string())
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| decode_idempotency(ledger_id, row))
            .collect()
    }

    async fn ledgers(&self) -> Result<Vec<LedgerInfo>, BackendError> {
        // `uuid` compares byte by byte, so this is the SQLite backend's order too.
        let rows = sqlx::query(
            "SELECT ledger_id::text AS ledger_id, tenant, head_position, head_hash \
             FROM ledger_heads ORDER BY ledger_heads.ledger_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_ledger).collect()
    }
}

fn decode_ledger(row: &PgRow) -> Result<LedgerInfo, BackendError> {
    let ledger_id = to_uuid(Uuid::nil(), 0, row.try_get("ledger_id")?)?;
    Ok(LedgerInfo {
        ledger_id,
        tenant: row.try_get("tenant")?,
        head: decode_head(ledger_id, row)?,
    })
}
