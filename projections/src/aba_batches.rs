//! ABA batches: one row per imported ABA direct-entry file.

use domain::events::{AbaBatchImported, DomainEvent};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::Row;
use uuid::Uuid;

use crate::apply::EventContext;
use crate::page::{into_page, AsOf, Page, PageRequest};
use crate::read_models::load_checkpoint;
use crate::row::{get_u64, get_uuid, to_db};
use crate::timestamp::format_micros;
use crate::{ProjectionError, ReadModels};

const TABLE: &str = "aba_batches";

/// Columns of a batch plus the number of its payments the read model holds.
const SELECT_BATCH: &str = "SELECT b.*, (SELECT COUNT(*) FROM payments p
        WHERE p.ledger_id = b.ledger_id AND p.batch_id = b.batch_id) AS payment_count
    FROM aba_batches b";

/// An imported ABA file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AbaBatch {
    /// Batch id.
    pub batch_id: Uuid,
    /// blake3 of the file bytes (hex).
    pub file_hash: String,
    /// Detail records in the file.
    pub detail_count: u64,
    /// Payments from this batch in the read model.
    pub payment_count: u64,
    /// Sum of credit amounts in minor units.
    pub credit_total_minor: u64,
    /// Sum of debit amounts in minor units.
    pub debit_total_minor: u64,
    /// User name from the descriptive record.
    pub user_name: String,
    /// Processing date from the descriptive record (DDMMYY).
    pub processing_date: String,
    /// Import time (RFC 3339, UTC).
    pub imported_at: String,
    /// Import time in microseconds since the Unix epoch.
    pub imported_at_micros: i64,
    /// Position of the import event; the cursor of the list.
    pub position: u64,
}

/// Records an imported batch; other events leave the model unchanged.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    event: &DomainEvent,
) -> Result<(), ProjectionError> {
    match event {
        DomainEvent::AbaBatchImported(e) => imported(conn, context, e).await,
        _ => Ok(()),
    }
}

async fn imported(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &AbaBatchImported,
) -> Result<(), ProjectionError> {
    let result = sqlx::query(
        "INSERT INTO aba_batches (ledger_id, batch_id, position, imported_at_micros, file_hash,
            detail_count, credit_total_minor, debit_total_minor, user_name, processing_date)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (ledger_id, batch_id) DO NOTHING",
    )
    .bind(&context.ledger)
    .bind(e.batch_id.to_string())
    .bind(context.position)
    .bind(context.at_micros)
    .bind(hex::encode(e.file_blake3))
    .bind(i64::from(e.detail_count))
    .bind(to_db("credit_total_minor", e.credit_total_minor)?)
    .bind(to_db("debit_total_minor", e.debit_total_minor)?)
    .bind(&e.user_name)
    .bind(&e.processing_date)
    .execute(&mut *conn)
    .await?;
    if result.rows_affected() != 1 {
        return Err(context.inconsistent(format!("ABA batch {} imported twice", e.batch_id)));
    }
    Ok(())
}

impl ReadModels {
    /// Returns an ABA batch, or `None` if the read model has no row for it.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn aba_batch(
        &self,
        ledger_id: Uuid,
        batch_id: Uuid,
    ) -> Result<Option<AsOf<AbaBatch>>, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;
        let sql = format!("{SELECT_BATCH} WHERE b.ledger_id = $1 AND b.batch_id = $2");
        let row = sqlx::query(&sql)
            .bind(ledger_id.to_string())
            .bind(batch_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(AsOf {
            item: batch_from_row(&row)?,
            as_of_position: checkpoint.map(|c| c.position),
            as_of_hash: checkpoint.map(|c| hex::encode(c.head_hash)),
        }))
    }

    /// Lists ABA batches in import order.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn aba_batches(
        &self,
        ledger_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<AbaBatch>, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;
        let sql = format!(
            "{SELECT_BATCH} WHERE b.ledger_id = $1 AND b.position > $2 ORDER BY b.position LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(ledger_id.to_string())
            .bind(page.after_bound())
            .bind(page.fetch_limit())
            .fetch_all(&mut *tx)
            .await?;
        let items = rows
            .iter()
            .map(batch_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let items = items.into_iter().map(|b| (b.position, b)).collect();
        Ok(into_page(page, items, checkpoint.as_ref()))
    }
}

fn batch_from_row(row: &AnyRow) -> Result<AbaBatch, ProjectionError> {
    let imported_at_micros: i64 = row.try_get("imported_at_micros")?;
    Ok(AbaBatch {
        batch_id: get_uuid(row, TABLE, "batch_id")?,
        file_hash: row.try_get("file_hash")?,
        detail_count: get_u64(row, TABLE, "detail_count")?,
        payment_count: get_u64(row, TABLE, "payment_count")?,
        credit_total_minor: get_u64(row, TABLE, "credit_total_minor")?,
        debit_total_minor: get_u64(row, TABLE, "debit_total_minor")?,
        user_name: row.try_get("user_name")?,
        processing_date: row.try_get("processing_date")?,
        imported_at: format_micros(imported_at_micros),
        imported_at_micros,
        position: get_u64(row, TABLE, "position")?,
    })
}
