//! Injectable time source, so sealing is deterministic in tests and fixtures.

use std::sync::atomic::{AtomicI64, Ordering};

/// A source of wall-clock time in microseconds since the Unix epoch (UTC).
pub trait Clock: Send + Sync {
    /// Returns the current time in microseconds since the Unix epoch.
    fn now_micros(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        let elapsed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // Microseconds since 1970 fit in an i64 until the year 294,247.
        i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
    }
}

/// A clock that starts at a fixed instant and advances by a fixed step on every read.
#[derive(Debug)]
pub struct SteppingClock {
    next: AtomicI64,
    step_micros: i64,
}

impl SteppingClock {
    /// Creates a clock whose first reading is `start_micros`.
    pub fn new(start_micros: i64, step_micros: i64) -> Self {
        SteppingClock {
            next: AtomicI64::new(start_micros),
            step_micros,
        }
    }
}

impl Clock for SteppingClock {
    fn now_micros(&self) -> i64 {
        self.next.fetch_add(self.step_micros, Ordering::Relaxed)
    }
}
