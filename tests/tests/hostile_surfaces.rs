//! Hostile input, second round: the surfaces added after the first hardening (hostile.rs),
//! tried as an attacker would: an operator's second `bastion run` on the same host, another
//! peer and a local unprivileged user on a client against `bastion watch`'s move notices, and a
//! slow local client on the control socket. Each test fails on the code before its fix.
//!
//! Needs root and `BASTION_BIN` (`make integration-test` sets it).

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bastion_tests::bastion::{Bastion, BastionSetup};
use bastion_tests::topology::{BASTION_TUNNEL_V4, TUNNEL_NET_V4};
use bastion_tests::{wait_until, Topology};

const START: Duration = Duration::from_secs(20);
const NOTICE_PORT: u16 = 821;

fn tables(topo: &Topology) -> String {
    topo.bastion.run(&["nft", "list", "tables"])
}

/// Before: both services used `table inet bastion`, so the second replaced the first's rules
/// (its peer then reached hosts outside its reach) and deleted them on exit; a second service
/// for the same interface ran on after "control: not available".
#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_second_service_on_the_same_host_keeps_out_of_the_first_ones_way() {
    let binary = bastion_tests::bastion::binary();
    let topo = Topology::with(1, 2);
    let first = Bastion::start(&topo, &binary, BastionSetup::default());
    first.wait_healthy(START).unwrap_or_else(|e| panic!("{e}"));
    let tunnel = topo.start_client_tunnel(0, topo.endpoint_v4());
    let outside_reach = topo.private_hosts[1].v4.to_string();
    let client = &topo.clients[0].ns;
    client.ping(&topo.private_hosts[0].v4.to_string(), START).unwrap_or_else(|e| panic!("{e}"));

    // A second service on another interface, port and tunnel network, in the same namespace.
    let second_config = BastionSetup { health_port: 8081, interface_name: "wg1".into(), ..BastionSetup::default() }
        .to_toml(&topo)
        .replace("listen_port = 51820", "listen_port = 51830")
        .replace("10.100.0.1/24", "10.101.0.1/24")
        .replace("fd00:100::1/64", "fd00:101::1/64")
        .replace("10.0.1.10/32", "10.0.1.0/24");
    let second_path = topo.dir.write("second.toml", &second_config);
    let second_socket = topo.dir.path().join("second.sock");
    let run = |label: &str, config: &std::path::Path, socket: &std::path::Path| {
        topo.bastion.spawn(
            label,
            &[
                binary.to_str().unwrap(),
                "run",
                "--config",
                config.to_str().unwrap(),
                "--socket",
                socket.to_str().unwrap(),
            ],
            &[],
            &topo.dir.path().join(format!("{label}.log")),
        )
    };
    let second = run("second", &second_path, &second_socket);
    second.wait_for_log("health: listening on 0.0.0.0:8081", START).unwrap_or_else(|e| panic!("{e}"));
    let listed = tables(&topo);
    assert!(listed.contains("table inet bastion-wg0") && listed.contains("table inet bastion-wg1"), "{listed}");
    // The first one's rules still hold: its peer does not reach a host outside its reach.
    assert!(client.ping(&outside_reach, Duration::from_secs(2)).is_err(), "peer reached {outside_reach}");
    second.signal(libc::SIGTERM);
    second.signal(libc::SIGTERM);
    second.wait_exit(START).unwrap_or_else(|e| panic!("{e}"));
    let listed = tables(&topo);
    assert!(listed.contains("table inet bastion-wg0") && !listed.contains("bastion-wg1"), "{listed}");
    assert_eq!(first.health().map(|r| r.status), Ok(200), "{}", first.log_report());

    // A second service for the same interface (its own socket, so only the lock can stop it)
    // refuses before it touches anything.
    let same = run("same", &first.config, &topo.dir.path().join("same.sock"));
    let status = same.wait_exit(START).unwrap_or_else(|e| panic!("{e}"));
    assert!(!status.success(), "{}", same.log_report());
    let log = same.log();
    assert!(log.contains("another bastion service (pid") && log.contains("runs interface wg0"), "{log}");
    assert!(tables(&topo).contains("table inet bastion-wg0"));
    assert!(client.ping(&outside_reach, Duration::from_secs(2)).is_err(), "peer reached {outside_reach}");
    client.ping(&topo.private_hosts[0].v4.to_string(), START).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.health().map(|r| r.status), Ok(200), "{}", first.log_report());
    drop(tunnel);
}

/// Sends `payload` from `ns` to `to`, `count` times, as the user `uid` (a fresh process via
/// setpriv, so no capability of the test's).
fn send_as(ns: &bastion_tests::Netns, uid: u32, to: SocketAddr, payload: &str, count: usize) -> String {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for _ in range({count}): s.sendto({payload:?}.encode(), ({:?}, {}))\n",
        to.ip().to_string(),
        to.port()
    );
    let uid = uid.to_string();
    let out = ns.exec(&[
        "setpriv",
        "--reuid",
        &uid,
        "--regid",
        &uid,
        "--clear-groups",
        "--inh-caps=-all",
        "/usr/bin/python3",
        "-c",
        &script,
    ]);
    format!("{}{}", out.stdout, out.stderr)
}

/// Before: watch moved for any notice that arrived on the tunnel interface (a local user's,
/// sent to the client's own tunnel address; another peer's, forwarded by a bastion whose reach
/// covers the tunnel network), logged every one of them, shared the port through SO_REUSEADDR
/// on 51821, and exited when it could not bind it.
#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn move_notices_come_only_from_the_bastion() {
    let binary = bastion_tests::bastion::binary();
    let topo = Topology::with(2, 1);
    // reach covers the tunnel network: the bastion forwards peer to peer (what `convert` makes
    // of `iptables -A FORWARD -i wg0 -j ACCEPT`).
    let setup =
        BastionSetup { nat_reach: vec![TUNNEL_NET_V4.into(), "10.0.1.10/32".into()], ..BastionSetup::default() };
    let bastion = Bastion::start(&topo, &binary, setup);
    bastion.wait_healthy(START).unwrap_or_else(|e| panic!("{e}"));
    let victim_tunnel = topo.start_client_tunnel(0, topo.endpoint_v4());
    let other_tunnel = topo.start_client_tunnel(1, topo.endpoint_v4());
    let (victim, other) = (&topo.clients[0], &topo.clients[1]);
    victim.ns.ping(&BASTION_TUNNEL_V4.to_string(), START).unwrap_or_else(|e| panic!("{e}"));
    other.ns.ping(&BASTION_TUNNEL_V4.to_string(), START).unwrap_or_else(|e| panic!("{e}"));

    let log = topo.dir.path().join("watch.log");
    let watch_argv = [binary.to_str().unwrap(), "watch", "--interface", victim_tunnel.name(), "--stall-seconds", "60"];
    let watch = victim.ns.spawn("bastion watch", &watch_argv, &[], &log);
    watch.wait_for_log("or when a bastion asks (UDP 821)", START).unwrap_or_else(|e| panic!("{e}"));

    // An unprivileged user can neither bind the notice port nor share it.
    let bind = victim.ns.exec(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "/usr/bin/python3",
        "-c",
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',821))",
    ]);
    assert!(!bind.success(), "nobody bound UDP 821");
    assert!(bind.stderr.contains("Permission denied"), "{bind}");

    // Another peer, through the bastion: the notice is dropped on the way; other UDP between
    // the peers still flows (the drop is the notice port's alone).
    let to_victim = |port| SocketAddr::from((victim.tunnel_v4, port));
    let receiver = victim.ns.enter(|| UdpSocket::bind(("0.0.0.0", 9999)).unwrap());
    receiver.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    send_as(&other.ns, 65534, to_victim(9999), "hello", 3);
    let mut buffer = [0u8; 64];
    let (n, from) = receiver.recv_from(&mut buffer).expect("peer-to-peer UDP flows where reach allows it");
    assert_eq!((&buffer[..n], from.ip()), (&b"hello"[..], std::net::IpAddr::V4(other.tunnel_v4)));
    send_as(&other.ns, 0, to_victim(NOTICE_PORT), "bastion-move 1 drain\n", 20);

    // A local unprivileged user on the client, to the client's own tunnel address: refused,
    // and 500 of them are a line or two, not 500.
    let started = Instant::now();
    send_as(&victim.ns, 65534, to_victim(NOTICE_PORT), "bastion-move 1 drain\n", 500);
    wait_until("watch to refuse the local notices", START, || {
        let text = watch.log();
        text.contains("refused: it came from this machine itself").then_some(()).ok_or(text)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    let text = watch.log();
    assert!(!text.contains("moved to a new flow"), "a notice moved the tunnel:\n{text}");
    assert!(!text.contains(&format!("from {}", other.tunnel_v4)), "another peer's notice reached watch:\n{text}");
    let refusals = text.matches("refused:").count();
    assert!((1..=2).contains(&refusals), "{refusals} refusal lines for 500 notices:\n{text}");

    // A second watch cannot listen for notices (the first holds the port): it says so and
    // keeps watching for stalls instead of exiting.
    let second = victim.ns.spawn("second watch", &watch_argv, &[], &topo.dir.path().join("watch2.log"));
    second.wait_for_log("watching for stalls only", START).unwrap_or_else(|e| panic!("{e}"));
    second.wait_for_log("watching 1 peer(s)", START).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(500));
    second.check_running().unwrap_or_else(|e| panic!("{e}"));
    drop((second, watch, victim_tunnel, other_tunnel));
}

/// Before: one client dripping a byte per second kept the single control thread (each read
/// had its own 2 s timeout), so `bastion status` failed after 5 s and SIGTERM's exit waited
/// for the connection (54 s with a 3 s drain).
#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_slow_control_client_neither_blocks_status_nor_holds_the_exit() {
    let binary = bastion_tests::bastion::binary();
    let topo = Topology::with(1, 1);
    let bastion = Bastion::start(&topo, &binary, BastionSetup { drain_seconds: 1, ..BastionSetup::default() });
    bastion.wait_healthy(START).unwrap_or_else(|e| panic!("{e}"));
    let drippers: Vec<_> = (0..3)
        .map(|_| {
            let mut stream = UnixStream::connect(&bastion.socket).unwrap();
            std::thread::spawn(move || {
                for _ in 0..60 {
                    if stream.write_all(b"s").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let status = bastion.status().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.contains("interface: wg0"), "{status}");
    assert!(asked.elapsed() < Duration::from_secs(2), "status took {:?}", asked.elapsed());
    let _held = UnixStream::connect(&bastion.socket).unwrap();
    let signalled = Instant::now();
    bastion.process.signal(libc::SIGTERM);
    let exit = bastion.process.wait_exit(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    assert!(exit.success(), "{exit:?}\n{}", bastion.log_report());
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(4), "SIGTERM to exit {took:?} with a 1 s drain\n{}", bastion.log_report());
    eprintln!("FIGURE control: SIGTERM to exit {:.2} s (drain 1 s) with 4 slow control clients", took.as_secs_f64());
    for dripper in drippers {
        dripper.join().unwrap();
    }
}
