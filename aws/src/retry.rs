//! How long to wait before the next attempt: exponential backoff with full jitter (a random
//! delay between zero and the exponential bound, as AWS's architecture blog recommends), capped.
//! The random number is passed in, so the policy is a plain function.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The bound of the first retry's delay; it doubles each attempt...
    pub base: Duration,
    /// ...up to this.
    pub cap: Duration,
    /// Attempts in all (the first one included).
    pub attempts: u32,
}

impl RetryPolicy {
    /// For ordinary calls: up to 8 attempts over about half a minute at worst.
    pub const STANDARD: RetryPolicy =
        RetryPolicy { base: Duration::from_millis(200), cap: Duration::from_secs(10), attempts: 8 };
    /// For calls whose caller retries by itself (the CloudWatch shipper keeps the batch and
    /// backs off): one retry, soon.
    pub const ONCE_MORE: RetryPolicy =
        RetryPolicy { base: Duration::from_millis(200), cap: Duration::from_secs(1), attempts: 2 };
    /// For the many PutSnapshotBlock calls of an upload: more patience with throttling.
    pub const UPLOAD: RetryPolicy =
        RetryPolicy { base: Duration::from_millis(250), cap: Duration::from_secs(20), attempts: 12 };

    /// The delay before attempt `attempt + 1` (`attempt` ≥ 1 is the one that just failed),
    /// given a uniform random `unit` in [0, 1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let bound = self.base.saturating_mul(1 << exponent).min(self.cap);
        bound.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// A uniform random number in [0, 1) from the kernel.
pub fn unit_random() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_random_below_their_bound() {
        let b = RetryPolicy::STANDARD;
        assert_eq!(b.delay(1, 0.999_999).as_millis(), 199);
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(b.delay(30, 1.0), b.cap);
        assert_eq!(b.delay(5, 0.0), Duration::ZERO);
        for _ in 0..100 {
            let u = unit_random();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
