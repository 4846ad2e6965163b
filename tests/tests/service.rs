//! `bastion run` in the topology, against wireguard-go clients and a real HTTP server:
//! forwarding with masquerade, reach ACLs, two peers, IPv6, the health check's transitions,
//! drain and clean exit, and a flood of garbage datagrams.
//!
//! Needs root and `BASTION_BIN` (the binary under test; `make integration-test` sets it).
//! Without `BASTION_BIN` each test says it is skipped and passes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bastion_tests::bastion::{self, Bastion, BastionSetup};
use bastion_tests::topology::{BASTION_PRIVATE_V4, BASTION_PRIVATE_V6, BASTION_TUNNEL_V4, BASTION_TUNNEL_V6};
use bastion_tests::traffic::{tcp_connect, udp_flood};
use bastion_tests::{http, link, wait_until, HttpResponse, HttpServer, Topology, WgInterface};

/// Bound of one step (a handshake and a page, a health transition...).
const STEP: Duration = Duration::from_secs(10);
/// Bound of the service's start, up to health 200.
const START: Duration = Duration::from_secs(20);

/// A running bastion with its clients' tunnels. Field order is drop order: tunnels, then the
/// service (drained at once), then the namespaces.
struct Setup {
    tunnels: Vec<WgInterface>,
    bastion: Bastion,
    topo: Topology,
}

impl Setup {
    /// Builds the topology, starts `bastion run` with `setup`, waits for health 200, then starts
    /// every client's tunnel (client 0 to the v4 endpoint, client 1 to the v6 one, ...).
    fn start(binary: &std::path::Path, clients: usize, hosts: usize, setup: BastionSetup) -> Setup {
        let topo = Topology::with(clients, hosts);
        let bastion = Bastion::start(&topo, binary, setup);
        if let Err(e) = bastion.wait_healthy(START) {
            panic!("the service did not become healthy: {e}\nconfig:\n{}", redacted_config(&bastion));
        }
        let tunnels = (0..clients)
            .map(|i| {
                let endpoint = if i % 2 == 0 { topo.endpoint_v4() } else { topo.endpoint_v6() };
                topo.start_client_tunnel(i, endpoint)
            })
            .collect();
        Setup { tunnels, bastion, topo }
    }

    /// Every log that can explain a failure.
    fn report(&self) -> String {
        let mut parts = vec![self.bastion.log_report()];
        parts.extend(self.tunnels.iter().map(|t| format!("{}\n{}", t.show(), t.log_report())));
        parts.extend(self.topo.private_hosts.iter().map(|h| h.server.log_report()));
        parts.join("\n")
    }

    /// GET `path` from client `c` to `addr` through the tunnel, retried up to `STEP` (the first
    /// packet waits for a handshake); panics with every log on failure.
    fn fetch(&self, c: usize, addr: SocketAddr, path: &str) -> HttpResponse {
        let ns = &self.topo.clients[c].ns;
        let what = format!("client {c} fetching http://{addr}{path} through the tunnel");
        wait_until(&what, STEP, || http::get(ns, addr, path, Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{e}\n{}", self.report()))
    }

    /// Fetches private host `h`'s page (v4) from client `c` and returns the source address the
    /// server saw for that very request.
    fn fetch_page_and_source(&self, c: usize, h: usize) -> String {
        let host = &self.topo.private_hosts[h];
        let path = HttpServer::probe_path();
        let page = self.fetch(c, host.http_v4(), &path);
        assert_eq!(page.status, 200, "{page:?}");
        assert!(page.body.contains(&host.server.marker), "not host {h}'s page: {page:?}");
        host.server.client_of(&path, STEP).unwrap_or_else(|e| panic!("{e}\n{}", self.report()))
    }

    fn ping(&self, c: usize, address: &str) {
        self.topo.clients[c]
            .ns
            .ping(address, STEP)
            .unwrap_or_else(|e| panic!("client {c} pinging {address}: {e}\n{}", self.report()));
    }

    /// `nft list tables` in the bastion namespace.
    fn nft_tables(&self) -> String {
        self.topo.bastion.run(&["nft", "list", "tables"])
    }
}

/// The config with its private key hidden, for failure messages.
fn redacted_config(bastion: &Bastion) -> String {
    std::fs::read_to_string(&bastion.config)
        .unwrap_or_default()
        .lines()
        .map(|l| if l.starts_with("private_key") { "private_key = \"(hidden)\"" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// From `bastion status`'s `dropped: A datagrams not ours, B rejected, ...` line: A + B.
fn refused_datagrams(status: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.trim_start().starts_with("dropped:"))
        .unwrap_or_else(|| panic!("no `dropped:` line in bastion status:\n{status}"));
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    assert!(numbers.len() >= 2, "unexpected status line {line:?}");
    numbers[0] + numbers[1]
}

fn has_bastion_table(tables: &str) -> bool {
    tables.lines().any(|l| l.trim() == "table inet bastion-wg0")
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn client_fetches_a_private_page_through_the_tunnel_with_masquerade() {
    let binary = bastion_tests::bastion::binary();
    let s = Setup::start(&binary, 1, 1, BastionSetup::default());

    let source = s.fetch_page_and_source(0, 0);
    assert_eq!(
        source,
        BASTION_PRIVATE_V4.to_string(),
        "the private server must see the bastion's private address (masquerade)\n{}",
        s.report()
    );
    s.bastion.process.wait_for_log("peer alice handshake completed", STEP).unwrap_or_else(|e| panic!("{e}"));
    s.ping(0, &s.topo.private_hosts[0].v4.to_string());
    s.ping(0, &BASTION_TUNNEL_V4.to_string());
    let tables = s.nft_tables();
    assert!(has_bastion_table(&tables), "our table is not installed: {tables}");
    assert_eq!(s.topo.bastion.sysctl_get("net.ipv4.ip_forward"), "1");
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn destination_outside_reach_is_unreachable() {
    let binary = bastion_tests::bastion::binary();
    // Reach is host 0 only (the default); host 1 is in the same subnet, outside reach.
    let s = Setup::start(&binary, 1, 2, BastionSetup::default());
    let outside = s.topo.private_hosts[1].http_v4();

    // Control: host 1 is up and serving, seen from the bastion itself.
    tcp_connect(&s.topo.bastion, outside, STEP)
        .unwrap_or_else(|e| panic!("host 1 does not serve even from the bastion: {e}"));
    // The tunnel works...
    s.fetch_page_and_source(0, 0);
    // ...but not toward host 1.
    let attempt = tcp_connect(&s.topo.clients[0].ns, outside, Duration::from_secs(3));
    assert!(attempt.is_err(), "client reached {outside}, outside reach\n{}", s.report());
    let ping =
        s.topo.clients[0].ns.exec(&["ping", "-n", "-c", "2", "-W", "1", &s.topo.private_hosts[1].v4.to_string()]);
    assert!(!ping.success(), "ping outside reach answered: {ping}");
    assert!(
        !s.topo.private_hosts[1].server.log().contains("\"GET"),
        "host 1 saw a request: {}",
        s.topo.private_hosts[1].server.log_report()
    );
    // And the tunnel still works after the drops.
    s.fetch_page_and_source(0, 0);
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn two_peers_at_once_with_per_peer_reach() {
    let binary = bastion_tests::bastion::binary();
    // alice (client 0, v4 endpoint) may also reach host 1; bob (client 1, v6 endpoint) may not.
    let setup = BastionSetup { peer_reach: vec![vec!["10.0.1.11/32".into()], vec![]], ..BastionSetup::default() };
    let s = Setup::start(&binary, 2, 2, setup);

    // Both sessions at the same time: two fetches in parallel.
    let sources: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|c| {
                scope.spawn({
                    let s = &s;
                    move || s.fetch_page_and_source(c, 0)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (c, source) in sources.iter().enumerate() {
        assert_eq!(source, &BASTION_PRIVATE_V4.to_string(), "client {c} not masqueraded");
    }
    for name in ["alice", "bob"] {
        s.bastion
            .process
            .wait_for_log(&format!("peer {name} handshake completed"), STEP)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Per-peer reach: alice gets host 1, bob does not.
    s.fetch_page_and_source(0, 1);
    let bob = tcp_connect(&s.topo.clients[1].ns, s.topo.private_hosts[1].http_v4(), Duration::from_secs(3));
    assert!(bob.is_err(), "bob reached host 1, which only alice may reach\n{}", s.report());
    // Each still works after the other's traffic.
    s.fetch_page_and_source(1, 0);
    s.fetch_page_and_source(0, 0);
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn ipv6_tunnel_address_answers() {
    let binary = bastion_tests::bastion::binary();
    let s = Setup::start(&binary, 1, 1, BastionSetup::default());
    s.ping(0, &BASTION_TUNNEL_V6.to_string());
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn ipv6_private_host_through_the_tunnel_with_masquerade() {
    let binary = bastion_tests::bastion::binary();
    let s = Setup::start(&binary, 1, 1, BastionSetup::default());
    let host = &s.topo.private_hosts[0];
    let path = HttpServer::probe_path();
    let page = s.fetch(0, host.http_v6(), &path);
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains(&host.server.marker), "{page:?}");
    let source = host.server.client_of(&path, STEP).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(source, BASTION_PRIVATE_V6.to_string(), "v6 masquerade\n{}", s.report());
    s.ping(0, &host.v6.to_string());
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn health_follows_the_tun_link_and_the_tunnel_recovers() {
    let binary = bastion_tests::bastion::binary();
    let s = Setup::start(&binary, 1, 1, BastionSetup::default());
    let head = s.bastion.health_head().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(head.status, 200, "HEAD /: {head:?}");
    s.fetch_page_and_source(0, 0);

    s.topo.bastion.run(&["ip", "link", "set", "wg0", "down"]);
    let down = s
        .bastion
        .wait_health("503 naming wg0 after `ip link set wg0 down`", STEP, |r| r.status == 503 && r.body.contains("wg0"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!down.body.contains("wg0 up"), "{down:?}");
    let head = s.bastion.health_head().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(head.status, 503, "HEAD / while down: {head:?}");

    s.topo.bastion.run(&["ip", "link", "set", "wg0", "up"]);
    s.bastion.wait_healthy(STEP).unwrap_or_else(|e| panic!("after `ip link set wg0 up`: {e}"));
    // Health 200 must mean the tunnel works again, both families.
    s.fetch_page_and_source(0, 0);
    s.topo.clients[0].ns.ping(&BASTION_TUNNEL_V6.to_string(), STEP).unwrap_or_else(|e| {
        panic!(
            "after wg0 went down and up, health says 200 but the v6 tunnel address does not \
             answer (the kernel drops IPv6 addresses of a link that goes down): {e}\n{}\n{}",
            s.topo.bastion.run(&["ip", "addr", "show", "wg0"]),
            s.report()
        )
    });
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn health_reports_a_missing_nat_table_and_the_service_restores_it() {
    let binary = bastion_tests::bastion::binary();
    // The watchdog that repairs the table runs every `[selftest] interval_seconds`.
    let setup = BastionSetup { extra_toml: "\n[selftest]\ninterval_seconds = 3\n".into(), ..BastionSetup::default() };
    let s = Setup::start(&binary, 1, 1, setup);
    s.fetch_page_and_source(0, 0);

    // The repair may win the race against our first look; a few tries make a miss vanishingly
    // unlikely without slowing the repair down.
    let mut seen = None;
    for _ in 0..3 {
        s.topo.bastion.run(&["nft", "delete", "table", "inet", "bastion-wg0"]);
        let r = s.bastion.health().unwrap_or_else(|e| panic!("{e}\n{}", s.report()));
        if r.status == 503 {
            seen = Some(r);
            break;
        }
        s.bastion.wait_healthy(STEP).unwrap_or_else(|e| panic!("{e}"));
    }
    let missing = seen.unwrap_or_else(|| panic!("health never said 503 without our table\n{}", s.report()));
    let body = missing.body.to_lowercase();
    assert!(body.contains("nat") && body.contains("bastion"), "the 503 must name the NAT table: {missing:?}");
    s.bastion.wait_healthy(STEP).unwrap_or_else(|e| panic!("the service did not restore its table: {e}"));
    assert!(has_bastion_table(&s.nft_tables()), "health 200 without the table");
    assert_eq!(s.fetch_page_and_source(0, 0), BASTION_PRIVATE_V4.to_string(), "masquerade after the repair");
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn drain_answers_503_keeps_forwarding_then_exits_cleanly() {
    let binary = bastion_tests::bastion::binary();
    let drain_seconds = 4;
    let s = Setup::start(&binary, 1, 1, BastionSetup { drain_seconds, ..BastionSetup::default() });
    s.fetch_page_and_source(0, 0);
    // Another table in the namespace: drain and exit must not touch it.
    s.topo.bastion.run(&["nft", "add", "table", "inet", "neighbour"]);

    s.bastion.process.signal(libc::SIGTERM);
    let sent = Instant::now();
    let draining = s
        .bastion
        .wait_health("503 right after SIGTERM", Duration::from_secs(1), |r| r.status == 503)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(draining.body.to_lowercase().contains("drain"), "the 503 must say draining: {draining:?}");
    s.bastion.process.wait_for_log("drain started", STEP).unwrap_or_else(|e| panic!("{e}"));
    // WireGuard still passes traffic while health says 503.
    assert_eq!(s.fetch_page_and_source(0, 0), BASTION_PRIVATE_V4.to_string());
    s.ping(0, &BASTION_TUNNEL_V4.to_string());
    assert!(s.bastion.process.is_running(), "exited during the drain\n{}", s.report());

    let status =
        s.bastion.process.wait_exit(Duration::from_secs(drain_seconds as u64) + STEP).unwrap_or_else(|e| panic!("{e}"));
    let drained = sent.elapsed();
    assert_eq!(status.code(), Some(0), "exit after drain: {status:?}\n{}", s.report());
    assert!(
        drained >= Duration::from_millis(drain_seconds as u64 * 1000 - 500),
        "exited {:.1} s after SIGTERM, before drain_seconds = {drain_seconds}",
        drained.as_secs_f64()
    );
    let tables = s.nft_tables();
    assert!(!has_bastion_table(&tables), "table left behind: {tables}");
    assert!(tables.contains("table inet neighbour"), "another table was touched: {tables}");
    let link = s.topo.bastion.exec(&["ip", "link", "show", "wg0"]);
    assert!(!link.success(), "wg0 left behind: {link}");
    let health = tcp_connect(&s.topo.bastion, "127.0.0.1:8080".parse().unwrap(), Duration::from_secs(1));
    assert!(health.is_err(), "health port still open after exit");
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn second_signal_cuts_the_drain_short_and_still_cleans_up() {
    let binary = bastion_tests::bastion::binary();
    let s = Setup::start(&binary, 1, 1, BastionSetup { drain_seconds: 60, ..BastionSetup::default() });
    s.bastion.process.signal(libc::SIGTERM);
    s.bastion.process.wait_for_log("drain started", STEP).unwrap_or_else(|e| panic!("{e}"));
    s.bastion.process.signal(libc::SIGINT);
    let status = s.bastion.process.wait_exit(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", s.report());
    assert!(!has_bastion_table(&s.nft_tables()), "table left behind");
    assert!(!s.topo.bastion.exec(&["ip", "link", "show", "wg0"]).success(), "wg0 left behind");
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn garbage_udp_flood_neither_crashes_nor_locks_out_clients() {
    let binary = bastion_tests::bastion::binary();
    let mut s = Setup::start(&binary, 2, 1, BastionSetup::default());
    // Client 0 has a session before the flood; client 1's tunnel comes up only after it, so
    // its handshake is a fresh one.
    let late_client = s.tunnels.pop().unwrap();
    drop(late_client);
    s.fetch_page_and_source(0, 0);

    // Both floods at once, while a third thread keeps asking the health responder: it must
    // stay responsive while the data plane is busy.
    let seed = bastion_tests::random_u64();
    let flooding = std::sync::atomic::AtomicBool::new(true);
    let (v4, v6, health) = std::thread::scope(|scope| {
        let v4 = scope.spawn(|| udp_flood(&s.topo.clients[0].ns, s.topo.endpoint_v4(), 10_000, seed));
        let v6 = scope.spawn(|| udp_flood(&s.topo.clients[1].ns, s.topo.endpoint_v6(), 10_000, !seed));
        let health = scope.spawn(|| {
            let mut answers = Vec::new();
            loop {
                answers.push(s.bastion.health());
                if !flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    break answers;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let v4 = v4.join().unwrap();
        let v6 = v6.join().unwrap();
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        (v4, v6, health.join().unwrap())
    });
    let unanswered: Vec<&String> = health.iter().filter_map(|h| h.as_ref().err()).collect();
    assert!(
        unanswered.is_empty(),
        "health did not answer during the flood (seed {seed:#x}): {unanswered:?}\n{}",
        s.report()
    );
    let unhealthy: Vec<&HttpResponse> = health.iter().flatten().filter(|r| r.status != 200).collect();
    assert!(
        unhealthy.is_empty(),
        "health said not 200 during the flood (seed {seed:#x}): {unhealthy:?}\n{}",
        s.report()
    );
    eprintln!("flood (seed {seed:#x}): v4 {v4:?}, v6 {v6:?}, {} health answers", health.len());
    assert!(v4.sent + v6.sent > 15_000, "the flood did not go out: {v4:?} {v6:?}");

    // The garbage reached the service's parser (not just the kernel): it counted it.
    let status = s.bastion.status().unwrap_or_else(|e| panic!("{e}"));
    let refused = refused_datagrams(&status);
    eprintln!("the service refused {refused} datagrams");
    assert!(
        refused >= 1_000,
        "the service counted only {refused} refused datagrams of {} sent:\n{status}",
        v4.sent + v6.sent
    );
    assert!(s.bastion.process.is_running(), "the service died under the flood (seed {seed:#x})\n{}", s.report());
    s.bastion.wait_healthy(STEP).unwrap_or_else(|e| panic!("health after the flood (seed {seed:#x}): {e}"));
    assert_eq!(s.fetch_page_and_source(0, 0), BASTION_PRIVATE_V4.to_string());
    s.tunnels.push(s.topo.start_client_tunnel(1, s.topo.endpoint_v6()));
    assert_eq!(s.fetch_page_and_source(1, 0), BASTION_PRIVATE_V4.to_string());
    s.bastion.process.wait_for_log("peer bob handshake completed", STEP).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn client_roams_to_a_new_endpoint() {
    let binary = bastion_tests::bastion::binary();
    let s = Setup::start(&binary, 1, 1, BastionSetup::default());
    s.fetch_page_and_source(0, 0);
    let client = &s.topo.clients[0];
    let first = s
        .bastion
        .process
        .wait_for_log(&format!("with {}:", client.public_v4), STEP)
        .unwrap_or_else(|e| panic!("the handshake log should name the client's endpoint: {e}"));

    // The client's endpoint changes, as when its NAT rebinds: wireguard-go moves to a new UDP
    // port, and its session goes on from there.
    let port = 40_000 + (bastion_tests::random_u64() % 20_000) as u16;
    s.tunnels[0].wg_set(&["listen-port", &port.to_string()]);
    let offset = s.bastion.process.log_len();
    assert_eq!(s.fetch_page_and_source(0, 0), BASTION_PRIVATE_V4.to_string());
    let line = s
        .bastion
        .process
        .wait_for_log_after(offset, "peer alice roamed from", STEP)
        .unwrap_or_else(|e| panic!("after the handshake line {first:?}: {e}"));
    assert!(line.contains(&format!("to {}:{port}", client.public_v4)), "roamed to the wrong endpoint: {line}");
}

/// A bastion with a second address (as after taking over a dead sibling's target address)
/// answers a client from the address the client sent to: the client keeps that endpoint.
/// Without `IP_PKTINFO` the kernel would answer from the interface's first address and the
/// client would roam to it (behind a load balancer, its flow tracking would drop the answers).
#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn replies_leave_from_the_address_the_client_sent_to() {
    let binary = bastion_tests::bastion::binary();
    let topo = Topology::with(1, 1);
    let second: std::net::Ipv4Addr = "192.0.2.2".parse().unwrap();
    bastion_tests::link::add_address(&topo.bastion, "pub0", &format!("{second}/24"));
    let bastion = Bastion::start(&topo, &binary, BastionSetup::default());
    bastion.wait_healthy(START).unwrap_or_else(|e| panic!("{e}"));
    let endpoint = SocketAddr::from((second, bastion_tests::topology::LISTEN_PORT));
    let s = Setup { tunnels: vec![topo.start_client_tunnel(0, endpoint)], bastion, topo };
    assert_eq!(s.fetch_page_and_source(0, 0), BASTION_PRIVATE_V4.to_string());
    let endpoints = s.topo.clients[0].ns.run(&["wg", "show", s.tunnels[0].name(), "endpoints"]);
    assert!(
        endpoints.contains(&format!("\t{endpoint}")),
        "the client should still talk to {endpoint}: {endpoints}\n{}",
        s.report()
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn health_reports_forwarding_off() {
    let binary = bastion_tests::bastion::binary();
    let s = Setup::start(&binary, 1, 1, BastionSetup::default());
    s.topo.bastion.sysctl("net.ipv4.ip_forward", "0");
    let off = s
        .bastion
        .wait_health("503 after net.ipv4.ip_forward=0", STEP, |r| r.status == 503)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(off.body.contains("forwarding"), "the 503 must name forwarding: {off:?}");
    s.topo.bastion.sysctl("net.ipv4.ip_forward", "1");
    s.bastion.wait_healthy(STEP).unwrap_or_else(|e| panic!("after forwarding came back: {e}"));
    s.fetch_page_and_source(0, 0);
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn restart_after_a_crash_replaces_the_table() {
    let binary = bastion_tests::bastion::binary();
    let mut s = Setup::start(&binary, 1, 1, BastionSetup::default());
    s.fetch_page_and_source(0, 0);
    // A crash: no drain, no cleanup. Our table stays behind in the kernel.
    s.bastion.process.signal(libc::SIGKILL);
    s.bastion.process.wait_exit(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(has_bastion_table(&s.nft_tables()), "expected the crashed service's table to remain");

    let again = Bastion::start(&s.topo, &binary, BastionSetup::default());
    let crashed = std::mem::replace(&mut s.bastion, again);
    s.bastion
        .wait_healthy(START)
        .unwrap_or_else(|e| panic!("restart over a leftover table: {e}\nbefore the crash:\n{}", crashed.log_report()));
    let tables = s.nft_tables();
    assert_eq!(tables.lines().filter(|l| l.trim() == "table inet bastion-wg0").count(), 1, "{tables}");
    // The client's old session is gone with the old process; it re-handshakes.
    let ruleset = s.topo.bastion.run(&["nft", "list", "table", "inet", "bastion-wg0"]);
    let source = s.fetch_page_and_source(0, 0);
    assert_eq!(source, BASTION_PRIVATE_V4.to_string(), "after the restart\n{ruleset}\n{}", s.report());
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn health_reports_a_lost_tunnel_address() {
    let binary = bastion_tests::bastion::binary();
    let s = Setup::start(&binary, 1, 1, BastionSetup::default());
    let address = format!("{BASTION_TUNNEL_V6}/64");
    s.topo.bastion.run(&["ip", "addr", "del", &address, "dev", "wg0"]);
    let lost = s
        .bastion
        .wait_health("health 503 naming the lost address", STEP, |r| r.status == 503)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(lost.body.contains(&format!("tun: wg0 has lost its address {address}")), "{lost:?}");
    s.topo.bastion.run(&["ip", "addr", "add", &address, "dev", "wg0", "nodad"]);
    s.bastion.wait_healthy(STEP).unwrap_or_else(|e| panic!("after the address came back: {e}"));
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn status_shows_peers_selftest_and_rules_but_never_keys() {
    let binary = bastion_tests::bastion::binary();
    let s = Setup::start(&binary, 1, 1, BastionSetup::default());
    s.fetch_page_and_source(0, 0);
    let status = s.bastion.status().unwrap_or_else(|e| panic!("{e}"));
    let alice = status
        .lines()
        .find(|l| l.trim_start().starts_with("alice "))
        .unwrap_or_else(|| panic!("no line for alice:\n{status}"));
    assert!(alice.contains("endpoint 192.0.2.101:"), "{alice}");
    assert!(alice.contains("s ago") && !alice.contains("never"), "{alice}");
    assert!(bastion::peer_counter(&status, "alice", "handshakes").is_some_and(|n| n >= 1), "{alice}");
    assert!(status.contains("health 200"), "{status}");
    assert!(status.contains("selftest: PASS"), "{status}");
    assert!(status.contains("iifname \"wg0\" drop"), "the rules are shown:\n{status}");
    assert!(!status.contains("selftest  endpoint"), "the internal peer is not listed:\n{status}");
    for secret in [&s.topo.bastion_keys.private, &s.topo.clients[0].keys.private] {
        assert!(!status.contains(secret.as_str()), "a private key in the status output");
    }
}

/// A deterministic byte stream that a wrong, lost or reordered byte cannot reproduce.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn bulk_tcp_both_ways_arrives_whole_through_the_tun_offloads() {
    use std::io::{Read, Write};
    const BYTES: usize = 24 << 20;
    // About a second here; the bound only stops a stalled run.
    const TRANSFER: Duration = Duration::from_secs(30);
    let binary = bastion_tests::bastion::binary();
    let s = Setup::start(&binary, 1, 1, BastionSetup::default());
    // What the bastion sends to the private side has its checksums computed in software and
    // checked by every receiver on the way: a super-packet written with a wrong pseudo-header
    // sum would arrive broken and be dropped. (The private host still sends super-packets.)
    link::checksum_offload_off(&s.topo.bastion, "priv0", "tx");
    link::checksum_offload_off(&s.topo.vpc, "p-bastion", "rx");
    link::checksum_offload_off(&s.topo.private_hosts[0].ns, "eth0", "rx");
    s.fetch_page_and_source(0, 0);
    let host = SocketAddr::from((s.topo.private_hosts[0].v4, 5301));
    // The private host takes an upload, checks it byte for byte, answers with a download.
    let listener = s.topo.private_hosts[0].ns.enter(|| std::net::TcpListener::bind(host).expect("bind"));
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut upload = Vec::with_capacity(BYTES);
        stream.read_to_end(&mut upload).expect("read the upload");
        let verdict = if upload == pattern(1, BYTES) { "upload ok" } else { "upload differs" };
        stream.write_all(verdict.as_bytes()).expect("answer");
        stream.write_all(&pattern(2, BYTES)).expect("send the download");
        verdict
    });
    let (answer, download) = s.topo.clients[0].ns.enter(|| {
        let mut stream =
            std::net::TcpStream::connect_timeout(&host, STEP).unwrap_or_else(|e| panic!("connect {host}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        // Bounded as a whole: broken super-packets would leave only retransmitted segments
        // getting through, a trickle that never trips a per-call timeout.
        let started = Instant::now();
        for (i, chunk) in pattern(1, BYTES).chunks(1 << 16).enumerate() {
            stream.write_all(chunk).expect("upload");
            assert!(started.elapsed() < TRANSFER, "the upload stalled: {} KiB sent in {TRANSFER:?}", i * 64);
        }
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = [0u8; 9];
        stream.read_exact(&mut answer).expect("the server's verdict");
        let mut download = Vec::with_capacity(BYTES);
        stream.read_to_end(&mut download).expect("download");
        (String::from_utf8_lossy(&answer).to_string(), download)
    });
    assert_eq!(server.join().unwrap(), "upload ok");
    assert_eq!(answer, "upload ok");
    assert!(download == pattern(2, BYTES), "the download differs ({} bytes)", download.len());
    // And it went as super-packets both ways: TSO reads cut into segments, decrypted segments
    // merged into one write. (Before the offloads the report had no such counters.)
    let status = s.bastion.status_json().unwrap_or_else(|e| panic!("{e}"));
    let offloads = &status["offloads"];
    assert_eq!(offloads["tun_tso"], true, "{offloads}");
    assert_eq!(offloads["tun_coalescing"], true, "{offloads}");
    let count = |field: &str| offloads[field].as_u64().unwrap_or_else(|| panic!("no {field}: {offloads}"));
    assert!(
        count("tun_super_packets_read") > 0 && count("tun_segments_read") > count("tun_super_packets_read"),
        "{offloads}"
    );
    assert!(
        count("tun_super_packets_written") > 0 && count("tun_segments_written") > count("tun_super_packets_written"),
        "{offloads}"
    );
    eprintln!("FIGURE offloads after {} MiB each way: {offloads}", BYTES >> 20);
    let text = s.bastion.status().unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains("offloads: UDP GSO on, UDP GRO on, TUN TSO on, TUN coalescing on"), "{text}");
    s.bastion.process.wait_for_log("TUN TSO on, TUN coalescing on", STEP).unwrap_or_else(|e| panic!("{e}"));
}
