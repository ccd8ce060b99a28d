//! Anomaly review in the API: the `[anomalies]` configuration, the per-ledger history
//! and analytics rebuilt from the event store, and the review state of one payment.
//!
//! The rules read a [`History`] that this module keeps per ledger and catches up from
//! the event store before each decision, as the allow-list is. It never reads a read
//! model, which may lag, so the history a flag names by position is exactly the ledger
//! up to that position.

use std::collections::HashMap;

use anyhow::bail;
use domain::analytics::{Analytics, AnalyticsReport, EventMeta};
use domain::anomalies::{parse_time_zone, AnomalyRules, History};
use domain::anomaly_events::{PaymentFlagged, ReviewDecision};
use domain::events::{DomainEvent, PayloadError, PaymentSubmitted};
use domain::record::SealedEvent;
use eventstore_adapter::EventStore;
use serde::Deserialize;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::problem::ApiError;

/// Events read from the store per call while catching up.
const PAGE: u32 = 1_000;

/// The `[anomalies]` section; `docs/anomalies.md` explains each rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomaliesConfig {
    /// Score payments and hold flagged ones; `false` dispatches every payment at once.
    pub enabled: bool,
    /// IANA time zone of the tenant, for the quiet hours.
    pub time_zone: String,
    /// Ratio to the payee's median, in percent, at which the amount rule fires.
    pub amount_ratio_percent: u64,
    /// Past payments in the currency the amount rule needs before it judges.
    pub amount_min_payments: u32,
    /// Age in seconds under which a payee is new.
    pub new_payee_seconds: u64,
    /// Age in seconds under which an account change is recent.
    pub account_change_seconds: u64,
    /// First local hour of the quiet hours (0 to 23).
    pub quiet_start_hour: u32,
    /// Local hour at which the quiet hours end (0 to 23); equal to the start turns the
    /// hour rule off.
    pub quiet_end_hour: u32,
    /// Payments to one payee within the window, this one included, at which the burst
    /// rule fires.
    pub burst_count: u32,
    /// Burst window in seconds.
    pub burst_window_seconds: u64,
    /// Name similarity, in thousandths, at which the look-alike rule fires.
    pub lookalike_permille: u32,
}

impl Default for AnomaliesConfig {
    fn default() -> Self {
        let rules = AnomalyRules::default();
        AnomaliesConfig {
            enabled: true,
            time_zone: rules.time_zone.name().to_owned(),
            amount_ratio_percent: rules.amount_ratio_percent,
            amount_min_payments: rules.amount_min_payments,
            new_payee_seconds: rules.new_payee_seconds.unsigned_abs(),
            account_change_seconds: rules.account_change_seconds.unsigned_abs(),
            quiet_start_hour: rules.quiet_start_hour,
            quiet_end_hour: rules.quiet_end_hour,
            burst_count: rules.burst_count,
            burst_window_seconds: rules.burst_window_seconds.unsigned_abs(),
            lookalike_permille: rules.lookalike_permille,
        }
    }
}

/// Maximum window of any rule: ten years, in seconds.
const MAX_WINDOW_SECONDS: u64 = 10 * 366 * 86_400;

impl AnomaliesConfig {
    /// Checks every threshold, naming the key and the fix.
    ///
    /// # Errors
    /// The first value out of range.
    pub fn validate(&self) -> anyhow::Result<()> {
        parse_time_zone(&self.time_zone)
            .map_err(|e| anyhow::anyhow!("anomalies.time_zone: {e}"))?;
        if self.amount_ratio_percent <= 100 {
            bail!(
                "anomalies.amount_ratio_percent is {}; set a ratio above 100 percent (the \
                 default 500 fires at five times the payee's median)",
                self.amount_ratio_percent
            );
        }
        if self.amount_min_payments == 0 || self.burst_count < 2 {
            bail!(
                "anomalies.amount_min_payments must be at least 1 and anomalies.burst_count at \
                 least 2; the defaults are 3 and 5"
            );
        }
        if self.quiet_start_hour > 23 || self.quiet_end_hour > 23 {
            bail!(
                "anomalies.quiet_start_hour ({}) and quiet_end_hour ({}) must be hours from 0 to \
                 23",
                self.quiet_start_hour,
                self.quiet_end_hour
            );
        }
        if self.lookalike_permille == 0 || self.lookalike_permille > 1000 {
            bail!(
                "anomalies.lookalike_permille is {}; set a similarity from 1 to 1000 \
                 thousandths (the default is 850)",
                self.lookalike_permille
            );
        }
        for (key, value) in [
            ("new_payee_seconds", self.new_payee_seconds),
            ("account_change_seconds", self.account_change_seconds),
            ("burst_window_seconds", self.burst_window_seconds),
        ] {
            if value > MAX_WINDOW_SECONDS {
                bail!("anomalies.{key} is {value}; set at most {MAX_WINDOW_SECONDS} seconds");
            }
        }
        Ok(())
    }

    /// Returns the rules in domain form.
    ///
    /// # Errors
    /// A time zone that does not parse (configuration that skipped [`Self::validate`]).
    pub fn rules(&self) -> Result<AnomalyRules, ApiError> {
        let seconds = |value: u64| i64::try_from(value.min(MAX_WINDOW_SECONDS)).unwrap_or(0);
        Ok(AnomalyRules {
            time_zone: parse_time_zone(&self.time_zone).map_err(ApiError::internal)?,
            amount_ratio_percent: self.amount_ratio_percent,
            amount_min_payments: self.amount_min_payments,
            new_payee_seconds: seconds(self.new_payee_seconds),
            account_change_seconds: seconds(self.account_change_seconds),
            quiet_start_hour: self.quiet_start_hour,
            quiet_end_hour: self.quiet_end_hour,
            burst_count: self.burst_count,
            burst_window_seconds: seconds(self.burst_window_seconds),
            lookalike_permille: self.lookalike_permille,
        })
    }
}

/// History and analytics of one ledger.
#[derive(Debug, Clone, Default)]
pub struct LedgerInsight {
    /// History for the anomaly rules.
    pub history: History,
    /// Operator analytics.
    pub analytics: Analytics,
}

impl LedgerInsight {
    /// Next ledger position to apply.
    fn next_position(&self) -> u64 {
        self.history.position().map_or(0, |last| last + 1)
    }

    /// Applies one sealed event to both folds.
    ///
    /// # Errors
    /// A payload of a known type that does not decode: damaged history.
    pub fn apply(&mut self, event: &SealedEvent) -> Result<(), PayloadError> {
        let decoded = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload);
        match decoded {
            Ok(decoded) => self.apply_decoded(event, &decoded.without_keys()),
            Err(PayloadError::Unknown { .. }) => self.skip(event.position),
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Counts an event of a type this version does not know, so positions stay gapless.
    fn skip(&mut self, position: u64) {
        self.history.skip(position);
        self.analytics.skip(position);
    }

    /// Applies an event already decoded, with its sealed payee fields opened.
    pub fn apply_decoded(&mut self, event: &SealedEvent, decoded: &DomainEvent) {
        self.history
            .apply(event.position, event.recorded_at_micros, decoded);
        let meta = EventMeta {
            position: event.position,
            at_micros: event.recorded_at_micros,
            actor: &event.actor,
            event_type: &event.event_type,
        };
        self.analytics.apply(&meta, decoded);
    }
}

/// Per-ledger insights, caught up from the event store on each use.
///
/// NOTE: the first use of a ledger after a start reads its whole chain, and one lock covers
/// every ledger, as the allow-list cache does.
#[derive(Debug, Default)]
pub struct Insights {
    ledgers: Mutex<HashMap<Uuid, LedgerInsight>>,
}

impl Insights {
    /// Catches a ledger's insight up with the store's head and passes it to `read`.
    ///
    /// # Errors
    /// Store failures, or an event that does not decode.
    pub async fn read<R>(
        &self,
        store: &EventStore,
        personal: &crate::personal::PersonalFields,
        ledger_id: Uuid,
        read: impl FnOnce(&LedgerInsight) -> R,
    ) -> Result<R, ApiError> {
        let mut ledgers = self.ledgers.lock().await;
        let insight = ledgers.entry(ledger_id).or_default();
        loop {
            let from = insight.next_position();
            let events = store.read_ledger(ledger_id, from, PAGE).await?;
            for event in &events {
                let decoded =
                    DomainEvent::decode(&event.event_type, event.schema_version, &event.payload);
                let decoded = match decoded {
                    Ok(decoded) => decoded,
                    Err(PayloadError::Unknown { .. }) => {
                        insight.skip(event.position);
                        continue;
                    }
                    Err(error) => return Err(ApiError::internal(error)),
                };
                // The rules compare names and accounts, so sealed fields are opened first.
                let opened = personal
                    .open(ledger_id, &event.stream_id, event.event_id, decoded)
                    .await
                    .map_err(ApiError::internal)?;
                insight.apply_decoded(event, &opened);
            }
            if events.len() < PAGE as usize {
                return Ok(read(insight));
            }
        }
    }

    /// Returns a ledger's operator analytics as of the store's head.
    ///
    /// # Errors
    /// As [`Insights::read`].
    pub async fn analytics(
        &self,
        store: &EventStore,
        personal: &crate::personal::PersonalFields,
        ledger_id: Uuid,
    ) -> Result<AnalyticsReport, ApiError> {
        self.read(store, personal, ledger_id, |insight| {
            insight.analytics.report()
        })
        .await
    }
}

/// Review state of a payment, read from its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewState {
    /// The payment was not flagged.
    NotFlagged,
    /// Flagged and waiting for a reviewer.
    Held {
        /// Event id of the flag.
        flag_event_id: Uuid,
        /// The flag.
        flag: Box<PaymentFlagged>,
    },
    /// A reviewer decided.
    Decided(ReviewDecision),
}

/// Reads the review state from a payment stream's events, in version order.
///
/// # Errors
/// A flag or decision payload that does not decode.
pub fn review_state(events: &[SealedEvent]) -> Result<ReviewState, PayloadError> {
    let mut state = ReviewState::NotFlagged;
    for event in events {
        let decoded = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload);
        match decoded {
            Ok(DomainEvent::PaymentFlagged(flag)) => {
                state = ReviewState::Held {
                    flag_event_id: event.event_id,
                    flag: Box::new(flag),
                }
            }
            Ok(DomainEvent::PaymentReviewed(reviewed)) => {
                state = ReviewState::Decided(reviewed.decision)
            }
            Ok(_) | Err(PayloadError::Unknown { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(state)
}

/// Events of a payment stream read per call. A stream contains its submission, a flag, a
/// decision and a few attempts per retry.
const STREAM_PAGE: u32 = 256;

/// Reads a payment's whole stream.
///
/// # Errors
/// Store failures.
pub async fn read_payment_stream(
    store: &EventStore,
    ledger_id: Uuid,
    payment_id: Uuid,
) -> Result<Vec<SealedEvent>, eventstore_adapter::StoreError> {
    let stream = crate::state::payment_stream(payment_id);
    let mut events = Vec::new();
    loop {
        let from = events.len() as u64;
        let page = store
            .read_stream(ledger_id, &stream, from, STREAM_PAGE)
            .await?;
        let done = page.len() < STREAM_PAGE as usize;
        events.extend(page);
        if done {
            return Ok(events);
        }
    }
}

/// Scores an accepted payment against the ledger's history at `at_micros`; `None` when
/// the rules are off or none fires.
///
/// # Errors
/// As [`Insights::read`].
pub async fn flag_for(
    state: &crate::state::AppState,
    ledger_id: Uuid,
    submitted: &PaymentSubmitted,
    at_micros: i64,
) -> Result<Option<PaymentFlagged>, ApiError> {
    let mut flags = flags_for(state, ledger_id, std::slice::from_ref(submitted), at_micros).await?;
    Ok(flags.remove(&submitted.payment_id))
}

/// Scores accepted payments (the records of an ABA file) against the ledger's history at
/// `at_micros`, and returns the flags of those that any rule holds, by payment id.
///
/// Each payment is scored against the ledger alone: the other payments of the same file
/// are not part of its history.
///
/// # Errors
/// As [`Insights::read`].
pub async fn flags_for(
    state: &crate::state::AppState,
    ledger_id: Uuid,
    payments: &[PaymentSubmitted],
    at_micros: i64,
) -> Result<HashMap<Uuid, PaymentFlagged>, ApiError> {
    let config = &state.config.anomalies;
    if !config.enabled {
        return Ok(HashMap::new());
    }
    let rules = config.rules()?;
    let scored = state
        .insights
        .read(&state.store, &state.personal, ledger_id, |insight| {
            // Every ledger starts with its genesis event, so a ledger being paid into has a
            // position; 0 would only name that genesis.
            let history_position = insight.history.position().unwrap_or(0);
            let flags = payments.iter().filter_map(|submitted| {
                let candidate = domain::anomalies::Candidate {
                    payment_id: submitted.payment_id,
                    payee_id: submitted.payee_id,
                    amount_minor: submitted.amount_minor,
                    currency: &submitted.currency,
                    at_micros,
                };
                let findings = domain::anomalies::score(&insight.history, &candidate, &rules);
                let flag = (!findings.is_empty()).then(|| PaymentFlagged {
                    payment_id: submitted.payment_id,
                    payee_id: submitted.payee_id,
                    amount_minor: submitted.amount_minor,
                    currency: submitted.currency.clone(),
                    findings,
                    history_position,
                    evaluated_at_micros: at_micros,
                    time_zone: rules.time_zone.name().to_owned(),
                });
                flag.map(|flag| (submitted.payment_id, flag))
            });
            flags.collect()
        });
    scored.await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let env = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Config::load(None, env)
    }

    #[test]
    fn defaults_validate_and_match_the_domain() {
        let config = load(&[]).unwrap();
        let rules = config.anomalies.rules().unwrap();
        assert_eq!(rules, AnomalyRules::default());
        assert!(config.anomalies.enabled);
    }

    #[test]
    fn variables_set_thresholds() {
        let config = load(&[
            ("FOLIO_ANOMALIES__TIME_ZONE", "Australia/Perth"),
            ("FOLIO_ANOMALIES__AMOUNT_RATIO_PERCENT", "300"),
        ])
        .unwrap();
        let rules = config.anomalies.rules().unwrap();
        assert_eq!(rules.time_zone.name(), "Australia/Perth");
        assert_eq!(rules.amount_ratio_percent, 300);
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let cases = [
            ("FOLIO_ANOMALIES__TIME_ZONE", "Perth", "anomalies.time_zone"),
            (
                "FOLIO_ANOMALIES__AMOUNT_RATIO_PERCENT",
                "100",
                "above 100 percent",
            ),
            ("FOLIO_ANOMALIES__QUIET_END_HOUR", "24", "from 0 to 23"),
            (
                "FOLIO_ANOMALIES__LOOKALIKE_PERMILLE",
                "1001",
                "from 1 to 1000",
            ),
            ("FOLIO_ANOMALIES__BURST_COUNT", "1", "at least 2"),
        ];
        for (name, value, expected) in cases {
            let error = load(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(expected), "{name}={value}: {error}");
        }
    }
}
