//! rtnetlink: links (index, state, MTU), addresses and routes of the current network namespace.
//!
//! Used by the data plane for its TUN (MTU, address, up) and by the init for the DHCP lease
//! (address, default route, MTU). Every call opens its own NETLINK_ROUTE socket, so it acts on
//! the network namespace of the calling thread. Answers are parsed through checked views: only
//! the attributes we need are read, unknown ones are skipped, malformed ones are errors.

use super::message::{
    self, fixed_header, MessageBuilder, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use super::socket::{context, errno, Owned, Socket};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// linux/rtnetlink.h message types
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;

// linux/if_link.h
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_TXQLEN: u16 = 13;
// linux/if_addr.h
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
// linux/rtnetlink.h route attributes and values
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
// linux/if.h
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTMSG_LEN: usize = 12;
const RTNEXTHOP_LEN: usize = 8;
const IFNAMSIZ: usize = 16;

/// What the kernel says about one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFF_UP is set (administratively up).
    pub up: bool,
    pub mtu: u32,
    /// The hardware address (empty for TUN and loopback).
    pub mac: Vec<u8>,
    /// IFF_LOOPBACK is set.
    pub loopback: bool,
}

/// One address of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// The main table's IPv4 default route (the one with the lowest metric when there are several).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRoute {
    /// None for a route straight onto a link (no next hop).
    pub gateway: Option<Ipv4Addr>,
    pub index: u32,
    pub metric: u32,
}

/// Every link of the namespace.
pub fn links() -> io::Result<Vec<Link>> {
    let doing = "list network interfaces";
    let mut socket = Socket::open(libc::NETLINK_ROUTE).map_err(|e| context(e, doing))?;
    let answers = socket
        .dump(|seq| {
            let mut m = MessageBuilder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq);
            m.fixed(&ifinfomsg(libc::AF_UNSPEC as u8, 0, 0, 0));
            m.finish()
        })
        .map_err(|e| context(e, doing))?;
    answers
        .iter()
        .filter(|a| a.kind == RTM_NEWLINK)
        .map(|a| parse_link(&a.payload).map_err(|e| context(e, doing)))
        .collect()
}

/// The link called `name`, or None when there is none.
pub fn link_by_name(name: &str) -> io::Result<Option<Link>> {
    let doing = format!("look up network interface {name:?}");
    check_name(name).map_err(|e| context(e, &doing))?;
    let mut socket = Socket::open(libc::NETLINK_ROUTE).map_err(|e| context(e, &doing))?;
    let answers = socket.request(|seq| {
        let mut m = MessageBuilder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        m.fixed(&ifinfomsg(libc::AF_UNSPEC as u8, 0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        m.finish()
    });
    match answers {
        Ok(answers) => one_link(&answers).map_err(|e| context(e, &doing)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(context(e, &doing)),
    }
}

/// The link with index `index`, or None when there is none.
pub fn link_by_index(index: u32) -> io::Result<Option<Link>> {
    let doing = format!("look up network interface {index}");
    let ifindex = to_ifindex(index).map_err(|e| context(e, &doing))?;
    let mut socket = Socket::open(libc::NETLINK_ROUTE).map_err(|e| context(e, &doing))?;
    let answers = socket.request(|seq| {
        let mut m = MessageBuilder::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        m.fixed(&ifinfomsg(libc::AF_UNSPEC as u8, ifindex, 0, 0));
        m.finish()
    });
    match answers {
        Ok(answers) => one_link(&answers).map_err(|e| context(e, &doing)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(context(e, &doing)),
    }
}

/// Sets the link administratively up or down.
pub fn set_link_up(index: u32, up: bool) -> io::Result<()> {
    let doing = || format!("set {} {}", describe(index), if up { "up" } else { "down" });
    let ifindex = to_ifindex(index).map_err(|e| context(e, doing()))?;
    acknowledged(doing, |seq| {
        let mut m = MessageBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        m.fixed(&ifinfomsg(libc::AF_UNSPEC as u8, ifindex, if up { IFF_UP } else { 0 }, IFF_UP));
        m.finish()
    })
}

pub fn set_mtu(index: u32, mtu: u32) -> io::Result<()> {
    let doing = || format!("set mtu of {} to {mtu}", describe(index));
    let ifindex = to_ifindex(index).map_err(|e| context(e, doing()))?;
    acknowledged(doing, |seq| {
        let mut m = MessageBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        m.fixed(&ifinfomsg(libc::AF_UNSPEC as u8, ifindex, 0, 0));
        m.attr_u32(IFLA_MTU, mtu);
        m.finish()
    })
}

/// Sets how many packets the kernel queues in front of the link (`txqueuelen`).
pub fn set_tx_queue_length(index: u32, packets: u32) -> io::Result<()> {
    let doing = || format!("set txqueuelen of {} to {packets}", describe(index));
    let ifindex = to_ifindex(index).map_err(|e| context(e, doing()))?;
    acknowledged(doing, |seq| {
        let mut m = MessageBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
        m.fixed(&ifinfomsg(libc::AF_UNSPEC as u8, ifindex, 0, 0));
        m.attr_u32(IFLA_TXQLEN, packets);
        m.finish()
    })
}

/// Adds an address to a link; an address that is already there is not an error.
///
/// IPv6 addresses skip duplicate address detection: they are usable at once, which is what a
/// tunnel address needs (there is nobody on a TUN to collide with).
pub fn add_address(index: u32, address: IpAddr, prefix_len: u8) -> io::Result<()> {
    let doing = || format!("add address {address}/{prefix_len} to {}", describe(index));
    match change_address(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, index, address, prefix_len, doing) {
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Removes an address from a link; an address that is not there is not an error.
pub fn remove_address(index: u32, address: IpAddr, prefix_len: u8) -> io::Result<()> {
    let doing = || format!("remove address {address}/{prefix_len} from {}", describe(index));
    match change_address(RTM_DELADDR, 0, index, address, prefix_len, doing) {
        Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => Ok(()),
        other => other,
    }
}

fn change_address(
    kind: u16,
    flags: u16,
    index: u32,
    address: IpAddr,
    prefix_len: u8,
    doing: impl Fn() -> String,
) -> io::Result<()> {
    let ifindex = to_ifindex(index).map_err(|e| context(e, doing()))?;
    let (family, bytes, max) = match address {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec(), 32),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec(), 128),
    };
    if prefix_len > max {
        return Err(context(
            io::Error::new(io::ErrorKind::InvalidInput, format!("prefix length must be at most {max}")),
            doing(),
        ));
    }
    acknowledged(&doing, |seq| {
        let mut m = MessageBuilder::new(kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq);
        let mut header = [0u8; IFADDRMSG_LEN];
        header[0] = family;
        header[1] = prefix_len;
        header[3] = RT_SCOPE_UNIVERSE;
        header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        m.fixed(&header);
        m.attr(IFA_LOCAL, &bytes);
        m.attr(IFA_ADDRESS, &bytes);
        if address.is_ipv6() && kind == RTM_NEWADDR {
            m.attr_u32(IFA_FLAGS, IFA_F_NODAD);
        }
        m.finish()
    })
}

/// The link that holds `address`, if any.
pub fn link_with_address(address: IpAddr) -> io::Result<Option<Link>> {
    for link in links()? {
        if addresses(link.index)?.iter().any(|a| a.address == address) {
            return Ok(Some(link));
        }
    }
    Ok(None)
}

/// The addresses of link `index`, IPv4 and IPv6.
pub fn addresses(index: u32) -> io::Result<Vec<Address>> {
    let doing = || format!("list addresses of {}", describe(index));
    let mut socket = Socket::open(libc::NETLINK_ROUTE).map_err(|e| context(e, doing()))?;
    let answers = socket
        .dump(|seq| {
            let mut m = MessageBuilder::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq);
            m.fixed(&[libc::AF_UNSPEC as u8, 0, 0, 0, 0, 0, 0, 0]);
            m.finish()
        })
        .map_err(|e| context(e, doing()))?;
    let mut result = Vec::new();
    for answer in answers.iter().filter(|a| a.kind == RTM_NEWADDR) {
        let (on, address) = parse_address(&answer.payload).map_err(|e| context(e, doing()))?;
        if on == index {
            result.extend(address);
        }
    }
    Ok(result)
}

/// Installs (or replaces) the IPv4 default route through `gateway` on link `index`.
pub fn replace_default_route(gateway: Ipv4Addr, index: u32) -> io::Result<()> {
    let doing = || format!("set default route via {gateway} on {}", describe(index));
    let ifindex = to_ifindex(index).map_err(|e| context(e, doing()))?;
    acknowledged(doing, |seq| {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut m = MessageBuilder::new(RTM_NEWROUTE, flags, seq);
        m.fixed(&rtmsg(libc::AF_INET as u8, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST));
        m.attr(RTA_GATEWAY, &gateway.octets());
        m.attr_u32(RTA_OIF, ifindex as u32);
        m.attr_u32(RTA_TABLE, RT_TABLE_MAIN as u32);
        m.finish()
    })
}

/// The main table's IPv4 default route, if any.
pub fn default_route() -> io::Result<Option<DefaultRoute>> {
    let doing = "read the IPv4 default route";
    let mut socket = Socket::open(libc::NETLINK_ROUTE).map_err(|e| context(e, doing))?;
    let answers = socket
        .dump(|seq| {
            let mut m = MessageBuilder::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq);
            m.fixed(&rtmsg(libc::AF_INET as u8, 0, 0, 0, 0, 0));
            m.finish()
        })
        .map_err(|e| context(e, doing))?;
    let mut best: Option<DefaultRoute> = None;
    for answer in answers.iter().filter(|a| a.kind == RTM_NEWROUTE) {
        if let Some(route) = parse_default_route(&answer.payload).map_err(|e| context(e, doing))? {
            if best.is_none_or(|b| route.metric < b.metric) {
                best = Some(route);
            }
        }
    }
    Ok(best)
}

/// The name of the interface that the main table's IPv4 default route leaves through, if any.
pub fn default_route_interface() -> io::Result<Option<String>> {
    match default_route()? {
        Some(route) => Ok(link_by_index(route.index)?.map(|link| link.name)),
        None => Ok(None),
    }
}

/// One change acknowledged by the kernel. `doing` describes it for an error, and is only
/// called then (it looks the link's name up).
fn acknowledged(doing: impl Fn() -> String, build: impl FnOnce(u32) -> io::Result<Vec<u8>>) -> io::Result<()> {
    let mut socket = Socket::open(libc::NETLINK_ROUTE).map_err(|e| context(e, doing()))?;
    socket.request(build).map(|_| ()).map_err(|e| context(e, doing()))
}

/// "link 7 (wg0)" for error messages; only the index when the name cannot be had.
fn describe(index: u32) -> String {
    match link_by_index(index) {
        Ok(Some(link)) => format!("link {index} ({})", link.name),
        _ => format!("link {index}"),
    }
}

/// The kernel's rule for interface names (`dev_valid_name`): 1 to 15 bytes, not `.` or `..`,
/// no `/`, `:`, whitespace or control characters. The one place this rule lives: the config,
/// the TUN, the NAT table and rtnetlink all ask here. Err says what was expected.
pub fn check_interface_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("expected a Linux interface name like wg0");
    }
    if name.len() >= IFNAMSIZ {
        return Err("expected at most 15 bytes (Linux IFNAMSIZ)");
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        return Err("expected a Linux interface name without '/', ':' or whitespace");
    }
    Ok(())
}

fn check_name(name: &str) -> io::Result<()> {
    check_interface_name(name)
        .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, format!("interface name {name:?}: {why}")))
}

fn to_ifindex(index: u32) -> io::Result<i32> {
    match i32::try_from(index) {
        Ok(i) if i > 0 => Ok(i),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{index} is not an interface index"))),
    }
}

fn ifinfomsg(family: u8, index: i32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut h = [0u8; IFINFOMSG_LEN];
    h[0] = family;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

fn rtmsg(family: u8, dst_len: u8, table: u8, protocol: u8, scope: u8, kind: u8) -> [u8; RTMSG_LEN] {
    [family, dst_len, 0, 0, table, protocol, scope, kind, 0, 0, 0, 0]
}

fn one_link(answers: &[Owned]) -> io::Result<Option<Link>> {
    match answers.iter().find(|a| a.kind == RTM_NEWLINK) {
        Some(answer) => parse_link(&answer.payload).map(Some),
        None => Err(io::Error::new(io::ErrorKind::InvalidData, "the kernel acknowledged without an answer")),
    }
}

pub(crate) fn parse_link(payload: &[u8]) -> io::Result<Link> {
    let (header, attrs) = fixed_header(payload, IFINFOMSG_LEN, "link message")?;
    let index = i32::from_ne_bytes([header[4], header[5], header[6], header[7]]);
    let flags = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]);
    let index = u32::try_from(index)
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("link message: index {index}")))?;
    let (mut name, mut mtu, mut mac) = (None, 0, Vec::new());
    for attr in message::attributes(attrs) {
        let attr = attr?;
        match attr.kind {
            IFLA_IFNAME => name = Some(attr.string()?.to_string()),
            IFLA_MTU => mtu = attr.u32()?,
            IFLA_ADDRESS => mac = attr.payload.to_vec(),
            _ => {}
        }
    }
    let name = name.ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("link message for index {index}: no name"))
    })?;
    if mac.iter().all(|b| *b == 0) {
        mac.clear();
    }
    Ok(Link { index, name, up: flags & IFF_UP != 0, mtu, mac, loopback: flags & IFF_LOOPBACK != 0 })
}

/// The link index an address message is about, and the address (None for other families).
pub(crate) fn parse_address(payload: &[u8]) -> io::Result<(u32, Option<Address>)> {
    let (header, attrs) = fixed_header(payload, IFADDRMSG_LEN, "address message")?;
    let (family, prefix_len) = (header[0], header[1]);
    let index = u32::from_ne_bytes([header[4], header[5], header[6], header[7]]);
    let (mut local, mut address) = (None, None);
    for attr in message::attributes(attrs) {
        let attr = attr?;
        match attr.kind {
            IFA_LOCAL => local = Some(attr.payload),
            IFA_ADDRESS => address = Some(attr.payload),
            _ => {}
        }
    }
    // For point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours when present.
    let Some(bytes) = local.or(address) else {
        return Ok((index, None));
    };
    let address = match family as i32 {
        libc::AF_INET => {
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).map_err(|_| bad_length("IPv4 address", bytes.len()))?))
        }
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).map_err(|_| bad_length("IPv6 address", bytes.len()))?,
        )),
        _ => return Ok((index, None)),
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("address message: prefix length {prefix_len} for {address}"),
        ));
    }
    Ok((index, Some(Address { address, prefix_len })))
}

/// The route if `payload` is an IPv4 unicast default route of the main table.
pub(crate) fn parse_default_route(payload: &[u8]) -> io::Result<Option<DefaultRoute>> {
    let (header, attrs) = fixed_header(payload, RTMSG_LEN, "route message")?;
    let (family, dst_len, mut table, kind) = (header[0], header[1], header[4] as u32, header[7]);
    if family as i32 != libc::AF_INET || dst_len != 0 || kind != RTN_UNICAST {
        return Ok(None);
    }
    let (mut gateway, mut oif, mut metric, mut first_hop) = (None, None, 0, None);
    for attr in message::attributes(attrs) {
        let attr = attr?;
        match attr.kind {
            RTA_TABLE => table = attr.u32()?,
            RTA_OIF => oif = Some(attr.u32()?),
            RTA_PRIORITY => metric = attr.u32()?,
            RTA_GATEWAY => {
                let octets =
                    <[u8; 4]>::try_from(attr.payload).map_err(|_| bad_length("gateway", attr.payload.len()))?;
                gateway = Some(Ipv4Addr::from(octets));
            }
            RTA_MULTIPATH => first_hop = first_next_hop(attr.payload)?,
            RTA_DST => {
                // A default route has no destination; one with a /0 destination is the same.
            }
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN as u32 {
        return Ok(None);
    }
    let (gateway, index) = match (oif, first_hop) {
        (Some(index), _) => (gateway, index),
        (None, Some((hop_gateway, index))) => (gateway.or(hop_gateway), index),
        (None, None) => return Ok(None),
    };
    if index == 0 {
        return Ok(None);
    }
    Ok(Some(DefaultRoute { gateway, index, metric }))
}

/// The gateway and interface of the first next hop of a multipath route.
fn first_next_hop(bytes: &[u8]) -> io::Result<Option<(Option<Ipv4Addr>, u32)>> {
    if bytes.len() < RTNEXTHOP_LEN {
        return Ok(None);
    }
    let len = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
    if len < RTNEXTHOP_LEN || len > bytes.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("route next hop: length {len}")));
    }
    let index = u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let mut gateway = None;
    for attr in message::attributes(&bytes[RTNEXTHOP_LEN..len]) {
        let attr = attr?;
        if attr.kind == RTA_GATEWAY {
            if let Ok(octets) = <[u8; 4]>::try_from(attr.payload) {
                gateway = Some(Ipv4Addr::from(octets));
            }
        }
    }
    Ok(Some((gateway, index)))
}

fn bad_length(what: &str, len: usize) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {len} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bastion_tests::scratch::{drop_capabilities, run, ScratchNetns};

    fn link_message(index: i32, flags: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = MessageBuilder::new(RTM_NEWLINK, 0, 0);
        m.fixed(&ifinfomsg(0, index, flags, 0));
        for (kind, payload) in attrs {
            m.attr(*kind, payload);
        }
        m.finish().unwrap()[message::HEADER_LEN..].to_vec()
    }

    #[test]
    fn parses_a_link_and_rejects_garbage() {
        let payload = link_message(
            3,
            IFF_UP,
            &[
                (IFLA_IFNAME, b"eth0\0"),
                (IFLA_MTU, &9001u32.to_ne_bytes()),
                (IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]),
                (99, &[1]),
            ],
        );
        let link = parse_link(&payload).unwrap();
        assert_eq!(
            link,
            Link { index: 3, name: "eth0".into(), up: true, mtu: 9001, mac: vec![2, 0, 0, 0, 0, 1], loopback: false }
        );
        // Loopback's all-zero address reads as none.
        let lo =
            parse_link(&link_message(1, IFF_UP | IFF_LOOPBACK, &[(IFLA_IFNAME, b"lo\0"), (IFLA_ADDRESS, &[0; 6])]));
        assert!(lo.unwrap().mac.is_empty());
        // No name, bad index, short MTU, truncated anywhere: errors, never panics.
        assert!(parse_link(&link_message(3, 0, &[(IFLA_MTU, &[1, 2, 3, 4])])).is_err());
        assert!(parse_link(&link_message(0, 0, &[(IFLA_IFNAME, b"x\0")])).is_err());
        assert!(parse_link(&link_message(-4, 0, &[(IFLA_IFNAME, b"x\0")])).is_err());
        assert!(parse_link(&link_message(3, 0, &[(IFLA_IFNAME, b"x\0"), (IFLA_MTU, &[1, 2])])).is_err());
        for cut in 0..payload.len() {
            let _ = parse_link(&payload[..cut]);
        }
        assert!(parse_link(&payload[..10]).is_err());
    }

    #[test]
    fn parses_default_routes_only() {
        let route = |dst_len: u8, table: u8, attrs: &[(u16, &[u8])]| {
            let mut m = MessageBuilder::new(RTM_NEWROUTE, 0, 0);
            m.fixed(&rtmsg(libc::AF_INET as u8, dst_len, table, RTPROT_BOOT, 0, RTN_UNICAST));
            for (kind, payload) in attrs {
                m.attr(*kind, payload);
            }
            m.finish().unwrap()[message::HEADER_LEN..].to_vec()
        };
        let gw = [10, 0, 0, 1];
        let oif = 2u32.to_ne_bytes();
        let main =
            route(0, RT_TABLE_MAIN, &[(RTA_GATEWAY, &gw), (RTA_OIF, &oif), (RTA_PRIORITY, &100u32.to_ne_bytes())]);
        assert_eq!(
            parse_default_route(&main).unwrap(),
            Some(DefaultRoute { gateway: Some(Ipv4Addr::new(10, 0, 0, 1)), index: 2, metric: 100 })
        );
        // Not the main table, not a default route: ignored.
        assert_eq!(parse_default_route(&route(0, 255, &[(RTA_OIF, &oif)])).unwrap(), None);
        assert_eq!(parse_default_route(&route(24, RT_TABLE_MAIN, &[(RTA_OIF, &oif)])).unwrap(), None);
        // RTA_TABLE overrides the 8-bit field.
        let t = 1000u32.to_ne_bytes();
        assert_eq!(parse_default_route(&route(0, RT_TABLE_MAIN, &[(RTA_OIF, &oif), (RTA_TABLE, &t)])).unwrap(), None);
        // Multipath: the first hop's interface.
        let mut hop = vec![0u8; 8];
        hop[0..2].copy_from_slice(&16u16.to_ne_bytes());
        hop[4..8].copy_from_slice(&5u32.to_ne_bytes());
        hop.extend_from_slice(&[8, 0, RTA_GATEWAY as u8, 0, 10, 0, 0, 9]);
        let multi = route(0, RT_TABLE_MAIN, &[(RTA_MULTIPATH, &hop)]);
        assert_eq!(
            parse_default_route(&multi).unwrap(),
            Some(DefaultRoute { gateway: Some(Ipv4Addr::new(10, 0, 0, 9)), index: 5, metric: 0 })
        );
        // Garbage.
        assert!(parse_default_route(&route(0, RT_TABLE_MAIN, &[(RTA_GATEWAY, &[1, 2, 3])])).is_err());
        let mut bad_hop = hop.clone();
        bad_hop[0] = 200;
        assert!(parse_default_route(&route(0, RT_TABLE_MAIN, &[(RTA_MULTIPATH, &bad_hop)])).is_err());
        for cut in 0..main.len() {
            let _ = parse_default_route(&main[..cut]);
        }
    }

    #[test]
    fn parses_addresses() {
        let addr = |family: i32, prefix: u8, attrs: &[(u16, &[u8])]| {
            let mut m = MessageBuilder::new(RTM_NEWADDR, 0, 0);
            m.fixed(&[family as u8, prefix, 0, 0, 7, 0, 0, 0]);
            for (kind, payload) in attrs {
                m.attr(*kind, payload);
            }
            m.finish().unwrap()[message::HEADER_LEN..].to_vec()
        };
        let v4 = addr(libc::AF_INET, 24, &[(IFA_ADDRESS, &[10, 0, 0, 9]), (IFA_LOCAL, &[10, 0, 0, 1])]);
        assert_eq!(
            parse_address(&v4).unwrap(),
            (7, Some(Address { address: "10.0.0.1".parse().unwrap(), prefix_len: 24 }))
        );
        let v6 = addr(libc::AF_INET6, 64, &[(IFA_ADDRESS, &"fd00::1".parse::<Ipv6Addr>().unwrap().octets())]);
        assert_eq!(parse_address(&v6).unwrap().1.unwrap().address, "fd00::1".parse::<IpAddr>().unwrap());
        assert!(parse_address(&addr(libc::AF_INET, 24, &[(IFA_LOCAL, &[10, 0, 0])])).is_err());
        assert!(parse_address(&addr(libc::AF_INET, 33, &[(IFA_LOCAL, &[10, 0, 0, 1])])).is_err());
        for cut in 0..v4.len() {
            let _ = parse_address(&v4[..cut]);
        }
    }

    #[test]
    fn rejects_impossible_names_and_indexes() {
        assert!(check_name("").is_err());
        assert!(check_name("sixteen-chars-xx").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("wg0").is_ok());
        assert!(to_ifindex(0).is_err());
        assert!(to_ifindex(u32::MAX).is_err());
    }

    /// A veth pair `name` / `name-p` with the far end up (so `name` gets a carrier when up).
    /// (Test kernels may lack the dummy driver; veth is everywhere namespaces are.)
    fn veth(netns: &ScratchNetns, name: &str) {
        let peer = format!("{name}-p");
        netns.command_ok("ip", &["link", "add", name, "type", "veth", "peer", "name", &peer]);
        netns.command_ok("ip", &["link", "set", &peer, "up"]);
    }

    /// `ip -j` is the oracle: what the kernel holds after our calls.
    fn ip_json(netns: &ScratchNetns, args: &[&str]) -> String {
        netns.command_output("ip", &[&["-j"], args].concat())
    }

    #[test]
    fn kernel_links_mtu_up_and_lookup() {
        run(|netns| {
            veth(netns, "bnl-link");
            let link = link_by_name("bnl-link").unwrap().expect("link exists");
            assert!(!link.up);
            assert_eq!(link.mac.len(), 6);
            assert!(link_by_name("bnl-none").unwrap().is_none());
            assert!(link_by_index(999_999).unwrap().is_none());
            let all = links().unwrap();
            assert!(all.iter().any(|l| l.loopback && l.name == "lo" && l.mac.is_empty()));
            assert!(all.contains(&link));
            assert_eq!(link_by_index(link.index).unwrap().as_ref(), Some(&link));

            set_mtu(link.index, 1420).unwrap();
            set_link_up(link.index, true).unwrap();
            let shown = ip_json(netns, &["link", "show", "bnl-link"]);
            assert!(shown.contains("\"mtu\":1420"), "{shown}");
            assert!(shown.contains("\"UP\""), "{shown}");
            let again = link_by_name("bnl-link").unwrap().unwrap();
            assert!(again.up);
            assert_eq!(again.mtu, 1420);

            set_link_up(link.index, false).unwrap();
            let shown = ip_json(netns, &["link", "show", "bnl-link"]);
            assert!(!shown.contains("\"UP\""), "{shown}");

            // Errors name what was being done and keep the kernel's errno.
            let err = set_mtu(link.index, 1_000_000).unwrap_err();
            assert!(err.to_string().contains("set mtu of link"), "{err}");
            assert!(err.to_string().contains("(bnl-link) to 1000000"), "{err}");
            assert_eq!(errno(&err), Some(libc::EINVAL));
            let err = set_link_up(999_999, true).unwrap_err();
            assert!(err.to_string().contains("set link 999999 up"), "{err}");

            drop_capabilities();
            let err = set_mtu(link.index, 1400).unwrap_err();
            assert_eq!(errno(&err), Some(libc::EPERM));
            assert!(err.to_string().starts_with("set mtu of link"), "{err}");
            // Reading needs no privilege.
            assert!(link_by_name("bnl-link").unwrap().is_some());
        });
    }

    /// What the data plane does with its TUN: MTU, addresses of both families, up.
    #[test]
    fn kernel_tun_setup() {
        run(|netns| {
            netns.command_ok("ip", &["tuntap", "add", "mode", "tun", "name", "bnl-tun0"]);
            let tun = link_by_name("bnl-tun0").unwrap().unwrap();
            assert!(tun.mac.is_empty(), "a TUN has no hardware address");
            set_mtu(tun.index, 1420).unwrap();
            set_tx_queue_length(tun.index, 2000).unwrap();
            add_address(tun.index, "10.99.0.1".parse().unwrap(), 24).unwrap();
            add_address(tun.index, "fd99::1".parse().unwrap(), 64).unwrap();
            set_link_up(tun.index, true).unwrap();
            let shown = ip_json(netns, &["addr", "show", "dev", "bnl-tun0"]);
            assert!(shown.contains("\"mtu\":1420"), "{shown}");
            assert!(shown.contains("\"txqlen\":2000"), "{shown}");
            assert!(shown.contains("\"local\":\"10.99.0.1\",\"prefixlen\":24"), "{shown}");
            assert!(shown.contains("\"local\":\"fd99::1\",\"prefixlen\":64"), "{shown}");
            assert!(link_by_name("bnl-tun0").unwrap().unwrap().up);
        });
    }

    #[test]
    fn kernel_addresses_are_idempotent() {
        run(|netns| {
            veth(netns, "bnl-link");
            let index = link_by_name("bnl-link").unwrap().unwrap().index;
            let v4: IpAddr = "10.77.0.2".parse().unwrap();
            let v6: IpAddr = "fd77::2".parse().unwrap();
            add_address(index, v4, 24).unwrap();
            add_address(index, v4, 24).unwrap();
            add_address(index, v6, 64).unwrap();
            add_address(index, v6, 64).unwrap();
            let shown = ip_json(netns, &["addr", "show", "dev", "bnl-link"]);
            assert_eq!(shown.matches("\"local\":\"10.77.0.2\",\"prefixlen\":24").count(), 1, "{shown}");
            assert_eq!(shown.matches("\"local\":\"fd77::2\",\"prefixlen\":64").count(), 1, "{shown}");
            // No duplicate address detection: usable at once.
            assert!(!shown.contains("tentative"), "{shown}");
            let mut ours = addresses(index).unwrap();
            ours.sort_by_key(|a| a.address);
            assert!(ours.contains(&Address { address: v4, prefix_len: 24 }));
            assert!(ours.contains(&Address { address: v6, prefix_len: 64 }));
            assert!(add_address(index, v4, 33).is_err());
            // A /32 beside it (an address taken over), found by its address, then removed twice.
            let taken: IpAddr = "10.77.0.9".parse().unwrap();
            add_address(index, taken, 32).unwrap();
            assert_eq!(link_with_address(taken).unwrap().map(|l| l.name), Some("bnl-link".to_string()));
            remove_address(index, taken, 32).unwrap();
            remove_address(index, taken, 32).unwrap();
            assert!(!addresses(index).unwrap().iter().any(|a| a.address == taken));
            assert!(link_with_address(taken).unwrap().is_none());
            assert!(addresses(index).unwrap().contains(&Address { address: v4, prefix_len: 24 }));
        });
    }

    #[test]
    fn kernel_default_route_replace_and_read_back() {
        run(|netns| {
            assert_eq!(default_route_interface().unwrap(), None);
            veth(netns, "bnl-a");
            veth(netns, "bnl-b");
            let a = link_by_name("bnl-a").unwrap().unwrap().index;
            let b = link_by_name("bnl-b").unwrap().unwrap().index;
            for (index, addr) in [(a, "10.77.1.2"), (b, "10.77.2.2")] {
                add_address(index, addr.parse().unwrap(), 24).unwrap();
                set_link_up(index, true).unwrap();
            }
            replace_default_route(Ipv4Addr::new(10, 77, 1, 1), a).unwrap();
            assert_eq!(default_route_interface().unwrap().as_deref(), Some("bnl-a"));
            let shown = ip_json(netns, &["route", "show", "default"]);
            assert!(shown.contains("\"gateway\":\"10.77.1.1\",\"dev\":\"bnl-a\""), "{shown}");

            // Replace, not add: still one default route, now through bnl-b.
            replace_default_route(Ipv4Addr::new(10, 77, 2, 1), b).unwrap();
            replace_default_route(Ipv4Addr::new(10, 77, 2, 1), b).unwrap();
            let shown = ip_json(netns, &["route", "show", "default"]);
            assert_eq!(shown.matches("\"dst\":\"default\"").count(), 1, "{shown}");
            assert!(shown.contains("\"gateway\":\"10.77.2.1\",\"dev\":\"bnl-b\""), "{shown}");
            assert_eq!(default_route_interface().unwrap().as_deref(), Some("bnl-b"));
            assert_eq!(
                default_route().unwrap(),
                Some(DefaultRoute { gateway: Some(Ipv4Addr::new(10, 77, 2, 1)), index: b, metric: 0 })
            );

            // A second default route with a higher metric does not win the lookup.
            netns.command_ok("ip", &["route", "add", "default", "via", "10.77.1.1", "dev", "bnl-a", "metric", "50"]);
            assert_eq!(default_route().unwrap().map(|r| (r.index, r.metric)), Some((b, 0)));

            // An unreachable gateway: an error that says what was being done.
            let err = replace_default_route(Ipv4Addr::new(192, 0, 2, 1), a).unwrap_err();
            assert!(err.to_string().contains("set default route via 192.0.2.1 on link"), "{err}");
        });
    }
}
