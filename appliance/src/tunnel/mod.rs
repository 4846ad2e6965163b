//! The WireGuard data plane: our own device loop around boringtun's `noise::Tunn`.
//!
//! `DataPlane::start` creates the TUN interface (one queue per worker), gives it its addresses
//! and MTU over rtnetlink, binds the UDP listen port (one SO_REUSEPORT socket per worker) and
//! starts the workers and the timer thread. Packet decisions live in `inbound` (network →
//! tunnel) and `outbound` (tunnel → network); `peers` finds peers; `worker` and `timers` are the
//! thin threads around them. This module does not touch NAT or health: it reports what it knows
//! through `DataPlane::status` and the heartbeat.

pub(crate) mod decision;
mod endpoint_index;
mod failover;
mod inbound;
pub mod offload;
mod outbound;
pub mod peers;
pub mod relay;
pub mod send_runs;
mod timers;
mod tun;
mod udp;
mod worker;

use crate::config::InterfaceAddress;
use crate::keys::{PrivateKey, PublicKey};
use crate::netlink::route;
use arc_swap::ArcSwap;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::Tunn;
use boringtun::x25519;
use peers::PeerTable;
pub use peers::{PeerSpec, TableChange};
use peers::{TunnMaker, TunnRecipe};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The kernel's queue in front of the TUN. TUN's default (500) overflows while a worker is busy
/// with a burst from the other direction (measured by `make bench`, tcp-down); 2000 did not.
const TUN_TX_QUEUE_PACKETS: u32 = 2000;

/// Handshake messages accepted per second across all peers before we answer with cookie
/// replies instead (boringtun's device uses the same figure).
const HANDSHAKES_PER_SECOND: u64 = 100;

/// What the data plane is built from.
pub struct TunnelSpec {
    /// The TUN interface name (`wg0`).
    pub name: String,
    pub private_key: PrivateKey,
    pub listen_port: u16,
    pub mtu: u16,
    pub addresses: Vec<InterfaceAddress>,
    pub peers: Vec<PeerSpec>,
    /// Worker threads (one TUN queue and one UDP socket each); usually the number of CPUs.
    pub workers: usize,
}

/// Why the data plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("create TUN interface {name}: {source}")]
    CreateTun { name: String, source: io::Error },
    #[error("configure {name}: {source}")]
    Configure { name: String, source: io::Error },
    #[error("listen on UDP port {port}: {source}")]
    Listen { port: u16, source: io::Error },
    #[error("start {thread} thread: {source}")]
    Thread { thread: &'static str, source: io::Error },
}

/// Data-plane-wide counters of things that went wrong (relaxed atomics).
#[derive(Default)]
pub struct Counters {
    /// Datagrams that are not WireGuard messages or name no peer of ours.
    pub dropped_datagrams: AtomicU64,
    /// Datagrams passed to or from a sibling ([`relay`]), and relay messages refused.
    pub relayed_datagrams: AtomicU64,
    pub relay_refused: AtomicU64,
    /// WireGuard messages that failed authentication, replay or state checks.
    pub rejected_datagrams: AtomicU64,
    /// Valid handshake initiations from keys that are not our peers.
    pub unknown_peer_handshakes: AtomicU64,
    pub cookie_replies: AtomicU64,
    /// Initiations answered by the peer last heard from their source, without the identifying
    /// DH ([`endpoint_index`]), and those that turned out to be another peer's.
    pub initiations_known_by_endpoint: AtomicU64,
    pub initiation_guesses_missed: AtomicU64,
    /// Packets of unknown sessions that claimed a peer heard here moments before (forgeries
    /// or replays): no failover handshake.
    pub failover_refused_heard_recently: AtomicU64,
    /// Failover handshakes held back by the global budget.
    pub failover_refused_budget: AtomicU64,
    /// TUN packets with no peer to go to (a TSO super-packet counts once, as it was read) or that
    /// could not be made whole.
    pub dropped_tun_packets: AtomicU64,
    pub send_errors: AtomicU64,
    pub tun_errors: AtomicU64,
    /// TCP super-packets the kernel handed over (TSO) and the segments cut from them.
    pub tun_super_packets_read: AtomicU64,
    pub tun_segments_read: AtomicU64,
    /// Super-packets written (coalescing) and the segments merged into them.
    pub tun_super_packets_written: AtomicU64,
    pub tun_segments_written: AtomicU64,
}

impl Counters {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of datagrams dropped for `reason`: garbage and unknown indices both count as
    /// "not ours" (`bastion status`), one counter.
    fn dropped(&self, reason: decision::DropReason) -> &AtomicU64 {
        match reason {
            decision::DropReason::NotWireGuard | decision::DropReason::UnknownIndex => &self.dropped_datagrams,
        }
    }

    /// A failed TUN read or write (`doing`: "read from", "write to"). Logged once, then
    /// counted: a link that is down fails every packet.
    fn tun_error(&self, name: &str, doing: &str, error: &io::Error) {
        if self.tun_errors.fetch_add(1, Ordering::Relaxed) == 0 {
            crate::log!("tunnel: {doing} {name} failed: {error} (further TUN errors are counted, not logged)");
        }
    }
}

/// What the workers share.
pub struct DataPlaneShared {
    name: String,
    static_private: x25519::StaticSecret,
    static_public: x25519::PublicKey,
    /// The peer table; a reload swaps in a new one (workers load it once per packet).
    peers: ArcSwap<PeerTable>,
    /// Makes peers' `Tunn`s when they are first needed (with the limiter that never limits:
    /// see `DataPlane::start`).
    tunn_maker: TunnMaker,
    /// Counts handshake messages across all peers; reset every second by the timer thread.
    handshake_limiter: Arc<RateLimiter>,
    /// Responses to our own outstanding failover initiations (`failover::FAILOVER_RESPONSES_PER_SECOND`).
    failover_response_limiter: RateLimiter,
    /// Failover handshakes over all peers (see `failover`).
    failover_budget: Mutex<failover::GlobalBudget>,
    sockets: Vec<UdpSocket>,
    dual_stack: bool,
    /// UDP GSO for runs of datagrams; turned off for good by the first send the kernel refuses.
    udp_gso: AtomicBool,
    /// How the TUN queues were opened (virtio headers, TSO on read).
    tun_opened: tun::Features,
    udp_gro: bool,
    /// Decrypted TCP segments of a flow are written as one super-packet.
    tun_coalesce: bool,
    stop: AtomicBool,
    /// When the data plane started, on [`coarse_ms`]'s clock.
    started_ms: u64,
    /// Per worker: milliseconds since `started_ms` of its last loop turn.
    heartbeats: Vec<AtomicU64>,
    counters: Counters,
    /// Authenticates relay messages between siblings ([`relay`]).
    relay_key: relay::RelayKey,
    /// Where datagrams of sessions we do not hold go, and who may have us send from an address
    /// ([`DataPlane::relay_from`], [`DataPlane::relay_to_leaving`]).
    relays: std::sync::RwLock<relay::Relays>,
    /// Which peer last authenticated from each endpoint: initiations try it first
    /// ([`endpoint_index`]).
    endpoint_index: Mutex<endpoint_index::EndpointIndex>,
}

/// Milliseconds on the kernel's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE`: the time of
/// the last tick, a few milliseconds behind at most). The data path reads it for every
/// authenticated packet, and its thresholds are 1.5 s and more (`failover`); a read costs a
/// fraction of the precise clock's (`clock_gettime` was 1.3 % of a worker in a tcp-up profile).
fn coarse_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map_or(0, |t| t.tv_sec() as u64 * 1_000 + t.tv_nsec() as u64 / 1_000_000)
}

impl DataPlaneShared {
    fn now_ms(&self) -> u64 {
        // +1 so that 0 can mean "never" in the per-peer failover stamp.
        coarse_ms().saturating_sub(self.started_ms) + 1
    }

    fn beat(&self, worker: usize) {
        self.heartbeats[worker].store(self.now_ms(), Ordering::Relaxed);
    }
}

/// The offloads a running data plane uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadsInUse {
    pub udp_gso: bool,
    pub udp_gro: bool,
    pub tun_tso: bool,
    pub tun_coalescing: bool,
}

/// One peer as `status` shows it (no keys).
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub name: String,
    pub public_key: PublicKey,
    pub allowed_ips: Vec<ip_network::IpNetwork>,
    /// The peer's 24-bit session index base: the same on every bastion of a cluster (fast
    /// failover relies on it), so operators can compare it across bastions.
    pub session_index: u32,
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<Duration>,
    pub handshakes: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rejected_source: u64,
    pub failover_handshakes: u64,
    pub internal: bool,
}

/// The running data plane. Dropping it stops the threads and removes the TUN interface.
pub struct DataPlane {
    shared: Arc<DataPlaneShared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    listen_port: u16,
    addresses: Vec<InterfaceAddress>,
    /// Serializes `update_peers`.
    updating: Mutex<()>,
}

/// Makes peers' `Tunn`s with our key and `limiter`.
fn tunn_maker(static_private: &x25519::StaticSecret, limiter: &Arc<RateLimiter>) -> TunnMaker {
    let (static_private, limiter) = (static_private.clone(), limiter.clone());
    Arc::new(move |recipe: &TunnRecipe, index| {
        Tunn::new(
            static_private.clone(),
            recipe.public_key.to_x25519(),
            recipe.preshared_key,
            recipe.persistent_keepalive,
            index,
            Some(limiter.clone()),
        )
    })
}

/// Which offloads to try: all, unless the environment turns one off (to measure each alone).
struct Offloads {
    udp_gso: bool,
    udp_gro: bool,
    /// TUN reads take super-packets (TSO) and partial checksums.
    tun_tso: bool,
    /// TUN writes merge a flow's TCP segments.
    tun_coalesce: bool,
}

impl Offloads {
    const VARS: &'static str =
        "BASTION_NO_UDP_GSO=1 / BASTION_NO_UDP_GRO=1 / BASTION_NO_TUN_TSO=1 / BASTION_NO_TUN_COALESCE=1";

    fn from_env() -> Offloads {
        let off = |var: &str| std::env::var(var).is_ok_and(|v| v == "1");
        Offloads {
            udp_gso: !off("BASTION_NO_UDP_GSO"),
            udp_gro: !off("BASTION_NO_UDP_GRO"),
            tun_tso: !off("BASTION_NO_TUN_TSO"),
            tun_coalesce: !off("BASTION_NO_TUN_COALESCE"),
        }
    }
}

/// "on", "off" (turned off) or "not available (why)".
fn offload_word(wanted: bool, granted: bool, refused: &str) -> String {
    match (wanted, granted) {
        (false, _) => "off".into(),
        (true, true) => "on".into(),
        (true, false) => format!("not available ({refused})"),
    }
}

impl DataPlane {
    pub fn start(spec: TunnelSpec) -> Result<DataPlane, TunnelError> {
        let workers = spec.workers.max(1);
        let addresses = spec.addresses.clone();
        let offloads = Offloads::from_env();
        let wanted = tun::Features { vnet_header: offloads.tun_tso || offloads.tun_coalesce, tso: offloads.tun_tso };
        let (queues, tun_opened) = tun::open(&spec.name, workers, wanted)
            .map_err(|source| TunnelError::CreateTun { name: spec.name.clone(), source })?;
        configure_link(&spec).map_err(|source| TunnelError::Configure { name: spec.name.clone(), source })?;
        let listen = udp::bind(spec.listen_port, workers)
            .map_err(|source| TunnelError::Listen { port: spec.listen_port, source })?;
        let udp_gro = offloads.udp_gro && listen.sockets.iter().all(udp::enable_gro);
        if let Some(e) = listen.sockets.iter().find_map(|s| udp::enable_packet_info(s).err()) {
            crate::log!("tunnel: IP_PKTINFO refused ({e}): replies leave from the address the kernel picks by route");
        }
        let no_vnet = "the kernel refused IFF_VNET_HDR";
        crate::log!(
            "tunnel: UDP GSO {}, UDP GRO {}, TUN TSO {}, TUN coalescing {} ({} turn them off)",
            if offloads.udp_gso { "on" } else { "off" },
            offload_word(offloads.udp_gro, udp_gro, "the kernel refused UDP_GRO"),
            offload_word(
                offloads.tun_tso,
                tun_opened.tso,
                if tun_opened.vnet_header { "the kernel refused TUNSETOFFLOAD" } else { no_vnet }
            ),
            offload_word(offloads.tun_coalesce, tun_opened.vnet_header, no_vnet),
            Offloads::VARS
        );

        let static_private = spec.private_key.to_x25519();
        let static_public = x25519::PublicKey::from(&static_private);
        // Every Tunn checks MACs itself; the real rate limit is the shared limiter we apply
        // before a handshake reaches a Tunn, so theirs never counts as under load.
        let unlimited = Arc::new(RateLimiter::new(&static_public, u64::MAX));
        let maker = tunn_maker(&static_private, &unlimited);
        let peers = PeerTable::new(spec.peers, &maker);
        let relay_key = relay::RelayKey::derive(&zeroize::Zeroizing::new(static_private.to_bytes()));
        let shared = Arc::new(DataPlaneShared {
            name: spec.name.clone(),
            static_private,
            static_public,
            peers: ArcSwap::from_pointee(peers),
            tunn_maker: maker,
            handshake_limiter: Arc::new(RateLimiter::new(&static_public, HANDSHAKES_PER_SECOND)),
            failover_response_limiter: RateLimiter::new(&static_public, failover::FAILOVER_RESPONSES_PER_SECOND),
            failover_budget: Mutex::new(failover::GlobalBudget::default()),
            sockets: listen.sockets,
            dual_stack: listen.dual_stack,
            udp_gso: AtomicBool::new(offloads.udp_gso),
            tun_opened,
            udp_gro,
            tun_coalesce: offloads.tun_coalesce,
            stop: AtomicBool::new(false),
            started_ms: coarse_ms(),
            heartbeats: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            counters: Counters::default(),
            relay_key,
            relays: Default::default(),
            endpoint_index: Default::default(),
        });
        for w in 0..workers {
            shared.beat(w);
        }
        let mut threads = Vec::with_capacity(workers + 1);
        for (w, queue) in queues.into_iter().enumerate() {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("wg-worker-{w}"))
                    .spawn(move || worker::run(shared, w, queue))
                    .map_err(|source| TunnelError::Thread { thread: "worker", source })?,
            );
        }
        let timer_shared = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("wg-timers".into())
                .spawn(move || timers::run(timer_shared))
                .map_err(|source| TunnelError::Thread { thread: "timer", source })?,
        );
        Ok(DataPlane {
            shared,
            threads: Mutex::new(threads),
            listen_port: spec.listen_port,
            addresses,
            updating: Mutex::new(()),
        })
    }

    /// Puts a new peer set in place without touching the interface, the sockets or the sessions
    /// of the peers that stay (see `PeerTable::updated`); the peers whose keys are in `recreate`
    /// get a new `Tunn`. Packets in flight finish on the table they started with.
    pub fn update_peers(&self, specs: Vec<PeerSpec>, recreate: &std::collections::HashSet<PublicKey>) -> TableChange {
        let _one_at_a_time = self.updating.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &self.shared;
        let current = shared.peers.load_full();
        let (table, change) = current.updated(specs, recreate, &shared.tunn_maker);
        shared.peers.store(Arc::new(table));
        change
    }

    /// The interface name (`wg0`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The tunnel addresses the interface should carry.
    pub fn addresses(&self) -> &[InterfaceAddress] {
        &self.addresses
    }

    /// Age of the oldest worker heartbeat: how long the slowest event loop has not turned.
    pub fn heartbeat_age(&self) -> Duration {
        let now = self.shared.now_ms();
        let oldest = self.shared.heartbeats.iter().map(|h| h.load(Ordering::Relaxed)).min().unwrap_or(0);
        Duration::from_millis(now.saturating_sub(oldest))
    }

    /// Whether every UDP socket is still bound to the listen port (read from the kernel).
    pub fn udp_bound(&self) -> bool {
        self.shared.sockets.iter().all(|s| s.local_addr().map(|a| a.port() == self.listen_port).unwrap_or(false))
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared
            .peers
            .load()
            .iter()
            .map(|peer| {
                let (last_handshake, tx, rx) =
                    peer.existing_tunn().map(|t| t.stats()).map_or((None, 0, 0), |(h, tx, rx, _, _)| (h, tx, rx));
                let info = peer.info();
                PeerStatus {
                    name: info.name,
                    public_key: peer.public_key,
                    allowed_ips: info.allowed_ips,
                    session_index: peer.index,
                    endpoint: peer.endpoint().map(udp::canonical),
                    last_handshake,
                    handshakes: peer.counters.handshakes.load(Ordering::Relaxed),
                    rx_bytes: rx as u64,
                    tx_bytes: tx as u64,
                    rejected_source: peer.counters.rejected_source.load(Ordering::Relaxed),
                    failover_handshakes: peer.counters.failover_handshakes.load(Ordering::Relaxed),
                    internal: peer.loopback_only,
                }
            })
            .collect()
    }

    /// Datagrams of sessions this bastion does not hold that come to `address` (taken over from
    /// a leaving sibling) are passed to `previous` (that sibling's WireGuard address), which
    /// may have them answered from `address`; `None` stops it.
    pub fn relay_from(&self, address: std::net::Ipv4Addr, previous: Option<std::net::SocketAddrV4>) {
        let mut relays = self.shared.relays.write().unwrap_or_else(|e| e.into_inner());
        match previous {
            Some(previous) => relays.taken.insert(address, previous),
            None => relays.taken.remove(&address),
        };
    }

    /// Datagrams of sessions this bastion does not hold that come to an address not taken
    /// over are passed to each of `siblings` (leaving ones' WireGuard addresses), which may
    /// have them answered from that address; an empty list stops it.
    pub fn relay_to_leaving(&self, siblings: Vec<std::net::SocketAddrV4>) {
        self.shared.relays.write().unwrap_or_else(|e| e.into_inner()).leaving = siblings;
    }

    /// How long ago an authenticated datagram last came to the local address `local`, over
    /// the peers whose latest datagrams arrive there; `None` when no peer's do.
    pub fn last_heard_on(&self, local: std::net::Ipv4Addr) -> Option<Duration> {
        let now = self.shared.now_ms();
        let peers = self.shared.peers.load();
        let heard = peers
            .iter()
            .filter(|peer| peer.path().and_then(|p| p.local) == Some(local))
            .map(|peer| peer.last_authenticated_ms.load(Ordering::Relaxed))
            .max()?;
        Some(Duration::from_millis(now.saturating_sub(heard)))
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Which offloads are in use now (UDP GSO turns itself off when the kernel refuses it).
    pub fn offloads(&self) -> OffloadsInUse {
        let s = &self.shared;
        OffloadsInUse {
            udp_gso: s.udp_gso.load(Ordering::Relaxed),
            udp_gro: s.udp_gro,
            tun_tso: s.tun_opened.tso,
            tun_coalescing: s.tun_opened.vnet_header && s.tun_coalesce,
        }
    }

    /// Stops the threads and closes the TUN queues (the kernel then removes the interface).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let threads: Vec<JoinHandle<()>> = self.threads.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// MTU, addresses, up — over rtnetlink.
fn configure_link(spec: &TunnelSpec) -> io::Result<()> {
    let link = route::link_by_name(&spec.name)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the TUN interface vanished"))?;
    route::set_mtu(link.index, spec.mtu as u32)?;
    route::set_tx_queue_length(link.index, TUN_TX_QUEUE_PACKETS)?;
    // IPv6 drops global addresses when a link goes down; keep ours across a down/up.
    let keep = format!("/proc/sys/net/ipv6/conf/{}/keep_addr_on_down", spec.name);
    if std::path::Path::new(&keep).exists() {
        let _ = std::fs::write(&keep, "1");
    }
    for address in &spec.addresses {
        route::add_address(link.index, address.address, address.prefix_len)?;
    }
    route::set_link_up(link.index, true)
}
