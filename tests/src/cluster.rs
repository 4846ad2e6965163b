//! Two bastions behind a simulated AWS Network Load Balancer, for the failover tests:
//!
//! ```text
//!                                      ┌─ pub0 198.51.100.11  bastion A  priv0 10.0.1.1 ─┐
//!  client0 ─┬─ internet ── lb ── br0 ──┤                                                   ├─ vpc ── host0 ...
//!  client1 ─┘   (bridge)  192.0.2.1     └─ pub0 198.51.100.12  bastion B  priv0 10.0.1.2 ─┘
//!                        (the VIP)  198.51.100.1
//! ```
//!
//! Bastion A is the topology's own bastion namespace (built without its internet link, see
//! [`Topology::without_public_link`]); bastion B is a second namespace with the same shape, its
//! own private address in the same subnet. Both run the same config (same key, peers, tunnel
//! address), as the bastions of one cluster do.
//!
//! The load balancer DNATs UDP 51820 of the VIP (`192.0.2.1`, the address the topology's
//! clients use as their endpoint) to one target and keeps the client's source address, as an
//! NLB with client IP preservation does. The bastions route the clients' range back through
//! it, and its conntrack turns their replies into replies from the VIP. Like an NLB, it keeps a
//! flow on the target it chose: [`Cluster::move_flows`] points the rule at another target and
//! deletes the tracked flows (`conntrack -D`), so the next packet of every flow is NATed anew,
//! to the new target; [`Cluster::point_to`] changes only where new flows go.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::http::{self, HttpResponse};
use crate::link;
use crate::netns::Netns;
use crate::nlb::{Nlb, NlbParams};
use crate::topology::{Topology, BASTION_PRIVATE_V4, BASTION_PUBLIC_V4, LISTEN_PORT, VPC_ROUTER_V4, VPC_ROUTER_V6};

/// The load balancer's listener address: the clients' endpoint.
pub const VIP: Ipv4Addr = BASTION_PUBLIC_V4;
/// The load balancer's address on the targets' segment (the bastions' route to the clients).
pub const LB_TARGET_SIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The clients' range, routed back through the load balancer by every bastion.
pub const CLIENT_NET: &str = "192.0.2.0/24";
/// Where each target's health responder listens (the `BastionSetup` default).
pub const HEALTH_PORT: u16 = 8080;

/// One bastion behind the load balancer.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Its address on the targets' segment: what the DNAT rule names.
    pub address: Ipv4Addr,
    /// Its address in the private subnet: the source the private hosts see (masquerade).
    pub private_v4: Ipv4Addr,
}

pub const TARGETS: [Target; 2] = [
    Target { address: Ipv4Addr::new(198, 51, 100, 11), private_v4: BASTION_PRIVATE_V4 },
    Target { address: Ipv4Addr::new(198, 51, 100, 12), private_v4: Ipv4Addr::new(10, 0, 1, 2) },
];

/// With ip targets: each bastion's target address, a secondary address of its link on the
/// targets' segment (on EC2 an interface's primary address cannot move to another; a secondary
/// one can, which is what an address takeover needs).
pub const IP_TARGETS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 51, 100, 21), Ipv4Addr::new(198, 51, 100, 22)];
/// With ip targets: the subnet's free addresses, which EC2 hands out when a bastion asks for a
/// fresh one (its own was taken over); each is also a target index of the load balancer
/// (`2 + i`), registered by the bastion that gets it.
pub const FREE_TARGETS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 51, 100, 31), Ipv4Addr::new(198, 51, 100, 32)];
/// The targets' segment, as the subnet IMDS names.
pub const TARGET_SUBNET: &str = "198.51.100.0/24";

pub struct Cluster {
    // Drop order: the load balancer and bastion B first, then the topology (bastion A, the
    // clients, the private hosts, the bridges and the scratch folder).
    pub lb: Netns,
    /// Bastion B's namespace (bastion A's is `topo.bastion`).
    pub standby: Netns,
    pub topo: Topology,
}

impl Cluster {
    /// Builds the topology without the bastion's internet link, bastion B beside bastion A, and
    /// the load balancer in front of both, pointing at A.
    pub fn build(clients: usize, private_hosts: usize) -> Cluster {
        assert!(
            crate::command::find_in_path("conntrack").is_some(),
            "`conntrack` is not installed: run `make test-deps` (Debian package conntrack)"
        );
        let topo = Topology::without_public_link(clients, private_hosts);
        let lb = Netns::new(&format!("{}-lb", topo.prefix));
        let standby = Netns::new(&format!("{}-bastionb", topo.prefix));

        // Bastion B: in the private subnet like A, default route to the VPC router.
        link::veth(&standby, "priv0", &topo.vpc, "p-bastionb");
        link::attach(&topo.vpc, "p-bastionb", "br0");
        link::add_address(&standby, "priv0", &format!("{}/24", TARGETS[1].private_v4));
        link::add_address(&standby, "priv0", "fd00:1::2/64");
        link::add_route(&standby, "default", Some(&VPC_ROUTER_V4.to_string()), "priv0");
        link::add_route(&standby, "default", Some(&VPC_ROUTER_V6.to_string()), "priv0");

        // The load balancer: the VIP on the internet, a segment of its own toward the targets.
        link::veth(&lb, "pub0", &topo.internet, "p-lb");
        link::attach(&topo.internet, "p-lb", "br0");
        link::add_address(&lb, "pub0", &format!("{VIP}/24"));
        link::bridge(&lb, "br0");
        link::add_address(&lb, "br0", &format!("{LB_TARGET_SIDE}/24"));
        for (i, bastion) in [&topo.bastion, &standby].into_iter().enumerate() {
            let port = format!("p-target{i}");
            link::veth(bastion, "pub0", &lb, &port);
            link::attach(&lb, &port, "br0");
            link::add_address(bastion, "pub0", &format!("{}/24", TARGETS[i].address));
            link::add_route(bastion, CLIENT_NET, Some(&LB_TARGET_SIDE.to_string()), "pub0");
        }
        lb.sysctl("net.ipv4.ip_forward", "1");
        let cluster = Cluster { lb, standby, topo };
        // A load balancer carries its clients' flows and the targets' replies, never a flow a
        // target starts: a bastion whose flow was moved away cannot reach the client from its
        // own address (a client would roam to it). Hence `ct state new` from the targets' side
        // is dropped, unless it stays on the targets' segment (the bridge's traffic passes these
        // hooks too: br_netfilter), where instances of a subnet reach one another.
        cluster.nft(&format!(
            "table ip nlb {{\n\
             \tchain listener {{\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tiifname \"br0\" ip daddr != {TARGET_SUBNET} ct state new drop\n\
             \t}}\n\
             }}\n\
             {}",
            listener_rule(TARGETS[0])
        ));
        cluster
    }

    /// Starts the NLB model ([`Nlb`]) on the load balancer: from here on it decides where flows
    /// go (don't mix with [`Cluster::point_to`] and [`Cluster::move_flows`]). Target i is in
    /// zone `zones[i]`.
    pub fn start_nlb(&self, params: NlbParams, zones: &[usize]) -> Nlb {
        let addresses: Vec<Ipv4Addr> = TARGETS.iter().map(|t| t.address).collect();
        self.start_nlb_at(&addresses, params, zones)
    }

    /// The same with the targets at `addresses` (e.g. [`IP_TARGETS`]).
    pub fn start_nlb_at(&self, addresses: &[Ipv4Addr], params: NlbParams, zones: &[usize]) -> Nlb {
        Nlb::start(&self.lb, VIP, addresses, HEALTH_PORT, zones, params)
    }

    /// Bastion `i`'s namespace: 0 is A (the topology's), 1 is B.
    pub fn bastion_ns(&self, i: usize) -> &Netns {
        match i {
            0 => &self.topo.bastion,
            1 => &self.standby,
            _ => panic!("the cluster has two bastions, not {}", i + 1),
        }
    }

    /// Sends new flows to target `i`; flows the load balancer already tracks stay where they are.
    pub fn point_to(&self, i: usize) {
        self.nft(&format!("flush chain ip nlb listener\n{}", listener_rule(TARGETS[i])));
    }

    /// Moves every flow to target `i`, as an NLB does once a target failed its health checks:
    /// the rule first (so no packet in between is sent to the old target again), then the
    /// tracked flows, so each flow's next packet is NATed anew.
    pub fn move_flows(&self, i: usize) {
        self.point_to(i);
        let out = self.lb.exec(&[
            "conntrack",
            "-D",
            "-p",
            "udp",
            "--orig-dst",
            &VIP.to_string(),
            "--dport",
            &LISTEN_PORT.to_string(),
        ]);
        // conntrack exits 1 when no flow matched, which is not a failure here.
        let nothing_matched = out.code == Some(1) && out.stderr.contains("0 flow entries");
        assert!(out.success() || nothing_matched, "flushing the load balancer's flows: {out}");
    }

    /// Drops, in the load balancer, the handshake initiations bastions send toward clients (UDP
    /// from port 51820 whose first payload byte is 1): a cluster whose bastions cannot start
    /// the handshake, so the client has to.
    pub fn drop_initiations_from_targets(&self) {
        self.nft(&format!(
            "add rule ip nlb forward iifname \"br0\" udp sport {LISTEN_PORT} @th,64,8 1 \
             counter drop comment \"initiations from bastions\"\n"
        ));
    }

    /// How many packets the rule of [`Cluster::drop_initiations_from_targets`] dropped.
    pub fn dropped_initiations(&self) -> u64 {
        let chain = self.lb.run(&["nft", "list", "chain", "ip", "nlb", "forward"]);
        chain
            .lines()
            .find(|l| l.contains("initiations from bastions"))
            .and_then(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "packets")?;
                words.next()?.parse().ok()
            })
            .unwrap_or_else(|| panic!("no initiation counter in the load balancer:\n{chain}"))
    }

    /// One health check of target `i`, from the load balancer as an NLB makes it.
    pub fn health(&self, i: usize) -> Result<HttpResponse, String> {
        http::get(&self.lb, SocketAddr::new(IpAddr::V4(TARGETS[i].address), HEALTH_PORT), "/", Duration::from_secs(1))
    }

    /// What the load balancer knows, for failure messages: its rules and its tracked flows.
    pub fn report(&self) -> String {
        let rules = self.lb.exec(&["nft", "list", "table", "ip", "nlb"]);
        let flows = self.lb.exec(&["conntrack", "-L", "-p", "udp"]);
        format!(
            "--- load balancer rules ---\n{}\n--- load balancer flows ---\n{}{}",
            rules.stdout.trim_end(),
            flows.stdout,
            flows.stderr
        )
    }

    fn nft(&self, script: &str) {
        let out = self.lb.exec_with_input(&["nft", "-f", "-"], script.as_bytes());
        assert!(out.success(), "nft in the load balancer: {out}\nscript:\n{script}");
    }
}

fn listener_rule(target: Target) -> String {
    format!("add rule ip nlb listener ip daddr {VIP} udp dport {LISTEN_PORT} dnat to {}\n", target.address)
}
