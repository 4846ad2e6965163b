//! A test bed per implementation: its own topology (four wireguard-go clients, one private host
//! running iperf3 servers), the bastion under test in the bastion namespace, and the clients'
//! tunnels up. All beds live for the whole run, so runs of different implementations can
//! alternate every few seconds; an idle bed costs next to nothing.

use std::path::PathBuf;
use std::time::Duration;

use bastion_tests::baseline::{BoringtunBastion, WireguardGoBastion};
use bastion_tests::bastion::{Bastion, BastionSetup};
use bastion_tests::{Process, Topology, WgInterface};

use crate::iperf;

/// Clients per topology: the most any scenario uses.
pub const CLIENTS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Implementation {
    /// `bastion run`, the release build under test.
    Bastion,
    WireguardGo,
    /// A newer wireguard-go (Debian trixie's 0.0.20231211: batched UDP, TUN and UDP offloads),
    /// fetched by `make bench` into `target/bench-tools/`.
    WireguardGoNew,
    Boringtun,
    /// The aarch64 build of the bastion's data plane alone (`data-plane`: `bastion run`'s TUN,
    /// sockets and workers, no NAT) under QEMU user mode: the emulated ceiling only.
    DataPlaneAarch64,
}

impl Implementation {
    pub fn label(self) -> &'static str {
        match self {
            Implementation::Bastion => "bastion",
            Implementation::WireguardGo => "wireguard-go",
            Implementation::WireguardGoNew => "wireguard-go-2023",
            Implementation::Boringtun => "boringtun-cli",
            Implementation::DataPlaneAarch64 => "bastion data plane, aarch64 under QEMU (emulated)",
        }
    }
}

/// Where the binaries come from.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub bastion: PathBuf,
    pub boringtun: Option<PathBuf>,
    /// boringtun-cli's `--threads`.
    pub boringtun_threads: usize,
    /// The newer wireguard-go, when fetched.
    pub wireguard_go_new: Option<PathBuf>,
    /// The clients' wireguard-go (`None`: the one on PATH).
    pub client: Option<PathBuf>,
    /// Environment of `bastion run` (`--bastion-env`: e.g. an offload turned off).
    pub bastion_env: Vec<(String, String)>,
    /// The aarch64 build of the crypto floor and QEMU user mode, for the emulated figures
    /// (`make bench` provides them when it can).
    pub aarch64: Option<Aarch64>,
}

/// What runs aarch64 code here: QEMU user mode, the aarch64 build of `crypto-floor` and of
/// `data-plane` (`bastion run` itself cannot run under QEMU 7.2's user mode: it has no
/// NETLINK_NETFILTER sockets, so the nftables table cannot be installed; `data-plane` is its
/// packet path without NAT).
#[derive(Clone, Debug)]
pub struct Aarch64 {
    pub qemu: PathBuf,
    pub crypto_floor: PathBuf,
    pub data_plane: Option<PathBuf>,
}

/// A peer beside the topology's clients (the flood's, the generator's): its public key (base64)
/// and its one tunnel address.
pub struct ExtraPeer {
    pub name: String,
    pub public_key: String,
    pub address: std::net::Ipv4Addr,
}

/// `[[peer]]` tables for `extra`.
fn peers_toml(extra: &[ExtraPeer]) -> String {
    extra.iter().map(|p| bastion_tests::bastion::peer_toml(&p.name, &p.public_key, p.address)).collect()
}

/// The aarch64 `data-plane` under QEMU user mode in the bastion namespace, with `bastion run`'s
/// config for `topo` and `extra`; forwarding on (the service would turn it on). Ready once it
/// says its workers run (it has no health port).
fn start_emulated_data_plane(
    topo: &Topology,
    binaries: &Binaries,
    extra: &[ExtraPeer],
    mut prefix: Vec<String>,
) -> Result<Running, String> {
    let tools = binaries.aarch64.as_ref().ok_or("no QEMU user mode")?;
    let data_plane = tools.data_plane.as_ref().ok_or("no aarch64 build of data-plane")?;
    let out = topo.bastion.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    if !out.success() {
        return Err(format!("forwarding in the bastion namespace: {out}"));
    }
    prefix.push(tools.qemu.display().to_string());
    let setup = BastionSetup { extra_toml: peers_toml(extra), command_prefix: prefix, ..BastionSetup::default() };
    let b = Bastion::start(topo, data_plane, setup);
    b.process.wait_for_log("data-plane: wg0 up", Duration::from_secs(60))?;
    Ok(Running::Bastion(b))
}

// Few of these exist (one per bench bed): the size difference is no concern.
#[allow(clippy::large_enum_variant)]
pub enum Running {
    Bastion(Bastion),
    WireguardGo(WireguardGoBastion),
    Boringtun(BoringtunBastion),
}

impl Running {
    /// Starts `implementation` as the bastion of `topo`, admitting `extra` peers besides the
    /// topology's clients; `bastion run` gets `prefix` before its binary (e.g. `taskset`).
    pub fn start(
        implementation: Implementation,
        topo: &Topology,
        binaries: &Binaries,
        extra: &[ExtraPeer],
        prefix: Vec<String>,
    ) -> Result<Running, String> {
        let running = match implementation {
            Implementation::Bastion => {
                let setup = BastionSetup {
                    extra_toml: peers_toml(extra),
                    env: binaries.bastion_env.clone(),
                    command_prefix: prefix,
                    ..BastionSetup::default()
                };
                let b = Bastion::start(topo, &binaries.bastion, setup);
                b.wait_healthy(Duration::from_secs(30))?;
                return Ok(Running::Bastion(b));
            }
            Implementation::WireguardGo => Running::WireguardGo(WireguardGoBastion::start(topo)),
            Implementation::WireguardGoNew => {
                let binary = binaries.wireguard_go_new.as_ref().ok_or("no newer wireguard-go binary")?;
                Running::WireguardGo(WireguardGoBastion::start_binary(topo, binary))
            }
            Implementation::Boringtun => {
                let binary = binaries.boringtun.as_ref().ok_or("no boringtun-cli binary")?;
                Running::Boringtun(BoringtunBastion::start(topo, binary, binaries.boringtun_threads))
            }
            Implementation::DataPlaneAarch64 => return start_emulated_data_plane(topo, binaries, extra, prefix),
        };
        let wg = match &running {
            Running::WireguardGo(b) => &b.wg,
            Running::Boringtun(b) => &b.wg,
            Running::Bastion(_) => unreachable!("returned above"),
        };
        for p in extra {
            wg.wg_set(&["peer", &p.public_key, "allowed-ips", &format!("{}/32", p.address)]);
        }
        Ok(running)
    }

    /// The bastion process (all its threads).
    pub fn pid(&self) -> i32 {
        match self {
            Running::Bastion(b) => b.process.pid(),
            Running::WireguardGo(b) => b.wg.process().pid(),
            Running::Boringtun(b) => b.wg.process().pid(),
        }
    }
}

/// Field order is drop order: iperf3 servers and client tunnels, then the bastion (drained at
/// once), then the namespaces.
pub struct Bed {
    pub implementation: Implementation,
    servers: Vec<Process>,
    pub tunnels: Vec<WgInterface>,
    bastion: Running,
    pub topo: Topology,
}

impl Bed {
    /// Builds the topology and starts `implementation` in it; panics (guards cleaning up) when
    /// something does not come up.
    pub fn start(implementation: Implementation, binaries: &Binaries) -> Bed {
        let topo = Topology::with(CLIENTS, 1);
        let bastion =
            Running::start(implementation, &topo, binaries, &[], Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        let tunnels = (0..CLIENTS)
            .map(|i| topo.start_client_tunnel_with(i, topo.endpoint_v4(), binaries.client.as_deref()))
            .collect();
        let host = &topo.private_hosts[0];
        let servers = iperf::start_servers(&host.ns, topo.dir.path(), CLIENTS);
        let bed = Bed { implementation, servers, tunnels, bastion, topo };
        bed.warm_up(CLIENTS).unwrap_or_else(|e| panic!("{e}"));
        bed
    }

    /// The bastion process (all its threads).
    pub fn bastion_pid(&self) -> i32 {
        self.bastion.pid()
    }

    /// The first `clients` clients' wireguard-go processes.
    pub fn client_pids(&self, clients: usize) -> Vec<i32> {
        self.tunnels.iter().take(clients).map(|t| t.process().pid()).collect()
    }

    /// A ping from each of the first `clients` clients to the private host, so every session
    /// exists (and the iperf3 servers are listening) before a measurement starts.
    pub fn warm_up(&self, clients: usize) -> Result<(), String> {
        let host = self.topo.private_hosts[0].v4.to_string();
        for client in self.topo.clients.iter().take(clients) {
            client.ns.ping(&host, Duration::from_secs(15))?;
        }
        for server in &self.servers {
            server.check_running()?;
        }
        let ports: Vec<String> = (0..self.servers.len()).map(|i| format!(":{}", iperf::BASE_PORT + i as u16)).collect();
        let host_ns = &self.topo.private_hosts[0].ns;
        bastion_tests::wait_until("the iperf3 servers to listen", Duration::from_secs(10), || {
            let out = host_ns.exec(&["ss", "-Hltn"]);
            let listening = |port: &String| {
                out.stdout.lines().any(|l| l.split_whitespace().nth(3).is_some_and(|a| a.ends_with(port.as_str())))
            };
            if ports.iter().all(listening) {
                Ok(())
            } else {
                Err(out.to_string())
            }
        })?;
        self.check_running()
    }

    /// The bastion's TUN interface name.
    fn tunnel_name(&self) -> String {
        match &self.bastion {
            Running::Bastion(b) => b.setup.interface_name.clone(),
            Running::WireguardGo(b) => b.wg.name().to_string(),
            Running::Boringtun(b) => b.wg.name().to_string(),
        }
    }

    /// Where packets were dropped so far, on the bastion's side and on the first `clients`
    /// clients' (see [`Drops`]).
    pub fn drops(&self, clients: usize) -> Drops {
        let bastion = &self.topo.bastion;
        let mut drops = Drops {
            bastion_udp_rcvbuf: udp_rcvbuf_errors(bastion),
            bastion_tun_tx_dropped: link_stats(bastion, &self.tunnel_name()).tx_dropped,
            host_udp_rcvbuf: udp_rcvbuf_errors(&self.topo.private_hosts[0].ns),
            ..Drops::default()
        };
        for (client, tunnel) in self.topo.clients.iter().zip(&self.tunnels).take(clients) {
            drops.clients_udp_rcvbuf += udp_rcvbuf_errors(&client.ns);
            drops.clients_tun_tx_dropped += link_stats(&client.ns, tunnel.name()).tx_dropped;
        }
        drops
    }

    /// The length of the kernel's queue in front of the bastion's TUN (packets).
    pub fn tun_txqueuelen(&self) -> u64 {
        link_stats(&self.topo.bastion, &self.tunnel_name()).txqlen
    }

    /// Sets that queue's length (an experiment: `--tun-txqueuelen`).
    pub fn set_tun_txqueuelen(&self, packets: u32) {
        self.topo.bastion.run(&["ip", "link", "set", "dev", &self.tunnel_name(), "txqueuelen", &packets.to_string()]);
    }

    pub fn check_running(&self) -> Result<(), String> {
        match &self.bastion {
            Running::Bastion(b) => b.process.check_running(),
            Running::WireguardGo(b) => b.wg.process().check_running(),
            Running::Boringtun(b) => b.wg.process().check_running(),
        }
    }
}

/// Packets dropped so far, where a full queue dropped them: UDP receive buffers (the reader of
/// a WireGuard socket, or the iperf3 receiver, was too slow) and the kernel's queue in front of a
/// TUN (the userspace WireGuard did not read its TUN fast enough). Subtract two samples to get a
/// window's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Drops {
    pub bastion_udp_rcvbuf: u64,
    pub bastion_tun_tx_dropped: u64,
    pub clients_udp_rcvbuf: u64,
    pub clients_tun_tx_dropped: u64,
    pub host_udp_rcvbuf: u64,
}

impl Drops {
    pub fn since(self, before: Drops) -> Drops {
        Drops {
            bastion_udp_rcvbuf: self.bastion_udp_rcvbuf.saturating_sub(before.bastion_udp_rcvbuf),
            bastion_tun_tx_dropped: self.bastion_tun_tx_dropped.saturating_sub(before.bastion_tun_tx_dropped),
            clients_udp_rcvbuf: self.clients_udp_rcvbuf.saturating_sub(before.clients_udp_rcvbuf),
            clients_tun_tx_dropped: self.clients_tun_tx_dropped.saturating_sub(before.clients_tun_tx_dropped),
            host_udp_rcvbuf: self.host_udp_rcvbuf.saturating_sub(before.host_udp_rcvbuf),
        }
    }
}

#[derive(Default)]
struct LinkStats {
    tx_dropped: u64,
    txqlen: u64,
}

/// `ip -s -j link show dev NAME` in `ns` (zeros when unreadable).
fn link_stats(ns: &bastion_tests::Netns, name: &str) -> LinkStats {
    let out = ns.exec(&["ip", "-s", "-j", "link", "show", "dev", name]);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&out.stdout) else {
        return LinkStats::default();
    };
    let link = &v[0];
    LinkStats {
        tx_dropped: link["stats64"]["tx"]["dropped"].as_u64().unwrap_or(0),
        txqlen: link["txqlen"].as_u64().unwrap_or(0),
    }
}

/// `Udp: ... RcvbufErrors` of a namespace's `/proc/net/snmp` (0 when unreadable).
fn udp_rcvbuf_errors(ns: &bastion_tests::Netns) -> u64 {
    let snmp = ns.exec(&["cat", "/proc/net/snmp"]).stdout;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}
