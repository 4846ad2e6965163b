//! Tunnel → network: one IP packet read from the TUN, encrypted for the peer whose allowed IPs
//! hold its destination most closely (outbound cryptokey routing), sent to the peer's endpoint.

use super::peers::LivePeer;
use super::send_runs::{Run, SendRuns};
use super::{Counters, DataPlaneShared};
use boringtun::noise::{Tunn, TunnResult};

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
    match tunn.encapsulate(packet, out) {
        TunnResult::WriteToNetwork(datagram) => match peer.path() {
            Some(path) => {
                LivePeer::count(&peer.counters.tx_packets);
                runs.push(path.for_socket(shared.dual_stack), datagram, send);
            }
            // A roaming client that never reached this bastion: it has to come to us first.
            None => Counters::count(&shared.counters.dropped_tun_packets),
        },
        TunnResult::Done => {}
        _ => Counters::count(&shared.counters.dropped_tun_packets),
    }
}
