//! A WireGuard server for the client's unit tests: a boringtun responder `Tunn` on a loopback UDP
//! socket in a thread, with a smoltcp stack behind it that answers pings and TCP connections for
//! real (and, as a router would, ICMP "host unreachable" for configured destinations). It is a
//! second, independent endpoint of the protocol, not a model of the client.

use super::super::stack::Queues;
use crate::keys::{PrivateKey, PublicKey};
use boringtun::noise::{Tunn, TunnResult};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{
    HardwareAddress, Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpProtocol, Ipv4Packet,
    Ipv4Repr,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct ServerSetup {
    pub family_v6: bool,
    pub private: PrivateKey,
    /// The only peer the server admits.
    pub client_public: PublicKey,
    /// Addresses the server's stack owns (answers pings and TCP for them).
    pub addresses: Vec<IpCidr>,
    /// TCP ports listening on those addresses.
    pub listeners: Vec<SocketAddr>,
    /// Destinations answered with ICMP "destination host unreachable" from `addresses[0]`.
    pub unreachable: Vec<IpAddr>,
    /// Send junk datagrams to the client before every real answer.
    pub garbage: bool,
}

/// What the server saw, for assertions on real behaviour.
#[derive(Debug, Default, Clone)]
pub struct ServerLog {
    /// Handshake responses sent.
    pub handshakes: usize,
    /// TCP connections that reached Established on a listener, by local endpoint.
    pub accepted: Vec<SocketAddr>,
    /// Connections the client closed with a FIN (not a reset).
    pub closed_by_fin: usize,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<ServerLog>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(setup: ServerSetup) -> FakeServer {
        let bind: SocketAddr =
            if setup.family_v6 { (Ipv6Addr::LOCALHOST, 0).into() } else { (Ipv4Addr::LOCALHOST, 0).into() };
        let socket = UdpSocket::bind(bind).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let thread = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || serve(setup, socket, &stop, &log))
        };
        FakeServer { addr, stop, log, thread: Some(thread) }
    }

    pub fn log(&self) -> ServerLog {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Listener {
    handle: SocketHandle,
    endpoint: SocketAddr,
    counted: bool,
    fin_counted: bool,
}

fn serve(setup: ServerSetup, socket: UdpSocket, stop: &AtomicBool, log: &Mutex<ServerLog>) {
    let mut tunn = Tunn::new(setup.private.to_x25519(), setup.client_public.to_x25519(), None, None, 0x42, None);
    let mut device = Queues::new(1420);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut device, Instant::now());
    iface.update_ip_addrs(|addrs| {
        for cidr in &setup.addresses {
            addrs.push(*cidr).unwrap();
        }
    });
    let mut sockets = SocketSet::new(Vec::new());
    let mut listeners: Vec<Listener> = setup
        .listeners
        .iter()
        .map(|&endpoint| {
            let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 4096]), tcp::SocketBuffer::new(vec![0; 4096]));
            s.listen(endpoint).unwrap();
            Listener { handle: sockets.add(s), endpoint, counted: false, fin_counted: false }
        })
        .collect();

    let mut datagram = vec![0u8; 65_535];
    let mut out = vec![0u8; 65_535 + 32];
    let mut icmp_out = vec![0u8; 65_535 + 32];
    let mut peer: Option<SocketAddr> = None;
    while !stop.load(Ordering::Relaxed) {
        if let Ok((len, from)) = socket.recv_from(&mut datagram) {
            peer = Some(from);
            if setup.garbage {
                send_garbage(&socket, from);
            }
            match tunn.decapsulate(Some(from.ip()), &datagram[..len], &mut out) {
                TunnResult::WriteToNetwork(packet) => {
                    if packet.first() == Some(&2) {
                        log.lock().unwrap().handshakes += 1;
                    }
                    let _ = socket.send_to(packet, from);
                    while let TunnResult::WriteToNetwork(packet) = tunn.decapsulate(None, &[], &mut out) {
                        let _ = socket.send_to(packet, from);
                    }
                }
                TunnResult::WriteToTunnelV4(packet, _) | TunnResult::WriteToTunnelV6(packet, _) => {
                    match host_unreachable(packet, &setup) {
                        Some(icmp) => {
                            if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(&icmp, &mut icmp_out) {
                                let _ = socket.send_to(d, from);
                            }
                        }
                        None => device.push_inbound(packet.to_vec()),
                    }
                }
                _ => {}
            }
        }
        iface.poll(Instant::now(), &mut device, &mut sockets);
        while let Some(packet) = device.pop_outbound() {
            if let (Some(to), TunnResult::WriteToNetwork(datagram)) = (peer, tunn.encapsulate(&packet, &mut out)) {
                let _ = socket.send_to(datagram, to);
            }
        }
        for l in &mut listeners {
            let s = sockets.get_mut::<tcp::Socket>(l.handle);
            match s.state() {
                tcp::State::Established if !l.counted => {
                    l.counted = true;
                    log.lock().unwrap().accepted.push(l.endpoint);
                }
                tcp::State::CloseWait => {
                    if !l.fin_counted {
                        l.fin_counted = true;
                        log.lock().unwrap().closed_by_fin += 1;
                    }
                    s.close();
                }
                tcp::State::Closed => {
                    s.listen(l.endpoint).unwrap();
                    l.counted = false;
                    l.fin_counted = false;
                }
                _ => {}
            }
        }
    }
}

/// Junk a hostile or broken sender could put on the client's socket: every WireGuard message type
/// with random contents, and sizes from empty to larger than any message.
fn send_garbage(socket: &UdpSocket, to: SocketAddr) {
    use rand_core::{OsRng, RngCore};
    for (kind, len) in [
        (None, 0),
        (None, 1),
        (Some(1u8), 148),
        (Some(2), 92),
        (Some(3), 64),
        (Some(4), 32),
        (Some(4), 120),
        (None, 2000),
    ] {
        let mut junk = vec![0u8; len];
        OsRng.fill_bytes(&mut junk);
        if let Some(kind) = kind {
            junk[..4].copy_from_slice(&[kind, 0, 0, 0]);
        }
        let _ = socket.send_to(&junk, to);
    }
}

/// An ICMP "destination host unreachable" from the server's first address, quoting `packet`, when
/// its destination is configured as unreachable (IPv4 only: all the tests need).
fn host_unreachable(packet: &[u8], setup: &ServerSetup) -> Option<Vec<u8>> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if !setup.unreachable.contains(&IpAddr::V4(ip.dst_addr())) {
        return None;
    }
    let IpAddress::Ipv4(router) = setup.addresses[0].address() else {
        return None;
    };
    let quoted = &ip.payload()[..ip.payload().len().min(8)];
    let icmp = Icmpv4Repr::DstUnreachable {
        reason: Icmpv4DstUnreachable::HostUnreachable,
        header: Ipv4Repr {
            src_addr: ip.src_addr(),
            dst_addr: ip.dst_addr(),
            next_header: ip.next_header(),
            payload_len: quoted.len(),
            hop_limit: ip.hop_limit(),
        },
        data: quoted,
    };
    let ip_repr = Ipv4Repr {
        src_addr: router,
        dst_addr: ip.src_addr(),
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let mut out = vec![0u8; ip_repr.buffer_len() + icmp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut out_ip = Ipv4Packet::new_unchecked(&mut out[..]);
    ip_repr.emit(&mut out_ip, &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(out_ip.payload_mut()), &caps);
    Some(out)
}
