//! Circuit breaker for the bank link.
//!
//! Closed: calls go through; `failure_threshold` consecutive link failures open it. Open:
//! calls are rejected without reaching the bank until `cool_down` has passed since it
//! opened. Half-open: exactly one probe call is admitted at a time; its success closes the
//! breaker, its failure opens it again for another cool-down. A final 4xx counts as a
//! success here, because it proves the bank is up and reading requests.
//!
//! Every transition is returned to the caller that caused it, so exactly one caller records
//! it as an event.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{BankError, BankMetrics};

/// A monotonic time source, injectable so tests can step through cool-downs.
pub trait BreakerClock: Send + Sync {
    /// Returns the current instant.
    fn now(&self) -> Instant;
}

/// The operating system's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

impl BreakerClock for MonotonicClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Breaker thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive link failures that open the breaker; at least 1.
    pub failure_threshold: u32,
    /// Time the breaker stays open before admitting a probe.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// Breaker state, as stored in `BreakerStateChanged` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are rejected.
    Open,
    /// One probe call at a time goes through.
    HalfOpen,
}

impl BreakerState {
    /// Returns the event spelling: `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change, to be recorded as a `BreakerStateChanged` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerTransition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Why, for operators.
    pub reason: String,
}

/// The breaker's decision on a request for a call.
#[derive(Debug)]
pub enum Admission<'a> {
    /// The call may go ahead; settle the permit with its outcome.
    Admitted {
        /// Permit to settle after the call.
        permit: BreakerPermit<'a>,
        /// Open to half-open, when this call is the first probe after a cool-down.
        transition: Option<BreakerTransition>,
    },
    /// The breaker is open, or half-open with its probe in flight.
    Rejected {
        /// State that rejected the call.
        state: BreakerState,
        /// Time until the cool-down ends; zero while a probe is in flight.
        retry_after: Duration,
    },
}

/// Internal state; `Open` keeps when it opened, `HalfOpen` whether its probe is out.
#[derive(Debug, Clone, Copy)]
enum State {
    Closed { consecutive_failures: u32 },
    Open { since: Instant },
    HalfOpen { probe_in_flight: bool },
}

impl State {
    fn public(self) -> BreakerState {
        match self {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

/// A thread-safe circuit breaker shared by every dispatch to one bank.
pub struct CircuitBreaker {
    config: BreakerConfig,
    clock: Arc<dyn BreakerClock>,
    metrics: Arc<BankMetrics>,
    state: Mutex<State>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.config)
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// Creates a closed breaker on the system's monotonic clock.
    ///
    /// # Panics
    /// Panics if `config.failure_threshold` is 0, which would keep the breaker open forever.
    pub fn new(config: BreakerConfig, metrics: Arc<BankMetrics>) -> Self {
        CircuitBreaker::with_clock(config, Arc::new(MonotonicClock), metrics)
    }

    /// Creates a closed breaker on `clock`.
    ///
    /// # Panics
    /// As [`CircuitBreaker::new`].
    pub fn with_clock(
        config: BreakerConfig,
        clock: Arc<dyn BreakerClock>,
        metrics: Arc<BankMetrics>,
    ) -> Self {
        assert!(
            config.failure_threshold >= 1,
            "breaker failure_threshold must be at least 1"
        );
        let state = Mutex::new(State::Closed {
            consecutive_failures: 0,
        });
        CircuitBreaker {
            config,
            clock,
            metrics,
            state,
        }
    }

    /// Replaces the metrics this breaker reports to, so they can be shared with the adapter.
    pub fn with_metrics(mut self, metrics: Arc<BankMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Returns the current state.
    pub fn state(&self) -> BreakerState {
        self.lock().public()
    }

    /// Returns the metrics this breaker reports to.
    pub fn metrics(&self) -> &Arc<BankMetrics> {
        &self.metrics
    }

    /// Returns how long the breaker still refuses every call; `None` when it admits one
    /// (closed, half-open, or open with its cool-down over, so the next call is a probe).
    pub fn cooling_down(&self) -> Option<Duration> {
        let now = self.clock.now();
        match *self.lock() {
            State::Open { since } => {
                let open_for = now.saturating_duration_since(since);
                Some(self.config.cool_down.saturating_sub(open_for)).filter(|left| !left.is_zero())
            }
            _ => None,
        }
    }

    /// Asks to make one bank call.
    pub fn admit(&self) -> Admission<'_> {
        let now = self.clock.now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admission::Admitted {
                permit: BreakerPermit::new(self, false),
                transition: None,
            },
            State::Open { since } => {
                let open_for = now.saturating_duration_since(since);
                if open_for < self.config.cool_down {
                    drop(state);
                    return self.reject(BreakerState::Open, self.config.cool_down - open_for);
                }
                *state = State::HalfOpen {
                    probe_in_flight: true,
                };
                let reason = format!(
                    "cool-down of {} ms elapsed; admitting one probe",
                    self.config.cool_down.as_millis()
                );
                let transition =
                    self.transition(BreakerState::Open, BreakerState::HalfOpen, reason);
                let permit = BreakerPermit::new(self, true);
                Admission::Admitted {
                    permit,
                    transition: Some(transition),
                }
            }
            State::HalfOpen {
                probe_in_flight: true,
            } => {
                drop(state);
                self.reject(BreakerState::HalfOpen, Duration::ZERO)
            }
            State::HalfOpen {
                probe_in_flight: false,
            } => {
                *state = State::HalfOpen {
                    probe_in_flight: true,
                };
                Admission::Admitted {
                    permit: BreakerPermit::new(self, true),
                    transition: None,
                }
            }
        }
    }

    fn reject(&self, state: BreakerState, retry_after: Duration) -> Admission<'_> {
        self.metrics.record_breaker_rejection();
        Admission::Rejected { state, retry_after }
    }

    fn settle(&self, probe: bool, failure: Option<&BankError>) -> Option<BreakerTransition> {
        let now = self.clock.now();
        let mut state = self.lock();
        let link_failure = failure.filter(|error| error.counts_against_breaker());
        match (*state, probe) {
            (State::HalfOpen { probe_in_flight }, true) => {
                assert!(
                    probe_in_flight,
                    "a probe permit settled with no probe in flight"
                );
                self.settle_probe(&mut state, now, link_failure)
            }
            (
                State::Closed {
                    consecutive_failures,
                },
                false,
            ) => self.settle_closed(&mut state, now, consecutive_failures, link_failure),
            (_, true) => unreachable!("only the probe leaves half-open, so a probe settles there"),
            // A call admitted while closed that ends after the breaker opened adds nothing:
            // the breaker already acted on the failures that opened it.
            (_, false) => None,
        }
    }

    fn settle_probe(
        &self,
        state: &mut State,
        now: Instant,
        link_failure: Option<&BankError>,
    ) -> Option<BreakerTransition> {
        if let Some(error) = link_failure {
            *state = State::Open { since: now };
            let reason = format!("probe failed: {}", error.kind());
            return Some(self.transition(BreakerState::HalfOpen, BreakerState::Open, reason));
        }
        *state = State::Closed {
            consecutive_failures: 0,
        };
        let reason = "probe succeeded".to_owned();
        Some(self.transition(BreakerState::HalfOpen, BreakerState::Closed, reason))
    }

    fn settle_closed(
        &self,
        state: &mut State,
        now: Instant,
        consecutive_failures: u32,
        link_failure: Option<&BankError>,
    ) -> Option<BreakerTransition> {
        let Some(error) = link_failure else {
            *state = State::Closed {
                consecutive_failures: 0,
            };
            return None;
        };
        let failures = consecutive_failures.saturating_add(1);
        if failures < self.config.failure_threshold {
            *state = State::Closed {
                consecutive_failures: failures,
            };
            return None;
        }
        *state = State::Open { since: now };
        let reason = format!("{failures} consecutive failures, last: {}", error.kind());
        Some(self.transition(BreakerState::Closed, BreakerState::Open, reason))
    }

    /// Releases a probe permit that was dropped without an outcome, so the next call can
    /// probe instead of the breaker staying half-open with no probe forever.
    fn release_probe(&self) {
        let mut state = self.lock();
        if let State::HalfOpen {
            probe_in_flight: true,
        } = *state
        {
            *state = State::HalfOpen {
                probe_in_flight: false,
            };
        }
    }

    fn transition(
        &self,
        from: BreakerState,
        to: BreakerState,
        reason: String,
    ) -> BreakerTransition {
        self.metrics.record_breaker_transition(to);
        let (from_name, to_name) = (from.as_str(), to.as_str());
        tracing::warn!(from = from_name, to = to_name, %reason, "bank breaker changed state");
        BreakerTransition { from, to, reason }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single assignment of a Copy value, so a panic elsewhere while
        // the lock was held cannot leave the state half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Permission for one bank call; settle it with the call's outcome.
///
/// Dropping an unsettled probe permit frees the probe slot without changing state.
#[derive(Debug)]
#[must_use = "settle the permit with the call's outcome"]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    settled: bool,
}

impl<'a> BreakerPermit<'a> {
    fn new(breaker: &'a CircuitBreaker, probe: bool) -> Self {
        BreakerPermit {
            breaker,
            probe,
            settled: false,
        }
    }

    /// Returns whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Settles the permit with a successful call.
    pub fn succeeded(mut self) -> Option<BreakerTransition> {
        self.settled = true;
        self.breaker.settle(self.probe, None)
    }

    /// Settles the permit with a failed call.
    pub fn failed(mut self, error: &BankError) -> Option<BreakerTransition> {
        self.settled = true;
        self.breaker.settle(self.probe, Some(error))
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that moves only when the test advances it.
    struct ManualClock(Mutex<Instant>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl BreakerClock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn breaker(threshold: u32) -> (CircuitBreaker, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock(Mutex::new(Instant::now())));
        let config = BreakerConfig {
            failure_threshold: threshold,
            cool_down: Duration::from_secs(30),
        };
        let breaker =
            CircuitBreaker::with_clock(config, clock.clone(), Arc::new(BankMetrics::new()));
        (breaker, clock)
    }

    fn outage() -> BankError {
        BankError::Http5xx {
            status: 503,
            detail: "service unavailable".into(),
        }
    }

    fn admitted(admission: Admission<'_>) -> (BreakerPermit<'_>, Option<BreakerTransition>) {
        match admission {
            Admission::Admitted { permit, transition } => (permit, transition),
            Admission::Rejected { state, .. } => panic!("rejected while {state}"),
        }
    }

    fn fail_once(breaker: &CircuitBreaker) -> Option<BreakerTransition> {
        admitted(breaker.admit()).0.failed(&outage())
    }

    fn open(breaker: &CircuitBreaker) {
        while breaker.state() == BreakerState::Closed {
            let _ = fail_once(breaker);
        }
    }

    #[test]
    fn opens_after_threshold() {
        let (breaker, _) = breaker(3);
        assert_eq!(fail_once(&breaker), None);
        assert_eq!(fail_once(&breaker), None);
        let transition = fail_once(&breaker).expect("third failure opens");

        assert_eq!(transition.from, BreakerState::Closed);
        assert_eq!(transition.to, BreakerState::Open);
        assert!(
            transition.reason.contains("3 consecutive failures"),
            "{}",
            transition.reason
        );
        assert_eq!(breaker.metrics().attempts("breaker_open"), 0);
    }

    #[test]
    fn success_resets_failure_count() {
        let (breaker, _) = breaker(2);
        assert_eq!(fail_once(&breaker), None);
        assert_eq!(admitted(breaker.admit()).0.succeeded(), None);
        assert_eq!(fail_once(&breaker), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn final_4xx_does_not_count() {
        let (breaker, _) = breaker(1);
        let rejected = BankError::Http4xx {
            status: 400,
            detail: "invalid".into(),
        };
        assert_eq!(admitted(breaker.admit()).0.failed(&rejected), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn open_rejects_until_cool_down() {
        let (breaker, clock) = breaker(1);
        open(&breaker);
        clock.advance(Duration::from_secs(10));

        match breaker.admit() {
            Admission::Rejected { state, retry_after } => {
                assert_eq!(state, BreakerState::Open);
                assert_eq!(retry_after, Duration::from_secs(20));
            }
            Admission::Admitted { .. } => panic!("admitted during cool-down"),
        }
        assert_eq!(breaker.metrics().attempts("breaker_open"), 1);
    }

    #[test]
    fn half_open_admits_one_probe() {
        let (breaker, clock) = breaker(1);
        open(&breaker);
        clock.advance(Duration::from_secs(30));

        let (probe, transition) = admitted(breaker.admit());
        let transition = transition.expect("open to half-open is reported");
        assert_eq!(
            (transition.from, transition.to),
            (BreakerState::Open, BreakerState::HalfOpen)
        );
        assert!(probe.is_probe());
        assert!(matches!(
            breaker.admit(),
            Admission::Rejected {
                state: BreakerState::HalfOpen,
                ..
            }
        ));

        let closed = probe.succeeded().expect("probe success closes");
        assert_eq!(
            (closed.from, closed.to),
            (BreakerState::HalfOpen, BreakerState::Closed)
        );
        assert!(!admitted(breaker.admit()).0.is_probe());
    }

    #[test]
    fn failed_probe_reopens() {
        let (breaker, clock) = breaker(1);
        open(&breaker);
        clock.advance(Duration::from_secs(31));

        let (probe, _) = admitted(breaker.admit());
        let reopened = probe
            .failed(&BankError::Timeout { elapsed_ms: 10_000 })
            .unwrap();
        assert_eq!(
            (reopened.from, reopened.to),
            (BreakerState::HalfOpen, BreakerState::Open)
        );
        assert_eq!(reopened.reason, "probe failed: timeout");
        assert!(matches!(
            breaker.admit(),
            Admission::Rejected {
                state: BreakerState::Open,
                ..
            }
        ));

        // The new cool-down counts from the failed probe, not from the first opening.
        clock.advance(Duration::from_secs(30));
        assert!(matches!(breaker.admit(), Admission::Admitted { .. }));
    }

    #[test]
    fn dropped_probe_frees_slot() {
        let (breaker, clock) = breaker(1);
        open(&breaker);
        clock.advance(Duration::from_secs(30));

        drop(admitted(breaker.admit()).0);
        let (probe, transition) = admitted(breaker.admit());
        assert!(probe.is_probe());
        assert_eq!(transition, None, "still half-open, so no new transition");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn late_closed_outcome_ignored() {
        let (breaker, _) = breaker(1);
        let (late, _) = admitted(breaker.admit());
        open(&breaker);

        assert_eq!(late.succeeded(), None);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn concurrent_callers_get_one_probe() {
        let (breaker, clock) = breaker(1);
        open(&breaker);
        clock.advance(Duration::from_secs(30));

        let barrier = std::sync::Barrier::new(8);
        let probes = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        // Hold any permit until every thread has asked, then drop it.
                        let admission = breaker.admit();
                        let probe = matches!(admission, Admission::Admitted { .. });
                        barrier.wait();
                        probe
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .filter(|probe| *probe)
                .count()
        });
        assert_eq!(probes, 1);
    }
}
