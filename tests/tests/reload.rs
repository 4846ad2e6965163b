//! Live reload of `bastion run --config FILE` (SIGHUP and `bastion reload`), with wireguard-go
//! clients in namespaces: a peer added, a peer removed and `[nat] reach` widened in one reload,
//! while an unchanged peer pings through the tunnel every 10 ms — no packet lost, no extra
//! handshake; a change that needs a restart and an invalid config are refused and the old
//! config keeps serving. Prints the figures the closing note quotes (`FIGURE ...`).
//!
//! Needs root and `BASTION_BIN` (`make integration-test` sets it).

use std::time::{Duration, Instant};

use bastion_tests::bastion::{Bastion, BastionSetup};
use bastion_tests::topology::LISTEN_PORT;
use bastion_tests::{Topology, WgInterface};

const START: Duration = Duration::from_secs(20);
const STEP: Duration = Duration::from_secs(10);

struct Setup {
    tunnels: Vec<WgInterface>,
    bastion: Bastion,
    topo: Topology,
}

impl Setup {
    fn report(&self) -> String {
        let mut parts = vec![self.bastion.log_report()];
        parts.extend(self.tunnels.iter().map(|t| format!("{}\n{}", t.show(), t.log_report())));
        parts.join("\n")
    }

    /// Writes `setup`'s config in place of the running one (a rename: never half a file).
    fn rewrite(&self, setup: &BastionSetup) {
        self.write_text(&setup.to_toml(&self.topo));
    }

    fn write_text(&self, text: &str) {
        let tmp = self.bastion.config.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.bastion.config).unwrap();
    }

    fn can_ping(&self, client: usize, address: &str, within: Duration) -> bool {
        self.topo.clients[client].ns.ping(address, within).is_ok()
    }

    /// `status --json`'s entry for peer `name`.
    fn peer(&self, name: &str) -> Option<serde_json::Value> {
        let status = self.bastion.status_json().unwrap_or_else(|e| panic!("{e}\n{}", self.report()));
        status["peers"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned()
    }
}

fn start(clients: usize, hosts: usize, setup: BastionSetup) -> Setup {
    let binary = bastion_tests::bastion::binary();
    let topo = Topology::with(clients, hosts);
    let bastion = Bastion::start(&topo, &binary, setup);
    bastion.wait_healthy(START).unwrap_or_else(|e| panic!("not healthy: {e}"));
    let tunnels = (0..clients).map(|i| topo.start_client_tunnel(i, topo.endpoint_v4())).collect();
    Setup { tunnels, bastion, topo }
}

/// `ping -i 0.01 -c COUNT` from `client`'s namespace: (sent, received).
fn ping_flow(topo: &Topology, client: usize, address: &str, count: usize) -> (u64, u64) {
    let out =
        topo.clients[client].ns.exec(&["ping", "-n", "-q", "-i", "0.01", "-W", "1", "-c", &count.to_string(), address]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no summary from ping: {out}"));
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    (numbers[0], numbers[1])
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_reload_adds_removes_and_widens_without_touching_the_unchanged_peer() {
    // alice (0) stays, bob (1) goes, carol (2) comes; host 1 becomes reachable.
    let before = BastionSetup { peers: Some(vec![0, 1]), ..BastionSetup::default() };
    let s = start(3, 2, before.clone());
    let host0 = s.topo.private_hosts[0].v4.to_string();
    let host1 = s.topo.private_hosts[1].v4.to_string();
    assert!(s.can_ping(0, &host0, STEP), "alice reaches host 0 before\n{}", s.report());
    assert!(s.can_ping(1, &host0, STEP), "bob reaches host 0 before\n{}", s.report());
    assert!(!s.can_ping(2, &host0, Duration::from_secs(2)), "carol is not a peer yet");
    assert!(!s.can_ping(0, &host1, Duration::from_secs(2)), "host 1 is outside reach before");
    let alice_before = s.peer("alice").expect("alice in status");
    let version_before = s.bastion.status_json().unwrap()["config"]["version"].clone();

    let after = BastionSetup {
        peers: Some(vec![0, 2]),
        nat_reach: vec!["10.0.1.10/32".into(), format!("{host1}/32"), "fd00:1::a/128".into()],
        ..before.clone()
    };
    s.rewrite(&after);
    // alice pings every 10 ms for 3 s; the reload happens 1 s in.
    let (sent, received, reload_output, reload_took) = std::thread::scope(|scope| {
        let flow = scope.spawn(|| ping_flow(&s.topo, 0, &host0, 300));
        std::thread::sleep(Duration::from_secs(1));
        let asked = Instant::now();
        let (ok, output) = s.bastion.reload();
        let took = asked.elapsed();
        assert!(ok, "bastion reload failed: {output}\n{}", s.report());
        let (sent, received) = flow.join().unwrap();
        (sent, received, output, took)
    });
    println!("FIGURE reload_latency_ms={:.1} (bastion reload round trip, 3 peers)", reload_took.as_secs_f64() * 1000.0);
    println!("FIGURE reload_packets_lost={} of {sent} (ping every 10 ms across the reload)", sent - received);
    assert!(reload_output.contains("Applied"), "{reload_output}");
    assert!(reload_output.contains("+1 -1 ~0 peers"), "{reload_output}");
    assert!(reload_output.contains("nat rules replaced"), "{reload_output}");
    assert_eq!(sent, received, "alice lost packets across the reload\n{}", s.report());

    let alice_after = s.peer("alice").expect("alice still in status");
    assert_eq!(alice_after["handshakes"], alice_before["handshakes"], "no extra handshake for alice");
    assert_eq!(alice_after["session_index"], alice_before["session_index"]);
    assert!(s.peer("bob").is_none(), "bob is gone from status");
    assert!(!s.can_ping(1, &host0, Duration::from_secs(2)), "bob's session ended at once\n{}", s.report());
    assert!(s.can_ping(2, &host0, STEP), "carol connects after the reload\n{}", s.report());
    assert!(s.can_ping(0, &host1, STEP), "alice reaches host 1 now\n{}", s.report());
    let status = s.bastion.status_json().unwrap();
    assert_ne!(status["config"]["version"], version_before);
    assert_eq!(status["config"]["reloads"], 1);
    s.bastion.process.wait_for_log("reload (bastion reload): version", STEP).unwrap();

    // SIGHUP does the same: put bob back.
    let offset = s.bastion.process.log_len();
    s.rewrite(&BastionSetup { peers: Some(vec![0, 1, 2]), ..after });
    s.bastion.process.signal(libc::SIGHUP);
    s.bastion.process.wait_for_log_after(offset, "reload (SIGHUP): version", STEP).unwrap();
    assert!(s.can_ping(1, &host0, STEP), "bob is back after SIGHUP\n{}", s.report());
    assert!(s.bastion.process.is_running(), "SIGHUP never ends the service");
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn restart_changes_and_invalid_configs_are_refused_and_the_old_config_keeps_serving() {
    let setup = BastionSetup::default();
    let s = start(1, 1, setup.clone());
    let host0 = s.topo.private_hosts[0].v4.to_string();
    assert!(s.can_ping(0, &host0, STEP), "{}", s.report());
    let running = s.bastion.status_json().unwrap()["config"]["version"].clone();

    // A new listen port needs a restart.
    let port = format!("listen_port = {LISTEN_PORT}");
    let text = setup.to_toml(&s.topo).replace(&port, &format!("listen_port = {}", LISTEN_PORT + 1));
    assert_ne!(text, setup.to_toml(&s.topo));
    s.write_text(&text);
    let (ok, output) = s.bastion.reload();
    assert!(!ok, "a restart change must not report success: {output}");
    assert!(output.contains("NeedsRestart") && output.contains("interface.listen_port"), "{output}");
    let status = s.bastion.status_json().unwrap();
    assert_eq!(status["config"]["restart_pending"][0], "interface.listen_port");
    assert_eq!(status["config"]["version"], running, "the old config keeps running");
    assert_eq!(status["health"]["status"], 200);
    assert!(s.bastion.status().unwrap().contains("restart pending: a newer config changes interface.listen_port"));
    assert!(s.can_ping(0, &host0, STEP), "still serving on the old port\n{}", s.report());

    // An invalid config: every problem logged as check-config prints it; health unchanged.
    let config = s.bastion.config.display().to_string();
    s.write_text(&setup.to_toml(&s.topo).replace("masquerade = true", "masquerade = \"yes\""));
    let offset = s.bastion.process.log_len();
    let (ok, output) = s.bastion.reload();
    assert!(!ok && output.contains("Rejected"), "{output}");
    let problem = format!("{config}:");
    assert!(output.contains(&problem) && output.contains("nat.masquerade"), "{output}");
    s.bastion.process.wait_for_log_after(offset, "nat.masquerade", STEP).unwrap();
    let status = s.bastion.status_json().unwrap();
    assert_eq!(status["health"]["status"], 200);
    assert_eq!(status["config"]["reload_failures"], 1);
    assert_eq!(status["config"]["version"], running);
    assert!(s.can_ping(0, &host0, STEP), "{}", s.report());
    let log = s.bastion.process.log();
    assert!(!log.contains(&s.topo.bastion_keys.private), "the private key reached the log");

    // Back to the running text: the pending restart is gone.
    s.rewrite(&setup);
    let (ok, output) = s.bastion.reload();
    assert!(ok && output.contains("Unchanged"), "{output}");
    let status = s.bastion.status_json().unwrap();
    assert_eq!(status["config"]["restart_pending"].as_array().map(|a| a.len()), Some(0));
}
