//! While the service drains, it asks every peer with a live session to move to another bastion
//! ([`crate::move_notice`]): a client running `bastion watch` then moves its tunnel to a new flow
//! while this bastion still serves, and a load balancer that no longer sends new flows here
//! (the target is deregistered or unhealthy) places it on a healthy bastion. Stock clients
//! ignore the notice (it is one UDP datagram to a port nothing listens on).
//!
//! [`recipients`] decides who gets one (pure); [`send`] sends them from the bastion's tunnel
//! address, so they go through the TUN and the peers' sessions like any other packet;
//! [`ask_everyone`] is one round of both, for the drain and the lifecycle poller alike.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::config::InterfaceAddress;
use crate::move_notice;
use crate::tunnel::{DataPlane, PeerStatus};

/// How often the notices are repeated during a drain (a datagram can be lost).
pub const REPEAT: Duration = Duration::from_secs(1);
/// A session older than this is gone (WireGuard's REJECT_AFTER_TIME): no notice.
const SESSION_LIFETIME: Duration = Duration::from_secs(180);

/// (from, to) for each peer with a live session whose first allowed IP is a single address
/// (a client's tunnel address), from this bastion's tunnel address of the same family. The
/// self-test's internal peer is skipped.
pub fn recipients(peers: &[PeerStatus], addresses: &[InterfaceAddress]) -> Vec<(SocketAddr, SocketAddr)> {
    peers
        .iter()
        .filter(|p| !p.internal && p.last_handshake.is_some_and(|age| age < SESSION_LIFETIME))
        .filter_map(|p| {
            let net =
                p.allowed_ips.iter().find(|n| n.netmask() == if n.network_address().is_ipv4() { 32 } else { 128 })?;
            let to = net.network_address();
            let from = addresses.iter().find(|a| a.address.is_ipv4() == to.is_ipv4())?.address;
            Some((SocketAddr::new(from, 0), SocketAddr::new(to, move_notice::PORT)))
        })
        .collect()
}

/// Sends one notice to each recipient; how many went out.
pub fn send(recipients: &[(SocketAddr, SocketAddr)]) -> usize {
    let payload = move_notice::encode(move_notice::Reason::Drain);
    let mut sockets: Vec<(IpAddr, UdpSocket)> = Vec::new();
    let mut sent = 0;
    for (from, to) in recipients {
        let socket = match sockets.iter().find(|(ip, _)| *ip == from.ip()) {
            Some((_, socket)) => socket,
            None => match UdpSocket::bind(from) {
                Ok(socket) => {
                    sockets.push((from.ip(), socket));
                    &sockets.last().expect("just pushed").1
                }
                Err(_) => continue,
            },
        };
        if socket.send_to(&payload, to).is_ok() {
            sent += 1;
        }
    }
    sent
}

/// One round: every peer with a live session is asked to move. `(sent, asked)`.
pub fn ask_everyone(data_plane: &DataPlane) -> (usize, usize) {
    let recipients = recipients(&data_plane.peers(), data_plane.addresses());
    (send(&recipients), recipients.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    fn peer(allowed: &[&str], age: Option<u64>, internal: bool) -> PeerStatus {
        PeerStatus {
            name: "p".into(),
            public_key: PrivateKey::generate().public_key(),
            allowed_ips: allowed.iter().map(|a| a.parse().unwrap()).collect(),
            session_index: 0,
            endpoint: None,
            last_handshake: age.map(Duration::from_secs),
            handshakes: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            rejected_source: 0,
            failover_handshakes: 0,
            internal,
        }
    }

    #[test]
    fn live_sessions_with_a_tunnel_address_get_a_notice_from_the_same_family() {
        let addresses = [
            InterfaceAddress { address: "10.100.0.1".parse().unwrap(), prefix_len: 24 },
            InterfaceAddress { address: "fd00:100::1".parse().unwrap(), prefix_len: 64 },
        ];
        let peers = [
            peer(&["10.100.0.2/32", "fd00:100::2/128"], Some(3), false),
            peer(&["fd00:100::3/128"], Some(100), false),
            peer(&["10.100.0.4/32"], Some(181), false), // session expired
            peer(&["10.100.0.5/32"], None, false),      // never connected
            peer(&["10.100.0.254/32"], Some(1), true),  // the self-test
            peer(&["192.168.7.0/24"], Some(1), false),  // a site behind a peer: no single address
        ];
        let got = recipients(&peers, &addresses);
        let want: Vec<(SocketAddr, SocketAddr)> = vec![
            ("10.100.0.1:0".parse().unwrap(), "10.100.0.2:821".parse().unwrap()),
            ("[fd00:100::1]:0".parse().unwrap(), "[fd00:100::3]:821".parse().unwrap()),
        ];
        assert_eq!(got, want);
    }
}
