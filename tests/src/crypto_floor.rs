//! The crypto floor: what sealing and opening 1,420-byte packets costs on one core with the code
//! the bastion runs (boringtun's `Tunn`: ring's ChaCha20-Poly1305, its session bookkeeping), no
//! I/O. `make bench` reports it beside every run; the `crypto-floor` binary prints it, so the
//! same measurement runs for aarch64 under QEMU user mode.

use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

/// IP packet size of a full tunnel MTU.
pub const PACKET: usize = 1420;

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu() -> Duration {
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
pub fn seal_and_open(seconds: f64) -> (f64, f64) {
    let (mut a, mut b) = session();
    let packet = ip_packet();
    let batch = 4096;
    // The sealed datagrams of one batch, back to back in a buffer allocated once: allocating
    // each (as this did until December 2026) put malloc's page faults into the seal's figure,
    // about a fifth of it.
    let mut sealed = vec![0u8; batch * (PACKET + 32)];
    let mut lengths = Vec::with_capacity(batch);
    let mut out = vec![0u8; 2048];
    let (mut seal_cpu, mut open_cpu, mut bytes) = (Duration::ZERO, Duration::ZERO, 0u64);
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < 2.0 * seconds {
        lengths.clear();
        let t = thread_cpu();
        for slot in sealed.chunks_mut(PACKET + 32) {
            match a.encapsulate(&packet, slot) {
                TunnResult::WriteToNetwork(d) => lengths.push(d.len()),
                other => panic!("seal: {other:?}"),
            }
        }
        seal_cpu += thread_cpu() - t;
        let t = thread_cpu();
        for (slot, len) in sealed.chunks(PACKET + 32).zip(&lengths) {
            match b.decapsulate(None, &slot[..*len], &mut out) {
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
