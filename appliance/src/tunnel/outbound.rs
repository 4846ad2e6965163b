//! Tunnel → network: what one TUN read brought (an IP packet, or the segments of a TCP
//! super-packet), encrypted for the peer whose allowed IPs hold its destination most closely
//! (outbound cryptokey routing; found once per read), sent to the peer's endpoint.

use super::peers::LivePeer;
use super::send_runs::{Run, SendRuns};
use super::udp::Path;
use super::{Counters, DataPlaneShared};
use boringtun::noise::{Tunn, TunnResult};
use std::net::IpAddr;

/// What a data message adds to the packet it carries: type, receiver index, counter (16 bytes)
/// and the AEAD tag (16).
const DATA_OVERHEAD: usize = 32;

/// Handles what one TUN read brought for `destination`: one IP packet, or the segments of a TCP
/// super-packet (`offload::segment`), which all go to the same address. The peer is found, its
/// `Tunn` locked and its path read once; then `produce` hands each packet to the sealer. What
/// goes out joins `runs` (sent through `send` as runs complete; the caller flushes at the end of
/// its batch). `out` must hold a packet + 32 bytes and at least 148. None: no peer to seal for
/// (counted).
pub fn handle_tun_read<R>(
    shared: &DataPlaneShared,
    destination: Option<IpAddr>,
    out: &mut [u8],
    runs: &mut SendRuns,
    send: &mut impl FnMut(Run),
    produce: impl FnOnce(&mut dyn FnMut(&[u8])) -> R,
) -> Option<R> {
    let Some(destination) = destination else {
        Counters::count(&shared.counters.dropped_tun_packets);
        return None;
    };
    let peers = shared.peers.load();
    let Some(peer_id) = peers.route(destination) else {
        // No peer owns this address (e.g. IPv6 router solicitations): nothing to send it to.
        Counters::count(&shared.counters.dropped_tun_packets);
        return None;
    };
    let peer = peers.get(peer_id);
    let mut tunn = peer.lock_tunn();
    let path = peer.path().map(|p| p.for_socket(shared.dual_stack));
    Some(produce(&mut |packet| seal(shared, peer, &mut tunn, path, packet, out, runs, send)))
}

/// Seals one packet for `peer` into `runs`.
#[allow(clippy::too_many_arguments)]
fn seal(
    shared: &DataPlaneShared,
    peer: &LivePeer,
    tunn: &mut Tunn,
    path: Option<Path>,
    packet: &[u8],
    out: &mut [u8],
    runs: &mut SendRuns,
    send: &mut impl FnMut(Run),
) {
    let Some(path) = path else {
        // A roaming client that never reached this bastion: it has to come to us first (the
        // Tunn keeps the packet for after a handshake, as before).
        let _ = tunn.encapsulate(packet, out);
        Counters::count(&shared.counters.dropped_tun_packets);
        return;
    };
    // A data message is the packet + 32 bytes (boringtun does not pad); it is sealed straight
    // into the run. Anything else boringtun writes instead (a handshake initiation when there is
    // no session: the packet waits in the Tunn) goes out on its own.
    let sealed_len = packet.len() + DATA_OVERHEAD;
    let mut instead: Option<usize> = None;
    let mut failed = false;
    let sealed = runs.push_in_place(path, sealed_len, send, |slot| match tunn.encapsulate(packet, slot) {
        TunnResult::WriteToNetwork(datagram) if datagram.len() == sealed_len => true,
        TunnResult::WriteToNetwork(other) => {
            out[..other.len()].copy_from_slice(other);
            instead = Some(other.len());
            false
        }
        TunnResult::Done => false,
        _ => {
            failed = true;
            false
        }
    });
    if sealed {
        LivePeer::count(&peer.counters.tx_packets);
    } else if let Some(len) = instead {
        LivePeer::count(&peer.counters.tx_packets);
        runs.push(path, &out[..len], send);
    } else if failed {
        Counters::count(&shared.counters.dropped_tun_packets);
    }
}
