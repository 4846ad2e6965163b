//! The WireGuard UDP sockets: one per worker, all bound to the listen port with SO_REUSEPORT so
//! the kernel spreads peers over the workers by flow (a peer's datagrams always reach the same
//! worker, so they are never reordered). Dual-stack IPv6 sockets take IPv4 too; a host without
//! IPv6 gets IPv4-only sockets.
//!
//! Offloads, each with a fallback: a run of same-size datagrams to one endpoint goes out as one
//! `sendmsg` with `UDP_SEGMENT` (UDP GSO, [`send_run`]; a run the route cannot take as one goes
//! datagram by datagram, and a kernel or device without GSO turns it off for good), and with `UDP_GRO` on ([`enable_gro`]) the kernel hands over
//! a flow's consecutive datagrams as one buffer with their size ([`receive`]), which the worker
//! cuts apart again.

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use super::send_runs::Run;

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

/// Asks the kernel to coalesce a flow's datagrams on receive (UDP GRO, Linux 5.0); false when
/// it cannot.
pub fn enable_gro(socket: &UdpSocket) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt(2) on an open socket with a pointer to a c_int and its size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    result == 0
}

/// One receive: the bytes, their source, and the size of each datagram when the kernel
/// coalesced several (UDP GRO).
pub fn receive(socket: &UdpSocket, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<usize>)> {
    let mut space = nix::cmsg_space!(libc::c_int);
    let mut slices = [IoSliceMut::new(buffer)];
    let message =
        socket::recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut slices, Some(&mut space), MsgFlags::empty())
            .map_err(io::Error::from)?;
    let mut segment = None;
    if let Ok(cmsgs) = message.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::UdpGroSegments(size) = cmsg {
                segment = usize::try_from(size).ok().filter(|&s| s > 0);
            }
        }
    }
    let source = message
        .address
        .and_then(|a| {
            a.as_sockaddr_in6()
                .map(|v6| SocketAddr::V6(SocketAddrV6::new(v6.ip(), v6.port(), v6.flowinfo(), v6.scope_id())))
                .or_else(|| a.as_sockaddr_in().map(|v4| SocketAddr::from((v4.ip(), v4.port()))))
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a datagram without a source address"))?;
    Ok((message.bytes, source, segment))
}

/// What a failed GSO send means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoFailure {
    /// The device or kernel cannot do it (EIO: no checksum offload, as wireguard-go reads it;
    /// ENOPROTOOPT: no UDP_SEGMENT): stop trying.
    Unsupported,
    /// This run cannot go as one (EINVAL/EMSGSIZE: a segment too big for the route's MTU, e.g.
    /// after a peer's path MTU dropped): send it datagram by datagram, keep GSO for the rest.
    ThisRun,
    /// Anything else (a full buffer, no route): the datagrams are lost, as a send_to's would be.
    Other,
}

pub fn gso_failure(error: &io::Error) -> GsoFailure {
    match error.raw_os_error() {
        Some(libc::EIO) | Some(libc::ENOPROTOOPT) => GsoFailure::Unsupported,
        Some(libc::EINVAL) | Some(libc::EMSGSIZE) => GsoFailure::ThisRun,
        _ => GsoFailure::Other,
    }
}

/// Sends `run` (already in the socket's address family) as one `sendmsg` with `UDP_SEGMENT`.
pub fn send_run(socket: &UdpSocket, run: &Run) -> io::Result<()> {
    let segment = u16::try_from(run.segment).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
    let iov = [IoSlice::new(run.bytes)];
    let fd = socket.as_raw_fd();
    let sent = match run.to {
        SocketAddr::V4(v4) => socket::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&SockaddrIn::from(v4))),
        SocketAddr::V6(v6) => socket::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&SockaddrIn6::from(v6))),
    };
    sent.map(|_| ()).map_err(io::Error::from)
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

    /// A run sent with UDP GSO over loopback: a socket without GRO gets the datagrams one by
    /// one (the kernel cut them), one with GRO gets them as one buffer and their size.
    #[test]
    fn a_gso_run_arrives_as_datagrams_or_as_one_gro_buffer() {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut bytes = Vec::new();
        for i in 0..3u8 {
            bytes.extend_from_slice(&[i; 100]);
        }
        bytes.extend_from_slice(&[9; 50]);
        for gro in [false, true] {
            let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
            receiver.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            if gro {
                assert!(enable_gro(&receiver), "UDP_GRO refused");
            }
            let run = Run { to: receiver.local_addr().unwrap(), segment: 100, count: 4, bytes: &bytes };
            send_run(&sender, &run).unwrap();
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut buffer = vec![0u8; 65_536];
            while got.concat().len() < bytes.len() {
                let (n, source, segment) = receive(&receiver, &mut buffer).unwrap();
                assert_eq!(source, sender.local_addr().unwrap());
                match segment {
                    Some(size) => got.extend(buffer[..n].chunks(size).map(<[u8]>::to_vec)),
                    None => got.push(buffer[..n].to_vec()),
                }
            }
            assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 100, 50], "gro {gro}");
            assert_eq!(got.concat(), bytes, "gro {gro}");
        }
    }

    #[test]
    fn workers_share_one_port() {
        let sockets = bind(0, 1).unwrap();
        let port = sockets.sockets[0].local_addr().unwrap().port();
        let more = bind(port, 2).unwrap();
        assert_eq!(more.sockets.len(), 2);
    }
}
