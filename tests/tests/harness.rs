//! The harness proves itself: with wireguard-go as the bastion too (forwarding + an `nft`
//! masquerade), a client fetches a page from the private server through the tunnel, and every
//! guard leaves nothing behind, also when the test panics. This is also the baseline setup
//! the benchmarks compare `bastion run` against.

use std::time::Duration;

use bastion_tests::baseline::WireguardGoBastion;
use bastion_tests::topology::{BASTION_PRIVATE_V4, BASTION_TUNNEL_V4, BASTION_TUNNEL_V6};
use bastion_tests::wireguard::unix_now;
use bastion_tests::{command, http, unique_name, HttpServer, Netns, Process, RunDir, Topology};

const STEP: Duration = Duration::from_secs(10);

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn wireguard_go_bastion_forwards_and_masquerades() {
    let topo = Topology::build();
    let bastion = WireguardGoBastion::start(&topo);
    let start = unix_now();
    let client = topo.start_client_tunnel(0, topo.endpoint_v4());
    let host = &topo.private_hosts[0];

    let path = HttpServer::probe_path();
    let page = bastion_tests::wait_until("the page through the tunnel", STEP, || {
        http::get(&topo.clients[0].ns, host.http_v4(), &path, Duration::from_secs(2))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", client.log_report(), bastion.wg.log_report()));
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains(&host.server.marker), "wrong page: {page:?}");

    let source = host.server.client_of(&path, STEP).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(source, BASTION_PRIVATE_V4.to_string(), "masquerade: the server saw {source}");

    client.wait_handshake(&topo.bastion_keys.public, start, STEP).unwrap_or_else(|e| panic!("{e}"));
    let ns = &topo.clients[0].ns;
    ns.ping(&host.v4.to_string(), STEP).unwrap_or_else(|e| panic!("{e}"));
    ns.ping(&BASTION_TUNNEL_V4.to_string(), STEP).unwrap_or_else(|e| panic!("{e}"));
    ns.ping(&BASTION_TUNNEL_V6.to_string(), STEP).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn wireguard_go_bastion_over_ipv6_endpoint_with_two_clients() {
    let topo = Topology::with(2, 1);
    let bastion = WireguardGoBastion::start(&topo);
    let tunnels = [topo.start_client_tunnel(0, topo.endpoint_v4()), topo.start_client_tunnel(1, topo.endpoint_v6())];
    let host = &topo.private_hosts[0];
    for (i, tunnel) in tunnels.iter().enumerate() {
        let page = bastion_tests::wait_until("the page through the tunnel", STEP, || {
            http::get(&topo.clients[i].ns, host.http_v4(), "/", Duration::from_secs(2))
        })
        .unwrap_or_else(|e| panic!("client {i}: {e}\n{}\n{}", tunnel.log_report(), bastion.wg.log_report()));
        assert!(page.body.contains(&host.server.marker), "{page:?}");
    }
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn without_a_bastion_nothing_gets_through() {
    // The control for the test above: the same client, no bastion, so no page. A harness that
    // passes traffic some other way would make every tunnel test meaningless.
    let topo = Topology::build();
    let _client = topo.start_client_tunnel(0, topo.endpoint_v4());
    let host = &topo.private_hosts[0];
    let attempt = http::get(&topo.clients[0].ns, host.http_v4(), "/", Duration::from_secs(2));
    assert!(attempt.is_err(), "a page arrived with no bastion: {attempt:?}");
    // And the private host is not reachable from the client outside the tunnel either.
    assert!(!topo.clients[0].ns.exec(&["ping", "-c", "1", "-W", "1", &host.v4.to_string()]).success());
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn process_log_waits_and_timeouts_show_the_log() {
    let dir = RunDir::new(&unique_name("log"));
    let process = Process::spawn(
        "echoer",
        &["sh", "-c", "echo hello; sleep 0.2; echo world; exec sleep 30"],
        &[],
        &dir.path().join("echoer.log"),
    );
    let line = process.wait_for_log("world", STEP).unwrap();
    assert_eq!(line, "world");
    let err = process.wait_for_log("never printed", Duration::from_millis(300)).unwrap_err();
    assert!(err.contains("hello") && err.contains("never printed"), "{err}");
}

fn netns_exists(name: &str) -> bool {
    command::run_ok(&["ip", "netns", "list"]).lines().any(|l| l.split_whitespace().next() == Some(name))
}

fn pid_alive(pid: i32) -> bool {
    // A reaped child is gone; a zombie would still count, which is what we want to catch.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn guards_clean_up_even_when_the_test_panics() {
    let mut names = Vec::new();
    let mut pids = Vec::new();
    let mut sockets = Vec::new();
    let mut dir = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topo = Topology::build();
        let bastion = WireguardGoBastion::start(&topo);
        let client = topo.start_client_tunnel(0, topo.endpoint_v4());
        dir = Some(topo.dir.path().to_path_buf());
        names.extend(
            [&topo.internet, &topo.vpc, &topo.bastion, &topo.clients[0].ns, &topo.private_hosts[0].ns]
                .iter()
                .map(|ns| ns.name().to_string()),
        );
        sockets.push(format!("/var/run/wireguard/{}.sock", client.name()));
        sockets.push(format!("/var/run/wireguard/{}.sock", bastion.wg.name()));
        pids.push(client.process().pid());
        // A process the guards do not know about: the namespace's drop must still end it.
        let stray = topo.bastion.exec(&["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"]);
        pids.push(stray.expect_success().trim().parse().unwrap());
        for name in &names {
            assert!(netns_exists(name), "{name} was not created");
        }
        panic!("deliberate panic inside the topology");
    }));
    assert!(result.is_err());
    for name in &names {
        assert!(!netns_exists(name), "namespace {name} left behind");
    }
    for socket in &sockets {
        assert!(!std::path::Path::new(socket).exists(), "{socket} left behind");
    }
    std::thread::sleep(Duration::from_millis(200));
    for pid in &pids {
        assert!(!pid_alive(*pid) || is_zombie_of_init(*pid), "process {pid} left behind");
    }
    // The scratch folder is the one thing kept after a failure, for its logs.
    let dir = dir.unwrap();
    assert!(dir.join("http-host0.log").exists(), "logs of a failed test not kept in {}", dir.display());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A process we killed but do not parent (the stray `sleep`) is reaped by init, not by us; give
/// it that moment.
fn is_zombie_of_init(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn netns_enter_runs_in_the_namespace() {
    let ns = Netns::new(&unique_name("enter"));
    // A fresh namespace has only `lo`, and its own: a listener on the host's loopback is not
    // reachable from inside.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Entering a namespace that does not exist panics rather than running in the host's.
    let missing = std::panic::catch_unwind(|| {
        bastion_tests::traffic::tcp_connect(&Netns::borrowed("no-such-namespace"), addr, STEP)
    });
    assert!(missing.is_err(), "ran in the host namespace: {missing:?}");
    let err = bastion_tests::traffic::tcp_connect(&ns, addr, Duration::from_millis(500)).unwrap_err();
    assert!(err.contains("refused"), "{err}");
    let ifaces = ns.enter(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap());
    let names: Vec<&str> = ifaces.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(names, ["lo"], "{ifaces}");
}
