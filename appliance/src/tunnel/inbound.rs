//! Network → tunnel: one UDP datagram from the listen port, taken to its peer's `Tunn`; the
//! decisions are `decision`'s, this module carries them out.
//!
//! The peer is found without trying keys: a handshake initiation names its sender's static key
//! (found with one DH after the MAC and rate-limit checks, unless the peer last heard from its
//! source takes it: `endpoint_index`); every other message carries our receiver index, which
//! names the peer (see `peers`). Decrypted packets whose source is outside
//! the peer's allowed IPs are dropped (inbound cryptokey routing). A data packet for a session we
//! do not have starts a handshake back to its sender at once (fast failover), when `failover`
//! allows it: not while the peer is being heard here, and within per-peer and global limits.
//! On an address taken over from a leaving sibling, such a datagram also goes to that sibling
//! (`relay`), and relay messages from siblings are taken here too.

use super::decision::{self, DatagramVerdict, MessageKind, Role, Route};
use super::failover::{self, PeerStamps, Refusal};
use super::offload::coalesce::TunWrites;
use super::peers::{LivePeer, PeerId, PeerTable};
use super::relay::{self, Direction, Relayed};
use super::{udp, Counters, DataPlaneShared};
use crate::log;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{HandshakeInit, Tunn, TunnResult};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::Ordering;

/// The largest message a `Tunn` writes in answer to a handshake message (an initiation's size;
/// a response is 92 bytes), so the room it decrypts into is never too small for it.
const LARGEST_ANSWER: usize = 148;

/// Handles one datagram received on `socket` along `path` (from `path.remote`). The `Tunn`
/// decrypts into `tun_writes`; `out` is scratch space for the rest of what goes out (packets
/// queued during a handshake, cookie replies, failover initiations, relay messages: at least
/// datagram size + 32 and 148 bytes).
pub fn handle_datagram(
    shared: &DataPlaneShared,
    socket: &UdpSocket,
    tun_writes: &mut TunWrites,
    path: udp::Path,
    datagram: &[u8],
    out: &mut [u8],
) {
    if relay::is_relay(datagram) {
        return handle_relay(shared, socket, tun_writes, path, datagram, out);
    }
    // One table for the whole datagram: a reload swaps in a new one between datagrams.
    let peers = shared.peers.load();
    match decision::route(datagram, |index| peers.by_receiver_index(index)) {
        Route::Drop(reason) => Counters::count(shared.counters.dropped(reason)),
        Route::Initiation(init) => {
            if !passes_rate_limit(shared, &shared.handshake_limiter, socket, path, datagram, out) {
                return;
            }
            // First the peer last heard from this endpoint (`endpoint_index`): a right guess
            // saves the Diffie-Hellman that only identifies the sender.
            if let Some(id) = guess_initiator(shared, &peers, path.remote) {
                let at = Target { peers: &peers, id, kind: MessageKind::Initiation, guessed: true };
                match take(shared, socket, tun_writes, at, path, datagram, out) {
                    // A forged or replayed initiation is refused there and counted in neither.
                    Taken::Answered => return Counters::count(&shared.counters.initiations_known_by_endpoint),
                    Taken::Other => return,
                    Taken::WrongPeer => Counters::count(&shared.counters.initiation_guesses_missed),
                }
            }
            if let Some(id) = identify_initiator(shared, &peers, &init) {
                let at = Target { peers: &peers, id, kind: MessageKind::Initiation, guessed: false };
                take(shared, socket, tun_writes, at, path, datagram, out);
            }
        }
        Route::Peer(id, kind) => {
            if kind == MessageKind::Response {
                let last_failover = peers.get(id).last_failover_ms.load(Ordering::Relaxed);
                let limiter = if failover::awaits_failover_response(last_failover, shared.now_ms()) {
                    &shared.failover_response_limiter
                } else {
                    &*shared.handshake_limiter
                };
                if !passes_rate_limit(shared, limiter, socket, path, datagram, out) {
                    return;
                }
            }
            take(shared, socket, tun_writes, Target { peers: &peers, id, kind, guessed: false }, path, datagram, out);
        }
    }
}

/// The peer a datagram goes to, and how it was found.
#[derive(Clone, Copy)]
struct Target<'a> {
    peers: &'a PeerTable,
    id: PeerId,
    kind: MessageKind,
    /// An initiation given to the peer last heard from its source, not yet known to be theirs.
    guessed: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Taken {
    /// The `Tunn` answered (a handshake message went back).
    Answered,
    Other,
    /// A guessed initiation came from another peer: nothing happened, identify its sender.
    WrongPeer,
}

/// Gives the datagram to its peer's `Tunn` and carries out the verdict.
fn take(
    shared: &DataPlaneShared,
    socket: &UdpSocket,
    tun_writes: &mut TunWrites,
    at: Target,
    path: udp::Path,
    datagram: &[u8],
    out: &mut [u8],
) -> Taken {
    let source = path.remote;
    let peer = at.peers.get(at.id);
    if !peer.admits_source(&source) {
        if at.guessed {
            return Taken::WrongPeer;
        }
        Counters::count(&shared.counters.dropped_datagrams);
        return Taken::Other;
    }
    let source_ip = source.ip().to_canonical();
    let mut tunn = peer.lock_tunn();
    // Decrypted straight into the TUN batch (a handshake's answer is written there too, and
    // forgotten once sent): the packet is not copied again.
    let room = tun_writes.room(datagram.len().max(LARGEST_ANSWER));
    let room_at = room.as_ptr() as usize;
    let result = tunn.decapsulate(Some(source_ip), datagram, room);
    if at.guessed && decision::another_peers_initiation(&result) {
        return Taken::WrongPeer;
    }
    match decision::verdict(at.kind, result) {
        DatagramVerdict::Answer { reply, handshake } => {
            send(shared, socket, reply, path);
            if let Some(role) = handshake {
                handshake_completed(peer, source, role);
            }
            note_endpoint(shared, peer, path, handshake == Some(Role::Responder));
            // Packets queued while the session was being made can go now.
            while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], out) {
                send(shared, socket, queued, path);
            }
            return Taken::Answered;
        }
        DatagramVerdict::Deliver { packet, source: from } => {
            let (offset, len) = ((packet.as_ptr() as usize).wrapping_sub(room_at), packet.len());
            deliver(at.peers, at.id, peer, tun_writes, offset, len, from);
            note_endpoint(shared, peer, path, false);
        }
        DatagramVerdict::Authenticated => note_endpoint(shared, peer, path, false),
        DatagramVerdict::Nothing => {}
        DatagramVerdict::UnknownSession { rejected } => {
            if rejected {
                Counters::count(&shared.counters.rejected_datagrams);
            }
            // What a sibling relays is ours only if we still hold its session: no handshake
            // from here, and nothing relayed on.
            if path.via.is_none() {
                relay_to_siblings(shared, socket, path, datagram, out);
                start_failover_handshake(shared, socket, peer, &mut tunn, path, out);
            }
        }
        DatagramVerdict::Rejected => Counters::count(&shared.counters.rejected_datagrams),
    }
    Taken::Other
}

/// MAC check and the shared handshake rate limit (a cookie reply when under load); false when
/// the datagram must not go further.
fn passes_rate_limit(
    shared: &DataPlaneShared,
    limiter: &RateLimiter,
    socket: &UdpSocket,
    path: udp::Path,
    datagram: &[u8],
    out: &mut [u8],
) -> bool {
    match limiter.verify_packet(Some(path.remote.ip().to_canonical()), datagram, out) {
        Ok(_) => true,
        Err(TunnResult::WriteToNetwork(cookie)) => {
            Counters::count(&shared.counters.cookie_replies);
            send(shared, socket, cookie, path);
            false
        }
        Err(_) => {
            Counters::count(&shared.counters.rejected_datagrams);
            false
        }
    }
}

/// The peer last authenticated from `source`, if it is still configured (`endpoint_index`).
fn guess_initiator(shared: &DataPlaneShared, peers: &PeerTable, source: SocketAddr) -> Option<PeerId> {
    let mut index = shared.endpoint_index.lock().unwrap_or_else(|e| e.into_inner());
    let key = index.guess(&source)?;
    let id = peers.by_public_key(&key);
    if id.is_none() {
        index.forget(&source);
    }
    id
}

/// Finds the peer a handshake initiation comes from (after the MAC and rate-limit checks): the
/// DH that reveals the initiator's static key.
fn identify_initiator(shared: &DataPlaneShared, peers: &PeerTable, init: &HandshakeInit) -> Option<PeerId> {
    let half = match parse_handshake_anon(&shared.static_private, &shared.static_public, init) {
        Ok(half) => half,
        Err(_) => {
            Counters::count(&shared.counters.rejected_datagrams);
            return None;
        }
    };
    let id = peers.by_public_key(&half.peer_static_public);
    if id.is_none() {
        Counters::count(&shared.counters.unknown_peer_handshakes);
    }
    id
}

/// Queues the packet decrypted into the TUN batch's room (`offset`, `len`) for the TUN (the
/// worker writes the batch) if its source belongs to the peer.
fn deliver(
    peers: &PeerTable,
    peer_id: PeerId,
    peer: &LivePeer,
    tun_writes: &mut TunWrites,
    offset: usize,
    len: usize,
    from: std::net::IpAddr,
) {
    if !peers.source_allowed(peer_id, from) {
        LivePeer::count(&peer.counters.rejected_source);
        return;
    }
    LivePeer::count(&peer.counters.rx_packets);
    tun_writes.take_room(offset, len);
}

fn handshake_completed(peer: &LivePeer, source: SocketAddr, role: Role) {
    LivePeer::count(&peer.counters.handshakes);
    if peer.loopback_only {
        // The self-test's own peer handshakes every run; its result line says enough.
        return;
    }
    let role = match role {
        Role::Responder => "as responder",
        Role::Initiator => "as initiator",
    };
    log!("peer {} handshake completed {} with {}", peer.name(), role, udp::canonical(source));
}

/// Records when and along which path an authenticated packet came; logs when a known peer
/// moved. The endpoint index (`endpoint_index`) learns where the peer is when it moved, and after
/// every handshake it began (`answered_initiation`): its next one is likely to come from there
/// too, even when another peer was heard there in between.
fn note_endpoint(shared: &DataPlaneShared, peer: &LivePeer, path: udp::Path, answered_initiation: bool) {
    peer.last_authenticated_ms.store(shared.now_ms(), Ordering::Relaxed);
    let source = path.remote;
    let moved = peer.update_path(path);
    if moved.is_none() && !answered_initiation {
        return;
    }
    let previous = moved.flatten();
    shared.endpoint_index.lock().unwrap_or_else(|e| e.into_inner()).note(peer.public_key.0, source, previous);
    if let Some(old) = previous {
        if peer.loopback_only {
            return;
        }
        log!("peer {} roamed from {} to {}", peer.name(), udp::canonical(old), udp::canonical(source));
    }
}

/// A data packet named this peer but we have no session for it: perhaps the client's flow was
/// moved to us from another bastion, perhaps it is forged. When `failover` allows it, answer
/// with a handshake initiation to where the packet came from, so a moved client re-keys after
/// one round trip instead of after 15–120 s.
fn start_failover_handshake(
    shared: &DataPlaneShared,
    socket: &UdpSocket,
    peer: &LivePeer,
    tunn: &mut Tunn,
    path: udp::Path,
    out: &mut [u8],
) {
    let source = path.remote;
    let now = shared.now_ms();
    let last = peer.last_failover_ms.load(Ordering::Relaxed);
    let stamps = PeerStamps {
        last_authenticated_ms: peer.last_authenticated_ms.load(Ordering::Relaxed),
        last_failover_ms: last,
    };
    let allowed = failover::peer_allows(stamps, now)
        .and_then(|()| shared.failover_budget.lock().unwrap_or_else(|e| e.into_inner()).take(now));
    match allowed {
        Ok(()) => {}
        Err(Refusal::PeerHeardRecently) => return Counters::count(&shared.counters.failover_refused_heard_recently),
        Err(Refusal::GlobalBudget) => return Counters::count(&shared.counters.failover_refused_budget),
        Err(Refusal::PeerInterval) => return,
    }
    // Another worker may have taken this peer's slot meanwhile: only one of them sends.
    if peer.last_failover_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    // A handshake already in progress toward an old endpoint is re-sent toward the new source
    // (allowed only because the peer has been quiet here: see `failover`).
    let force = peer.endpoint() != Some(source);
    if let TunnResult::WriteToNetwork(initiation) = tunn.format_handshake_initiation(out, force) {
        LivePeer::count(&peer.counters.failover_handshakes);
        log_failover(peer, source, now);
        send(shared, socket, initiation, path);
    }
}

/// The failover line, at most once per peer per `failover::LOG_INTERVAL_MS`.
fn log_failover(peer: &LivePeer, source: SocketAddr, now: u64) {
    let last = peer.last_failover_log_ms.load(Ordering::Relaxed);
    if !failover::log_due(last, now)
        || peer.last_failover_log_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        peer.failover_lines_left_out.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let left_out = peer.failover_lines_left_out.swap(0, Ordering::Relaxed);
    let more = if left_out > 0 { format!(" ({left_out} more since the last such line)") } else { String::new() };
    log!(
        "a packet claiming to be from peer {} names a session this bastion does not have; \
         starting a handshake to {}{more}",
        peer.name(),
        udp::canonical(source)
    );
}

pub(super) fn send(shared: &DataPlaneShared, socket: &UdpSocket, packet: &[u8], path: udp::Path) {
    if let Some(via) = path.via {
        return send_through(shared, socket, packet, path, via);
    }
    if udp::send_one(socket, packet, path.for_socket(shared.dual_stack)).is_err() {
        Counters::count(&shared.counters.send_errors);
    }
}

/// The Unix clock relay messages carry.
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Seals `message` and sends it to the sibling at `to`.
fn relay(shared: &DataPlaneShared, socket: &UdpSocket, message: Relayed, to: SocketAddrV4, out: &mut [u8]) {
    let Some(len) = relay::seal(&shared.relay_key, message, unix_ms(), out) else {
        return Counters::count(&shared.counters.send_errors);
    };
    Counters::count(&shared.counters.relayed_datagrams);
    let path = udp::Path::to(SocketAddr::V4(to)).for_socket(shared.dual_stack);
    if udp::send_one(socket, &out[..len], path).is_err() {
        Counters::count(&shared.counters.send_errors);
    }
}

/// A datagram of a session we do not hold came to an address taken over from a leaving sibling,
/// or arrived while siblings leave: such a sibling may still hold the session, so it gets the
/// datagram too.
fn relay_to_siblings(shared: &DataPlaneShared, socket: &UdpSocket, path: udp::Path, datagram: &[u8], out: &mut [u8]) {
    let (Some(local), SocketAddr::V4(client)) = (path.local, udp::canonical(path.remote)) else { return };
    let siblings = shared.relays.read().unwrap_or_else(|e| e.into_inner()).for_arrival(local);
    for sibling in siblings {
        let message = Relayed { direction: Direction::Arrived, client, local, datagram };
        relay(shared, socket, message, sibling, out);
    }
}

/// What we send along a path a sibling relays goes to that sibling, to leave from the address
/// it took over from us.
fn send_through(shared: &DataPlaneShared, socket: &UdpSocket, packet: &[u8], path: udp::Path, via: SocketAddrV4) {
    let (Some(local), SocketAddr::V4(client)) = (path.local, udp::canonical(path.remote)) else {
        return Counters::count(&shared.counters.send_errors);
    };
    let mut out = vec![0u8; packet.len() + relay::OVERHEAD];
    let message = Relayed { direction: Direction::Emit, client, local, datagram: packet };
    relay(shared, socket, message, via, &mut out);
}

/// A relay message from a sibling: a client's datagram that came to an address it took over
/// from us (handled as if it had come to that address here, our answers going back through the
/// sibling), or one of our datagrams to send from an address we took over from it (only from
/// the sibling we took that address from).
fn handle_relay(
    shared: &DataPlaneShared,
    socket: &UdpSocket,
    tun_writes: &mut TunWrites,
    path: udp::Path,
    message: &[u8],
    out: &mut [u8],
) {
    let SocketAddr::V4(sibling) = udp::canonical(path.remote) else {
        return Counters::count(&shared.counters.relay_refused);
    };
    let relayed = match relay::open(&shared.relay_key, message, unix_ms()) {
        Ok(relayed) => relayed,
        Err(_) => return Counters::count(&shared.counters.relay_refused),
    };
    match relayed.direction {
        Direction::Arrived => {
            Counters::count(&shared.counters.relayed_datagrams);
            let path =
                udp::Path { remote: SocketAddr::V4(relayed.client), local: Some(relayed.local), via: Some(sibling) };
            handle_datagram(shared, socket, tun_writes, path, relayed.datagram, out);
        }
        Direction::Emit => {
            let allowed =
                shared.relays.read().unwrap_or_else(|e| e.into_inner()).may_emit(*sibling.ip(), relayed.local);
            if !allowed {
                return Counters::count(&shared.counters.relay_refused);
            }
            Counters::count(&shared.counters.relayed_datagrams);
            let path = udp::Path { remote: SocketAddr::V4(relayed.client), local: Some(relayed.local), via: None };
            send(shared, socket, relayed.datagram, path);
        }
    }
}
