//! From the config to what the components are built from: the data plane's peers (the
//! configured ones plus the self-test's internal peer) and the NAT table's rules.

use crate::config::{Config, Egress};
use crate::keys::{PrivateKey, PublicKey};
use crate::nat::{Allow, NatPlan};
use crate::netlink::route;
use crate::tunnel::{PeerSpec, TunnelSpec};
use ip_network::IpNetwork;
use std::net::IpAddr;

/// The name the self-test's peer has in logs.
pub const SELFTEST_PEER: &str = "selftest";

pub fn tunnel_spec(config: &Config, private_key: &PrivateKey, workers: usize, selftest_key: PublicKey) -> TunnelSpec {
    let mut peers: Vec<PeerSpec> = config
        .peers
        .iter()
        .map(|p| PeerSpec {
            name: p.name.clone(),
            public_key: p.public_key,
            preshared_key: p.preshared_key.as_ref().map(|k| k.bytes()),
            allowed_ips: p.allowed_ips.clone(),
            endpoint: p.endpoint,
            persistent_keepalive: p.persistent_keepalive,
            loopback_only: false,
        })
        .collect();
    peers.push(PeerSpec {
        name: SELFTEST_PEER.into(),
        public_key: selftest_key,
        preshared_key: None,
        allowed_ips: vec![host_network(config.selftest.address)],
        endpoint: None,
        persistent_keepalive: None,
        loopback_only: true,
    });
    TunnelSpec {
        name: config.interface.name.clone(),
        private_key: private_key.clone(),
        listen_port: config.interface.listen_port,
        mtu: config.interface.mtu,
        addresses: config.interface.addresses.clone(),
        peers,
        workers,
    }
}

/// The table for this config: global reach for every tunnel source, per-peer reach for the
/// peer's own allowed IPs (same IP version only), and the self-test's probes.
pub fn nat_plan(config: &Config) -> Result<NatPlan, super::StartError> {
    let no_egress = |why: String| super::StartError::NoEgress { why };
    let egress = match &config.nat.egress {
        Egress::Interface(name) => name.clone(),
        Egress::Auto => route::default_route_interface()
            .map_err(|e| no_egress(format!("cannot read the routing table: {e}")))?
            .ok_or_else(|| {
                no_egress(
                    "there is no IPv4 default route to take the interface from; set [nat] egress to an interface name"
                        .to_string(),
                )
            })?,
    };
    let mut allow: Vec<Allow> = config.nat.reach.iter().map(|d| Allow { source: None, destination: *d }).collect();
    for peer in &config.peers {
        for destination in &peer.reach {
            for source in &peer.allowed_ips {
                if same_family(source, destination) {
                    allow.push(Allow { source: Some(*source), destination: *destination });
                }
            }
        }
    }
    let selftest = host_network(config.selftest.address);
    for probe in &config.selftest.probes {
        let destination = host_network(probe.ip());
        if same_family(&selftest, &destination) {
            allow.push(Allow { source: Some(selftest), destination });
        }
    }
    Ok(NatPlan { tunnel: config.interface.name.clone(), egress, masquerade: config.nat.masquerade, allow })
}

fn same_family(a: &IpNetwork, b: &IpNetwork) -> bool {
    matches!((a, b), (IpNetwork::V4(_), IpNetwork::V4(_)) | (IpNetwork::V6(_), IpNetwork::V6(_)))
}

fn host_network(address: IpAddr) -> IpNetwork {
    let bits = if address.is_ipv4() { 32 } else { 128 };
    IpNetwork::new(address, bits).unwrap_or_else(|_| unreachable!("a full-length prefix is valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(text, "test.toml", None).unwrap_or_else(|e| panic!("{e}"))
    }

    const BASE: &str = r#"
[interface]
private_key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
address = ["10.100.0.1/24", "fd00:100::1/64"]
[[peer]]
name = "alice"
public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
allowed_ips = ["10.100.0.2/32", "fd00:100::2/128"]
reach = ["10.0.2.0/24", "fd00:2::/64"]
[nat]
egress = "eth0"
reach = ["10.0.1.0/24"]
[selftest]
probes = ["10.0.1.5:443"]
"#;

    #[test]
    fn reach_becomes_allow_rules_per_family() {
        let plan = nat_plan(&config(BASE)).unwrap();
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        assert_eq!(plan.egress, "eth0");
        assert_eq!(
            plan.allow,
            vec![
                Allow { source: None, destination: net("10.0.1.0/24") },
                Allow { source: Some(net("10.100.0.2/32")), destination: net("10.0.2.0/24") },
                Allow { source: Some(net("fd00:100::2/128")), destination: net("fd00:2::/64") },
                Allow { source: Some(net("10.100.0.254/32")), destination: net("10.0.1.5/32") },
            ]
        );
    }

    #[test]
    fn the_selftest_peer_is_loopback_only_and_owns_only_its_address() {
        let key = crate::keys::PrivateKey::generate().public_key();
        let c = config(BASE);
        let spec = tunnel_spec(&c, c.interface.private_key().unwrap(), 2, key);
        let internal = spec.peers.last().unwrap();
        assert_eq!(internal.name, SELFTEST_PEER);
        assert!(internal.loopback_only);
        assert_eq!(internal.allowed_ips, vec!["10.100.0.254/32".parse::<IpNetwork>().unwrap()]);
        assert!(spec.peers[..spec.peers.len() - 1].iter().all(|p| !p.loopback_only));
    }
}
