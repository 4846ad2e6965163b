//! Retry pacing shared by init's loops (the service restart delay, the config fetch retries)
//! and the service's first config load.
//!
//! Pure arithmetic on durations the caller passes in (how long the last run lasted); nothing here
//! sleeps or reads a clock, so the schedule is tested without waiting.

use std::time::Duration;

/// A delay that doubles from `first` up to `max` on each failure, and starts over once a run
/// lasted `healthy_after` or more (a crash after an hour of good service is not a crash loop).
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    healthy_after: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration, healthy_after: Duration) -> Backoff {
        Backoff { first, max, healthy_after, next: first }
    }

    /// The service's schedule: 1 s doubling to 30 s, reset after 60 s of good running.
    pub fn service_restart() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30), Duration::from_secs(60))
    }

    /// The config fetch schedule: 1 s doubling to 30 s between attempts (never reset: a
    /// config is fetched once per boot).
    pub fn config_retry() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30), Duration::MAX)
    }

    /// `bastion run`'s first config load (SSM may come up late): 1 s doubling to 60 s.
    pub fn first_config_load() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60), Duration::MAX)
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay before the next attempt, given how long the last attempt ran before failing.
    pub fn after_failure(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.healthy_after {
            self.next = self.first;
        }
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_reset_starts_the_doubling_over() {
        let mut b = Backoff::new(secs(2), secs(60), Duration::MAX);
        assert_eq!((b.after_failure(Duration::ZERO), b.after_failure(Duration::ZERO)), (secs(2), secs(4)));
        b.reset();
        assert_eq!(b.after_failure(Duration::ZERO), secs(2));
    }

    #[test]
    fn the_first_config_load_doubles_to_a_minute() {
        let mut b = Backoff::first_config_load();
        let delays: Vec<u64> = (0..9).map(|_| b.after_failure(Duration::ZERO).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn service_restart_doubles_to_thirty_seconds() {
        let mut b = Backoff::service_restart();
        let delays: Vec<u64> = (0..8).map(|_| b.after_failure(secs(2)).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_minute_of_good_running_resets_the_delay() {
        let mut b = Backoff::service_restart();
        for _ in 0..6 {
            b.after_failure(secs(1));
        }
        assert_eq!(b.after_failure(secs(59)), secs(30));
        assert_eq!(b.after_failure(secs(60)), secs(1));
        assert_eq!(b.after_failure(secs(0)), secs(2));
        assert_eq!(b.after_failure(secs(3600)), secs(1));
    }

    #[test]
    fn config_retry_never_resets() {
        let mut b = Backoff::config_retry();
        let delays: Vec<u64> = (0..7).map(|_| b.after_failure(secs(1000)).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
    }
}
