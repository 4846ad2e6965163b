//! `bastion run`: starts the data plane, NAT and health responder from a config, then waits for
//! a signal to drain and exit.
//!
//! Start order: TUN + UDP (data plane) → our nftables table + forwarding → health responder →
//! watchdog. Every component is a guard: when a later step fails, or at exit, the earlier ones
//! undo themselves (the TUN disappears, our table is removed), so nothing is left behind.
//! SIGTERM/SIGINT start the drain: health answers 503 at once, WireGuard keeps serving for
//! `drain_seconds`, then everything stops and the process exits 0. A second signal cuts the
//! drain short (cleanup still happens).

use crate::config::{self, Config, Egress};
use crate::health::{HealthResponder, Verdict};
use crate::log;
use crate::status::{self, StatusServer};
use crate::nat::{self, Allow, NatPlan};
use crate::netlink::route;
use crate::tunnel::{DataPlane, PeerSpec, TunnelSpec};
use ip_network::IpNetwork;
use nix::sys::signal::{SigSet, Signal};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The event loop counts as alive while every worker turned within this long.
const HEARTBEAT_LIMIT: Duration = Duration::from_secs(2);

pub fn run_from_file(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Block the drain signals before any thread exists, so every thread inherits the mask and
    // only `wait_for_signal` ever sees them.
    let signals = drain_signals();
    if let Err(e) = signals.thread_block() {
        log!("cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let service = match Service::start(config) {
        Ok(service) => service,
        Err(e) => {
            log!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let first = wait_for_signal(&signals, None);
    service.drain(first, &signals);
    service.stop();
    log!("stopped");
    ExitCode::SUCCESS
}

fn drain_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Waits for one of `signals` (blocked in every thread), up to `timeout`.
fn wait_for_signal(signals: &SigSet, timeout: Option<Duration>) -> Option<Signal> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let remaining = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) => r,
                None => return None,
            },
            None => Duration::from_secs(3600),
        };
        let ts = libc::timespec {
            tv_sec: remaining.as_secs() as libc::time_t,
            tv_nsec: remaining.subsec_nanos() as libc::c_long,
        };
        let rc = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &ts) };
        if rc > 0 {
            if let Ok(signal) = Signal::try_from(rc) {
                return Some(signal);
            }
        }
        // EAGAIN (timeout slice over) or EINTR: look at the deadline again.
    }
}

/// What the health check and the status command read, shared by the service's threads.
pub struct ServiceState {
    draining: AtomicBool,
    drain_started: Mutex<Option<Instant>>,
    drain_seconds: u64,
}

impl ServiceState {
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Our nftables table while it is installed; removed on drop.
struct InstalledNat {
    plan: NatPlan,
}

impl InstalledNat {
    fn install(plan: NatPlan) -> Result<InstalledNat, String> {
        nat::install(&plan).map_err(|e| format!("install nftables table inet {}: {e}", nat::TABLE))?;
        log!(
            "nat: table inet {} installed (egress {}, masquerade {}, {} allow rules)",
            nat::TABLE,
            plan.egress,
            if plan.masquerade { "on" } else { "off" },
            plan.allow.len()
        );
        Ok(InstalledNat { plan })
    }
}

impl Drop for InstalledNat {
    fn drop(&mut self) {
        match nat::remove() {
            Ok(()) => log!("nat: table inet {} removed", nat::TABLE),
            Err(e) => log!("nat: cannot remove table inet {}: {e}", nat::TABLE),
        }
    }
}

struct Service {
    config: Config,
    state: Arc<ServiceState>,
    // Field order is drop order: health stops answering first, the watchdog stops, then the
    // table goes, then the data plane (and with it the TUN).
    health: Option<HealthResponder>,
    status: Option<StatusServer>,
    watchdog: Watchdog,
    nat: Arc<InstalledNat>,
    data_plane: Arc<DataPlane>,
}

impl Service {
    fn start(config: Config) -> Result<Service, String> {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let data_plane = DataPlane::start(tunnel_spec(&config, workers)).map_err(|e| e.to_string())?;
        let data_plane = Arc::new(data_plane);
        log!(
            "tunnel: {} up with {} ({} peers, UDP port {}, {} workers)",
            config.interface.name,
            config
                .interface
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            config.peers.len(),
            config.interface.listen_port,
            workers
        );
        let plan = nat_plan(&config)?;
        let ipv6 = uses_ipv6(&config);
        nat::enable_forwarding(ipv6).map_err(|e| format!("enable forwarding: {e}"))?;
        let nat = Arc::new(InstalledNat::install(plan)?);
        let state = Arc::new(ServiceState {
            draining: AtomicBool::new(false),
            drain_started: Mutex::new(None),
            drain_seconds: config.health.drain_seconds,
        });
        let watchdog = Watchdog::start(nat.clone(), Duration::from_secs(config.selftest.interval_seconds.max(1)));
        let judge = {
            let state = state.clone();
            let data_plane = data_plane.clone();
            let name = config.interface.name.clone();
            move || judge(&state, &data_plane, &name, ipv6)
        };
        let health = HealthResponder::start(config.health.listen, judge)
            .map_err(|e| format!("health responder: {e}"))?;
        log!("health: listening on {}", config.health.listen);
        let report = {
            let state = state.clone();
            let data_plane = data_plane.clone();
            let config = config.clone();
            move || report(&state, &data_plane, &config, ipv6)
        };
        // Status is a convenience: a second service in the same namespace must not fail on it.
        let status = match StatusServer::start(&config.interface.name, report) {
            Ok(server) => Some(server),
            Err(e) => {
                log!("status: not available: {e}");
                None
            }
        };
        Ok(Service { config, state, health: Some(health), status, watchdog, nat, data_plane })
    }

    /// Health 503 at once; keep serving for drain_seconds or until a second signal.
    fn drain(&self, first: Option<Signal>, signals: &SigSet) {
        self.state.draining.store(true, Ordering::Relaxed);
        *self.state.drain_started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let seconds = self.config.health.drain_seconds;
        log!(
            "drain started ({}): health answers 503, WireGuard keeps serving for {seconds} s",
            first.map(|s| s.as_str()).unwrap_or("signal")
        );
        if let Some(second) = wait_for_signal(signals, Some(Duration::from_secs(seconds))) {
            log!("drain cut short by a second {}", second.as_str());
        } else {
            log!("drain finished after {seconds} s");
        }
    }

    fn stop(mut self) {
        if let Some(health) = self.health.take() {
            health.stop();
        }
        if let Some(status) = self.status.take() {
            status.stop();
        }
        self.watchdog.stop();
        let Service { nat, data_plane, .. } = self;
        drop(nat);
        data_plane.shutdown();
        log!("tunnel: {} removed", data_plane.name());
    }
}

fn tunnel_spec(config: &Config, workers: usize) -> TunnelSpec {
    let peers = config
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
    TunnelSpec {
        name: config.interface.name.clone(),
        private_key: config.interface.private_key.clone(),
        listen_port: config.interface.listen_port,
        mtu: config.interface.mtu,
        addresses: config.interface.addresses.clone(),
        peers,
        workers,
    }
}

fn uses_ipv6(config: &Config) -> bool {
    config.interface.addresses.iter().any(|a| a.address.is_ipv6())
}

/// The table for this config: global reach for every tunnel source, per-peer reach for the
/// peer's own allowed IPs (same family only), and the self-test's probes.
fn nat_plan(config: &Config) -> Result<NatPlan, String> {
    let egress = match &config.nat.egress {
        Egress::Interface(name) => name.clone(),
        Egress::Auto => route::default_route_interface()
            .map_err(|e| format!("nat.egress = \"auto\": cannot read the routing table: {e}"))?
            .ok_or_else(|| {
                "nat.egress = \"auto\": there is no IPv4 default route to take the interface from; \
                 set [nat] egress to an interface name"
                    .to_string()
            })?,
    };
    let mut allow: Vec<Allow> = config
        .nat
        .reach
        .iter()
        .map(|d| Allow { source: None, destination: *d })
        .collect();
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
    Ok(NatPlan {
        tunnel: config.interface.name.clone(),
        egress,
        masquerade: config.nat.masquerade,
        allow,
    })
}

fn same_family(a: &IpNetwork, b: &IpNetwork) -> bool {
    matches!((a, b), (IpNetwork::V4(_), IpNetwork::V4(_)) | (IpNetwork::V6(_), IpNetwork::V6(_)))
}

fn host_network(address: std::net::IpAddr) -> IpNetwork {
    let bits = if address.is_ipv4() { 32 } else { 128 };
    IpNetwork::new(address, bits).unwrap_or_else(|_| unreachable!("a full-length prefix is valid"))
}

/// Every health condition, read from the kernel and the threads now (nothing remembered).
fn judge(state: &ServiceState, data_plane: &DataPlane, name: &str, ipv6: bool) -> Verdict {
    let mut failing = Vec::new();
    if state.draining() {
        let left = state
            .drain_started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| state.drain_seconds.saturating_sub(t.elapsed().as_secs()))
            .unwrap_or(state.drain_seconds);
        failing.push(format!("draining: shutting down, {left} s left"));
    }
    match route::link_by_name(name) {
        Ok(Some(link)) if link.up => {}
        Ok(Some(_)) => failing.push(format!("tun: {name} is down")),
        Ok(None) => failing.push(format!("tun: {name} does not exist")),
        Err(e) => failing.push(format!("tun: cannot read the state of {name}: {e}")),
    }
    if !data_plane.udp_bound() {
        failing.push("udp: the WireGuard socket is not bound".into());
    }
    match nat::table_present() {
        Ok(true) => {}
        Ok(false) => failing.push(format!("nat: table inet {} is missing", nat::TABLE)),
        Err(e) => failing.push(format!("nat: cannot read table inet {}: {e}", nat::TABLE)),
    }
    if !nat::forwarding_enabled(ipv6) {
        failing.push(if ipv6 {
            "forwarding: net.ipv4.ip_forward or net.ipv6.conf.all.forwarding is off".into()
        } else {
            "forwarding: net.ipv4.ip_forward is off".into()
        });
    }
    let age = data_plane.heartbeat_age();
    if age > HEARTBEAT_LIMIT {
        failing.push(format!("event loop: no heartbeat for {:.1} s", age.as_secs_f64()));
    }
    if failing.is_empty() {
        Verdict::Healthy(format!("{name} up"))
    } else {
        Verdict::Unhealthy(failing)
    }
}

/// The text `bastion status` prints: no keys, ever.
fn report(state: &ServiceState, data_plane: &DataPlane, config: &Config, ipv6: bool) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let name = &config.interface.name;
    let verdict = judge(state, data_plane, name, ipv6);
    let _ = writeln!(text, "interface: {name}  UDP port {}  health {}", config.interface.listen_port, verdict.status());
    if let Verdict::Unhealthy(reasons) = &verdict {
        for reason in reasons {
            let _ = writeln!(text, "  {reason}");
        }
    }
    let _ = writeln!(text, "draining: {}", if state.draining() { "yes" } else { "no" });
    let peers = data_plane.peers();
    let _ = writeln!(text, "peers: {}", peers.iter().filter(|p| !p.internal).count());
    for peer in peers.iter().filter(|p| !p.internal) {
        let endpoint = peer.endpoint.map(|e| e.to_string()).unwrap_or_else(|| "-".into());
        let handshake = peer
            .last_handshake
            .map(|d| format!("{} s ago", d.as_secs()))
            .unwrap_or_else(|| "never".into());
        let _ = writeln!(
            text,
            "  {}  endpoint {endpoint}  last handshake {handshake}  handshakes {}  received {}  sent {}",
            peer.name,
            peer.handshakes,
            status::bytes(peer.rx_bytes),
            status::bytes(peer.tx_bytes)
        );
    }
    let c = data_plane.counters();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(
        text,
        "dropped: {} datagrams not ours, {} rejected, {} handshakes from unknown keys, {} cookie replies, {} TUN packets with no peer",
        load(&c.dropped_datagrams),
        load(&c.rejected_datagrams),
        load(&c.unknown_peer_handshakes),
        load(&c.cookie_replies),
        load(&c.dropped_tun_packets)
    );
    text
}

/// Puts our table back when something outside removed it, every `interval`.
struct Watchdog {
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(nat: Arc<InstalledNat>, interval: Duration) -> Watchdog {
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if Instant::now() < next {
                        continue;
                    }
                    next = Instant::now() + interval;
                    repair_nat(&nat);
                }
            })
            .ok();
        Watchdog { stopping, thread }
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn repair_nat(nat: &InstalledNat) {
    match nat::table_present() {
        Ok(true) => {}
        Ok(false) => {
            log!("nat: table inet {} was removed from outside; reinstalling it", nat::TABLE);
            match nat::install(&nat.plan) {
                Ok(()) => log!("nat: table inet {} reinstalled", nat::TABLE),
                Err(e) => log!("nat: cannot reinstall table inet {}: {e}", nat::TABLE),
            }
        }
        Err(e) => log!("nat: cannot read table inet {}: {e}", nat::TABLE),
    }
}
