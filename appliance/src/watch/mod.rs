//! `bastion watch --interface NAME`: the client-side companion of a stock WireGuard client.
//!
//! A load balancer keeps a UDP flow (client address and port) on its target for as long as
//! packets keep coming, even when that target is dead or deregistered (AWS NLB: until idle
//! 30 s; see docs/high-availability.md). A new source port is a new flow, and new flows go to
//! healthy targets only. So when the tunnel stalls ([`stall`]), or when the bastion asks its
//! peers to move ([`crate::move_notice`], sent while it drains), the watcher moves the tunnel
//! to a new flow: a new random listen port, and the peer removed and added again with the same
//! settings so that the next packet starts a handshake from the client (packets meanwhile wait
//! for it inside WireGuard instead of being lost). A bastion of the cluster answers the
//! handshake in one round trip.
//!
//! It speaks WireGuard's userspace API ([`uapi`]: wireguard-go, boringtun-cli) when the
//! interface has an API socket, and otherwise goes through the `wg` tool ([`wg_tool`]: kernel
//! WireGuard, over netlink); `--backend` chooses explicitly.

pub mod notice_filter;
pub mod quiet;
pub mod stall;
pub mod uapi;
pub mod wg_tool;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::log;
use crate::move_notice;
use stall::{Counters, StallDetector, StallParams, StallVerdict};
use uapi::{Device, Uapi, UapiError};

#[derive(Clone, Debug)]
pub struct Options {
    pub interface: String,
    /// The API socket (default `/var/run/wireguard/NAME.sock`).
    pub socket: Option<PathBuf>,
    /// How often the peers' counters are read.
    pub poll: Duration,
    pub stall: StallParams,
    /// Listen for the bastions' move notices (on the interface, UDP [`move_notice::PORT`]).
    pub notices: bool,
    /// Obey notices from these addresses only (the bastions' tunnel addresses); empty: from
    /// any address a peer may send from (see [`notice_filter`]).
    pub bastion_addresses: Vec<IpAddr>,
    pub backend: Backend,
}

/// How the interface is read and changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The API socket if there is one, else the `wg` tool.
    Auto,
    Uapi,
    WgTool,
}

impl Backend {
    pub fn parse(text: &str) -> Result<Backend, String> {
        match text {
            "auto" => Ok(Backend::Auto),
            "uapi" => Ok(Backend::Uapi),
            "wg" => Ok(Backend::WgTool),
            other => Err(format!("expected auto, uapi or wg, found {other:?}")),
        }
    }
}

/// The interface, through one backend.
enum Api {
    Uapi(Uapi),
    WgTool(wg_tool::WgTool),
}

impl Api {
    fn get(&self) -> Result<Device, UapiError> {
        match self {
            Api::Uapi(u) => u.get(),
            Api::WgTool(w) => w.get(),
        }
    }

    fn set(&self, lines: &str) -> Result<(), UapiError> {
        match self {
            Api::Uapi(u) => u.set(lines),
            Api::WgTool(w) => w.set(lines),
        }
    }

    fn name(&self) -> String {
        match self {
            Api::Uapi(u) => format!("the API socket {}", u.path().display()),
            Api::WgTool(_) => "the wg tool".into(),
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            interface: "wg0".into(),
            socket: None,
            poll: Duration::from_millis(200),
            stall: StallParams::default(),
            notices: true,
            bastion_addresses: Vec::new(),
            backend: Backend::Auto,
        }
    }
}

/// Runs until SIGINT or SIGTERM (exit 0), or until the interface goes away (exit 1).
pub fn run(options: Options) -> ExitCode {
    let signals = stop_signals();
    if let Err(e) = signals.thread_block() {
        eprintln!("watch: blocking SIGINT/SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    let socket = options.socket.as_deref().map(Uapi::at).unwrap_or_else(|| Uapi::for_interface(&options.interface));
    // The interface's own socket path is no secret, however key-like its name looks.
    crate::keys::show_in_diagnostics(&socket.path().display().to_string());
    let api = match options.backend {
        Backend::Uapi => Api::Uapi(socket),
        Backend::WgTool => Api::WgTool(wg_tool::WgTool::new(&options.interface)),
        Backend::Auto if socket.path().exists() => Api::Uapi(socket),
        Backend::Auto => Api::WgTool(wg_tool::WgTool::new(&options.interface)),
    };
    let device = match api.get() {
        Ok(device) => device,
        Err(e) => {
            eprintln!("watch: cannot read interface {} through {}: {e}", options.interface, api.name());
            return ExitCode::FAILURE;
        }
    };
    // Without the notice port, stalls are still watched: notices only make a planned drain
    // faster.
    let notices = if options.notices {
        match notice_socket(&options.interface) {
            Ok(socket) => {
                if unprivileged_may_bind(move_notice::PORT) {
                    log!(
                        "watch {}: net.ipv4.ip_unprivileged_port_start lets any user bind UDP {}: a local user \
                         could listen for move notices in watch's place after a restart",
                        options.interface,
                        move_notice::PORT
                    );
                }
                Some(socket)
            }
            Err(e) => {
                log!(
                    "watch {}: cannot listen for move notices on UDP {} ({e}); watching for stalls only",
                    options.interface,
                    move_notice::PORT
                );
                None
            }
        }
    } else {
        None
    };
    log!(
        "watch {}: watching {} peer(s) (listen port {}, through {}); moving to a new flow after {:.1} s without an answer{}",
        options.interface,
        device.peers.len(),
        device.listen_port,
        api.name(),
        options.stall.stall_after.as_secs_f64(),
        if notices.is_some() { format!(", or when a bastion asks (UDP {})", move_notice::PORT) } else { String::new() }
    );
    let mut watcher = Watcher {
        options,
        api,
        started: Instant::now(),
        detectors: HashMap::new(),
        notice_hold: None,
        refusals: notice_filter::LogLimiter::default(),
    };
    let code = watcher.run(&signals, notices.as_ref());
    log!("watch {}: stopped", watcher.options.interface);
    code
}

fn stop_signals() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGINT);
    set.add(nix::sys::signal::Signal::SIGTERM);
    set
}

/// A stop signal pending? (They are blocked, so they wait here until asked for.)
fn stop_pending(signals: &nix::sys::signal::SigSet) -> bool {
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let set = signals.as_ref() as *const libc::sigset_t;
    // SAFETY: `set` points at the live SigSet borrowed for this call, the info pointer may be null,
    //   and `&zero` is a live timespec: sigtimedwait only reads them.
    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &zero) > 0 }
}

/// UDP on the WireGuard interface only (SO_BINDTODEVICE), both families, on a port below
/// 1024 and without SO_REUSEADDR: nobody else can listen on it beside or instead of us.
fn notice_socket(interface: &str) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(false)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, move_notice::PORT)).into())?;
    Ok(socket)
}

/// Whether this machine lets any user bind `port` (a lowered `ip_unprivileged_port_start`).
fn unprivileged_may_bind(port: u16) -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .is_some_and(|start| u32::from(port) >= start)
}

/// Every address of this machine's interfaces (a notice from one of them is local).
fn local_addresses() -> Vec<IpAddr> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addresses
        .filter_map(|a| {
            let address = a.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

struct Watcher {
    options: Options,
    api: Api,
    started: Instant,
    /// One stall detector per peer (by public key, hex).
    detectors: HashMap<String, StallDetector>,
    /// Notices are ignored until then after a move they caused (a draining bastion repeats them).
    notice_hold: Option<Instant>,
    /// Refused notices are logged at most every 10 s.
    refusals: notice_filter::LogLimiter,
}

impl Watcher {
    fn run(&mut self, signals: &nix::sys::signal::SigSet, notices: Option<&socket2::Socket>) -> ExitCode {
        let mut next_poll = Instant::now();
        let mut failures = 0u32;
        loop {
            if stop_pending(signals) {
                return ExitCode::SUCCESS;
            }
            let wait = next_poll.saturating_duration_since(Instant::now());
            if let Some(socket) = notices {
                if let Some(source) = receive_notice(socket, wait.max(Duration::from_millis(1))) {
                    self.on_notice(source);
                }
            } else {
                std::thread::sleep(wait);
            }
            if Instant::now() < next_poll {
                continue;
            }
            next_poll += self.options.poll;
            if next_poll < Instant::now() {
                next_poll = Instant::now() + self.options.poll;
            }
            match self.api.get() {
                Ok(device) => {
                    failures = 0;
                    self.on_sample(&device);
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        log!("watch {}: reading the interface: {e}", self.options.interface);
                    }
                    if matches!(e, UapiError::Socket { .. }) && failures >= 10 {
                        log!("watch {}: the interface is gone; exiting", self.options.interface);
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn on_sample(&mut self, device: &Device) {
        let now = self.now();
        let mut stalled = Vec::new();
        for peer in &device.peers {
            let detector =
                self.detectors.entry(peer.public_key.clone()).or_insert_with(|| StallDetector::new(self.options.stall));
            match detector.observe(now, peer.counters) {
                StallVerdict::Fine => {}
                StallVerdict::Rotate { attempt, silent } => stalled.push((peer, attempt, silent)),
                StallVerdict::Recovered { rotations, outage } => log!(
                    "watch {}: peer {} answers again after {rotations} move(s), {:.1} s without an answer",
                    self.options.interface,
                    endpoint_of(peer),
                    outage.as_secs_f64()
                ),
            }
        }
        self.detectors.retain(|key, _| device.peers.iter().any(|p| &p.public_key == key));
        if stalled.is_empty() {
            return;
        }
        let why: Vec<String> = stalled
            .iter()
            .map(|(peer, attempt, silent)| {
                format!(
                    "peer {} sent data {:.1} s without an answer (move {attempt})",
                    endpoint_of(peer),
                    silent.as_secs_f64()
                )
            })
            .collect();
        let peers: Vec<&uapi::UapiPeer> = stalled.iter().map(|(peer, _, _)| *peer).collect();
        self.move_to_new_flow(device.listen_port, &peers, &why.join("; "));
    }

    /// A notice from `source`: if a peer of this interface may send from that address, wait for
    /// a quiet moment (nothing outstanding) and move that peer's tunnel.
    fn on_notice(&mut self, source: IpAddr) {
        let device = match self.api.get() {
            Ok(device) => device,
            Err(e) => return log!("watch {}: reading the interface: {e}", self.options.interface),
        };
        let allowed: Vec<&[ip_network::IpNetwork]> = device.peers.iter().map(|p| p.allowed_ips.as_slice()).collect();
        let verdict = notice_filter::judge(source, &local_addresses(), &self.options.bastion_addresses, &allowed);
        let peer = match verdict {
            notice_filter::NoticeVerdict::Obey { peer } => &device.peers[peer],
            notice_filter::NoticeVerdict::Refuse(refusal) => {
                if let Some(unlogged) = self.refusals.admit(self.now()) {
                    let more = if unlogged > 0 {
                        format!(" ({unlogged} more refused since the last line)")
                    } else {
                        String::new()
                    };
                    log!(
                        "watch {}: a move notice from {source} refused: {}{more}",
                        self.options.interface,
                        refusal.why()
                    );
                }
                return;
            }
        };
        if self.notice_hold.is_some_and(|until| Instant::now() < until) {
            return;
        }
        let key = peer.public_key.clone();
        self.wait_for_quiet(&key);
        let device = match self.api.get() {
            Ok(device) => device,
            Err(e) => return log!("watch {}: reading the interface: {e}", self.options.interface),
        };
        let Some(peer) = device.peers.iter().find(|p| p.public_key == key) else { return };
        self.move_to_new_flow(
            device.listen_port,
            &[peer],
            &format!(
                "a move notice from {source} through peer {} (a draining bastion asks its peers to move)",
                endpoint_of(peer)
            ),
        );
        self.notice_hold = Some(Instant::now() + self.options.stall.first_backoff);
        if let Some(detector) = self.detectors.get_mut(&key) {
            detector.moved();
        }
    }

    /// Waits for the moment [`quiet`] picks (right after an answer; at most 1 s): a move then
    /// strands no answer on the old flow.
    fn wait_for_quiet(&self, key: &str) {
        let read = || -> Option<Counters> {
            self.api.get().ok()?.peers.into_iter().find(|p| p.public_key == key).map(|p| p.counters)
        };
        let Some(first) = read() else { return };
        let mut moment = quiet::QuietMoment::new(first, Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let Some(now) = read() else { return };
            if moment.observe(now, Instant::now()) {
                return;
            }
        }
    }

    /// A new random listen port and the peers re-created, in one `set` (see the module doc).
    fn move_to_new_flow(&self, old_port: u16, peers: &[&uapi::UapiPeer], why: &str) {
        let mut lines = zeroize::Zeroizing::new(String::from("listen_port=0\n"));
        for peer in peers {
            lines.push_str(&peer.recreate());
        }
        if let Err(e) = self.api.set(&lines) {
            return log!("watch {}: {why}; moving to a new flow failed: {e}", self.options.interface);
        }
        let new_port = self.api.get().map(|d| d.listen_port.to_string()).unwrap_or_else(|_| "?".into());
        log!(
            "watch {}: {why}; moved to a new flow: listen port {old_port} -> {new_port}, handshake restarted",
            self.options.interface
        );
    }
}

/// The peer as logs show it: its endpoint (never its key).
fn endpoint_of(peer: &uapi::UapiPeer) -> String {
    peer.endpoint.clone().unwrap_or_else(|| "(no endpoint)".into())
}

/// Waits up to `timeout` for one datagram; the source address of a well-formed notice.
fn receive_notice(socket: &socket2::Socket, timeout: Duration) -> Option<IpAddr> {
    socket.set_read_timeout(Some(timeout)).ok()?;
    let mut buffer = [std::mem::MaybeUninit::<u8>::uninit(); 512];
    let (n, from) = socket.recv_from(&mut buffer).ok()?;
    // SAFETY: recv_from initialised the first `n` bytes of `buffer`, and only those are read.
    let payload: Vec<u8> = buffer[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
    move_notice::parse(&payload).ok()?;
    let source = from.as_socket()?.ip();
    Some(match source {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    })
}
