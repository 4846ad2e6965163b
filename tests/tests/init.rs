//! `bastion init` booting as PID 1 of its own PID and mount namespace (`unshare --pid --fork
//! --mount-proc`), inside a network namespace ("the instance") joined by a veth to a second one
//! ("the VPC") where a real DHCP server (dnsmasq) and the IMDSv2 emulator (`tests/imds/`) run.
//!
//! What is checked is what a real server or the kernel saw: the address dnsmasq leased is the one
//! `ip -j addr` shows, the emulator's request log proves the token was sent (and the emulator
//! refuses a request without one), health answers come over TCP, the service is really killed
//! and really restarted, a WireGuard client (wireguard-go + wg) really gets through, and init
//! really exits 0 after the drain.
//!
//! Run as root: `BASTION_BIN=target/debug/bastion cargo test -p bastion-tests --test init`
//! (the Makefile sets BASTION_BIN; without it these tests say so and skip).
//! All traffic stays inside the namespaces made here (10.77.0.0/24 and 10.100.0.0/24 exist only
//! there); the IMDS address is always given with `--imds`, so nothing goes to 169.254.169.254.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bastion_tests::process::children_of;
use bastion_tests::wireguard::{WgConf, WgPeer};
use bastion_tests::{
    http, link, unique_name, wait_until, DhcpPool, DhcpServer, HttpResponse, ImdsEmulator, ImdsMode, Keypair, Netns,
    Process, RunDir, WgInterface,
};

const VPC_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const IMDS_PORT: u16 = 8775;
const HEALTH_PORT: u16 = 8080;
const LEASE_MTU: u32 = 9001;
/// The instance's one Ethernet interface, which init must find and bring up itself.
const INSTANCE_LINK: &str = "eth0";
const VPC_LINK: &str = "to-instance";

const LONG: Duration = Duration::from_secs(30);

fn require_root_and_tools() {
    bastion_tests::require_root_and_tools();
    bastion_tests::require_tools(&["unshare", "dnsmasq"]);
}

/// The instance's namespace, the VPC's namespace with dnsmasq and the IMDS emulator, a veth
/// between them. Field order is drop order: processes, then namespaces, then the folder.
struct Vpc {
    imds: ImdsEmulator,
    dhcp: DhcpServer,
    instance: Netns,
    vpc: Netns,
    dir: RunDir,
}

impl Vpc {
    /// `user_data`: what the emulator serves; `mode`: its initial misbehaviour.
    fn start(user_data: Option<&str>, mode: ImdsMode) -> Vpc {
        let prefix = unique_name("");
        let dir = RunDir::new(&prefix);
        let instance = Netns::new(&format!("{prefix}-instance"));
        let vpc = Netns::new(&format!("{prefix}-vpc"));
        // The instance's end stays down, as on a machine that has just booted.
        link::veth_down(&instance, INSTANCE_LINK, &vpc, VPC_LINK);
        link::add_address(&vpc, VPC_LINK, &format!("{VPC_ADDRESS}/24"));
        vpc.run(&["ip", "link", "set", VPC_LINK, "up"]);

        let pool = DhcpPool {
            first: Ipv4Addr::new(10, 77, 0, 50),
            last: Ipv4Addr::new(10, 77, 0, 60),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            lease_seconds: 120,
            router: VPC_ADDRESS,
            mtu: Some(LEASE_MTU),
            // Renewals every few seconds, so a test sees them (the lease itself is 2 min).
            renew_rebind_seconds: Some((4, 7)),
        };
        let dhcp = DhcpServer::start(&vpc, VPC_LINK, &pool, &dir);
        let imds_address = SocketAddr::from((VPC_ADDRESS, IMDS_PORT));
        let imds = ImdsEmulator::start(&vpc, imds_address, user_data, mode, &dir);
        Vpc { imds, dhcp, instance, vpc, dir }
    }

    /// `bastion init` as PID 1 of a new PID + mount namespace inside the instance namespace.
    fn start_init(&self, bin: &Path) -> Process {
        let imds = self.imds.url();
        let run_dir = self.dir.path().join("run");
        self.instance.spawn(
            "bastion init",
            &[
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
                // If the test dies, unshare's child (our init) dies with it.
                "--kill-child",
                bin.to_str().unwrap(),
                "init",
                "--imds",
                &imds,
                "--run-dir",
                run_dir.to_str().unwrap(),
                "--baked-config",
                "/nonexistent/bastion.toml",
                "--modules-list",
                "/nonexistent/modules",
            ],
            &[],
            &self.dir.path().join("init.log"),
        )
    }

    /// The user-data requests the emulator logged: (token sent, token valid, status).
    fn user_data_requests(&self) -> Vec<(bool, bool, u16)> {
        let requests = self.imds.user_data_requests();
        requests.iter().map(|r| (r.token_sent, r.token_valid, r.status)).collect()
    }

    /// One `GET /` of the health responder from inside the instance.
    fn health(&self) -> Result<HttpResponse, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, HEALTH_PORT));
        http::get(&self.instance, addr, "/", Duration::from_secs(3))
    }

    /// Polls health until an answer has `status` and a body holding `body_holds`; returns that
    /// body. On timeout the panic shows the last answer and every log.
    #[track_caller]
    fn wait_health(&self, init: &Process, what: &str, timeout: Duration, status: u16, body_holds: &str) -> String {
        let result = wait_until(what, timeout, || match self.health() {
            Ok(r) if r.status == status && r.body.contains(body_holds) => Ok(r.body),
            other => Err(format!("{other:?}")),
        });
        self.must(init, result)
    }

    /// The value, or a panic (at the caller's line) with the error and every log that can
    /// explain it.
    #[track_caller]
    fn must<T>(&self, init: &Process, result: Result<T, String>) -> T {
        match result {
            Ok(value) => value,
            Err(e) => panic!("{e}\n{}\n{}\n{}", init.log_report(), self.dhcp.log_report(), self.imds.log_report()),
        }
    }
}

/// The host pid of our init: the child of the `unshare` process.
fn init_host_pid(unshare: &Process) -> i32 {
    let pid = wait_until("the init process under unshare", Duration::from_secs(10), || {
        children_of(unshare.pid()).first().copied().ok_or_else(|| unshare.log_report())
    });
    pid.unwrap_or_else(|e| panic!("{e}"))
}

/// Counters from the `Icmp:` lines of /proc/net/snmp in `ns`.
fn icmp_counter(ns: &Netns, name: &str) -> u64 {
    let snmp = ns.run(&["cat", "/proc/net/snmp"]);
    let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Icmp:")).collect();
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let values: Vec<&str> = lines[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("no {name} in {snmp}"));
    values[i].parse().unwrap()
}

/// The bastion's and the client's key pairs, and the service's config that admits the client.
fn keys_and_config() -> (Keypair, Keypair, String) {
    let bastion = Keypair::generate();
    let client = Keypair::generate();
    let config = service_config(&bastion.private, &client.public);
    (bastion, client, config)
}

fn service_config(bastion_private: &str, client_public: &str) -> String {
    format!(
        r#"[interface]
private_key = "{bastion_private}"
address = ["10.100.0.1/24"]
listen_port = 51820

[[peer]]
name = "client"
public_key = "{client_public}"
allowed_ips = ["10.100.0.2/32"]

[nat]
reach = ["10.77.0.0/24"]

[health]
listen = "0.0.0.0:{HEALTH_PORT}"
drain_seconds = 4
"#
    )
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn boots_leases_fetches_config_supervises_and_drains() {
    let bin = bastion_tests::bastion::binary();
    require_root_and_tools();
    let (bastion_keys, client_keys, config) = keys_and_config();
    let vpc = Vpc::start(Some(&config), ImdsMode::Normal);
    let init = vpc.start_init(&bin);

    // --- The lease: what dnsmasq handed out is what the kernel of the instance holds.
    let lease_line = vpc.must(&init, init.wait_for_log("lease: ", LONG));
    let leased = vpc.must(
        &init,
        wait_until("dnsmasq's lease file", Duration::from_secs(5), || {
            vpc.dhcp.leased_address().ok_or_else(|| "no lease recorded".to_string())
        }),
    );
    assert!(
        lease_line.contains(&format!("{leased}/24 router {VPC_ADDRESS} mtu {LEASE_MTU} lease 120 s")),
        "{lease_line}"
    );
    let addr_json = vpc.instance.run(&["ip", "-j", "-4", "addr", "show", "dev", INSTANCE_LINK]);
    assert!(addr_json.contains(&format!("\"local\":\"{leased}\",\"prefixlen\":24")), "{addr_json}");
    let route_json = vpc.instance.run(&["ip", "-j", "-4", "route", "show", "default"]);
    assert!(route_json.contains(&format!("\"gateway\":\"{VPC_ADDRESS}\",\"dev\":\"{INSTANCE_LINK}\"")), "{route_json}");
    let link_json = vpc.instance.run(&["ip", "-j", "link", "show", "dev", INSTANCE_LINK]);
    assert!(link_json.contains(&format!("\"mtu\":{LEASE_MTU},")), "{link_json}");

    // --- The config came over IMDSv2 with a token, and the emulator really checks tokens.
    vpc.must(&init, init.wait_for_log("config: accepted user-data", LONG));
    let log = vpc.imds.request_log();
    assert!(
        vpc.imds
            .requests()
            .iter()
            .any(|r| r.method == "PUT" && r.path == "/latest/api/token" && r.ttl == Some(21600) && r.status == 200),
        "no token request with a 21600 s TTL:\n{log}"
    );
    assert_eq!(vpc.user_data_requests().first(), Some(&(true, true, 200)), "{log}");
    let refused = http::get(&vpc.vpc, vpc.imds.address(), "/latest/user-data", Duration::from_secs(3));
    assert_eq!(refused.map(|r| r.status), Ok(401), "the emulator must refuse user-data without a token");
    let refused = vpc.user_data_requests();
    assert_eq!(refused.last(), Some(&(false, false, 401)), "{}", vpc.imds.request_log());
    // The accepted config is on disk for the service, readable by root only.
    let written = vpc.dir.path().join("run/bastion.toml");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), config);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&written).unwrap().permissions().mode() & 0o777, 0o600);

    // --- The service is up: health 200 on the instance, seen from inside and from the VPC.
    vpc.must(&init, init.wait_for_log("service: started pid", LONG));
    vpc.wait_health(&init, "health 200 from the service", LONG, 200, "");
    let from_vpc = SocketAddr::from((leased, HEALTH_PORT));
    let answer = http::get(&vpc.vpc, from_vpc, "/", Duration::from_secs(3));
    assert_eq!(answer.map(|r| r.status), Ok(200));

    // --- A WireGuard client in the VPC gets through to the bastion's tunnel address.
    let client = WgInterface::start(&vpc.vpc, &unique_name("wg"), &vpc.dir);
    client.set_conf(&WgConf {
        private_key: client_keys.private.clone(),
        listen_port: None,
        peers: vec![WgPeer {
            public_key: bastion_keys.public.clone(),
            endpoint: Some(SocketAddr::from((leased, 51820))),
            allowed_ips: vec!["10.100.0.0/24".into()],
            ..WgPeer::default()
        }],
    });
    client.add_address("10.100.0.2/24");
    client.up();
    let through = vpc.vpc.ping("10.100.0.1", LONG);
    vpc.must(&init, through.map_err(|e| format!("{e}\n{}\n{}", client.show(), client.log_report())));

    // --- DHCP renewals (T1 = 4 s) are answered, and the instance's kernel never answered one
    // of them with "port unreachable" (init holds UDP port 68 once the kernel has the address).
    // Counted where the DHCP server is: only ICMP that crossed the veth (the self-test's
    // loopback traffic stays in the instance).
    vpc.must(&init, init.wait_for_log("lease renewed", LONG));
    assert_eq!(icmp_counter(&vpc.vpc, "InDestUnreachs"), 0, "the DHCP server got port-unreachable");
    let acks = vpc.dhcp.acks();
    assert!(acks >= 2, "dnsmasq acked {acks} times\n{}", vpc.dhcp.log_report());

    // --- kill -9 of the service: init logs why, restarts it, health comes back.
    let init_pid = init_host_pid(&init);
    let service_pid = vpc.must(
        &init,
        wait_until("the service process", Duration::from_secs(5), || {
            children_of(init_pid).first().copied().ok_or_else(|| "no child".to_string())
        }),
    );
    let before = init.log_len();
    // SAFETY: killing the service process we found under our init.
    unsafe { libc::kill(service_pid, libc::SIGKILL) };
    let line = vpc.must(&init, init.wait_for_log_after(before, "killed by signal 9 (SIGKILL)", LONG));
    assert!(line.contains("restarting in 1 s"), "{line}");
    vpc.must(&init, init.wait_for_log_after(before, "service: started pid", LONG));
    vpc.wait_health(&init, "health 200 after the restart", LONG, 200, "");
    let new_service = children_of(init_pid);
    assert!(!new_service.is_empty() && !new_service.contains(&service_pid), "{new_service:?}");

    // --- SIGTERM to init: drain (503 while the service keeps going), then everything stops
    // and init exits 0 (as `bastion init`; the machine's PID 1 would power off here).
    let before = init.log_len();
    // SAFETY: signalling our init.
    unsafe { libc::kill(init_pid, libc::SIGTERM) };
    vpc.must(&init, init.wait_for_log_after(before, "shutdown: SIGTERM: draining", Duration::from_secs(5)));
    let draining = vpc.wait_health(&init, "health 503 during the drain", Duration::from_secs(4), 503, "");
    assert!(!draining.is_empty());
    let status = vpc.must(&init, init.wait_exit(LONG));
    assert_eq!(status.code(), Some(0), "init ended with {}: {}", Process::describe(status), init.log());
    let log = init.log();
    assert!(log.contains("shutdown: service (pid"), "{log}");
    assert!(log.contains("shutdown: done"), "{log}");
    assert!(!log.contains("PANIC"), "{log}");
    assert!(vpc.instance.pids().is_empty(), "processes left in the instance: {:?}", vpc.instance.pids());
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn bad_imds_answers_are_reported_in_health_and_retried() {
    let bin = bastion_tests::bastion::binary();
    require_root_and_tools();
    let (_, _, config) = keys_and_config();
    // (mode, what the console must say, what health must say: a rejected config is explained on
    // the console only, since the whole VPC reads health)
    let not_found = "404, the instance has no user-data, and the image has no /nonexistent/bastion.toml";
    let huge = "response body larger than 65536 bytes";
    let cases: &[(ImdsMode, &str, &str)] = &[
        (ImdsMode::NotFound, not_found, not_found),
        (ImdsMode::InvalidToml, "user-data:1: file: TOML syntax", "config: user-data rejected ("),
        (ImdsMode::NeverEnding, "response not complete after 5.0 s", "response not complete after 5.0 s"),
        (ImdsMode::Huge, huge, huge),
        (ImdsMode::HugeUnlabelled, huge, huge),
    ];
    // All at once, each in its own pair of namespaces: the retries overlap instead of adding up.
    // Each init is listed before its namespaces, so it stops first.
    let runs: Vec<(Process, Vpc)> = cases
        .iter()
        .map(|(mode, _, _)| {
            let vpc = Vpc::start(Some(&config), *mode);
            (vpc.start_init(&bin), vpc)
        })
        .collect();
    for ((mode, expected, in_health), (init, vpc)) in cases.iter().zip(&runs) {
        let mode = mode.as_str();
        let line = vpc.must(init, init.wait_for_log("config: ERROR ", LONG));
        assert!(line.contains(expected), "{mode}: console says {line:?}, expected {expected:?}");
        let body = vpc.wait_health(init, &format!("{mode}: health 503 with the reason"), LONG, 503, in_health);
        if expected != in_health {
            assert!(body.trim_end().ends_with("see the serial console"), "{mode}: {body}");
        }
        assert!(
            *expected == *in_health || !body.contains(expected),
            "{mode}: health shows what only the console may: {body}"
        );
        assert!(body.starts_with("config: "), "{mode}: {body}");
        // It keeps trying: a second request for user-data, with a valid token each time.
        let retried = wait_until(&format!("{mode}: a second user-data request"), LONG, || {
            let requests = vpc.user_data_requests();
            if requests.len() >= 2 {
                Ok(())
            } else {
                Err(format!("{requests:?}"))
            }
        });
        vpc.must(init, retried);
        let requests = vpc.imds.user_data_requests();
        assert!(requests.iter().all(|r| r.token_sent && r.token_valid), "{}", vpc.imds.request_log());
        assert!(init.try_exit().is_none(), "{mode}: init exited: {}", init.log());
        assert!(!init.log().contains("PANIC"), "{mode}: {}", init.log());
        assert!(init.log().contains("trying again in"), "{mode}: {}", init.log());
    }

    // Once IMDS answers properly, the next attempt is accepted and the service starts.
    let (init, vpc) = &runs[0];
    vpc.imds.set_mode(ImdsMode::Normal);
    vpc.must(init, init.wait_for_log("config: accepted user-data", Duration::from_secs(60)));
    vpc.must(init, init.wait_for_log("service: started pid", LONG));
    vpc.wait_health(init, "health 200 once the config arrived", LONG, 200, "");

    // SIGTERM with no service running stops at once and cleanly.
    for (init, vpc) in &runs[1..] {
        let pid = init_host_pid(init);
        // SAFETY: signalling our init.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = vpc.must(init, init.wait_exit(Duration::from_secs(15)));
        assert_eq!(status.code(), Some(0), "{}", init.log());
        assert!(init.log().contains("no service running, nothing to drain"), "{}", init.log());
    }
}
