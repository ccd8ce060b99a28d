//! The dead-letter queue: payments whose last attempt failed, waiting for an operator.

use domain::events::{DomainEvent, PaymentDeadLettered};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::Row;
use uuid::Uuid;

use crate::apply::EventContext;
use crate::page::{into_page, Page, PageRequest};
use crate::read_models::load_checkpoint;
use crate::row::{get_u64, get_uuid};
use crate::timestamp::format_micros;
use crate::{ProjectionError, ReadModels};

const TABLE: &str = "dead_letters";

/// A parked payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Payment id.
    pub payment_id: Uuid,
    /// Time the payment was parked (RFC 3339, UTC).
    pub parked_at: String,
    /// Time the payment was parked, in microseconds since the Unix epoch.
    pub parked_at_micros: i64,
    /// Position of the dead-letter event; the cursor of the list.
    pub parked_position: u64,
    /// Attempts made.
    pub attempts: u64,
    /// Last failure class.
    pub last_error_kind: String,
    /// Last failure detail.
    pub last_error: String,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Payee id.
    pub payee_id: Uuid,
}

/// Size and age of a ledger's dead-letter queue, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterStats {
    /// Parked payments.
    pub count: u64,
    /// When the oldest parked payment was parked (RFC 3339, UTC).
    pub oldest_parked_at: Option<String>,
    /// When the oldest parked payment was parked, in microseconds since the Unix epoch.
    pub oldest_parked_at_micros: Option<i64>,
    /// Age of the oldest parked payment at the caller's `now`, in whole seconds.
    pub oldest_age_seconds: Option<i64>,
    /// Ledger position the counts reflect.
    pub as_of_position: Option<u64>,
}

/// Parks a dead-lettered payment, and unparks a payment when it is dispatched or
/// receipted again (an operator replay).
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    event: &DomainEvent,
) -> Result<(), ProjectionError> {
    match event {
        DomainEvent::PaymentDeadLettered(e) => park(conn, context, e).await,
        DomainEvent::DispatchAttempted(e) => unpark(conn, context, e.payment_id).await,
        DomainEvent::ReceiptRecorded(e) => unpark(conn, context, e.payment_id).await,
        _ => Ok(()),
    }
}

async fn park(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &PaymentDeadLettered,
) -> Result<(), ProjectionError> {
    // The amount and payee come from the payment row, which the payments model has
    // already updated for this event.
    let result = sqlx::query(
        "INSERT INTO dead_letters (ledger_id, payment_id, parked_position, parked_at_micros,
            attempts, last_error_kind, last_error, amount_minor, currency, payee_id)
         SELECT ledger_id, payment_id, $3, $4, $5, $6, $7, amount_minor, currency, payee_id
         FROM payments
         WHERE ledger_id = $1 AND payment_id = $2 AND amount_minor IS NOT NULL",
    )
    .bind(&context.ledger)
    .bind(e.payment_id.to_string())
    .bind(context.position)
    .bind(context.at_micros)
    .bind(i64::from(e.attempts))
    .bind(&e.last_error_kind)
    .bind(&e.last_error)
    .execute(&mut *conn)
    .await?;
    if result.rows_affected() != 1 {
        let reason = format!("dead-lettered payment {} was never submitted", e.payment_id);
        return Err(context.inconsistent(reason));
    }
    Ok(())
}

async fn unpark(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    payment_id: Uuid,
) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM dead_letters WHERE ledger_id = $1 AND payment_id = $2")
        .bind(&context.ledger)
        .bind(payment_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl ReadModels {
    /// Lists parked payments, oldest first.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn dead_letters(
        &self,
        ledger_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<DeadLetter>, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;
        let rows = sqlx::query(
            "SELECT * FROM dead_letters WHERE ledger_id = $1 AND parked_position > $2
             ORDER BY parked_position LIMIT $3",
        )
        .bind(ledger_id.to_string())
        .bind(page.after_bound())
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await?;
        let items = rows
            .iter()
            .map(dead_letter_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let items = items.into_iter().map(|d| (d.parked_position, d)).collect();
        Ok(into_page(page, items, checkpoint.as_ref()))
    }

    /// Counts parked payments and measures the oldest one's age at `now_micros`.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn dead_letter_stats(
        &self,
        ledger_id: Uuid,
        now_micros: i64,
    ) -> Result<DeadLetterStats, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS parked, MIN(parked_at_micros) AS oldest
             FROM dead_letters WHERE ledger_id = $1",
        )
        .bind(ledger_id.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok(DeadLetterStats {
            count: get_u64(&row, TABLE, "parked")?,
            oldest_parked_at: oldest.map(format_micros),
            oldest_parked_at_micros: oldest,
            oldest_age_seconds: oldest.map(|at| now_micros.saturating_sub(at) / 1_000_000),
            as_of_position: checkpoint.map(|c| c.position),
        })
    }
}

fn dead_letter_from_row(row: &AnyRow) -> Result<DeadLetter, ProjectionError> {
    let parked_at_micros: i64 = row.try_get("parked_at_micros")?;
    Ok(DeadLetter {
        payment_id: get_uuid(row, TABLE, "payment_id")?,
        parked_at: format_micros(parked_at_micros),
        parked_at_micros,
        parked_position: get_u64(row, TABLE, "parked_position")?,
        attempts: get_u64(row, TABLE, "attempts")?,
        last_error_kind: row.try_get("last_error_kind")?,
        last_error: row.try_get("last_error")?,
        amount_minor: get_u64(row, TABLE, "amount_minor")?,
        currency: row.try_get("currency")?,
        payee_id: get_uuid(row, TABLE, "payee_id")?,
    })
}
