//! Full runs of the self-test client against a second WireGuard endpoint: a boringtun responder
//! with a smoltcp stack (`fake_server`, no root needed), and wireguard-go in a network namespace
//! (`wireguard_go`, root).

mod fake_server;
mod wireguard_go;

use super::stack::parse_icmp_error;
use super::*;
use fake_server::{FakeServer, ServerSetup};
use smoltcp::wire::IpCidr;

const STEP: Duration = Duration::from_millis(400);

struct Topology {
    server: FakeServer,
    server_public: PublicKey,
    client_private: PrivateKey,
}

fn v4_setup(client_private: &PrivateKey, server_private: PrivateKey) -> ServerSetup {
    ServerSetup {
        family_v6: false,
        private: server_private,
        client_public: client_private.public_key(),
        addresses: vec![
            IpCidr::new("10.100.0.1".parse::<std::net::Ipv4Addr>().unwrap().into(), 24),
            IpCidr::new("10.0.1.5".parse::<std::net::Ipv4Addr>().unwrap().into(), 32),
        ],
        listeners: vec!["10.0.1.5:443".parse().unwrap(), "10.0.1.5:22".parse().unwrap()],
        unreachable: vec!["10.0.9.9".parse().unwrap()],
        garbage: false,
    }
}

fn start(setup: impl FnOnce(&PrivateKey, PrivateKey) -> ServerSetup) -> Topology {
    let client_private = PrivateKey::generate();
    let server_private = PrivateKey::generate();
    let server_public = server_private.public_key();
    let server = FakeServer::start(setup(&client_private, server_private));
    Topology { server, server_public, client_private }
}

fn plan(t: &Topology, probes: &[&str]) -> SelfTestPlan {
    SelfTestPlan {
        server: t.server.addr,
        server_public: t.server_public,
        client_private: t.client_private.clone(),
        client_address: "10.100.0.254".parse().unwrap(),
        ping_target: "10.100.0.1".parse().unwrap(),
        probes: probes.iter().map(|p| p.parse().unwrap()).collect(),
        timeout: STEP,
    }
}

fn assert_fail(outcome: &SelfTestOutcome, want_step: Step, reason_contains: &str) {
    eprintln!("{outcome}");
    match outcome {
        SelfTestOutcome::Fail { step, reason, .. } => {
            assert_eq!(*step, want_step, "{outcome}");
            assert!(reason.contains(reason_contains), "{outcome}");
        }
        _ => panic!("expected FAIL at {want_step}, got: {outcome}"),
    }
}

#[test]
fn passes_with_ping_and_probes_through_a_real_wireguard_peer() {
    let t = start(v4_setup);
    let outcome = run(&plan(&t, &["10.0.1.5:443", "10.0.1.5:22"]));
    let line = outcome.to_string();
    eprintln!("{line}");
    assert!(outcome.passed(), "{line}");
    assert!(line.starts_with("selftest: PASS handshake "), "{line}");
    assert!(line.contains(", probe 10.0.1.5:443 ") && line.contains(", probe 10.0.1.5:22 "), "{line}");
    // Give the server a moment to process the client's FINs.
    std::thread::sleep(Duration::from_millis(50));
    let log = t.server.log();
    assert_eq!(log.handshakes, 1);
    assert_eq!(log.accepted, vec!["10.0.1.5:443".parse().unwrap(), "10.0.1.5:22".parse().unwrap()]);
    assert_eq!(log.closed_by_fin, 2, "probe connections must end with a FIN, not a reset");
}

#[test]
fn the_same_key_passes_run_after_run() {
    let t = start(v4_setup);
    for _ in 0..3 {
        let outcome = run(&plan(&t, &["10.0.1.5:443"]));
        assert!(outcome.passed(), "{outcome}");
    }
    assert_eq!(t.server.log().handshakes, 3, "each run handshakes afresh");
}

#[test]
fn a_closed_port_fails_the_probe_as_refused_after_the_passing_steps() {
    let t = start(v4_setup);
    let outcome = run(&plan(&t, &["10.0.1.5:443", "10.0.1.5:444", "10.0.1.5:22"]));
    assert_fail(&outcome, Step::Probe("10.0.1.5:444".parse().unwrap()), "connection refused");
    let line = outcome.to_string();
    assert!(line.starts_with("selftest: FAIL probe 10.0.1.5:444: connection refused (handshake "), "{line}");
    assert!(line.contains(", probe 10.0.1.5:443 ") && !line.contains("10.0.1.5:22"), "{line}");
}

#[test]
fn a_silent_target_times_out_naming_the_probe() {
    let t = start(v4_setup);
    let outcome = run(&plan(&t, &["10.0.3.3:443"]));
    assert_fail(&outcome, Step::Probe("10.0.3.3:443".parse().unwrap()), "connection timed out after 400 ms");
}

#[test]
fn an_icmp_unreachable_fails_the_probe_with_the_routers_reason() {
    let t = start(v4_setup);
    let outcome = run(&plan(&t, &["10.0.9.9:5432"]));
    assert_fail(
        &outcome,
        Step::Probe("10.0.9.9:5432".parse().unwrap()),
        "destination host unreachable (ICMP from 10.100.0.1)",
    );
}

#[test]
fn an_unanswered_ping_fails_the_ping_step() {
    let t = start(v4_setup);
    let mut p = plan(&t, &["10.0.1.5:443"]);
    p.ping_target = "10.100.0.9".parse().unwrap();
    let outcome = run(&p);
    assert_fail(&outcome, Step::Ping(p.ping_target), "no echo reply within 400 ms");
    assert!(matches!(outcome, SelfTestOutcome::Fail { handshake: Some(_), ping: None, .. }), "{outcome}");
}

#[test]
fn a_wrong_server_key_fails_the_handshake() {
    let t = start(v4_setup);
    let mut p = plan(&t, &[]);
    p.server_public = PrivateKey::generate().public_key();
    let outcome = run(&p);
    assert_fail(&outcome, Step::Handshake, &format!("no response from {} within 400 ms", t.server.addr));
    assert_eq!(t.server.log().handshakes, 0);
}

#[test]
fn a_client_the_server_does_not_admit_fails_the_handshake() {
    let t = start(v4_setup);
    let mut p = plan(&t, &[]);
    p.client_private = PrivateKey::generate();
    assert_fail(&run(&p), Step::Handshake, "no response");
}

#[test]
fn nothing_listening_fails_the_handshake_as_refused() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = socket.local_addr().unwrap();
    drop(socket);
    let p = SelfTestPlan {
        server,
        server_public: PrivateKey::generate().public_key(),
        client_private: PrivateKey::generate(),
        client_address: "10.100.0.254".parse().unwrap(),
        ping_target: "10.100.0.1".parse().unwrap(),
        probes: vec![],
        timeout: STEP,
    };
    let outcome = run(&p);
    assert_fail(&outcome, Step::Handshake, &format!("nothing listens on {server} (connection refused)"));
}

#[test]
fn garbage_on_the_socket_is_ignored_and_the_run_still_passes() {
    let t = start(|c, s| ServerSetup { garbage: true, ..v4_setup(c, s) });
    let outcome = run(&plan(&t, &["10.0.1.5:443"]));
    assert!(outcome.passed(), "{outcome}");
}

#[test]
fn garbage_alone_fails_the_handshake_and_says_so() {
    // A "server" that only ever answers with junk.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = junk.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            junk.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            let mut buf = [0u8; 2048];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((_, from)) = junk.recv_from(&mut buf) {
                    for kind in 1u8..=4 {
                        let mut packet = [0xa5u8; 148];
                        packet[..4].copy_from_slice(&[kind, 0, 0, 0]);
                        let _ = junk.send_to(&packet[..[148, 92, 64, 48][usize::from(kind) - 1]], from);
                    }
                }
            }
        })
    };
    let p = SelfTestPlan {
        server,
        server_public: PrivateKey::generate().public_key(),
        client_private: PrivateKey::generate(),
        client_address: "10.100.0.254".parse().unwrap(),
        ping_target: "10.100.0.1".parse().unwrap(),
        probes: vec![],
        timeout: STEP,
    };
    let outcome = run(&p);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    thread.join().unwrap();
    assert_fail(&outcome, Step::Handshake, "datagrams rejected");
}

#[test]
fn ipv6_end_to_end() {
    let t = start(|c, s| ServerSetup {
        family_v6: true,
        addresses: vec![
            IpCidr::new("fd00::1".parse::<std::net::Ipv6Addr>().unwrap().into(), 64),
            IpCidr::new("fd00:1::5".parse::<std::net::Ipv6Addr>().unwrap().into(), 128),
        ],
        listeners: vec!["[fd00:1::5]:443".parse().unwrap()],
        unreachable: vec![],
        ..v4_setup(c, s)
    });
    let mut p = plan(&t, &["[fd00:1::5]:443"]);
    p.client_address = "fd00::fe".parse().unwrap();
    p.ping_target = "fd00::1".parse().unwrap();
    let outcome = run(&p);
    assert!(outcome.passed(), "{outcome}");
    assert!(outcome.to_string().contains("probe [fd00:1::5]:443 "), "{outcome}");
    p.probes = vec!["[fd00:1::5]:80".parse().unwrap()];
    assert_fail(&run(&p), Step::Probe(p.probes[0]), "connection refused");
}

#[test]
fn mixed_ip_versions_fail_with_a_clear_reason() {
    let t = start(v4_setup);
    let mut p = plan(&t, &[]);
    p.ping_target = "fd00::1".parse().unwrap();
    assert_fail(&run(&p), Step::Setup, "different IP versions");

    let p = plan(&t, &["[fd00:1::5]:443"]);
    assert_fail(&run(&p), Step::Probe(p.probes[0]), "different IP versions");
}

#[test]
fn icmp_error_parser_never_panics_on_garbage() {
    use rand_core::{OsRng, RngCore};
    let us = smoltcp::wire::IpAddress::from("10.100.0.254".parse::<IpAddr>().unwrap());
    for len in 0..200 {
        for first in [0x45u8, 0x46, 0x4f, 0x60, 0x00, 0xff] {
            let mut packet = vec![0u8; len];
            OsRng.fill_bytes(&mut packet);
            if let Some(b) = packet.first_mut() {
                *b = first;
            }
            let _ = parse_icmp_error(&packet, us);
        }
    }
}
