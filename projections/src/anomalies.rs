//! The anomaly review queue: payments held by the anomaly rules, with the findings the
//! reviewer is shown and, once decided, the decision.

use std::fmt;
use std::str::FromStr;

use domain::anomaly_events::{AnomalyFinding, PaymentFlagged, PaymentReviewed, ReviewDecision};
use domain::events::DomainEvent;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::Row;
use uuid::Uuid;

use crate::apply::EventContext;
use crate::page::{into_page, Page, PageRequest};
use crate::read_models::load_checkpoint;
use crate::row::{get_u64, get_uuid, to_db};
use crate::timestamp::format_micros;
use crate::{ProjectionError, ReadModels};

const TABLE: &str = "anomalies";

/// Where a held payment stands in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewStatus {
    /// Waiting for a reviewer.
    Pending,
    /// Released for dispatch.
    Released,
    /// Rejected; never dispatched.
    Rejected,
}

impl ReviewStatus {
    /// Every status.
    pub const ALL: [ReviewStatus; 3] = [Self::Pending, Self::Released, Self::Rejected];

    /// Stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Released => "released",
            Self::Rejected => "rejected",
        }
    }
}

impl fmt::Display for ReviewStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReviewStatus {
    type Err = ProjectionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
                ProjectionError::InvalidQuery {
                    name: "status",
                    reason: format!("{text:?} is not one of {}", names.join(", ")),
                }
            })
    }
}

/// A held payment in the review queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// Payment id.
    pub payment_id: Uuid,
    /// Event id of the `payment.flagged` event; a decision is linked to it.
    pub flag_event_id: Uuid,
    /// Position of the flag; the cursor of the list.
    pub flag_position: u64,
    /// Time of the flag (RFC 3339, UTC).
    pub flagged_at: String,
    /// Time of the flag, in microseconds since the Unix epoch.
    pub flagged_at_micros: i64,
    /// Payee id.
    pub payee_id: Uuid,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Rule ids that fired, in rule order.
    pub rules: Vec<String>,
    /// The findings: rule, explanation, measures and related payee.
    pub findings: Value,
    /// Review status.
    pub status: ReviewStatus,
    /// Operator who decided.
    pub decided_by: Option<Uuid>,
    /// Time of the decision (RFC 3339, UTC).
    pub decided_at: Option<String>,
    /// The reviewer's reason.
    pub decision_reason: Option<String>,
    /// Event id of the decision.
    pub decision_event_id: Option<Uuid>,
}

/// Filters of the review queue; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnomalyFilter {
    /// Only this review status.
    pub status: Option<ReviewStatus>,
    /// Only payments one of whose findings has this rule id.
    pub rule: Option<String>,
    /// Only payments to this payee.
    pub payee_id: Option<Uuid>,
}

/// Returns the JSON form of a finding, as the queue and the API show it.
pub fn finding_json(finding: &AnomalyFinding) -> Value {
    let measures: serde_json::Map<String, Value> = (finding.measures.iter())
        .map(|m| (m.name.clone(), Value::from(m.value)))
        .collect();
    json!({
        "rule": finding.rule,
        "explanation": finding.explanation,
        "measures": measures,
        "related_payee_id": finding.related_payee_id,
    })
}

/// Adds a flagged payment to the queue and records review decisions.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    event: &DomainEvent,
) -> Result<(), ProjectionError> {
    match event {
        DomainEvent::PaymentFlagged(e) => flagged(conn, context, e).await,
        DomainEvent::PaymentReviewed(e) => reviewed(conn, context, e).await,
        _ => Ok(()),
    }
}

async fn flagged(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &PaymentFlagged,
) -> Result<(), ProjectionError> {
    // Commas around each id let one `LIKE '%,rule,%'` match a whole rule id.
    let rules: Vec<&str> = e.findings.iter().map(|f| f.rule.as_str()).collect();
    let rules = format!(",{},", rules.join(","));
    let findings: Vec<Value> = e.findings.iter().map(finding_json).collect();
    let findings = Value::from(findings).to_string();
    sqlx::query(
        "INSERT INTO anomalies (ledger_id, payment_id, flag_event_id, flag_position,
            flagged_at_micros, payee_id, amount_minor, currency, rules, findings, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&context.ledger)
    .bind(e.payment_id.to_string())
    .bind(context.event.event_id.to_string())
    .bind(context.position)
    .bind(context.at_micros)
    .bind(e.payee_id.to_string())
    .bind(to_db("amount_minor", e.amount_minor)?)
    .bind(&e.currency)
    .bind(rules)
    .bind(findings)
    .bind(ReviewStatus::Pending.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn reviewed(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    e: &PaymentReviewed,
) -> Result<(), ProjectionError> {
    let status = match e.decision {
        ReviewDecision::Release => ReviewStatus::Released,
        ReviewDecision::Reject => ReviewStatus::Rejected,
    };
    let result = sqlx::query(
        "UPDATE anomalies SET status = $4, decided_by = $5, decided_at_micros = $6,
            decision_reason = $7, decision_position = $8, decision_event_id = $9
         WHERE ledger_id = $1 AND payment_id = $2 AND flag_event_id = $3 AND status = $10",
    )
    .bind(&context.ledger)
    .bind(e.payment_id.to_string())
    .bind(e.flag_event_id.to_string())
    .bind(status.as_str())
    .bind(e.auth.operator_id.to_string())
    .bind(context.at_micros)
    .bind(&e.reason)
    .bind(context.position)
    .bind(context.event.event_id.to_string())
    .bind(ReviewStatus::Pending.as_str())
    .execute(&mut *conn)
    .await?;
    if result.rows_affected() != 1 {
        return Err(context.inconsistent(format!(
            "review of payment {} names flag {}, which is not pending",
            e.payment_id, e.flag_event_id
        )));
    }
    Ok(())
}

impl ReadModels {
    /// Lists held payments in flag order, filtered.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn anomalies(
        &self,
        ledger_id: Uuid,
        filter: &AnomalyFilter,
        page: &PageRequest,
    ) -> Result<Page<Anomaly>, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;
        let mut sql =
            String::from("SELECT * FROM anomalies WHERE ledger_id = $1 AND flag_position > $2");
        let mut binds: Vec<String> = Vec::new();
        let mut condition = |sql: &mut String, clause: &str, value: String| {
            binds.push(value);
            sql.push_str(&format!(" AND {clause} ${}", binds.len() + 3));
        };
        if let Some(status) = filter.status {
            condition(&mut sql, "status =", status.as_str().to_owned());
        }
        if let Some(rule) = &filter.rule {
            condition(&mut sql, "rules LIKE", format!("%,{rule},%"));
        }
        if let Some(payee_id) = filter.payee_id {
            condition(&mut sql, "payee_id =", payee_id.to_string());
        }
        sql.push_str(" ORDER BY flag_position LIMIT $3");
        let mut query = sqlx::query(&sql)
            .bind(ledger_id.to_string())
            .bind(page.after_bound())
            .bind(page.fetch_limit());
        for value in binds {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&mut *tx).await?;
        let items = rows
            .iter()
            .map(anomaly_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let items = items.into_iter().map(|a| (a.flag_position, a)).collect();
        Ok(into_page(page, items, checkpoint.as_ref()))
    }
}

fn anomaly_from_row(row: &AnyRow) -> Result<Anomaly, ProjectionError> {
    let corrupt = |column: &'static str, reason: String| ProjectionError::CorruptRow {
        table: TABLE,
        reason: format!("column {column}: {reason}"),
    };
    let flagged_at_micros: i64 = row.try_get("flagged_at_micros")?;
    let decided_at_micros: Option<i64> = row.try_get("decided_at_micros")?;
    let rules: String = row.try_get("rules")?;
    let findings: String = row.try_get("findings")?;
    let findings =
        serde_json::from_str(&findings).map_err(|e| corrupt("findings", e.to_string()))?;
    let status: String = row.try_get("status")?;
    let status = status
        .parse::<ReviewStatus>()
        .map_err(|e| corrupt("status", e.to_string()))?;
    let optional_uuid = |column: &'static str| -> Result<Option<Uuid>, ProjectionError> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(column, e.to_string())))
            .transpose()
    };
    Ok(Anomaly {
        payment_id: get_uuid(row, TABLE, "payment_id")?,
        flag_event_id: get_uuid(row, TABLE, "flag_event_id")?,
        flag_position: get_u64(row, TABLE, "flag_position")?,
        flagged_at: format_micros(flagged_at_micros),
        flagged_at_micros,
        payee_id: get_uuid(row, TABLE, "payee_id")?,
        amount_minor: get_u64(row, TABLE, "amount_minor")?,
        currency: row.try_get("currency")?,
        rules: (rules.split(',').filter(|r| !r.is_empty()))
            .map(str::to_owned)
            .collect(),
        findings,
        status,
        decided_by: optional_uuid("decided_by")?,
        decided_at: decided_at_micros.map(format_micros),
        decision_reason: row.try_get("decision_reason")?,
        decision_event_id: optional_uuid("decision_event_id")?,
    })
}
