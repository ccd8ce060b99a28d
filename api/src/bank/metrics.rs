//! Lock-free counters for the bank link, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use super::{BankError, BreakerState};

/// Attempt outcomes, in the order of [`BankMetrics::attempts`]: `ok`, then the
/// [`BankError::kind`] values.
const OUTCOMES: [&str; 9] = [
    "ok",
    "timeout",
    "connect",
    "tls",
    "http_5xx",
    "http_4xx",
    "invalid_response",
    "breaker_open",
    "unsendable",
];

/// Upper bounds of the call latency histogram buckets, in milliseconds.
const LATENCY_BUCKETS_MS: [u64; 11] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000,
];

/// Breaker states in gauge order: the gauge value is the index.
const BREAKER_STATES: [BreakerState; 3] = [
    BreakerState::Closed,
    BreakerState::HalfOpen,
    BreakerState::Open,
];

/// Counters for bank calls, retries and the circuit breaker.
///
/// Share one instance (in an `Arc`) between the adapter and the breaker, and render it on
/// the metrics endpoint.
#[derive(Debug, Default)]
pub struct BankMetrics {
    attempts: [AtomicU64; OUTCOMES.len()],
    /// Calls per latency bucket, not cumulative; calls above the last bound are only in
    /// `latency_count`.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    latency_sum_micros: AtomicU64,
    latency_count: AtomicU64,
    retries: AtomicU64,
    breaker_state: AtomicU8,
    breaker_transitions: [AtomicU64; BREAKER_STATES.len()],
}

impl BankMetrics {
    /// Creates zeroed metrics with the breaker gauge at closed.
    pub fn new() -> Self {
        BankMetrics::default()
    }

    /// Records one bank call: its outcome (`None` for success) and how long it took.
    pub fn record_call(&self, error: Option<&BankError>, latency: Duration) {
        let outcome = error.map_or("ok", BankError::kind);
        self.attempts[outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);

        let millis = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        if let Some(bucket) = LATENCY_BUCKETS_MS.iter().position(|bound| millis <= *bound) {
            self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an attempt that the open breaker kept from reaching the bank.
    pub fn record_breaker_rejection(&self) {
        self.attempts[outcome_index("breaker_open")].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a scheduled retry.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a breaker transition into `to` and moves the state gauge.
    pub fn record_breaker_transition(&self, to: BreakerState) {
        let index = state_index(to);
        self.breaker_transitions[index].fetch_add(1, Ordering::Relaxed);
        // Three states fit in a u8.
        self.breaker_state.store(index as u8, Ordering::Relaxed);
    }

    /// Returns the attempts counted with `outcome` (`ok` or a [`BankError::kind`]).
    pub fn attempts(&self, outcome: &str) -> u64 {
        OUTCOMES
            .iter()
            .position(|known| *known == outcome)
            .map_or(0, |index| self.attempts[index].load(Ordering::Relaxed))
    }

    /// Returns the number of retries scheduled.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Appends the metrics to `out` in the Prometheus text exposition format (0.0.4).
    pub fn render_prometheus(&self, out: &mut String) {
        self.render_attempts(out);
        self.render_latency(out);
        header(
            out,
            "folio_bank_retries_total",
            "counter",
            "Bank payment retries scheduled.",
        );
        line(
            out,
            "folio_bank_retries_total",
            "",
            self.retries.load(Ordering::Relaxed),
        );
        self.render_breaker(out);
    }

    fn render_attempts(&self, out: &mut String) {
        let name = "folio_bank_attempts_total";
        header(out, name, "counter", "Bank payment attempts by outcome.");
        for (outcome, count) in OUTCOMES.iter().zip(&self.attempts) {
            line(
                out,
                name,
                &format!("{{outcome=\"{outcome}\"}}"),
                count.load(Ordering::Relaxed),
            );
        }
    }

    fn render_latency(&self, out: &mut String) {
        let name = "folio_bank_call_duration_seconds";
        header(out, name, "histogram", "Duration of bank payment calls.");
        let mut cumulative = 0;
        for (bound_ms, count) in LATENCY_BUCKETS_MS.iter().zip(&self.latency_buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let le = format!("{{le=\"{}\"}}", seconds(*bound_ms));
            line(out, &format!("{name}_bucket"), &le, cumulative);
        }
        let total = self.latency_count.load(Ordering::Relaxed);
        line(out, &format!("{name}_bucket"), "{le=\"+Inf\"}", total);
        let sum_micros = self.latency_sum_micros.load(Ordering::Relaxed);
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{name}_sum {}.{:06}",
            sum_micros / 1_000_000,
            sum_micros % 1_000_000
        );
        line(out, &format!("{name}_count"), "", total);
    }

    fn render_breaker(&self, out: &mut String) {
        let name = "folio_bank_breaker_state";
        header(
            out,
            name,
            "gauge",
            "Bank circuit breaker state: 0 closed, 1 half-open, 2 open.",
        );
        line(
            out,
            name,
            "",
            u64::from(self.breaker_state.load(Ordering::Relaxed)),
        );

        let name = "folio_bank_breaker_transitions_total";
        header(
            out,
            name,
            "counter",
            "Bank circuit breaker transitions by new state.",
        );
        for (state, count) in BREAKER_STATES.iter().zip(&self.breaker_transitions) {
            let labels = format!("{{to=\"{}\"}}", state.as_str());
            line(out, name, &labels, count.load(Ordering::Relaxed));
        }
    }
}

fn outcome_index(outcome: &str) -> usize {
    let index = OUTCOMES.iter().position(|known| *known == outcome);
    // Every BankError::kind is listed in OUTCOMES; the unit tests check it.
    index.unwrap_or_else(|| panic!("bank outcome {outcome} missing from OUTCOMES"))
}

fn state_index(state: BreakerState) -> usize {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

fn seconds(millis: u64) -> String {
    format!("{}.{:03}", millis / 1_000, millis % 1_000)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, labels: &str, value: u64) {
    let _ = writeln!(out, "{name}{labels} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<BankError> {
        vec![
            BankError::Timeout { elapsed_ms: 1 },
            BankError::Connect {
                detail: String::new(),
            },
            BankError::Tls {
                detail: String::new(),
            },
            BankError::Http5xx {
                status: 503,
                detail: String::new(),
            },
            BankError::Http4xx {
                status: 400,
                detail: String::new(),
            },
            BankError::InvalidResponse {
                detail: String::new(),
            },
            BankError::BreakerOpen { retry_after_ms: 1 },
            BankError::Unsendable {
                detail: String::new(),
            },
        ]
    }

    #[test]
    fn every_error_kind_has_outcome() {
        for error in all_kinds() {
            assert!(OUTCOMES.contains(&error.kind()), "{}", error.kind());
        }
    }

    #[test]
    fn calls_counted_by_outcome() {
        let metrics = BankMetrics::new();
        metrics.record_call(None, Duration::from_millis(5));
        metrics.record_call(None, Duration::from_millis(70));
        metrics.record_call(
            Some(&BankError::Timeout { elapsed_ms: 40_000 }),
            Duration::from_secs(40),
        );
        metrics.record_breaker_rejection();
        metrics.record_retry();

        assert_eq!(metrics.attempts("ok"), 2);
        assert_eq!(metrics.attempts("timeout"), 1);
        assert_eq!(metrics.attempts("breaker_open"), 1);
        assert_eq!(metrics.attempts("http_5xx"), 0);
        assert_eq!(metrics.retries(), 1);
    }

    #[test]
    fn prometheus_text_is_cumulative() {
        let metrics = BankMetrics::new();
        metrics.record_call(None, Duration::from_millis(5));
        metrics.record_call(None, Duration::from_millis(70));
        metrics.record_call(None, Duration::from_secs(40));
        metrics.record_breaker_transition(BreakerState::Open);
        let mut out = String::new();
        metrics.render_prometheus(&mut out);

        assert!(
            out.contains("folio_bank_attempts_total{outcome=\"ok\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("folio_bank_call_duration_seconds_bucket{le=\"0.010\"} 1\n"));
        assert!(out.contains("folio_bank_call_duration_seconds_bucket{le=\"0.100\"} 2\n"));
        assert!(out.contains("folio_bank_call_duration_seconds_bucket{le=\"30.000\"} 2\n"));
        assert!(out.contains("folio_bank_call_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(
            out.contains("folio_bank_call_duration_seconds_sum 40.075000\n"),
            "{out}"
        );
        assert!(out.contains("folio_bank_breaker_state 2\n"));
        assert!(out.contains("folio_bank_breaker_transitions_total{to=\"open\"} 1\n"));
    }
}
