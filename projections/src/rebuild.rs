//! Rebuilding read models from the ledger without downtime.
//!
//! A rebuild projects every ledger from position 0 into a fresh copy of the read-model
//! tables: a file beside an SQLite database, or the schema `folio_rebuild` of a PostgreSQL
//! database. It builds up to the checkpoint the live models have reached and catches up
//! while they move on. Then one transaction blocks the projection runner's writes, checks
//! that both copies are at the same checkpoint of every ledger, and replaces the rows of
//! the chosen tables with the fresh ones. Queries keep reading the live rows until that
//! transaction commits, and then read the rebuilt ones.

use std::path::PathBuf;

use eventstore_adapter::{Backend, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::{Any, Row};
use uuid::Uuid;

use crate::read_models::{Checkpoint, Location};
use crate::{schema, ProjectionError, ReadModels};

/// Name of the fresh copy: the schema on PostgreSQL, the attached database on SQLite.
// NOTE: the name is fixed, so two rebuilds of the same read models at once would drop each
// other's copy; run one at a time.
const STAGING: &str = "folio_rebuild";

/// Events read from the store per call and applied per transaction.
const BATCH: u32 = 256;

/// Swap attempts before giving up on live models that keep moving.
const MAX_SWAP_ATTEMPTS: u32 = 50;

/// Order in which the swap locks PostgreSQL tables: the projection runner writes
/// `audit_events` first in each transaction and `checkpoints` last, so taking the locks in
/// this order cannot deadlock with it.
const LOCK_ORDER: &[&str] = &[
    "audit_events",
    "payments",
    "payment_history",
    "dead_letters",
    "dead_letter_history",
    "dlq_decisions",
    "dlq_decision_payments",
    "payees",
    "payee_lookalikes",
    "aba_batches",
    "anomalies",
    "checkpoints",
];

/// Returns the names of the read models that can be rebuilt one by one.
pub fn model_names() -> Vec<&'static str> {
    schema::MODELS.iter().map(|(name, _)| *name).collect()
}

/// Summary of a finished rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Tables whose rows were replaced.
    pub tables: Vec<&'static str>,
    /// Ledgers projected.
    pub ledgers: usize,
    /// Events applied to the fresh copy.
    pub events: u64,
}

/// Rebuilds the read model `name` (or `all`) of every ledger of `backend` and swaps it in.
///
/// `progress` is called after each batch with the events applied and the events to apply
/// up to the checkpoints the live models had reached at the start.
///
/// # Errors
/// [`ProjectionError::InvalidQuery`] for an unknown name; any error of projecting the
/// events ([`ReadModels::apply_batch`]); [`ProjectionError::Database`] or
/// [`ProjectionError::Store`] when a database or the store fails. The live models are left
/// as they were on any error.
pub async fn rebuild(
    live: &ReadModels,
    backend: &dyn Backend,
    name: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RebuildReport, ProjectionError> {
    let tables = tables_of(name)?;
    let staging = open_staging(live).await?;
    let result = build_and_swap(live, &staging, backend, &tables, progress).await;
    staging.pool.close().await;
    drop_staging(live).await?;
    result
}

async fn build_and_swap(
    live: &ReadModels,
    staging: &ReadModels,
    backend: &dyn Backend,
    tables: &[&'static str],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RebuildReport, ProjectionError> {
    let ledgers: Vec<Uuid> = backend
        .ledgers()
        .await
        .map_err(store_error)?
        .iter()
        .map(|info| info.ledger_id)
        .collect();
    let mut targets = Vec::new();
    for ledger_id in &ledgers {
        targets.push((*ledger_id, live.checkpoint(*ledger_id).await?));
    }
    let total: u64 = targets
        .iter()
        .filter_map(|(_, tip)| tip.map(|c| c.position + 1))
        .sum();

    let mut events = 0;
    let mut report = |applied: u64| {
        events += applied;
        progress(events, total.max(events));
    };
    for (ledger_id, target) in &targets {
        catch_up(staging, backend, *ledger_id, target.as_ref(), &mut report).await?;
    }
    for attempt in 1..=MAX_SWAP_ATTEMPTS {
        for ledger_id in &ledgers {
            let target = live.checkpoint(*ledger_id).await?;
            catch_up(staging, backend, *ledger_id, target.as_ref(), &mut report).await?;
        }
        if swap(live, tables).await? {
            return Ok(RebuildReport {
                tables: tables.to_vec(),
                ledgers: ledgers.len(),
                events,
            });
        }
        tracing::debug!(
            attempt,
            "live read models moved during the swap; catching up"
        );
    }
    Err(ProjectionError::InvalidQuery {
        name: "rebuild",
        reason: format!(
            "the live read models kept moving during {MAX_SWAP_ATTEMPTS} swap attempts; run \
             the rebuild again"
        ),
    })
}

fn tables_of(name: &str) -> Result<Vec<&'static str>, ProjectionError> {
    if name == "all" {
        return Ok(schema::MODELS
            .iter()
            .flat_map(|(_, tables)| tables.iter().copied())
            .collect());
    }
    let found = schema::MODELS.iter().find(|(model, _)| *model == name);
    let Some((_, tables)) = found else {
        return Err(ProjectionError::InvalidQuery {
            name: "model",
            reason: format!(
                "unknown read model {name:?}; use all or one of {}",
                model_names().join(", ")
            ),
        });
    };
    Ok(tables.to_vec())
}

fn store_error(error: eventstore_adapter::BackendError) -> ProjectionError {
    ProjectionError::Store(StoreError::Backend(error))
}

/// Applies the ledger's events after the staging checkpoint, up to `target`.
async fn catch_up(
    staging: &ReadModels,
    backend: &dyn Backend,
    ledger_id: Uuid,
    target: Option<&Checkpoint>,
    report: &mut dyn FnMut(u64),
) -> Result<(), ProjectionError> {
    let Some(target) = target else { return Ok(()) };
    let mut next = staging
        .checkpoint(ledger_id)
        .await?
        .map_or(0, |c| c.position + 1);
    while next <= target.position {
        let limit = u32::try_from(target.position - next + 1).map_or(BATCH, |n| n.min(BATCH));
        let events = backend
            .read_ledger(ledger_id, next, limit)
            .await
            .map_err(store_error)?;
        let Some(last) = events.last() else {
            return Err(ProjectionError::Gap {
                ledger_id,
                expected: next,
                found: target.position,
            });
        };
        let applied = staging.apply_batch(ledger_id, &events).await?;
        assert_eq!(applied.map(|c| c.position), Some(last.position));
        next = last.position + 1;
        report(events.len() as u64);
    }
    let reached = staging.checkpoint(ledger_id).await?;
    if reached.map(|c| c.head_hash) != Some(target.head_hash) {
        return Err(ProjectionError::BrokenLink {
            ledger_id,
            position: target.position,
            expected: hex::encode(target.head_hash),
            found: reached
                .map(|c| hex::encode(c.head_hash))
                .unwrap_or_default(),
        });
    }
    Ok(())
}

/// Opens an empty staging copy beside `live`, dropping any copy a failed run left.
async fn open_staging(live: &ReadModels) -> Result<ReadModels, ProjectionError> {
    drop_staging(live).await?;
    match &live.location {
        Location::File(path) => ReadModels::open(staging_file(path)).await,
        Location::Server(url) => {
            sqlx::query(&format!("CREATE SCHEMA {STAGING}"))
                .execute(&live.pool)
                .await?;
            let separator = if url.contains('?') { '&' } else { '?' };
            let url = format!("{url}{separator}options=-c%20search_path%3D{STAGING}");
            ReadModels::connect(&url).await
        }
        Location::Memory => Err(ProjectionError::InvalidQuery {
            name: "rebuild",
            reason: "read models in memory are rebuilt by projecting them again".to_owned(),
        }),
    }
}

async fn drop_staging(live: &ReadModels) -> Result<(), ProjectionError> {
    match &live.location {
        Location::File(path) => {
            let file = staging_file(path);
            for suffix in ["", "-wal", "-shm"] {
                let mut name = file.clone().into_os_string();
                name.push(suffix);
                match tokio::fs::remove_file(&name).await {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(sqlx::Error::Io(error).into()),
                }
            }
        }
        Location::Server(_) => {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {STAGING} CASCADE"))
                .execute(&live.pool)
                .await?;
        }
        Location::Memory => {}
    }
    Ok(())
}

fn staging_file(live: &std::path::Path) -> PathBuf {
    let mut name = live.as_os_str().to_owned();
    name.push(".rebuild");
    PathBuf::from(name)
}

/// Replaces the rows of `tables` with the staging copy's, in one transaction that holds
/// off the runner, if both copies stand at the same checkpoints. Returns whether it did.
async fn swap(live: &ReadModels, tables: &[&'static str]) -> Result<bool, ProjectionError> {
    let mut conn = live.pool.acquire().await?;
    // The connection carries an attached database or an open transaction on any error,
    // so it is closed rather than returned to the pool.
    conn.close_on_drop();
    let (main, begin) = match &live.location {
        Location::File(path) => {
            let file = staging_file(path);
            sqlx::query(&format!("ATTACH DATABASE $1 AS {STAGING}"))
                .bind(file.to_string_lossy().into_owned())
                .execute(&mut *conn)
                .await?;
            ("main.", "BEGIN IMMEDIATE")
        }
        _ => ("", "BEGIN"),
    };
    sqlx::query(begin).execute(&mut *conn).await?;
    let swapped = swap_in_transaction(&mut conn, &live.location, main, tables).await;
    let end = if matches!(swapped, Ok(true)) {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    sqlx::query(end).execute(&mut *conn).await?;
    swapped
}

async fn swap_in_transaction(
    conn: &mut PoolConnection<Any>,
    location: &Location,
    main: &str,
    tables: &[&'static str],
) -> Result<bool, ProjectionError> {
    if matches!(location, Location::Server(_)) {
        let locked = LOCK_ORDER.join(", ");
        sqlx::query(&format!("LOCK TABLE {locked} IN EXCLUSIVE MODE"))
            .execute(&mut **conn)
            .await?;
    }
    let live = checkpoints(conn, &format!("{main}checkpoints")).await?;
    let fresh = checkpoints(conn, &format!("{STAGING}.checkpoints")).await?;
    if live != fresh {
        return Ok(false);
    }
    for table in tables {
        sqlx::query(&format!("DELETE FROM {main}{table}"))
            .execute(&mut **conn)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO {main}{table} SELECT * FROM {STAGING}.{table}"
        ))
        .execute(&mut **conn)
        .await?;
    }
    Ok(true)
}

async fn checkpoints(
    conn: &mut PoolConnection<Any>,
    table: &str,
) -> Result<Vec<(String, i64, String)>, ProjectionError> {
    let sql = format!("SELECT ledger_id, position, head_hash FROM {table} ORDER BY ledger_id");
    let rows = sqlx::query(&sql).fetch_all(&mut **conn).await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("ledger_id")?,
                row.try_get("position")?,
                row.try_get("head_hash")?,
            ))
        })
        .collect()
}
