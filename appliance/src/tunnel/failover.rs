//! When a data packet for a session this bastion does not hold may start a fast-failover
//! handshake: plain decisions on millisecond stamps, no clock and no sockets (the caller passes
//! `now` and does the sending).
//!
//! Such a packet proves nothing: its session index is derived from the peer's public key and
//! visible on the wire, so anyone can forge one, from any address. A handshake is started only
//! when all of these hold:
//! 1. **The peer has been quiet here** for [`QUIET_MS`]: no authenticated packet from it. A
//!    real flow move reaches a bastion that has stopped hearing from the client (a new bastion,
//!    or an old one the flow left for longer than a client's stall detection takes); a forgery
//!    aimed at a live session arrives while the real client is still being heard.
//! 2. **The peer's own interval** has passed: one failover handshake per peer per
//!    [`PEER_INTERVAL_MS`] (WireGuard's REKEY_TIMEOUT), whoever triggers it.
//! 3. **The global budget** has room: [`GLOBAL_PER_SECOND`] failover handshakes a second over
//!    all peers (a burst of as many), so forged packets naming many peers cannot turn the
//!    bastion into an amplifier, while a reconnect storm of 200 peers still gets its last
//!    handshake within 4 s.
//!
//! A refused packet leaves the per-peer stamp alone, so the peer's next packet can try again.

/// An authenticated packet from the peer within this long blocks a failover handshake. Shorter
/// than the 2–3 s a client watcher waits before it moves a stalled flow, so a flow that comes
/// back to a bastion it left is still recovered at once.
pub const QUIET_MS: u64 = 1_500;
/// At most one failover handshake per peer in this long.
pub const PEER_INTERVAL_MS: u64 = 5_000;
/// Failover handshakes per second over all peers (and the burst allowed at once).
pub const GLOBAL_PER_SECOND: u64 = 50;
// A reconnect storm of 200 peers must be through within 5 s.
const _: () = assert!(GLOBAL_PER_SECOND >= 40);
/// Handshake responses a second, over all peers, that answer a failover initiation sent in the
/// last [`PEER_INTERVAL_MS`]: they are checked against a limiter of their own, so a flood of
/// initiations that puts the shared limiter under load (cookie replies for everyone) cannot
/// turn away the responses of a reconnect storm (their senders would wait for the next
/// initiation, 5 s later). A forger who knows a peer's session index can spend this budget too,
/// but only while that peer has a failover handshake outstanding, and at most this many a second.
pub const FAILOVER_RESPONSES_PER_SECOND: u64 = 2 * GLOBAL_PER_SECOND;

/// Whether a handshake response from the peer answers a failover initiation of ours that is
/// still outstanding (sent within [`PEER_INTERVAL_MS`]).
pub fn awaits_failover_response(last_failover_ms: u64, now: u64) -> bool {
    last_failover_ms != 0 && now.saturating_sub(last_failover_ms) < PEER_INTERVAL_MS
}

/// The failover log line of one peer is written at most this often; the next line says how
/// many were left out.
pub const LOG_INTERVAL_MS: u64 = 60_000;

/// Why a failover handshake is not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer was heard here within [`QUIET_MS`]: the packet is a forgery or a replay.
    PeerHeardRecently,
    /// The peer's previous failover handshake was less than [`PEER_INTERVAL_MS`] ago.
    PeerInterval,
    /// The global budget is spent for now.
    GlobalBudget,
}

/// Per-peer facts the decision needs (milliseconds on the data plane's clock; 0 = never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStamps {
    pub last_authenticated_ms: u64,
    pub last_failover_ms: u64,
}

/// The two per-peer checks, cheapest first. `Ok` means only the global budget is left to ask.
pub fn peer_allows(stamps: PeerStamps, now_ms: u64) -> Result<(), Refusal> {
    if stamps.last_authenticated_ms != 0 && now_ms.saturating_sub(stamps.last_authenticated_ms) < QUIET_MS {
        return Err(Refusal::PeerHeardRecently);
    }
    // A clock that went backwards (saturating to 0) never allows a burst.
    if stamps.last_failover_ms != 0 && now_ms.saturating_sub(stamps.last_failover_ms) < PEER_INTERVAL_MS {
        return Err(Refusal::PeerInterval);
    }
    Ok(())
}

/// A token bucket over all peers: [`GLOBAL_PER_SECOND`] tokens a second, as many at most.
#[derive(Debug, Clone)]
pub struct GlobalBudget {
    /// Tokens, in thousandths (so refills of a few milliseconds are not lost to rounding).
    milli_tokens: u64,
    last_ms: u64,
}

impl Default for GlobalBudget {
    fn default() -> Self {
        GlobalBudget { milli_tokens: GLOBAL_PER_SECOND * 1000, last_ms: 0 }
    }
}

impl GlobalBudget {
    /// Takes one token if there is one at `now_ms`.
    pub fn take(&mut self, now_ms: u64) -> Result<(), Refusal> {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let full = GLOBAL_PER_SECOND * 1000;
        self.milli_tokens = (self.milli_tokens + elapsed.saturating_mul(GLOBAL_PER_SECOND)).min(full);
        if self.milli_tokens < 1000 {
            return Err(Refusal::GlobalBudget);
        }
        self.milli_tokens -= 1000;
        Ok(())
    }
}

/// Whether the failover line of a peer is written now, given when it last was (0 = never).
pub fn log_due(last_logged_ms: u64, now_ms: u64) -> bool {
    last_logged_ms == 0 || now_ms.saturating_sub(last_logged_ms) >= LOG_INTERVAL_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamps(last_authenticated_ms: u64, last_failover_ms: u64) -> PeerStamps {
        PeerStamps { last_authenticated_ms, last_failover_ms }
    }

    #[test]
    fn the_per_peer_rules() {
        let now = 100_000;
        let cases = [
            // (stamps, verdict)
            (stamps(0, 0), Ok(())),
            // The real client was heard 0.2 s ago: a forgery, whatever its source.
            (stamps(now - 200, 0), Err(Refusal::PeerHeardRecently)),
            (stamps(now - QUIET_MS + 1, 0), Err(Refusal::PeerHeardRecently)),
            // Quiet long enough: a moved flow.
            (stamps(now - QUIET_MS, 0), Ok(())),
            (stamps(now - 60_000, 0), Ok(())),
            // One per peer per 5 s.
            (stamps(0, now - PEER_INTERVAL_MS + 1), Err(Refusal::PeerInterval)),
            (stamps(0, now - PEER_INTERVAL_MS), Ok(())),
            // Heard recently wins over the interval (it is the cheaper, stronger reason).
            (stamps(now - 10, now - 10), Err(Refusal::PeerHeardRecently)),
            // A clock that went backwards never allows a burst.
            (stamps(0, now + 1_000), Err(Refusal::PeerInterval)),
        ];
        for (stamps, verdict) in cases {
            assert_eq!(peer_allows(stamps, now), verdict, "{stamps:?}");
        }
    }

    #[test]
    fn responses_count_as_answers_to_a_failover_only_while_it_is_outstanding() {
        for (last, now, expected) in
            [(0, 10_000, false), (10_000, 10_000, true), (10_000, 14_999, true), (10_000, 15_000, false)]
        {
            assert_eq!(awaits_failover_response(last, now), expected, "last {last} now {now}");
        }
    }

    #[test]
    fn the_global_budget_allows_a_burst_then_its_rate() {
        let mut budget = GlobalBudget::default();
        let start = 10_000;
        for i in 0..GLOBAL_PER_SECOND {
            assert_eq!(budget.take(start), Ok(()), "token {i} of the burst");
        }
        assert_eq!(budget.take(start), Err(Refusal::GlobalBudget));
        // One token every 1000 / GLOBAL_PER_SECOND ms.
        let step = 1000 / GLOBAL_PER_SECOND;
        assert_eq!(budget.take(start + step - 1), Err(Refusal::GlobalBudget));
        assert_eq!(budget.take(start + step), Ok(()));
        // A second later, a second's worth, never more than a burst.
        let mut granted = 0;
        while budget.take(start + step + 10_000).is_ok() {
            granted += 1;
        }
        assert_eq!(granted, GLOBAL_PER_SECOND);
    }

    #[test]
    fn a_storm_of_two_hundred_peers_is_through_within_four_seconds() {
        // Every peer retries every 100 ms (an active client) until it gets its handshake.
        let mut budget = GlobalBudget::default();
        let mut waiting: Vec<u64> = (0..200).collect();
        let mut last_granted_ms = 0;
        let mut now = 0;
        while !waiting.is_empty() {
            waiting.retain(|_| budget.take(now).is_err());
            if !waiting.is_empty() {
                now += 100;
            }
            last_granted_ms = now;
            assert!(now < 10_000, "the storm did not drain");
        }
        assert!(last_granted_ms <= 4_000, "the last of 200 peers waited {last_granted_ms} ms");
    }

    #[test]
    fn log_lines_are_spaced() {
        assert!(log_due(0, 5));
        assert!(!log_due(1_000, 1_000 + LOG_INTERVAL_MS - 1));
        assert!(log_due(1_000, 1_000 + LOG_INTERVAL_MS));
    }
}
