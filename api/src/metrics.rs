//! Process-wide metrics of the API and the read side, in the Prometheus text format.
//!
//! The bank link keeps its own counters (`bank::metrics`); this module holds the append
//! histograms that the command path records into, and renders the per-ledger gauges that
//! `/metrics` reads from the store, the projection runner and the dead-letter queue.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the append latency buckets, in microseconds.
const APPEND_LATENCY_BOUNDS_MICROS: [u64; 12] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000, 5_000_000,
];

/// Upper bounds of the events-per-append buckets.
const APPEND_SIZE_BOUNDS: [u64; 9] = [1, 2, 5, 10, 50, 100, 500, 1_000, 5_000];

/// A histogram with fixed bucket bounds, updated without locks.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: [u64; N],
    /// Observations per bucket, not cumulative; those above the last bound are only in
    /// `count`.
    buckets: [AtomicU64; N],
    sum: AtomicU64,
    count: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    /// Creates an empty histogram over `bounds`, which must be increasing.
    pub const fn new(bounds: [u64; N]) -> Self {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: u64) {
        if let Some(index) = self.bounds.iter().position(|bound| value <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Renders the histogram; `scale` divides bounds and sum for display (1 000 000 turns
    /// microseconds into seconds).
    fn render(&self, out: &mut String, name: &str, help: &str, scale: u64) {
        header(out, name, "histogram", help);
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = scaled(*bound, scale);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count();
        let sum = scaled(self.sum.load(Ordering::Relaxed), scale);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Metrics of the command path.
#[derive(Debug)]
pub struct ApiMetrics {
    /// Time from handing an append to the store until it is durable, in microseconds.
    pub append_latency: Histogram<{ APPEND_LATENCY_BOUNDS_MICROS.len() }>,
    /// Events written by one append request.
    pub append_size: Histogram<{ APPEND_SIZE_BOUNDS.len() }>,
}

/// The process's API metrics.
pub static API: ApiMetrics = ApiMetrics {
    append_latency: Histogram::new(APPEND_LATENCY_BOUNDS_MICROS),
    append_size: Histogram::new(APPEND_SIZE_BOUNDS),
};

impl ApiMetrics {
    /// Records one committed append of `events` events that took `elapsed`.
    pub fn record_append(&self, events: usize, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.append_latency.observe(micros);
        self.append_size
            .observe(u64::try_from(events).unwrap_or(u64::MAX));
    }

    /// Renders the append histograms and the count of log lines the repeat limit dropped.
    pub fn render(&self, out: &mut String) {
        self.append_latency.render(
            out,
            "folio_append_duration_seconds",
            "Time from a command's append to its durable commit.",
            1_000_000,
        );
        self.append_size.render(
            out,
            "folio_append_events",
            "Events written by one command's append.",
            1,
        );
        let name = "folio_log_lines_dropped_total";
        header(
            out,
            name,
            "counter",
            "Warning and error log lines dropped as repeats.",
        );
        let dropped = crate::logging::SUPPRESSED_LINES.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name} {dropped}");
    }
}

/// Outcomes of second-factor challenges, in the order of [`MfaMetrics::challenges`].
pub const CHALLENGE_OUTCOMES: [&str; 4] = ["passed", "mismatch", "replayed", "malformed"];

/// Counters of operator authentication.
#[derive(Debug)]
pub struct MfaMetrics {
    /// Challenges per outcome.
    challenges: [AtomicU64; CHALLENGE_OUTCOMES.len()],
    /// Operators locked after repeated failures.
    lockouts: AtomicU64,
}

/// The process's MFA metrics.
pub static MFA: MfaMetrics = MfaMetrics {
    challenges: [const { AtomicU64::new(0) }; CHALLENGE_OUTCOMES.len()],
    lockouts: AtomicU64::new(0),
};

impl MfaMetrics {
    /// Counts one challenge with `outcome`, one of [`CHALLENGE_OUTCOMES`].
    pub fn record_challenge(&self, outcome: &str) {
        let index = CHALLENGE_OUTCOMES
            .iter()
            .position(|known| *known == outcome);
        // Every caller passes a listed outcome; an unknown one is a bug, counted nowhere.
        debug_assert!(index.is_some(), "unknown challenge outcome {outcome}");
        if let Some(index) = index {
            self.challenges[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one lockout.
    pub fn record_lockout(&self) {
        self.lockouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the counters.
    pub fn render(&self, out: &mut String) {
        let name = "folio_mfa_challenges_total";
        header(out, name, "counter", "Second-factor challenges by outcome.");
        for (outcome, count) in CHALLENGE_OUTCOMES.iter().zip(&self.challenges) {
            let count = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {count}");
        }
        let name = "folio_mfa_lockouts_total";
        header(
            out,
            name,
            "counter",
            "Operators locked after repeated failed codes.",
        );
        let _ = writeln!(out, "{name} {}", self.lockouts.load(Ordering::Relaxed));
    }
}

/// Per-ledger gauges, gathered by the `/metrics` handler.
#[derive(Debug, Default)]
pub struct LedgerGauges {
    /// Ledger id.
    pub ledger: String,
    /// Position of the last sealed event.
    pub head_position: u64,
    /// Position the read models reflect, if any event is applied.
    pub projection_position: Option<u64>,
    /// Committed events not yet applied to the read models.
    pub projection_lag: Option<u64>,
    /// Whether the projection stopped on an error.
    pub projection_stopped: bool,
    /// Parked payments, if the dead-letter queue could be read.
    pub dlq_depth: Option<u64>,
    /// Age of the oldest parked payment, in seconds.
    pub dlq_oldest_age_seconds: Option<i64>,
    /// Last position the in-server verifier checked, once it has run on the ledger.
    pub verified_position: Option<u64>,
    /// Whether the in-server verifier found the chain broken; `None` before its first pass.
    pub verification_failed: Option<bool>,
    /// Allow-list proposals waiting for approval and not yet expired.
    pub approvals_pending: Option<u64>,
    /// DLQ retry and ignore decisions waiting for approval and not yet expired.
    pub dlq_decisions_pending: Option<u64>,
    /// Whether this node holds the ledger's lease and runs its dispatcher and shared
    /// projection.
    pub lease_held: bool,
}

/// Renders one gauge family with a line per ledger that has a value.
fn render_gauge<T: std::fmt::Display>(
    out: &mut String,
    ledgers: &[LedgerGauges],
    name: &str,
    help: &str,
    value: impl Fn(&LedgerGauges) -> Option<T>,
) {
    header(out, name, "gauge", help);
    for gauges in ledgers {
        if let Some(value) = value(gauges) {
            let _ = writeln!(out, "{name}{{ledger=\"{}\"}} {value}", gauges.ledger);
        }
    }
}

/// Renders the per-ledger gauges.
pub fn render_ledgers(out: &mut String, ledgers: &[LedgerGauges]) {
    render_gauge(
        out,
        ledgers,
        "folio_chain_head_position",
        "Position of the last sealed event.",
        |g| Some(g.head_position),
    );
    render_gauge(
        out,
        ledgers,
        "folio_ledger_lease_held",
        "1 when this node holds the ledger's lease and runs its dispatcher and shared \
         projection; summed over the nodes, 1 per ledger.",
        |g| Some(u8::from(g.lease_held)),
    );
    render_gauge(
        out,
        ledgers,
        "folio_projection_position",
        "Position the read models reflect.",
        |g| g.projection_position,
    );
    render_gauge(
        out,
        ledgers,
        "folio_projection_lag_events",
        "Committed events not yet applied to the read models.",
        |g| g.projection_lag,
    );
    render_gauge(
        out,
        ledgers,
        "folio_projection_stopped",
        "1 when the ledger's projection stopped on an error (a gap, a broken link).",
        |g| Some(u8::from(g.projection_stopped)),
    );
    render_gauge(
        out,
        ledgers,
        "folio_dlq_depth",
        "Payments parked in the dead-letter queue.",
        |g| g.dlq_depth,
    );
    render_gauge(
        out,
        ledgers,
        "folio_dlq_oldest_age_seconds",
        "Age of the oldest payment in the dead-letter queue.",
        |g| g.dlq_oldest_age_seconds,
    );
    render_gauge(
        out,
        ledgers,
        "folio_approvals_pending",
        "Allow-list proposals waiting for a second operator's approval.",
        |g| g.approvals_pending,
    );
    render_gauge(
        out,
        ledgers,
        "folio_dlq_decisions_pending",
        "DLQ retry and ignore decisions waiting for a second operator's approval.",
        |g| g.dlq_decisions_pending,
    );
    render_gauge(
        out,
        ledgers,
        "folio_chain_verified_position",
        "Last position whose hash, link and signature the server re-checked.",
        |g| g.verified_position,
    );
    render_gauge(
        out,
        ledgers,
        "folio_chain_verification_failed",
        "1 when the server's continuous verification found the chain broken.",
        |g| g.verification_failed.map(u8::from),
    );
}

/// Renders the latest recorded control run of each ledger: one gauge per control that is
/// 1 while the control fails, and the position each run covered.
pub fn render_controls(
    out: &mut String,
    runs: &std::collections::BTreeMap<uuid::Uuid, domain::controls::ControlsRunRecorded>,
) {
    let name = "folio_control_failed";
    header(
        out,
        name,
        "gauge",
        "1 when the control failed in the ledger's latest recorded run.",
    );
    for (ledger, run) in runs {
        for result in &run.results {
            let failed = u8::from(result.status == domain::controls::ControlStatus::Fail);
            let control = &result.control;
            let _ = writeln!(
                out,
                "{name}{{ledger=\"{ledger}\",control=\"{control}\"}} {failed}"
            );
        }
    }
    let name = "folio_controls_last_position";
    header(
        out,
        name,
        "gauge",
        "Last ledger position covered by the latest recorded control run.",
    );
    for (ledger, run) in runs {
        let _ = writeln!(out, "{name}{{ledger=\"{ledger}\"}} {}", run.last_position);
    }
}

fn scaled(value: u64, scale: u64) -> String {
    if scale == 1 {
        return value.to_string();
    }
    let digits = scale.ilog10() as usize;
    format!("{}.{:0digits$}", value / scale, value % scale)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = Histogram::new([10, 100]);
        for value in [5, 50, 50, 500] {
            histogram.observe(value);
        }
        let mut out = String::new();

        histogram.render(&mut out, "x", "help", 1);

        assert!(out.contains("x_bucket{le=\"10\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"100\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum 605\n"), "{out}");
    }

    #[test]
    fn microseconds_render_as_seconds() {
        assert_eq!(scaled(1_500_000, 1_000_000), "1.500000");
        assert_eq!(scaled(250, 1_000_000), "0.000250");
    }
}
