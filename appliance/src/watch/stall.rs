//! When a client's tunnel has stalled, and when to move it again: a pure function of the
//! peer's byte counters over time (no I/O, time passed in), so every rule is a table test.
//!
//! A stall is "data sent and nothing received for `stall_after`": the clock starts at the first
//! sample whose sent bytes grew by more than a lone keepalive (32 bytes: WireGuard answers
//! a keepalive with nothing, by design, so a keepalive alone is never a stall), and stops as
//! soon as received bytes grow. An unanswered handshake initiation (148 bytes) counts as data.
//! While the stall lasts, rotations follow with a growing backoff up to `max_backoff`: the first
//! may land on the dead bastion again, because the load balancer has not marked it unhealthy
//! yet (AWS's fastest health checks take about 10 s).

use std::time::Duration;

/// What a data message without payload adds to the sent bytes.
pub const KEEPALIVE_BYTES: u64 = 32;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StallParams {
    /// Data sent and nothing received this long is a stall.
    pub stall_after: Duration,
    /// After a rotation, wait this long for an answer before the next one...
    pub first_backoff: Duration,
    /// ...growing by half each time, up to this.
    pub max_backoff: Duration,
}

impl Default for StallParams {
    fn default() -> StallParams {
        StallParams {
            stall_after: Duration::from_secs(2),
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(4),
        }
    }
}

/// One reading of a peer's counters (cumulative, as WireGuard reports them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// What the watcher should do after a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    Fine,
    /// Move the tunnel to a new flow: `attempt` 1 is the first rotation of this stall; `silent`
    /// is how long nothing has been received while data went out.
    Rotate { attempt: u32, silent: Duration },
    /// Bytes arrive again after `rotations` rotations and `outage` without an answer.
    Recovered { rotations: u32, outage: Duration },
}

#[derive(Clone, Debug)]
pub struct StallDetector {
    params: StallParams,
    last: Option<Counters>,
    /// When data first went out unanswered (None: everything sent so far was answered).
    unanswered_since: Option<Duration>,
    /// When the current stall's data first went unanswered (kept across counter restarts).
    stall_since: Option<Duration>,
    rotations: u32,
    next_rotation: Option<Duration>,
}

impl StallDetector {
    pub fn new(params: StallParams) -> StallDetector {
        StallDetector {
            params,
            last: None,
            unanswered_since: None,
            stall_since: None,
            rotations: 0,
            next_rotation: None,
        }
    }

    /// The tunnel was moved for another reason (a bastion asked its peers to move): a new flow,
    /// so the clock starts again, as after a rotation.
    pub fn moved(&mut self) {
        self.unanswered_since = None;
        self.next_rotation = None;
    }

    /// Feeds one sample taken at `now`.
    pub fn observe(&mut self, now: Duration, counters: Counters) -> Verdict {
        let Some(last) = self.last.replace(counters) else { return Verdict::Fine };
        if counters.rx_bytes < last.rx_bytes || counters.tx_bytes < last.tx_bytes {
            // The counters restarted (the peer was removed and added): a fresh start.
            self.unanswered_since = None;
            return Verdict::Fine;
        }
        if counters.rx_bytes > last.rx_bytes {
            let verdict = match (self.rotations, self.stall_since) {
                (0, _) => Verdict::Fine,
                (rotations, since) => {
                    Verdict::Recovered { rotations, outage: since.map_or(Duration::ZERO, |s| now.saturating_sub(s)) }
                }
            };
            self.unanswered_since = None;
            self.stall_since = None;
            self.rotations = 0;
            self.next_rotation = None;
            return verdict;
        }
        let sent = counters.tx_bytes - last.tx_bytes;
        if sent > KEEPALIVE_BYTES && self.unanswered_since.is_none() {
            self.unanswered_since = Some(now);
        }
        let Some(since) = self.unanswered_since else { return Verdict::Fine };
        let silent = now.saturating_sub(since);
        let due = match self.next_rotation {
            None => silent >= self.params.stall_after,
            Some(at) => now >= at,
        };
        if !due {
            return Verdict::Fine;
        }
        self.rotations += 1;
        self.stall_since.get_or_insert(since);
        self.next_rotation = Some(now + self.backoff(self.rotations));
        Verdict::Rotate { attempt: self.rotations, silent }
    }

    /// The wait after rotation `n` (1-based): first_backoff × 1.5^(n−1), at most max_backoff.
    fn backoff(&self, n: u32) -> Duration {
        let grown = self.params.first_backoff.as_secs_f64() * 1.5f64.powi(n.saturating_sub(1).min(20) as i32);
        Duration::from_secs_f64(grown.min(self.params.max_backoff.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds (time ms, rx, tx) samples; returns every verdict that is not Fine, with its time.
    fn run(samples: &[(u64, u64, u64)]) -> Vec<(u64, Verdict)> {
        let mut d = StallDetector::new(StallParams::default());
        samples
            .iter()
            .map(|&(t, rx, tx)| (t, d.observe(ms(t), Counters { rx_bytes: rx, tx_bytes: tx })))
            .filter(|(_, v)| *v != Verdict::Fine)
            .collect()
    }

    /// Samples every 200 ms from `from` to `to` (exclusive) with fixed rx and tx growing by
    /// `tx_step` each sample.
    fn stalled(from: u64, to: u64, rx: u64, tx0: u64, tx_step: u64) -> Vec<(u64, u64, u64)> {
        (from..to).step_by(200).enumerate().map(|(i, t)| (t, rx, tx0 + tx_step * (i as u64 + 1))).collect()
    }

    #[test]
    fn answered_traffic_and_lone_keepalives_are_never_a_stall() {
        // Requests and answers every sample.
        let busy: Vec<_> = (0..50).map(|i| (i * 200, i * 100, i * 120)).collect();
        assert_eq!(run(&busy), vec![]);
        // A keepalive every 25 s and nothing back, for two minutes.
        let idle: Vec<_> = (0..600).map(|i| (i * 200, 500, 1000 + 32 * (i / 125))).collect();
        assert_eq!(run(&idle), vec![]);
    }

    #[test]
    fn data_without_answers_rotates_after_stall_after_then_with_a_growing_backoff() {
        let mut samples = vec![(0, 1000, 1000)];
        samples.extend(stalled(200, 20_000, 1000, 1000, 96));
        let rotations: Vec<(u64, Verdict)> = run(&samples);
        let times: Vec<u64> = rotations.iter().map(|(t, _)| *t).collect();
        // Unanswered from 200 ms: first rotation 2 s later, then +2 s, +3 s, +4 s (the cap)...
        assert_eq!(times, vec![2200, 4200, 7200, 11200, 15200, 19200]);
        assert_eq!(rotations[0].1, Verdict::Rotate { attempt: 1, silent: ms(2000) });
        assert_eq!(rotations[2].1, Verdict::Rotate { attempt: 3, silent: ms(7000) });
    }

    #[test]
    fn the_clock_starts_at_the_first_data_not_at_a_keepalive_before_it() {
        // A keepalive at 1 s (no answer, by design), the first data at 10 s.
        let mut samples = vec![(0, 1000, 1000), (1000, 1000, 1032)];
        samples.extend(stalled(10_000, 13_000, 1000, 1032, 64));
        assert_eq!(run(&samples), vec![(12_000, Verdict::Rotate { attempt: 1, silent: ms(2000) })]);
    }

    #[test]
    fn bytes_received_end_the_stall_and_report_the_outage() {
        let mut samples = vec![(0, 1000, 1000)];
        samples.extend(stalled(200, 5000, 1000, 1000, 96));
        samples.push((5000, 1092, 4000));
        samples.extend(stalled(5200, 6000, 1092, 4000, 96));
        let verdicts = run(&samples);
        assert_eq!(verdicts.len(), 3, "{verdicts:?}");
        assert_eq!(verdicts[2], (5000, Verdict::Recovered { rotations: 2, outage: ms(4800) }));
        // Fresh after recovery: 800 ms of unanswered data is no stall yet.
    }

    #[test]
    fn counters_that_restart_are_a_fresh_start() {
        let mut samples = vec![(0, 1000, 1000)];
        samples.extend(stalled(200, 1800, 1000, 1000, 96));
        // The peer was re-added: counters from zero; the clock starts again.
        samples.extend(stalled(1800, 3600, 0, 0, 96));
        assert_eq!(run(&samples), vec![]);
    }
}
