//! Fast failover: two bastions run `bastion run` with the same config behind a simulated Network
//! Load Balancer ([`Cluster`]); a wireguard-go client talks to the load balancer's address. When
//! bastion A fails and the load balancer moves the client's flow to bastion B, B receives data
//! for a session it never made, recognises the peer by the session index alone and starts the
//! handshake itself: the client recovers one round trip later instead of after its own 15 s
//! (data) or up to 120 s (keepalives only) timeout.
//!
//! Also here: the controls (a bastion without the peer stays silent; with B's initiation
//! dropped on the way, the client has to re-handshake by itself, as without the feature) and
//! the amplification limit (a flood of replayed and forged data packets makes B send at most one
//! initiation per peer per 5 s).
//!
//! Needs root, `conntrack` and `BASTION_BIN`; without `BASTION_BIN` each test says it is skipped.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bastion_tests::bastion::{self, log_clock_now, log_line_time, peer_counter, Bastion, BastionSetup};
use bastion_tests::cluster::{Cluster, TARGETS, VIP};
use bastion_tests::handshake::{message_kind, receiver_index, MessageKind};
use bastion_tests::topology::{BASTION_TUNNEL_V4, LISTEN_PORT};
use bastion_tests::wireguard::unix_now;
use bastion_tests::{http, wait_until, HttpServer, WgInterface};

/// Bound of one step (a handshake and a page, a health transition, a log line...).
const STEP: Duration = Duration::from_secs(10);
/// Bound of the service's start, up to health 200.
const START: Duration = Duration::from_secs(20);
/// How long the client may take to get a page again once its flow is on B. Well below the 15 s
/// after which wireguard-go would re-handshake by itself, yet far above the one round trip plus
/// one TCP retry it takes when B starts the handshake, so a loaded machine does not fail it.
const RECOVERY: Duration = Duration::from_secs(12);
/// One page attempt while waiting for recovery: short, so the first attempt after the new
/// session finds it (each attempt sends a fresh SYN through the tunnel).
const ATTEMPT: Duration = Duration::from_secs(1);

/// The line B logs when a data packet names a peer it has no session with (at most once per
/// peer a minute; the counter in `bastion status` counts every handshake).
const FAILOVER_LINE: &str = "names a session this bastion does not have; starting a handshake to";

/// Bastions A and B behind the load balancer, and client 0's tunnel to the load balancer.
/// Field order is drop order: the tunnel, the services, then the namespaces.
struct Pair {
    tunnel: Option<WgInterface>,
    /// `[A, B]`.
    bastions: Vec<Bastion>,
    cluster: Cluster,
}

impl Pair {
    /// Builds the cluster (`clients` clients, one private host), starts both bastions with
    /// their setups, waits until the load balancer's health checks see both healthy, then
    /// starts client 0's tunnel toward the load balancer's address (flows go to A).
    fn start(binary: &std::path::Path, clients: usize, setups: [BastionSetup; 2]) -> Pair {
        let cluster = Cluster::build(clients, 1);
        let bastions: Vec<Bastion> = setups
            .into_iter()
            .enumerate()
            .map(|(i, setup)| Bastion::start_in(&cluster.topo, cluster.bastion_ns(i), binary, setup))
            .collect();
        for (i, b) in bastions.iter().enumerate() {
            b.wait_healthy(START).unwrap_or_else(|e| panic!("bastion {} did not become healthy: {e}", name(i)));
            wait_until(&format!("the load balancer's health check of bastion {}", name(i)), STEP, || {
                match cluster.health(i) {
                    Ok(r) if r.status == 200 => Ok(()),
                    Ok(r) => Err(format!("{r:?}")),
                    Err(e) => Err(e),
                }
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.report()));
        }
        let tunnel = cluster.topo.start_client_tunnel(0, cluster.topo.endpoint_v4());
        Pair { tunnel: Some(tunnel), bastions, cluster }
    }

    fn a(&self) -> &Bastion {
        &self.bastions[0]
    }

    fn b(&self) -> &Bastion {
        &self.bastions[1]
    }

    fn tunnel(&self) -> &WgInterface {
        self.tunnel.as_ref().expect("client 0's tunnel")
    }

    /// Every log that can explain a failure.
    fn report(&self) -> String {
        let mut parts: Vec<String> = self.bastions.iter().map(|b| b.log_report()).collect();
        if let Some(t) = &self.tunnel {
            parts.push(format!("{}\n{}", t.show(), t.log_report()));
        }
        parts.extend(self.cluster.topo.private_hosts.iter().map(|h| h.server.log_report()));
        parts.push(self.cluster.report());
        parts.join("\n")
    }

    /// One attempt at client 0 fetching host 0's page; the source address the server saw.
    fn fetch_once(&self, timeout: Duration) -> Result<String, String> {
        let host = &self.cluster.topo.private_hosts[0];
        let path = HttpServer::probe_path();
        let page = http::get(&self.cluster.topo.clients[0].ns, host.http_v4(), &path, timeout)?;
        if page.status != 200 || !page.body.contains(&host.server.marker) {
            return Err(format!("not host 0's page: {page:?}"));
        }
        host.server.client_of(&path, STEP)
    }

    /// Fetches host 0's page from client 0 within `timeout`, retrying; the source address the
    /// server saw and how long it took. Panics with every log on timeout.
    fn fetch_within(&self, timeout: Duration, what: &str) -> (String, Duration) {
        let started = Instant::now();
        let source =
            wait_until(what, timeout, || self.fetch_once(ATTEMPT)).unwrap_or_else(|e| panic!("{e}\n{}", self.report()));
        (source, started.elapsed())
    }

    /// Kills bastion `i` outright (no drain, no goodbye): a crashed instance.
    fn crash(&self, i: usize) {
        let b = &self.bastions[i];
        b.process.signal(libc::SIGKILL);
        b.process.wait_exit(STEP).unwrap_or_else(|e| panic!("bastion {} outlived SIGKILL: {e}", name(i)));
    }

    fn status(&self, i: usize) -> String {
        self.bastions[i].status().unwrap_or_else(|e| panic!("bastion {} status: {e}\n{}", name(i), self.report()))
    }

    /// The lines of bastion `i`'s log after byte `offset` that contain `needle`.
    fn log_lines(&self, i: usize, offset: usize, needle: &str) -> Vec<String> {
        let log = self.bastions[i].process.log();
        log.get(offset..).unwrap_or("").lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
    }

    /// The time stamp of bastion `i`'s first log line after `offset` holding `needle`, waiting
    /// for it up to `STEP`.
    fn wait_log_time(&self, i: usize, offset: usize, needle: &str) -> (String, f64) {
        let line = self.bastions[i]
            .process
            .wait_for_log_after(offset, needle, STEP)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.report()));
        let time = log_line_time(&line).unwrap_or_else(|| panic!("no time stamp in {line:?}"));
        (line, time)
    }
}

fn name(i: usize) -> &'static str {
    ["A", "B"][i]
}

/// The client's address as the bastions must see it: the load balancer keeps it.
fn client_endpoint_prefix(pair: &Pair) -> String {
    format!("{}:", pair.cluster.topo.clients[0].public_v4)
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn standby_bastion_starts_the_handshake_when_the_flow_moves_to_it() {
    let binary = bastion_tests::bastion::binary();
    let s = Pair::start(&binary, 1, [BastionSetup::default(), BastionSetup::default()]);
    let client = client_endpoint_prefix(&s);

    let (source, _) = s.fetch_within(STEP, "a first page through A");
    assert_eq!(source, TARGETS[0].private_v4.to_string(), "served through A\n{}", s.report());
    let (first, _) = s.wait_log_time(0, 0, "peer alice handshake completed as responder with");
    assert!(
        first.contains(&format!("with {client}")),
        "the load balancer must keep the client's address: {first}\n{}",
        s.cluster.report()
    );

    s.crash(0);
    let offset = s.b().process.log_len();
    let moved_at = log_clock_now();
    s.cluster.move_flows(1);
    let (source, took) = s.fetch_within(RECOVERY, "a page through B after the flow moved");
    assert_eq!(
        source,
        TARGETS[1].private_v4.to_string(),
        "after the move the page must come through B (its private address)\n{}",
        s.report()
    );

    let (started_line, started) =
        s.wait_log_time(1, offset, &format!("claiming to be from peer alice {FAILOVER_LINE}"));
    assert!(
        started_line.contains(&format!("to {client}")),
        "B must answer toward the client's address: {started_line}"
    );
    let (_, completed) = s.wait_log_time(1, offset, "peer alice handshake completed as initiator with");
    assert!(completed >= started, "completed before it started?\n{}", s.report());
    let responder = s.log_lines(1, offset, "handshake completed as responder");
    assert!(
        responder.is_empty(),
        "the client re-handshook by itself; B should have been first: {responder:?}\n{}",
        s.report()
    );
    let status = s.status(1);
    assert_eq!(
        peer_counter(&status, "alice", "failover handshakes"),
        Some(1),
        "one failover handshake expected in B's status:\n{status}"
    );
    eprintln!(
        "failover: B started the handshake {:.3} s after the flow moved and completed it {:.3} s \
         after; the client had a page through B {:.2} s after the move (page attempts every {} s; \
         without B's initiation wireguard-go re-handshakes only 15 s after its first unanswered \
         packet)",
        started - moved_at,
        completed - moved_at,
        took.as_secs_f64(),
        ATTEMPT.as_secs()
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn keepalives_alone_move_the_session_after_a_drain() {
    let binary = bastion_tests::bastion::binary();
    let drain = BastionSetup { drain_seconds: 4, ..BastionSetup::default() };
    let s = Pair::start(&binary, 1, [drain, BastionSetup::default()]);
    let bastion_key = s.cluster.topo.bastion_keys.public.clone();
    let (source, _) = s.fetch_within(STEP, "a first page through A");
    assert_eq!(source, TARGETS[0].private_v4.to_string());
    // From here the client sends nothing but keepalives (once a second).
    s.tunnel().wg_set(&["peer", &bastion_key, "persistent-keepalive", "1"]);

    // A is stopped as an instance is: it drains, its health goes 503 at once, and the load
    // balancer, seeing that, moves the flow.
    s.a().process.signal(libc::SIGTERM);
    wait_until("the load balancer's health check to fail A", STEP, || match s.cluster.health(0) {
        Ok(r) if r.status == 200 => Err(format!("{r:?}")),
        _ => Ok(()),
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.report()));
    let offset = s.b().process.log_len();
    let since = unix_now();
    let moved_at = log_clock_now();
    s.cluster.move_flows(1);

    // No page is asked for until B has made the session: only keepalives reach it.
    let (_, started) = s.wait_log_time(1, offset, &format!("claiming to be from peer alice {FAILOVER_LINE}"));
    let (_, completed) = s.wait_log_time(1, offset, "peer alice handshake completed as initiator with");
    s.tunnel().wait_handshake(&bastion_key, since, STEP).unwrap_or_else(|e| panic!("{e}\n{}", s.report()));
    let (source, took) = s.fetch_within(STEP, "a page through B");
    assert_eq!(source, TARGETS[1].private_v4.to_string(), "the page must come through B\n{}", s.report());
    assert!(
        s.log_lines(1, offset, "handshake completed as responder").is_empty(),
        "B must have started the handshake\n{}",
        s.report()
    );
    // The drained bastion still exits cleanly.
    let status = s.a().process.wait_exit(STEP).unwrap_or_else(|e| panic!("A after its drain: {e}"));
    assert_eq!(status.code(), Some(0), "A's exit after the drain\n{}", s.report());
    eprintln!(
        "keepalive-only failover: B started the handshake {:.3} s and completed it {:.3} s after \
         the flow moved (keepalive interval 1 s), before any page was asked for; the next page \
         took {:.2} s",
        started - moved_at,
        completed - moved_at,
        took.as_secs_f64()
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn the_flow_can_move_back_to_a_bastion_that_kept_an_old_session() {
    let binary = bastion_tests::bastion::binary();
    // A health check that flapped: A loses the flow without restarting, and later gets it back
    // while it still holds its old session with the client.
    let s = Pair::start(&binary, 1, [BastionSetup::default(), BastionSetup::default()]);
    let (source, _) = s.fetch_within(STEP, "a first page through A");
    assert_eq!(source, TARGETS[0].private_v4.to_string());

    s.cluster.move_flows(1);
    let (source, _) = s.fetch_within(RECOVERY, "a page through B");
    assert_eq!(source, TARGETS[1].private_v4.to_string(), "{}", s.report());

    let offset = s.a().process.log_len();
    let moved_at = log_clock_now();
    s.cluster.move_flows(0);
    let (source, took) = s.fetch_within(RECOVERY, "a page through A again");
    assert_eq!(source, TARGETS[0].private_v4.to_string(), "the page must come through A again\n{}", s.report());
    let (_, started) = s.wait_log_time(0, offset, &format!("claiming to be from peer alice {FAILOVER_LINE}"));
    let (_, completed) = s.wait_log_time(0, offset, "peer alice handshake completed as initiator with");
    assert!(
        s.log_lines(0, offset, "handshake completed as responder").is_empty(),
        "A must have started the handshake\n{}",
        s.report()
    );
    eprintln!(
        "flow back to A: A started the handshake {:.3} s and completed it {:.3} s after the move; \
         page after {:.2} s",
        started - moved_at,
        completed - moved_at,
        took.as_secs_f64()
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_bastion_without_the_peer_starts_no_handshake() {
    let binary = bastion_tests::bastion::binary();
    // B knows bob only: alice's session index names nobody there.
    let b_setup = BastionSetup { peers: Some(vec![1]), ..BastionSetup::default() };
    let s = Pair::start(&binary, 2, [BastionSetup::default(), b_setup]);
    let bastion_key = s.cluster.topo.bastion_keys.public.clone();
    s.fetch_within(STEP, "a first page through A");
    let handshake_before = s.tunnel().latest_handshake(&bastion_key);

    s.crash(0);
    let before = bastion::dropped_counter(&s.status(1), "datagrams not ours").unwrap();
    let offset = s.b().process.log_len();
    s.cluster.move_flows(1);
    // The client keeps trying for longer than one failover interval (5 s).
    let until = Instant::now() + Duration::from_secs(6);
    let mut attempts = 0;
    while Instant::now() < until {
        attempts += 1;
        if let Ok(source) = s.fetch_once(ATTEMPT) {
            panic!("a page came through ({source}) from a bastion without the peer\n{}", s.report());
        }
    }
    let status = s.status(1);
    let after = bastion::dropped_counter(&status, "datagrams not ours").unwrap();
    assert!(
        after > before,
        "B must have received (and dropped) the client's packets: {before} → {after}\n{status}\n{}",
        s.report()
    );
    for needle in [FAILOVER_LINE, "handshake completed"] {
        let lines = s.log_lines(1, offset, needle);
        assert!(lines.is_empty(), "B without the peer logged {lines:?}\n{}", s.report());
    }
    assert_eq!(
        s.tunnel().latest_handshake(&bastion_key),
        handshake_before,
        "the client made a new session with a bastion that does not have it as a peer\n{}",
        s.report()
    );
    eprintln!(
        "control: B without alice dropped {} datagrams during {attempts} page attempts and sent \
         nothing back",
        after - before
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn without_the_bastions_initiation_the_client_waits_for_its_own_rekey() {
    let binary = bastion_tests::bastion::binary();
    let s = Pair::start(&binary, 1, [BastionSetup::default(), BastionSetup::default()]);
    s.fetch_within(STEP, "a first page through A");
    // What a cluster without fast failover looks like to the client: B's initiations never
    // arrive.
    s.cluster.drop_initiations_from_targets();

    s.crash(0);
    let offset = s.b().process.log_len();
    s.cluster.move_flows(1);
    // wireguard-go gives up on its session 15 s after its first unanswered packet.
    let (source, took) = s.fetch_within(Duration::from_secs(30), "a page through B, eventually");
    assert_eq!(source, TARGETS[1].private_v4.to_string(), "{}", s.report());
    let dropped = s.cluster.dropped_initiations();
    assert!(
        dropped >= 1,
        "B should have tried to start the handshake (its initiations were to be dropped)\n{}",
        s.report()
    );
    assert!(!s.log_lines(1, offset, FAILOVER_LINE).is_empty(), "B's attempt must be in its log\n{}", s.report());
    let responder = s.log_lines(1, offset, "peer alice handshake completed as responder");
    assert!(
        !responder.is_empty() && s.log_lines(1, offset, "as initiator").is_empty(),
        "the client, not B, must have made the session\n{}",
        s.report()
    );
    eprintln!(
        "control: with B's {dropped} initiations dropped, the client got a page through B only \
         {:.1} s after the flow moved (its own re-handshake)",
        took.as_secs_f64()
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn replayed_data_packets_make_at_most_one_initiation_per_five_seconds() {
    let binary = bastion_tests::bastion::binary();
    let mut s = Pair::start(&binary, 1, [BastionSetup::default(), BastionSetup::default()]);
    s.fetch_within(STEP, "a first page through A");
    let captured = capture_data_packet(&s);
    // The real client goes away: only the attacker's packets reach the bastions from here.
    s.tunnel = None;
    let ns = &s.cluster.topo.clients[0].ns;
    let target = SocketAddr::new(IpAddr::V4(VIP), LISTEN_PORT);
    let sockets: Vec<UdpSocket> = ns.enter(|| {
        (0..5)
            .map(|_| {
                let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
                socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                socket
            })
            .collect()
    });
    // Socket 0 delivers the captured packet to A once, as the network would have: from then on
    // A has seen it, so its replays are duplicates of a live session. Sockets 1 and 2 are
    // victims whose flows go to A (alice's session is live there), 3 and 4 victims whose flows
    // go to B (no session with alice).
    let (victims_of_a, victims_of_b) = ([1, 2], [3, 4]);
    let offsets = [s.a().process.log_len(), s.b().process.log_len()];
    let stop = AtomicBool::new(false);
    let received: Mutex<Vec<(usize, MessageKind, Instant)>> = Mutex::new(Vec::new());
    let flood = Duration::from_secs(11);
    let (sent, elapsed) = std::thread::scope(|scope| {
        for (v, socket) in sockets.iter().enumerate().skip(1) {
            let (stop, received) = (&stop, &received);
            scope.spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, _)) = socket.recv_from(&mut buf) {
                        received.lock().unwrap().push((v, message_kind(&buf[..n]), Instant::now()));
                    }
                }
            });
        }
        let _stopping = StopOnDrop(&stop);
        let started = Instant::now();
        sockets[0].send_to(&captured, target).unwrap();
        let mut forged = captured.clone();
        let mut rng = bastion_tests::random_u64() | 1;
        let mut forge = |forged: &mut Vec<u8>| {
            for chunk in forged[8..].chunks_mut(8) {
                // xorshift: cheap, and random enough for garbage.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                chunk.copy_from_slice(&rng.to_ne_bytes()[..chunk.len()]);
            }
        };
        // Each victim's flow is pinned to its bastion by its first packet.
        for v in victims_of_a {
            forge(&mut forged);
            sockets[v].send_to(&forged, target).unwrap();
        }
        s.cluster.point_to(1);
        let mut sent: usize = 3;
        while started.elapsed() < flood {
            for _ in 0..20 {
                // Half replays of the real packet, half forgeries with its session index.
                let v = 1 + sent % 4;
                let packet = if (sent / 4).is_multiple_of(2) {
                    &captured
                } else {
                    forge(&mut forged);
                    &forged
                };
                if sockets[v].send_to(packet, target).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let elapsed = started.elapsed();
        // Late answers still count.
        std::thread::sleep(Duration::from_millis(500));
        (sent, elapsed)
    });
    let received = received.into_inner().unwrap();
    let bound = (elapsed.as_secs_f64() / 5.0).floor() as usize + 1;
    let mut summary = Vec::new();
    for (i, victims) in [victims_of_a, victims_of_b].into_iter().enumerate() {
        let what = format!("bastion {} ({})", name(i), ["holds alice's session", "has no session with alice"][i]);
        let answers: Vec<&(usize, MessageKind, Instant)> =
            received.iter().filter(|(v, _, _)| victims.contains(v)).collect();
        let others: Vec<MessageKind> =
            answers.iter().filter(|(_, kind, _)| *kind != MessageKind::Initiation).map(|(_, kind, _)| *kind).collect();
        assert!(others.is_empty(), "{what} answered with {others:?}");
        let initiations = answers.len();
        let lines = s.log_lines(i, offsets[i], FAILOVER_LINE);
        assert!(
            initiations <= bound,
            "{what}: {initiations} initiations for {sent} packets in {:.1} s: at most one per 5 s \
             ({bound}) expected; it logged {} failover lines, the first: {:?}",
            elapsed.as_secs_f64(),
            lines.len(),
            &lines[..lines.len().min(3)]
        );
        assert!(
            initiations >= 2,
            "{what}: a flood of {:.1} s should still get a new initiation after each 5 s; got \
             {initiations}\n{}",
            elapsed.as_secs_f64(),
            s.report()
        );
        assert_eq!(
            lines.len(),
            1,
            "{what}: the failover line is logged once a minute per peer, however many \
             initiations ({initiations})\n{}",
            s.report()
        );
        let status = s.status(i);
        assert_eq!(
            peer_counter(&status, "alice", "failover handshakes"),
            Some(initiations as u64),
            "{what}'s status:\n{status}"
        );
        let gaps: Vec<f64> = answers.windows(2).map(|w| w[1].2.duration_since(w[0].2).as_secs_f64()).collect();
        summary.push(format!("{what}: {initiations} (gaps {gaps:.2?} s)"));
    }
    eprintln!(
        "amplification: {sent} replayed/forged data packets ({} bytes each, receiver index \
         {:#x}) in {:.1} s, half to each bastion → initiations of 148 bytes: {}",
        captured.len(),
        receiver_index(&captured).unwrap_or(0),
        elapsed.as_secs_f64(),
        summary.join("; ")
    );
}

/// A real data packet of client 0's session, caught by pointing its wireguard-go at a local
/// socket for one ping (so no bastion has seen it).
fn capture_data_packet(s: &Pair) -> Vec<u8> {
    let ns = &s.cluster.topo.clients[0].ns;
    let captured = ns.enter(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let port = socket.local_addr().unwrap().port();
        s.tunnel().wg_set(&["peer", &s.cluster.topo.bastion_keys.public, "endpoint", &format!("127.0.0.1:{port}")]);
        let mut buf = [0u8; 2048];
        wait_until("a data packet from wireguard-go", STEP, || {
            // The ping itself is lost: its packet comes to us.
            ns.exec(&["ping", "-n", "-c", "1", "-W", "1", &BASTION_TUNNEL_V4.to_string()]);
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if message_kind(&buf[..n]) == MessageKind::Data => Ok(buf[..n].to_vec()),
                Ok((n, _)) => Err(format!("{:?} message of {n} bytes", message_kind(&buf[..n]))),
                Err(e) => Err(e.to_string()),
            }
        })
    });
    captured.unwrap_or_else(|e| panic!("{e}\n{}", s.report()))
}

/// Sets the flag when dropped: the threads of a scope stop also when the test panics in it.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The peer's session index base from `bastion status` (`session index 1a2b3c`).
fn session_index(status: &str, peer: &str) -> u32 {
    let line = status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(peer))
        .unwrap_or_else(|| panic!("no line for {peer} in:\n{status}"));
    let hex = line.split("session index ").nth(1).and_then(|t| t.split_whitespace().next());
    u32::from_str_radix(hex.unwrap_or(""), 16).unwrap_or_else(|_| panic!("no session index in {line:?}"))
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn forged_packets_get_no_initiation_while_a_moved_flow_still_does() {
    let binary = bastion_tests::bastion::binary();
    let s = Pair::start(&binary, 2, [BastionSetup::default(), BastionSetup::default()]);
    s.fetch_within(STEP, "a first page through A");
    let index = session_index(&s.status(0), "alice");
    // The real client is active: a ping every 200 ms through A for the whole attack.
    let pings = 45;
    let client = s.cluster.topo.clients[0].ns.name().to_string();
    let pinger = std::thread::spawn(move || {
        bastion_tests::Netns::borrowed(&client).exec(&[
            "ping",
            "-n",
            "-q",
            "-c",
            &pings.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            &BASTION_TUNNEL_V4.to_string(),
        ])
    });
    std::thread::sleep(Duration::from_millis(500));
    // The attacker, at a third address (client 1's), knows alice's index and nothing else:
    // ~500 data packets a second with it, for 8 s.
    let target = SocketAddr::new(IpAddr::V4(VIP), LISTEN_PORT);
    let (forged, answers) = s.cluster.topo.clients[1].ns.enter(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let mut rng = bastion_tests::random_u64() | 1;
        let mut packet = vec![0u8; 96];
        let (mut sent, mut answers) = (0usize, 0usize);
        let started = Instant::now();
        let mut buf = [0u8; 2048];
        while started.elapsed() < Duration::from_secs(8) {
            for _ in 0..5 {
                for chunk in packet.chunks_mut(8) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    chunk.copy_from_slice(&rng.to_ne_bytes()[..chunk.len()]);
                }
                packet[..4].copy_from_slice(&[4, 0, 0, 0]);
                let receiver = (index << 8) | (rng as u32 & 0xff);
                packet[4..8].copy_from_slice(&receiver.to_le_bytes());
                if socket.send_to(&packet, target).is_ok() {
                    sent += 1;
                }
            }
            while socket.recv_from(&mut buf).is_ok() {
                answers += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(500));
        while socket.recv_from(&mut buf).is_ok() {
            answers += 1;
        }
        (sent, answers)
    });
    let ping = pinger.join().unwrap();
    let received: usize = ping
        .stdout
        .split(", ")
        .find_map(|part| part.strip_suffix(" received")?.parse().ok())
        .unwrap_or_else(|| panic!("no ping summary in {ping}"));
    let status = s.status(0);
    eprintln!(
        "forged: {forged} forged data packets with alice's index from a third address in 8 s → {answers} \
         datagrams back to the attacker; the real client's pings: {received}/{pings} answered; A: {}",
        status.lines().find(|l| l.starts_with("failover:")).unwrap_or("")
    );
    assert_eq!(answers, 0, "the attacker got answers\n{}", s.report());
    assert_eq!(peer_counter(&status, "alice", "failover handshakes"), Some(0), "{status}");
    assert!(received + 1 >= pings, "the real client lost {} of {pings} pings\n{}", pings - received, s.report());

    // A real move still gets its failover handshake at once: B has not heard from alice.
    s.crash(0);
    let offset = s.b().process.log_len();
    s.cluster.move_flows(1);
    let (source, took) = s.fetch_within(RECOVERY, "a page through B after the move");
    assert_eq!(source, TARGETS[1].private_v4.to_string(), "{}", s.report());
    s.wait_log_time(1, offset, &format!("claiming to be from peer alice {FAILOVER_LINE}"));
    assert!(peer_counter(&s.status(1), "alice", "failover handshakes") >= Some(1));
    eprintln!("forged: after the forgeries, a real move to B got a page after {:.2} s", took.as_secs_f64());
}
