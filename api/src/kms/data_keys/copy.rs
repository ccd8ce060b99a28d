//! Copying wrapped data keys between key stores, for `folio migrate`.
//!
//! The sealed events of a ledger open only with the keys they name, so the keys travel
//! with the events. Rows are copied as stored, still wrapped by the KEK: the nodes of the
//! target must reach the same KMS key (for the local provider, the same key file).
//!
//! A row the target already has keeps the larger message count, and a key destroyed on
//! either side ends destroyed, so copying never brings an erased subject back.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{DataKeyError, KeyStore, DATA_KEYS_TABLE, SCHEMA};

/// Rows read from the source and written to the target per transaction.
const PAGE: i64 = 1_000;

/// Data keys handled by [`copy_data_keys`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopiedDataKeys {
    /// Rows read from the source.
    pub keys: u64,
    /// Of those, keys destroyed (erased subjects), copied without their wrapped bytes.
    pub destroyed: u64,
}

const COLUMNS: &str = "id, ledger_id, subject, provider, kek_id, kek_version, wrapped, \
                       created_at_micros, messages, destroyed_at_micros";

const INSERT: &str = "INSERT INTO data_keys (id, ledger_id, subject, provider, kek_id, \
    kek_version, wrapped, created_at_micros, messages, destroyed_at_micros) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
    ON CONFLICT (id) DO UPDATE SET \
    wrapped = CASE WHEN excluded.destroyed_at_micros IS NULL THEN data_keys.wrapped END, \
    destroyed_at_micros = COALESCE(data_keys.destroyed_at_micros, \
        excluded.destroyed_at_micros), \
    messages = CASE WHEN excluded.messages > data_keys.messages THEN excluded.messages \
        ELSE data_keys.messages END";

/// Copies every data key of `from` into `to`, creating the target's `data_keys` table if
/// missing, in pages of 1,000 keys. A source file or table that does not exist has no
/// keys to copy.
///
/// # Errors
/// A database that cannot be opened, read or written; pages committed before the failure
/// stay, and running the copy again completes it.
pub async fn copy_data_keys(
    from: &KeyStore,
    to: &KeyStore,
) -> Result<CopiedDataKeys, DataKeyError> {
    if let KeyStore::File(path) = from {
        if !path.exists() {
            return Ok(CopiedDataKeys::default());
        }
    }
    let source = from.connect().await?;
    if let KeyStore::Postgres(_) = from {
        // A database whose nodes never sealed anything has no table to read.
        if !source.tables_exist(&[DATA_KEYS_TABLE]).await? {
            return Ok(CopiedDataKeys::default());
        }
    }
    let target = to.connect().await?;
    target.create_schema(SCHEMA, &[DATA_KEYS_TABLE]).await?;

    let mut copied = CopiedDataKeys::default();
    let mut after = String::new();
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM data_keys WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(&after)
        .bind(PAGE)
        .fetch_all(&source.pool)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(copied);
        };
        after = last.try_get("id")?;

        let mut transaction = target.pool.begin().await?;
        for row in &rows {
            let destroyed = insert(&mut transaction, row).await?;
            copied.keys += 1;
            copied.destroyed += u64::from(destroyed);
        }
        transaction.commit().await?;
    }
}

/// Writes one source row to the target; returns whether the key is destroyed.
async fn insert(
    transaction: &mut sqlx::Transaction<'_, sqlx::Any>,
    row: &AnyRow,
) -> Result<bool, DataKeyError> {
    let destroyed: Option<i64> = row.try_get("destroyed_at_micros")?;
    let wrapped: Option<Vec<u8>> = row.try_get("wrapped")?;
    sqlx::query(INSERT)
        .bind(row.try_get::<String, _>("id")?)
        .bind(row.try_get::<String, _>("ledger_id")?)
        .bind(row.try_get::<String, _>("subject")?)
        .bind(row.try_get::<String, _>("provider")?)
        .bind(row.try_get::<String, _>("kek_id")?)
        .bind(row.try_get::<String, _>("kek_version")?)
        // A destroyed key has no wrapped bytes to copy, whatever the source contains.
        .bind(wrapped.filter(|_| destroyed.is_none()))
        .bind(row.try_get::<i64, _>("created_at_micros")?)
        .bind(row.try_get::<i64, _>("messages")?)
        .bind(destroyed)
        .execute(&mut **transaction)
        .await?;
    Ok(destroyed.is_some())
}
