//! The service's periodic self-test, end to end: the in-process client handshakes with the
//! running `bastion run`, pings its tunnel address and opens a TCP connection through the NAT to
//! a real server in the private subnet. Asserted on the console lines, the health answers, and
//! the probe server's own access log (the connection really arrived, from the bastion).
//!
//! Needs root and `BASTION_BIN`; without `BASTION_BIN` each test says it is skipped and passes.

use std::time::Duration;

use bastion_tests::bastion::{Bastion, BastionSetup};
use bastion_tests::process::Process;
use bastion_tests::topology::BASTION_PRIVATE_V4;
use bastion_tests::{Netns, RunDir, Topology};

/// Bound of one self-test cycle (interval 2 s, steps of at most 2 s each).
const CYCLE: Duration = Duration::from_secs(15);
/// Bound of the service's start, up to health 200.
const START: Duration = Duration::from_secs(20);
const PROBE_PORT: u16 = 8443;

/// Waits for the first line holding `needle` printed after byte `offset` of the log; returns
/// the line and the offset just past it, so the next wait looks only at what came later.
fn next_line(process: &Process, offset: usize, needle: &str) -> (String, usize) {
    let line = process.wait_for_log_after(offset, needle, CYCLE).unwrap_or_else(|e| panic!("{e}"));
    let log = process.log();
    let at = log[offset..].find(&line).map(|i| offset + i + line.len()).unwrap_or(log.len());
    (line, at)
}

/// A TCP server like the applications a probe targets (an SSH or HTTPS port): it accepts, waits
/// for the client to close, and logs each connection's source address.
fn probe_server(ns: &Netns, dir: &RunDir, label: &str) -> Process {
    let program = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('::', {PROBE_PORT}))\n\
         s.listen(16)\n\
         print('listening', flush=True)\n\
         while True:\n\
         \x20   c, a = s.accept()\n\
         \x20   print('connection from', a[0], flush=True)\n\
         \x20   c.settimeout(5)\n\
         \x20   try: c.recv(1)\n\
         \x20   except OSError: pass\n\
         \x20   c.close()\n"
    );
    let process = ns.spawn(
        &format!("probe server {label}"),
        &["python3", "-u", "-c", &program],
        &[],
        &dir.path().join(format!("probe-{label}.log")),
    );
    process.wait_for_log("listening", Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    process
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn selftest_passes_names_a_dead_probe_and_passes_again_when_it_is_back() {
    let binary = bastion_tests::bastion::binary();
    let topo = Topology::with(1, 1);
    let host = &topo.private_hosts[0];
    let probe = format!("{}:{PROBE_PORT}", host.v4);
    let mut server = Some(probe_server(&host.ns, &topo.dir, "first"));
    let setup = BastionSetup {
        extra_toml: format!("\n[selftest]\ninterval_seconds = 2\nprobes = [\"{probe}\"]\n"),
        ..BastionSetup::default()
    };
    let bastion = Bastion::start(&topo, &binary, setup);
    bastion.wait_healthy(START).unwrap_or_else(|e| panic!("{e}"));

    let (pass, _) = next_line(&bastion.process, 0, "selftest: PASS");
    assert!(
        pass.contains("handshake") && pass.contains("ping") && pass.contains(&format!("probe {probe} ")),
        "the PASS line names every step and the probe: {pass}"
    );

    // The probe server goes away: the next run fails on that probe, and health says so.
    let offset = bastion.process.log_len();
    drop(server.take());
    let (fail, offset) = next_line(&bastion.process, offset, &format!("selftest: FAIL probe {probe}"));
    assert!(fail.contains("refused"), "a stopped server refuses the connection: {fail}");
    let unhealthy = bastion
        .wait_health("health 503 naming the probe", CYCLE, |r| {
            r.status == 503 && r.body.contains(&format!("selftest: FAIL probe {probe}"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!unhealthy.body.contains("up"), "{unhealthy:?}");

    // Back again: PASS, health 200, and the server's own log shows the self-test's connection
    // arriving from the bastion's private address (through the forward chain and masquerade).
    let server = probe_server(&host.ns, &topo.dir, "again");
    let (pass, _) = next_line(&bastion.process, offset, "selftest: PASS");
    assert!(pass.contains(&format!("probe {probe} ")), "{pass}");
    bastion.wait_healthy(CYCLE).unwrap_or_else(|e| panic!("{e}"));
    server
        .wait_for_log(&format!("connection from ::ffff:{BASTION_PRIVATE_V4}"), CYCLE)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn selftest_fails_when_the_table_is_removed_then_repairs_it_and_passes() {
    let binary = bastion_tests::bastion::binary();
    let topo = Topology::with(1, 1);
    let host = &topo.private_hosts[0];
    let probe = format!("{}:{PROBE_PORT}", host.v4);
    let _server = probe_server(&host.ns, &topo.dir, "only");
    let setup = BastionSetup {
        extra_toml: format!("\n[selftest]\ninterval_seconds = 2\nprobes = [\"{probe}\"]\n"),
        ..BastionSetup::default()
    };
    let bastion = Bastion::start(&topo, &binary, setup);
    bastion.wait_healthy(START).unwrap_or_else(|e| panic!("{e}"));

    let offset = bastion.process.log_len();
    topo.bastion.run(&["nft", "delete", "table", "inet", "bastion-wg0"]);
    // FAIL → repair → PASS, in that order on the console.
    let (_, offset) =
        next_line(&bastion.process, offset, "selftest: FAIL nat: table inet bastion-wg0 was removed from outside");
    let (_, offset) = next_line(&bastion.process, offset, "nat: table inet bastion-wg0 reinstalled");
    let (pass, _) = next_line(&bastion.process, offset, "selftest: PASS");
    assert!(pass.contains(&format!("probe {probe} ")), "the probe passes through the repaired NAT: {pass}");
    bastion.wait_healthy(CYCLE).unwrap_or_else(|e| panic!("{e}"));
    let tables = topo.bastion.run(&["nft", "list", "tables"]);
    assert_eq!(tables.matches("table inet bastion-wg0").count(), 1, "{tables}");
}
