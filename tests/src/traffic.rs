//! Raw traffic from inside a namespace: TCP reachability probes and the bounded flood of
//! garbage UDP datagrams for the bad-input test.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::netns::Netns;

/// Whether a TCP connection from `ns` to `addr` is accepted within `timeout`.
pub fn tcp_connect(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    ns.enter(|| {
        TcpStream::connect_timeout(&addr, timeout)
            .map(drop)
            .map_err(|e| format!("connect to {addr} from namespace {}: {e}", ns.name()))
    })
}

/// What a flood sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct FloodReport {
    pub sent: usize,
    /// Datagrams the local stack refused (e.g. buffer full); the flood goes on.
    pub send_errors: usize,
    pub bytes: usize,
}

/// Sends `count` datagrams from `ns` to `target`: random lengths 0..=1500 of random bytes, and
/// every fourth one crafted to look like WireGuard (a valid message type 1–4, three zero
/// reserved bytes, the exact length of that message type or a data packet's, garbage after).
/// `seed` makes a failing run reproducible.
pub fn udp_flood(ns: &Netns, target: SocketAddr, count: usize, seed: u64) -> FloodReport {
    ns.enter(|| {
        let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
        let socket = UdpSocket::bind(bind).expect("bind a UDP socket for the flood");
        let mut rng = XorShift(seed | 1);
        let mut report = FloodReport::default();
        let mut buf = [0u8; 1500];
        for i in 0..count {
            let len = if i % 4 == 3 {
                craft_wireguard_like(&mut rng, &mut buf)
            } else {
                let len = (rng.next() % 1501) as usize;
                rng.fill(&mut buf[..len]);
                len
            };
            match socket.send_to(&buf[..len], target) {
                Ok(n) => {
                    report.sent += 1;
                    report.bytes += n;
                }
                Err(_) => report.send_errors += 1,
            }
            // A breath every 200 datagrams: still a flood (tens of thousands per second), yet
            // one that lasts long enough for the test to watch the service while it runs.
            if i % 200 == 199 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        report
    })
}

/// Fills `buf` with a datagram that passes a naive type check and returns its length.
fn craft_wireguard_like(rng: &mut XorShift, buf: &mut [u8; 1500]) -> usize {
    // handshake initiation 148, response 92, cookie reply 64, data ≥ 32 (header + tag).
    let kind = 1 + (rng.next() % 4) as u8;
    let len = match kind {
        1 => 148,
        2 => 92,
        3 => 64,
        _ => match rng.next() % 3 {
            0 => 32,
            1 => 16, // shorter than any valid data packet
            _ => 32 + (rng.next() % 1400) as usize,
        },
    };
    rng.fill(&mut buf[..len]);
    buf[0] = kind;
    buf[1..4].fill(0);
    len
}

/// A small deterministic generator: reproducible garbage, no crate needed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}
