//! Event payloads of anomaly review: a payment held with the findings that flagged it,
//! and the reviewer's decision.
//!
//! Both go to the payment's own stream. The flag is appended with `payment.submitted`
//! in the same append, so no reader ever sees the submission without it. The decision's
//! causation id is the flag's event id, and its payload names that id too, so an auditor
//! can pair every decision with the exact explanations the reviewer was shown.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::EventPayload;
use crate::operator_events::AuthContext;

/// One number behind a finding, such as `median_minor = 10000`.
///
/// Values are integers: money in minor units, ratios in hundredths, similarity in
/// thousandths, durations in seconds, so the payload stays exact and deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measure {
    /// Name of the number, snake_case with its unit as a suffix where it has one.
    pub name: String,
    /// The value.
    pub value: i64,
}

/// One anomaly rule that fired, with its numbers and a plain-language explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyFinding {
    /// Stable rule id, such as `amount_above_usual` (see `docs/anomalies.md`).
    pub rule: String,
    /// The numbers the rule compared.
    pub measures: Vec<Measure>,
    /// The explanation shown to the reviewer, quoting the numbers.
    pub explanation: String,
    /// Another payee the finding is about, such as the payee a name looks like.
    pub related_payee_id: Option<Uuid>,
}

impl AnomalyFinding {
    /// Returns the value of a measure by name.
    pub fn measure(&self, name: &str) -> Option<i64> {
        self.measures
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

/// A submitted payment was held for review because anomaly rules fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFlagged {
    /// Payment held.
    pub payment_id: Uuid,
    /// Payee of the payment.
    pub payee_id: Uuid,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// The rules that fired, in rule order.
    pub findings: Vec<AnomalyFinding>,
    /// Last ledger position of the history the rules read; replaying the ledger up to
    /// it and scoring at `evaluated_at_micros` gives the same findings.
    pub history_position: u64,
    /// Time the rules were evaluated, microseconds since the Unix epoch.
    pub evaluated_at_micros: i64,
    /// IANA time zone the hour rule used, such as `Australia/Sydney`.
    pub time_zone: String,
}

/// What a reviewer decided about a held payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReviewDecision {
    /// The payment may be dispatched.
    Release,
    /// The payment is never dispatched (final).
    Reject,
}

impl ReviewDecision {
    /// Wire name: `release` or `reject`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Reject => "reject",
        }
    }
}

/// A reviewer released or rejected a held payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReviewed {
    /// Payment reviewed.
    pub payment_id: Uuid,
    /// Event id of the `payment.flagged` event decided on (also the causation id).
    pub flag_event_id: Uuid,
    /// The decision.
    pub decision: ReviewDecision,
    /// The reviewer's reason, as typed.
    pub reason: String,
    /// Reviewer, with step-up.
    pub auth: AuthContext,
}

impl EventPayload for PaymentFlagged {
    const EVENT_TYPE: &'static str = "payment.flagged";
    const SCHEMA_VERSION: u16 = 1;
}

impl EventPayload for PaymentReviewed {
    const EVENT_TYPE: &'static str = "payment.reviewed";
    const SCHEMA_VERSION: u16 = 1;
}
