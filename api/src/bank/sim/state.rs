//! The simulated bank's memory: accepted payments keyed by idempotency key, call counts and
//! the fault plan.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bank::BankPaymentRequest;

/// Time `timeout` mode keeps a call open before responding 504. It is longer than typical
/// client timeouts, so the client gives up first.
pub const TIMEOUT_HOLD: Duration = Duration::from_secs(60);

/// Fault behaviour of the simulated bank for payment calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Accept valid payments.
    Ok,
    /// Respond 503 without storing anything.
    Fail,
    /// Keep the call open for [`TIMEOUT_HOLD`], then respond 504 without storing anything.
    Timeout,
    /// Store the payment, then wait before responding, like a bank whose response is late.
    Slow {
        /// Wait before responding, in milliseconds.
        delay_ms: u64,
    },
}

/// A fault mode name other than `ok`, `fail`, `timeout` or `slow`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault mode {0:?}; expected ok, fail, timeout or slow")]
pub struct UnknownFaultMode(pub String);

impl FaultMode {
    /// Parses a mode name; `delay_ms` is used by `slow` only.
    ///
    /// # Errors
    /// Returns [`UnknownFaultMode`] for any other name.
    pub fn parse(name: &str, delay_ms: u64) -> Result<FaultMode, UnknownFaultMode> {
        match name {
            "ok" => Ok(FaultMode::Ok),
            "fail" => Ok(FaultMode::Fail),
            "timeout" => Ok(FaultMode::Timeout),
            "slow" => Ok(FaultMode::Slow { delay_ms }),
            other => Err(UnknownFaultMode(other.to_owned())),
        }
    }

    /// Returns the mode name: `ok`, `fail`, `timeout` or `slow`.
    pub fn name(self) -> &'static str {
        match self {
            FaultMode::Ok => "ok",
            FaultMode::Fail => "fail",
            FaultMode::Timeout => "timeout",
            FaultMode::Slow { .. } => "slow",
        }
    }
}

/// The body of `POST /_sim/faults` and of its response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultUpdate {
    /// Mode name: `ok`, `fail`, `timeout` or `slow`.
    pub mode: String,
    /// Calls the mode applies to before the bank returns to `ok`; `null` for no limit.
    #[serde(default)]
    pub count: Option<u64>,
    /// Delay of `slow` mode in milliseconds; ignored by the other modes.
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// Delay of `slow` mode when a fault update gives none.
pub(super) const DEFAULT_SLOW_MS: u64 = 2_000;

/// Fault applied to one call, decided when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    Fail,
    Hang(Duration),
    Slow(Duration),
}

/// One accepted payment, as listed by `GET /_sim/ledger`; the account is left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimPayment {
    /// Idempotency key it was accepted under.
    pub idempotency_key: String,
    /// Reference the bank returned.
    pub bank_reference: String,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// Currency code.
    pub currency: String,
    /// Payee name.
    pub payee_name: String,
    /// Reference text.
    pub reference: String,
}

/// Snapshot of the simulated bank, the body of `GET /_sim/ledger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimLedger {
    /// Payments accepted, one per idempotency key.
    pub distinct_payments: u64,
    /// `POST /v1/payments` calls received, faulted and rejected ones included.
    pub calls: u64,
    /// Accepted payments in acceptance order.
    pub payments: Vec<SimPayment>,
}

/// Result of offering a valid payment to the bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Acceptance {
    /// First time this key was seen.
    New(String),
    /// Same key and same body as before: the first reference again.
    Repeat(String),
    /// Same key with another body.
    Conflict,
}

/// The in-memory bank shared by the simulator's workers.
#[derive(Debug)]
pub(super) struct SimBank {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    calls: u64,
    payments: Vec<(SimPayment, BankPaymentRequest)>,
    by_key: HashMap<String, usize>,
    fail_first_remaining: u64,
    mode: FaultMode,
    mode_remaining: Option<u64>,
}

impl SimBank {
    /// Creates an empty bank that fails its first `fail_first_n` calls, then behaves as
    /// `mode`.
    pub(super) fn new(mode: FaultMode, fail_first_n: u64) -> Self {
        let state = State {
            calls: 0,
            payments: Vec::new(),
            by_key: HashMap::new(),
            fail_first_remaining: fail_first_n,
            mode,
            mode_remaining: None,
        };
        SimBank {
            state: Mutex::new(state),
        }
    }

    /// Returns a snapshot of calls and accepted payments.
    pub(super) fn ledger(&self) -> SimLedger {
        let state = self.lock();
        SimLedger {
            // A Vec length always fits in u64 on supported targets.
            distinct_payments: state.payments.len() as u64,
            calls: state.calls,
            payments: state
                .payments
                .iter()
                .map(|(listed, _)| listed.clone())
                .collect(),
        }
    }

    /// Applies `mode` to the next `count` calls (all calls when `None`), replacing the
    /// fault plan, including failures left from `fail_first_n`.
    pub(super) fn set_fault(&self, mode: FaultMode, count: Option<u64>) {
        let mut state = self.lock();
        state.fail_first_remaining = 0;
        // A count of zero applies the mode to no call at all.
        state.mode = if count == Some(0) {
            FaultMode::Ok
        } else {
            mode
        };
        state.mode_remaining = count.filter(|count| *count > 0);
    }

    /// Counts a payment call and decides its fault.
    pub(super) fn begin_call(&self) -> Fault {
        let mut state = self.lock();
        state.calls += 1;
        if state.fail_first_remaining > 0 {
            state.fail_first_remaining -= 1;
            return Fault::Fail;
        }
        let fault = match state.mode {
            FaultMode::Ok => Fault::None,
            FaultMode::Fail => Fault::Fail,
            FaultMode::Timeout => Fault::Hang(TIMEOUT_HOLD),
            FaultMode::Slow { delay_ms } => Fault::Slow(Duration::from_millis(delay_ms)),
        };
        if let Some(remaining) = state.mode_remaining {
            let remaining = remaining.saturating_sub(1);
            state.mode_remaining = Some(remaining);
            if remaining == 0 {
                state.mode = FaultMode::Ok;
                state.mode_remaining = None;
            }
        }
        fault
    }

    /// Stores a valid payment unless its key was seen before.
    pub(super) fn accept(&self, key: &str, payment: BankPaymentRequest) -> Acceptance {
        let mut state = self.lock();
        if let Some(&index) = state.by_key.get(key) {
            let (listed, stored) = &state.payments[index];
            if *stored != payment {
                return Acceptance::Conflict;
            }
            return Acceptance::Repeat(listed.bank_reference.clone());
        }

        let bank_reference = format!("SIM-{:010}", state.payments.len() + 1);
        let listed = SimPayment {
            idempotency_key: key.to_owned(),
            bank_reference: bank_reference.clone(),
            amount_minor: payment.amount_minor,
            currency: payment.currency.clone(),
            payee_name: payment.payee_name.clone(),
            reference: payment.reference.clone(),
        };
        let index = state.payments.len();
        state.payments.push((listed, payment));
        state.by_key.insert(key.to_owned(), index);
        assert_eq!(
            state.by_key.len(),
            state.payments.len(),
            "one payment per key"
        );
        Acceptance::New(bank_reference)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Only the invariant assert can panic under the lock. After it, serving more calls is
        // more useful to a test than poisoning every later call.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::events::PayeeAccount;

    fn payment(amount_minor: u64) -> BankPaymentRequest {
        BankPaymentRequest {
            idempotency_key: String::new(),
            amount_minor,
            currency: "AUD".into(),
            account: PayeeAccount::Bsb {
                bsb: "123456".into(),
                account: "1".into(),
            },
            payee_name: "Payee".into(),
            reference: String::new(),
        }
    }

    #[test]
    fn repeat_key_returns_same_reference() {
        let bank = SimBank::new(FaultMode::Ok, 0);
        let Acceptance::New(first) = bank.accept("k1", payment(100)) else {
            panic!("not new")
        };

        assert_eq!(bank.accept("k1", payment(100)), Acceptance::Repeat(first));
        assert_eq!(bank.accept("k1", payment(101)), Acceptance::Conflict);
        assert_eq!(
            bank.accept("k2", payment(101)),
            Acceptance::New("SIM-0000000002".into())
        );
        assert_eq!(bank.ledger().distinct_payments, 2);
    }

    #[test]
    fn fail_first_then_mode() {
        let bank = SimBank::new(FaultMode::Slow { delay_ms: 5 }, 2);
        let faults: Vec<Fault> = (0..3).map(|_| bank.begin_call()).collect();

        assert_eq!(
            faults,
            [
                Fault::Fail,
                Fault::Fail,
                Fault::Slow(Duration::from_millis(5))
            ]
        );
        assert_eq!(bank.ledger().calls, 3);
    }

    #[test]
    fn counted_fault_returns_to_ok() {
        let bank = SimBank::new(FaultMode::Ok, 1);
        bank.set_fault(FaultMode::Timeout, Some(2));
        let faults: Vec<Fault> = (0..3).map(|_| bank.begin_call()).collect();

        assert_eq!(
            faults,
            [
                Fault::Hang(TIMEOUT_HOLD),
                Fault::Hang(TIMEOUT_HOLD),
                Fault::None
            ]
        );
    }

    #[test]
    fn zero_count_is_no_fault() {
        let bank = SimBank::new(FaultMode::Ok, 0);
        bank.set_fault(FaultMode::Fail, Some(0));
        assert_eq!(bank.begin_call(), Fault::None);
    }

    #[test]
    fn mode_names_parse() {
        for name in ["ok", "fail", "timeout", "slow"] {
            assert_eq!(FaultMode::parse(name, 7).unwrap().name(), name);
        }
        assert_eq!(
            FaultMode::parse("slow", 7),
            Ok(FaultMode::Slow { delay_ms: 7 })
        );
        assert!(FaultMode::parse("broken", 0)
            .unwrap_err()
            .to_string()
            .contains("broken"));
    }
}
