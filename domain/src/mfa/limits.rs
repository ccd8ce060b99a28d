//! Limits on failed second-factor attempts: a growing delay after a few failures in a
//! window, and a lock after more, which only expires or an administrator releases.

/// Window over which failures are counted, in seconds (15 minutes).
pub const FAILURE_WINDOW_SECONDS: i64 = 15 * 60;
/// Failures in the window after which each attempt waits.
pub const DELAY_AFTER_FAILURES: u32 = 5;
/// Failures in the window that lock the operator.
pub const LOCK_AFTER_FAILURES: u32 = 10;
/// How long a lock lasts, in seconds (30 minutes).
pub const LOCK_SECONDS: i64 = 30 * 60;
/// Maximum delay between attempts, in seconds.
const MAX_DELAY_SECONDS: i64 = 300;

/// Decision of the limiter on the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptGate {
    /// The attempt may go ahead.
    Open,
    /// The attempt must wait this many more seconds.
    Wait {
        /// Seconds until the next attempt is allowed.
        retry_after_seconds: i64,
    },
    /// The operator is locked until this time.
    Locked {
        /// End of the lock, microseconds since the Unix epoch.
        until_micros: i64,
    },
}

/// Returns the delay after `failures` failures in the window: none up to
/// [`DELAY_AFTER_FAILURES`] - 1, then 1, 2, 4 ... seconds up to five minutes.
pub fn delay_seconds(failures: u32) -> i64 {
    if failures < DELAY_AFTER_FAILURES {
        return 0;
    }
    let exponent = (failures - DELAY_AFTER_FAILURES).min(16);
    (1i64 << exponent).min(MAX_DELAY_SECONDS)
}

/// Decides whether an attempt may go ahead, from the lock and the failures so far.
///
/// `failures_in_window` counts failures in the last [`FAILURE_WINDOW_SECONDS`] and
/// `last_failure_micros` is the newest of them.
pub fn gate(
    now_micros: i64,
    locked_until_micros: Option<i64>,
    failures_in_window: u32,
    last_failure_micros: Option<i64>,
) -> AttemptGate {
    if let Some(until_micros) = locked_until_micros.filter(|until| *until > now_micros) {
        return AttemptGate::Locked { until_micros };
    }
    let delay_micros = delay_seconds(failures_in_window) * 1_000_000;
    match last_failure_micros {
        Some(last) if delay_micros > 0 && now_micros < last + delay_micros => {
            let remaining = last + delay_micros - now_micros;
            AttemptGate::Wait {
                retry_after_seconds: (remaining + 999_999) / 1_000_000,
            }
        }
        _ => AttemptGate::Open,
    }
}

/// Returns whether a failure bringing the count to `failures_in_window` locks the operator.
pub fn locks_after(failures_in_window: u32) -> bool {
    failures_in_window >= LOCK_AFTER_FAILURES
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    #[test]
    fn delay_grows_after_five_and_is_capped() {
        let delays: Vec<i64> = (0..=10).map(delay_seconds).collect();
        assert_eq!(delays, [0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32]);
        assert_eq!(delay_seconds(40), MAX_DELAY_SECONDS);
    }

    #[test]
    fn gate_waits_then_opens() {
        let last = 1_000 * SECOND;
        assert_eq!(gate(last, None, 4, Some(last)), AttemptGate::Open);
        assert_eq!(
            gate(last + SECOND / 2, None, 6, Some(last)),
            AttemptGate::Wait {
                retry_after_seconds: 2
            }
        );
        assert_eq!(
            gate(last + 2 * SECOND, None, 6, Some(last)),
            AttemptGate::Open
        );
    }

    #[test]
    fn lock_holds_until_it_ends() {
        let now = 5_000 * SECOND;
        let until = now + LOCK_SECONDS * SECOND;
        assert_eq!(
            gate(now, Some(until), 0, None),
            AttemptGate::Locked {
                until_micros: until
            }
        );
        assert_eq!(gate(until, Some(until), 0, None), AttemptGate::Open);
        assert!(!locks_after(9));
        assert!(locks_after(10));
    }
}
