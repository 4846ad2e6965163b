//! The reference bastion: wireguard-go in the bastion namespace with forwarding on and an
//! `nft` masquerade, i.e. what an operator runs today by hand. It validates the harness (a
//! page fetched through it proves the topology and the client side) and is the baseline the
//! benchmarks compare `bastion run` against.

use crate::topology::{Topology, BASTION_TUNNEL_V4, BASTION_TUNNEL_V6, LISTEN_PORT};
use crate::unique_name;
use crate::wireguard::{WgConf, WgInterface, WgPeer};

pub struct WireguardGoBastion {
    pub wg: WgInterface,
}

impl WireguardGoBastion {
    /// Configures the bastion namespace of `topo` as a wireguard-go bastion that admits every
    /// client of the topology and masquerades tunnel traffic leaving through `priv0`.
    pub fn start(topo: &Topology) -> WireguardGoBastion {
        let ns = &topo.bastion;
        let wg = WgInterface::start(ns, &unique_name("bwg"), &topo.dir);
        wg.set_conf(&WgConf {
            private_key: topo.bastion_keys.private.clone(),
            listen_port: Some(LISTEN_PORT),
            peers: topo
                .clients
                .iter()
                .map(|c| WgPeer {
                    public_key: c.keys.public.clone(),
                    allowed_ips: vec![
                        format!("{}/32", c.tunnel_v4),
                        format!("{}/128", c.tunnel_v6),
                    ],
                    ..WgPeer::default()
                })
                .collect(),
        });
        wg.add_address(&format!("{BASTION_TUNNEL_V4}/24"));
        wg.add_address(&format!("{BASTION_TUNNEL_V6}/64"));
        wg.up();
        ns.sysctl("net.ipv4.ip_forward", "1");
        ns.sysctl("net.ipv6.conf.all.forwarding", "1");
        let rules = format!(
            "table inet baseline {{\n\
             \tchain post {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tiifname \"{wg}\" oifname \"priv0\" masquerade\n\
             \t}}\n\
             }}\n",
            wg = wg.name()
        );
        let out = ns.exec_with_input(&["nft", "-f", "-"], rules.as_bytes());
        assert!(out.success(), "{out}\nrules:\n{rules}");
        WireguardGoBastion { wg }
    }
}
