//! The service's [`StatusReport`]: health, drain, the last self-test, every peer's endpoint,
//! last handshake and bytes, the drop counters. Filled from what the threads know now; never
//! keys (the report has no field for one).

use super::judge::{failing, observe, verdict_of};
use super::ServiceState;
use crate::status::{self, StatusReport};
use crate::tunnel::DataPlane;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Who we are (what a reload cannot change).
#[derive(Debug, Clone)]
pub struct Identity {
    pub public_key: String,
    pub listen_port: u16,
}

pub fn report(state: &ServiceState, data_plane: &DataPlane, identity: &Identity) -> StatusReport {
    let failing = failing(&observe(state, data_plane));
    let health = status::Health {
        status: verdict_of(data_plane.name(), &failing).status(),
        conditions: failing.iter().map(|f| f.condition.label().to_string()).collect(),
        failing: failing.into_iter().map(|f| f.line).collect(),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let peers = data_plane
        .peers()
        .into_iter()
        .filter(|p| !p.internal)
        .map(|p| status::PeerReport {
            name: p.name,
            public_key: p.public_key.to_base64(),
            endpoint: p.endpoint.map(|e| e.to_string()),
            allowed_ips: p.allowed_ips.iter().map(|n| n.to_string()).collect(),
            latest_handshake: p.last_handshake.map(|age| now.saturating_sub(age.as_secs())),
            latest_handshake_age_seconds: p.last_handshake.map(|age| age.as_secs()),
            handshakes: p.handshakes,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            failover_handshakes: p.failover_handshakes,
            rejected_sources: p.rejected_source,
            session_index: format!("{:06x}", p.session_index),
        })
        .collect();
    let c = data_plane.counters();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    StatusReport {
        schema: status::SCHEMA_VERSION,
        interface: data_plane.name().to_string(),
        public_key: identity.public_key.clone(),
        listen_port: identity.listen_port,
        health,
        draining: state.drain_left().is_some(),
        selftest: state.last_selftest().map(|last| status::SelfTest {
            passed: last.passed,
            line: last.line,
            age_seconds: last.at.elapsed().as_secs(),
            duration_ms: last.duration.map(|d| d.as_millis() as u64),
        }),
        config: {
            let c = state.config_state();
            status::ConfigSource {
                origin: c.origin,
                version: Some(c.version),
                restart_pending: c.restart_pending,
                reloads: c.reloads,
                reload_failures: c.reload_failures,
                source_failures: c.source_failures,
                last_failure: c.last_failure,
            }
        },
        peers,
        dropped: status::Dropped {
            not_ours: load(&c.dropped_datagrams),
            rejected: load(&c.rejected_datagrams),
            unknown_keys: load(&c.unknown_peer_handshakes),
            cookie_replies: load(&c.cookie_replies),
            tun_no_peer: load(&c.dropped_tun_packets),
        },
        failover: status::Failover {
            refused_heard_recently: load(&c.failover_refused_heard_recently),
            held_back_by_budget: load(&c.failover_refused_budget),
        },
        nat_rules: state.nat_rules(),
        offloads: {
            let o = data_plane.offloads();
            Some(status::Offloads {
                udp_gso: o.udp_gso,
                udp_gro: o.udp_gro,
                tun_tso: o.tun_tso,
                tun_coalescing: o.tun_coalescing,
                tun_super_packets_read: load(&c.tun_super_packets_read),
                tun_segments_read: load(&c.tun_segments_read),
                tun_super_packets_written: load(&c.tun_super_packets_written),
                tun_segments_written: load(&c.tun_segments_written),
            })
        },
        initiations: Some(status::Initiations {
            known_by_endpoint: load(&c.initiations_known_by_endpoint),
            guesses_missed: load(&c.initiation_guesses_missed),
        }),
        siblings: state.siblings_counters().map(|c| status::Siblings {
            deregistered: load(&c.deregistered),
            marked_unhealthy: load(&c.marked_unhealthy),
            taken_over: load(&c.taken_over),
            given_back: load(&c.given_back),
            failures: load(&c.failures),
            relayed: load(&data_plane.counters().relayed_datagrams),
            relay_refused: load(&data_plane.counters().relay_refused),
        }),
    }
}
