//! NAT forwarding: turns the config into our own nftables table (masquerade, per-peer forward
//! ACL, and what peers may send to the bastion itself), installs it idempotently over netlink,
//! reads it back, removes it; and the forwarding sysctls. Each service has a table of its own,
//! named after its tunnel ([`table_name`]: `bastion-wg0`), in family `inet`; no other table is
//! ever touched, so two services on one host (two tunnels) never replace each other's rules.
//!
//! The table, for tunnel `wg0` and egress `eth0`:
//!
//! ```text
//! table inet bastion-wg0 {
//!     chain input {
//!         type filter hook input priority filter; policy accept;
//!         iifname "wg0" ct state established,related accept
//!         iifname "wg0" icmp type echo-request accept
//!         iifname "wg0" icmpv6 type echo-request accept
//!         iifname "wg0" drop
//!     }
//!     chain forward {
//!         type filter hook forward priority filter; policy accept;
//!         iifname "wg0" oifname "wg0" udp dport 821 drop             # move notices: bastion only
//!         iifname "wg0" ip daddr 169.254.169.254 drop                 # the instance metadata
//!         iifname "wg0" ip6 daddr fd00:ec2::254 drop                  # service, always
//!         ct state established,related accept
//!         iifname "wg0" ip daddr 10.0.0.0/16 accept                  # global reach
//!         iifname "wg0" ip saddr 10.9.0.2 ip daddr 10.1.0.0/24 accept  # one peer's reach
//!         iifname "wg0" drop
//!         oifname "wg0" drop
//!     }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         iifname "wg0" oifname "eth0" masquerade
//!     }
//! }
//! ```
//!
//! The policies are accept: traffic that neither comes from nor goes to the tunnel is none of
//! our business and passes as if we were not there. Replies come back through the conntrack
//! rules; nothing else may enter the tunnel from outside. From the tunnel, a peer may ping the
//! bastion (the self-test does) but reach none of its ports: not the health port, not whatever
//! else listens on a host that runs `bastion run`. The instance metadata service is never
//! forwarded to, whatever `reach` says: it hands out the instance role's credentials. A peer
//! never reaches another peer's move-notice port ([`crate::move_notice::PORT`]), even when
//! `reach` covers the tunnel network: only the bastion itself may ask a client to move.

use crate::netlink::nftables::{self, BaseChain, Batch, ChainType, Hook, IpVersion, Rule, Verdict, FAMILY_INET};
use ip_network::IpNetwork;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The table of the service whose tunnel is `tunnel`: `bastion-wg0`.
pub fn table_name(tunnel: &str) -> String {
    format!("bastion-{tunnel}")
}

const INPUT_CHAIN: &str = "input";
const FORWARD_CHAIN: &str = "forward";
const POSTROUTING_CHAIN: &str = "postrouting";
const IPV4_FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// The EC2 instance metadata service (IPv4, and IPv6 on Nitro instances): never forwarded to.
pub const METADATA_SERVICE: [IpAddr; 2] =
    [IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254))];

/// One forward-chain permission: tunnel traffic from `source` (any tunnel source when None) to
/// `destination` is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub source: Option<IpNetwork>,
    pub destination: IpNetwork,
}

/// The whole table, computed from the config before anything touches the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPlan {
    /// The TUN interface (`wg0`).
    pub tunnel: String,
    /// The interface tunnel traffic leaves through toward the private subnets.
    pub egress: String,
    pub masquerade: bool,
    pub allow: Vec<Allow>,
}

/// What went wrong with the forwarding setup, with what it was about.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// An interface name the kernel (or our listing) cannot take.
    #[error("nat {role} interface {name:?}: {why}")]
    BadInterface { role: &'static str, name: String, why: &'static str },
    #[error("nat egress interface {name:?} is the tunnel itself; expected the interface toward the private subnets")]
    EgressIsTunnel { name: String },
    /// The kernel refused a netlink request (`doing` says which).
    #[error("{doing}{}", if doing.is_empty() { source.to_string() } else { format!(": {source}") })]
    Netlink { doing: String, source: std::io::Error },
    /// A sysctl could not be written.
    #[error("{doing}: write {value} to {path}: {source}")]
    Sysctl { doing: &'static str, path: String, value: &'static str, source: std::io::Error },
}

/// Installs the plan as one atomic batch, replacing our table if it exists (a restart after a
/// crash replaces it). Never touches another table.
pub fn install(plan: &NatPlan) -> Result<(), NatError> {
    let chains = chains(plan)?;
    let table = table_name(&plan.tunnel);
    let table = table.as_str();
    let mut batch = Batch::new();
    // Create-then-delete makes the delete succeed whether or not a table was left behind, and
    // the whole batch is one transaction: there is no moment without a table, and no moment
    // with half of one.
    batch.add_table(FAMILY_INET, table);
    batch.delete_table(FAMILY_INET, table);
    batch.add_table(FAMILY_INET, table);
    for (chain, rules) in &chains {
        batch.add_chain(FAMILY_INET, table, chain);
        for rule in rules {
            batch.add_rule(FAMILY_INET, table, &chain.name, rule);
        }
    }
    batch.commit().map_err(|source| NatError::Netlink { doing: String::new(), source })
}

/// Removes the table of `tunnel`; a missing table is not an error.
pub fn remove(tunnel: &str) -> Result<(), NatError> {
    let table = table_name(tunnel);
    let mut batch = Batch::new();
    batch.add_table(FAMILY_INET, &table);
    batch.delete_table(FAMILY_INET, &table);
    batch.commit().map_err(|source| NatError::Netlink { doing: format!("remove table inet {table}"), source })
}

/// Whether the table of `tunnel` is in the kernel now (read back over netlink, not remembered).
pub fn table_present(tunnel: &str) -> Result<bool, NatError> {
    nftables::table_exists(FAMILY_INET, &table_name(tunnel))
        .map_err(|source| NatError::Netlink { doing: String::new(), source })
}

/// The table the plan installs, as `nft list table inet bastion-wg0` prints it (for logs, status
/// and documentation; the kernel gets the same rules over netlink, not this text).
pub fn ruleset(plan: &NatPlan) -> Result<String, NatError> {
    let mut text = format!("table inet {} {{\n", table_name(&plan.tunnel));
    for (i, (chain, rules)) in chains(plan)?.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        let (kind, priority) = match chain.kind {
            ChainType::Filter => ("filter", "filter"),
            ChainType::Nat => ("nat", "srcnat"),
        };
        let hook = match chain.hook {
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Postrouting => "postrouting",
        };
        text.push_str(&format!(
            "\tchain {} {{\n\t\ttype {kind} hook {hook} priority {priority}; policy accept;\n",
            chain.name
        ));
        for rule in rules {
            text.push_str(&format!("\t\t{}\n", rule.text()));
        }
        text.push_str("\t}\n");
    }
    text.push_str("}\n");
    Ok(text)
}

/// The chains of the table, each with its rules in order.
fn chains(plan: &NatPlan) -> Result<Vec<(BaseChain, Vec<Rule>)>, NatError> {
    check_interface("tunnel", &plan.tunnel)?;
    if plan.masquerade {
        check_interface("egress", &plan.egress)?;
        if plan.egress == plan.tunnel {
            return Err(NatError::EgressIsTunnel { name: plan.egress.clone() });
        }
    }
    let tunnel = plan.tunnel.as_str();
    let input = vec![
        Rule::new().iifname(tunnel).established_or_related().verdict(Verdict::Accept),
        Rule::new().iifname(tunnel).echo_request(IpVersion::V4).verdict(Verdict::Accept),
        Rule::new().iifname(tunnel).echo_request(IpVersion::V6).verdict(Verdict::Accept),
        Rule::new().iifname(tunnel).verdict(Verdict::Drop),
    ];
    let mut forward: Vec<Rule> =
        vec![Rule::new().iifname(tunnel).oifname(tunnel).udp_dport(crate::move_notice::PORT).verdict(Verdict::Drop)];
    forward.extend(
        METADATA_SERVICE
            .iter()
            .map(|address| Rule::new().iifname(tunnel).daddr(IpNetwork::from(*address)).verdict(Verdict::Drop)),
    );
    forward.push(Rule::new().established_or_related().verdict(Verdict::Accept));
    for allow in &plan.allow {
        let mut rule = Rule::new().iifname(tunnel);
        if let Some(source) = allow.source {
            if is_ipv4(&source) != is_ipv4(&allow.destination) {
                // No packet has an IPv4 source and an IPv6 destination: nothing to allow.
                continue;
            }
            rule = rule.saddr(source);
        }
        forward.push(rule.daddr(allow.destination).verdict(Verdict::Accept));
    }
    forward.push(Rule::new().iifname(tunnel).verdict(Verdict::Drop));
    forward.push(Rule::new().oifname(tunnel).verdict(Verdict::Drop));

    let mut chains = vec![
        (
            BaseChain {
                name: INPUT_CHAIN.into(),
                kind: ChainType::Filter,
                hook: Hook::Input,
                priority: 0,
                policy: Verdict::Accept,
            },
            input,
        ),
        (
            BaseChain {
                name: FORWARD_CHAIN.into(),
                kind: ChainType::Filter,
                hook: Hook::Forward,
                priority: 0,
                policy: Verdict::Accept,
            },
            forward,
        ),
    ];
    if plan.masquerade {
        chains.push((
            BaseChain {
                name: POSTROUTING_CHAIN.into(),
                kind: ChainType::Nat,
                hook: Hook::Postrouting,
                priority: 100,
                policy: Verdict::Accept,
            },
            vec![Rule::new().iifname(tunnel).oifname(&plan.egress).masquerade()],
        ));
    }
    Ok(chains)
}

fn is_ipv4(net: &IpNetwork) -> bool {
    matches!(net, IpNetwork::V4(_))
}

/// Rules match interface names exactly, as the kernel keeps them; and the listing (`ruleset`,
/// as `nft` prints it) quotes them, so a `"` cannot be shown.
fn check_interface(role: &'static str, name: &str) -> Result<(), NatError> {
    let why = match crate::netlink::route::check_interface_name(name) {
        Err(why) => why,
        Ok(()) if name.contains('"') => "expected an interface name without '\"'",
        Ok(()) => return Ok(()),
    };
    Err(NatError::BadInterface { role, name: name.to_string(), why })
}

/// Turns on IPv4 forwarding (and IPv6 when `ipv6`).
pub fn enable_forwarding(ipv6: bool) -> Result<(), NatError> {
    write_sysctl(IPV4_FORWARDING)?;
    if ipv6 {
        write_sysctl(IPV6_FORWARDING)?;
    }
    Ok(())
}

/// With IPv6 forwarding on, Linux ignores router advertisements on interfaces whose
/// `accept_ra` is 1; an egress that takes its IPv6 default route from them (a VPC with IPv6)
/// would lose it. Setting 2 keeps them accepted; 0 (the operator said no) is left alone.
pub fn keep_router_advertisements(interface: &str) -> Result<(), NatError> {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/accept_ra");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.trim() == "1" {
        std::fs::write(&path, b"2\n").map_err(|source| NatError::Sysctl {
            doing: "keep router advertisements",
            path: path.clone(),
            value: "2",
            source,
        })?;
    }
    Ok(())
}

/// Whether IPv4 forwarding (and IPv6 when `ipv6`) is on now.
pub fn forwarding_enabled(ipv6: bool) -> bool {
    sysctl_on(IPV4_FORWARDING) && (!ipv6 || sysctl_on(IPV6_FORWARDING))
}

fn write_sysctl(path: &str) -> Result<(), NatError> {
    std::fs::write(path, b"1\n").map_err(|source| NatError::Sysctl {
        doing: "enable forwarding",
        path: path.to_string(),
        value: "1",
        source,
    })
}

fn sysctl_on(path: &str) -> bool {
    use std::io::Read;
    let mut value = [0u8; 16];
    match std::fs::File::open(path).and_then(|mut f| f.read(&mut value)) {
        Ok(n) => value[..n].trim_ascii() == b"1",
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bastion_tests::scratch::{drop_capabilities, run, NamedNetns, ScratchNetns, Spawned};

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    /// Mixed families, global and per-peer reach, masquerade.
    fn plan() -> NatPlan {
        NatPlan {
            tunnel: "wg0".into(),
            egress: "eth0".into(),
            masquerade: true,
            allow: vec![
                Allow { source: None, destination: net("10.0.0.0/16") },
                Allow { source: None, destination: net("fd10::/64") },
                Allow { source: Some(net("10.9.0.2/32")), destination: net("10.1.0.0/24") },
                Allow { source: Some(net("10.9.0.0/29")), destination: net("172.16.16.0/20") },
                Allow { source: Some(net("fd00::2/128")), destination: net("fd20::/48") },
                // Different families: cannot match anything, so not installed.
                Allow { source: Some(net("10.9.0.2/32")), destination: net("fd30::/64") },
                Allow { source: Some(net("10.9.0.3/32")), destination: net("0.0.0.0/0") },
                Allow { source: None, destination: net("::/0") },
            ],
        }
    }

    /// The same table, written by hand in nft's language: the oracle.
    const EXPECTED: &str = r#"table inet bastion-wg0 {
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "wg0" ct state established,related accept
        iifname "wg0" icmp type echo-request accept
        iifname "wg0" icmpv6 type echo-request accept
        iifname "wg0" drop
    }
    chain forward {
        type filter hook forward priority 0; policy accept;
        iifname "wg0" oifname "wg0" udp dport 821 drop
        iifname "wg0" ip daddr 169.254.169.254 drop
        iifname "wg0" ip6 daddr fd00:ec2::254 drop
        ct state established,related accept
        iifname "wg0" ip daddr 10.0.0.0/16 accept
        iifname "wg0" ip6 daddr fd10::/64 accept
        iifname "wg0" ip saddr 10.9.0.2 ip daddr 10.1.0.0/24 accept
        iifname "wg0" ip saddr 10.9.0.0/29 ip daddr 172.16.16.0/20 accept
        iifname "wg0" ip6 saddr fd00::2 ip6 daddr fd20::/48 accept
        iifname "wg0" ip saddr 10.9.0.3 accept
        iifname "wg0" meta nfproto ipv6 accept
        iifname "wg0" drop
        oifname "wg0" drop
    }
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        iifname "wg0" oifname "eth0" masquerade
    }
}
"#;

    fn list(netns: &ScratchNetns) -> String {
        netns.command_output("nft", &["list", "table", "inet", "bastion-wg0"])
    }

    /// The expressions the kernel holds, without rule handles (which differ between runs).
    fn expressions(netns: &ScratchNetns) -> String {
        let out = netns.command_output("nft", &["--debug=netlink", "list", "table", "inet", "bastion-wg0"]);
        out.lines()
            .map(|line| {
                if line.starts_with("inet bastion-wg0 ") {
                    line.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What `nft` itself makes of EXPECTED, then removes it again.
    fn oracle(netns: &ScratchNetns) -> (String, String) {
        netns.command_with_stdin("nft", &["-f", "-"], EXPECTED);
        let listed = (list(netns), expressions(netns));
        netns.command_ok("nft", &["delete", "table", "inet", "bastion-wg0"]);
        listed
    }

    #[test]
    fn plan_to_rules() {
        let text = ruleset(&plan()).unwrap();
        assert!(text.contains("\t\tiifname \"wg0\" ip saddr 10.9.0.2 ip daddr 10.1.0.0/24 accept\n"), "{text}");
        assert!(!text.contains("fd30::"), "mixed-family pairs are left out: {text}");
        let no_masq = NatPlan { masquerade: false, egress: String::new(), ..plan() };
        assert!(!ruleset(&no_masq).unwrap().contains("postrouting"));
        for bad in ["", "sixteen-chars-xx", "a b", "a\"b"] {
            let e = ruleset(&NatPlan { tunnel: bad.into(), ..plan() }).unwrap_err();
            assert!(matches!(&e, NatError::BadInterface { role: "tunnel", name, .. } if name == bad), "{e}");
        }
        let e = ruleset(&NatPlan { egress: "wg0".into(), ..plan() }).unwrap_err();
        assert!(matches!(&e, NatError::EgressIsTunnel { name } if name == "wg0"), "{e}");
        let e = install(&NatPlan { egress: String::new(), ..plan() }).unwrap_err();
        assert!(matches!(e, NatError::BadInterface { role: "egress", .. }), "{e}");
    }

    #[test]
    fn kernel_install_matches_nft_oracle() {
        run(|netns| {
            let (want_listing, want_expressions) = oracle(netns);
            assert!(!table_present("wg0").unwrap());
            install(&plan()).unwrap();
            assert!(table_present("wg0").unwrap());
            assert_eq!(list(netns), want_listing);
            assert_eq!(expressions(netns), want_expressions);
            // Our own description of the table is what nft lists.
            assert_eq!(ruleset(&plan()).unwrap(), want_listing);
        });
    }

    #[test]
    fn kernel_install_is_idempotent_and_replaces_a_conflicting_table() {
        run(|netns| {
            let (want_listing, _) = oracle(netns);
            // A hand-made table of our name, with a dropping policy and a chain of its own.
            netns.command_with_stdin(
                "nft",
                &["-f", "-"],
                "table inet bastion-wg0 {\n chain forward { type filter hook forward priority 0; policy drop; }\n \
                 chain junk {\n counter\n }\n}\n",
            );
            install(&plan()).unwrap();
            assert_eq!(list(netns), want_listing);
            install(&plan()).unwrap();
            assert_eq!(list(netns), want_listing);
            let tables = netns.command_output("nft", &["list", "tables"]);
            assert_eq!(tables.matches("table inet bastion-wg0").count(), 1, "{tables}");
            // A smaller plan replaces the bigger one entirely.
            let small = NatPlan { masquerade: false, allow: vec![], ..plan() };
            install(&small).unwrap();
            let listed = list(netns);
            assert!(!listed.contains("postrouting") && !listed.contains("10.0.0.0/16"), "{listed}");
        });
    }

    #[test]
    fn kernel_remove_touches_only_our_table() {
        run(|netns| {
            let foreign = "table inet other {\n chain c { type filter hook forward priority 0; policy accept; \
                           iifname \"wg0\" counter drop; }\n}\n\
                           table ip bastion {\n chain c { counter; }\n}\n";
            netns.command_with_stdin("nft", &["-f", "-"], foreign);
            let before = netns.command_output("nft", &["list", "ruleset"]);
            install(&plan()).unwrap();
            // A second service's table (tunnel wg1) comes and goes without touching ours.
            let second = NatPlan { tunnel: "wg1".into(), ..plan() };
            install(&second).unwrap();
            assert!(table_present("wg0").unwrap() && table_present("wg1").unwrap());
            remove("wg1").unwrap();
            assert!(table_present("wg0").unwrap() && !table_present("wg1").unwrap());
            remove("wg0").unwrap();
            assert!(!table_present("wg0").unwrap());
            assert_eq!(netns.command_output("nft", &["list", "ruleset"]), before);
            // Removing again: nothing there, not an error; the others still untouched.
            remove("wg0").unwrap();
            assert_eq!(netns.command_output("nft", &["list", "ruleset"]), before);
        });
    }

    #[test]
    fn kernel_table_present_reads_the_kernel() {
        run(|netns| {
            install(&plan()).unwrap();
            assert!(table_present("wg0").unwrap());
            netns.command_ok("nft", &["delete", "table", "inet", "bastion-wg0"]);
            assert!(!table_present("wg0").unwrap());
            // Same name in another family is not ours.
            netns.command_ok("nft", &["add", "table", "ip", "bastion-wg0"]);
            assert!(!table_present("wg0").unwrap());
        });
    }

    #[test]
    fn kernel_errors_say_what_failed() {
        run(|_netns| {
            install(&plan()).unwrap();
            drop_capabilities();
            let e = install(&plan()).unwrap_err();
            assert!(
                matches!(&e, NatError::Netlink { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
                "{e}"
            );
            assert!(e.to_string().contains("nftables batch: batch begin failed: Operation not permitted"), "{e}");
            let e = remove("wg0").unwrap_err();
            assert!(matches!(&e, NatError::Netlink { doing, .. } if doing == "remove table inet bastion-wg0"), "{e}");
            assert!(e.to_string().starts_with("remove table inet bastion-wg0: "), "{e}");
            let e = enable_forwarding(false).unwrap_err();
            assert!(matches!(&e, NatError::Sysctl { path, value: "1", .. } if path == IPV4_FORWARDING), "{e}");
            // nfnetlink wants CAP_NET_ADMIN even to read (unlike rtnetlink).
            let e = table_present("wg0").unwrap_err();
            assert_eq!(e.to_string(), "read back table inet bastion-wg0: Operation not permitted (os error 1)");
        });
    }

    #[test]
    fn kernel_forwarding_sysctls() {
        run(|netns| {
            // A new namespace starts with forwarding off.
            assert!(!forwarding_enabled(false));
            enable_forwarding(false).unwrap();
            assert!(forwarding_enabled(false));
            assert!(!forwarding_enabled(true));
            assert_eq!(netns.command_output("cat", &[IPV4_FORWARDING]).trim(), "1");
            assert_eq!(netns.command_output("cat", &[IPV6_FORWARDING]).trim(), "0");
            enable_forwarding(true).unwrap();
            assert!(forwarding_enabled(true));
            assert_eq!(netns.command_output("cat", &[IPV6_FORWARDING]).trim(), "1");
        });
    }

    /// A client and a server namespace on either side of this (router) namespace, IPv4 and
    /// IPv6. The server routes back to the client, so without our table the client's own
    /// address reaches it; with it, only the router's egress address should.
    struct Topology {
        client: NamedNetns,
        _server: NamedNetns,
        _http: [Spawned; 2],
        logs: [std::path::PathBuf; 2],
    }

    impl Topology {
        fn new(netns: &ScratchNetns) -> Topology {
            let client = NamedNetns::new("c");
            let server = NamedNetns::new("s");
            netns.command_ok(
                "ip",
                &["link", "add", "bnl-tun", "type", "veth", "peer", "name", "eth0", "netns", client.name()],
            );
            netns.command_ok(
                "ip",
                &["link", "add", "bnl-out", "type", "veth", "peer", "name", "eth0", "netns", server.name()],
            );
            for cmd in [
                "addr add 10.71.1.1/24 dev bnl-tun",
                "addr add 10.71.2.1/24 dev bnl-out",
                "addr add fd71:1::1/64 dev bnl-tun nodad",
                "addr add fd71:2::1/64 dev bnl-out nodad",
                "link set bnl-tun up",
                "link set bnl-out up",
                "route add 10.71.3.0/24 via 10.71.2.2",
                "route add fd71:3::/64 via fd71:2::2",
            ] {
                netns.command_ok("ip", &cmd.split(' ').collect::<Vec<_>>());
            }
            for cmd in [
                "addr add 10.71.1.2/24 dev eth0",
                "addr add 10.71.1.3/24 dev eth0",
                "addr add fd71:1::2/64 dev eth0 nodad",
                "addr add fd71:1::3/64 dev eth0 nodad",
                "link set eth0 up",
                "link set lo up",
                "route add default via 10.71.1.1",
                "route add default via fd71:1::1",
            ] {
                client.ip(cmd);
            }
            for cmd in [
                "addr add 10.71.2.2/24 dev eth0",
                "addr add 10.71.3.2/24 dev eth0",
                "addr add fd71:2::2/64 dev eth0 nodad",
                "addr add fd71:3::2/64 dev eth0 nodad",
                "link set eth0 up",
                "link set lo up",
                "route add default via 10.71.2.1",
                "route add default via fd71:2::1",
            ] {
                server.ip(cmd);
            }
            let logs = [4, 6].map(|v| std::env::temp_dir().join(format!("{}-http{v}.log", server.name())));
            // One server per family, so each log shows plain addresses of its family.
            let http = [("0.0.0.0", "8004", &logs[0]), ("::", "8006", &logs[1])].map(|(bind, port, log)| {
                server.spawn_logged(&["python3", "-u", "-m", "http.server", "--bind", bind, port], log)
            });
            let topology = Topology { client, _server: server, _http: http, logs };
            // Ready when both servers answer (from the client, through plain forwarding).
            for _ in 0..100 {
                if topology.fetch("10.71.2.2", "/ready", None) && topology.fetch("fd71:2::2", "/ready", None) {
                    return topology;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            panic!("http servers in the server namespace never answered");
        }

        /// One GET from the client; true when an HTTP answer came back.
        fn fetch(&self, host: &str, path: &str, source: Option<&str>) -> bool {
            let port = if host.contains(':') { "8006" } else { "8004" };
            let script = "import http.client,sys\n\
                          src=(sys.argv[4],0) if len(sys.argv)>4 else None\n\
                          c=http.client.HTTPConnection(sys.argv[1],int(sys.argv[2]),timeout=3,source_address=src)\n\
                          c.request('GET',sys.argv[3]); print(c.getresponse().status)\n";
            let mut args = vec!["python3", "-c", script, host, port, path];
            args.extend(source);
            self.client.run(&args).status.success()
        }

        /// Like `fetch`, for an answer that must come: up to three tries, so a busy machine
        /// (neighbour discovery, a slow interpreter start) is not taken for a dropped packet.
        fn reaches(&self, host: &str, path: &str, source: Option<&str>) -> bool {
            (0..3).any(|_| self.fetch(host, path, source))
        }

        /// The source address the server logged for `path`.
        fn source_seen(&self, path: &str) -> Option<String> {
            self.logs.iter().find_map(|log| {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                log.lines()
                    .find(|l| l.contains(&format!("\"GET {path} ")))
                    .and_then(|l| l.split_whitespace().next())
                    .map(str::to_string)
            })
        }
    }

    impl Drop for Topology {
        fn drop(&mut self) {
            for log in &self.logs {
                let _ = std::fs::remove_file(log);
            }
        }
    }

    #[test]
    fn kernel_end_to_end_masquerade_and_reach() {
        run(|netns| {
            enable_forwarding(true).unwrap();
            let t = Topology::new(netns);
            let plan = NatPlan {
                tunnel: "bnl-tun".into(),
                egress: "bnl-out".into(),
                masquerade: true,
                allow: vec![
                    Allow { source: None, destination: net("10.71.2.0/24") },
                    Allow { source: None, destination: net("fd71:2::/64") },
                    Allow { source: Some(net("10.71.1.3/32")), destination: net("10.71.3.0/24") },
                    Allow { source: Some(net("fd71:1::3/128")), destination: net("fd71:3::/64") },
                ],
            };
            // (family, client, the client peer with per-peer reach, router egress, server in
            // global reach, server outside the client's reach)
            let cases = [
                ("v4", "10.71.1.2", "10.71.1.3", "10.71.2.1", "10.71.2.2", "10.71.3.2"),
                ("v6", "fd71:1::2", "fd71:1::3", "fd71:2::1", "fd71:2::2", "fd71:3::2"),
            ];
            // Without our table: plain routing, the client's own address arrives.
            // (Sources are always chosen explicitly: with two addresses on one prefix, IPv6 source
            // selection would pick the newest.)
            for (v, client, _, _, _, outside) in cases {
                assert!(t.reaches(outside, &format!("/{v}/before"), Some(client)), "{v}: plain forwarding works");
                assert_eq!(t.source_seen(&format!("/{v}/before")).as_deref(), Some(client));
            }

            install(&plan).unwrap();
            for (v, client, peer, egress, inside, outside) in cases {
                // Global reach, masqueraded behind the router's egress address.
                assert!(t.reaches(inside, &format!("/{v}/masq"), Some(client)), "{v}: global reach");
                assert_eq!(t.source_seen(&format!("/{v}/masq")).as_deref(), Some(egress), "{v}: masquerade");
                // Outside this source's reach: dropped before it gets there.
                assert!(!t.fetch(outside, &format!("/{v}/denied"), Some(client)), "{v}: outside reach");
                assert_eq!(t.source_seen(&format!("/{v}/denied")), None);
                // The peer whose own reach includes it gets through.
                assert!(t.reaches(outside, &format!("/{v}/per-peer"), Some(peer)), "{v}: per-peer reach");
                assert_eq!(t.source_seen(&format!("/{v}/per-peer")).as_deref(), Some(egress));
            }

            remove("bnl-tun").unwrap();
            for (v, client, _, _, _, outside) in cases {
                assert!(t.reaches(outside, &format!("/{v}/after"), Some(client)), "{v}: forwarding as before");
                assert_eq!(t.source_seen(&format!("/{v}/after")).as_deref(), Some(client));
            }
        });
    }
}
