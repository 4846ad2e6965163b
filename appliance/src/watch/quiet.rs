//! When to move a tunnel that a bastion asked to move: right after an answer came back, so that
//! no answer is stranded on the old flow and the next request is as far away as it can be.
//!
//! The decision only (sans-I/O): the caller samples the peer's counters every few milliseconds
//! and asks [`QuietMoment::observe`]. With a short round trip (a few hundred microseconds inside
//! a VPC) a request and its answer land in the same sample, so a sample that saw bytes received
//! counts as "an answer came", whether or not it also saw bytes sent; waiting for a sample with
//! a receive alone would wait out the deadline on every request/answer exchange and then move at
//! a random moment (the flake this module replaced: a ping sent between the new listen port and
//! the peer's re-creation went out with the old session and was lost).

use std::time::{Duration, Instant};

use super::stall::Counters;

/// How long the watcher waits at most before moving anyway.
pub const DEADLINE: Duration = Duration::from_secs(1);
/// Nothing sent or received for this long is quiet too.
pub const IDLE: Duration = Duration::from_millis(300);

/// The last sample and when the counters last changed.
#[derive(Debug)]
pub struct QuietMoment {
    started: Instant,
    last: Counters,
    changed_at: Instant,
}

impl QuietMoment {
    pub fn new(first: Counters, now: Instant) -> QuietMoment {
        QuietMoment { started: now, last: first, changed_at: now }
    }

    /// True when now is the moment to move: an answer just came, the peer has been idle for
    /// [`IDLE`], or [`DEADLINE`] has passed since the first sample.
    pub fn observe(&mut self, now: Counters, at: Instant) -> bool {
        let received = now.rx_bytes > self.last.rx_bytes;
        let sent = now.tx_bytes > self.last.tx_bytes;
        self.last = now;
        if received {
            return true;
        }
        if sent {
            self.changed_at = at;
        }
        at.duration_since(self.changed_at) >= IDLE || at.duration_since(self.started) >= DEADLINE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(rx_bytes: u64, tx_bytes: u64) -> Counters {
        Counters { rx_bytes, tx_bytes }
    }

    #[test]
    fn a_request_and_its_answer_in_one_sample_is_the_moment() {
        let t0 = Instant::now();
        let mut quiet = QuietMoment::new(counters(100, 100), t0);
        assert!(!quiet.observe(counters(100, 100), t0 + Duration::from_millis(5)));
        // The old rule (a receive without a send) never fired here and moved at the deadline.
        assert!(quiet.observe(counters(196, 196), t0 + Duration::from_millis(10)));
    }

    #[test]
    fn a_request_alone_waits_for_its_answer() {
        let t0 = Instant::now();
        let mut quiet = QuietMoment::new(counters(100, 100), t0);
        assert!(!quiet.observe(counters(100, 196), t0 + Duration::from_millis(5)));
        assert!(!quiet.observe(counters(100, 196), t0 + Duration::from_millis(200)));
        assert!(quiet.observe(counters(196, 196), t0 + Duration::from_millis(205)));
    }

    #[test]
    fn idle_or_the_deadline_ends_the_wait() {
        let t0 = Instant::now();
        let mut idle = QuietMoment::new(counters(0, 0), t0);
        assert!(!idle.observe(counters(0, 0), t0 + IDLE - Duration::from_millis(1)));
        assert!(idle.observe(counters(0, 0), t0 + IDLE));

        let mut sending = QuietMoment::new(counters(0, 0), t0);
        let mut tx = 0;
        let mut at = t0;
        while at < t0 + DEADLINE - Duration::from_millis(5) {
            at += Duration::from_millis(5);
            tx += 96;
            assert!(!sending.observe(counters(0, tx), at), "moved at {:?} while only sending", at - t0);
        }
        assert!(sending.observe(counters(0, tx + 96), t0 + DEADLINE));
    }
}
