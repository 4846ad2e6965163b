//! Network → tunnel: one UDP datagram from the listen port, taken to its peer's `Tunn`.
//!
//! The peer is found without trying keys: a handshake initiation names its sender's static key
//! (found with one DH after the MAC and rate-limit checks); every other message carries our
//! receiver index, which names the peer (see `peers`). Decrypted packets whose source is outside
//! the peer's allowed IPs are dropped (inbound cryptokey routing). A data packet for a session we
//! do not have starts a handshake back to its sender at once (fast failover, rate-limited).

use super::peers::{Peer, PeerId};
use super::{udp, Counters, DataPlaneShared};
use crate::log;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{HandshakeInit, Packet, Tunn, TunnResult};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;

/// At most one fast-failover handshake per peer in this many milliseconds (WireGuard's
/// REKEY_TIMEOUT): a spoofed data packet can make us send at most one 148-byte initiation per
/// peer per 5 s.
pub const FAILOVER_INTERVAL_MS: u64 = 5_000;

/// The WireGuard message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    Initiation,
    Response,
    CookieReply,
    Data,
}

/// Where a datagram goes, decided from its bytes and the peer table alone (parsed once, here).
#[derive(Debug)]
enum Route<'a> {
    /// A handshake initiation: the peer is known only after the DH in `parse_handshake_anon`.
    Initiation(HandshakeInit<'a>),
    /// A message that names one of our peers by our receiver index.
    Peer(PeerId, MessageKind),
    /// Not a WireGuard message, or an index that is not ours.
    Drop,
}

/// Classifies a datagram without any cryptography.
fn route<'a>(shared: &DataPlaneShared, datagram: &'a [u8]) -> Route<'a> {
    let (receiver_index, kind) = match Tunn::parse_incoming_packet(datagram) {
        Ok(Packet::HandshakeInit(init)) => return Route::Initiation(init),
        Ok(Packet::HandshakeResponse(p)) => (p.receiver_idx, MessageKind::Response),
        Ok(Packet::PacketCookieReply(p)) => (p.receiver_idx, MessageKind::CookieReply),
        Ok(Packet::PacketData(p)) => (p.receiver_idx, MessageKind::Data),
        Err(_) => return Route::Drop,
    };
    match shared.peers.by_receiver_index(receiver_index) {
        Some(id) => Route::Peer(id, kind),
        None => Route::Drop,
    }
}

/// Whether a fast-failover handshake may start now, given when the last one started.
pub fn failover_due(last_ms: u64, now_ms: u64) -> bool {
    last_ms == 0 || now_ms.saturating_sub(last_ms) >= FAILOVER_INTERVAL_MS
}

/// Handles one datagram received on `socket` from `source`. `out` is scratch space for what the
/// `Tunn` produces (at least datagram size + 32 and 148 bytes).
pub fn handle_datagram(
    shared: &DataPlaneShared,
    socket: &UdpSocket,
    tun: &super::tun::TunQueue,
    source: SocketAddr,
    datagram: &[u8],
    out: &mut [u8],
) {
    let (peer_id, kind) = match route(shared, datagram) {
        Route::Drop => {
            Counters::count(&shared.counters.dropped_datagrams);
            return;
        }
        Route::Initiation(init) => match identify_initiator(shared, socket, source, datagram, &init, out) {
            Some(id) => (id, MessageKind::Initiation),
            None => return,
        },
        Route::Peer(id, kind) => {
            if kind == MessageKind::Response && !passes_rate_limit(shared, socket, source, datagram, out) {
                return;
            }
            (id, kind)
        }
    };
    let peer = shared.peers.get(peer_id);
    if !peer.admits_source(&source) {
        Counters::count(&shared.counters.dropped_datagrams);
        return;
    }
    let source_ip = source.ip().to_canonical();
    let mut tunn = peer.lock_tunn();
    match tunn.decapsulate(Some(source_ip), datagram, out) {
        TunnResult::WriteToNetwork(reply) => {
            send(shared, socket, reply, source);
            if kind != MessageKind::Data {
                handshake_completed(peer, source, kind);
            }
            note_endpoint(peer, source);
            // Packets queued while the session was being made can go now.
            while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], out) {
                send(shared, socket, queued, source);
            }
        }
        TunnResult::WriteToTunnelV4(packet, from) => {
            deliver(shared, peer_id, peer, tun, packet, from.into());
            note_endpoint(peer, source);
        }
        TunnResult::WriteToTunnelV6(packet, from) => {
            deliver(shared, peer_id, peer, tun, packet, from.into());
            note_endpoint(peer, source);
        }
        TunnResult::Done => {
            // A keepalive (authenticated, so the sender is the peer) or a cookie reply.
            if kind == MessageKind::Data {
                note_endpoint(peer, source);
            }
        }
        TunnResult::Err(WireGuardError::NoCurrentSession) => {
            start_failover_handshake(shared, socket, peer, &mut tunn, source, out);
        }
        TunnResult::Err(e) => {
            Counters::count(&shared.counters.rejected_datagrams);
            if kind == MessageKind::Data && from_another_session(&e) {
                start_failover_handshake(shared, socket, peer, &mut tunn, source, out);
            }
        }
    }
}

/// Whether boringtun refused a data packet because the session we hold at its index is not the
/// one the packet was sent on: another index in that slot, counters of an older session, or keys
/// that do not open it. That is how a flow arrives when it comes back to a bastion that still
/// holds an old session with the peer (a health check that flapped): as far as this bastion can
/// tell, the packet's session is one it does not have, exactly as with `NoCurrentSession`.
fn from_another_session(error: &WireGuardError) -> bool {
    matches!(
        error,
        WireGuardError::WrongIndex
            | WireGuardError::InvalidCounter
            | WireGuardError::DuplicateCounter
            | WireGuardError::InvalidAeadTag
    )
}

/// MAC check and the shared handshake rate limit (a cookie reply when under load); false when
/// the datagram must not go further.
fn passes_rate_limit(
    shared: &DataPlaneShared,
    socket: &UdpSocket,
    source: SocketAddr,
    datagram: &[u8],
    out: &mut [u8],
) -> bool {
    match shared.handshake_limiter.verify_packet(Some(source.ip().to_canonical()), datagram, out) {
        Ok(_) => true,
        Err(TunnResult::WriteToNetwork(cookie)) => {
            Counters::count(&shared.counters.cookie_replies);
            send(shared, socket, cookie, source);
            false
        }
        Err(_) => {
            Counters::count(&shared.counters.rejected_datagrams);
            false
        }
    }
}

/// Finds the peer a handshake initiation comes from: MAC and rate limit first (cheap), then the
/// DH that reveals the initiator's static key.
fn identify_initiator(
    shared: &DataPlaneShared,
    socket: &UdpSocket,
    source: SocketAddr,
    datagram: &[u8],
    init: &HandshakeInit,
    out: &mut [u8],
) -> Option<PeerId> {
    if !passes_rate_limit(shared, socket, source, datagram, out) {
        return None;
    }
    let half = match parse_handshake_anon(&shared.static_private, &shared.static_public, init) {
        Ok(half) => half,
        Err(_) => {
            Counters::count(&shared.counters.rejected_datagrams);
            return None;
        }
    };
    let id = shared.peers.by_public_key(&half.peer_static_public);
    if id.is_none() {
        Counters::count(&shared.counters.unknown_peer_handshakes);
    }
    id
}

/// Writes a decrypted packet to the TUN if its source belongs to the peer.
fn deliver(
    shared: &DataPlaneShared,
    peer_id: PeerId,
    peer: &Peer,
    tun: &super::tun::TunQueue,
    packet: &[u8],
    from: std::net::IpAddr,
) {
    if !shared.peers.source_allowed(peer_id, from) {
        Peer::count(&peer.counters.rejected_source);
        return;
    }
    Peer::count(&peer.counters.rx_packets);
    if let Err(e) = tun.write(packet) {
        shared.counters.tun_error(&shared.name, "write to", &e);
    }
}

fn handshake_completed(peer: &Peer, source: SocketAddr, kind: MessageKind) {
    Peer::count(&peer.counters.handshakes);
    if peer.loopback_only {
        // The self-test's own peer handshakes every run; its result line says enough.
        return;
    }
    let role = match kind {
        MessageKind::Initiation => "as responder",
        _ => "as initiator",
    };
    log!(
        "peer {} handshake completed {} with {}",
        peer.name,
        role,
        udp::canonical(source)
    );
}

/// Records where an authenticated packet came from; logs when a known peer moved.
fn note_endpoint(peer: &Peer, source: SocketAddr) {
    if let Some(Some(old)) = peer.update_endpoint(source) {
        if peer.loopback_only {
            return;
        }
        log!(
            "peer {} roamed from {} to {}",
            peer.name,
            udp::canonical(old),
            udp::canonical(source)
        );
    }
}

/// A data packet named this peer but we have no session for it: the client's flow was moved to
/// us from another bastion. Answer with a handshake initiation to where the packet came from,
/// so the client re-keys after one round trip instead of after 15–120 s.
fn start_failover_handshake(
    shared: &DataPlaneShared,
    socket: &UdpSocket,
    peer: &Peer,
    tunn: &mut Tunn,
    source: SocketAddr,
    out: &mut [u8],
) {
    let now = shared.now_ms();
    let last = peer.last_failover_ms.load(Ordering::Relaxed);
    if !failover_due(last, now)
        || peer
            .last_failover_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    // A handshake already in progress toward an old endpoint is re-sent toward the new source.
    let force = peer.endpoint() != Some(source);
    if let TunnResult::WriteToNetwork(initiation) = tunn.format_handshake_initiation(out, force) {
        Peer::count(&peer.counters.failover_handshakes);
        log!(
            "peer {} sent data for a session this bastion does not have; starting a handshake to {}",
            peer.name,
            udp::canonical(source)
        );
        send(shared, socket, initiation, source);
    }
}

pub(super) fn send(shared: &DataPlaneShared, socket: &UdpSocket, packet: &[u8], to: SocketAddr) {
    let to = udp::socket_address(to, shared.dual_stack);
    if socket.send_to(packet, to).is_err() {
        Counters::count(&shared.counters.send_errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_handshakes_are_spaced_by_the_rekey_timeout() {
        assert!(failover_due(0, 1));
        assert!(!failover_due(10_000, 10_000 + FAILOVER_INTERVAL_MS - 1));
        assert!(failover_due(10_000, 10_000 + FAILOVER_INTERVAL_MS));
        // A clock that went backwards never allows a burst.
        assert!(!failover_due(10_000, 9_000));
    }

    #[test]
    fn a_packet_of_a_session_we_do_not_hold_is_told_from_other_errors() {
        assert!(from_another_session(&WireGuardError::InvalidAeadTag));
        assert!(from_another_session(&WireGuardError::DuplicateCounter));
        assert!(from_another_session(&WireGuardError::InvalidCounter));
        assert!(from_another_session(&WireGuardError::WrongIndex));
        assert!(!from_another_session(&WireGuardError::InvalidPacket));
        assert!(!from_another_session(&WireGuardError::ConnectionExpired));
    }
}
