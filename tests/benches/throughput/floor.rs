//! The floors the bench reports beside the runs: what sealing and opening 1,420-byte packets
//! costs on one core with the code the bastion uses (boringtun's `Tunn`, ChaCha20-Poly1305 from
//! RustCrypto: the crypto alone, no I/O), and how much memory `bastion run` takes with 1 and
//! with 1,000 configured peers, and what a connected peer adds (200 boringtun peers handshake).

use std::time::{Duration, Instant};

use bastion_tests::bastion::{Bastion, BastionSetup};
use bastion_tests::Topology;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

/// IP packet size of a full tunnel MTU.
const PACKET: usize = 1420;

#[derive(Clone, Debug)]
pub struct Floor {
    /// CPU seconds per 10⁹ bytes of IP packets, one core.
    pub seal_cpu_per_gb: f64,
    pub open_cpu_per_gb: f64,
    /// `bastion run`'s resident memory (KiB) with 1 and 1,000 peers, and per peer.
    pub rss_kib_1: Option<u64>,
    pub rss_kib_1000: Option<u64>,
    /// With `CONNECTED` storm peers configured: before any of them connected, and after all did.
    pub rss_kib_idle_connected: Option<(u64, u64)>,
}

/// Peers that connect for the connected-peer memory figure.
const CONNECTED: usize = 200;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime(2) with a valid clock id and a pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A full IPv4 packet of `PACKET` bytes (the receiving `Tunn` checks the header's length).
fn ip_packet() -> Vec<u8> {
    let mut packet = vec![0u8; PACKET];
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&(PACKET as u16).to_be_bytes());
    packet[8] = 64;
    packet[9] = 17;
    packet[12..16].copy_from_slice(&[10, 100, 0, 2]);
    packet[16..20].copy_from_slice(&[10, 0, 1, 10]);
    packet
}

/// Two `Tunn`s with a session between them.
fn session() -> (Tunn, Tunn) {
    let (a_key, b_key) = (StaticSecret::from([1u8; 32]), StaticSecret::from([2u8; 32]));
    let (a_pub, b_pub) = (PublicKey::from(&a_key), PublicKey::from(&b_key));
    let mut a = Tunn::new(a_key, b_pub, None, None, 1, None);
    let mut b = Tunn::new(b_key, a_pub, None, None, 2, None);
    let (mut x, mut y) = (vec![0u8; 2048], vec![0u8; 2048]);
    let TunnResult::WriteToNetwork(init) = a.format_handshake_initiation(&mut x, false) else {
        panic!("no initiation")
    };
    let TunnResult::WriteToNetwork(response) = b.decapsulate(None, init, &mut y) else { panic!("no response") };
    if let TunnResult::WriteToNetwork(keepalive) = a.decapsulate(None, response, &mut x) {
        let _ = b.decapsulate(None, keepalive, &mut y);
    }
    (a, b)
}

/// Seal on one `Tunn` and open on the other for about `seconds` each; CPU-s/GB of each.
pub fn crypto(seconds: f64) -> (f64, f64) {
    let (mut a, mut b) = session();
    let packet = ip_packet();
    let batch = 4096;
    let mut sealed: Vec<Vec<u8>> = Vec::with_capacity(batch);
    let mut out = vec![0u8; 2048];
    let (mut seal_cpu, mut open_cpu, mut bytes) = (Duration::ZERO, Duration::ZERO, 0u64);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < 2.0 * seconds {
        sealed.clear();
        let t = thread_cpu();
        for _ in 0..batch {
            match a.encapsulate(&packet, &mut out) {
                TunnResult::WriteToNetwork(d) => sealed.push(d.to_vec()),
                other => panic!("seal: {other:?}"),
            }
        }
        // Copying the sealed datagram out is the bench's, not the seal's: a sixteenth of a
        // microsecond per packet, left in.
        seal_cpu += thread_cpu() - t;
        let t = thread_cpu();
        for datagram in &sealed {
            match b.decapsulate(None, datagram, &mut out) {
                TunnResult::WriteToTunnelV4(..) => {}
                other => panic!("open: {other:?}"),
            }
        }
        open_cpu += thread_cpu() - t;
        bytes += (batch * PACKET) as u64;
    }
    let per_gb = |cpu: Duration| cpu.as_secs_f64() / (bytes as f64 / 1e9);
    (per_gb(seal_cpu), per_gb(open_cpu))
}

/// `bastion run`'s VmRSS once healthy, with the topology's one client as its peer and `extra`
/// more peers (random keys, one /32 each).
pub fn rss_kib(binary: &std::path::Path, extra: usize) -> Option<u64> {
    let topo = Topology::with(1, 1);
    let mut toml = String::new();
    for i in 0..extra {
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&bastion_tests::random_u64().to_ne_bytes());
        }
        use base64::Engine;
        let key =
            base64::engine::general_purpose::STANDARD.encode(PublicKey::from(&StaticSecret::from(key)).as_bytes());
        toml.push_str(&format!(
            "\n[[peer]]\nname = \"p{i}\"\npublic_key = \"{key}\"\nallowed_ips = [\"10.{}.{}.{}/32\"]\n",
            200 + i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    let setup = BastionSetup { extra_toml: toml, ..BastionSetup::default() };
    let bastion = Bastion::start(&topo, binary, setup);
    bastion.wait_healthy(Duration::from_secs(60)).ok()?;
    // Let the first self-test and the threads settle.
    std::thread::sleep(Duration::from_secs(2));
    vm_rss_kib(&bastion)
}

fn vm_rss_kib(bastion: &Bastion) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", bastion.process.pid())).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()?.parse().ok()))
}

/// `bastion run`'s VmRSS with `CONNECTED` boringtun peers configured, before any connected and
/// once every one has a session (each pinged the bastion and got its answer).
pub fn rss_kib_idle_connected(binary: &std::path::Path) -> Option<(u64, u64)> {
    use bastion_tests::storm::{drive_until_answered, tunnel_address, StormPeer};
    use bastion_tests::topology::BASTION_TUNNEL_V4;
    let topo = Topology::with(1, 1);
    let public = topo.bastion_keys.public.clone();
    let mut peers: Vec<StormPeer> = (0..CONNECTED)
        .map(|i| {
            let index = (bastion_tests::random_u64() as u32) >> 8;
            StormPeer::new(&topo.clients[0].ns, &format!("c{i}"), tunnel_address(i), &public, index)
        })
        .collect();
    let setup = BastionSetup { extra_toml: peers.iter().map(StormPeer::toml).collect(), ..BastionSetup::default() };
    let bastion = Bastion::start(&topo, binary, setup);
    bastion.wait_healthy(Duration::from_secs(60)).ok()?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = vm_rss_kib(&bastion)?;
    // In batches under the bastion's handshake rate limit.
    for batch in peers.chunks_mut(50) {
        let (every, give_up) = (Duration::from_millis(250), Duration::from_secs(30));
        drive_until_answered(batch, BASTION_TUNNEL_V4, topo.endpoint_v4(), every, give_up);
    }
    if peers.iter().any(|p| p.answered.is_none()) {
        eprintln!("bench: not every peer connected; no connected-peer memory figure");
        return None;
    }
    std::thread::sleep(Duration::from_secs(1));
    Some((idle, vm_rss_kib(&bastion)?))
}

pub fn measure(binary: &std::path::Path) -> Floor {
    let (seal_cpu_per_gb, open_cpu_per_gb) = crypto(1.5);
    Floor {
        seal_cpu_per_gb,
        open_cpu_per_gb,
        rss_kib_1: rss_kib(binary, 0),
        rss_kib_1000: rss_kib(binary, 999),
        rss_kib_idle_connected: rss_kib_idle_connected(binary),
    }
}

impl Floor {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Floors, measured in this run: sealing 1,420-byte packets with boringtun's `Tunn` (the code \
             the bastion runs; ChaCha20-Poly1305) costs {:.2} CPU-s/GB on one core, opening them {:.2} \
             CPU-s/GB (crypto and framing only, no I/O).",
            self.seal_cpu_per_gb, self.open_cpu_per_gb
        );
        if let (Some(one), Some(thousand)) = (self.rss_kib_1, self.rss_kib_1000) {
            s.push_str(&format!(
                " `bastion run` resident memory: {:.1} MiB with 1 peer, {:.1} MiB with 1,000 peers: {:.1} KiB \
                 per peer.",
                one as f64 / 1024.0,
                thousand as f64 / 1024.0,
                thousand.saturating_sub(one) as f64 / 999.0
            ));
        }
        if let Some((idle, connected)) = self.rss_kib_idle_connected {
            s.push_str(&format!(
                " With {CONNECTED} peers configured: {:.1} MiB before any connected, {:.1} MiB once all had a \
                 session: {:.1} KiB per connected peer.",
                idle as f64 / 1024.0,
                connected as f64 / 1024.0,
                connected.saturating_sub(idle) as f64 / CONNECTED as f64
            ));
        }
        s
    }
}
