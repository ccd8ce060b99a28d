//! The rules, one function each. A rule returns its finding when it fires.

use chrono::{DateTime, Offset, Timelike};

use super::history::{History, PayeeRecord};
use super::text::{format_duration, format_money};
use super::{AnomalyRules, Candidate};
use crate::anomaly_events::{AnomalyFinding, Measure};
use crate::events::PayeeAccount;

const MICROS_PER_SECOND: i64 = 1_000_000;

fn finding(rule: &str, measures: &[(&str, i64)], explanation: String) -> AnomalyFinding {
    AnomalyFinding {
        rule: rule.to_owned(),
        measures: (measures.iter())
            .map(|(name, value)| Measure {
                name: (*name).to_owned(),
                value: *value,
            })
            .collect(),
        explanation,
        related_payee_id: None,
    }
}

/// Saturates an unsigned amount into a measure; amounts are far below `i64::MAX`.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn seconds_between(earlier_micros: i64, later_micros: i64) -> i64 {
    later_micros.saturating_sub(earlier_micros) / MICROS_PER_SECOND
}

/// Writes a ratio in hundredths as a decimal, such as `12.50`.
fn hundredths(value: u64) -> String {
    format!("{}.{:02}", value / 100, value % 100)
}

/// Returns the median of the amounts, rounding the mean of the two middle values down
/// for an even count; `None` for no amounts.
pub(super) fn median(amounts: &mut [u64]) -> Option<u64> {
    if amounts.is_empty() {
        return None;
    }
    amounts.sort_unstable();
    let middle = amounts.len() / 2;
    if !amounts.len().is_multiple_of(2) {
        return Some(amounts[middle]);
    }
    let sum = u128::from(amounts[middle - 1]) + u128::from(amounts[middle]);
    // The mean of two u64 values fits a u64.
    Some(u64::try_from(sum / 2).unwrap_or(u64::MAX))
}

/// Flags an amount far above this payee's usual: the ratio of the amount to the median of the
/// payee's past payments in the same currency (those rejected in review left out).
pub(super) fn amount_above_usual(
    history: &History,
    candidate: &Candidate<'_>,
    rules: &AnomalyRules,
) -> Option<AnomalyFinding> {
    let mut amounts: Vec<u64> = (history.payments_of(candidate.payee_id))
        .filter(|p| p.currency == candidate.currency && !p.rejected_in_review)
        .map(|p| p.amount_minor)
        .collect();
    let count = amounts.len();
    if count < usize::try_from(rules.amount_min_payments).unwrap_or(usize::MAX) {
        return None;
    }
    let median = median(&mut amounts)?;
    if median == 0 {
        return None;
    }
    let ratio = u128::from(candidate.amount_minor) * 100 / u128::from(median);
    let ratio = u64::try_from(ratio).unwrap_or(u64::MAX);
    if ratio < rules.amount_ratio_percent {
        return None;
    }

    let currency = candidate.currency;
    let explanation = format!(
        "{} is {} times this payee's median payment of {} over its last {count} payments \
         in {currency} (the rule fires at {} times)",
        format_money(candidate.amount_minor, currency),
        hundredths(ratio),
        format_money(median, currency),
        hundredths(rules.amount_ratio_percent),
    );
    let measures = [
        ("amount_minor", signed(candidate.amount_minor)),
        ("median_minor", signed(median)),
        ("ratio_hundredths", signed(ratio)),
        ("payments_considered", signed(count as u64)),
        (
            "threshold_ratio_hundredths",
            signed(rules.amount_ratio_percent),
        ),
    ];
    Some(finding(
        super::RULE_AMOUNT_ABOVE_USUAL,
        &measures,
        explanation,
    ))
}

/// Flags the first payment to a payee added recently (its lineage has no payment yet).
pub(super) fn first_payment_to_new_payee(
    history: &History,
    payee: &PayeeRecord,
    candidate: &Candidate<'_>,
    rules: &AnomalyRules,
) -> Option<AnomalyFinding> {
    if history.payments_of(payee.payee_id).next().is_some() {
        return None;
    }
    let age = seconds_between(payee.first_added_at_micros, candidate.at_micros);
    if age >= rules.new_payee_seconds {
        return None;
    }
    let explanation = format!(
        "first payment to payee {}, which was added {} ago (payees added less than {} ago \
         are new)",
        payee.payee_id,
        format_duration(age),
        format_duration(rules.new_payee_seconds),
    );
    let measures = [
        ("payee_added_at_micros", payee.first_added_at_micros),
        ("payee_age_seconds", age),
        ("threshold_seconds", rules.new_payee_seconds),
    ];
    Some(finding(super::RULE_NEW_PAYEE, &measures, explanation))
}

/// Describes an account with all but the last three digits of its number hidden.
fn describe_account(account: &PayeeAccount) -> String {
    let tail = |digits: &str| {
        let chars: Vec<char> = digits.chars().collect();
        chars[chars.len().saturating_sub(3)..]
            .iter()
            .collect::<String>()
    };
    match account {
        PayeeAccount::Bsb { bsb, account } => {
            let bsb = if bsb.len() == 6 && bsb.is_ascii() {
                format!("{}-{}", &bsb[..3], &bsb[3..])
            } else {
                bsb.clone()
            };
            format!("BSB {bsb} account ending {}", tail(account))
        }
        PayeeAccount::Iban { iban } => format!("IBAN ending {}", tail(iban)),
        PayeeAccount::Unavailable { why, .. } => format!("account {why}"),
    }
}

/// Flags a payment to a payee whose bank account an approved change replaced shortly before.
pub(super) fn account_changed(
    payee: &PayeeRecord,
    candidate: &Candidate<'_>,
    rules: &AnomalyRules,
) -> Option<AnomalyFinding> {
    let change = payee.account_change.as_ref()?;
    let age = seconds_between(change.changed_at_micros, candidate.at_micros);
    if age >= rules.account_change_seconds {
        return None;
    }
    let explanation = format!(
        "the bank account of payee {} changed {} ago, from {} to {} (changes less than {} \
         old are recent)",
        payee.payee_id,
        format_duration(age),
        describe_account(&change.previous_account),
        describe_account(&payee.account),
        format_duration(rules.account_change_seconds),
    );
    let measures = [
        ("account_changed_at_micros", change.changed_at_micros),
        ("change_age_seconds", age),
        ("threshold_seconds", rules.account_change_seconds),
    ];
    Some(finding(super::RULE_ACCOUNT_CHANGED, &measures, explanation))
}

/// Returns whether a local hour falls in the quiet hours `[start, end)`, which may wrap
/// past midnight; equal bounds mean no quiet hours.
pub(super) fn in_quiet_hours(hour: u32, start: u32, end: u32) -> bool {
    match start.cmp(&end) {
        std::cmp::Ordering::Equal => false,
        std::cmp::Ordering::Less => (start..end).contains(&hour),
        std::cmp::Ordering::Greater => hour >= start || hour < end,
    }
}

/// Flags a payment submitted during the quiet hours of the tenant's time zone, with
/// daylight saving applied.
pub(super) fn unusual_hour(
    candidate: &Candidate<'_>,
    rules: &AnomalyRules,
) -> Option<AnomalyFinding> {
    let utc = DateTime::from_timestamp_micros(candidate.at_micros)?;
    let local = utc.with_timezone(&rules.time_zone);
    let hour = local.hour();
    if !in_quiet_hours(hour, rules.quiet_start_hour, rules.quiet_end_hour) {
        return None;
    }
    let offset_seconds = local.offset().fix().local_minus_utc();
    let explanation = format!(
        "submitted at {} {} time ({}, UTC{}), inside the quiet hours {:02}:00 to {:02}:00",
        local.format("%H:%M"),
        rules.time_zone.name(),
        local.format("%Z"),
        format_offset(offset_seconds),
        rules.quiet_start_hour,
        rules.quiet_end_hour,
    );
    let measures = [
        ("local_hour", i64::from(hour)),
        ("local_minute", i64::from(local.minute())),
        ("utc_offset_seconds", i64::from(offset_seconds)),
        ("quiet_start_hour", i64::from(rules.quiet_start_hour)),
        ("quiet_end_hour", i64::from(rules.quiet_end_hour)),
    ];
    Some(finding(super::RULE_UNUSUAL_HOUR, &measures, explanation))
}

fn format_offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Flags many payments to one payee within a short window, this one included.
pub(super) fn burst(
    history: &History,
    candidate: &Candidate<'_>,
    rules: &AnomalyRules,
) -> Option<AnomalyFinding> {
    let window_micros = rules.burst_window_seconds.saturating_mul(MICROS_PER_SECOND);
    let since = candidate.at_micros.saturating_sub(window_micros);
    let recent: Vec<i64> = (history.payments_of(candidate.payee_id))
        .filter(|p| p.at_micros > since)
        .map(|p| p.at_micros)
        .collect();
    let count = recent.len() as u64 + 1;
    if count < u64::from(rules.burst_count) {
        return None;
    }
    let earliest = recent.first().copied().unwrap_or(candidate.at_micros);
    let explanation = format!(
        "this is payment {count} to this payee within {}; the earliest of them was submitted \
         {} before it (the rule fires at {} payments)",
        format_duration(rules.burst_window_seconds),
        format_duration(seconds_between(earliest, candidate.at_micros)),
        rules.burst_count,
    );
    let measures = [
        ("payments_in_window", signed(count)),
        ("window_seconds", rules.burst_window_seconds),
        ("threshold_count", i64::from(rules.burst_count)),
    ];
    Some(finding(super::RULE_BURST, &measures, explanation))
}

/// Flags a payment to a payee whose name looks like an older payee's name, by the highest
/// similarity of their look-alike keys. A reviewer's release of a payment to this payee
/// that was flagged for its name ends the rule for that payee.
pub(super) fn lookalike_name(
    history: &History,
    payee: &PayeeRecord,
    rules: &AnomalyRules,
) -> Option<AnomalyFinding> {
    if history.lookalike_released(payee.payee_id) {
        return None;
    }
    let mut best: Option<(u32, &PayeeRecord)> = None;
    for other in history.active_payees() {
        if other.lineage == payee.lineage
            || other.first_added_at_micros > payee.first_added_at_micros
        {
            continue;
        }
        let score = super::similarity_permille(&payee.lookalike_key, &other.lookalike_key);
        if best.is_none_or(|(top, _)| score > top) {
            best = Some((score, other));
        }
    }
    let (score, other) = best?;
    if score < rules.lookalike_permille {
        return None;
    }
    let explanation = format!(
        "the name of payee {} looks like the name of payee {}, added earlier: similarity \
         {}.{:03} between their look-alike forms (the rule fires at {}.{:03})",
        payee.payee_id,
        other.payee_id,
        score / 1000,
        score % 1000,
        rules.lookalike_permille / 1000,
        rules.lookalike_permille % 1000,
    );
    let measures = [
        ("similarity_permille", i64::from(score)),
        ("threshold_permille", i64::from(rules.lookalike_permille)),
    ];
    let mut found = finding(super::RULE_LOOKALIKE_NAME, &measures, explanation);
    found.related_payee_id = Some(other.payee_id);
    Some(found)
}
