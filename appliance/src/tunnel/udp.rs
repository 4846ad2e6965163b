//! The WireGuard UDP sockets: one per worker, all bound to the listen port with SO_REUSEPORT so
//! the kernel spreads peers over the workers by flow (a peer's datagrams always reach the same
//! worker, so they are never reordered). Dual-stack IPv6 sockets take IPv4 too; a host without
//! IPv6 gets IPv4-only sockets.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};

/// Socket buffer size asked for; the kernel caps it at net.core.[rw]mem_max.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// The sockets of one listen port.
pub struct ListenSockets {
    pub sockets: Vec<UdpSocket>,
    /// Whether the sockets are AF_INET6 (dual-stack): IPv4 peers appear as `::ffff:a.b.c.d`.
    pub dual_stack: bool,
}

/// Binds `count` sockets to `port` on every address (IPv6 and IPv4 when the host has IPv6).
pub fn bind(port: u16, count: usize) -> io::Result<ListenSockets> {
    match bind_all(Domain::IPV6, port, count) {
        Ok(sockets) => Ok(ListenSockets { sockets, dual_stack: true }),
        Err(v6_error) if v6_error.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            let sockets = bind_all(Domain::IPV4, port, count)?;
            Ok(ListenSockets { sockets, dual_stack: false })
        }
        Err(e) => Err(e),
    }
}

fn bind_all(domain: Domain, port: u16, count: usize) -> io::Result<Vec<UdpSocket>> {
    let address: SocketAddr = if domain == Domain::IPV6 {
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0))
    } else {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
    };
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = Socket::new(domain, Type::DGRAM.nonblocking().cloexec(), Some(Protocol::UDP))?;
        if domain == Domain::IPV6 {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_port(true)?;
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        socket.bind(&address.into()).map_err(|e| io::Error::new(e.kind(), format!("bind UDP {address}: {e}")))?;
        sockets.push(socket.into());
    }
    Ok(sockets)
}

/// The address to hand to `send_to` on our sockets: IPv4 peers become IPv4-mapped IPv6
/// addresses on dual-stack sockets.
pub fn socket_address(peer: SocketAddr, dual_stack: bool) -> SocketAddr {
    match peer {
        SocketAddr::V4(v4) if dual_stack => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        other => other,
    }
}

/// The address as people write it: `::ffff:192.0.2.1` becomes `192.0.2.1`.
pub fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_peers_are_mapped_only_on_dual_stack_sockets() {
        let v4: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        assert_eq!(socket_address(v4, false), v4);
        let mapped = socket_address(v4, true);
        assert_eq!(mapped, "[::ffff:192.0.2.1]:51820".parse().unwrap());
        assert_eq!(canonical(mapped), v4);
    }

    #[test]
    fn workers_share_one_port() {
        let sockets = bind(0, 1).unwrap();
        let port = sockets.sockets[0].local_addr().unwrap().port();
        let more = bind(port, 2).unwrap();
        assert_eq!(more.sockets.len(), 2);
    }
}
