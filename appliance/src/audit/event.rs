//! The audit trail's vocabulary: who connected, when, from where, for how long and with how
//! many bytes; what a reload changed; what was refused. Each event is one JSON object in a
//! [`Record`] that also says when and on which bastion. Never a key: a peer is its name and a
//! [`fingerprint`] of its public key (the first 6 bytes of its SHA-256: 12 hex digits, short of
//! the 16 characters the log's key redaction hides), which no key can be recovered from.

use serde::{Deserialize, Serialize};

/// `sha256:` and the first 6 bytes of the SHA-256 of the 32 key bytes, hex (a collision among
/// a bastion's peers is a 1 in 2^48 matter per pair).
pub fn fingerprint(public_key: &[u8; 32]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    let hex: String = digest.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// How a session began on this bastion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Began {
    /// The client's handshake, answered here.
    Handshake,
    /// This bastion initiated after data for a session it did not hold arrived (a flow moved
    /// here from a sibling: fast failover).
    Failover,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// No handshake for 180 s (WireGuard's keys are unusable after that); ended at the last
    /// packet seen.
    Idle,
    /// A reload removed the peer.
    Removed,
    /// The service stopped (drain, shutdown).
    Drained,
    /// A reload replaced the peer's session (its preshared key changed).
    Replaced,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    SessionStarted {
        peer: String,
        key: String,
        endpoint: Option<String>,
        began: Began,
        /// Unix milliseconds of the handshake.
        started_ms: i64,
    },
    EndpointChanged {
        peer: String,
        key: String,
        from: Option<String>,
        to: String,
    },
    SessionEnded {
        peer: String,
        key: String,
        endpoint: Option<String>,
        reason: Ended,
        started_ms: i64,
        ended_ms: i64,
        duration_seconds: f64,
        /// Bytes from the peer (decrypted) and to it, during the session.
        rx_bytes: u64,
        tx_bytes: u64,
    },
    PeerAdded {
        peer: String,
        key: String,
        config_version: String,
    },
    PeerRemoved {
        peer: String,
        key: String,
        config_version: String,
    },
    PeerChanged {
        peer: String,
        key: String,
        config_version: String,
    },
    /// Handshake initiations for keys this bastion does not know, since the last such event.
    HandshakesRejected {
        count: u64,
        seconds: u64,
    },
    /// What `[siblings]` did to a dead sibling.
    SiblingAction {
        target: String,
        action: String,
        reason: String,
    },
}

impl AuditEvent {
    /// The peer the event is about, if one.
    pub fn peer(&self) -> Option<&str> {
        match self {
            AuditEvent::SessionStarted { peer, .. }
            | AuditEvent::EndpointChanged { peer, .. }
            | AuditEvent::SessionEnded { peer, .. }
            | AuditEvent::PeerAdded { peer, .. }
            | AuditEvent::PeerRemoved { peer, .. }
            | AuditEvent::PeerChanged { peer, .. } => Some(peer),
            AuditEvent::HandshakesRejected { .. } | AuditEvent::SiblingAction { .. } => None,
        }
    }
}

/// One event as it is written: when (Unix ms), on which bastion (the instance id, or the host
/// name off EC2) and interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub time_ms: i64,
    pub bastion: String,
    pub interface: String,
    #[serde(flatten)]
    pub event: AuditEvent,
}

impl Record {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_flat_json_and_reads_back() {
        let record = Record {
            time_ms: 1_700_000_000_000,
            bastion: "i-0123456789abcdef0".into(),
            interface: "wg0".into(),
            event: AuditEvent::SessionStarted {
                peer: "alice".into(),
                key: fingerprint(&[7; 32]),
                endpoint: Some("192.0.2.7:41000".into()),
                began: Began::Failover,
                started_ms: 1_699_999_999_000,
            },
        };
        let json = record.to_json();
        assert!(json.contains(r#""event":"session_started""#) && json.contains(r#""began":"failover""#), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
    }

    use proptest::prelude::*;

    /// Every event, its text fields set to `text`.
    fn every_event(text: &str, key: &[u8; 32]) -> Vec<AuditEvent> {
        let (peer, key, t) = (text.to_string(), fingerprint(key), text.to_string());
        vec![
            AuditEvent::SessionStarted {
                peer: peer.clone(),
                key: key.clone(),
                endpoint: Some(t.clone()),
                began: Began::Handshake,
                started_ms: 1,
            },
            AuditEvent::EndpointChanged { peer: peer.clone(), key: key.clone(), from: Some(t.clone()), to: t.clone() },
            AuditEvent::SessionEnded {
                peer: peer.clone(),
                key: key.clone(),
                endpoint: Some(t.clone()),
                reason: Ended::Idle,
                started_ms: 1,
                ended_ms: 2,
                duration_seconds: 0.0,
                rx_bytes: 1,
                tx_bytes: 1,
            },
            AuditEvent::PeerAdded { peer: peer.clone(), key: key.clone(), config_version: t.clone() },
            AuditEvent::PeerRemoved { peer: peer.clone(), key: key.clone(), config_version: t.clone() },
            AuditEvent::PeerChanged { peer, key, config_version: t.clone() },
            AuditEvent::HandshakesRejected { count: 1, seconds: 1 },
            AuditEvent::SiblingAction { target: t.clone(), action: t.clone(), reason: t },
        ]
    }

    proptest! {
        /// The redaction covers the audit path: whatever text reaches a record (a peer name or
        /// an endpoint an operator got wrong), no 16-character piece of a key is written.
        #[test]
        fn no_piece_of_a_key_reaches_an_audit_line(key in any::<[u8; 32]>(), cut in 1usize..43, around in "[a-z ]{0,8}") {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(key);
            for text in [b64.clone(), format!("{around}{b64}{around}"), format!("{}\n{}", &b64[..cut], &b64[cut..]), b64[..43].to_string()] {
                for event in every_event(&text, &key) {
                    let record = Record { time_ms: 1, bastion: "i-1".into(), interface: "wg0".into(), event };
                    let line = crate::log::audit_text(&serde_json::to_value(&record).unwrap());
                    for start in 0..=b64.len() - 16 {
                        prop_assert!(!line.contains(&b64[start..start + 16]), "{line}");
                    }
                }
            }
        }
    }

    #[test]
    fn fingerprints_are_short_stable_and_not_the_key() {
        let key = [0x42u8; 32];
        let f = fingerprint(&key);
        assert_eq!(f, fingerprint(&key));
        assert_eq!(f.len(), "sha256:".len() + 12);
        assert_eq!(crate::keys::redact_key_like(&f), f, "the log shows it");
        assert_ne!(f, fingerprint(&[0x43; 32]));
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        assert!(!f.contains(&b64[..8]));
    }
}
