//! Many real WireGuard peers in one process, for the reconnect storm: each is a boringtun
//! `Tunn` with its own key, tunnel address and UDP socket (so each is its own flow at the load
//! balancer), pinging the bastion's tunnel address through its session.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::handshake::{decode_key, public_key_of, random_key};
use crate::netns::Netns;

pub struct StormPeer {
    pub name: String,
    pub public_key: String,
    pub tunnel_v4: Ipv4Addr,
    tunn: Tunn,
    socket: UdpSocket,
    /// When the first echo reply after the last [`StormPeer::reset_clock`] came back.
    pub answered: Option<Instant>,
    seq: u16,
}

impl StormPeer {
    /// A peer named `name` with tunnel address `tunnel_v4`, its socket bound inside `ns`.
    pub fn new(ns: &Netns, name: &str, tunnel_v4: Ipv4Addr, bastion_public: &str, index: u32) -> StormPeer {
        let private = random_key();
        let public_key = public_key_of(private);
        let secret = StaticSecret::from(private);
        let tunn = Tunn::new(secret, PublicKey::from(decode_key(bastion_public)), None, None, index, None);
        let socket = ns.enter(|| UdpSocket::bind("0.0.0.0:0")).expect("a UDP socket in the client namespace");
        socket.set_nonblocking(true).unwrap();
        StormPeer { name: name.to_string(), public_key, tunnel_v4, tunn, socket, answered: None, seq: 0 }
    }

    /// The `[[peer]]` table of this peer for the bastion's config.
    pub fn toml(&self) -> String {
        crate::bastion::peer_toml(&self.name, &self.public_key, self.tunnel_v4)
    }

    pub fn has_session(&self) -> bool {
        self.tunn.stats().0.is_some()
    }

    pub fn reset_clock(&mut self) {
        self.answered = None;
    }

    /// Starts a handshake toward `endpoint`.
    pub fn initiate(&mut self, endpoint: SocketAddr) {
        let mut buf = vec![0u8; 2048];
        if let TunnResult::WriteToNetwork(p) = self.tunn.format_handshake_initiation(&mut buf, true) {
            let _ = self.socket.send_to(p, endpoint);
        }
    }

    /// One echo request to `to` through the session (queued in boringtun, and a handshake
    /// started, when there is none).
    pub fn ping(&mut self, to: Ipv4Addr, endpoint: SocketAddr) {
        self.seq = self.seq.wrapping_add(1);
        let packet = echo_request(self.tunnel_v4, to, self.seq);
        let mut buf = vec![0u8; 2048];
        if let TunnResult::WriteToNetwork(p) = self.tunn.encapsulate(&packet, &mut buf) {
            let _ = self.socket.send_to(p, endpoint);
        }
    }

    /// Lets boringtun's timers run (handshake retries, keepalives).
    pub fn tick(&mut self, endpoint: SocketAddr) {
        let mut buf = vec![0u8; 2048];
        if let TunnResult::WriteToNetwork(p) = self.tunn.update_timers(&mut buf) {
            let _ = self.socket.send_to(p, endpoint);
        }
    }

    /// Reads every datagram waiting on the socket: handshake messages are answered, an echo
    /// reply marks the peer answered. How many datagrams were read.
    pub fn poll(&mut self, endpoint: SocketAddr) -> usize {
        let mut datagram = vec![0u8; 2048];
        let mut buf = vec![0u8; 2048];
        let mut read = 0;
        while let Ok((n, from)) = self.socket.recv_from(&mut datagram) {
            read += 1;
            let mut result = self.tunn.decapsulate(Some(from.ip()), &datagram[..n], &mut buf);
            loop {
                match result {
                    TunnResult::WriteToNetwork(p) => {
                        let _ = self.socket.send_to(p, endpoint);
                        // boringtun may have more queued: ask again with no input.
                        result = self.tunn.decapsulate(None, &[], &mut buf);
                        continue;
                    }
                    // An ICMP echo reply: the peer's traffic flows again.
                    TunnResult::WriteToTunnelV4(p, _)
                        if p.len() >= 28 && p[9] == 1 && p[20] == 0 && self.answered.is_none() =>
                    {
                        self.answered = Some(Instant::now());
                    }
                    _ => {}
                }
                break;
            }
        }
        read
    }
}

/// An IPv4 ICMP echo request `from` → `to` with 8 bytes of payload.
pub fn echo_request(from: Ipv4Addr, to: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 36];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&36u16.to_be_bytes());
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&from.octets());
    p[16..20].copy_from_slice(&to.octets());
    let sum = internet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20] = 8;
    p[24..26].copy_from_slice(&0x5707u16.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    p[28..36].copy_from_slice(b"stormpng");
    let sum = internet_checksum(&p[20..]);
    p[22..24].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The Internet checksum of `bytes` (RFC 1071): what an IPv4 header or ICMP message carries.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Drives `peers` until every one is answered or `timeout` passes: each unanswered peer pings
/// `to` every `every`, and every peer's socket and timers are served in between.
pub fn drive_until_answered(
    peers: &mut [StormPeer],
    to: Ipv4Addr,
    endpoint: SocketAddr,
    every: Duration,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let mut next_ping = Instant::now();
    while Instant::now() < deadline && peers.iter().any(|p| p.answered.is_none()) {
        if Instant::now() >= next_ping {
            for p in peers.iter_mut().filter(|p| p.answered.is_none()) {
                p.ping(to, endpoint);
            }
            for p in peers.iter_mut() {
                p.tick(endpoint);
            }
            next_ping += every;
        }
        let mut read = 0;
        for p in peers.iter_mut() {
            read += p.poll(endpoint);
        }
        if read == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The peers' addresses in the tunnel: 10.100.0.20 and up (the topology's clients and the
/// self-test use other addresses of 10.100.0.0/24).
pub fn tunnel_address(i: usize) -> Ipv4Addr {
    assert!(i < 230, "at most 230 storm peers fit 10.100.0.20-249");
    Ipv4Addr::new(10, 100, 0, 20 + i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_requests_have_valid_checksums() {
        let p = echo_request(Ipv4Addr::new(10, 100, 0, 20), Ipv4Addr::new(10, 100, 0, 1), 7);
        assert_eq!(internet_checksum(&p[..20]), 0, "IPv4 header checksum");
        assert_eq!(internet_checksum(&p[20..]), 0, "ICMP checksum");
        assert_eq!(&p[26..28], &7u16.to_be_bytes());
    }
}
