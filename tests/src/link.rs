//! Links between namespaces: veth pairs, bridges, addresses and routes (all through `ip`).
//! Everything made here lives inside the namespaces and disappears with them.

use crate::netns::Netns;

/// Creates a veth pair straight inside the two namespaces (never in the host's, so the names
/// only need to be unique per namespace) and sets both ends up.
pub fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    veth_down(a, a_name, b, b_name);
    a.run(&["ip", "link", "set", a_name, "up"]);
    b.run(&["ip", "link", "set", b_name, "up"]);
}

/// Like [`veth`], but leaves both ends down: for a machine under test that must bring its own
/// interface up, as it would at boot.
pub fn veth_down(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    crate::command::run_ok(&[
        "ip",
        "-n",
        a.name(),
        "link",
        "add",
        a_name,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ]);
}

/// A bridge in `ns`, up: the shared segment of the topology's "internet" or "VPC subnet".
pub fn bridge(ns: &Netns, name: &str) {
    ns.run(&["ip", "link", "add", name, "type", "bridge"]);
    // No STP: a port forwards at once instead of after the listening/learning delay.
    ns.run(&["ip", "link", "set", name, "type", "bridge", "stp_state", "0", "forward_delay", "0"]);
    ns.run(&["ip", "link", "set", name, "up"]);
}

/// Makes `port` (in the same namespace as the bridge) a port of `bridge`.
pub fn attach(ns: &Netns, port: &str, bridge: &str) {
    ns.run(&["ip", "link", "set", port, "master", bridge]);
}

/// Adds `cidr` ("10.0.1.1/24" or "2001:db8::1/64") to `dev`. IPv6 addresses skip duplicate
/// address detection, which would otherwise keep them unusable for a second or two.
pub fn add_address(ns: &Netns, dev: &str, cidr: &str) {
    if cidr.contains(':') {
        ns.run(&["ip", "-6", "addr", "add", cidr, "dev", dev, "nodad"]);
    } else {
        ns.run(&["ip", "addr", "add", cidr, "dev", dev]);
    }
}

/// Adds a route to `destination` ("default" or a CIDR) through gateway `via` (if any) on `dev`.
pub fn add_route(ns: &Netns, destination: &str, via: Option<&str>, dev: &str) {
    let family = if destination.contains(':') || via.is_some_and(|v| v.contains(':')) { "-6" } else { "-4" };
    let mut argv = vec!["ip", family, "route", "add", destination];
    if let Some(gateway) = via {
        argv.extend(["via", gateway]);
    }
    argv.extend(["dev", dev]);
    ns.run(&argv);
}

/// The hardware address of `dev` in `ns` (`aa:bb:cc:dd:ee:ff`).
pub fn mac(ns: &Netns, dev: &str) -> String {
    let shown = ns.run(&["ip", "-o", "link", "show", "dev", dev]);
    let mut words = shown.split_whitespace().skip_while(|w| *w != "link/ether");
    words.nth(1).unwrap_or_else(|| panic!("no link/ether address for {dev}: {shown}")).to_string()
}

/// Turns off `dev`'s checksum offload in `ns` for one direction, `"tx"` or `"rx"`: what it
/// sends gets its checksums computed in software (and TSO goes with it), or what it receives
/// is checked — as a NIC that trusts nothing would, unlike a veth, which passes a partial
/// checksum along and marks what it receives as checked.
pub fn checksum_offload_off(ns: &Netns, dev: &str, direction: &str) {
    ns.run(&["ethtool", "-K", dev, direction, "off"]);
}
