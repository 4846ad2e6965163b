//! The self-test client's IP stack: a smoltcp interface (medium IP, one address, a default route
//! into the tunnel) over in-memory packet queues, with the ping and the TCP probes on it.
//!
//! Owns no socket and reads no clock: the caller passes `now`, hands in the IP packets the tunnel
//! decrypted ([`Stack::deliver`]) and takes out the ones to encrypt ([`Stack::take_outbound`]).
//! It also reads ICMP errors addressed to us, so a probe blocked on the way fails with the router's
//! reason instead of a bare timeout.

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    HardwareAddress, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpCidr, IpProtocol, Ipv4Packet,
    Ipv6Packet,
};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

/// Packets waiting in either direction; more means something is flooding us, and a self-test
/// does not need them.
const QUEUE_LIMIT: usize = 64;
/// How often an unanswered echo request is repeated within the ping step.
const PING_RESEND: Duration = Duration::from_millis(1000);
const PING_PAYLOAD: &[u8] = b"bastion selftest";

/// A smoltcp device whose wire is two queues: what the tunnel decrypted for us, and what we want
/// the tunnel to encrypt.
pub(super) struct Queues {
    inbound: VecDeque<Vec<u8>>,
    outbound: VecDeque<Vec<u8>>,
    mtu: usize,
}

impl Queues {
    pub(super) fn new(mtu: usize) -> Queues {
        Queues { inbound: VecDeque::new(), outbound: VecDeque::new(), mtu }
    }
    /// Queues a packet for the stack; dropped (like a full NIC ring) when the queue is full.
    pub(super) fn push_inbound(&mut self, packet: Vec<u8>) {
        if self.inbound.len() < QUEUE_LIMIT {
            self.inbound.push_back(packet);
        }
    }
    pub(super) fn pop_outbound(&mut self) -> Option<Vec<u8>> {
        self.outbound.pop_front()
    }
}

pub(super) struct RxToken(Vec<u8>);
pub(super) struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}

impl Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        if self.outbound.len() >= QUEUE_LIMIT {
            return None;
        }
        let packet = self.inbound.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.outbound)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if self.outbound.len() >= QUEUE_LIMIT {
            return None;
        }
        Some(TxToken(&mut self.outbound))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// Where the ping stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PingState {
    Waiting,
    /// Round trip of the echo request that was answered.
    Replied(Duration),
    /// An ICMP error came back instead (the text names the reason and the router).
    Unreachable(String),
}

/// Where a probe's TCP connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ProbeState {
    Connecting,
    /// SYN-ACK received; the time from `start_probe` to then.
    Connected(Duration),
    /// The target answered the SYN with a reset.
    Refused,
    Unreachable(String),
}

struct Ping {
    handle: SocketHandle,
    target: IpAddress,
    ident: u16,
    /// Send time of each echo request, by sequence number.
    sent: Vec<Instant>,
    replied: Option<Duration>,
}

struct Probe {
    handle: SocketHandle,
    target: SocketAddr,
    started: Instant,
    connected: Option<Duration>,
}

/// An ICMP error that came back to us, reduced to what it says about the packet we had sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IcmpError {
    /// Destination and protocol of the packet that could not be delivered.
    pub target: IpAddr,
    pub protocol: IpProtocol,
    /// Its destination port, when it was TCP.
    pub port: Option<u16>,
    /// `destination host unreachable (ICMP from 10.100.0.1)`.
    pub reason: String,
}

/// The client's IP stack for one run.
pub(super) struct Stack {
    iface: Interface,
    device: Queues,
    sockets: SocketSet<'static>,
    address: IpAddress,
    ping: Option<Ping>,
    probes: Vec<Probe>,
    icmp_errors: Vec<IcmpError>,
}

/// Identifies a probe started with [`Stack::start_probe`].
#[derive(Debug, Clone, Copy)]
pub(super) struct ProbeId(usize);

impl Stack {
    /// `address` is the client's tunnel address (a /32 or /128); every other destination is routed
    /// into the tunnel. `seed` feeds smoltcp's TCP initial sequence numbers.
    pub(super) fn new(address: IpAddr, mtu: usize, seed: u64, now: Instant) -> Stack {
        let mut device = Queues::new(mtu);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut device, now);
        let address = IpAddress::from(address);
        iface.update_ip_addrs(|addrs| {
            let prefix = match address {
                IpAddress::Ipv4(_) => 32,
                IpAddress::Ipv6(_) => 128,
            };
            // Capacity is two addresses; one cannot fail.
            let _ = addrs.push(IpCidr::new(address, prefix));
        });
        // On a medium-IP device the gateway is never resolved, only required to exist: any
        // address of the family stands for "into the tunnel". Ours is always at hand.
        let _ = match address {
            IpAddress::Ipv4(a) => iface.routes_mut().add_default_ipv4_route(a).map(|_| ()),
            IpAddress::Ipv6(a) => iface.routes_mut().add_default_ipv6_route(a).map(|_| ()),
        };
        Stack {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            address,
            ping: None,
            probes: Vec::new(),
            icmp_errors: Vec::new(),
        }
    }

    /// Hands the stack an IP packet the tunnel decrypted.
    pub(super) fn deliver(&mut self, packet: Vec<u8>) {
        if let Some(error) = parse_icmp_error(&packet, self.address) {
            if self.icmp_errors.len() < QUEUE_LIMIT {
                self.icmp_errors.push(error);
            }
        }
        self.device.push_inbound(packet);
    }

    /// The next IP packet the stack wants sent through the tunnel.
    pub(super) fn take_outbound(&mut self) -> Option<Vec<u8>> {
        self.device.pop_outbound()
    }

    /// Runs the stack at `now`: consumes delivered packets, emits what is due, resends the echo
    /// request when it has gone unanswered for a while.
    pub(super) fn poll(&mut self, now: Instant) {
        self.resend_ping(now);
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.read_ping_replies(now);
        for probe in &mut self.probes {
            if probe.connected.is_none() {
                let socket = self.sockets.get::<tcp::Socket>(probe.handle);
                if is_connected(socket.state()) {
                    probe.connected = Some(now - probe.started);
                }
            }
        }
    }

    /// How long the stack can wait before `poll` has something to do without new packets.
    pub(super) fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        let stack_delay = self.iface.poll_delay(now, &self.sockets);
        let ping_delay = self.ping.as_ref().filter(|p| p.replied.is_none()).map(|p| {
            let last = p.sent.last().copied().unwrap_or(now);
            let due = last + PING_RESEND;
            if due > now {
                due - now
            } else {
                Duration::ZERO
            }
        });
        match (stack_delay, ping_delay) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts pinging `target` (an echo request now, repeated until answered).
    pub(super) fn start_ping(&mut self, target: IpAddr, ident: u16, now: Instant) -> Result<(), String> {
        let target = IpAddress::from(target);
        if !same_family(target, self.address) {
            return Err(format!(
                "the self-test address {} cannot reach {target} (different IP versions)",
                self.address
            ));
        }
        let socket = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        );
        let handle = self.sockets.add(socket);
        self.sockets
            .get_mut::<icmp::Socket>(handle)
            .bind(icmp::Endpoint::Ident(ident))
            .map_err(|e| format!("cannot open the ICMP socket: {e}"))?;
        self.ping = Some(Ping { handle, target, ident, sent: Vec::new(), replied: None });
        self.send_echo(now);
        Ok(())
    }

    pub(super) fn ping_state(&self) -> PingState {
        let Some(ping) = &self.ping else {
            return PingState::Waiting;
        };
        if let Some(rtt) = ping.replied {
            return PingState::Replied(rtt);
        }
        let target = IpAddr::from(ping.target);
        let protocol = match ping.target {
            IpAddress::Ipv4(_) => IpProtocol::Icmp,
            IpAddress::Ipv6(_) => IpProtocol::Icmpv6,
        };
        match self.icmp_errors.iter().find(|e| e.target == target && e.protocol == protocol) {
            Some(error) => PingState::Unreachable(error.reason.clone()),
            None => PingState::Waiting,
        }
    }

    fn send_echo(&mut self, now: Instant) {
        let Some(ping) = &mut self.ping else { return };
        let socket = self.sockets.get_mut::<icmp::Socket>(ping.handle);
        let seq_no = ping.sent.len() as u16;
        let checksum = self.device.capabilities().checksum;
        match ping.target {
            IpAddress::Ipv4(_) => {
                let repr = Icmpv4Repr::EchoRequest { ident: ping.ident, seq_no, data: PING_PAYLOAD };
                let Ok(buf) = socket.send(repr.buffer_len(), ping.target) else {
                    return;
                };
                repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &checksum);
            }
            IpAddress::Ipv6(dst) => {
                let IpAddress::Ipv6(src) = self.address else {
                    return;
                };
                let repr = Icmpv6Repr::EchoRequest { ident: ping.ident, seq_no, data: PING_PAYLOAD };
                let Ok(buf) = socket.send(repr.buffer_len(), ping.target) else {
                    return;
                };
                repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(buf), &checksum);
            }
        }
        ping.sent.push(now);
    }

    fn resend_ping(&mut self, now: Instant) {
        let due = match &self.ping {
            Some(p) if p.replied.is_none() => {
                p.sent.last().is_some_and(|last| now >= *last + PING_RESEND) && p.sent.len() < 1000
            }
            _ => false,
        };
        if due {
            self.send_echo(now);
        }
    }

    fn read_ping_replies(&mut self, now: Instant) {
        let Some(ping) = &mut self.ping else { return };
        let socket = self.sockets.get_mut::<icmp::Socket>(ping.handle);
        let checksum = self.device.capabilities().checksum;
        while let Ok((payload, from)) = socket.recv() {
            if from != ping.target || ping.replied.is_some() {
                continue;
            }
            let seq = match (ping.target, self.address) {
                (IpAddress::Ipv4(_), _) => Icmpv4Packet::new_checked(payload)
                    .ok()
                    .and_then(|p| Icmpv4Repr::parse(&p, &checksum).ok())
                    .and_then(|r| match r {
                        Icmpv4Repr::EchoReply { ident, seq_no, .. } if ident == ping.ident => Some(seq_no),
                        _ => None,
                    }),
                (IpAddress::Ipv6(src), IpAddress::Ipv6(dst)) => Icmpv6Packet::new_checked(payload)
                    .ok()
                    .and_then(|p| Icmpv6Repr::parse(&src, &dst, &p, &checksum).ok())
                    .and_then(|r| match r {
                        Icmpv6Repr::EchoReply { ident, seq_no, .. } if ident == ping.ident => Some(seq_no),
                        _ => None,
                    }),
                _ => None,
            };
            if let Some(sent) = seq.and_then(|s| ping.sent.get(usize::from(s))) {
                ping.replied = Some(now - *sent);
            }
        }
    }

    /// Opens a TCP connection to `target` from `local_port`.
    pub(super) fn start_probe(&mut self, target: SocketAddr, local_port: u16, now: Instant) -> Result<ProbeId, String> {
        if !same_family(IpAddress::from(target.ip()), self.address) {
            return Err(format!("the self-test address {} cannot reach it (different IP versions)", self.address));
        }
        let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 2048]), tcp::SocketBuffer::new(vec![0; 2048]));
        socket
            .connect(self.iface.context(), target, local_port)
            .map_err(|e| format!("cannot start the connection: {e}"))?;
        let handle = self.sockets.add(socket);
        self.probes.push(Probe { handle, target, started: now, connected: None });
        Ok(ProbeId(self.probes.len() - 1))
    }

    pub(super) fn probe_state(&self, id: ProbeId) -> ProbeState {
        let probe = &self.probes[id.0];
        if let Some(rtt) = probe.connected {
            return ProbeState::Connected(rtt);
        }
        let socket = self.sockets.get::<tcp::Socket>(probe.handle);
        if socket.state() == tcp::State::Closed {
            return ProbeState::Refused;
        }
        let hit = self.icmp_errors.iter().find(|e| {
            e.target == probe.target.ip() && e.protocol == IpProtocol::Tcp && e.port == Some(probe.target.port())
        });
        match hit {
            Some(error) => ProbeState::Unreachable(error.reason.clone()),
            None => ProbeState::Connecting,
        }
    }

    /// Starts an orderly close (FIN), so the application behind the probe sees an ordinary
    /// disconnect rather than a reset in its log.
    pub(super) fn close_probe(&mut self, id: ProbeId) {
        self.sockets.get_mut::<tcp::Socket>(self.probes[id.0].handle).close();
    }

    /// True once both sides have closed (or the connection never existed).
    pub(super) fn probe_closed(&self, id: ProbeId) -> bool {
        matches!(
            self.sockets.get::<tcp::Socket>(self.probes[id.0].handle).state(),
            tcp::State::Closed | tcp::State::TimeWait
        )
    }

    /// Resets whatever is left of the connection (sent at the next `poll`).
    pub(super) fn abort_probe(&mut self, id: ProbeId) {
        self.sockets.get_mut::<tcp::Socket>(self.probes[id.0].handle).abort();
    }
}

fn same_family(a: IpAddress, b: IpAddress) -> bool {
    matches!((a, b), (IpAddress::Ipv4(_), IpAddress::Ipv4(_)) | (IpAddress::Ipv6(_), IpAddress::Ipv6(_)))
}

/// States in which our SYN has been answered by a SYN-ACK.
fn is_connected(state: tcp::State) -> bool {
    use tcp::State::*;
    matches!(state, Established | FinWait1 | FinWait2 | CloseWait | Closing | LastAck | TimeWait)
}

/// Reads an ICMP error addressed to `us` out of a decrypted IP packet; anything else (or
/// anything malformed) is `None`.
pub(super) fn parse_icmp_error(packet: &[u8], us: IpAddress) -> Option<IcmpError> {
    let checksum = smoltcp::phy::ChecksumCapabilities::default();
    match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            if IpAddress::Ipv4(ip.dst_addr()) != us || ip.next_header() != IpProtocol::Icmp {
                return None;
            }
            let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
            let (what, header, data) = match Icmpv4Repr::parse(&icmp, &checksum).ok()? {
                Icmpv4Repr::DstUnreachable { reason, header, data } => (reason.to_string(), header, data),
                Icmpv4Repr::TimeExceeded { header, data, .. } => ("time exceeded".into(), header, data),
                _ => return None,
            };
            Some(IcmpError {
                target: IpAddr::V4(header.dst_addr),
                protocol: header.next_header,
                port: tcp_dst_port(header.next_header, data),
                reason: format!("{what} (ICMP from {})", ip.src_addr()),
            })
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            if IpAddress::Ipv6(ip.dst_addr()) != us || ip.next_header() != IpProtocol::Icmpv6 {
                return None;
            }
            let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
            let repr = Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &icmp, &checksum).ok()?;
            let (what, header, data) = match repr {
                Icmpv6Repr::DstUnreachable { reason, header, data } => (reason.to_string(), header, data),
                Icmpv6Repr::TimeExceeded { header, data, .. } => ("time exceeded".into(), header, data),
                Icmpv6Repr::PktTooBig { mtu, header, data } => (format!("packet too big (MTU {mtu})"), header, data),
                _ => return None,
            };
            Some(IcmpError {
                target: IpAddr::V6(header.dst_addr),
                protocol: header.next_header,
                port: tcp_dst_port(header.next_header, data),
                reason: format!("{what} (ICMP from {})", ip.src_addr()),
            })
        }
        _ => None,
    }
}

/// The destination port of the quoted TCP header (its first 8 bytes are always quoted).
fn tcp_dst_port(protocol: IpProtocol, quoted: &[u8]) -> Option<u16> {
    if protocol != IpProtocol::Tcp || quoted.len() < 4 {
        return None;
    }
    // Read by hand: a TCP packet view wants the whole header, and the quote may hold only 8 bytes.
    Some(u16::from_be_bytes([quoted[2], quoted[3]]))
}
