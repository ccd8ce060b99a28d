//! Anomaly rules: each submitted payment is scored against the ledger's history, and
//! every rule that fires gives a finding with its numbers and a plain-language
//! explanation. A payment with any finding is held for review.
//!
//! Scoring is a pure function of the [`History`] (rebuilt from events), the payment,
//! the evaluation time and the [`AnomalyRules`], so replaying the ledger up to the
//! position a flag names and scoring at the time it names gives the same findings.

mod history;
mod rules;
mod similarity;
mod text;

pub use history::{AccountChange, History, PastPayment, PayeeRecord, PAYMENTS_PER_PAYEE};
pub use similarity::{levenshtein, similarity_permille};
pub use text::{format_duration, format_money};

use chrono_tz::Tz;
use uuid::Uuid;

use crate::anomaly_events::AnomalyFinding;

/// Rule id: the amount is far above the payee's median.
pub const RULE_AMOUNT_ABOVE_USUAL: &str = "amount_above_usual";
/// Rule id: first payment to a payee added recently.
pub const RULE_NEW_PAYEE: &str = "first_payment_to_new_payee";
/// Rule id: the payee's bank account changed shortly before.
pub const RULE_ACCOUNT_CHANGED: &str = "payee_account_changed_recently";
/// Rule id: submitted at an unusual hour in the tenant's time zone.
pub const RULE_UNUSUAL_HOUR: &str = "unusual_hour";
/// Rule id: many payments to one payee in a short window.
pub const RULE_BURST: &str = "many_payments_to_payee";
/// Rule id: the payee's name looks like another payee's.
pub const RULE_LOOKALIKE_NAME: &str = "payee_name_lookalike";

/// Every rule id, in the order findings are listed.
pub const RULES: [&str; 6] = [
    RULE_AMOUNT_ABOVE_USUAL,
    RULE_NEW_PAYEE,
    RULE_ACCOUNT_CHANGED,
    RULE_UNUSUAL_HOUR,
    RULE_BURST,
    RULE_LOOKALIKE_NAME,
];

/// Thresholds of the rules (the `[anomalies]` configuration section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyRules {
    /// The tenant's IANA time zone, for the hour rule.
    pub time_zone: Tz,
    /// The amount rule fires at or above this ratio to the median, in percent (500 = 5 times).
    pub amount_ratio_percent: u64,
    /// Past payments in the same currency the amount rule needs before it judges.
    pub amount_min_payments: u32,
    /// A payee added less than this many seconds ago is new.
    pub new_payee_seconds: i64,
    /// An account change less than this many seconds ago is recent.
    pub account_change_seconds: i64,
    /// First local hour (0 to 23) of the quiet hours.
    pub quiet_start_hour: u32,
    /// Local hour (0 to 23) at which the quiet hours end; equal to the start turns the
    /// hour rule off.
    pub quiet_end_hour: u32,
    /// The burst rule fires when this payment makes this many or more to one payee
    /// within the window.
    pub burst_count: u32,
    /// Length of the burst window, in seconds.
    pub burst_window_seconds: i64,
    /// The name rule fires at or above this similarity, in thousandths.
    pub lookalike_permille: u32,
}

impl Default for AnomalyRules {
    fn default() -> Self {
        AnomalyRules {
            time_zone: chrono_tz::Australia::Sydney,
            amount_ratio_percent: 500,
            amount_min_payments: 3,
            new_payee_seconds: 7 * 86_400,
            account_change_seconds: 3 * 86_400,
            quiet_start_hour: 22,
            quiet_end_hour: 6,
            burst_count: 5,
            burst_window_seconds: 3_600,
            lookalike_permille: 850,
        }
    }
}

/// The payment being scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Payment id.
    pub payment_id: Uuid,
    /// Payee id.
    pub payee_id: Uuid,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// ISO 4217 currency code.
    pub currency: &'a str,
    /// Time of the evaluation, microseconds since the Unix epoch.
    pub at_micros: i64,
}

/// Scores a payment: the findings of every rule that fires, in [`RULES`] order.
///
/// An empty result means the payment is not held.
pub fn score(
    history: &History,
    candidate: &Candidate<'_>,
    rules: &AnomalyRules,
) -> Vec<AnomalyFinding> {
    let payee = history.payee(candidate.payee_id);
    let findings = [
        payee.and_then(|_| rules::amount_above_usual(history, candidate, rules)),
        payee.and_then(|p| rules::first_payment_to_new_payee(history, p, candidate, rules)),
        payee.and_then(|p| rules::account_changed(p, candidate, rules)),
        rules::unusual_hour(candidate, rules),
        payee.and_then(|_| rules::burst(history, candidate, rules)),
        payee.and_then(|p| rules::lookalike_name(history, p, rules)),
    ];
    findings.into_iter().flatten().collect()
}

/// Parses an IANA time zone name, such as `Australia/Sydney`.
///
/// # Errors
/// A message naming the value and the expected form.
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!(
            "time zone {name:?} is not an IANA zone name; use one such as \
             \"Australia/Sydney\" or \"UTC\""
        )
    })
}

#[cfg(test)]
mod tests;
