//! The dead-letter queue: payments whose last attempt failed, the operators' decisions on
//! them (retry or ignore, each approved by a second operator) and what followed.

use domain::dlq::{
    DlqAction, DlqDecisionApproved, DlqDecisionProposed, DlqDecisionRejected, DlqRetryReleased,
};
use domain::events::{DomainEvent, PaymentDeadLettered};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::Row;
use uuid::Uuid;

use crate::apply::EventContext;
use crate::page::{into_page, AsOf, Page, PageRequest};
use crate::read_models::load_checkpoint;
use crate::row::{get_opt_uuid, get_u64, get_uuid};
use crate::timestamp::format_micros;
use crate::{ProjectionError, ReadModels};

const TABLE: &str = "dead_letters";

/// Statuses of a parked payment that still need an operator or the dispatcher.
pub const OPEN_STATUSES: [&str; 4] = [
    "parked",
    "retry_pending_approval",
    "ignore_pending_approval",
    "retrying",
];

/// Every status a parked payment can have.
pub const ALL_STATUSES: [&str; 6] = [
    "parked",
    "retry_pending_approval",
    "ignore_pending_approval",
    "retrying",
    "resolved",
    "ignored",
];

/// A parked payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Payment id.
    pub payment_id: Uuid,
    /// Time the payment was parked (RFC 3339, UTC).
    pub parked_at: String,
    /// Time the payment was parked, in microseconds since the Unix epoch.
    pub parked_at_micros: i64,
    /// Position of the last dead-letter event; the cursor of the list.
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
    /// `parked`, `retry_pending_approval`, `ignore_pending_approval`, `retrying`,
    /// `resolved` or `ignored`.
    pub status: String,
    /// Decision that currently names the payment, if any.
    pub decision_id: Option<Uuid>,
}

/// One step in the life of a parked payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterStep {
    /// Position of the event.
    pub position: u64,
    /// Status after the event.
    pub status: String,
    /// Time of the event (RFC 3339, UTC).
    pub at: String,
    /// Actor of the event (operator id, client or `system:...`).
    pub actor_id: String,
    /// What happened.
    pub detail: String,
}

/// A parked payment with its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterDetail {
    /// Current state.
    #[serde(flatten)]
    pub item: DeadLetter,
    /// Steps in position order.
    pub history: Vec<DeadLetterStep>,
}

/// Filters of a dead-letter list; every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// Statuses to list; empty means the open ones ([`OPEN_STATUSES`]).
    pub statuses: Vec<String>,
    /// Last failure class.
    pub last_error_kind: Option<String>,
    /// Parked at or after this time, microseconds since the Unix epoch.
    pub parked_from_micros: Option<i64>,
    /// Parked before this time, microseconds since the Unix epoch.
    pub parked_to_micros: Option<i64>,
    /// Cursor (by parked position) and page size.
    pub page: PageRequest,
}

/// Size and age of a ledger's dead-letter queue, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterStats {
    /// Parked payments not yet resolved or ignored.
    pub count: u64,
    /// When the oldest open parked payment was parked (RFC 3339, UTC).
    pub oldest_parked_at: Option<String>,
    /// When the oldest open parked payment was parked, in microseconds since the Unix epoch.
    pub oldest_parked_at_micros: Option<i64>,
    /// Age of the oldest open parked payment at the caller's `now`, in whole seconds.
    pub oldest_age_seconds: Option<i64>,
    /// Ledger position the counts reflect.
    pub as_of_position: Option<u64>,
}

/// Applies dead-letter events, DLQ decisions and what the dispatcher does with a retry.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    event: &DomainEvent,
) -> Result<(), ProjectionError> {
    match event {
        DomainEvent::PaymentDeadLettered(e) => park(conn, context, e).await,
        DomainEvent::DispatchAttempted(e) => {
            let detail = format!("dispatch attempt {} after a retry", e.attempt);
            step_if(conn, context, e.payment_id, "retrying", "retrying", &detail).await
        }
        DomainEvent::ReceiptRecorded(e) => {
            let detail = format!("receipted: bank reference {:?}", e.bank_reference);
            step_if(conn, context, e.payment_id, "retrying", "resolved", &detail).await
        }
        DomainEvent::DlqDecisionProposed(e) => proposed(conn, context, e).await,
        DomainEvent::DlqDecisionApproved(e) => approved(conn, context, e).await,
        DomainEvent::DlqDecisionRejected(e) => rejected(conn, context, e).await,
        DomainEvent::DlqRetryReleased(e) => released(conn, context, e).await,
        DomainEvent::DlqReleasePaused(e) => set_paused(conn, context, e.decision_id, 1).await,
        DomainEvent::DlqReleaseResumed(e) => set_paused(conn, context, e.decision_id, 0).await,
        _ => Ok(()),
    }
}

async fn park(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &PaymentDeadLettered,
) -> Result<(), ProjectionError> {
    // The amount and payee come from the payment row, which the payments model has
    // already updated for this event. A payment parked again after a retry starts over.
    let result = sqlx::query(
        "INSERT INTO dead_letters (ledger_id, payment_id, parked_position, parked_at_micros,
            attempts, last_error_kind, last_error, amount_minor, currency, payee_id, status,
            decision_id, updated_position)
         SELECT ledger_id, payment_id, $3, $4, $5, $6, $7, amount_minor, currency, payee_id,
            'parked', NULL, $3
         FROM payments
         WHERE ledger_id = $1 AND payment_id = $2 AND amount_minor IS NOT NULL
         ON CONFLICT (ledger_id, payment_id) DO UPDATE SET
            parked_position = excluded.parked_position,
            parked_at_micros = excluded.parked_at_micros,
            attempts = excluded.attempts,
            last_error_kind = excluded.last_error_kind,
            last_error = excluded.last_error,
            status = 'parked',
            decision_id = NULL,
            updated_position = excluded.updated_position",
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
    let detail = format!(
        "parked after {} attempts ({}): {}",
        e.attempts, e.last_error_kind, e.last_error
    );
    history(conn, context, e.payment_id, "parked", &detail).await
}

/// Moves a payment from status `from` to `to` with a history step; a payment in another
/// status, or never parked, is left alone.
async fn step_if(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    payment_id: Uuid,
    from: &str,
    to: &str,
    detail: &str,
) -> Result<(), ProjectionError> {
    let result = sqlx::query(
        "UPDATE dead_letters SET status = $3, updated_position = $4
         WHERE ledger_id = $1 AND payment_id = $2 AND status = $5",
    )
    .bind(&context.ledger)
    .bind(payment_id.to_string())
    .bind(to)
    .bind(context.position)
    .bind(from)
    .execute(&mut *conn)
    .await?;
    if result.rows_affected() == 0 {
        return Ok(());
    }
    history(conn, context, payment_id, to, detail).await
}

async fn history(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    payment_id: Uuid,
    status: &str,
    detail: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO dead_letter_history (ledger_id, position, payment_id, status, at_micros,
            actor_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&context.ledger)
    .bind(context.position)
    .bind(payment_id.to_string())
    .bind(status)
    .bind(context.at_micros)
    .bind(&context.event.actor.id)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// NOTE: no event marks a decision as expired, so the payments of an expired proposal keep
// their `*_pending_approval` status here until a new decision names them. The API shows
// such a decision as `expired` and lets a new one take its payments.
async fn proposed(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &DlqDecisionProposed,
) -> Result<(), ProjectionError> {
    let count = i64::try_from(e.payment_ids.len()).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO dlq_decisions (ledger_id, decision_id, proposed_position, action,
            reason_code, reason, proposer_id, expires_at_micros, status, paused,
            payment_count, released_count)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, 0)",
    )
    .bind(&context.ledger)
    .bind(e.decision_id.to_string())
    .bind(context.position)
    .bind(e.action.kind())
    .bind(e.action.reason_code().map(|code| code.as_str()))
    .bind(&e.reason)
    .bind(e.auth.operator_id.to_string())
    .bind(e.expires_at_micros)
    .bind(count)
    .execute(&mut *conn)
    .await?;

    let status = match e.action {
        DlqAction::Retry => "retry_pending_approval",
        DlqAction::Ignore { .. } => "ignore_pending_approval",
    };
    let detail = match e.action {
        DlqAction::Retry => format!("retry proposed in decision {}: {}", e.decision_id, e.reason),
        DlqAction::Ignore { reason_code } => format!(
            "ignore proposed in decision {} ({}): {}",
            e.decision_id,
            reason_code.as_str(),
            e.reason
        ),
    };
    for payment_id in &e.payment_ids {
        sqlx::query(
            "INSERT INTO dlq_decision_payments (ledger_id, decision_id, payment_id)
             VALUES ($1, $2, $3)",
        )
        .bind(&context.ledger)
        .bind(e.decision_id.to_string())
        .bind(payment_id.to_string())
        .execute(&mut *conn)
        .await?;
        let result = sqlx::query(
            "UPDATE dead_letters SET status = $3, decision_id = $4, updated_position = $5
             WHERE ledger_id = $1 AND payment_id = $2",
        )
        .bind(&context.ledger)
        .bind(payment_id.to_string())
        .bind(status)
        .bind(e.decision_id.to_string())
        .bind(context.position)
        .execute(&mut *conn)
        .await?;
        if result.rows_affected() != 1 {
            let reason = format!("DLQ decision names payment {payment_id}, which is not parked");
            return Err(context.inconsistent(reason));
        }
        history(conn, context, *payment_id, status, &detail).await?;
    }
    Ok(())
}

/// Moves every payment that a decision names to `status`, with a history step each.
async fn decide_payments(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    decision_id: Uuid,
    status: &str,
    detail: &str,
) -> Result<(), ProjectionError> {
    let rows = sqlx::query(
        "SELECT payment_id FROM dead_letters WHERE ledger_id = $1 AND decision_id = $2
         ORDER BY payment_id",
    )
    .bind(&context.ledger)
    .bind(decision_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let payments = rows
        .iter()
        .map(|row| get_uuid(row, TABLE, "payment_id"))
        .collect::<Result<Vec<_>, _>>()?;
    for payment_id in payments {
        sqlx::query(
            "UPDATE dead_letters SET status = $3, updated_position = $4
             WHERE ledger_id = $1 AND payment_id = $2",
        )
        .bind(&context.ledger)
        .bind(payment_id.to_string())
        .bind(status)
        .bind(context.position)
        .execute(&mut *conn)
        .await?;
        history(conn, context, payment_id, status, detail).await?;
    }
    Ok(())
}

async fn close_decision(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    decision_id: Uuid,
    status: &str,
    approver: Option<Uuid>,
) -> Result<String, ProjectionError> {
    let result = sqlx::query(
        "UPDATE dlq_decisions SET status = $3, approver_id = $4, decided_position = $5
         WHERE ledger_id = $1 AND decision_id = $2 AND status = 'pending'",
    )
    .bind(&context.ledger)
    .bind(decision_id.to_string())
    .bind(status)
    .bind(approver.map(|id| id.to_string()))
    .bind(context.position)
    .execute(&mut *conn)
    .await?;
    if result.rows_affected() != 1 {
        let reason = format!("DLQ decision {decision_id} is not pending");
        return Err(context.inconsistent(reason));
    }
    let action: String = sqlx::query_scalar(
        "SELECT action FROM dlq_decisions WHERE ledger_id = $1 AND decision_id = $2",
    )
    .bind(&context.ledger)
    .bind(decision_id.to_string())
    .fetch_one(&mut *conn)
    .await?;
    Ok(action)
}

async fn approved(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &DlqDecisionApproved,
) -> Result<(), ProjectionError> {
    let approver = e.auth.operator_id;
    let action = close_decision(conn, context, e.decision_id, "approved", Some(approver)).await?;
    let (status, detail) = if action == "retry" {
        ("retrying", format!("retry approved by {approver}"))
    } else {
        ("ignored", format!("ignore approved by {approver}"))
    };
    decide_payments(conn, context, e.decision_id, status, &detail).await
}

async fn rejected(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &DlqDecisionRejected,
) -> Result<(), ProjectionError> {
    close_decision(conn, context, e.decision_id, "rejected", None).await?;
    let detail = format!("decision {} rejected: {}", e.decision_id, e.reason);
    decide_payments(conn, context, e.decision_id, "parked", &detail).await?;
    sqlx::query(
        "UPDATE dead_letters SET decision_id = NULL WHERE ledger_id = $1 AND decision_id = $2",
    )
    .bind(&context.ledger)
    .bind(e.decision_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn released(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &DlqRetryReleased,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE dlq_decisions SET released_count = released_count + 1
         WHERE ledger_id = $1 AND decision_id = $2",
    )
    .bind(&context.ledger)
    .bind(e.decision_id.to_string())
    .execute(&mut *conn)
    .await?;
    let detail = format!("released to the dispatcher in batch {}", e.batch);
    step_if(conn, context, e.payment_id, "retrying", "retrying", &detail).await
}

async fn set_paused(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    decision_id: Uuid,
    paused: i32,
) -> Result<(), ProjectionError> {
    sqlx::query("UPDATE dlq_decisions SET paused = $3 WHERE ledger_id = $1 AND decision_id = $2")
        .bind(&context.ledger)
        .bind(decision_id.to_string())
        .bind(paused)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl ReadModels {
    /// Lists the open parked payments (not yet resolved or ignored), oldest first.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn dead_letters(
        &self,
        ledger_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<DeadLetter>, ProjectionError> {
        let query = DeadLetterQuery {
            page: *page,
            ..DeadLetterQuery::default()
        };
        self.dead_letters_matching(ledger_id, &query).await
    }

    /// Lists parked payments that match `query`, oldest first.
    ///
    /// # Errors
    /// [`ProjectionError::InvalidQuery`] for an unknown status,
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn dead_letters_matching(
        &self,
        ledger_id: Uuid,
        query: &DeadLetterQuery,
    ) -> Result<Page<DeadLetter>, ProjectionError> {
        let statuses = checked_statuses(&query.statuses)?;
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;
        let filter = FilterSql::new(query, &statuses);
        let sql = format!(
            "SELECT * FROM dead_letters WHERE {} ORDER BY parked_position LIMIT ${}",
            filter.condition, filter.next_placeholder
        );
        let statement = filter.bind(sqlx::query(&sql), ledger_id, query.page.after_bound());
        let rows = statement
            .bind(query.page.fetch_limit())
            .fetch_all(&mut *tx)
            .await?;
        let items = rows
            .iter()
            .map(dead_letter_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let items = items.into_iter().map(|d| (d.parked_position, d)).collect();
        Ok(into_page(&query.page, items, checkpoint.as_ref()))
    }

    /// Counts parked payments that match `query`, ignoring its page.
    ///
    /// # Errors
    /// As [`ReadModels::dead_letters_matching`].
    pub async fn count_dead_letters_matching(
        &self,
        ledger_id: Uuid,
        query: &DeadLetterQuery,
    ) -> Result<u64, ProjectionError> {
        let statuses = checked_statuses(&query.statuses)?;
        let filter = FilterSql::new(query, &statuses);
        let sql = format!(
            "SELECT COUNT(*) AS matching FROM dead_letters WHERE {}",
            filter.condition
        );
        let mut conn = self.pool.acquire().await?;
        let row = filter
            .bind(sqlx::query(&sql), ledger_id, -1)
            .fetch_one(&mut *conn)
            .await?;
        get_u64(&row, TABLE, "matching")
    }

    /// Returns one parked payment with its history, or `None` if it was never parked.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn dead_letter(
        &self,
        ledger_id: Uuid,
        payment_id: Uuid,
    ) -> Result<Option<AsOf<DeadLetterDetail>>, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;
        let row =
            sqlx::query("SELECT * FROM dead_letters WHERE ledger_id = $1 AND payment_id = $2")
                .bind(ledger_id.to_string())
                .bind(payment_id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let item = dead_letter_from_row(&row)?;
        let rows = sqlx::query(
            "SELECT position, status, at_micros, actor_id, detail FROM dead_letter_history
             WHERE ledger_id = $1 AND payment_id = $2 ORDER BY position",
        )
        .bind(ledger_id.to_string())
        .bind(payment_id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let history = rows
            .iter()
            .map(step_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(AsOf {
            item: DeadLetterDetail { item, history },
            as_of_position: checkpoint.map(|c| c.position),
            as_of_hash: checkpoint.map(|c| hex::encode(c.head_hash)),
        }))
    }

    /// Counts open parked payments and measures the oldest one's age at `now_micros`.
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
        let sql = format!(
            "SELECT COUNT(*) AS parked, MIN(parked_at_micros) AS oldest
             FROM dead_letters WHERE ledger_id = $1 AND status IN ({})",
            status_list(&OPEN_STATUSES)
        );
        let row = sqlx::query(&sql)
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

/// The `WHERE` condition of a dead-letter query: the ledger (`$1`), the cursor (`$2`),
/// the statuses inlined (known names only) and numbered placeholders for the optional
/// filters.
struct FilterSql {
    condition: String,
    texts: Vec<String>,
    ints: Vec<i64>,
    /// Number of the next free placeholder.
    next_placeholder: usize,
}

impl FilterSql {
    fn new(query: &DeadLetterQuery, statuses: &str) -> Self {
        let mut condition =
            format!("ledger_id = $1 AND parked_position > $2 AND status IN ({statuses})");
        let mut texts = Vec::new();
        if let Some(kind) = &query.last_error_kind {
            texts.push(kind.clone());
            condition.push_str(&format!(" AND last_error_kind = ${}", 2 + texts.len()));
        }
        let mut ints = Vec::new();
        for (column, value) in [
            ("parked_at_micros >=", query.parked_from_micros),
            ("parked_at_micros <", query.parked_to_micros),
        ] {
            if let Some(value) = value {
                ints.push(value);
                let number = 2 + texts.len() + ints.len();
                condition.push_str(&format!(" AND {column} ${number}"));
            }
        }
        let next_placeholder = 3 + texts.len() + ints.len();
        FilterSql {
            condition,
            texts,
            ints,
            next_placeholder,
        }
    }

    fn bind<'q>(
        &self,
        statement: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        ledger_id: Uuid,
        after: i64,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        let mut statement = statement.bind(ledger_id.to_string()).bind(after);
        for text in &self.texts {
            statement = statement.bind(text.clone());
        }
        for int in &self.ints {
            statement = statement.bind(*int);
        }
        statement
    }
}

/// Checks requested statuses against [`ALL_STATUSES`] and returns them as an SQL list;
/// none means the open ones.
fn checked_statuses(statuses: &[String]) -> Result<String, ProjectionError> {
    if statuses.is_empty() {
        return Ok(status_list(&OPEN_STATUSES));
    }
    let mut known = Vec::new();
    for status in statuses {
        let found = ALL_STATUSES.iter().find(|name| **name == status.as_str());
        let Some(name) = found else {
            return Err(ProjectionError::InvalidQuery {
                name: "status",
                reason: format!(
                    "unknown status {status:?}; use one of {}",
                    ALL_STATUSES.join(", ")
                ),
            });
        };
        known.push(*name);
    }
    Ok(status_list(&known))
}

fn status_list(statuses: &[&str]) -> String {
    let quoted: Vec<String> = statuses.iter().map(|s| format!("'{s}'")).collect();
    quoted.join(", ")
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
        status: row.try_get("status")?,
        decision_id: get_opt_uuid(row, TABLE, "decision_id")?,
    })
}

fn step_from_row(row: &AnyRow) -> Result<DeadLetterStep, ProjectionError> {
    let at_micros: i64 = row.try_get("at_micros")?;
    Ok(DeadLetterStep {
        position: get_u64(row, "dead_letter_history", "position")?,
        status: row.try_get("status")?,
        at: format_micros(at_micros),
        actor_id: row.try_get("actor_id")?,
        detail: row.try_get("detail")?,
    })
}
