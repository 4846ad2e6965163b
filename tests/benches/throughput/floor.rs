//! The floors the bench reports beside the runs: what sealing and opening 1,420-byte packets
//! costs on one core with the code the bastion uses (boringtun's `Tunn`, ChaCha20-Poly1305 from
//! ring: the crypto alone, no I/O), and how much memory `bastion run` takes with 1 and
//! with 1,000 configured peers, and what a connected peer adds (200 boringtun peers handshake).

use std::time::Duration;

use bastion_tests::bastion::{Bastion, BastionSetup};
use bastion_tests::Topology;

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
    /// Seal and open CPU-s/GB of the aarch64 build under QEMU user mode (emulated).
    pub aarch64_emulated: Option<(f64, f64)>,
}

/// Peers that connect for the connected-peer memory figure.
const CONNECTED: usize = 200;

/// `bastion run`'s VmRSS once healthy, with the topology's one client as its peer and `extra`
/// more peers (random keys, one /32 each).
pub fn rss_kib(binary: &std::path::Path, extra: usize) -> Option<u64> {
    let topo = Topology::with(1, 1);
    let mut toml = String::new();
    for i in 0..extra {
        let key = bastion_tests::handshake::public_key_of(bastion_tests::handshake::random_key());
        let address = std::net::Ipv4Addr::new(10, (200 + i / 65536) as u8, ((i / 256) % 256) as u8, (i % 256) as u8);
        toml.push_str(&bastion_tests::bastion::peer_toml(&format!("p{i}"), &key, address));
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

/// The crypto floor of the aarch64 build, run under QEMU user mode.
fn aarch64_emulated(tools: &crate::bed::Aarch64) -> Option<(f64, f64)> {
    let out = std::process::Command::new(&tools.qemu).arg(&tools.crypto_floor).arg("1.5").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["seal", seal, "open", open] => Some((seal.parse().ok()?, open.parse().ok()?)),
        _ => {
            eprintln!("bench: the aarch64 crypto floor printed {text:?}");
            None
        }
    }
}

pub fn measure(binary: &std::path::Path, aarch64: Option<&crate::bed::Aarch64>) -> Floor {
    let (seal_cpu_per_gb, open_cpu_per_gb) = bastion_tests::crypto_floor::seal_and_open(1.5);
    Floor {
        seal_cpu_per_gb,
        open_cpu_per_gb,
        rss_kib_1: rss_kib(binary, 0),
        rss_kib_1000: rss_kib(binary, 999),
        rss_kib_idle_connected: rss_kib_idle_connected(binary),
        aarch64_emulated: aarch64.and_then(aarch64_emulated),
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
        if let Some((seal, open)) = self.aarch64_emulated {
            s.push_str(&format!(
                " The same floor of the aarch64 build under QEMU user mode (emulated, so {:.0}× and {:.0}× the \
                 native figures say more about the emulator than about a Graviton): seal {seal:.2}, open {open:.2} \
                 CPU-s/GB.",
                seal / self.seal_cpu_per_gb,
                open / self.open_cpu_per_gb
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
