//! Hostile input against `bastion run`, as an attacker would send it: a host in the VPC that
//! reaches the health port, a WireGuard peer, someone forging packets from the internet, a
//! stray signal. Every attack is a bounded loop that stops by itself; each test asserts what
//! the bastion must still do while it runs, and prints the figures (`FIGURE ...` lines) that
//! the closing notes and README quote.
//!
//! Needs root and `BASTION_BIN` (`make integration-test` sets it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bastion_tests::bastion::{Bastion, BastionSetup};
use bastion_tests::topology::BASTION_PRIVATE_V4;
use bastion_tests::Topology;

/// Bound of the service's start, up to health 200.
const START: Duration = Duration::from_secs(20);
/// What the NLB allows a health check (its HTTP timeout is 2–120 s; AWS's default for an NLB
/// is 6 s): an answer slower than this is a failed check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The health port as a VPC host sees it.
fn health_from_vpc() -> SocketAddr {
    SocketAddr::from((BASTION_PRIVATE_V4, 8080))
}

/// A field of `/proc/PID/status` in its first unit (kB for memory, a count for threads).
fn proc_status(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `n` health checks from the bastion's own namespace (where the test's "load balancer"
/// stands), a little apart; each must be a 200 within [`CHECK_TIMEOUT`]. Returns the slowest.
fn checks_pass(bastion: &Bastion, n: usize, what: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let started = Instant::now();
        let answer = bastion.health();
        let took = started.elapsed();
        match answer {
            Ok(r) if r.status == 200 && took < CHECK_TIMEOUT => {}
            other => panic!("health check {i} during {what}: {other:?} after {took:?}\n{}", bastion.log_report()),
        }
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(150));
    }
    slowest
}

/// The bastion under attack: one client (unused by the health attacks), two private hosts
/// (host 0 is the attacker in the VPC).
fn healthy_bastion(binary: &std::path::Path, setup: BastionSetup) -> (Bastion, Topology) {
    let topo = Topology::with(1, 2);
    let bastion = Bastion::start(&topo, binary, setup);
    bastion.wait_healthy(START).unwrap_or_else(|e| panic!("{e}"));
    (bastion, topo)
}

/// One connection that pipelines `requests` health requests without reading an answer, then
/// holds the connection open for `hold`. Returns how many requests it got written.
fn pipeline(to: SocketAddr, requests: usize, hold: Duration) -> usize {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("attacker connects");
    stream.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: bastion\r\n\r\n";
    let mut written = 0;
    for _ in 0..requests {
        if stream.write_all(request).is_err() {
            break;
        }
        written += 1;
    }
    std::thread::sleep(hold);
    written
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_pipelining_connection_does_not_freeze_health() {
    let binary = bastion_tests::bastion::binary();
    let (bastion, topo) = healthy_bastion(&binary, BastionSetup::default());
    let attack =
        topo.private_hosts[0].ns.enter_background(|| pipeline(health_from_vpc(), 25_000, Duration::from_secs(6)));
    std::thread::sleep(Duration::from_millis(300));
    let slowest = checks_pass(&bastion, 15, "a pipelining attack");
    let written = attack.join().unwrap();
    eprintln!(
        "FIGURE health/pipelining: {written} of 25000 pipelined requests written; slowest of 15 checks {:.1} ms",
        slowest.as_secs_f64() * 1e3
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_client_never_holds_up_the_drain() {
    let binary = bastion_tests::bastion::binary();
    let (bastion, topo) = healthy_bastion(&binary, BastionSetup { drain_seconds: 1, ..BastionSetup::default() });
    let attack =
        topo.private_hosts[0].ns.enter_background(|| pipeline(health_from_vpc(), 25_000, Duration::from_secs(20)));
    // A second attacker that sends half a request and then nothing.
    let half_open = topo.private_hosts[1].ns.enter_background(|| {
        let mut s = TcpStream::connect_timeout(&health_from_vpc(), Duration::from_secs(2)).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\n");
        std::thread::sleep(Duration::from_secs(20));
    });
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    bastion.process.signal(libc::SIGTERM);
    let status = bastion.process.wait_exit(Duration::from_secs(6)).unwrap_or_else(|e| panic!("{e}"));
    let took = signalled.elapsed();
    assert!(status.success(), "bastion run exited with {status:?}\n{}", bastion.log_report());
    let tables = topo.bastion.run(&["nft", "list", "tables"]);
    assert!(!tables.contains("table inet bastion-wg0"), "the table stayed behind: {tables}");
    eprintln!(
        "FIGURE health/drain: SIGTERM to exit {:.2} s with drain_seconds = 1 and two hostile clients",
        took.as_secs_f64()
    );
    drop(attack);
    drop(half_open);
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn an_endless_header_line_costs_no_memory() {
    let binary = bastion_tests::bastion::binary();
    let (bastion, topo) = healthy_bastion(&binary, BastionSetup::default());
    let pid = bastion.process.pid();
    let rss_before = proc_status(pid, "VmRSS");
    let attack = topo.private_hosts[0].ns.enter_background(|| {
        let mut s = TcpStream::connect_timeout(&health_from_vpc(), Duration::from_secs(2)).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nX-Filler: ");
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        while sent < 100 << 20 {
            if s.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        (sent, String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string())
    });
    let mut rss_peak = rss_before;
    while !attack.is_finished() {
        rss_peak = rss_peak.max(proc_status(pid, "VmRSS"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (sent, answer) = attack.join().unwrap();
    let slowest = checks_pass(&bastion, 3, "after an endless header line");
    let growth_kib = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "FIGURE health/long-header: {} MiB sent before the bastion closed; answer {answer:?}; RSS {rss_before} kB -> peak {rss_peak} kB; slowest check after {:.1} ms",
        sent >> 20,
        slowest.as_secs_f64() * 1e3
    );
    assert!(
        growth_kib < 16 * 1024,
        "RSS grew by {growth_kib} kB while a client sent {} MiB of one header line",
        sent >> 20
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn many_idle_connections_make_no_threads_and_leave_room_for_checks() {
    let binary = bastion_tests::bastion::binary();
    let (bastion, topo) = healthy_bastion(&binary, BastionSetup::default());
    let pid = bastion.process.pid();
    let threads_before = proc_status(pid, "Threads");
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let attack = topo.private_hosts[0].ns.enter_background(move || {
        let mut held = Vec::new();
        for _ in 0..500 {
            if let Ok(mut s) = TcpStream::connect_timeout(&health_from_vpc(), Duration::from_secs(1)) {
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n");
                held.push(s);
            }
        }
        let _ = opened_tx.send(held.len());
        std::thread::sleep(Duration::from_secs(4));
        held.len()
    });
    let opened = opened_rx.recv_timeout(Duration::from_secs(30)).expect("the attacker opened its connections");
    let threads_during = proc_status(pid, "Threads");
    let slowest = checks_pass(&bastion, 10, "500 idle connections");
    attack.join().unwrap();
    eprintln!(
        "FIGURE health/idle: {opened} idle connections opened; threads {threads_before} -> {threads_during}; slowest of 10 checks {:.1} ms",
        slowest.as_secs_f64() * 1e3
    );
    assert!(
        threads_during <= threads_before,
        "{opened} idle connections made threads: {threads_before} -> {threads_during}"
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn peers_reach_neither_the_bastion_itself_nor_the_metadata_service() {
    let binary = bastion_tests::bastion::binary();
    let topo = Topology::with(1, 2);
    // Host 1 also stands in for the instance metadata service, on the bastion's link.
    bastion_tests::link::add_address(&topo.private_hosts[1].ns, "eth0", "169.254.169.254/32");
    topo.bastion.run(&["ip", "route", "add", "169.254.169.254/32", "dev", "priv0"]);
    // Another listener of the bastion host (an sshd, say), on every address.
    let other_listener = topo.bastion.enter(|| std::net::TcpListener::bind("0.0.0.0:2222").unwrap());
    // `reach` as `bastion convert` writes it for `-A FORWARD -i wg0 -j ACCEPT`.
    let setup = BastionSetup { nat_reach: vec!["0.0.0.0/0".into(), "::/0".into()], ..BastionSetup::default() };
    let bastion = Bastion::start(&topo, &binary, setup);
    bastion.wait_healthy(START).unwrap_or_else(|e| panic!("{e}"));
    let tunnel = topo.start_client_tunnel(0, topo.endpoint_v4());
    tunnel.wg_set(&[
        "peer",
        &topo.bastion_keys.public,
        "allowed-ips",
        "10.100.0.0/24,10.0.1.0/24,169.254.169.254/32,fd00:100::/64,fd00:1::/64",
    ]);
    tunnel.add_route("169.254.169.254/32");
    let client = &topo.clients[0].ns;
    let metadata = SocketAddr::from(([169, 254, 169, 254], 80));

    // Controls: the tunnel works, the metadata stand-in and the other listener are up.
    let host0 = topo.private_hosts[0].http_v4();
    bastion_tests::wait_until("a private page through the tunnel", Duration::from_secs(10), || {
        bastion_tests::http::get(client, host0, "/", Duration::from_secs(2))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bastion.log_report()));
    bastion_tests::http::get(&topo.bastion, metadata, "/", Duration::from_secs(2))
        .expect("the metadata stand-in answers the bastion itself");
    bastion_tests::traffic::tcp_connect(
        &topo.private_hosts[0].ns,
        SocketAddr::from((BASTION_PRIVATE_V4, 2222)),
        Duration::from_secs(2),
    )
    .expect("the other listener answers the VPC");
    // A peer may ping the bastion (the self-test's own path; health is 200, so it passed)...
    client.ping("10.100.0.1", Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    client.ping("fd00:100::1", Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    // ...but reach none of its ports, on any of its addresses...
    for target in [
        SocketAddr::from(([10, 100, 0, 1], 8080)),
        SocketAddr::from((BASTION_PRIVATE_V4, 8080)),
        SocketAddr::from(([10, 100, 0, 1], 2222)),
        SocketAddr::from((BASTION_PRIVATE_V4, 2222)),
        "[fd00:100::1]:8080".parse().unwrap(),
    ] {
        let attempt = bastion_tests::traffic::tcp_connect(client, target, Duration::from_secs(2));
        assert!(attempt.is_err(), "a peer reached the bastion's own {target}");
    }
    // ...and never the metadata service, although reach is 0.0.0.0/0.
    let stolen = bastion_tests::http::get(client, metadata, "/", Duration::from_secs(2));
    assert!(stolen.is_err(), "a peer reached the metadata service: {stolen:?}");
    assert!(bastion.health().map(|r| r.status) == Ok(200), "health stays 200");
    drop(other_listener);
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn stray_signals_neither_kill_nor_stop_the_service() {
    let binary = bastion_tests::bastion::binary();
    let (bastion, topo) = healthy_bastion(&binary, BastionSetup { drain_seconds: 1, ..BastionSetup::default() });
    // SIGHUP is not stray: it reloads (tests/reload.rs).
    let stray = [
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGPWR, "SIGPWR"),
    ];
    for (signal, name) in stray {
        let offset = bastion.process.log_len();
        bastion.process.signal(signal);
        bastion
            .process
            .wait_for_log_after(offset, &format!("{name} ignored"), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(bastion.process.try_exit().is_none(), "{name} ended bastion run\n{}", bastion.log_report());
        let state = std::fs::read_to_string(format!("/proc/{}/stat", bastion.process.pid())).unwrap_or_default();
        let state = state.rsplit(')').next().unwrap_or("").split_whitespace().next().unwrap_or("?").to_string();
        assert_ne!(state, "T", "{name} stopped bastion run");
        checks_pass(&bastion, 1, &format!("after {name}"));
    }
    // The drain signal still works, and cleans up.
    bastion.process.signal(libc::SIGTERM);
    let status = bastion.process.wait_exit(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status:?}\n{}", bastion.log_report());
    let tables = topo.bastion.run(&["nft", "list", "tables"]);
    assert!(!tables.contains("table inet bastion-wg0"), "{tables}");
}

/// Runs a command as root without CAP_SYS_PTRACE.
const WITHOUT_PTRACE: [&str; 2] = ["setpriv", "--bounding-set=-sys_ptrace"];

/// Whether a process without CAP_SYS_PTRACE can open `/proc/PID/mem` of a process with the
/// same user and capabilities: the kernel allows it only when the target is dumpable.
fn mem_readable_without_ptrace(pid: i32) -> bool {
    bastion_tests::command::run(&[
        WITHOUT_PTRACE[0],
        WITHOUT_PTRACE[1],
        "dd",
        &format!("if=/proc/{pid}/mem"),
        "of=/dev/null",
        "bs=1",
        "count=0",
    ])
    .success()
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn the_service_leaves_no_core_and_its_memory_is_not_readable() {
    let binary = bastion_tests::bastion::binary();
    bastion_tests::require_tools(&["setpriv", "dd"]);
    // The service without CAP_SYS_PTRACE too, so that only its dumpable flag decides.
    let setup = BastionSetup { command_prefix: WITHOUT_PTRACE.map(String::from).to_vec(), ..BastionSetup::default() };
    let (bastion, _topo) = healthy_bastion(&binary, setup);
    let pid = bastion.process.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap_or("");
    assert_eq!(core.split_whitespace().collect::<Vec<_>>()[4..6], ["0", "0"], "{core}");
    // Control: an ordinary process of the same user can be read that way...
    let mut control =
        std::process::Command::new(WITHOUT_PTRACE[0]).args(&WITHOUT_PTRACE[1..]).args(["sleep", "30"]).spawn().unwrap();
    let control_readable = mem_readable_without_ptrace(control.id() as i32);
    let _ = control.kill();
    let _ = control.wait();
    assert!(control_readable, "the check itself does not work here: /proc/PID/mem of `sleep` not readable");
    // ...the bastion's cannot.
    assert!(!mem_readable_without_ptrace(pid), "/proc/{pid}/mem of bastion run opened without CAP_SYS_PTRACE");
}
