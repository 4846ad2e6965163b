//! The bastion's own ceiling: a load generator built on boringtun's `noise` that offers more
//! than a bastion can forward, so what limits the run is the bastion, not a client.
//!
//! `PEERS` real sessions (each a boringtun `Tunn` with its own key and UDP socket, so each is its
//! own flow and the kernel can spread them over a bastion's sockets) send UDP packets to a sink
//! in the private host (an nftables rule that counts and drops them before any socket). One
//! generator thread seals on the fly and sends each peer's datagrams as UDP GSO trains of
//! `TRAIN` (as a modern client does); sealing costs it about 1 CPU-s per GB, so one core offers
//! several times what one core of a bastion forwards. Delivered packets are counted at the sink.
//!
//! Layouts: `pinned` puts the bastion on CPU 0 (`bastion run` then starts one worker) and the
//! generator on CPU 1, so the bastion has one core to itself; `shared` leaves both unpinned
//! (`bastion run` starts two workers) and the generator competes with them for the two cores;
//! `one peer` is `shared` with a single session, so it shows what one peer gets from two
//! workers (wireguard-go spreads one peer's crypto over its cores; `bastion run` does not).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bastion_tests::crypto_floor::thread_cpu;
use bastion_tests::handshake::{decode_key, public_key_of, random_key};
use bastion_tests::Topology;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::bed::{Binaries, ExtraPeer, Implementation, Running};
use crate::cpu;

/// Sessions the generator drives (`Layout::SharedOnePeer`: one).
const PEERS: usize = 4;
/// Datagrams per `sendmsg` (UDP GSO): 40 × 1,452 bytes stays under 64 KiB.
const TRAIN: usize = 40;
/// The sink's UDP port in the private host.
const SINK_PORT: u16 = 9;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Pinned,
    Shared,
    SharedOnePeer,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Layout::Pinned, Layout::Shared, Layout::SharedOnePeer];

    /// Its name on the command line (`--ceiling-layouts`).
    pub fn name(self) -> &'static str {
        match self {
            Layout::Pinned => "pinned",
            Layout::Shared => "shared",
            Layout::SharedOnePeer => "one-peer",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Layout::Pinned => "pinned: bastion on CPU 0, generator on CPU 1",
            Layout::Shared => "shared: both unpinned on 2 CPUs",
            Layout::SharedOnePeer => "one peer: shared, 1 session",
        }
    }

    /// Sessions the generator drives in this layout.
    pub fn peers(self) -> usize {
        match self {
            Layout::Pinned | Layout::Shared => PEERS,
            Layout::SharedOnePeer => 1,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Ceiling {
    pub implementation: Implementation,
    pub layout: Layout,
    /// IP packet size of the generated packets.
    pub packet_bytes: usize,
    /// The measured window (sending plus 0.3 s for what was queued): delivered rate and cores.
    pub seconds: f64,
    /// How long the generator sent: offered rate.
    pub send_seconds: f64,
    pub offered_packets: u64,
    pub delivered_packets: u64,
    pub bastion_cpu: f64,
    pub generator_cpu: f64,
    /// `bastion run`'s data-plane threads (workers), when it is the bastion.
    pub workers: Option<usize>,
}

impl Ceiling {
    pub fn delivered_per_second(&self) -> f64 {
        self.delivered_packets as f64 / self.seconds
    }

    pub fn delivered_gbit(&self) -> f64 {
        self.delivered_per_second() * self.packet_bytes as f64 * 8.0 / 1e9
    }

    pub fn offered_per_second(&self) -> f64 {
        self.offered_packets as f64 / self.send_seconds
    }
}

fn peer_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 100, 2, 1 + i as u8)
}

/// An IPv4/UDP packet of `size` bytes from `from` to the sink (UDP checksum 0: none, as IPv4
/// allows).
fn sink_packet(from: Ipv4Addr, to: Ipv4Addr, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&from.octets());
    p[16..20].copy_from_slice(&to.octets());
    let sum = bastion_tests::storm::internet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20..22].copy_from_slice(&40_000u16.to_be_bytes());
    p[22..24].copy_from_slice(&SINK_PORT.to_be_bytes());
    p[24..26].copy_from_slice(&((size - 20) as u16).to_be_bytes());
    p
}

/// One `sendmsg` of `bytes` cut by the kernel into datagrams of `segment` bytes (UDP GSO).
fn send_train(socket: &UdpSocket, bytes: &[u8], segment: u16, to: SocketAddrV4) -> std::io::Result<()> {
    // SAFETY: plain C structs, zeroed, then filled; every pointer in `msg` points at a local that
    //   outlives the sendmsg(2) call; the control buffer is u64-aligned and CMSG_SPACE(2) long.
    unsafe {
        let mut address: libc::sockaddr_in = std::mem::zeroed();
        address.sin_family = libc::AF_INET as libc::sa_family_t;
        address.sin_port = to.port().to_be();
        address.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
        let mut control = [0u64; 4];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut address as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(2) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        if libc::sendmsg(socket.as_raw_fd(), &msg, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
fn pin_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, passed by pointer with its size; pid 0 is the
    //   calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The sink's packet counter (nftables, in the private host).
fn sink_count(ns: &bastion_tests::Netns) -> u64 {
    let listing = ns.run(&["nft", "list", "table", "ip", "sink"]);
    listing.split_whitespace().skip_while(|w| *w != "packets").nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Completes a handshake of `tunn` with the bastion at `endpoint` over `socket`.
fn handshake(tunn: &mut Tunn, socket: &UdpSocket, endpoint: SocketAddr) -> Result<(), String> {
    let mut buf = vec![0u8; 2048];
    let mut datagram = vec![0u8; 2048];
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    for _ in 0..20 {
        if let TunnResult::WriteToNetwork(p) = tunn.format_handshake_initiation(&mut buf, true) {
            socket.send_to(p, endpoint).map_err(|e| e.to_string())?;
        }
        if let Ok((n, from)) = socket.recv_from(&mut datagram) {
            let mut result = tunn.decapsulate(Some(from.ip()), &datagram[..n], &mut buf);
            while let TunnResult::WriteToNetwork(p) = result {
                let _ = socket.send_to(p, endpoint);
                result = tunn.decapsulate(None, &[], &mut buf);
            }
            if tunn.stats().0.is_some() {
                return Ok(());
            }
        }
    }
    Err("no handshake with the bastion in 20 tries".into())
}

/// One ceiling measurement: `implementation` in `layout`, packets of `packet_bytes`, `seconds`.
pub fn measure(
    implementation: Implementation,
    layout: Layout,
    binaries: &Binaries,
    packet_bytes: usize,
    seconds: u32,
    offer_per_second: Option<u32>,
) -> Result<Ceiling, String> {
    let topo = Topology::with(1, 1);
    let privates: Vec<[u8; 32]> = (0..layout.peers()).map(|_| random_key()).collect();
    let extra: Vec<ExtraPeer> = privates
        .iter()
        .enumerate()
        .map(|(i, k)| ExtraPeer { name: format!("gen{i}"), public_key: public_key_of(*k), address: peer_address(i) })
        .collect();
    let secrets: Vec<StaticSecret> = privates.into_iter().map(StaticSecret::from).collect();
    let pin = layout == Layout::Pinned;
    if !matches!(
        implementation,
        Implementation::Bastion | Implementation::WireguardGoNew | Implementation::DataPlaneAarch64
    ) {
        return Err(format!("no ceiling run for {}", implementation.label()));
    }
    // `bastion run` pinned at start counts one CPU and starts one worker.
    let prefix = if pin { vec!["taskset".to_string(), "-c".into(), "0".into()] } else { Vec::new() };
    let running = Running::start(implementation, &topo, binaries, &extra, prefix)?;
    let pid = running.pid();
    if pin {
        let out = topo.bastion.exec(&["taskset", "-a", "-cp", "0", &pid.to_string()]);
        if !out.success() {
            return Err(format!("taskset: {out}"));
        }
    }
    let workers = match &running {
        Running::Bastion(_) => std::fs::read_dir(format!("/proc/{pid}/task")).ok().map(|tasks| {
            tasks
                .flatten()
                .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("wg-worker")))
                .count()
        }),
        Running::WireguardGo(_) | Running::Boringtun(_) => None,
    };
    let host_ns = &topo.private_hosts[0].ns;
    let rules = format!(
        "table ip sink {{\n\tchain pre {{\n\t\ttype filter hook prerouting priority -300; policy accept;\n\
         \t\tudp dport {SINK_PORT} counter drop\n\t}}\n}}\n"
    );
    let out = host_ns.exec_with_input(&["nft", "-f", "-"], rules.as_bytes());
    if !out.success() {
        return Err(format!("the sink's rules: {out}"));
    }

    let endpoint = topo.endpoint_v4();
    let SocketAddr::V4(endpoint_v4) = endpoint else { return Err("an IPv4 endpoint".into()) };
    let bastion_public = PublicKey::from(decode_key(&topo.bastion_keys.public));
    let sink = topo.private_hosts[0].v4;
    let client_ns = &topo.clients[0].ns;
    let mut peers = client_ns.enter(|| -> Result<Vec<(Tunn, UdpSocket, Vec<u8>)>, String> {
        let mut peers = Vec::new();
        for (i, secret) in secrets.into_iter().enumerate() {
            let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
            let index = (bastion_tests::random_u64() as u32) >> 8;
            let mut tunn = Tunn::new(secret, bastion_public, None, None, index, None);
            handshake(&mut tunn, &socket, endpoint)?;
            peers.push((tunn, socket, sink_packet(peer_address(i), sink, packet_bytes)));
        }
        Ok(peers)
    })?;
    let sink_before = sink_count(host_ns);
    let meter = cpu::Meter::start(&[pid]);
    let generated = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(u64, f64, f64), String> {
                if pin {
                    pin_thread(1);
                }
                let datagram_len = packet_bytes + 32;
                let mut train = vec![0u8; TRAIN * datagram_len];
                let mut scratch = vec![0u8; datagram_len + 64];
                let (cpu_start, started) = (thread_cpu(), Instant::now());
                let window = Duration::from_secs(seconds as u64);
                let mut offered = 0u64;
                while started.elapsed() < window {
                    // Paced (`--ceiling-offer`): ahead of the rate, sleep until due.
                    if let Some(rate) = offer_per_second {
                        let due = Duration::from_secs_f64(offered as f64 / rate as f64);
                        let now = started.elapsed();
                        if due > now + Duration::from_micros(200) {
                            std::thread::sleep(due - now);
                        }
                    }
                    for (tunn, socket, packet) in peers.iter_mut() {
                        for slot in train.chunks_mut(datagram_len) {
                            match tunn.encapsulate(packet, &mut scratch) {
                                TunnResult::WriteToNetwork(sealed) if sealed.len() == datagram_len => {
                                    slot.copy_from_slice(sealed)
                                }
                                _ => return Err("the session ended during the run".into()),
                            }
                        }
                        send_train(socket, &train, datagram_len as u16, endpoint_v4)
                            .map_err(|e| format!("send: {e}"))?;
                        offered += TRAIN as u64;
                    }
                }
                Ok((offered, started.elapsed().as_secs_f64(), (thread_cpu() - cpu_start).as_secs_f64()))
            })
            .join()
            .unwrap_or_else(|_| Err("the generator thread panicked".into()))
    });
    // What the bastion still had queued drains, then the figures are read.
    std::thread::sleep(Duration::from_millis(300));
    let window = meter.stop();
    let delivered = sink_count(host_ns).saturating_sub(sink_before);
    let (offered, elapsed, generator_cpu) = generated?;
    drop(running);
    Ok(Ceiling {
        implementation,
        layout,
        packet_bytes,
        seconds: window.wall,
        send_seconds: elapsed,
        offered_packets: offered,
        delivered_packets: delivered,
        bastion_cpu: window.process_seconds[0],
        generator_cpu,
        workers,
    })
}

/// The table for the report.
pub fn markdown(ceilings: &[Result<Ceiling, String>], seconds: u32, offer_per_second: Option<u32>) -> String {
    let pace = match offer_per_second {
        Some(rate) => format!("at most {rate} packets a second (`--ceiling-offer`)"),
        None => "as fast as one core can".to_string(),
    };
    let mut s = format!(
        "The bastion's ceiling: a generator of {PEERS} boringtun sessions (one in the one-peer layout) seals on the fly and sends UDP GSO trains \
         of {TRAIN} datagrams, {pace} ({seconds} s per case); delivered = packets counted by the sink in the private host.\n\n\
         | bastion | layout | IP packet bytes | offered packets/s | delivered packets/s | delivered Gbit/s | bastion cores | generator cores |\n\
         |---|---|---|---|---|---|---|---|\n"
    );
    for c in ceilings {
        match c {
            Ok(c) => s.push_str(&format!(
                "| {}{} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |\n",
                c.implementation.label(),
                c.workers.map(|w| format!(" ({w} worker{})", if w == 1 { "" } else { "s" })).unwrap_or_default(),
                c.layout.label(),
                c.packet_bytes,
                c.offered_per_second(),
                c.delivered_per_second(),
                c.delivered_gbit(),
                c.bastion_cpu / c.seconds,
                c.generator_cpu / c.send_seconds
            )),
            Err(e) => s.push_str(&format!("| (failed) | {e} | | | | | | |\n")),
        }
    }
    s
}
