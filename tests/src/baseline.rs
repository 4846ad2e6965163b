//! The reference bastions: another userspace WireGuard in the bastion namespace with forwarding
//! on and an `nft` masquerade, i.e. what an operator runs today by hand. wireguard-go validates
//! the harness (a page fetched through it proves the topology and the client side); wireguard-go
//! and boringtun-cli (boringtun's own device module, an independent implementation of the same
//! crate we build on) are the baselines the benchmark compares `bastion run` against.

use std::path::Path;

use crate::topology::{Topology, BASTION_TUNNEL_V4, BASTION_TUNNEL_V6, LISTEN_PORT};
use crate::unique_name;
use crate::wireguard::{WgConf, WgInterface, WgPeer};

/// The MTU wireguard-go and `bastion run` choose by default; boringtun-cli leaves the TUN at
/// 1500, so it is set explicitly to compare like with like.
pub const TUNNEL_MTU: u16 = 1420;

pub struct WireguardGoBastion {
    pub wg: WgInterface,
}

impl WireguardGoBastion {
    /// Configures the bastion namespace of `topo` as a wireguard-go bastion that admits every
    /// client of the topology and masquerades tunnel traffic leaving through `priv0`.
    pub fn start(topo: &Topology) -> WireguardGoBastion {
        WireguardGoBastion::start_in(topo, &topo.bastion)
    }

    /// The same in another namespace shaped like the bastion's (a cluster's second bastion).
    pub fn start_in(topo: &Topology, ns: &crate::Netns) -> WireguardGoBastion {
        let wg = WgInterface::start(ns, &unique_name("bwg"), &topo.dir);
        configure_bastion(topo, ns, &wg);
        WireguardGoBastion { wg }
    }

    /// Like [`WireguardGoBastion::start`], with the wireguard-go at `binary` (another version).
    pub fn start_binary(topo: &Topology, binary: &Path) -> WireguardGoBastion {
        let wg = WgInterface::start_wireguard_go(&topo.bastion, &unique_name("bwg"), &topo.dir, binary);
        configure_bastion(topo, &topo.bastion, &wg);
        WireguardGoBastion { wg }
    }
}

/// `boringtun-cli` as the bastion: boringtun's own device loop (not ours), configured with `wg`
/// over the same control socket, with the same forwarding and masquerade as wireguard-go's.
pub struct BoringtunBastion {
    pub wg: WgInterface,
}

impl BoringtunBastion {
    /// Starts `BINARY -f --disable-drop-privileges --threads THREADS NAME` in the bastion
    /// namespace of `topo` and configures it like [`WireguardGoBastion::start`].
    pub fn start(topo: &Topology, binary: &Path, threads: usize) -> BoringtunBastion {
        let name = unique_name("bbt");
        let log = topo.dir.path().join(format!("boringtun-{name}.out"));
        let threads = threads.to_string();
        let wg = WgInterface::start_program(
            &topo.bastion,
            &name,
            &topo.dir,
            "boringtun-cli",
            &[
                binary.to_str().expect("boringtun-cli path is UTF-8"),
                "-f",
                "--disable-drop-privileges",
                "--threads",
                &threads,
                "--log",
                log.to_str().expect("run folder path is UTF-8"),
                &name,
            ],
            &[],
        );
        wg.set_mtu(TUNNEL_MTU);
        configure_bastion(topo, &topo.bastion, &wg);
        BoringtunBastion { wg }
    }
}

/// Keys and peers (one per client), tunnel addresses, forwarding, and the masquerade toward the
/// VPC subnet: the by-hand bastion setup.
fn configure_bastion(topo: &Topology, ns: &crate::Netns, wg: &WgInterface) {
    wg.set_conf(&WgConf {
        private_key: topo.bastion_keys.private.clone(),
        listen_port: Some(LISTEN_PORT),
        peers: topo
            .clients
            .iter()
            .map(|c| WgPeer {
                public_key: c.keys.public.clone(),
                allowed_ips: vec![format!("{}/32", c.tunnel_v4), format!("{}/128", c.tunnel_v6)],
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
}
