//! Sessions from samples: the data plane's per-peer counters, read every second, become
//! "session started", "endpoint changed" and "session ended" events. The decision only
//! (sans-I/O): the caller passes the time and what it read, and writes what comes back.
//!
//! A session starts with a handshake (the peer's handshake counter grows while none is open)
//! and lasts while handshakes keep coming: WireGuard re-keys every 2 minutes while packets flow
//! and its keys are unusable 180 s after the last handshake, so a session with no handshake for
//! [`IDLE_AFTER`] has ended, at the last packet seen. A peer that a reload removed ends its
//! session at once ("removed"); one whose counters start over was re-created ("replaced");
//! the service's stop ends them all ("drained").

use std::collections::HashMap;
use std::time::Duration;

use super::event::{AuditEvent, Began, Ended};

/// WireGuard's Reject-After-Time: no session outlives its last handshake by more.
pub const IDLE_AFTER: Duration = Duration::from_secs(180);
/// At most one "handshakes rejected" event this often.
pub const REJECTED_EVERY: Duration = Duration::from_secs(60);

/// One peer as read from the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSample {
    pub name: String,
    /// Its [`super::event::fingerprint`]: the peer's identity across reloads.
    pub key: String,
    pub endpoint: Option<String>,
    pub since_handshake: Option<Duration>,
    pub handshakes: u64,
    pub failover_handshakes: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl PeerSample {
    /// The same peer with its counters at zero: how a peer new to the tracker (or re-created
    /// by a reload) stood before its first handshake.
    fn before_any_traffic(&self) -> PeerSample {
        PeerSample { handshakes: 0, failover_handshakes: 0, rx_bytes: 0, tx_bytes: 0, ..self.clone() }
    }
}

#[derive(Debug, Clone)]
struct Open {
    started_ms: i64,
    endpoint: Option<String>,
    rx_at_start: u64,
    tx_at_start: u64,
    last_packet_ms: i64,
}

#[derive(Debug, Clone)]
struct Track {
    last: PeerSample,
    session: Option<Open>,
}

#[derive(Debug, Default)]
pub struct SessionTracker {
    peers: HashMap<String, Track>,
    rejected_total: Option<u64>,
    rejected_reported_ms: Option<i64>,
}

fn ended(track: &Track, open: &Open, reason: Ended, ended_ms: i64) -> AuditEvent {
    let ended_ms = ended_ms.max(open.started_ms);
    AuditEvent::SessionEnded {
        peer: track.last.name.clone(),
        key: track.last.key.clone(),
        endpoint: open.endpoint.clone(),
        reason,
        started_ms: open.started_ms,
        ended_ms,
        duration_seconds: ((ended_ms - open.started_ms) as f64 / 100.0).round() / 10.0,
        rx_bytes: track.last.rx_bytes.saturating_sub(open.rx_at_start),
        tx_bytes: track.last.tx_bytes.saturating_sub(open.tx_at_start),
    }
}

impl SessionTracker {
    /// What changed since the last call; `now_ms` is Unix milliseconds.
    pub fn observe(&mut self, now_ms: i64, samples: &[PeerSample]) -> Vec<AuditEvent> {
        let mut events = Vec::new();
        let present: std::collections::HashSet<&str> = samples.iter().map(|s| s.key.as_str()).collect();
        let mut gone: Vec<String> = self.peers.keys().filter(|k| !present.contains(k.as_str())).cloned().collect();
        gone.sort();
        for key in gone {
            if let Some(track) = self.peers.remove(&key) {
                if let Some(open) = &track.session {
                    events.push(ended(&track, open, Ended::Removed, now_ms));
                }
            }
        }
        for sample in samples {
            let track = self
                .peers
                .entry(sample.key.clone())
                .or_insert_with(|| Track { last: sample.before_any_traffic(), session: None });
            // Counters that went back: the peer was re-created by a reload.
            if sample.handshakes < track.last.handshakes || sample.rx_bytes < track.last.rx_bytes {
                if let Some(open) = track.session.take() {
                    events.push(ended(track, &open, Ended::Replaced, now_ms));
                }
                track.last = sample.before_any_traffic();
            }
            let handshook = sample.handshakes > track.last.handshakes;
            let moved_bytes = sample.rx_bytes != track.last.rx_bytes || sample.tx_bytes != track.last.tx_bytes;
            let previous = std::mem::replace(&mut track.last, sample.clone());
            match &mut track.session {
                None if handshook => {
                    let since = sample.since_handshake.unwrap_or_default().as_millis() as i64;
                    let started_ms = now_ms - since;
                    let began = if sample.failover_handshakes > previous.failover_handshakes {
                        Began::Failover
                    } else {
                        Began::Handshake
                    };
                    track.session = Some(Open {
                        started_ms,
                        endpoint: sample.endpoint.clone(),
                        rx_at_start: previous.rx_bytes,
                        tx_at_start: previous.tx_bytes,
                        last_packet_ms: now_ms,
                    });
                    events.push(AuditEvent::SessionStarted {
                        peer: sample.name.clone(),
                        key: sample.key.clone(),
                        endpoint: sample.endpoint.clone(),
                        began,
                        started_ms,
                    });
                }
                None => {}
                Some(open) => {
                    if moved_bytes || handshook {
                        open.last_packet_ms = now_ms;
                    }
                    if let Some(to) = &sample.endpoint {
                        if open.endpoint.as_ref() != Some(to) {
                            events.push(AuditEvent::EndpointChanged {
                                peer: sample.name.clone(),
                                key: sample.key.clone(),
                                from: open.endpoint.replace(to.clone()),
                                to: to.clone(),
                            });
                        }
                    }
                    let idle = sample.since_handshake.is_none_or(|since| since > IDLE_AFTER);
                    if idle && !handshook {
                        let open = track.session.take().expect("open");
                        events.push(ended(track, &open, Ended::Idle, open.last_packet_ms));
                    }
                }
            }
        }
        events
    }

    /// Ends every open session (the service stops).
    pub fn end_all(&mut self, now_ms: i64, reason: Ended) -> Vec<AuditEvent> {
        let mut keys: Vec<&String> = self.peers.keys().collect();
        keys.sort();
        let keys: Vec<String> = keys.into_iter().cloned().collect();
        let mut events = Vec::new();
        for key in keys {
            let track = self.peers.get_mut(&key).expect("present");
            if let Some(open) = track.session.take() {
                events.push(ended(track, &open, reason, now_ms));
            }
        }
        events
    }

    /// Sessions open now.
    pub fn live(&self) -> usize {
        self.peers.values().filter(|t| t.session.is_some()).count()
    }

    /// Handshakes for unknown keys (the data plane's running total): one event with the count
    /// at most every [`REJECTED_EVERY`].
    pub fn observe_rejected(&mut self, now_ms: i64, total: u64) -> Option<AuditEvent> {
        let first = *self.rejected_total.get_or_insert(total);
        let due = self.rejected_reported_ms.is_none_or(|at| now_ms - at >= REJECTED_EVERY.as_millis() as i64);
        if total <= first || !due {
            return None;
        }
        let seconds = self.rejected_reported_ms.map_or(0, |at| ((now_ms - at) / 1000) as u64);
        self.rejected_total = Some(total);
        self.rejected_reported_ms = Some(now_ms);
        Some(AuditEvent::HandshakesRejected { count: total - first, seconds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(handshakes: u64, since: Option<u64>, rx: u64, tx: u64, endpoint: &str) -> PeerSample {
        PeerSample {
            name: "alice".into(),
            key: "sha256:00".into(),
            endpoint: Some(endpoint.into()),
            since_handshake: since.map(Duration::from_secs),
            handshakes,
            failover_handshakes: 0,
            rx_bytes: rx,
            tx_bytes: tx,
        }
    }

    fn kinds(events: &[AuditEvent]) -> Vec<String> {
        events.iter().map(|e| serde_json::to_value(e).unwrap()["event"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn a_session_starts_at_its_handshake_and_ends_idle_at_its_last_packet() {
        let mut t = SessionTracker::default();
        assert!(t.observe(1_000, &[sample(0, None, 0, 0, "192.0.2.1:1")]).is_empty());
        let started = t.observe(2_000, &[sample(1, Some(0), 148, 92, "192.0.2.1:1")]);
        assert_eq!(kinds(&started), ["session_started"]);
        let AuditEvent::SessionStarted { started_ms, began, .. } = &started[0] else { panic!() };
        assert_eq!((*started_ms, *began), (2_000, Began::Handshake));
        // Traffic for a while, a re-key at 120 s, then silence.
        assert!(t.observe(60_000, &[sample(1, Some(58), 10_148, 5_092, "192.0.2.1:1")]).is_empty());
        assert!(t.observe(122_000, &[sample(2, Some(0), 20_148, 9_092, "192.0.2.1:1")]).is_empty());
        assert!(t.observe(130_000, &[sample(2, Some(8), 20_148, 9_092, "192.0.2.1:1")]).is_empty());
        assert_eq!(t.live(), 1);
        let end = t.observe(303_000, &[sample(2, Some(181), 20_148, 9_092, "192.0.2.1:1")]);
        assert_eq!(kinds(&end), ["session_ended"]);
        let AuditEvent::SessionEnded { reason, ended_ms, duration_seconds, rx_bytes, tx_bytes, .. } = &end[0] else {
            panic!()
        };
        assert_eq!((*reason, *ended_ms, *duration_seconds), (Ended::Idle, 122_000, 120.0));
        // The bytes before the first sample with the handshake are not the session's.
        assert_eq!((*rx_bytes, *tx_bytes), (20_148, 9_092));
        assert_eq!(t.live(), 0);
        // A new handshake later is a new session.
        assert_eq!(
            kinds(&t.observe(400_000, &[sample(3, Some(1), 20_300, 9_200, "192.0.2.1:1")])),
            ["session_started"]
        );
    }

    #[test]
    fn roaming_removal_replacement_and_the_end_of_the_service() {
        let mut t = SessionTracker::default();
        t.observe(0, &[sample(1, Some(0), 100, 100, "192.0.2.1:1")]);
        let roamed = t.observe(1_000, &[sample(1, Some(1), 200, 200, "198.51.100.9:7")]);
        assert_eq!(kinds(&roamed), ["endpoint_changed"]);
        // Counters that start over: the peer was re-created.
        let replaced = t.observe(2_000, &[sample(0, None, 0, 0, "198.51.100.9:7")]);
        assert_eq!(kinds(&replaced), ["session_ended"]);
        assert!(matches!(replaced[0], AuditEvent::SessionEnded { reason: Ended::Replaced, .. }));
        t.observe(3_000, &[sample(1, Some(0), 50, 50, "198.51.100.9:7")]);
        let removed = t.observe(4_000, &[]);
        assert!(matches!(removed[..], [AuditEvent::SessionEnded { reason: Ended::Removed, ended_ms: 4_000, .. }]));
        t.observe(5_000, &[sample(1, Some(0), 50, 50, "192.0.2.1:1")]);
        let drained = t.end_all(6_500, Ended::Drained);
        assert!(
            matches!(drained[..], [AuditEvent::SessionEnded { reason: Ended::Drained, duration_seconds, .. }] if duration_seconds == 1.5)
        );
    }

    #[test]
    fn a_failover_handshake_is_told_apart() {
        let mut t = SessionTracker::default();
        let s = PeerSample { failover_handshakes: 1, ..sample(1, Some(0), 0, 0, "192.0.2.1:1") };
        assert!(matches!(t.observe(0, &[s])[..], [AuditEvent::SessionStarted { began: Began::Failover, .. }]));
    }

    #[test]
    fn rejected_handshakes_are_counted_once_a_minute() {
        let mut t = SessionTracker::default();
        assert_eq!(t.observe_rejected(0, 5), None, "the first reading is the baseline");
        assert_eq!(t.observe_rejected(1_000, 9), Some(AuditEvent::HandshakesRejected { count: 4, seconds: 0 }));
        assert_eq!(t.observe_rejected(30_000, 20), None);
        assert_eq!(t.observe_rejected(61_000, 25), Some(AuditEvent::HandshakesRejected { count: 16, seconds: 60 }));
        assert_eq!(t.observe_rejected(200_000, 25), None);
    }
}
