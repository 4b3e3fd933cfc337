//! Retry delays: exponential with jitter, capped. Pure code apart from the seed.

use std::time::Duration;

use crate::config::BackoffConfig;

/// The delay before retry number `attempt` (0 for the first retry): the exponential step
/// `initial × 2^attempt`, capped at `max`, of which the upper half is scaled by `jitter`
/// (in `[0, 1)`). So a delay is never below half its step, and never above `max`.
pub fn delay(config: &BackoffConfig, attempt: u32, jitter: f64) -> Duration {
    let initial = config.initial.max(Duration::from_millis(1));
    let max = config.max.max(initial);
    let step = initial
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let half = step / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Successive delays for one sink.
#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Self {
        use std::hash::{BuildHasher as _, Hasher as _};
        // A per-process random seed, so sinks restarted together do not retry in step.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x9e37_79b9_7f4a_7c15);
        Backoff {
            config,
            attempt: 0,
            rng: hasher.finish() | 1,
        }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let jitter = (r >> 11) as f64 / (1u64 << 53) as f64;
        let d = delay(&self.config, self.attempt, jitter);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// After a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }

    #[test]
    fn schedule_doubles_up_to_the_cap() {
        let c = config();
        let lows: Vec<u128> = (0..10).map(|a| delay(&c, a, 0.0).as_millis()).collect();
        assert_eq!(lows, [50, 100, 200, 400, 800, 1600, 2500, 2500, 2500, 2500]);
        let highs: Vec<u128> = (0..8)
            .map(|a| delay(&c, a, 0.999_999).as_millis())
            .collect();
        assert_eq!(highs, [99, 199, 399, 799, 1599, 3199, 4999, 4999]);
        assert_eq!(delay(&c, u32::MAX, 0.5), Duration::from_millis(3750));
    }

    #[test]
    fn jittered_delays_stay_in_bounds_and_reset() {
        let mut b = Backoff::new(config());
        for attempt in 0..40 {
            let d = b.next_delay();
            let step = delay(&config(), attempt, 0.0) * 2;
            assert!(d >= step / 2 && d <= step, "{attempt}: {d:?}");
            assert!(d <= config().max);
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(100));
    }
}
