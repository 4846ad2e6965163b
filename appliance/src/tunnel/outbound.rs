//! Tunnel → network: one IP packet read from the TUN, encrypted for the peer whose allowed IPs
//! hold its destination most closely (outbound cryptokey routing), sent to the peer's endpoint.

use super::peers::LivePeer;
use super::send_runs::{Run, SendRuns};
use super::{Counters, DataPlaneShared};
use boringtun::noise::{Tunn, TunnResult};

/// What a data message adds to the packet it carries: type, receiver index, counter (16 bytes)
/// and the AEAD tag (16).
const DATA_OVERHEAD: usize = 32;

/// Handles one packet read from the TUN: what goes out joins `runs` (sent through `send` as
/// runs complete; the caller flushes at the end of its batch). `out` must hold the packet + 32
/// bytes and at least 148.
pub fn handle_tun_packet(
    shared: &DataPlaneShared,
    packet: &[u8],
    out: &mut [u8],
    runs: &mut SendRuns,
    send: &mut impl FnMut(Run),
) {
    let Some(destination) = Tunn::dst_address(packet) else {
        Counters::count(&shared.counters.dropped_tun_packets);
        return;
    };
    let peers = shared.peers.load();
    let Some(peer_id) = peers.route(destination) else {
        // No peer owns this address (e.g. IPv6 router solicitations): nothing to send it to.
        Counters::count(&shared.counters.dropped_tun_packets);
        return;
    };
    let peer = peers.get(peer_id);
    let mut tunn = peer.lock_tunn();
    let Some(path) = peer.path() else {
        // A roaming client that never reached this bastion: it has to come to us first (the
        // Tunn keeps the packet for after a handshake, as before).
        let _ = tunn.encapsulate(packet, out);
        Counters::count(&shared.counters.dropped_tun_packets);
        return;
    };
    let path = path.for_socket(shared.dual_stack);
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
