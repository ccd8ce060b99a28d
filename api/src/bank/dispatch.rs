//! The dispatch loop: admit through the breaker, record the attempt, call the bank, record
//! the outcome, back off with full jitter, and dead-letter after the last attempt.
//!
//! Ordering rule: the bank is never called before `attempted` has returned `Ok`, so the
//! event store contains every attempt that may have reached the bank. Any recorder error
//! ends the dispatch with that error. The caller resumes the payment later with the same
//! idempotency key, and the bank returns its first receipt if the payment went through.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    Admission, BankAdapter, BankError, BankPaymentRequest, BankReceipt, BreakerState,
    BreakerTransition, CircuitBreaker, RetryPolicy,
};

/// Sink for each dispatch step. The caller turns each call into an event.
///
/// Every method returns only after the fact is stored. An error stops the dispatch of that
/// payment.
#[async_trait]
pub trait DispatchRecorder: Send + Sync {
    /// Waits until attempt `attempt` may start, for example while a credential the
    /// recorder writes with is stale. Runs before every attempt, including those the open
    /// breaker will reject, since they too write events. The default returns at once.
    async fn before_attempt(&self, _payment_id: Uuid, _attempt: u32) {}

    /// Records that the bank is about to be called for attempt `attempt` (a `DispatchAttempted` event).
    ///
    /// Not called for attempts the open breaker rejects, because those never reach the bank.
    async fn attempted(&self, payment_id: Uuid, attempt: u32) -> anyhow::Result<()>;

    /// Attempt `attempt` failed (a `DispatchFailed` event). `retry_in` is the delay before
    /// the next attempt when `will_retry` is true, and `None` otherwise.
    async fn failed(
        &self,
        payment_id: Uuid,
        attempt: u32,
        error: &BankError,
        will_retry: bool,
        retry_in: Option<Duration>,
    ) -> anyhow::Result<()>;

    /// Records that the bank accepted the payment on attempt `attempt` (a `ReceiptRecorded` event).
    async fn receipted(
        &self,
        payment_id: Uuid,
        attempt: u32,
        receipt: &BankReceipt,
    ) -> anyhow::Result<()>;

    /// Records that the payment is given up and goes to the dead-letter queue (a `PaymentDeadLettered`
    /// event). `attempts` is the number of the last attempt, which counts attempts made in
    /// earlier dispatches of this payment too.
    async fn dead_lettered(
        &self,
        payment_id: Uuid,
        attempts: u32,
        last_error: &BankError,
    ) -> anyhow::Result<()>;

    /// Records that the circuit breaker changed state (a `BreakerStateChanged` event). States are spelt
    /// as [`BreakerState::as_str`] returns them: `closed`, `open` or `half_open`. Reported
    /// by the one dispatch whose call caused the change.
    async fn breaker_changed(&self, from: &str, to: &str, reason: &str) -> anyhow::Result<()>;
}

/// How a dispatch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchOutcome {
    /// The bank accepted the payment.
    Receipted(BankReceipt),
    /// The payment was dead-lettered after a final failure or its last attempt.
    DeadLettered,
}

/// Dispatches one payment, making at most `policy.max_attempts` attempts numbered from
/// `first_attempt`.
///
/// Pass `first_attempt = 1` for a new payment, or the last recorded attempt + 1 when
/// resuming, so attempt numbers stay unique. An attempt the breaker rejects does not call
/// the bank but still counts, as a failure of kind `breaker_open`, so a bank outage
/// dead-letters each payment after a bounded number of attempts instead of holding it.
/// The dead letter names the last failure the bank itself returned, when there was one,
/// rather than the open breaker.
/// A failure that is not retryable (a 4xx other than 408 and 429) dead-letters at once.
///
/// # Errors
/// Returns the recorder's error as soon as any recorder call fails, and an error if
/// `first_attempt` is 0, `policy.max_attempts` is 0 or the attempt numbers overflow `u32`.
pub async fn dispatch_payment(
    adapter: &dyn BankAdapter,
    breaker: &CircuitBreaker,
    policy: &RetryPolicy,
    request: &BankPaymentRequest,
    payment_id: Uuid,
    first_attempt: u32,
    recorder: &dyn DispatchRecorder,
) -> anyhow::Result<DispatchOutcome> {
    anyhow::ensure!(first_attempt >= 1, "first_attempt is 1-based, got 0");
    anyhow::ensure!(
        policy.max_attempts >= 1,
        "retry policy max_attempts must be at least 1"
    );
    let last_attempt = first_attempt
        .checked_add(policy.max_attempts - 1)
        .context("attempt numbers overflow u32")?;

    let mut attempt = first_attempt;
    // The last failure that came from the bank itself: when the final attempt only met the
    // open breaker, this is the cause an operator needs in the dead-letter queue.
    let mut last_bank_error: Option<BankError> = None;
    loop {
        recorder.before_attempt(payment_id, attempt).await;
        let call = Attempt {
            adapter,
            breaker,
            request,
            payment_id,
            attempt,
            recorder,
        };
        let error = match call.run().await? {
            Ok(receipt) => return Ok(DispatchOutcome::Receipted(receipt)),
            Err(error) => error,
        };

        let retry_in = next_delay(policy, &error, attempt, last_attempt);
        recorder
            .failed(payment_id, attempt, &error, retry_in.is_some(), retry_in)
            .await?;
        if !matches!(error, BankError::BreakerOpen { .. }) {
            last_bank_error = Some(error.clone());
        }
        let Some(delay) = retry_in else {
            let cause = match (&error, &last_bank_error) {
                (BankError::BreakerOpen { .. }, Some(bank_error)) => bank_error,
                _ => &error,
            };
            tracing::warn!(%payment_id, attempt, outcome = cause.kind(), "payment dead-lettered");
            recorder.dead_lettered(payment_id, attempt, cause).await?;
            return Ok(DispatchOutcome::DeadLettered);
        };

        breaker.metrics().record_retry();
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// Returns the delay before the next attempt, or `None` when this failure is final.
fn next_delay(
    policy: &RetryPolicy,
    error: &BankError,
    attempt: u32,
    last_attempt: u32,
) -> Option<Duration> {
    if !error.is_retryable() || attempt >= last_attempt {
        return None;
    }
    // The backoff exponent counts attempts within this dispatch, so a resumed payment
    // starts again from the base delay.
    let attempt_in_dispatch = policy.max_attempts - (last_attempt - attempt);
    let jittered = policy.jittered_delay(attempt_in_dispatch, &mut rand::thread_rng());
    match error {
        // Waiting out the cool-down keeps a short outage from using up every attempt
        // while no call can reach the bank. The jitter spreads the waiting payments, so
        // they do not all meet the single half-open probe at once.
        BankError::BreakerOpen { retry_after_ms } => {
            Some(Duration::from_millis(*retry_after_ms).saturating_add(jittered))
        }
        _ => Some(jittered),
    }
}

/// One attempt of one payment.
struct Attempt<'a> {
    adapter: &'a dyn BankAdapter,
    breaker: &'a CircuitBreaker,
    request: &'a BankPaymentRequest,
    payment_id: Uuid,
    attempt: u32,
    recorder: &'a dyn DispatchRecorder,
}

impl Attempt<'_> {
    /// Runs the attempt. The outer error is a recorder failure; the inner one is the
    /// bank failure to record.
    async fn run(self) -> anyhow::Result<Result<BankReceipt, BankError>> {
        let (permit, state) = match self.breaker.admit() {
            Admission::Rejected { state, retry_after } => {
                return Ok(Err(self.rejected(state, retry_after)));
            }
            Admission::Admitted { permit, transition } => {
                self.record_transition(transition).await?;
                let state = if permit.is_probe() {
                    BreakerState::HalfOpen
                } else {
                    BreakerState::Closed
                };
                (permit, state)
            }
        };

        // The attempt is stored before the bank can see it.
        self.recorder
            .attempted(self.payment_id, self.attempt)
            .await?;

        let span = tracing::info_span!(
            "bank_attempt",
            payment_id = %self.payment_id,
            attempt = self.attempt,
            breaker_state = state.as_str(),
        );
        let result = self.adapter.submit(self.request).instrument(span).await;

        let transition = match &result {
            Ok(_) => permit.succeeded(),
            Err(error) => permit.failed(error),
        };
        self.record_transition(transition).await?;
        if let Ok(receipt) = &result {
            self.recorder
                .receipted(self.payment_id, self.attempt, receipt)
                .await?;
        }
        Ok(result)
    }

    fn rejected(&self, state: BreakerState, retry_after: Duration) -> BankError {
        let retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            payment_id = %self.payment_id,
            attempt = self.attempt,
            breaker_state = state.as_str(),
            outcome = "breaker_open",
            latency_ms = 0,
            "bank call skipped"
        );
        BankError::BreakerOpen { retry_after_ms }
    }

    async fn record_transition(&self, transition: Option<BreakerTransition>) -> anyhow::Result<()> {
        match transition {
            Some(change) => {
                let (from, to) = (change.from.as_str(), change.to.as_str());
                self.recorder
                    .breaker_changed(from, to, &change.reason)
                    .await
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::bank::{BankMetrics, BreakerConfig};
    use domain::events::PayeeAccount;

    /// An adapter that fails its first `failures` calls with a 503, then accepts.
    struct FlakyBank {
        failures: u32,
        calls: AtomicU32,
        keys: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl BankAdapter for FlakyBank {
        async fn submit(&self, request: &BankPaymentRequest) -> Result<BankReceipt, BankError> {
            self.keys
                .lock()
                .unwrap()
                .push(request.idempotency_key.clone());
            let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if call <= self.failures {
                return Err(BankError::Http5xx {
                    status: 503,
                    detail: "down".into(),
                });
            }
            Ok(BankReceipt {
                bank_reference: "REF-1".into(),
                status: 201,
                raw_body: Vec::new(),
            })
        }
    }

    /// A recorder that stores each call as a line and can fail `attempted`.
    #[derive(Default)]
    struct Log {
        lines: Mutex<Vec<String>>,
        fail_attempted: bool,
    }

    impl Log {
        fn push(&self, line: String) {
            self.lines.lock().unwrap().push(line);
        }
        fn lines(&self) -> Vec<String> {
            self.lines.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl DispatchRecorder for Log {
        async fn attempted(&self, _: Uuid, attempt: u32) -> anyhow::Result<()> {
            anyhow::ensure!(!self.fail_attempted, "store unavailable");
            self.push(format!("attempted {attempt}"));
            Ok(())
        }
        async fn failed(
            &self,
            _: Uuid,
            attempt: u32,
            error: &BankError,
            will_retry: bool,
            retry_in: Option<Duration>,
        ) -> anyhow::Result<()> {
            assert_eq!(will_retry, retry_in.is_some());
            self.push(format!(
                "failed {attempt} {} retry={will_retry}",
                error.kind()
            ));
            Ok(())
        }
        async fn receipted(
            &self,
            _: Uuid,
            attempt: u32,
            receipt: &BankReceipt,
        ) -> anyhow::Result<()> {
            self.push(format!("receipted {attempt} {}", receipt.bank_reference));
            Ok(())
        }
        async fn dead_lettered(
            &self,
            _: Uuid,
            attempts: u32,
            error: &BankError,
        ) -> anyhow::Result<()> {
            self.push(format!("dead_lettered {attempts} {}", error.kind()));
            Ok(())
        }
        async fn breaker_changed(&self, from: &str, to: &str, _: &str) -> anyhow::Result<()> {
            self.push(format!("breaker {from}->{to}"));
            Ok(())
        }
    }

    fn bank(failures: u32) -> FlakyBank {
        FlakyBank {
            failures,
            calls: AtomicU32::new(0),
            keys: Mutex::new(Vec::new()),
        }
    }

    fn request() -> BankPaymentRequest {
        BankPaymentRequest {
            idempotency_key: "ledger-1:payment-1".into(),
            amount_minor: 500,
            currency: "AUD".into(),
            account: PayeeAccount::Bsb {
                bsb: "123456".into(),
                account: "1".into(),
            },
            payee_name: "Payee".into(),
            reference: "ref".into(),
        }
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        }
    }

    fn closed_breaker(threshold: u32) -> CircuitBreaker {
        let config = BreakerConfig {
            failure_threshold: threshold,
            cool_down: Duration::from_secs(60),
        };
        CircuitBreaker::new(config, Arc::new(BankMetrics::new()))
    }

    async fn run(
        bank: &FlakyBank,
        breaker: &CircuitBreaker,
        attempts: u32,
        log: &Log,
    ) -> DispatchOutcome {
        let (policy, request) = (policy(attempts), request());
        dispatch_payment(bank, breaker, &policy, &request, Uuid::nil(), 1, log)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn retries_then_receipt() {
        let (bank, breaker, log) = (bank(2), closed_breaker(10), Log::default());
        let outcome = run(&bank, &breaker, 5, &log).await;

        assert!(
            matches!(outcome, DispatchOutcome::Receipted(ref r) if r.bank_reference == "REF-1")
        );
        assert_eq!(
            log.lines(),
            [
                "attempted 1",
                "failed 1 http_5xx retry=true",
                "attempted 2",
                "failed 2 http_5xx retry=true",
                "attempted 3",
                "receipted 3 REF-1",
            ]
        );
        assert_eq!(breaker.metrics().retries(), 2);
    }

    #[tokio::test]
    async fn exhausted_attempts_dead_letter() {
        let (bank, breaker, log) = (bank(u32::MAX), closed_breaker(10), Log::default());
        let outcome = run(&bank, &breaker, 3, &log).await;

        assert_eq!(outcome, DispatchOutcome::DeadLettered);
        assert_eq!(bank.calls.load(Ordering::SeqCst), 3);
        assert_eq!(log.lines().last().unwrap(), "dead_lettered 3 http_5xx");
        assert!(bank
            .keys
            .lock()
            .unwrap()
            .iter()
            .all(|key| key == "ledger-1:payment-1"));
    }

    #[tokio::test]
    async fn open_breaker_skips_bank_until_probe() {
        let config = BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_millis(30),
        };
        let breaker = CircuitBreaker::new(config, Arc::new(BankMetrics::new()));
        let (bank, log) = (bank(u32::MAX), Log::default());
        let outcome = run(&bank, &breaker, 4, &log).await;

        assert_eq!(outcome, DispatchOutcome::DeadLettered);
        assert_eq!(
            bank.calls.load(Ordering::SeqCst),
            3,
            "attempt 3 must not reach the bank; attempt 4 is the half-open probe"
        );
        assert_eq!(
            log.lines(),
            [
                "attempted 1",
                "failed 1 http_5xx retry=true",
                "attempted 2",
                "breaker closed->open",
                "failed 2 http_5xx retry=true",
                "failed 3 breaker_open retry=true",
                "breaker open->half_open",
                "attempted 4",
                "breaker half_open->open",
                "failed 4 http_5xx retry=false",
                "dead_lettered 4 http_5xx",
            ]
        );
    }

    #[tokio::test]
    async fn dead_letter_names_bank_failure_behind_open_breaker() {
        let config = BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(60),
        };
        let breaker = CircuitBreaker::new(config, Arc::new(BankMetrics::new()));
        let (bank, log) = (bank(u32::MAX), Log::default());
        let outcome = run(&bank, &breaker, 3, &log).await;

        assert_eq!(outcome, DispatchOutcome::DeadLettered);
        let lines = log.lines();
        assert_eq!(lines[lines.len() - 2], "failed 3 breaker_open retry=false");
        assert_eq!(lines[lines.len() - 1], "dead_lettered 3 http_5xx");
    }

    #[test]
    fn breaker_open_waits_out_cool_down() {
        let policy = policy(6);
        let error = BankError::BreakerOpen {
            retry_after_ms: 5_000,
        };
        for attempt in 1..6 {
            let delay = next_delay(&policy, &error, attempt, 6).unwrap();
            assert!(
                delay >= Duration::from_millis(5_000),
                "attempt {attempt}: {delay:?}"
            );
            assert!(
                delay <= Duration::from_millis(5_000) + policy.max_delay,
                "{delay:?}"
            );
        }
        assert_eq!(
            next_delay(&policy, &error, 6, 6),
            None,
            "the last attempt is final"
        );
    }

    #[tokio::test]
    async fn recorder_failure_stops_before_bank() {
        let (bank, breaker) = (bank(0), closed_breaker(10));
        let log = Log {
            fail_attempted: true,
            ..Log::default()
        };
        let (policy, request) = (policy(3), request());
        let result =
            dispatch_payment(&bank, &breaker, &policy, &request, Uuid::nil(), 1, &log).await;

        assert!(result.is_err());
        assert_eq!(bank.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn resumed_dispatch_numbers_attempts() {
        let (bank, breaker, log) = (bank(u32::MAX), closed_breaker(10), Log::default());
        let (policy, request) = (policy(2), request());
        let outcome = dispatch_payment(&bank, &breaker, &policy, &request, Uuid::nil(), 4, &log)
            .await
            .unwrap();

        assert_eq!(outcome, DispatchOutcome::DeadLettered);
        assert_eq!(
            log.lines(),
            [
                "attempted 4",
                "failed 4 http_5xx retry=true",
                "attempted 5",
                "failed 5 http_5xx retry=false",
                "dead_lettered 5 http_5xx",
            ]
        );
    }

    #[tokio::test]
    async fn zero_first_attempt_rejected() {
        let (bank, breaker, log) = (bank(0), closed_breaker(10), Log::default());
        let (policy, request) = (policy(2), request());
        let result =
            dispatch_payment(&bank, &breaker, &policy, &request, Uuid::nil(), 0, &log).await;
        assert!(result.is_err());
        assert_eq!(bank.calls.load(Ordering::SeqCst), 0);
    }
}
