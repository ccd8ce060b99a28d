//! Bounded retries with exponential backoff and full jitter.
//!
//! Full jitter spreads the retries of many payments that failed together across the whole
//! backoff window, so a bank coming back from an outage is not hit by synchronised waves.

use std::time::Duration;

use rand::Rng;

/// How often and how patiently a payment is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per dispatch, the first one included; at least 1.
    pub max_attempts: u32,
    /// Backoff window after the first failed attempt.
    pub base_delay: Duration,
    /// Largest backoff window.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Returns the backoff window after failed attempt `attempt` (1-based):
    /// `min(max_delay, base_delay * 2^(attempt - 1))`, saturating instead of overflowing.
    pub fn backoff_window(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1);
        2u32.checked_pow(exponent)
            .and_then(|factor| self.base_delay.checked_mul(factor))
            .map_or(self.max_delay, |window| window.min(self.max_delay))
    }

    /// Draws the delay after failed attempt `attempt`, uniformly from
    /// `[0, backoff_window(attempt)]` (full jitter).
    ///
    /// Pass a seeded generator in tests to get reproducible delays.
    pub fn jittered_delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let window = self.backoff_window(attempt);
        // Windows beyond u64 nanoseconds (584 years) are clamped; no real policy gets there.
        let window_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let delay = Duration::from_nanos(rng.gen_range(0..=window_nanos));
        assert!(
            delay <= window,
            "jittered delay {delay:?} exceeds window {window:?}"
        );
        delay
    }

    /// Returns the longest total wait one dispatch can spend between its attempts: the sum
    /// of the windows after attempts 1 to `max_attempts - 1`.
    pub fn worst_case_backoff(&self) -> Duration {
        (1..self.max_attempts)
            .map(|attempt| self.backoff_window(attempt))
            .fold(Duration::ZERO, Duration::saturating_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn policy(base_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(base_ms),
            max_delay: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn backoff_window_doubles_then_caps() {
        let policy = policy(100, 1_000);
        let windows: Vec<u128> = (1..=6)
            .map(|attempt| policy.backoff_window(attempt).as_millis())
            .collect();
        assert_eq!(windows, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn backoff_window_saturates() {
        let policy = policy(1_000, 60_000);
        assert_eq!(policy.backoff_window(40), Duration::from_secs(60));
        assert_eq!(policy.backoff_window(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_within_window() {
        let policy = policy(50, 400);
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=10 {
            let window = policy.backoff_window(attempt);
            for _ in 0..200 {
                let delay = policy.jittered_delay(attempt, &mut rng);
                assert!(delay <= window, "attempt {attempt}: {delay:?} > {window:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_across_window() {
        // Full jitter must reach both ends of the window, not cluster near its top.
        let policy = policy(1_000, 1_000);
        let mut rng = StdRng::seed_from_u64(11);
        let delays: Vec<Duration> = (0..1_000)
            .map(|_| policy.jittered_delay(1, &mut rng))
            .collect();
        let below_tenth = delays
            .iter()
            .filter(|d| **d < Duration::from_millis(100))
            .count();
        let above_ninth = delays
            .iter()
            .filter(|d| **d > Duration::from_millis(900))
            .count();
        assert!(below_tenth > 50, "{below_tenth} of 1000 below 100 ms");
        assert!(above_ninth > 50, "{above_ninth} of 1000 above 900 ms");
    }

    #[test]
    fn jitter_reproducible_with_seed() {
        let policy = policy(100, 10_000);
        let mut first = StdRng::seed_from_u64(3);
        let mut second = StdRng::seed_from_u64(3);
        for attempt in 1..=5 {
            assert_eq!(
                policy.jittered_delay(attempt, &mut first),
                policy.jittered_delay(attempt, &mut second)
            );
        }
    }

    #[test]
    fn worst_case_backoff_of_defaults() {
        // Windows of 0.5, 1, 2, 4 and 8 s after attempts 1 to 5.
        assert_eq!(
            RetryPolicy::default().worst_case_backoff(),
            Duration::from_millis(15_500)
        );
    }
}
