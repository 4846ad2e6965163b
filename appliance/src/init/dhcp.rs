//! DHCPv4 on the primary interface for the life of the instance: smoltcp's DHCP client over
//! our packet socket, each lease applied to the kernel over rtnetlink (MTU, address, default
//! route) and logged.
//!
//! Two details of sharing the interface with the kernel:
//! - once the kernel holds the leased address, a unicast renewal answer to UDP port 68 also
//!   reaches the kernel's UDP layer, which would answer "port unreachable" to the server; a UDP
//!   socket bound to port 68 (drained and discarded here) keeps it quiet;
//! - a VPC address never changes for the life of the interface, so when a renewal goes
//!   unanswered until the lease runs out, the address, route and MTU stay as they are (tearing
//!   them down would cut every tunnel) and the client simply asks again.
//!
//! `lease_from_packet` and `plan` are pure (lease in, netlink steps out); `run` is the I/O loop.

use super::packet_socket::PacketSocket;
use crate::netlink::route;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet};
use smoltcp::socket::dhcpv4;
use smoltcp::wire::{DhcpOption, EthernetAddress, HardwareAddress, IpCidr, Ipv4Cidr};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// One lease as the server gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    /// Option 26 (interface MTU), 9001 inside a VPC.
    pub mtu: Option<u16>,
    /// Option 51, in seconds.
    pub lease_seconds: Option<u32>,
    pub server: Ipv4Addr,
    /// Option 6, in the server's order (in a VPC: its resolver at the VPC's base + 2).
    pub dns_servers: Vec<Ipv4Addr>,
}

impl std::fmt::Display for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)?;
        match self.router {
            Some(r) => write!(f, " router {r}")?,
            None => write!(f, " no router")?,
        }
        match self.mtu {
            Some(m) => write!(f, " mtu {m}")?,
            None => write!(f, " mtu unchanged")?,
        }
        match self.lease_seconds {
            Some(s) => write!(f, " lease {s} s")?,
            None => write!(f, " lease time not given")?,
        }
        write!(f, " from {}", self.server)?;
        if !self.dns_servers.is_empty() {
            let servers: Vec<String> = self.dns_servers.iter().map(|s| s.to_string()).collect();
            write!(f, " dns {}", servers.join(" "))?;
        }
        Ok(())
    }
}

/// Builds a lease from what smoltcp parsed and the options it leaves to us (26, 51 and 6).
pub fn lease_from_packet<'a>(
    address: Ipv4Cidr,
    router: Option<Ipv4Addr>,
    server: Ipv4Addr,
    options: impl Iterator<Item = DhcpOption<'a>>,
) -> Lease {
    let mut lease = Lease {
        address: address.address(),
        prefix_len: address.prefix_len(),
        router,
        mtu: None,
        lease_seconds: None,
        server,
        dns_servers: Vec::new(),
    };
    for option in options {
        match (option.kind, option.data) {
            (26, [hi, lo]) => lease.mtu = Some(u16::from_be_bytes([*hi, *lo])),
            (51, [a, b, c, d]) => lease.lease_seconds = Some(u32::from_be_bytes([*a, *b, *c, *d])),
            (6, data) if !data.is_empty() && data.len() % 4 == 0 => {
                lease.dns_servers = data.chunks(4).map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3])).collect()
            }
            _ => {}
        }
    }
    lease
}

/// One change to make in the kernel for a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    SetMtu(u32),
    AddAddress { address: Ipv4Addr, prefix_len: u8 },
    DefaultRoute(Ipv4Addr),
}

/// How long DISCOVER is repeated every second before slowing down.
const FAST_DISCOVERY: Duration = Duration::from_secs(10);

/// The smallest MTU we apply: RFC 2132 allows 68, but below 576 an IPv4 host cannot even receive
/// a full DHCP message; such a value is a server misconfiguration, not a VPC.
const MIN_MTU: u16 = 576;

/// What to do for `lease`, in order (MTU before the address so the first packets already use
/// it), and notes for the log about what was left out.
pub fn plan(lease: &Lease) -> (Vec<Step>, Vec<String>) {
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    match lease.mtu {
        Some(mtu) if mtu >= MIN_MTU => steps.push(Step::SetMtu(mtu as u32)),
        Some(mtu) => notes.push(format!("mtu {mtu} from the server ignored (below {MIN_MTU})")),
        None => {}
    }
    steps.push(Step::AddAddress { address: lease.address, prefix_len: lease.prefix_len });
    match lease.router {
        Some(router) if router == lease.address => {
            notes.push(format!("router {router} is our own address; no default route"))
        }
        Some(router) => steps.push(Step::DefaultRoute(router)),
        None => notes.push("no router given; no default route".into()),
    }
    (steps, notes)
}

fn apply(ifindex: u32, ifname: &str, steps: &[Step]) -> Vec<String> {
    let mut errors = Vec::new();
    for step in steps {
        let result = match step {
            Step::SetMtu(mtu) => route::set_mtu(ifindex, *mtu).map_err(|e| format!("set mtu {mtu} on {ifname}: {e}")),
            Step::AddAddress { address, prefix_len } => route::add_address(ifindex, (*address).into(), *prefix_len)
                .map_err(|e| format!("add address {address}/{prefix_len} to {ifname}: {e}")),
            Step::DefaultRoute(gw) => route::replace_default_route(*gw, ifindex)
                .map_err(|e| format!("default route via {gw} on {ifname}: {e}")),
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
    errors
}

/// Runs the DHCP client on interface (`ifindex`, `ifname`, `mac`) forever. `report` is called
/// after each lease (first, renewed or changed) with whether the kernel took all of it.
pub fn run(ifindex: u32, ifname: &str, mac: [u8; 6], mut report: impl FnMut(&Lease, bool)) -> ! {
    let mut device = loop {
        match PacketSocket::open(ifindex) {
            Ok(d) => break d,
            Err(e) => {
                crate::log!("dhcp: ERROR {ifname}: {e}; trying again in 5 s");
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    };
    let port68 = bind_port_68(ifname);

    let started = std::time::Instant::now();
    let clock = || smoltcp::time::Instant::from_micros(started.elapsed().as_micros() as i64);
    let mut config = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = insecure_seed(&mac);
    let mut iface = Interface::new(config, &mut device, clock());

    let mut packet_copy = vec![0u8; 9000];
    let mut dhcp_socket = dhcpv4::Socket::new();
    // 1 netmask, 3 router, 26 interface MTU, 51 lease time, 58/59 renewal and rebinding times.
    dhcp_socket.set_parameter_request_list(&[1, 3, 26, 51, 58, 59]);
    dhcp_socket.set_receive_packet_buffer(&mut packet_copy);
    // Right after the link comes up the first answers are often lost (the far end's queue is
    // not active yet, as on a fresh veth or NIC link): repeat DISCOVER every second at first,
    // then every few seconds, as RFC 2131 paces it.
    let mut retry = dhcp_socket.get_retry_config();
    retry.discover_timeout = smoltcp::time::Duration::from_secs(1);
    dhcp_socket.set_retry_config(retry);
    let mut fast_discovery = true;
    let mut sockets = SocketSet::new(Vec::new());
    let handle = sockets.add(dhcp_socket);

    crate::log!("dhcp: {ifname}: asking for a lease");
    let mut current: Option<Lease> = None;
    let mut last_error_log: Option<std::time::Instant> = None;
    loop {
        let now = clock();
        iface.poll(now, &mut device, &mut sockets);
        let event = sockets.get_mut::<dhcpv4::Socket>(handle).poll().map(|event| match event {
            dhcpv4::Event::Configured(cfg) => Some(lease_from_packet(
                cfg.address,
                cfg.router,
                cfg.server.address,
                cfg.packet.as_ref().into_iter().flat_map(|p| p.options()),
            )),
            dhcpv4::Event::Deconfigured => None,
        });
        match event {
            None => {}
            Some(Some(lease)) => {
                let what = match &current {
                    None => "lease".to_string(),
                    Some(old) if old.address == lease.address => "lease renewed".to_string(),
                    Some(old) => {
                        format!("lease CHANGED from {}/{}; old address kept as well", old.address, old.prefix_len)
                    }
                };
                crate::log!("dhcp: {ifname} {what}: {lease}");
                let (steps, notes) = plan(&lease);
                for n in notes {
                    crate::log!("dhcp: {ifname}: {n}");
                }
                let errors = apply(ifindex, ifname, &steps);
                for e in &errors {
                    crate::log!("dhcp: ERROR {e}");
                }
                // smoltcp needs the address to send unicast renewals, and the route when the
                // server sits behind a relay.
                iface.update_ip_addrs(|addrs| {
                    addrs.clear();
                    let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(lease.address, lease.prefix_len)));
                });
                match lease.router {
                    Some(r) => {
                        let _ = iface.routes_mut().add_default_ipv4_route(r);
                    }
                    None => {
                        iface.routes_mut().remove_default_ipv4_route();
                    }
                }
                report(&lease, errors.is_empty());
                current = Some(lease);
            }
            Some(None) => {
                if let Some(old) = &current {
                    crate::log!(
                        "dhcp: {ifname}: lease of {}/{} ran out without an answer to renewals; keeping the address, route and mtu (VPC addresses do not change) and asking again",
                        old.address,
                        old.prefix_len
                    );
                }
                // Discovery starts from 0.0.0.0; the kernel keeps its address.
                iface.update_ip_addrs(|addrs| addrs.clear());
            }
        }
        if fast_discovery && (current.is_some() || started.elapsed() >= FAST_DISCOVERY) {
            fast_discovery = false;
            let socket = sockets.get_mut::<dhcpv4::Socket>(handle);
            let mut retry = socket.get_retry_config();
            retry.discover_timeout = smoltcp::time::Duration::from_secs(4);
            socket.set_retry_config(retry);
        }
        if let Some(e) = device.take_error() {
            if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                crate::log!("dhcp: {ifname}: {e}");
                last_error_log = Some(std::time::Instant::now());
            }
        }
        let delay = iface
            .poll_delay(clock(), &sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        wait_readable(&device, port68.as_ref(), delay);
        if let Some(s) = &port68 {
            drain(s);
        }
    }
}

/// smoltcp's seed (DHCP transaction ids) needs no secrecy, and must not wait: early in boot the
/// kernel's CRNG may not be ready yet, and a blocking getrandom stalled DHCP for a second under
/// QEMU. GRND_INSECURE never blocks; the MAC and the clock make it differ between instances.
fn insecure_seed(mac: &[u8; 6]) -> u64 {
    const GRND_INSECURE: libc::c_uint = 0x0004;
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into the buffer.
    let _ = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), GRND_INSECURE) };
    let mut mac_bytes = [0u8; 8];
    mac_bytes[..6].copy_from_slice(mac);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    u64::from_ne_bytes(bytes) ^ u64::from_ne_bytes(mac_bytes) ^ nanos
}

/// The kernel-side socket on port 68 (see the module comment).
fn bind_port_68(ifname: &str) -> Option<socket2::Socket> {
    let bind = || -> std::io::Result<socket2::Socket> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        s.bind(&std::net::SocketAddr::from(([0, 0, 0, 0], 68)).into())?;
        Ok(s)
    };
    match bind() {
        Ok(s) => Some(s),
        Err(e) => {
            crate::log!(
                "dhcp: {ifname}: cannot bind UDP port 68 ({e}); the kernel may answer renewals with port-unreachable"
            );
            None
        }
    }
}

fn drain(socket: &socket2::Socket) {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    // Bounded: at most a burst's worth per wake-up.
    for _ in 0..64 {
        if socket.recv(&mut buf).is_err() {
            break;
        }
    }
}

fn wait_readable(device: &PacketSocket, port68: Option<&socket2::Socket>, delay: Duration) {
    let mut fds = vec![libc::pollfd { fd: device.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    if let Some(s) = port68 {
        fds.push(libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 });
    }
    let ms = delay.as_millis().min(60_000) as libc::c_int;
    // SAFETY: polling a live array of pollfd of the length we pass.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(kind: u8, data: &[u8]) -> DhcpOption<'_> {
        DhcpOption { kind, data }
    }

    #[test]
    fn lease_takes_mtu_and_lease_time_from_options() {
        let options = [
            opt(1, &[255, 255, 255, 0]),
            opt(26, &[0x23, 0x29]),
            opt(51, &[0, 0, 0x0e, 0x10]),
            opt(26, &[1]),
            opt(6, &[10, 0, 0, 2, 1, 1, 1, 1]),
            opt(6, &[1, 2, 3]),
        ];
        let lease = lease_from_packet(
            Ipv4Cidr::new(Ipv4Addr::new(10, 0, 1, 23), 24),
            Some(Ipv4Addr::new(10, 0, 1, 1)),
            Ipv4Addr::new(10, 0, 1, 1),
            options.into_iter(),
        );
        assert_eq!(lease.mtu, Some(9001), "the malformed second option 26 is ignored");
        assert_eq!(lease.lease_seconds, Some(3600));
        assert_eq!(
            lease.dns_servers,
            [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(1, 1, 1, 1)],
            "the malformed second 6 too"
        );
        assert_eq!(
            lease.to_string(),
            "10.0.1.23/24 router 10.0.1.1 mtu 9001 lease 3600 s from 10.0.1.1 dns 10.0.0.2 1.1.1.1"
        );
    }

    #[test]
    fn plan_orders_mtu_address_route() {
        let lease = Lease {
            address: Ipv4Addr::new(10, 0, 1, 23),
            prefix_len: 24,
            router: Some(Ipv4Addr::new(10, 0, 1, 1)),
            mtu: Some(9001),
            lease_seconds: Some(3600),
            server: Ipv4Addr::new(10, 0, 1, 1),
            dns_servers: Vec::new(),
        };
        let (steps, notes) = plan(&lease);
        assert_eq!(
            steps,
            vec![
                Step::SetMtu(9001),
                Step::AddAddress { address: Ipv4Addr::new(10, 0, 1, 23), prefix_len: 24 },
                Step::DefaultRoute(Ipv4Addr::new(10, 0, 1, 1)),
            ]
        );
        assert!(notes.is_empty());
    }

    #[test]
    fn plan_leaves_out_what_the_lease_lacks_or_gets_wrong() {
        let lease = Lease {
            address: Ipv4Addr::new(192, 168, 7, 9),
            prefix_len: 16,
            router: None,
            mtu: Some(100),
            lease_seconds: None,
            server: Ipv4Addr::new(192, 168, 0, 1),
            dns_servers: Vec::new(),
        };
        let (steps, notes) = plan(&lease);
        assert_eq!(steps, vec![Step::AddAddress { address: Ipv4Addr::new(192, 168, 7, 9), prefix_len: 16 }]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("mtu 100"));
        assert!(lease.to_string().contains("no router"));
    }
}
