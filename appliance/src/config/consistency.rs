//! Rules that span fields and peers: unique peer names and public keys, our own key never
//! listed as a peer, each tunnel address owned by one peer only, and the self-test client's
//! address (chosen, or checked when the operator set it).

use super::document::Report;
use super::schema::{HealthDraft, InterfaceDraft, MetricsDraft, PeerDraft, SelfTestDraft};
use super::values;
use super::ProblemKind;
use ip_network::IpNetwork;
use std::collections::HashMap;
use std::net::IpAddr;

pub fn check_peers(interface: Option<&InterfaceDraft>, peers: &[PeerDraft], report: &mut Report) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, peer) in peers.iter().enumerate() {
        if let Some(&first) = names.get(peer.name.as_str()) {
            let message = format!(
                "duplicate name {:?}: peer[{first}] (line {}) has it too; names must be unique",
                peer.name,
                line(peers[first].line)
            );
            match &peer.name_span {
                Some(span) => report.at(ProblemKind::Duplicate, span.clone(), format!("peer[{i}].name"), message),
                None => report.at_line(ProblemKind::Duplicate, peer.line, format!("peer[{i}].name"), message),
            }
        } else {
            names.insert(&peer.name, i);
        }
    }

    let own_key = interface.and_then(|i| i.private_key.as_ref()).map(|k| k.public_key());
    let mut keys: HashMap<crate::keys::PublicKey, usize> = HashMap::new();
    for (i, peer) in peers.iter().enumerate() {
        let Some((key, span)) = &peer.public_key else {
            continue;
        };
        let field = format!("peer[{i}].public_key");
        if Some(*key) == own_key {
            let from = interface.and_then(|i| i.key_field.clone()).unwrap_or_default();
            report.at(
                ProblemKind::Conflict,
                span.clone(),
                field,
                format!(
                    "this is the bastion's own public key (of {from}); expected the public key of \
                     the peer's device"
                ),
            );
        } else if let Some(&first) = keys.get(key) {
            report.at(
                ProblemKind::Duplicate,
                span.clone(),
                field,
                format!(
                    "same public key as peer[{first}] {:?} (line {}); each peer needs its own key",
                    peers[first].name,
                    line(peers[first].line)
                ),
            );
        } else {
            keys.insert(*key, i);
        }
    }

    check_overlaps(peers, report);
}

fn line(line: Option<usize>) -> String {
    line.map_or_else(|| "?".into(), |l| l.to_string())
}

/// An address range as integers: IPv4 and IPv6 never overlap each other.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    v6: bool,
    first: u128,
    last: u128,
}

fn range(net: &IpNetwork) -> Range {
    match net {
        IpNetwork::V4(n) => {
            let first = u32::from(n.network_address()) as u128;
            let size = 1u128 << (32 - n.netmask());
            Range { v6: false, first, last: first + size - 1 }
        }
        IpNetwork::V6(n) => {
            let first = u128::from(n.network_address());
            let host_bits = 128 - n.netmask() as u32;
            let host_mask = if host_bits == 0 { 0 } else { u128::MAX >> (128 - host_bits) };
            let last = first | host_mask;
            Range { v6: true, first, last }
        }
    }
}

fn point(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u32::from(a) as u128),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

fn ip_of(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(n.into())
    } else {
        IpAddr::V4((n as u32).into())
    }
}

/// Two CIDR networks either nest or are disjoint, so after sorting by start (widest first) a
/// stack of the networks still open holds every container of the next one: one pass finds each
/// network that lies inside (or equals) another peer's.
fn check_overlaps(peers: &[PeerDraft], report: &mut Report) {
    struct Entry<'a> {
        range: Range,
        peer: usize,
        item: &'a super::document::Item<IpNetwork>,
    }
    let mut entries: Vec<Entry> = peers
        .iter()
        .enumerate()
        .flat_map(|(peer, p)| p.allowed_ips.iter().map(move |item| Entry { range: range(&item.value), peer, item }))
        .collect();
    entries.sort_by(|a, b| {
        (a.range.v6, a.range.first, std::cmp::Reverse(a.range.last), a.peer).cmp(&(
            b.range.v6,
            b.range.first,
            std::cmp::Reverse(b.range.last),
            b.peer,
        ))
    });
    let mut open: Vec<&Entry> = Vec::new();
    for entry in &entries {
        while open.last().is_some_and(|top| top.range.v6 != entry.range.v6 || top.range.last < entry.range.first) {
            open.pop();
        }
        if let Some(other) = open.iter().rev().find(|o| o.peer != entry.peer) {
            // Reported where the later of the two is written: that is usually the line just added.
            let (here, there) =
                if other.item.span.start > entry.item.span.start { (*other, entry) } else { (entry, *other) };
            report.at(
                ProblemKind::Overlap,
                here.item.span.clone(),
                format!("peer[{}].allowed_ips[{}]", here.peer, here.item.index),
                format!(
                    "{} of peer {:?} overlaps {} of peer[{}] {:?} (line {}); each tunnel address \
                     must belong to one peer only",
                    here.item.value,
                    peers[here.peer].name,
                    there.item.value,
                    there.peer,
                    peers[there.peer].name,
                    report.line_of(there.item.span.start)
                ),
            );
        }
        open.push(entry);
    }
}

/// The self-test client's address: the operator's, checked, or the highest host address of the
/// tunnel networks (IPv4 first, then IPv6, each in the order written) that is neither ours nor
/// inside any peer's allowed_ips.
pub fn selftest_address(
    interface: &InterfaceDraft,
    peers: &[PeerDraft],
    selftest: &SelfTestDraft,
    report: &mut Report,
) -> Option<IpAddr> {
    let networks: Vec<IpNetwork> = interface.addresses.iter().map(|a| a.value.network()).collect();
    if networks.is_empty() {
        return None; // already reported: the interface has no address
    }
    let owner = |ip: IpAddr| -> Option<(usize, &super::document::Item<IpNetwork>)> {
        peers.iter().enumerate().find_map(|(i, p)| p.allowed_ips.iter().find(|n| n.value.contains(ip)).map(|n| (i, n)))
    };

    if let Some((ip, span)) = &selftest.address {
        let ip = *ip;
        let field = "selftest.address";
        let Some(net) = networks.iter().find(|n| n.contains(ip)) else {
            let list: Vec<String> = networks.iter().map(|n| n.to_string()).collect();
            report.at(
                ProblemKind::Conflict,
                span.clone(),
                field,
                format!(
                    "{ip} is outside the tunnel networks ({}); expected an unused address inside \
                     one of them, so replies to the self-test go back through the tunnel",
                    list.join(", ")
                ),
            );
            return None;
        };
        if let Some(own) = interface.addresses.iter().find(|a| a.value.address == ip) {
            report.at(
                ProblemKind::Conflict,
                span.clone(),
                field,
                format!("{ip} is the bastion's own address (interface.address[{}]); expected an unused one", own.index),
            );
            return None;
        }
        if let IpNetwork::V4(n) = net {
            let r = range(net);
            let (_, p) = point(ip);
            if n.netmask() <= 30 && (p == r.first || p == r.last) {
                report.at(
                    ProblemKind::Invalid,
                    span.clone(),
                    field,
                    format!("{ip} is the network or broadcast address of {net}; expected a host address"),
                );
                return None;
            }
        }
        if let Some((peer, item)) = owner(ip) {
            report.at(
                ProblemKind::Overlap,
                span.clone(),
                field,
                format!(
                    "{ip} is inside {} of peer[{peer}] {:?} (line {}); expected an address no peer \
                     may use, so the self-test cannot be spoofed by a peer",
                    item.value,
                    peers[peer].name,
                    report.line_of(item.span.start)
                ),
            );
            return None;
        }
        return Some(ip);
    }

    let mut taken: Vec<Range> = peers.iter().flat_map(|p| p.allowed_ips.iter().map(|n| range(&n.value))).collect();
    taken.extend(interface.addresses.iter().map(|a| {
        let (v6, p) = point(a.value.address);
        Range { v6, first: p, last: p }
    }));
    let ordered = networks.iter().filter(|n| n.is_ipv4()).chain(networks.iter().filter(|n| n.is_ipv6()));
    for net in ordered {
        if let Some(ip) = highest_free(net, &taken) {
            return Some(ip);
        }
    }
    let list: Vec<String> = networks.iter().map(|n| n.to_string()).collect();
    let single_hosts = interface.addresses.iter().all(|a| a.value.prefix_len == values::max_prefix(&a.value.address));
    let expected = if single_hosts {
        "expected interface.address with the tunnel network's prefix (e.g. 10.100.0.1/24, not /32: \
         that is a client's way of writing it)"
    } else {
        "expected [selftest] address = an unused address inside a tunnel network"
    };
    report.at_line(
        ProblemKind::Conflict,
        selftest.line.or(interface.line),
        "selftest.address",
        format!(
            "no free address for the self-test client: every host address of {} is the bastion's \
             own or inside a peer's allowed_ips; {expected}",
            list.join(", ")
        ),
    );
    None
}

/// The highest host address of `net` outside every range in `taken`.
fn highest_free(net: &IpNetwork, taken: &[Range]) -> Option<IpAddr> {
    let r = range(net);
    let (first, last) = match net {
        // Network and broadcast addresses are not hosts, except on /31 and /32 (RFC 3021).
        IpNetwork::V4(n) if n.netmask() <= 30 => (r.first + 1, r.last - 1),
        IpNetwork::V4(_) => (r.first, r.last),
        // The lowest address of an IPv6 subnet is its subnet-router anycast address.
        IpNetwork::V6(n) if n.netmask() <= 126 => (r.first + 1, r.last),
        IpNetwork::V6(_) => (r.first, r.last),
    };
    // Walking the ranges by their top address, highest first, the candidate only moves down:
    // once a range ends below it, every later one does too. O(n log n) however the peers'
    // addresses are laid out.
    let mut ranges: Vec<&Range> = taken.iter().filter(|t| t.v6 == r.v6).collect();
    ranges.sort_by_key(|r| std::cmp::Reverse(r.last));
    let mut candidate = last;
    for t in ranges {
        if t.last < candidate {
            break;
        }
        if t.first <= candidate {
            candidate = t.first.checked_sub(1)?;
        }
    }
    (candidate >= first).then(|| ip_of(r.v6, candidate))
}

/// The lowest host address of `net` outside every network in `taken` (for `bastion peer add`,
/// which hands out addresses from the bottom while the self-test's default sits at the top).
/// Network and broadcast addresses (IPv4 up to /30) and the subnet-router anycast address
/// (IPv6 up to /126) are never chosen, as in [`highest_free`].
pub fn lowest_free(net: &IpNetwork, taken: &[IpNetwork]) -> Option<IpAddr> {
    let r = range(net);
    let (first, last) = match net {
        IpNetwork::V4(n) if n.netmask() <= 30 => (r.first + 1, r.last - 1),
        IpNetwork::V6(n) if n.netmask() <= 126 => (r.first + 1, r.last),
        _ => (r.first, r.last),
    };
    // Walking the ranges by their bottom address, lowest first, the candidate only moves up.
    let mut ranges: Vec<Range> = taken.iter().map(range).filter(|t| t.v6 == r.v6).collect();
    ranges.sort_by_key(|t| t.first);
    let mut candidate = first;
    for t in ranges {
        if t.first > candidate {
            break;
        }
        if t.last >= candidate {
            candidate = t.last.checked_add(1)?;
        }
    }
    (candidate <= last).then(|| ip_of(r.v6, candidate))
}

/// The metrics listener may not take the health responder's address: the NLB and the whole VPC
/// reach health, metrics are for the monitoring network only.
/// A `reach` that covers the tunnel network lets peers reach one another on every port (the
/// bastion forwards tunnel to tunnel): rarely meant (`convert` writes it for wg-quick's usual
/// `iptables -A FORWARD -i wg0 -j ACCEPT`), so a warning, not an error.
pub fn check_reach_of_the_tunnel(
    interface: &InterfaceDraft,
    nat: &super::schema::NatDraft,
    peers: &[PeerDraft],
    report: &mut Report,
) {
    let tunnel: Vec<IpNetwork> = interface.addresses.iter().map(|a| a.value.network()).collect();
    let mut check = |field: String, item: &super::document::Item<IpNetwork>| {
        if let Some(net) = tunnel.iter().find(|t| overlaps(t, &item.value)) {
            report.warn_at(
                item.span.clone(),
                field,
                format!(
                    "covers the tunnel network {net}: peers then reach one another through the bastion \
                     on every port; leave the tunnel network out unless that is meant"
                ),
            );
        }
    };
    for item in &nat.reach {
        check(format!("nat.reach[{}]", item.index), item);
    }
    for (i, peer) in peers.iter().enumerate() {
        for item in &peer.reach {
            check(format!("peer[{i}].reach[{}]", item.index), item);
        }
    }
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    let (a, b) = (range(a), range(b));
    a.v6 == b.v6 && a.first <= b.last && b.first <= a.last
}

pub fn check_listeners(health: &HealthDraft, metrics: &MetricsDraft, report: &mut Report) {
    let (Some(health), Some((metrics, span))) = (health.listen, metrics.listen.as_ref()) else {
        return;
    };
    let same_ip = health.ip() == metrics.ip() || health.ip().is_unspecified() || metrics.ip().is_unspecified();
    if health.port() == metrics.port() && same_ip {
        report.at(
            ProblemKind::Conflict,
            span.clone(),
            "metrics.listen",
            format!(
                "{metrics} overlaps health.listen {health}; expected a port of its own (9586 is the \
                 exporter's usual one): metrics are never served on the health port"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn highest_free_skips_broadcast_peers_and_our_own() {
        let none: Vec<Range> = Vec::new();
        assert_eq!(highest_free(&net("10.100.0.0/24"), &none).unwrap().to_string(), "10.100.0.254");
        let taken = vec![range(&net("10.100.0.128/25")), range(&net("10.100.0.127/32"))];
        assert_eq!(highest_free(&net("10.100.0.0/24"), &taken).unwrap().to_string(), "10.100.0.126");
        assert_eq!(highest_free(&net("10.100.0.0/31"), &none).unwrap().to_string(), "10.100.0.1");
        let all = vec![range(&net("10.100.0.0/24"))];
        assert_eq!(highest_free(&net("10.100.0.0/24"), &all), None);
        assert_eq!(highest_free(&net("fd00:100::/64"), &none).unwrap().to_string(), "fd00:100::ffff:ffff:ffff:ffff");
        let v6 = vec![range(&net("fd00:100::/64"))];
        assert_eq!(highest_free(&net("fd00:100::/64"), &v6), None);
        // An IPv6 range never blocks an IPv4 candidate.
        assert!(highest_free(&net("10.100.0.0/24"), &v6).is_some());
        assert_eq!(highest_free(&net("0.0.0.0/0"), &none).unwrap().to_string(), "255.255.255.254");
        assert!(highest_free(&net("::/0"), &none).is_some());
    }

    #[test]
    fn lowest_free_skips_the_network_address_and_taken_ranges() {
        assert_eq!(lowest_free(&net("10.100.0.0/24"), &[]).unwrap().to_string(), "10.100.0.1");
        let taken = [net("10.100.0.1/32"), net("10.100.0.2/31"), net("10.100.0.5/32")];
        assert_eq!(lowest_free(&net("10.100.0.0/24"), &taken).unwrap().to_string(), "10.100.0.4");
        assert_eq!(
            lowest_free(&net("10.100.0.0/24"), &[net("10.100.0.0/25"), net("10.100.0.128/26")]).unwrap().to_string(),
            "10.100.0.192"
        );
        // Full: the broadcast address is not a host.
        assert_eq!(lowest_free(&net("10.100.0.0/30"), &[net("10.100.0.1/32"), net("10.100.0.2/32")]), None);
        assert_eq!(lowest_free(&net("10.100.0.0/24"), &[net("10.0.0.0/8")]), None);
        assert_eq!(lowest_free(&net("fd00:100::/64"), &[net("fd00:100::1/128")]).unwrap().to_string(), "fd00:100::2");
        assert_eq!(lowest_free(&net("fd00:100::/64"), &[net("fd00:100::/64")]), None);
        // An IPv4 range never blocks an IPv6 candidate; the top of the space does not overflow.
        assert!(lowest_free(&net("fd00:100::/64"), &[net("0.0.0.0/0")]).is_some());
        assert_eq!(lowest_free(&net("::/0"), &[net("::/0")]), None);
        assert_eq!(lowest_free(&net("10.100.0.7/32"), &[]).unwrap().to_string(), "10.100.0.7");
    }

    #[test]
    fn highest_free_handles_peers_packed_from_the_top() {
        let net = net("10.0.0.0/16");
        let top = u32::from(std::net::Ipv4Addr::new(10, 0, 255, 254)) as u128;
        let taken: Vec<Range> = (0..60_000u128).map(|i| Range { v6: false, first: top - i, last: top - i }).collect();
        let expected = std::net::Ipv4Addr::from((top - 60_000) as u32);
        assert_eq!(highest_free(&net, &taken), Some(IpAddr::V4(expected)));
    }

    #[test]
    fn ranges_cover_whole_networks() {
        let r = range(&net("10.0.0.0/8"));
        assert_eq!((r.first, r.last), (0x0a00_0000, 0x0aff_ffff));
        let r = range(&net("::/0"));
        assert_eq!((r.first, r.last), (0, u128::MAX));
        let r = range(&net("fd00::1/128"));
        assert_eq!(r.first, r.last);
    }
}
