//! The text `bastion status` prints: health, drain, the last self-test, every peer's endpoint,
//! last handshake and bytes, and the drop counters. Never keys.

use super::judge::verdict;
use super::ServiceState;
use crate::health::Verdict;
use crate::status;
use crate::tunnel::DataPlane;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

pub fn report(state: &ServiceState, data_plane: &DataPlane, listen_port: u16) -> String {
    let mut text = String::new();
    let verdict = verdict(state, data_plane);
    let _ = writeln!(text, "interface: {}  UDP port {listen_port}  health {}", data_plane.name(), verdict.status());
    if let Verdict::Unhealthy(reasons) = &verdict {
        for reason in reasons {
            let _ = writeln!(text, "  {reason}");
        }
    }
    let _ = writeln!(text, "draining: {}", if state.drain_left().is_some() { "yes" } else { "no" });
    match state.last_selftest() {
        Some(last) => {
            let _ = writeln!(text, "{} ({} s ago)", last.line, last.at.elapsed().as_secs());
        }
        None => {
            let _ = writeln!(text, "selftest: not run yet");
        }
    }
    let peers = data_plane.peers();
    let _ = writeln!(text, "peers: {}", peers.iter().filter(|p| !p.internal).count());
    for peer in peers.iter().filter(|p| !p.internal) {
        let endpoint = peer.endpoint.map(|e| e.to_string()).unwrap_or_else(|| "-".into());
        let handshake = peer.last_handshake.map(|d| format!("{} s ago", d.as_secs())).unwrap_or_else(|| "never".into());
        let _ = writeln!(
            text,
            "  {}  endpoint {endpoint}  last handshake {handshake}  handshakes {}  received {}  sent {}  \
             failover handshakes {}  rejected sources {}  session index {:06x}",
            peer.name,
            peer.handshakes,
            status::bytes(peer.rx_bytes),
            status::bytes(peer.tx_bytes),
            peer.failover_handshakes,
            peer.rejected_source,
            peer.session_index
        );
    }
    let c = data_plane.counters();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(
        text,
        "dropped: {} datagrams not ours, {} rejected, {} handshakes from unknown keys, \
         {} cookie replies, {} TUN packets with no peer",
        load(&c.dropped_datagrams),
        load(&c.rejected_datagrams),
        load(&c.unknown_peer_handshakes),
        load(&c.cookie_replies),
        load(&c.dropped_tun_packets)
    );
    let _ = writeln!(
        text,
        "failover: {} refused (the peer was heard here moments before: forged or replayed), {} held back by the global budget",
        load(&c.failover_refused_heard_recently),
        load(&c.failover_refused_budget)
    );
    let _ = writeln!(text, "nat: what the service installs (`nft list table inet bastion` shows what is there):");
    for line in state.nat_rules.lines() {
        let _ = writeln!(text, "{}", if line.is_empty() { String::new() } else { format!("  {line}") });
    }
    text
}
