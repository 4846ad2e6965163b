//! The peer table: every peer's boringtun `Tunn`, endpoint and counters, and the three ways a
//! packet finds its peer — by session index (data, response, cookie), by static public key
//! (handshake initiation), and by allowed IPs (cryptokey routing, both directions).
//!
//! Session indices are derived from the peer's public key, not drawn at random: every bastion
//! of a cluster with the same peer set gives a peer the same index, so a packet carrying a
//! session index names its peer on any of them (the basis of fast failover).
//!
//! A peer's `Tunn` (about 10 KiB: eight session slots with their keys and replay windows) is
//! made the first time the peer needs one — its first handshake, or a packet for it — so the
//! many configured devices that are not connected cost a few hundred bytes each. A peer this
//! bastion must reach by itself (an endpoint and a keepalive in its config) gets one at once.

use super::udp;
use crate::keys::PublicKey;
use boringtun::noise::Tunn;
use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// boringtun keeps the low 8 bits of a receiver index for its session ring, so a peer's own
/// index has 24 bits.
const INDEX_BITS: u32 = 24;

/// What a peer is built from: the config's view plus the flags the service adds.
pub struct PeerSpec {
    pub name: String,
    pub public_key: PublicKey,
    pub preshared_key: Option<[u8; 32]>,
    pub allowed_ips: Vec<IpNetwork>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    /// Accept packets for this peer only from a loopback source (the self-test's own peer).
    pub loopback_only: bool,
}

/// What a peer's `Tunn` is made from, kept until it is made (and for a rebuild).
pub struct TunnRecipe {
    pub public_key: PublicKey,
    pub preshared_key: Option<[u8; 32]>,
    pub persistent_keepalive: Option<u16>,
}

impl Drop for TunnRecipe {
    fn drop(&mut self) {
        if let Some(key) = self.preshared_key.as_mut() {
            zeroize::Zeroize::zeroize(key);
        }
    }
}

/// Makes a `Tunn` from a recipe and the peer's session index (the caller owns the private key
/// and the rate-limiter choice).
pub type TunnMaker = Arc<dyn Fn(&TunnRecipe, u32) -> Tunn + Send + Sync>;

/// A locked peer's `Tunn`, made if it did not exist yet (see [`LivePeer::lock_tunn`]).
pub struct TunnGuard<'a>(MutexGuard<'a, Option<Box<Tunn>>>);

impl Deref for TunnGuard<'_> {
    type Target = Tunn;
    fn deref(&self) -> &Tunn {
        self.0.as_deref().expect("a TunnGuard always holds a Tunn")
    }
}

impl DerefMut for TunnGuard<'_> {
    fn deref_mut(&mut self) -> &mut Tunn {
        self.0.as_deref_mut().expect("a TunnGuard always holds a Tunn")
    }
}

/// Counters a status page shows; all relaxed atomics, updated on the data path.
#[derive(Default)]
pub struct PeerCounters {
    pub handshakes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    /// Decrypted packets whose source was outside the peer's allowed IPs.
    pub rejected_source: AtomicU64,
    /// Handshakes we started because a packet named this peer while we had no session for it
    /// (fast failover).
    pub failover_handshakes: AtomicU64,
}

/// What a reload may change about a peer without touching its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub name: String,
    pub allowed_ips: Vec<IpNetwork>,
}

pub struct LivePeer {
    pub public_key: PublicKey,
    info: RwLock<PeerInfo>,
    /// The 24-bit session index base (boringtun appends 8 bits per session).
    pub index: u32,
    recipe: TunnRecipe,
    maker: TunnMaker,
    /// Made when first needed (see the module comment).
    tunn: Mutex<Option<Box<Tunn>>>,
    endpoint: RwLock<Option<SocketAddr>>,
    /// The endpoint as one word when it has one (`endpoint_word`), else 0: the check every
    /// authenticated packet makes, without the lock.
    endpoint_word: AtomicU64,
    /// The local IPv4 address the peer's authenticated datagrams last came to (0: not known):
    /// replies leave from it (see `udp::Path`).
    local_v4: AtomicU32,
    /// The sibling relaying the peer's datagrams (`udp::Path::via`), packed as address << 16 |
    /// port (0: none).
    via: AtomicU64,
    pub loopback_only: bool,
    pub counters: PeerCounters,
    /// When we last started a fast-failover handshake (milliseconds on the data plane's clock;
    /// 0 = never): the rate limit that keeps a spoofed packet from making us an amplifier.
    pub last_failover_ms: AtomicU64,
    /// When a packet from this peer last passed authentication (same clock; 0 = never): while
    /// it is recent, a packet of an unknown session claiming to be the peer is a forgery.
    pub last_authenticated_ms: AtomicU64,
    /// When the failover line was last logged for this peer, and how many were left out since.
    pub last_failover_log_ms: AtomicU64,
    pub failover_lines_left_out: AtomicU64,
}

impl LivePeer {
    fn new(spec: PeerSpec, index: u32, maker: &TunnMaker) -> LivePeer {
        let recipe = TunnRecipe {
            public_key: spec.public_key,
            preshared_key: spec.preshared_key,
            persistent_keepalive: spec.persistent_keepalive,
        };
        let reaches_out = spec.endpoint.is_some() && spec.persistent_keepalive.is_some();
        let tunn = reaches_out.then(|| Box::new(maker(&recipe, index)));
        LivePeer {
            public_key: spec.public_key,
            info: RwLock::new(PeerInfo { name: spec.name, allowed_ips: spec.allowed_ips }),
            index,
            recipe,
            maker: maker.clone(),
            tunn: Mutex::new(tunn),
            endpoint: RwLock::new(spec.endpoint),
            endpoint_word: AtomicU64::new(spec.endpoint.and_then(endpoint_word).unwrap_or(0)),
            local_v4: AtomicU32::new(0),
            via: AtomicU64::new(0),
            loopback_only: spec.loopback_only,
            counters: PeerCounters::default(),
            last_failover_ms: AtomicU64::new(0),
            last_authenticated_ms: AtomicU64::new(0),
            last_failover_log_ms: AtomicU64::new(0),
            failover_lines_left_out: AtomicU64::new(0),
        }
    }

    /// The peer's name (for logs and status).
    pub fn name(&self) -> String {
        self.info().name
    }

    pub fn info(&self) -> PeerInfo {
        self.info.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn endpoint(&self) -> Option<SocketAddr> {
        *self.endpoint.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Where datagrams to the peer go, and the local address they leave from.
    pub fn path(&self) -> Option<udp::Path> {
        let local = Some(Ipv4Addr::from(self.local_v4.load(Ordering::Relaxed))).filter(|a| !a.is_unspecified());
        let via = self.via.load(Ordering::Relaxed);
        let via = (via != 0).then(|| SocketAddrV4::new(Ipv4Addr::from((via >> 16) as u32), via as u16));
        self.endpoint().map(|remote| udp::Path { remote, local, via })
    }

    /// Records the path of an authenticated packet; returns the old endpoint when the peer's
    /// address moved.
    pub fn update_path(&self, path: udp::Path) -> Option<Option<SocketAddr>> {
        let local = path.local.map_or(0, u32::from);
        if self.local_v4.load(Ordering::Relaxed) != local {
            self.local_v4.store(local, Ordering::Relaxed);
        }
        let via = path.via.map_or(0, |v| (u64::from(u32::from(*v.ip())) << 16) | u64::from(v.port()));
        if self.via.load(Ordering::Relaxed) != via {
            self.via.store(via, Ordering::Relaxed);
        }
        self.update_endpoint(path.remote)
    }

    /// Records the authenticated source of a packet; returns the old endpoint when it moved.
    pub fn update_endpoint(&self, source: SocketAddr) -> Option<Option<SocketAddr>> {
        let word = endpoint_word(source);
        let unmoved = match word {
            Some(word) => self.endpoint_word.load(Ordering::Relaxed) == word,
            None => self.endpoint() == Some(source),
        };
        if unmoved {
            return None;
        }
        let mut slot = self.endpoint.write().unwrap_or_else(|e| e.into_inner());
        let old = *slot;
        if old == Some(source) {
            return None;
        }
        *slot = Some(source);
        self.endpoint_word.store(word.unwrap_or(0), Ordering::Relaxed);
        Some(old)
    }

    /// Whether a packet from `source` may speak for this peer at all.
    pub fn admits_source(&self, source: &SocketAddr) -> bool {
        !self.loopback_only || source.ip().to_canonical().is_loopback()
    }

    /// The peer's `Tunn`, locked; made now if the peer had none.
    pub fn lock_tunn(&self) -> TunnGuard<'_> {
        let mut slot = self.tunn.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(Box::new((self.maker)(&self.recipe, self.index)));
        }
        TunnGuard(slot)
    }

    /// The peer's `Tunn`, locked, only if it has one (timers and status do not make one).
    pub fn existing_tunn(&self) -> Option<TunnGuard<'_>> {
        let slot = self.tunn.lock().unwrap_or_else(|e| e.into_inner());
        slot.is_some().then(|| TunnGuard(slot))
    }

    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// An IPv4 endpoint, plain or IPv4-mapped (no flow label, no scope), as one word that is never
/// 0 and differs between the two forms; `None` for any other endpoint.
fn endpoint_word(endpoint: SocketAddr) -> Option<u64> {
    let (form, ip, port) = match endpoint {
        SocketAddr::V4(a) => (1, *a.ip(), a.port()),
        SocketAddr::V6(a) if a.flowinfo() == 0 && a.scope_id() == 0 => (2, a.ip().to_ipv4_mapped()?, a.port()),
        SocketAddr::V6(_) => return None,
    };
    Some(form << 48 | u64::from(u32::from(ip)) << 16 | u64::from(port))
}

/// Index of a peer in the table.
pub type PeerId = usize;

/// What [`PeerTable::updated`] did, in numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableChange {
    pub added: usize,
    pub removed: usize,
    /// Carried over with a new name or new allowed IPs (same session).
    pub updated: usize,
    /// Built again with a new `Tunn` (preshared key or keepalive changed): its session restarts.
    pub recreated: usize,
    pub unchanged: usize,
}

pub struct PeerTable {
    peers: Vec<Arc<LivePeer>>,
    by_index: HashMap<u32, PeerId>,
    by_key: HashMap<[u8; 32], PeerId>,
    routes: IpNetworkTable<PeerId>,
    /// Per peer, the single addresses (/32, /128) of its allowed IPs that route to it: a source
    /// among them passes the inbound check without a longest-prefix walk (nothing is more
    /// specific than a host route).
    host_routes: Vec<Vec<IpAddr>>,
}

impl PeerTable {
    /// Builds the table; `maker` makes each peer's `Tunn` when it is needed.
    pub fn new(specs: Vec<PeerSpec>, maker: &TunnMaker) -> Self {
        let keys: Vec<PublicKey> = specs.iter().map(|s| s.public_key).collect();
        let indices = derive_session_indices(&keys);
        let peers =
            specs.into_iter().zip(indices).map(|(spec, index)| Arc::new(LivePeer::new(spec, index, maker))).collect();
        PeerTable::from_peers(peers)
    }

    fn from_peers(peers: Vec<Arc<LivePeer>>) -> Self {
        let mut table = PeerTable {
            peers: Vec::new(),
            by_index: HashMap::new(),
            by_key: HashMap::new(),
            routes: IpNetworkTable::new(),
            host_routes: Vec::new(),
        };
        for (id, peer) in peers.iter().enumerate() {
            table.by_index.insert(peer.index, id);
            table.by_key.insert(peer.public_key.0, id);
            for net in &peer.info().allowed_ips {
                table.routes.insert(*net, id);
            }
        }
        // After every insert: a host route another peer took over (the same prefix twice, which
        // the config refuses anyway) is not this peer's.
        table.host_routes = peers
            .iter()
            .enumerate()
            .map(|(id, peer)| {
                let info = peer.info();
                let is_host = |net: &IpNetwork| net.netmask() == if net.is_ipv4() { 32 } else { 128 };
                let hosts =
                    info.allowed_ips.iter().filter(|net| is_host(net) && table.routes.exact_match(**net) == Some(&id));
                hosts.map(|net| net.network_address()).collect()
            })
            .collect();
        table.peers = peers;
        table
    }

    /// The table for a new peer set (a reload). A peer whose key is in this table and not in
    /// `recreate` is carried over as it is — the same `Tunn`, session, endpoint and counters —
    /// with its name and allowed IPs updated (and its endpoint, when the spec gives one). Every
    /// other spec becomes a new peer: it keeps the index its key had here, or gets the first
    /// free candidate of its own key's sequence. Peers not in `specs` are gone from the new
    /// table (their session ends when the last packet in flight lets go of them).
    pub fn updated(
        &self,
        specs: Vec<PeerSpec>,
        recreate: &HashSet<PublicKey>,
        maker: &TunnMaker,
    ) -> (PeerTable, TableChange) {
        let mut change = TableChange::default();
        let wanted: HashSet<[u8; 32]> = specs.iter().map(|s| s.public_key.0).collect();
        let mut taken: HashSet<u32> =
            specs.iter().filter_map(|s| self.by_public_key(&s.public_key.0)).map(|id| self.peers[id].index).collect();
        change.removed = self.peers.iter().filter(|p| !wanted.contains(&p.public_key.0)).count();
        let mut peers = Vec::with_capacity(specs.len());
        for spec in specs {
            match self.by_public_key(&spec.public_key.0).map(|id| &self.peers[id]) {
                Some(existing) if !recreate.contains(&spec.public_key) => {
                    let info = PeerInfo { name: spec.name.clone(), allowed_ips: spec.allowed_ips.clone() };
                    let mut slot = existing.info.write().unwrap_or_else(|e| e.into_inner());
                    if *slot != info {
                        *slot = info;
                        change.updated += 1;
                    } else {
                        change.unchanged += 1;
                    }
                    drop(slot);
                    if let Some(endpoint) = spec.endpoint {
                        existing.update_endpoint(endpoint);
                    }
                    peers.push(existing.clone());
                }
                Some(existing) => {
                    peers.push(Arc::new(LivePeer::new(spec, existing.index, maker)));
                    change.recreated += 1;
                }
                None => {
                    let index = (0..)
                        .map(|attempt| session_index_candidate(&spec.public_key, attempt))
                        .find(|c| *c != 0 && !taken.contains(c))
                        .expect("2^24 indices for at most a few thousand peers");
                    taken.insert(index);
                    peers.push(Arc::new(LivePeer::new(spec, index, maker)));
                    change.added += 1;
                }
            }
        }
        (PeerTable::from_peers(peers), change)
    }

    pub fn get(&self, id: PeerId) -> &LivePeer {
        &self.peers[id]
    }

    pub fn iter(&self) -> impl Iterator<Item = &LivePeer> {
        self.peers.iter().map(|p| &**p)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The peer a receiver index (from a data, response or cookie message) belongs to.
    pub fn by_receiver_index(&self, receiver_index: u32) -> Option<PeerId> {
        self.by_index.get(&(receiver_index >> 8)).copied()
    }

    pub fn by_public_key(&self, key: &[u8; 32]) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// Outbound cryptokey routing: the peer whose allowed IPs hold `destination` most closely.
    pub fn route(&self, destination: IpAddr) -> Option<PeerId> {
        self.routes.longest_match(destination).map(|(_, id)| *id)
    }

    /// Inbound cryptokey routing: a packet decrypted from `peer` with this source address is
    /// accepted only when routing the source would lead back to the same peer.
    pub fn source_allowed(&self, peer: PeerId, source: IpAddr) -> bool {
        self.host_routes[peer].contains(&source) || self.route(source) == Some(peer)
    }
}

/// Gives each key a 24-bit session index derived from the key alone, the same on every bastion
/// with the same peer set. Collisions (rare: two keys whose hashes share 24 bits) are resolved
/// by re-hashing with a counter, visiting keys in sorted order so the outcome does not depend on
/// the order of the config file. Returns the indices in the order of `keys`.
pub fn derive_session_indices(keys: &[PublicKey]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| keys[i].0);
    let mut taken = HashSet::new();
    let mut indices = vec![0u32; keys.len()];
    for i in order {
        let mut attempt: u32 = 0;
        loop {
            let candidate = session_index_candidate(&keys[i], attempt);
            if candidate != 0 && taken.insert(candidate) {
                indices[i] = candidate;
                break;
            }
            attempt += 1;
        }
    }
    indices
}

fn session_index_candidate(key: &PublicKey, attempt: u32) -> u32 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"bastion session index v1");
    ctx.update(&key.0);
    ctx.update(&attempt.to_le_bytes());
    let digest = ctx.finish();
    let bytes = digest.as_ref();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & ((1 << INDEX_BITS) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    fn key(n: u8) -> PublicKey {
        PrivateKey::from_bytes([n; 32]).public_key()
    }

    #[test]
    fn indices_do_not_depend_on_config_order() {
        let keys = vec![key(1), key(2), key(3)];
        let forward = derive_session_indices(&keys);
        let reversed: Vec<PublicKey> = keys.iter().rev().copied().collect();
        let mut backward = derive_session_indices(&reversed);
        backward.reverse();
        assert_eq!(forward, backward);
        assert!(forward.iter().all(|&i| i != 0 && i < (1 << 24)));
    }

    #[test]
    fn indices_are_unique_for_many_peers() {
        let keys: Vec<PublicKey> = (0..=255u8).map(key).collect();
        let indices = derive_session_indices(&keys);
        let unique: HashSet<u32> = indices.iter().copied().collect();
        assert_eq!(unique.len(), keys.len());
    }

    #[test]
    fn cryptokey_routing_uses_longest_prefix_and_checks_sources() {
        let private = PrivateKey::from_bytes([9; 32]);
        let specs = vec![
            PeerSpec {
                name: "site".into(),
                public_key: key(1),
                preshared_key: None,
                allowed_ips: vec!["10.0.0.0/8".parse().unwrap()],
                endpoint: None,
                persistent_keepalive: None,
                loopback_only: false,
            },
            PeerSpec {
                name: "alice".into(),
                public_key: key(2),
                preshared_key: None,
                allowed_ips: vec!["10.1.2.3/32".parse().unwrap()],
                endpoint: None,
                persistent_keepalive: None,
                loopback_only: false,
            },
        ];
        let maker: TunnMaker = Arc::new(move |recipe: &TunnRecipe, index| {
            Tunn::new(private.to_x25519(), recipe.public_key.to_x25519(), None, None, index, None)
        });
        let table = PeerTable::new(specs, &maker);
        assert!(table.iter().all(|p| p.existing_tunn().is_none()), "no Tunn before it is needed");
        assert_eq!(table.get(1).lock_tunn().stats().1, 0);
        assert!(table.get(1).existing_tunn().is_some() && table.get(0).existing_tunn().is_none());
        assert_eq!(table.route("10.1.2.3".parse().unwrap()), Some(1));
        assert_eq!(table.route("10.1.2.4".parse().unwrap()), Some(0));
        assert_eq!(table.route("192.168.0.1".parse().unwrap()), None);
        assert!(table.source_allowed(1, "10.1.2.3".parse().unwrap()));
        assert!(!table.source_allowed(0, "10.1.2.3".parse().unwrap()));
        assert!(table.source_allowed(0, "10.1.2.4".parse().unwrap()));
        assert!(!table.source_allowed(1, "10.1.2.4".parse().unwrap()));
        let alice_index = table.get(1).index;
        assert_eq!(table.by_receiver_index((alice_index << 8) | 7), Some(1));

        // A host route given twice (the config refuses it; the table must still agree with its
        // routing): only the peer the address routes to may send from it.
        let twice = |n: u8, ips: &[&str]| PeerSpec {
            name: format!("p{n}"),
            public_key: key(n),
            preshared_key: None,
            allowed_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            endpoint: None,
            persistent_keepalive: None,
            loopback_only: false,
        };
        let table = PeerTable::new(vec![twice(3, &["10.9.9.9/32", "fd00::1/128"]), twice(4, &["10.9.9.9/32"])], &maker);
        let owner = table.route("10.9.9.9".parse().unwrap()).unwrap();
        assert!(table.source_allowed(owner, "10.9.9.9".parse().unwrap()));
        assert!(!table.source_allowed(1 - owner, "10.9.9.9".parse().unwrap()));
        assert!(table.source_allowed(0, "fd00::1".parse().unwrap()));
        assert!(!table.source_allowed(1, "fd00::1".parse().unwrap()));
    }

    #[test]
    fn an_endpoint_moves_only_when_its_address_changes_in_any_form() {
        let private = PrivateKey::from_bytes([9; 32]);
        let maker: TunnMaker = Arc::new(move |recipe: &TunnRecipe, index| {
            Tunn::new(private.to_x25519(), recipe.public_key.to_x25519(), None, None, index, None)
        });
        let given: SocketAddr = "198.51.100.7:51820".parse().unwrap();
        let spec = PeerSpec {
            name: "roamer".into(),
            public_key: key(5),
            preshared_key: None,
            allowed_ips: vec![],
            endpoint: Some(given),
            persistent_keepalive: None,
            loopback_only: false,
        };
        let table = PeerTable::new(vec![spec], &maker);
        let peer = table.get(0);
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(peer.update_endpoint(given), None, "the configured endpoint is known");
        // Each step: where the packet came from, and the endpoint it moved from (if it moved).
        let steps = [
            ("198.51.100.7:51821", Some(Some(given))),
            ("198.51.100.7:51821", None),
            ("[::ffff:198.51.100.7]:51821", Some(Some(at("198.51.100.7:51821")))),
            ("[::ffff:198.51.100.7]:51821", None),
            ("[2001:db8::7]:51821", Some(Some(at("[::ffff:198.51.100.7]:51821")))),
            ("[2001:db8::7]:51821", None),
            // The same IPv6 address with a scope.
            ("[2001:db8::7%3]:51821", Some(Some(at("[2001:db8::7]:51821")))),
            ("198.51.100.7:51821", Some(Some(at("[2001:db8::7%3]:51821")))),
            ("198.51.100.7:51821", None),
        ];
        for (from, moved) in steps {
            assert_eq!(peer.update_endpoint(at(from)), moved, "from {from}");
            assert_eq!(peer.endpoint(), Some(at(from)));
        }
        assert_ne!(endpoint_word(at("0.0.0.0:0")), Some(0));
    }
}
