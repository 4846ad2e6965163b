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
//!
//! Replies leave from the address the peer's datagrams came to: with `IP_PKTINFO` on
//! ([`enable_packet_info`]) every IPv4 datagram tells its local address ([`Path::local`]) and
//! every send names it again. A bastion with more than one address (a dead sibling's target
//! address taken over, see `siblings`) then answers each flow from the address the load
//! balancer sent it to, as the load balancer's flow tracking requires; without it the kernel
//! would pick the source by route.

use nix::sys::socket::sockopt;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

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

/// Both ends of a datagram's way: the peer's address and ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    pub remote: SocketAddr,
    /// The local IPv4 address the peer's datagrams arrive at, when the kernel said
    /// (`IP_PKTINFO`); what goes back to `remote` leaves from it. `None`: the kernel chooses.
    pub local: Option<Ipv4Addr>,
    /// The sibling that relays this path's datagrams (`super::relay`): they reached us through
    /// it, and what goes back to `remote` goes to it, to leave from `local`, which it holds now.
    pub via: Option<SocketAddrV4>,
}

impl Path {
    /// A path whose local end the kernel chooses.
    pub fn to(remote: SocketAddr) -> Path {
        Path { remote, local: None, via: None }
    }

    /// The same path with `remote` as our sockets take it ([`socket_address`]).
    pub fn for_socket(self, dual_stack: bool) -> Path {
        Path { remote: socket_address(self.remote, dual_stack), ..self }
    }
}

/// Asks the kernel to say, with each IPv4 datagram (on dual-stack sockets too), which local
/// address it came to (`IP_PKTINFO`).
pub fn enable_packet_info(socket: &UdpSocket) -> io::Result<()> {
    socket::setsockopt(socket, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from)
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

/// What one receive got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    /// Who sent it and the local address it came to (with [`enable_packet_info`]).
    pub path: Path,
    /// The size of each datagram when the kernel coalesced several (UDP GRO).
    pub segment: Option<usize>,
}

/// Room for the control messages a receive brings (the GRO segment size and the local address),
/// made once per worker: `nix::cmsg_space!` allocates, and a receive happens per GRO buffer.
pub struct ControlSpace(Vec<u8>);

impl ControlSpace {
    pub fn new() -> ControlSpace {
        ControlSpace(nix::cmsg_space!(libc::c_int, libc::in_pktinfo))
    }
}

/// One receive: the bytes, their source and destination, and the size of each datagram when
/// the kernel coalesced several (UDP GRO).
pub fn receive(socket: &UdpSocket, buffer: &mut [u8], space: &mut ControlSpace) -> io::Result<Received> {
    let mut slices = [IoSliceMut::new(buffer)];
    let message =
        socket::recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut slices, Some(&mut space.0), MsgFlags::empty())
            .map_err(io::Error::from)?;
    let mut segment = None;
    let mut local = None;
    if let Ok(cmsgs) = message.cmsgs() {
        for cmsg in cmsgs {
            match cmsg {
                ControlMessageOwned::UdpGroSegments(size) => {
                    segment = usize::try_from(size).ok().filter(|&s| s > 0);
                }
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    local = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))).filter(|a| !a.is_unspecified());
                }
                _ => {}
            }
        }
    }
    let remote = message
        .address
        .and_then(|a| {
            a.as_sockaddr_in6()
                .map(|v6| SocketAddr::V6(SocketAddrV6::new(v6.ip(), v6.port(), v6.flowinfo(), v6.scope_id())))
                .or_else(|| a.as_sockaddr_in().map(|v4| SocketAddr::from((v4.ip(), v4.port()))))
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a datagram without a source address"))?;
    Ok(Received { len: message.bytes, path: Path { remote, local, via: None }, segment })
}

/// The control message that makes a datagram leave from `local`.
fn leave_from(local: Ipv4Addr) -> libc::in_pktinfo {
    libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr { s_addr: u32::from(local).to_be() },
        ipi_addr: libc::in_addr { s_addr: 0 },
    }
}

fn send_message(socket: &UdpSocket, bytes: &[u8], to: SocketAddr, cmsgs: &[ControlMessage]) -> io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let fd = socket.as_raw_fd();
    let sent = match to {
        SocketAddr::V4(v4) => socket::sendmsg(fd, &iov, cmsgs, MsgFlags::empty(), Some(&SockaddrIn::from(v4))),
        SocketAddr::V6(v6) => socket::sendmsg(fd, &iov, cmsgs, MsgFlags::empty(), Some(&SockaddrIn6::from(v6))),
    };
    sent.map(|_| ()).map_err(io::Error::from)
}

/// Sends one datagram along `path` (`path.remote` already in the socket's address family).
pub fn send_one(socket: &UdpSocket, bytes: &[u8], path: Path) -> io::Result<()> {
    match path.local {
        None => socket.send_to(bytes, path.remote).map(|_| ()),
        Some(local) => send_message(socket, bytes, path.remote, &[ControlMessage::Ipv4PacketInfo(&leave_from(local))]),
    }
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

/// Sends `bytes`, datagrams of `segment` bytes back to back (the last may be shorter), along
/// `path` (`path.remote` already in the socket's address family) as one `sendmsg` with
/// `UDP_SEGMENT`.
pub fn send_segments(socket: &UdpSocket, bytes: &[u8], segment: usize, path: Path) -> io::Result<()> {
    let segment = u16::try_from(segment).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    match path.local {
        None => send_message(socket, bytes, path.remote, &[ControlMessage::UdpGsoSegments(&segment)]),
        Some(local) => {
            let info = leave_from(local);
            let cmsgs = [ControlMessage::UdpGsoSegments(&segment), ControlMessage::Ipv4PacketInfo(&info)];
            send_message(socket, bytes, path.remote, &cmsgs)
        }
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
        // One control space for every receive, as a worker has.
        let mut control = ControlSpace::new();
        for gro in [false, true] {
            let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
            receiver.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            if gro {
                assert!(enable_gro(&receiver), "UDP_GRO refused");
            }
            send_segments(&sender, &bytes, 100, Path::to(receiver.local_addr().unwrap())).unwrap();
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut buffer = vec![0u8; 65_536];
            while got.concat().len() < bytes.len() {
                let received = receive(&receiver, &mut buffer, &mut control).unwrap();
                assert_eq!(received.path.remote, sender.local_addr().unwrap());
                let n = received.len;
                match received.segment {
                    Some(size) => got.extend(buffer[..n].chunks(size).map(<[u8]>::to_vec)),
                    None => got.push(buffer[..n].to_vec()),
                }
            }
            assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 100, 50], "gro {gro}");
            assert_eq!(got.concat(), bytes, "gro {gro}");
        }
    }

    /// A wildcard socket answers from the address a datagram came to, one by one and as a GSO
    /// run; without the local address the kernel picks 127.0.0.1 (the route's source).
    #[test]
    fn replies_leave_from_the_address_the_datagram_came_to() {
        let listen = bind(0, 1).unwrap();
        let socket = &listen.sockets[0];
        enable_packet_info(socket).unwrap();
        let port = socket.local_addr().unwrap().port();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut buffer = vec![0u8; 65_536];
        let mut control = ControlSpace::new();
        for local in ["127.0.0.2", "127.0.0.3"] {
            peer.send_to(b"hello", (local, port)).unwrap();
            socket.set_nonblocking(false).unwrap();
            let received = receive(socket, &mut buffer, &mut control).unwrap();
            assert_eq!(received.path.local, Some(local.parse().unwrap()));
            assert_eq!(canonical(received.path.remote), peer.local_addr().unwrap());
            let to = Path { remote: socket_address(peer.local_addr().unwrap(), listen.dual_stack), ..received.path };
            send_one(socket, b"one", to).unwrap();
            send_segments(socket, &[7u8; 30], 10, to).unwrap();
            for expected in [3, 10, 10, 10] {
                let (n, from) = peer.recv_from(&mut buffer).unwrap();
                assert_eq!((n, from), (expected, SocketAddr::from((local.parse::<Ipv4Addr>().unwrap(), port))));
            }
            send_one(socket, b"kernel's choice", Path { local: None, ..to }).unwrap();
            let (_, from) = peer.recv_from(&mut buffer).unwrap();
            assert_eq!(from.ip(), "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
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
