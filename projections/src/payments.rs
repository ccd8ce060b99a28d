//! Payments: one row per payment with its current status, and its status history.

use std::fmt;
use std::str::FromStr;

use domain::anomaly_events::ReviewDecision;
use domain::events::{
    DispatchFailed, DomainEvent, PaymentDeadLettered, PaymentRejected, PaymentSource,
    PaymentSubmitted, ReceiptRecorded,
};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::Row;
use uuid::Uuid;

use crate::apply::EventContext;
use crate::page::{into_page, AsOf, Page, PageRequest};
use crate::read_models::load_checkpoint;
use crate::row::{get_opt_u64, get_opt_uuid, get_u64, get_uuid, to_db};
use crate::summary::{describe_source, mask_account};
use crate::timestamp::format_micros;
use crate::{ProjectionError, ReadModels};

const TABLE: &str = "payments";

/// Status of a payment as the read model shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Accepted, not yet sent to the bank.
    Submitted,
    /// A bank call is under way, or the last one failed with no retry to follow yet.
    Dispatching,
    /// The bank accepted the payment (final).
    Receipted,
    /// A bank call failed and another attempt is scheduled.
    FailedRetrying,
    /// Every attempt failed; the payment waits in the dead-letter queue.
    DeadLettered,
    /// The request broke a business rule (final).
    Rejected,
    /// Flagged by the anomaly rules; waits for a reviewer before dispatch.
    HeldForReview,
    /// A reviewer rejected the held payment (final); it never reaches the bank.
    ReviewRejected,
}

impl PaymentStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [PaymentStatus; 8] = [
        PaymentStatus::Submitted,
        PaymentStatus::Dispatching,
        PaymentStatus::Receipted,
        PaymentStatus::FailedRetrying,
        PaymentStatus::DeadLettered,
        PaymentStatus::Rejected,
        PaymentStatus::HeldForReview,
        PaymentStatus::ReviewRejected,
    ];

    /// Returns the stored and serialized name, such as `failed_retrying`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Submitted => "submitted",
            PaymentStatus::Dispatching => "dispatching",
            PaymentStatus::Receipted => "receipted",
            PaymentStatus::FailedRetrying => "failed_retrying",
            PaymentStatus::DeadLettered => "dead_lettered",
            PaymentStatus::Rejected => "rejected",
            PaymentStatus::HeldForReview => "held_for_review",
            PaymentStatus::ReviewRejected => "review_rejected",
        }
    }

    /// Returns whether no later event may change the payment.
    fn is_final(self) -> bool {
        matches!(
            self,
            PaymentStatus::Receipted | PaymentStatus::Rejected | PaymentStatus::ReviewRejected
        )
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = ProjectionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        PaymentStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<_> = PaymentStatus::ALL.iter().map(|s| s.as_str()).collect();
                ProjectionError::InvalidQuery {
                    name: "status",
                    reason: format!("{text:?} is not one of {}", names.join(", ")),
                }
            })
    }
}

/// A payment's current state.
///
/// The submission fields are `None` only for a payment rejected before submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentView {
    /// Payment id.
    pub payment_id: Uuid,
    /// Current status.
    pub status: PaymentStatus,
    /// Amount in minor units.
    pub amount_minor: Option<u64>,
    /// ISO 4217 currency code.
    pub currency: Option<String>,
    /// Payee id.
    pub payee_id: Option<Uuid>,
    /// Payee name sent to the bank.
    pub payee_name: Option<String>,
    /// Payee account with the account number masked.
    pub account_masked: Option<String>,
    /// Reference shown to the payee.
    pub reference: Option<String>,
    /// The bank's reference, once receipted.
    pub bank_reference: Option<String>,
    /// Dispatch attempts so far.
    pub attempts: u32,
    /// Origin: `api` or `aba_file`.
    pub source: Option<String>,
    /// ABA batch id, for a payment from an ABA file.
    pub batch_id: Option<Uuid>,
    /// 1-based detail-record line in the ABA file.
    pub batch_line: Option<u32>,
    /// Last failure class, or the rejection code.
    pub last_error_kind: Option<String>,
    /// Last failure detail, or the rejection reason.
    pub last_error: Option<String>,
    /// Submission time (RFC 3339, UTC).
    pub submitted_at: Option<String>,
    /// Submission time in microseconds since the Unix epoch.
    pub submitted_at_micros: Option<i64>,
    /// Time of the last change (RFC 3339, UTC).
    pub updated_at: String,
    /// Time of the last change in microseconds since the Unix epoch.
    pub updated_at_micros: i64,
    /// Position of the payment's first event; the cursor of payment lists.
    pub first_position: u64,
    /// Position of the payment's last event.
    pub updated_position: u64,
}

/// One status change of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusChange {
    /// Position of the event.
    pub position: u64,
    /// Status after the event.
    pub status: PaymentStatus,
    /// Time of the event (RFC 3339, UTC).
    pub at: String,
    /// Time of the event in microseconds since the Unix epoch.
    pub at_micros: i64,
    /// What happened.
    pub detail: String,
}

/// A payment with its full status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentDetail {
    /// Current state.
    #[serde(flatten)]
    pub payment: PaymentView,
    /// Status changes in position order.
    pub history: Vec<StatusChange>,
}

/// A change to apply to an existing payment row.
struct Transition {
    payment_id: Uuid,
    status: PaymentStatus,
    attempts: u32,
    bank_reference: Option<String>,
    error: Option<(String, String)>,
    detail: String,
}

/// Applies a payment event; other events leave the model unchanged.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    event: &DomainEvent,
) -> Result<(), ProjectionError> {
    match event {
        DomainEvent::PaymentSubmitted(e) => submitted(conn, context, e).await,
        DomainEvent::SubjectErased(e) => erased(conn, context, e).await,
        DomainEvent::PaymentRejected(e) => rejected(conn, context, e).await,
        DomainEvent::DispatchAttempted(e) => {
            let change = Transition {
                payment_id: e.payment_id,
                status: PaymentStatus::Dispatching,
                attempts: e.attempt,
                bank_reference: None,
                error: None,
                detail: format!("dispatch attempt {}", e.attempt),
            };
            transition(conn, context, change).await
        }
        DomainEvent::DispatchFailed(e) => dispatch_failed(conn, context, e).await,
        DomainEvent::ReceiptRecorded(e) => transition(conn, context, receipt(e)).await,
        DomainEvent::PaymentDeadLettered(e) => transition(conn, context, dead_lettered(e)).await,
        DomainEvent::PaymentFlagged(e) => {
            let rules: Vec<&str> = e.findings.iter().map(|f| f.rule.as_str()).collect();
            let detail = format!("held for review: {}", rules.join(", "));
            let status = PaymentStatus::HeldForReview;
            review_transition(conn, context, e.payment_id, status, detail).await
        }
        DomainEvent::PaymentReviewed(e) => {
            let (status, verb) = match e.decision {
                ReviewDecision::Release => (PaymentStatus::Submitted, "released"),
                ReviewDecision::Reject => (PaymentStatus::ReviewRejected, "rejected in review"),
            };
            let detail = format!("{verb} by operator {}: {}", e.auth.operator_id, e.reason);
            review_transition(conn, context, e.payment_id, status, detail).await
        }
        _ => Ok(()),
    }
}

/// Moves a payment into or out of review, keeping its attempt count.
async fn review_transition(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    payment_id: Uuid,
    status: PaymentStatus,
    detail: String,
) -> Result<(), ProjectionError> {
    let attempts = match load_state(conn, context, payment_id).await? {
        Some((_, attempts)) => attempts,
        None => return Err(context.inconsistent(format!("payment {payment_id} not found"))),
    };
    let change = Transition {
        payment_id,
        status,
        attempts,
        bank_reference: None,
        error: None,
        detail,
    };
    transition(conn, context, change).await
}

async fn submitted(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &PaymentSubmitted,
) -> Result<(), ProjectionError> {
    if load_state(conn, context, e.payment_id).await?.is_some() {
        return Err(context.inconsistent(format!("payment {} submitted twice", e.payment_id)));
    }
    let (source, batch_id, line) = match &e.source {
        PaymentSource::Api => ("api", None, None),
        PaymentSource::AbaFile { batch_id, line } => (
            "aba_file",
            Some(batch_id.to_string()),
            Some(i64::from(*line)),
        ),
    };
    sqlx::query(
        "INSERT INTO payments (ledger_id, payment_id, first_position, status, amount_minor,
            currency, payee_id, payee_name, account_masked, reference, attempts, source,
            batch_id, batch_line, submitted_at_micros, updated_at_micros, updated_position)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13, $14, $14, $3)",
    )
    .bind(&context.ledger)
    .bind(e.payment_id.to_string())
    .bind(context.position)
    .bind(PaymentStatus::Submitted.as_str())
    .bind(to_db("amount_minor", e.amount_minor)?)
    .bind(&e.currency)
    .bind(e.payee_id.to_string())
    .bind(&e.payee_name)
    .bind(mask_account(&e.account))
    .bind(&e.reference)
    .bind(source)
    .bind(batch_id)
    .bind(line)
    .bind(context.at_micros)
    .execute(&mut *conn)
    .await?;

    let detail = format!("submitted from {}", describe_source(&e.source));
    let status = PaymentStatus::Submitted;
    record_history(conn, context, e.payment_id, status, &detail).await
}

async fn rejected(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &PaymentRejected,
) -> Result<(), ProjectionError> {
    let detail = format!("rejected: {} ({})", e.code, e.detail);
    match load_state(conn, context, e.payment_id).await? {
        Some((PaymentStatus::Submitted, attempts)) => {
            let change = Transition {
                payment_id: e.payment_id,
                status: PaymentStatus::Rejected,
                attempts,
                bank_reference: None,
                error: Some((e.code.clone(), e.detail.clone())),
                detail,
            };
            transition(conn, context, change).await
        }
        Some((status, _)) => {
            Err(context.inconsistent(format!("payment {} rejected while {status}", e.payment_id)))
        }
        None => {
            insert_rejected(conn, context, e).await?;
            let status = PaymentStatus::Rejected;
            record_history(conn, context, e.payment_id, status, &detail).await
        }
    }
}

/// Inserts a payment that was rejected before it was submitted.
async fn insert_rejected(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &PaymentRejected,
) -> Result<(), ProjectionError> {
    let amount = i64::try_from(e.amount_minor)
        .map_err(|_| context.inconsistent(format!("amount {} exceeds i64", e.amount_minor)))?;
    sqlx::query(
        "INSERT INTO payments (ledger_id, payment_id, first_position, status, attempts,
            last_error_kind, last_error, updated_at_micros, updated_position,
            payee_id, amount_minor, currency)
         VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $3, $8, $9, $10)",
    )
    .bind(&context.ledger)
    .bind(e.payment_id.to_string())
    .bind(context.position)
    .bind(PaymentStatus::Rejected.as_str())
    .bind(&e.code)
    .bind(&e.detail)
    .bind(context.at_micros)
    .bind(e.payee_id.to_string())
    .bind(amount)
    .bind(&e.currency)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn dispatch_failed(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &DispatchFailed,
) -> Result<(), ProjectionError> {
    // A failure with no retry keeps the current status: the dead-letter event that
    // follows it moves the payment on.
    let status = if e.will_retry {
        PaymentStatus::FailedRetrying
    } else {
        current_status(conn, context, e.payment_id).await?
    };
    let retry = match (e.will_retry, e.retry_in_ms) {
        (true, Some(ms)) => format!(", retry in {ms} ms"),
        (true, None) => ", will retry".to_owned(),
        (false, _) => ", no retry".to_owned(),
    };
    let change = Transition {
        payment_id: e.payment_id,
        status,
        attempts: e.attempt,
        bank_reference: None,
        error: Some((e.error_kind.clone(), e.detail.clone())),
        detail: format!(
            "attempt {} failed ({}): {}{retry}",
            e.attempt, e.error_kind, e.detail
        ),
    };
    transition(conn, context, change).await
}

fn receipt(e: &ReceiptRecorded) -> Transition {
    Transition {
        payment_id: e.payment_id,
        status: PaymentStatus::Receipted,
        attempts: e.attempt,
        bank_reference: Some(e.bank_reference.clone()),
        error: None,
        detail: format!(
            "receipted: bank reference {:?}, HTTP {}",
            e.bank_reference, e.response_status
        ),
    }
}

fn dead_lettered(e: &PaymentDeadLettered) -> Transition {
    Transition {
        payment_id: e.payment_id,
        status: PaymentStatus::DeadLettered,
        attempts: e.attempts,
        bank_reference: None,
        error: Some((e.last_error_kind.clone(), e.last_error.clone())),
        detail: format!(
            "dead-lettered after {} attempts ({})",
            e.attempts, e.last_error_kind
        ),
    }
}

async fn current_status(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    payment_id: Uuid,
) -> Result<PaymentStatus, ProjectionError> {
    match load_state(conn, context, payment_id).await? {
        Some((status, _)) => Ok(status),
        None => Err(context.inconsistent(format!("payment {payment_id} not found"))),
    }
}

/// Updates an existing payment that is not yet final and records the change in its history.
async fn transition(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    change: Transition,
) -> Result<(), ProjectionError> {
    let payment_id = change.payment_id;
    let current = current_status(conn, context, payment_id).await?;
    if current.is_final() {
        return Err(context.inconsistent(format!(
            "payment {payment_id} is {current}, but a {} event follows",
            context.event.event_type
        )));
    }
    let (error_kind, error) = change.error.unzip();
    sqlx::query(
        "UPDATE payments SET status = $3, attempts = $4,
            bank_reference = COALESCE($5, bank_reference),
            last_error_kind = COALESCE($6, last_error_kind),
            last_error = COALESCE($7, last_error),
            updated_at_micros = $8, updated_position = $9
         WHERE ledger_id = $1 AND payment_id = $2",
    )
    .bind(&context.ledger)
    .bind(payment_id.to_string())
    .bind(change.status.as_str())
    .bind(i64::from(change.attempts))
    .bind(change.bank_reference)
    .bind(error_kind)
    .bind(error)
    .bind(context.at_micros)
    .bind(context.position)
    .execute(&mut *conn)
    .await?;
    record_history(conn, context, payment_id, change.status, &change.detail).await
}

/// Loads a payment's status and attempt count, or `None` if the payment has no row.
async fn load_state(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    payment_id: Uuid,
) -> Result<Option<(PaymentStatus, u32)>, ProjectionError> {
    let row = sqlx::query(
        "SELECT status, attempts FROM payments WHERE ledger_id = $1 AND payment_id = $2",
    )
    .bind(&context.ledger)
    .bind(payment_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((
        get_status(&row, "status")?,
        get_u32(&row, "attempts")?,
    )))
}

async fn record_history(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    payment_id: Uuid,
    status: PaymentStatus,
    detail: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO payment_history (ledger_id, position, payment_id, status, at_micros, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&context.ledger)
    .bind(context.position)
    .bind(payment_id.to_string())
    .bind(status.as_str())
    .bind(context.at_micros)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl ReadModels {
    /// Returns a payment with its status history, or `None` if the read model has no row.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn payment(
        &self,
        ledger_id: Uuid,
        payment_id: Uuid,
    ) -> Result<Option<AsOf<PaymentDetail>>, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;
        let row = sqlx::query("SELECT * FROM payments WHERE ledger_id = $1 AND payment_id = $2")
            .bind(ledger_id.to_string())
            .bind(payment_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let payment = view_from_row(&row)?;

        let rows = sqlx::query(
            "SELECT position, status, at_micros, detail FROM payment_history
             WHERE ledger_id = $1 AND payment_id = $2 ORDER BY position",
        )
        .bind(ledger_id.to_string())
        .bind(payment_id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let history = rows
            .iter()
            .map(change_from_row)
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Some(AsOf {
            item: PaymentDetail { payment, history },
            as_of_position: checkpoint.map(|c| c.position),
            as_of_hash: checkpoint.map(|c| hex::encode(c.head_hash)),
        }))
    }

    /// Lists every payment, ordered by its first event's position.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn payments(
        &self,
        ledger_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<PaymentView>, ProjectionError> {
        let sql = "SELECT * FROM payments WHERE ledger_id = $1
                   AND first_position > $2 ORDER BY first_position LIMIT $3";
        self.list_payments(ledger_id, sql, None, page).await
    }

    /// Lists payments in a status, ordered by their first event's position.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn payments_by_status(
        &self,
        ledger_id: Uuid,
        status: PaymentStatus,
        page: &PageRequest,
    ) -> Result<Page<PaymentView>, ProjectionError> {
        let sql = "SELECT * FROM payments WHERE ledger_id = $1 AND status = $2
                   AND first_position > $3 ORDER BY first_position LIMIT $4";
        self.list_payments(ledger_id, sql, Some(status.as_str().to_owned()), page)
            .await
    }

    /// Lists the payments of an ABA batch, ordered by their first event's position.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn payments_by_batch(
        &self,
        ledger_id: Uuid,
        batch_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<PaymentView>, ProjectionError> {
        let sql = "SELECT * FROM payments WHERE ledger_id = $1 AND batch_id = $2
                   AND first_position > $3 ORDER BY first_position LIMIT $4";
        self.list_payments(ledger_id, sql, Some(batch_id.to_string()), page)
            .await
    }

    async fn list_payments(
        &self,
        ledger_id: Uuid,
        sql: &str,
        filter: Option<String>,
        page: &PageRequest,
    ) -> Result<Page<PaymentView>, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;
        let mut query = sqlx::query(sql).bind(ledger_id.to_string());
        if let Some(filter) = filter {
            query = query.bind(filter);
        }
        let rows = query
            .bind(page.after_bound())
            .bind(page.fetch_limit())
            .fetch_all(&mut *tx)
            .await?;
        let views = rows
            .iter()
            .map(view_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let views = views.into_iter().map(|v| (v.first_position, v)).collect();
        Ok(into_page(page, views, checkpoint.as_ref()))
    }
}

fn view_from_row(row: &AnyRow) -> Result<PaymentView, ProjectionError> {
    let submitted_at_micros: Option<i64> = row.try_get("submitted_at_micros")?;
    let updated_at_micros: i64 = row.try_get("updated_at_micros")?;
    let batch_line = get_opt_u64(row, TABLE, "batch_line")?
        .map(|line| u32::try_from(line).map_err(|_| corrupt(format!("batch_line {line}"))))
        .transpose()?;
    Ok(PaymentView {
        payment_id: get_uuid(row, TABLE, "payment_id")?,
        status: get_status(row, "status")?,
        amount_minor: get_opt_u64(row, TABLE, "amount_minor")?,
        currency: row.try_get("currency")?,
        payee_id: get_opt_uuid(row, TABLE, "payee_id")?,
        payee_name: row.try_get("payee_name")?,
        account_masked: row.try_get("account_masked")?,
        reference: row.try_get("reference")?,
        bank_reference: row.try_get("bank_reference")?,
        attempts: get_u32(row, "attempts")?,
        source: row.try_get("source")?,
        batch_id: get_opt_uuid(row, TABLE, "batch_id")?,
        batch_line,
        last_error_kind: row.try_get("last_error_kind")?,
        last_error: row.try_get("last_error")?,
        submitted_at: submitted_at_micros.map(format_micros),
        submitted_at_micros,
        updated_at: format_micros(updated_at_micros),
        updated_at_micros,
        first_position: get_u64(row, TABLE, "first_position")?,
        updated_position: get_u64(row, TABLE, "updated_position")?,
    })
}

fn change_from_row(row: &AnyRow) -> Result<StatusChange, ProjectionError> {
    let at_micros: i64 = row.try_get("at_micros")?;
    Ok(StatusChange {
        position: get_u64(row, "payment_history", "position")?,
        status: get_status(row, "status")?,
        at: format_micros(at_micros),
        at_micros,
        detail: row.try_get("detail")?,
    })
}

fn get_status(row: &AnyRow, column: &str) -> Result<PaymentStatus, ProjectionError> {
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|_| corrupt(format!("{column} {text:?} is not a payment status")))
}

fn get_u32(row: &AnyRow, column: &str) -> Result<u32, ProjectionError> {
    let value = get_u64(row, TABLE, column)?;
    u32::try_from(value).map_err(|_| corrupt(format!("{column} {value} exceeds u32")))
}

fn corrupt(reason: String) -> ProjectionError {
    ProjectionError::CorruptRow {
        table: TABLE,
        reason,
    }
}

/// Blanks the payee name and account of an erased payee's payments. Rows rebuilt later
/// get the same values, because the opener reads the destroyed keys' fields as `[erased]`.
async fn erased(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &domain::personal::SubjectErased,
) -> Result<(), ProjectionError> {
    let Some(payee_id) = e.subject.strip_prefix("payee:") else {
        return Ok(());
    };
    sqlx::query(
        "UPDATE payments SET payee_name = $3, account_masked = $3
         WHERE ledger_id = $1 AND payee_id = $2",
    )
    .bind(&context.ledger)
    .bind(payee_id)
    .bind(domain::personal::ERASED)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
