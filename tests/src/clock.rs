//! A clock the test moves forward, to reach delays, locks and stale factors without
//! waiting.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use domain::clock::Clock;

/// Time that only moves when the test says so.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// Starts at the current system time.
    pub fn starting_now() -> Arc<ManualClock> {
        let now = domain::clock::SystemClock.now_micros();
        Arc::new(ManualClock(AtomicI64::new(now)))
    }

    /// Moves the clock forward.
    pub fn advance_seconds(&self, seconds: i64) {
        self.0.fetch_add(seconds * 1_000_000, Ordering::SeqCst);
    }

    /// Current time in whole seconds since the Unix epoch.
    pub fn unix_seconds(&self) -> u64 {
        u64::try_from(self.now_micros() / 1_000_000).expect("the clock starts after 1970")
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
