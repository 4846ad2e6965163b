//! Handshake responses per core under a flood of valid initiations, while a real client keeps
//! working: each implementation gets a fresh topology with `FLOOD_PEERS` extra peers whose keys
//! the flood holds (boringtun `Tunn`s as initiators, each on its own source address so no
//! per-address limit hides the work, each at most 40 initiations a second: below wireguard-go's
//! per-peer limit of 50), cookie replies honoured as a real initiator does. The real client
//! (wireguard-go, client 0) pings the private host every 100 ms through it all.
//!
//! Reported: responses received per second, cookie replies per second, the bastion's CPU (cores)
//! and responses per CPU-second of the bastion (the figure to compare: it does not depend on how
//! much of the flood each implementation lets through), and the real client's pings answered.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bastion_tests::handshake::{decode_key, message_kind, public_key_of, random_key, MessageKind};
use bastion_tests::{link, Topology};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::bed::{Binaries, ExtraPeer, Implementation, Running};
use crate::cpu;

/// Peers the flood speaks for.
const FLOOD_PEERS: usize = 64;
/// Source addresses the flood spreads over (192.0.2.200 and up, on the flood client's link).
const FLOOD_SOURCES: usize = 16;
/// Initiations per peer per second at most.
const PER_PEER_RATE: f64 = 40.0;

#[derive(Clone, Debug)]
pub struct HandshakeFigure {
    pub implementation: Implementation,
    pub seconds: f64,
    pub initiations_sent: u64,
    pub responses: u64,
    pub cookie_replies: u64,
    /// The bastion's CPU seconds in the window.
    pub bastion_cpu: f64,
    pub pings_sent: u64,
    pub pings_answered: u64,
}

impl HandshakeFigure {
    pub fn responses_per_second(&self) -> f64 {
        self.responses as f64 / self.seconds
    }

    pub fn responses_per_cpu_second(&self) -> f64 {
        self.responses as f64 / self.bastion_cpu.max(1e-9)
    }

    pub fn cores(&self) -> f64 {
        self.bastion_cpu / self.seconds
    }

    /// The progress line the bench prints.
    pub fn line(&self) -> String {
        format!(
            "{:<17} {:>6.0} responses/s {:>6.0} cookie replies/s {:.2} cores {:>6.0} per CPU-s, pings {}/{}",
            self.implementation.label(),
            self.responses_per_second(),
            self.cookie_replies as f64 / self.seconds,
            self.cores(),
            self.responses_per_cpu_second(),
            self.pings_answered,
            self.pings_sent
        )
    }
}

struct FloodPeer {
    tunn: Tunn,
    socket: UdpSocket,
    next: Instant,
}

/// The flood peers' tunnel addresses: 10.100.1.0/24, outside the topology's clients.
fn flood_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 100, 1, 1 + i as u8)
}

/// One measurement of `implementation` for `seconds`.
pub fn measure(implementation: Implementation, binaries: &Binaries, seconds: u32) -> Result<HandshakeFigure, String> {
    let topo = Topology::with(2, 1);
    let privates: Vec<[u8; 32]> = (0..FLOOD_PEERS).map(|_| random_key()).collect();
    let extra: Vec<ExtraPeer> = privates
        .iter()
        .enumerate()
        .map(|(i, k)| ExtraPeer { name: format!("flood{i}"), public_key: public_key_of(*k), address: flood_address(i) })
        .collect();
    let secrets: Vec<StaticSecret> = privates.into_iter().map(StaticSecret::from).collect();
    // Dropped in this order at the end: tunnel, bastion, then the topology.
    let running = Running::start(implementation, &topo, binaries, &extra, Vec::new())?;
    let pid = running.pid();
    let tunnel = topo.start_client_tunnel_with(0, topo.endpoint_v4(), binaries.client.as_deref());
    let host = topo.private_hosts[0].v4;
    topo.clients[0].ns.ping(&host.to_string(), Duration::from_secs(15))?;

    let flood_ns = &topo.clients[1].ns;
    for s in 0..FLOOD_SOURCES {
        link::add_address(flood_ns, "eth0", &format!("192.0.2.{}/24", 200 + s));
    }
    let bastion_public = PublicKey::from(decode_key(&topo.bastion_keys.public));
    let mut peers: Vec<FloodPeer> = secrets
        .into_iter()
        .enumerate()
        .map(|(i, secret)| {
            let source = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 200 + (i % FLOOD_SOURCES) as u8), 0));
            let socket = flood_ns.enter(|| UdpSocket::bind(source)).expect("a flood socket");
            socket.set_nonblocking(true).unwrap();
            let index = (bastion_tests::random_u64() as u32) >> 8;
            let tunn = Tunn::new(secret, bastion_public, None, None, index, None);
            FloodPeer { tunn, socket, next: Instant::now() }
        })
        .collect();
    let endpoint = topo.endpoint_v4();
    let every = Duration::from_secs_f64(1.0 / PER_PEER_RATE);

    let meter = cpu::Meter::start(&[pid]);
    let started = Instant::now();
    let window = Duration::from_secs(seconds as u64);
    let (mut sent, mut responses, mut cookies) = (0u64, 0u64, 0u64);
    let client_ns = &topo.clients[0].ns;
    let pinger = std::thread::scope(|scope| {
        let pinger = scope.spawn(|| {
            let count = (seconds * 10).to_string();
            client_ns.exec(&["ping", "-n", "-q", "-i", "0.1", "-W", "1", "-c", &count, &host.to_string()])
        });
        let mut buf = vec![0u8; 2048];
        let mut datagram = vec![0u8; 2048];
        while started.elapsed() < window {
            let now = Instant::now();
            let mut busy = false;
            for peer in peers.iter_mut() {
                if now >= peer.next {
                    peer.next = now + every;
                    if let TunnResult::WriteToNetwork(p) = peer.tunn.format_handshake_initiation(&mut buf, true) {
                        if peer.socket.send_to(p, endpoint).is_ok() {
                            sent += 1;
                        }
                    }
                }
                while let Ok((n, from)) = peer.socket.recv_from(&mut datagram) {
                    busy = true;
                    match message_kind(&datagram[..n]) {
                        MessageKind::Response => responses += 1,
                        MessageKind::CookieReply => cookies += 1,
                        _ => {}
                    }
                    // A cookie reply is remembered for the next initiation (MAC2); a response
                    // completes the session (and may queue a keepalive: not sent, not needed).
                    let _ = peer.tunn.decapsulate(Some(from.ip()), &datagram[..n], &mut buf);
                }
            }
            if !busy {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        pinger.join().expect("the ping thread")
    });
    let cpu = meter.stop();
    let elapsed = started.elapsed().as_secs_f64();
    // `ping -q`: "N packets transmitted, M received".
    let summary = pinger.stdout.lines().find(|l| l.contains("packets transmitted")).unwrap_or("").to_string();
    let number_before = |word: &str| -> u64 {
        let words: Vec<&str> = summary.split_whitespace().collect();
        words
            .iter()
            .position(|w| w.starts_with(word))
            .and_then(|i| words.get(i.checked_sub(1)?)?.parse().ok())
            .unwrap_or(0)
    };
    let figure = HandshakeFigure {
        implementation,
        seconds: elapsed,
        initiations_sent: sent,
        responses,
        cookie_replies: cookies,
        bastion_cpu: cpu.process_seconds[0],
        pings_sent: number_before("packets"),
        pings_answered: number_before("received"),
    };
    drop(tunnel);
    drop(running);
    Ok(figure)
}

/// The table for the report.
pub fn markdown(figures: &[Result<HandshakeFigure, String>], seconds: u32) -> String {
    let mut s = format!(
        "Handshakes under a flood ({seconds} s each; {FLOOD_PEERS} peers' keys, at most {PER_PEER_RATE:.0} initiations \
         a second each from {FLOOD_SOURCES} source addresses, cookies honoured; the real client pings every 100 ms). \
         Responses per CPU-second: handshake responses received ÷ the bastion's CPU seconds.\n\n\
         | bastion | initiations/s sent | responses/s | cookie replies/s | bastion cores | responses per CPU-second | real client's pings answered |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for figure in figures {
        match figure {
            Ok(f) => s.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {} of {} |\n",
                f.implementation.label(),
                f.initiations_sent as f64 / f.seconds,
                f.responses_per_second(),
                f.cookie_replies as f64 / f.seconds,
                f.cores(),
                f.responses_per_cpu_second(),
                f.pings_answered,
                f.pings_sent
            )),
            Err(e) => s.push_str(&format!("| (failed) | {e} | | | | | |\n")),
        }
    }
    s
}
