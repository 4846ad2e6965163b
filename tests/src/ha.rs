//! The high-availability test bed: two bastions (ours or wireguard-go) behind the NLB model
//! ([`crate::nlb`]), one wireguard-go client talking to the load balancer's address, optionally
//! with `bastion watch` beside it. Shared by the failover tests, `make bench-failover` and
//! `make ha-demo`.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::baseline::WireguardGoBastion;
use crate::bastion::{Bastion, BastionSetup};
use crate::cluster::{Cluster, FREE_TARGETS, HEALTH_PORT, IP_TARGETS, TARGET_SUBNET};
use crate::imds::{ImdsEmulator, ImdsMode};
use crate::nlb::{ApiSetup, NetworkInterface, Nlb, NlbParams};
use crate::process::Process;
use crate::{HttpServer, WgInterface};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BastionKind {
    /// `bastion run` (this binary).
    Ours(PathBuf),
    /// wireguard-go with forwarding and a masquerade, as operators run it by hand; its health
    /// check is a web server in the same namespace that dies with it.
    WireguardGo,
}

impl BastionKind {
    pub fn name(&self) -> &'static str {
        match self {
            BastionKind::Ours(_) => "ours",
            BastionKind::WireguardGo => "wireguard-go",
        }
    }
}

#[derive(Clone, Debug)]
pub struct HaOptions {
    pub bastions: BastionKind,
    pub nlb: NlbParams,
    /// Run `bastion watch` (this binary) next to the client.
    pub watch: Option<PathBuf>,
    /// The client's `PersistentKeepalive` (seconds).
    pub keepalive: Option<u16>,
    /// `[health] drain_seconds` of our bastions.
    pub drain_seconds: u32,
    /// Give each of our bastions an IMDS emulator (in its namespace, on loopback) serving the
    /// Auto Scaling lifecycle state ([`HaBed::set_lifecycle`]), and let it poll it.
    pub imds_lifecycle: bool,
    /// Our bastions act on dead siblings (`[siblings]`): the load balancer answers the AWS
    /// calls ([`crate::nlb::api`]) and each bastion's IMDS says which target it is.
    pub siblings: bool,
    /// With `siblings`: ip targets (each bastion's secondary address, [`IP_TARGETS`], which EC2
    /// assigned and the bastion configures and registers itself: `register_self`) and
    /// `[siblings] take_over_addresses`; the API emulator answers EC2's address calls too.
    pub take_over: bool,
    /// With `take_over`: IMDS puts each bastion in a subnet of its own (two /31s around their
    /// target addresses), so nobody takes a dead sibling's address over.
    pub subnets_apart: bool,
}

impl HaOptions {
    /// Our bastions (`bastion run`), no watch, no keepalive, drain 3 s, nothing from IMDS.
    pub fn ours(binary: &Path, nlb: NlbParams) -> HaOptions {
        HaOptions {
            bastions: BastionKind::Ours(binary.to_path_buf()),
            nlb,
            watch: None,
            keepalive: None,
            drain_seconds: 3,
            imds_lifecycle: false,
            siblings: false,
            take_over: false,
            subnets_apart: false,
        }
    }
}

/// The target group the API emulator answers for.
pub const TARGET_GROUP_ARN: &str =
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/bastion/0123456789abcdef";
/// Where the load balancer answers the bastions' AWS calls (its address on their segment).
pub const API_PORT: u16 = 4566;

/// Target i's instance id (the id it is registered with).
pub fn instance_id(i: usize) -> String {
    format!("i-{:017x}", 0xba5_7100 + i)
}

/// Target i's network interface id (the one IMDS and the EC2 emulator name).
pub fn interface_id(i: usize) -> String {
    format!("eni-{:017x}", 0xe11_0000 + i)
}

/// The file bastion i's IMDS serves `local-ipv4s` from (the EC2 emulator writes it).
fn local_ipv4s_file(cluster: &Cluster, i: usize) -> PathBuf {
    cluster.topo.dir.path().join(format!("local-ipv4s-{i}"))
}

/// The subnets IMDS names with [`HaOptions::subnets_apart`]: each holds one of [`IP_TARGETS`].
const SUBNETS_APART: [&str; 2] = ["198.51.100.20/31", "198.51.100.22/31"];

/// Where a bastion's IMDS emulator listens, inside the bastion's own namespace.
const LIFECYCLE_IMDS: ([u8; 4], u16) = ([127, 0, 0, 1], 8181);

/// Bastion `i`'s IMDS emulator (in its namespace) for instance `instance`: the lifecycle state
/// from a file ([`HaBed::set_lifecycle`]) and, with ip targets, its interface, whose
/// `local-ipv4s` the EC2 emulator keeps.
fn start_imds(cluster: &Cluster, options: &HaOptions, macs: &[String], i: usize, instance: &str) -> ImdsEmulator {
    let file = cluster.topo.dir.path().join(format!("lifecycle-{i}"));
    let address = crate::cluster::TARGETS[i].address.to_string();
    let mut args: Vec<String> =
        ["--lifecycle-file", file.to_str().expect("UTF-8 path"), "--instance-id", instance, "--local-ipv4", &address]
            .map(String::from)
            .to_vec();
    args.extend(["--role", "bastion"].map(String::from));
    if options.take_over {
        let addresses = local_ipv4s_file(cluster, i);
        let interface = [
            "--mac",
            &macs[i],
            "--interface-id",
            &interface_id(i),
            "--subnet-cidr",
            if options.subnets_apart { SUBNETS_APART[i] } else { TARGET_SUBNET },
            "--local-ipv4s-file",
            addresses.to_str().expect("UTF-8 path"),
        ];
        args.extend(interface.map(String::from));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ImdsEmulator::start_with(
        cluster.bastion_ns(i),
        SocketAddr::from(LIFECYCLE_IMDS),
        None,
        ImdsMode::Normal,
        &cluster.topo.dir,
        &args,
    )
}

pub enum HaBastion {
    Ours(Bastion),
    WireguardGo { health: HttpServer, wg: WireguardGoBastion },
}

/// Field order is drop order: the watcher and the client first, the cluster last.
pub struct HaBed {
    pub watch: Option<Process>,
    pub imds: Vec<ImdsEmulator>,
    pub tunnel: WgInterface,
    pub nlb: Nlb,
    pub bastions: Vec<HaBastion>,
    pub cluster: Cluster,
    options: HaOptions,
    /// Each bastion's hardware address on the targets' segment (ip targets only).
    macs: Vec<String>,
    /// The instance in each slot now (replacements change it).
    pub instances: Vec<String>,
    /// How many instances were replaced.
    replaced: usize,
}

/// Auto Scaling's replacement of an instance a survivor marked unhealthy
/// ([`HaBed::replace_marked`]).
#[derive(Clone, Debug)]
pub struct Replacement {
    pub slot: usize,
    /// When a bastion marked the old instance unhealthy (SetInstanceHealth).
    pub marked: Instant,
    /// When the new instance was launched.
    pub launched: Instant,
    pub instance: String,
    /// With ip targets: the address it came with (the target it registers).
    pub address: Option<std::net::Ipv4Addr>,
}

impl HaBed {
    /// Builds the cluster (one client, one private host), starts both bastions, the load
    /// balancer, and waits until it finds both healthy; then the client tunnel (and watch).
    pub fn start(options: &HaOptions) -> HaBed {
        assert!(options.siblings || !options.take_over, "take_over needs siblings");
        let cluster = Cluster::build(1, 1);
        // Only EC2's emulator needs them (ip targets).
        let macs: Vec<String> = if options.take_over {
            (0..2).map(|i| crate::link::mac(cluster.bastion_ns(i), "pub0")).collect()
        } else {
            Vec::new()
        };
        if options.take_over {
            // EC2 assigned each a secondary address at launch; the EC2 emulator rewrites the
            // file whenever an address moves.
            for (i, address) in IP_TARGETS.iter().enumerate() {
                let primary = crate::cluster::TARGETS[i].address;
                std::fs::write(local_ipv4s_file(&cluster, i), format!("{primary}\n{address}")).unwrap();
            }
        }
        let imds: Vec<ImdsEmulator> = if options.imds_lifecycle || options.siblings {
            (0..2).map(|i| start_imds(&cluster, options, &macs, i, &instance_id(i))).collect()
        } else {
            Vec::new()
        };
        let bastions: Vec<HaBastion> = (0..2)
            .map(|i| {
                let ns = cluster.bastion_ns(i);
                match &options.bastions {
                    BastionKind::Ours(binary) => {
                        let mut env = Vec::new();
                        if options.imds_lifecycle || options.siblings {
                            env.push((
                                "AWS_EC2_METADATA_SERVICE_ENDPOINT".to_string(),
                                format!("http://{}", SocketAddr::from(LIFECYCLE_IMDS)),
                            ));
                        }
                        if options.imds_lifecycle {
                            env.push((crate::bastion::LIFECYCLE_VAR.to_string(), "1".to_string()));
                        }
                        let extra_toml = if options.siblings {
                            format!(
                                "[aws]\nendpoint_url = \"http://{api}:{API_PORT}\"\n\n\
                                 [siblings]\ntarget_group_arn = \"{TARGET_GROUP_ARN}\"\n\
                                 take_over_addresses = {ip}\nregister_self = {ip}\n",
                                api = crate::cluster::LB_TARGET_SIDE,
                                ip = options.take_over,
                            )
                        } else {
                            String::new()
                        };
                        let setup = BastionSetup {
                            drain_seconds: options.drain_seconds,
                            env,
                            extra_toml,
                            ..BastionSetup::default()
                        };
                        let b = Bastion::start_in(&cluster.topo, ns, binary, setup);
                        b.wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("bastion {i}: {e}"));
                        HaBastion::Ours(b)
                    }
                    BastionKind::WireguardGo => {
                        let wg = WireguardGoBastion::start_in(&cluster.topo, ns);
                        let health = HttpServer::start(ns, &cluster.topo.dir, &format!("health{i}"), HEALTH_PORT);
                        HaBastion::WireguardGo { health, wg }
                    }
                }
            })
            .collect();
        let mut nlb = if options.take_over {
            // The subnet's free addresses are targets too, registered once a bastion gets one.
            let addresses: Vec<std::net::Ipv4Addr> = IP_TARGETS.iter().chain(&FREE_TARGETS).copied().collect();
            let nlb = cluster.start_nlb_at(&addresses, options.nlb, &[0, 1, 0, 1]);
            for free in 0..FREE_TARGETS.len() {
                nlb.never_registered(IP_TARGETS.len() + free);
            }
            nlb
        } else {
            cluster.start_nlb(options.nlb, &[0, 1])
        };
        if options.siblings {
            let (ids, interfaces) = if options.take_over {
                let interfaces = (0..2)
                    .map(|i| NetworkInterface {
                        id: interface_id(i),
                        mac: macs[i].clone(),
                        primary: crate::cluster::TARGETS[i].address,
                        secondary: vec![IP_TARGETS[i]],
                        imds_file: Some(local_ipv4s_file(&cluster, i)),
                        instance: instance_id(i),
                    })
                    .collect();
                (IP_TARGETS.iter().chain(&FREE_TARGETS).map(|a| a.to_string()).collect(), interfaces)
            } else {
                ((0..2).map(instance_id).collect(), Vec::new())
            };
            nlb.serve_api(
                SocketAddr::from((crate::cluster::LB_TARGET_SIDE, API_PORT)),
                ApiSetup {
                    target_group_arn: TARGET_GROUP_ARN.into(),
                    ids,
                    port: crate::topology::LISTEN_PORT,
                    interfaces,
                    free: if options.take_over { FREE_TARGETS.to_vec() } else { Vec::new() },
                    primaries: (0..2).map(|i| crate::cluster::TARGETS[i].address).collect(),
                },
            );
        }
        let p = options.nlb;
        let healthy_within = p.interval * (p.healthy_threshold + 3);
        for i in 0..2 {
            nlb.wait_healthy(i, healthy_within).unwrap_or_else(|e| panic!("{e}"));
        }
        let tunnel = cluster.topo.start_client_tunnel(0, cluster.topo.endpoint_v4());
        if let Some(seconds) = options.keepalive {
            let key = cluster.topo.bastion_keys.public.clone();
            tunnel.wg_set(&["peer", &key, "persistent-keepalive", &seconds.to_string()]);
        }
        let watch = options.watch.as_ref().map(|binary| start_watch(&cluster, &tunnel, binary, &[]));
        HaBed {
            watch,
            imds,
            tunnel,
            nlb,
            bastions,
            cluster,
            options: options.clone(),
            macs,
            instances: (0..2).map(instance_id).collect(),
            replaced: 0,
        }
    }

    /// What bastion `i`'s IMDS says as `autoscaling/target-lifecycle-state` from now on.
    pub fn set_lifecycle(&self, i: usize, state: &str) {
        assert!(!self.imds.is_empty(), "the bed was started without imds_lifecycle");
        std::fs::write(self.dir().join(format!("lifecycle-{i}")), state).unwrap();
    }

    /// The client's current flow (its internet address and the tunnel's listen port).
    pub fn client_flow(&self) -> SocketAddrV4 {
        let port = self.cluster.topo.clients[0].ns.run(&["wg", "show", self.tunnel.name(), "listen-port"]);
        let port: u16 = port.trim().parse().unwrap_or_else(|_| panic!("listen port {port:?}"));
        SocketAddrV4::new(self.cluster.topo.clients[0].public_v4, port)
    }

    /// The target the client's current flow is on, once the load balancer tracks it.
    pub fn serving_target(&self) -> Option<usize> {
        self.nlb.target_of(self.client_flow())
    }

    /// Kills bastion `i` outright: a crashed instance (its health check fails from now on).
    pub fn crash(&self, i: usize) {
        let kill = |p: &Process| {
            p.signal(libc::SIGKILL);
            let _ = p.wait_exit(Duration::from_secs(10));
        };
        match &self.bastions[i] {
            HaBastion::Ours(b) => kill(&b.process),
            HaBastion::WireguardGo { health, wg } => {
                kill(wg.wg.process());
                kill(health.process());
            }
        }
    }

    /// Takes bastion `i`'s whole instance away: the process killed and its link to the load
    /// balancer down, so nothing answers there any more (health checks time out rather than
    /// being refused).
    pub fn vanish(&self, i: usize) {
        self.crash(i);
        self.cluster.lb.run(&["ip", "link", "set", &format!("p-target{i}"), "down"]);
    }

    /// A planned drain of bastion `i`, as scale-in does it: deregistered from the target group,
    /// then told to stop (SIGTERM: our bastions drain for `drain_seconds`, wireguard-go stops).
    pub fn drain(&self, i: usize) {
        self.nlb.deregister(i);
        self.stop(i);
    }

    /// Stops bastion `i` as an instance shutdown does (SIGTERM: ours drain, wireguard-go
    /// stops); no deregistration here.
    pub fn stop(&self, i: usize) {
        match &self.bastions[i] {
            HaBastion::Ours(b) => b.process.signal(libc::SIGTERM),
            HaBastion::WireguardGo { health, wg } => {
                wg.wg.process().signal(libc::SIGTERM);
                health.process().signal(libc::SIGTERM);
            }
        }
    }

    /// Starts bastion `i` again on the same instance (its namespace, its IMDS), as a service
    /// restart does, once it has stopped; waits until it answers its health check.
    pub fn restart(&mut self, i: usize) {
        let HaBastion::Ours(old) = &self.bastions[i] else { panic!("restart is for our bastions") };
        assert!(!old.process.is_running(), "bastion {i} still runs");
        let ns = self.cluster.bastion_ns(i);
        let b = Bastion::start_in(&self.cluster.topo, ns, &old.binary, old.setup.clone());
        b.wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("bastion {i} restarted: {e}"));
        self.bastions[i] = HaBastion::Ours(b);
    }

    /// Waits (up to `timeout`) for a bastion to mark one of this bed's instances unhealthy
    /// (SetInstanceHealth, at or after `since`), then replaces it `lag` after that call, as
    /// Auto Scaling does ([`HaBed::replace`]).
    pub fn replace_marked(&mut self, since: Instant, lag: Duration, timeout: Duration) -> Replacement {
        let marked = crate::wait_until("a bastion to mark an instance unhealthy", timeout, || {
            self.nlb
                .api_calls()
                .into_iter()
                .find(|c| {
                    c.action == "SetInstanceHealth"
                        && c.status == 200
                        && c.at >= since
                        && self.instances.contains(&c.id)
                })
                .ok_or_else(|| format!("{:#?}", self.nlb.api_calls()))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.report()));
        let slot = self.instances.iter().position(|i| *i == marked.id).expect("one of ours");
        std::thread::sleep((marked.at + lag).saturating_duration_since(Instant::now()));
        let launched = Instant::now();
        let address = self.replace(slot);
        Replacement { slot, marked: marked.at, launched, instance: self.instances[slot].clone(), address }
    }

    /// Replaces the instance in `slot` as Auto Scaling does: the old one terminated (its
    /// bastion killed), a new one launched in its place with a new instance id (here: the same
    /// namespace, link and interface id; its link up again, its IMDS new, with ip targets the
    /// free address EC2 gives it, with instance targets registered by Auto Scaling), and its
    /// bastion started; waits until that answers its health check. With ip targets, the
    /// address the new instance came with.
    pub fn replace(&mut self, slot: usize) -> Option<std::net::Ipv4Addr> {
        let HaBastion::Ours(old) = &self.bastions[slot] else { panic!("replace is for our bastions") };
        let (binary, setup) = (old.binary.clone(), old.setup.clone());
        self.crash(slot);
        self.cluster.lb.run(&["ip", "link", "set", &format!("p-target{slot}"), "up"]);
        self.replaced += 1;
        let instance = format!("i-{:017x}", 0xba5_7100 + 0x10 * self.replaced + slot);
        let address = self.nlb.replace_instance(slot, &instance);
        if !self.imds.is_empty() {
            // One listener per namespace: the old emulator goes first.
            drop(self.imds.remove(slot));
            self.imds.insert(slot, start_imds(&self.cluster, &self.options, &self.macs, slot, &instance));
        }
        self.instances[slot] = instance;
        let b = Bastion::start_in(&self.cluster.topo, self.cluster.bastion_ns(slot), &binary, setup);
        b.wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("the replacement in slot {slot}: {e}"));
        self.bastions[slot] = HaBastion::Ours(b);
        address
    }

    /// Cuts the bastions off from one another (both segments), as a partition between
    /// instances would; the load balancer still reaches each of them.
    pub fn partition_bastions(&self) {
        for i in 0..2 {
            let other = 1 - i;
            let t = crate::cluster::TARGETS[other];
            let other_addresses = [t.address, t.private_v4, IP_TARGETS[other]];
            let set: Vec<String> = other_addresses.iter().map(|a| a.to_string()).collect();
            let script = format!(
                "table ip partition {{\n chain input {{ type filter hook input priority -10; ip saddr {{ {0} }} drop; }}\n \
                 chain output {{ type filter hook output priority -10; ip daddr {{ {0} }} drop; }}\n}}\n",
                set.join(", ")
            );
            let out = self.cluster.bastion_ns(i).exec_with_input(&["nft", "-f", "-"], script.as_bytes());
            assert!(out.success(), "partition: {out}");
        }
    }

    /// Whether bastion `i` still runs.
    pub fn is_running(&self, i: usize) -> bool {
        match &self.bastions[i] {
            HaBastion::Ours(b) => b.process.is_running(),
            HaBastion::WireguardGo { wg, .. } => wg.wg.process().is_running(),
        }
    }

    /// Everything that can explain a failure.
    pub fn report(&self) -> String {
        let mut parts = Vec::new();
        for b in &self.bastions {
            parts.push(match b {
                HaBastion::Ours(b) => b.log_report(),
                HaBastion::WireguardGo { wg, .. } => wg.wg.log_report(),
            });
        }
        parts.push(format!("{}\n{}", self.tunnel.show(), self.tunnel.log_report()));
        if let Some(w) = &self.watch {
            parts.push(w.log_report());
        }
        parts.push(self.nlb.report());
        parts.join("\n")
    }

    /// The run folder (logs).
    pub fn dir(&self) -> &Path {
        self.cluster.topo.dir.path()
    }
}

/// A crash under load, as [`HaBed::crash_under_load`] made it.
pub struct CrashUnderLoad {
    /// The client's requests, one every 100 ms, started before the crash.
    pub pinger: crate::ping::Pinger,
    /// The target that was serving the client, and died.
    pub dead: usize,
    /// When it was killed (seconds since the epoch, as ping's times).
    pub killed_at: f64,
    /// When the load balancer found it unhealthy.
    pub detected: std::time::Instant,
}

impl HaBed {
    /// The tunnel is up (a ping through it) and the load balancer tracks the client's flow:
    /// which target serves it.
    pub fn warm_up(&self) -> usize {
        let step = Duration::from_secs(10);
        let host = self.cluster.topo.private_hosts[0].v4.to_string();
        self.cluster.topo.clients[0].ns.ping(&host, step).unwrap_or_else(|e| panic!("{e}\n{}", self.report()));
        crate::wait_until("the load balancer to track the client's flow", step, || {
            self.serving_target().ok_or_else(|| self.nlb.report())
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Warms the tunnel up ([`HaBed::warm_up`]), starts `requests` client requests one every
    /// 100 ms, kills the serving bastion a second later and waits for the load balancer to
    /// notice.
    pub fn crash_under_load(&self, requests: u32) -> CrashUnderLoad {
        let step = Duration::from_secs(10);
        let host = self.cluster.topo.private_hosts[0].v4.to_string();
        let client = &self.cluster.topo.clients[0].ns;
        let dead = self.warm_up();
        let pinger = crate::ping::Pinger::start(
            client,
            &host,
            Duration::from_millis(100),
            requests,
            &self.dir().join("ping.log"),
        );
        std::thread::sleep(Duration::from_secs(1));
        let killed = std::time::Instant::now();
        let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        self.crash(dead);
        let detected = crate::wait_until("the load balancer to find the dead bastion unhealthy", step, || {
            self.nlb.detected_unhealthy(dead, killed).ok_or_else(|| self.nlb.report())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.report()));
        CrashUnderLoad { pinger, dead, killed_at, detected }
    }
}

/// `bastion watch --interface NAME [ARGS]` in the client's namespace.
pub fn start_watch(cluster: &Cluster, tunnel: &WgInterface, binary: &Path, args: &[&str]) -> Process {
    let log = cluster.topo.dir.path().join(format!("watch-{}.log", tunnel.name()));
    let mut argv = vec![binary.to_str().expect("binary path is UTF-8"), "watch", "--interface", tunnel.name()];
    argv.extend_from_slice(args);
    let p = cluster.topo.clients[0].ns.spawn("bastion watch", &argv, &[], &log);
    p.wait_for_log("watching", Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    p
}
