//! Failed sign-ins under user names that no operator of the ledger has.
//!
//! An existing operator's failed sign-ins are counted in the operator store: after five
//! in the window each attempt waits (429), after ten the operator is locked (423). If
//! an unknown name always got 401, that difference would tell an attacker which names
//! exist. Unknown names are therefore counted here with the same limits, in memory, so
//! both get the same sequence of responses.

use std::collections::HashMap;
use std::sync::Mutex;

use domain::mfa::limits::{self, AttemptGate, FAILURE_WINDOW_SECONDS, LOCK_SECONDS};
use uuid::Uuid;

/// Maximum names tracked. When full, the name whose last failure is oldest is dropped.
const MAX_NAMES: usize = 10_000;

/// Failed sign-ins of one unknown name.
#[derive(Debug, Default)]
struct Tally {
    failures_micros: Vec<i64>,
    locked_until_micros: Option<i64>,
}

/// Failure counts of unknown user names, by ledger and name.
#[derive(Debug, Default)]
pub struct UnknownNames {
    tallies: Mutex<HashMap<(Uuid, String), Tally>>,
}

impl UnknownNames {
    /// Decides whether a sign-in under `name` may go ahead, as for an operator.
    pub fn gate(&self, ledger_id: Uuid, name: &str, now_micros: i64) -> AttemptGate {
        let tallies = self.tallies.lock().expect("unknown-name tallies poisoned");
        let Some(tally) = tallies.get(&(ledger_id, name.to_owned())) else {
            return AttemptGate::Open;
        };
        let window_start = now_micros - FAILURE_WINDOW_SECONDS * 1_000_000;
        let recent: Vec<i64> = (tally.failures_micros.iter().copied())
            .filter(|at| *at >= window_start)
            .collect();
        let count = u32::try_from(recent.len()).unwrap_or(u32::MAX);
        limits::gate(
            now_micros,
            tally.locked_until_micros,
            count,
            recent.last().copied(),
        )
    }

    /// Records a failed sign-in under `name`, locking it as an operator would be locked.
    pub fn record_failure(&self, ledger_id: Uuid, name: &str, now_micros: i64) {
        let mut tallies = self.tallies.lock().expect("unknown-name tallies poisoned");
        let key = (ledger_id, name.to_owned());
        if !tallies.contains_key(&key) && tallies.len() >= MAX_NAMES {
            let oldest = (tallies.iter())
                .min_by_key(|(_, tally)| tally.failures_micros.last().copied())
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                tallies.remove(&oldest);
            }
        }
        let tally = tallies.entry(key).or_default();
        let window_start = now_micros - FAILURE_WINDOW_SECONDS * 1_000_000;
        tally.failures_micros.retain(|at| *at >= window_start);
        tally.failures_micros.push(now_micros);
        let count = u32::try_from(tally.failures_micros.len()).unwrap_or(u32::MAX);
        if limits::locks_after(count) {
            tally.locked_until_micros = Some(now_micros + LOCK_SECONDS * 1_000_000);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    #[test]
    fn unknown_name_waits_then_locks() {
        let names = UnknownNames::default();
        let ledger = Uuid::from_u128(1);
        let mut now = 1_000 * SECOND;
        for _ in 0..5 {
            assert_eq!(names.gate(ledger, "nobody", now), AttemptGate::Open);
            names.record_failure(ledger, "nobody", now);
        }
        assert_eq!(
            names.gate(ledger, "nobody", now),
            AttemptGate::Wait {
                retry_after_seconds: 1
            }
        );
        for _ in 0..5 {
            now += 20 * SECOND;
            names.record_failure(ledger, "nobody", now);
        }
        assert!(matches!(
            names.gate(ledger, "nobody", now),
            AttemptGate::Locked { .. }
        ));
        assert_eq!(names.gate(ledger, "somebody", now), AttemptGate::Open);
    }
}
