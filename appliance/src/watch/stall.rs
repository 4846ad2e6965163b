//! When a client's tunnel has stalled, and when to move it again: a pure function of the
//! peer's byte counters over time (no I/O, time passed in), so every rule is a table test.
//!
//! A stall is "data sent and nothing received for `stall_after`": the clock starts at the first
//! sample whose sent bytes grew by more than a lone keepalive (32 bytes: WireGuard answers
//! a keepalive with nothing, by design, so a keepalive alone is never a stall), and stops as
//! soon as received bytes grow. An unanswered handshake initiation (148 bytes) counts as data.
//! While the stall lasts, moves follow every `first_backoff` (2 s) for `fast_for` (30 s): a move
//! made before the load balancer has marked the dead bastion unhealthy (AWS's fastest health
//! checks take 5–15 s) may land on it again, and the first move after that mark is the one
//! that recovers, so it must come soon. After `fast_for` the stall is not a dead bastion any
//! more (the whole cluster, or the client's own network, is gone): the wait doubles each time
//! up to `max_backoff`.

use std::time::Duration;

/// What a data message without payload adds to the sent bytes.
pub const KEEPALIVE_BYTES: u64 = 32;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StallParams {
    /// Data sent and nothing received this long is a stall.
    pub stall_after: Duration,
    /// After a move, wait this long for an answer before the next one...
    pub first_backoff: Duration,
    /// ...for as long as the stall is younger than this...
    pub fast_for: Duration,
    /// ...then doubling each time, up to this.
    pub max_backoff: Duration,
}

impl Default for StallParams {
    fn default() -> StallParams {
        StallParams {
            stall_after: Duration::from_secs(2),
            first_backoff: Duration::from_secs(2),
            fast_for: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl StallParams {
    /// The defaults with this stall threshold and longest backoff (the first backoff is never
    /// longer than the longest).
    pub fn with(stall_after: Duration, max_backoff: Duration) -> StallParams {
        let default = StallParams::default();
        StallParams { stall_after, max_backoff, first_backoff: default.first_backoff.min(max_backoff), ..default }
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
pub enum StallVerdict {
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
    /// Moves made after the stall was `fast_for` old.
    slow_rotations: u32,
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
            slow_rotations: 0,
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
    pub fn observe(&mut self, now: Duration, counters: Counters) -> StallVerdict {
        let Some(last) = self.last.replace(counters) else { return StallVerdict::Fine };
        if counters.rx_bytes < last.rx_bytes || counters.tx_bytes < last.tx_bytes {
            // The counters restarted: the peer was removed and added, by a move of ours (then
            // its handshake initiation is out and must be answered: the stall goes on, and the
            // next move comes on time even though WireGuard sends nothing more until its own
            // retry, 5 s later) or by someone else (a fresh start).
            self.unanswered_since = if self.rotations > 0 && counters.rx_bytes == 0 { Some(now) } else { None };
            return StallVerdict::Fine;
        }
        if counters.rx_bytes > last.rx_bytes {
            let verdict = match (self.rotations, self.stall_since) {
                (0, _) => StallVerdict::Fine,
                (rotations, since) => StallVerdict::Recovered {
                    rotations,
                    outage: since.map_or(Duration::ZERO, |s| now.saturating_sub(s)),
                },
            };
            self.unanswered_since = None;
            self.stall_since = None;
            self.rotations = 0;
            self.slow_rotations = 0;
            self.next_rotation = None;
            return verdict;
        }
        let sent = counters.tx_bytes - last.tx_bytes;
        if sent > KEEPALIVE_BYTES && self.unanswered_since.is_none() {
            self.unanswered_since = Some(now);
        }
        let Some(since) = self.unanswered_since else { return StallVerdict::Fine };
        let silent = now.saturating_sub(since);
        let due = match self.next_rotation {
            None => silent >= self.params.stall_after,
            Some(at) => now >= at,
        };
        if !due {
            return StallVerdict::Fine;
        }
        self.rotations += 1;
        let stall_since = *self.stall_since.get_or_insert(since);
        if now.saturating_sub(stall_since) >= self.params.fast_for {
            self.slow_rotations += 1;
        }
        self.next_rotation = Some(now + self.backoff());
        StallVerdict::Rotate { attempt: self.rotations, silent: now.saturating_sub(stall_since) }
    }

    /// The wait after this move: `first_backoff` while the stall is young, then doubling with
    /// each move up to `max_backoff`.
    fn backoff(&self) -> Duration {
        let grown = self.params.first_backoff.as_secs_f64() * 2f64.powi(self.slow_rotations.min(20) as i32);
        Duration::from_secs_f64(
            grown.min(self.params.max_backoff.as_secs_f64().max(self.params.first_backoff.as_secs_f64())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds (time ms, rx, tx) samples; returns every verdict that is not Fine, with its time.
    fn run(samples: &[(u64, u64, u64)]) -> Vec<(u64, StallVerdict)> {
        let mut d = StallDetector::new(StallParams::default());
        samples
            .iter()
            .map(|&(t, rx, tx)| (t, d.observe(ms(t), Counters { rx_bytes: rx, tx_bytes: tx })))
            .filter(|(_, v)| *v != StallVerdict::Fine)
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
    fn data_without_answers_moves_after_stall_after_every_2_s_then_with_a_doubling_backoff() {
        let mut samples = vec![(0, 1000, 1000)];
        samples.extend(stalled(200, 150_000, 1000, 1000, 96));
        let rotations: Vec<(u64, StallVerdict)> = run(&samples);
        let times: Vec<u64> = rotations.iter().map(|(t, _)| *t).collect();
        // Unanswered from 200 ms: the first move 2 s later, then every 2 s while the stall is
        // younger than 30 s; then 4, 8, 16, 30 (the cap), 30 s.
        let mut expected: Vec<u64> = (0..15).map(|i| 2200 + 2000 * i).collect();
        expected.extend([
            30_200 + 4000,
            34_200 + 8000,
            42_200 + 16_000,
            58_200 + 30_000,
            88_200 + 30_000,
            118_200 + 30_000,
        ]);
        assert_eq!(times, expected);
        assert_eq!(rotations[0].1, StallVerdict::Rotate { attempt: 1, silent: ms(2000) });
        assert_eq!(rotations[2].1, StallVerdict::Rotate { attempt: 3, silent: ms(6000) });
    }

    #[test]
    fn the_clock_starts_at_the_first_data_not_at_a_keepalive_before_it() {
        // A keepalive at 1 s (no answer, by design), the first data at 10 s.
        let mut samples = vec![(0, 1000, 1000), (1000, 1000, 1032)];
        samples.extend(stalled(10_000, 13_000, 1000, 1032, 64));
        assert_eq!(run(&samples), vec![(12_000, StallVerdict::Rotate { attempt: 1, silent: ms(2000) })]);
    }

    #[test]
    fn bytes_received_end_the_stall_and_report_the_outage() {
        let mut samples = vec![(0, 1000, 1000)];
        samples.extend(stalled(200, 5000, 1000, 1000, 96));
        samples.push((5000, 1092, 4000));
        samples.extend(stalled(5200, 6000, 1092, 4000, 96));
        let verdicts = run(&samples);
        assert_eq!(verdicts.len(), 3, "{verdicts:?}");
        assert_eq!(verdicts[2], (5000, StallVerdict::Recovered { rotations: 2, outage: ms(4800) }));
        // Fresh after recovery: 800 ms of unanswered data is no stall yet.
    }

    #[test]
    fn after_a_move_the_next_one_comes_on_time_though_nothing_more_is_sent() {
        // Stalled from 200 ms; the move at 2.2 s re-creates the peer: counters restart, the
        // new initiation (148 bytes) goes out once, and WireGuard waits 5 s before its retry.
        let mut samples = vec![(0, 1000, 1000)];
        samples.extend(stalled(200, 2400, 1000, 1000, 96));
        samples.extend((2400..9000).step_by(200).map(|t| (t, 0, 148)));
        let times: Vec<u64> = run(&samples).iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![2200, 4200, 6200, 8200]);
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
