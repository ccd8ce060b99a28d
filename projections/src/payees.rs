//! The payee allow-list: active payees, and removed ones kept with their removal time.

use domain::events::{DomainEvent, PayeeAdded, PayeeRemoved};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::Row;
use uuid::Uuid;

use crate::apply::EventContext;
use crate::page::{into_page, AsOf, Page, PageRequest};
use crate::read_models::load_checkpoint;
use crate::row::{get_u64, get_uuid};
use crate::summary::mask_account;
use crate::timestamp::format_micros;
use crate::{ProjectionError, ReadModels};

const TABLE: &str = "payees";

/// A payee on the allow-list, or removed from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payee {
    /// Payee id.
    pub payee_id: Uuid,
    /// Name as given.
    pub name: String,
    /// Name after NFKC normalisation, case folding and whitespace collapsing.
    pub normalized_name: String,
    /// Account with the account number masked.
    pub account_masked: String,
    /// Payees whose names looked like this one when it was added.
    pub lookalike_of: Vec<Uuid>,
    /// Whether the payee is still on the allow-list.
    pub active: bool,
    /// Time the payee was added (RFC 3339, UTC).
    pub added_at: String,
    /// Time the payee was added, in microseconds since the Unix epoch.
    pub added_at_micros: i64,
    /// Position of the add event; the cursor of the list.
    pub added_position: u64,
    /// Time the payee was removed (RFC 3339, UTC).
    pub removed_at: Option<String>,
    /// Time the payee was removed, in microseconds since the Unix epoch.
    pub removed_at_micros: Option<i64>,
    /// Reason given for the removal.
    pub removed_reason: Option<String>,
}

/// Applies a payee event; other events leave the model unchanged.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    event: &DomainEvent,
) -> Result<(), ProjectionError> {
    match event {
        DomainEvent::PayeeAdded(e) => added(conn, context, e).await,
        DomainEvent::PayeeRemoved(e) => removed(conn, context, e).await,
        DomainEvent::SubjectErased(e) => erased(conn, context, e).await,
        _ => Ok(()),
    }
}

async fn added(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &PayeeAdded,
) -> Result<(), ProjectionError> {
    let result = sqlx::query(
        "INSERT INTO payees (ledger_id, payee_id, added_position, name, normalized_name,
            account_masked, added_at_micros)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (ledger_id, payee_id) DO NOTHING",
    )
    .bind(&context.ledger)
    .bind(e.payee_id.to_string())
    .bind(context.position)
    .bind(&e.name)
    .bind(&e.normalized_name)
    .bind(mask_account(&e.account))
    .bind(context.at_micros)
    .execute(&mut *conn)
    .await?;
    if result.rows_affected() != 1 {
        return Err(context.inconsistent(format!("payee {} added twice", e.payee_id)));
    }

    for other in &e.lookalike_of {
        sqlx::query(
            "INSERT INTO payee_lookalikes (ledger_id, payee_id, lookalike_of) VALUES ($1, $2, $3)
             ON CONFLICT (ledger_id, payee_id, lookalike_of) DO NOTHING",
        )
        .bind(&context.ledger)
        .bind(e.payee_id.to_string())
        .bind(other.to_string())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Blanks the personal columns of an erased payee. Rows rebuilt later get the same
/// values, because the opener reads the destroyed keys' fields as `[erased]`.
async fn erased(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &domain::personal::SubjectErased,
) -> Result<(), ProjectionError> {
    let Some(payee_id) = e.subject.strip_prefix("payee:") else {
        return Ok(());
    };
    let marker = domain::personal::ERASED;
    sqlx::query(
        "UPDATE payees SET name = $3, normalized_name = $3, account_masked = $3
         WHERE ledger_id = $1 AND payee_id = $2",
    )
    .bind(&context.ledger)
    .bind(payee_id)
    .bind(marker)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn removed(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &PayeeRemoved,
) -> Result<(), ProjectionError> {
    let result = sqlx::query(
        "UPDATE payees SET removed_at_micros = $3, removed_reason = $4
         WHERE ledger_id = $1 AND payee_id = $2 AND removed_at_micros IS NULL",
    )
    .bind(&context.ledger)
    .bind(e.payee_id.to_string())
    .bind(context.at_micros)
    .bind(&e.reason)
    .execute(&mut *conn)
    .await?;
    if result.rows_affected() != 1 {
        let reason = format!("removed payee {} is not an active payee", e.payee_id);
        return Err(context.inconsistent(reason));
    }
    Ok(())
}

impl ReadModels {
    /// Returns a payee, active or removed, or `None` if the read model has no row for it.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn payee(
        &self,
        ledger_id: Uuid,
        payee_id: Uuid,
    ) -> Result<Option<AsOf<Payee>>, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;
        let row = sqlx::query("SELECT * FROM payees WHERE ledger_id = $1 AND payee_id = $2")
            .bind(ledger_id.to_string())
            .bind(payee_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let payee = payee_from_row(&mut tx, ledger_id, &row).await?;
        Ok(Some(AsOf {
            item: payee,
            as_of_position: checkpoint.map(|c| c.position),
            as_of_hash: checkpoint.map(|c| hex::encode(c.head_hash)),
        }))
    }

    /// Lists payees in the order they were added; removed payees only when
    /// `include_removed` is set.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn payees(
        &self,
        ledger_id: Uuid,
        include_removed: bool,
        page: &PageRequest,
    ) -> Result<Page<Payee>, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;
        let rows = sqlx::query(
            "SELECT * FROM payees WHERE ledger_id = $1 AND added_position > $2
               AND ($3 = 1 OR removed_at_micros IS NULL)
             ORDER BY added_position LIMIT $4",
        )
        .bind(ledger_id.to_string())
        .bind(page.after_bound())
        .bind(i64::from(include_removed))
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let payee = payee_from_row(&mut tx, ledger_id, row).await?;
            items.push((payee.added_position, payee));
        }
        Ok(into_page(page, items, checkpoint.as_ref()))
    }
}

async fn payee_from_row(
    conn: &mut AnyConnection,
    ledger_id: Uuid,
    row: &AnyRow,
) -> Result<Payee, ProjectionError> {
    let payee_id = get_uuid(row, TABLE, "payee_id")?;
    let added_at_micros: i64 = row.try_get("added_at_micros")?;
    let removed_at_micros: Option<i64> = row.try_get("removed_at_micros")?;
    Ok(Payee {
        payee_id,
        name: row.try_get("name")?,
        normalized_name: row.try_get("normalized_name")?,
        account_masked: row.try_get("account_masked")?,
        lookalike_of: load_lookalikes(conn, ledger_id, payee_id).await?,
        active: removed_at_micros.is_none(),
        added_at: format_micros(added_at_micros),
        added_at_micros,
        added_position: get_u64(row, TABLE, "added_position")?,
        removed_at: removed_at_micros.map(format_micros),
        removed_at_micros,
        removed_reason: row.try_get("removed_reason")?,
    })
}

async fn load_lookalikes(
    conn: &mut AnyConnection,
    ledger_id: Uuid,
    payee_id: Uuid,
) -> Result<Vec<Uuid>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT lookalike_of FROM payee_lookalikes WHERE ledger_id = $1 AND payee_id = $2
         ORDER BY lookalike_of",
    )
    .bind(ledger_id.to_string())
    .bind(payee_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| get_uuid(row, "payee_lookalikes", "lookalike_of"))
        .collect()
}
