//! The audit trail and CloudWatch Logs: `bastion run` with `[log] cloudwatch_group`, against
//! moto (CloudWatch Logs) behind the fault proxy (throttling and 503s, then no answer at all) and
//! the IMDS emulator (instance id, role, region). wireguard-go clients make real sessions; their
//! own counters (`wg show transfer`, `latest-handshakes`) are what the audit events are checked
//! against; moto's stream is read back with boto3, not our client; `bastion audit` reads the
//! console capture and the group back.
//!
//! Needs root, `BASTION_BIN` and the virtualenv with moto (`make integration-test`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bastion_tests::aws::{AwsEmulator, FaultProxy};
use bastion_tests::bastion::{Bastion, BastionSetup};
use bastion_tests::ping::Pinger;
use bastion_tests::{wait_until, ImdsEmulator, ImdsMode, Topology, WgInterface};

const MOTO_PORT: u16 = 5000;
const PROXY_PORT: u16 = 5001;
const IMDS: ([u8; 4], u16) = ([127, 0, 0, 1], 8775);
const REGION: &str = "eu-west-1";
const GROUP: &str = "bastion-audit";
const INSTANCE: &str = "i-0123456789abcdef0";
const PRIVATE_HOST: &str = "10.0.1.10";
const STEP: Duration = Duration::from_secs(20);

struct Bed {
    topo: Topology,
    moto: AwsEmulator,
    proxy: FaultProxy,
    _imds: ImdsEmulator,
    bastion: Bastion,
    hang_file: PathBuf,
}

impl Bed {
    /// moto with the log group (made with boto3, as the stack would), the fault proxy in front
    /// of it (a fault every `every` requests), IMDS, and the bastion shipping to the group.
    fn start(clients: usize, every: u32) -> Bed {
        let topo = Topology::with(clients, 1);
        let imds = ImdsEmulator::start_with(
            &topo.bastion,
            SocketAddr::from(IMDS),
            None,
            ImdsMode::Normal,
            &topo.dir,
            &["--role", "bastion-role", "--region", REGION, "--instance-id", INSTANCE],
        );
        let moto = AwsEmulator::start(&topo.bastion, &topo.dir, MOTO_PORT, &[]);
        moto.verify(REGION, &["create-log-group", GROUP]);
        let hang_file = topo.dir.path().join("cloudwatch-hangs");
        let proxy = FaultProxy::start_with(&topo.bastion, &topo.dir, PROXY_PORT, &moto, every, Some(&hang_file));
        let setup = BastionSetup {
            drain_seconds: 1,
            extra_toml: format!(
                "\n[log]\ncloudwatch_group = \"{GROUP}\"\n\n[aws]\nendpoint_url = \"{}\"\n",
                proxy.url()
            ),
            env: vec![
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), format!("http://127.0.0.1:{}", IMDS.1)),
                ("AWS_CONFIG_FILE".into(), "/nonexistent".into()),
                ("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into()),
            ],
            ..BastionSetup::default()
        };
        let bastion = Bastion::start(&topo, &bastion_tests::bastion::binary(), setup);
        bastion.wait_healthy(STEP).unwrap_or_else(|e| panic!("not healthy: {e}\n{}", bastion.log_report()));
        Bed { topo, moto, proxy, _imds: imds, bastion, hang_file }
    }

    fn report(&self) -> String {
        format!("{}\n{}", self.bastion.log_report(), self.proxy_report())
    }

    fn proxy_report(&self) -> String {
        format!("faults injected: {:?}", self.proxy.faults())
    }

    /// The stream's messages as moto holds them, oldest first.
    fn cloudwatch_messages(&self) -> Vec<String> {
        let answer = self.moto.verify(REGION, &["log-events", GROUP, INSTANCE]);
        answer["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
    }

    /// SIGTERM, and the exit after the drain.
    fn stop_bastion(&self) {
        self.bastion.process.signal(libc::SIGTERM);
        self.bastion.process.wait_exit(STEP).unwrap_or_else(|e| panic!("{e}\n{}", self.report()));
    }

    /// `bastion audit ARGS` in the bastion's namespace (moto is on its loopback).
    fn audit(&self, args: &[&str]) -> String {
        let bin = bastion_tests::bastion::binary();
        let mut argv: Vec<String> = [
            "env",
            &format!("AWS_REGION={REGION}"),
            &format!("AWS_ENDPOINT_URL_LOGS=http://127.0.0.1:{MOTO_PORT}"),
            "AWS_ACCESS_KEY_ID=testing",
            "AWS_SECRET_ACCESS_KEY=testing",
            "AWS_CONFIG_FILE=/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE=/nonexistent",
            bin.to_str().unwrap(),
            "audit",
        ]
        .map(str::to_string)
        .to_vec();
        argv.extend(args.iter().map(|a| a.to_string()));
        self.topo.bastion.run(&argv)
    }
}

/// The audit records of a log (console capture or CloudWatch messages), as JSON.
fn records(lines: impl IntoIterator<Item = String>) -> Vec<serde_json::Value> {
    lines
        .into_iter()
        .filter_map(|line| {
            if let Some(at) = line.find("bastion: audit {") {
                return serde_json::from_str(&line[at + "bastion: audit ".len()..]).ok();
            }
            let v: serde_json::Value = serde_json::from_str(&line).ok()?;
            v.get("audit").cloned()
        })
        .collect()
}

fn within(what: &str, got: u64, expected: u64, relative: f64, absolute: u64) {
    let slack = ((expected as f64) * relative) as u64 + absolute;
    assert!(got.abs_diff(expected) <= slack, "{what}: {got}, expected {expected} ± {slack}");
}

#[test]
#[ignore = "needs root, network namespaces, moto and the binaries under test: `make integration-test` runs it"]
fn sessions_reach_the_console_and_cloudwatch_and_audit_reads_them_back() {
    let bed = Bed::start(2, 3);
    let tunnels: Vec<WgInterface> = (0..2).map(|i| bed.topo.start_client_tunnel(i, bed.topo.endpoint_v4())).collect();
    for (i, _) in tunnels.iter().enumerate() {
        let ns = &bed.topo.clients[i].ns;
        ns.ping(PRIVATE_HOST, STEP).unwrap_or_else(|e| panic!("client {i}: {e}\n{}", bed.report()));
        // A known amount on top: 20 pings of 1,000 bytes.
        ns.run(&["ping", "-n", "-q", "-c", "20", "-i", "0.05", "-s", "1000", PRIVATE_HOST]);
    }
    // Sessions are seen within a second; a few more for the proxy's faults and a batch (5 s).
    let server = &bed.topo.bastion_keys.public;
    let handshakes: Vec<u64> = tunnels.iter().map(|t| t.latest_handshake(server).expect("handshake")).collect();
    std::thread::sleep(Duration::from_secs(2));
    // What went through each client's tunnel as IP packets (the kernel's counters of its TUN):
    // what the bastion decrypted and encrypted for it, as the audit counts.
    let transfers: Vec<(u64, u64)> =
        tunnels.iter().enumerate().map(|(i, t)| tun_bytes(&bed.topo.clients[i].ns, t.name())).collect();
    let wire: Vec<(u64, u64)> = tunnels.iter().map(|t| t.transfer(server).expect("transfer")).collect();
    let stopped_at = bastion_tests::wireguard::unix_now();
    bed.stop_bastion();

    // The console: one start and one (drained) end per client, no key.
    let log = bed.bastion.process.log();
    let console = records(log.lines().map(str::to_string));
    let of = |kind: &str, peer: &str| -> Vec<&serde_json::Value> {
        console.iter().filter(|r| r["event"] == kind && r["peer"] == peer).collect()
    };
    for (i, tunnel) in tunnels.iter().enumerate() {
        let peer = bed.topo.clients[i].name;
        let (started, ended) = (of("session_started", peer), of("session_ended", peer));
        assert_eq!((started.len(), ended.len()), (1, 1), "client {i}: {console:#?}\n{}", bed.report());
        let (start, end) = (started[0], ended[0]);
        assert_eq!(start["bastion"], INSTANCE);
        assert_eq!(start["endpoint"], format!("{}:{}", bed.topo.clients[i].public_v4, listen_port(tunnel)));
        assert_eq!(end["reason"], "drained");
        // The handshake as the client saw it (whole seconds), the end at the stop.
        within("started", end["started_ms"].as_u64().unwrap() / 1000, handshakes[i], 0.0, 1);
        within("ended", end["ended_ms"].as_u64().unwrap() / 1000, stopped_at, 0.0, 2);
        let duration = end["duration_seconds"].as_f64().unwrap();
        let expected = (end["ended_ms"].as_i64().unwrap() - end["started_ms"].as_i64().unwrap()) as f64 / 1000.0;
        assert!((duration - expected).abs() <= 0.1, "{duration} vs {expected}");
        // The bastion received what the client sent and the other way round (±1 %).
        let (client_rx, client_tx) = transfers[i];
        eprintln!(
            "FIGURE client {i}: audit rx {} tx {} bytes; the client's TUN sent {client_tx} received {client_rx} \
             (wireguard-go's wire bytes: sent {} received {}); duration {duration} s",
            end["rx_bytes"], end["tx_bytes"], wire[i].1, wire[i].0
        );
        within(&format!("client {i} bytes to the bastion"), end["rx_bytes"].as_u64().unwrap(), client_tx, 0.01, 0);
        within(&format!("client {i} bytes from the bastion"), end["tx_bytes"].as_u64().unwrap(), client_rx, 0.01, 0);
    }
    for key in [&bed.topo.bastion_keys.private, &bed.topo.bastion_keys.public, &bed.topo.clients[0].keys.public] {
        assert!(!log.contains(key.as_str()), "a key in the log");
    }

    // CloudWatch: the same records in the same order, despite the injected faults, and a metric
    // record (EMF) whose every metric has a value and every dimension a member.
    let messages = bed.cloudwatch_messages();
    let shipped = records(messages.iter().cloned());
    assert_eq!(shipped, console, "CloudWatch's audit records differ from the console's\n{}", bed.report());
    let faults = bed.proxy.faults();
    assert!(faults.iter().any(|(_, service)| service == "logs"), "no fault hit the shipping: {faults:?}");
    let emf: Vec<serde_json::Value> = messages
        .iter()
        .filter_map(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect();
    let last = emf.last().unwrap_or_else(|| panic!("no EMF record in {messages:#?}"));
    // AWS's own EMF library validates every part of it and writes the same record.
    let file = bed.topo.dir.write("emf.json", &last.to_string());
    let checked = bastion_tests::command::run(&[
        bastion_tests::aws::python(),
        bastion_tests::aws::script("emf_check.py"),
        file.clone(),
    ]);
    assert!(checked.success() && checked.stdout.contains(r#""ok": true"#), "aws-embedded-metrics: {checked}");
    let directive = &last["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Bastion");
    for metric in directive["Metrics"].as_array().unwrap() {
        assert!(last[metric["Name"].as_str().unwrap()].is_number(), "{last}");
    }
    assert_eq!((last["LogGroup"].as_str(), last["InstanceId"].as_str()), (Some(GROUP), Some(INSTANCE)));
    assert!(last["Handshakes"].as_u64().unwrap() >= 2, "{last}");

    // `bastion audit`: from the console capture and from the group, the same two sessions.
    let capture = bed.topo.dir.write("console.log", &log);
    let from_file = bed.audit(&["--file", capture.to_str().unwrap(), "--json"]);
    let from_cloudwatch = bed.audit(&["--cloudwatch-group", GROUP, "--json"]);
    assert_eq!(from_file, from_cloudwatch);
    let rows: Vec<serde_json::Value> = from_file.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{from_file}");
    let only = bed.audit(&["--file", capture.to_str().unwrap(), "--peer", bed.topo.clients[1].name]);
    assert!(only.contains(bed.topo.clients[1].name) && !only.contains(bed.topo.clients[0].name), "{only}");
    let before = bed.audit(&["--file", capture.to_str().unwrap(), "--until", &(handshakes[0] - 60).to_string()]);
    assert_eq!(before.lines().count(), 1, "only the header: nobody was connected a minute before\n{before}");
    eprintln!("FIGURE bastion audit:\n{}", bed.audit(&["--cloudwatch-group", GROUP]));
}

/// The kernel's (received, sent) bytes of interface `name` in `ns`.
fn tun_bytes(ns: &bastion_tests::Netns, name: &str) -> (u64, u64) {
    let read = |which: &str| -> u64 {
        ns.run(&["cat", &format!("/sys/class/net/{name}/statistics/{which}")]).trim().parse().unwrap()
    };
    (read("rx_bytes"), read("tx_bytes"))
}

/// The client's UDP source port (wireguard-go picks one).
fn listen_port(tunnel: &WgInterface) -> u16 {
    let show = tunnel.show();
    show.lines()
        .find_map(|l| l.trim().strip_prefix("listening port: ").and_then(|p| p.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{show}"))
}

/// How long CloudWatch gives no answer (`make bench-cloudwatch` sets 600).
fn outage() -> Duration {
    let seconds = std::env::var("BASTION_AUDIT_OUTAGE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    Duration::from_secs(seconds)
}

/// SIGHUP to the bastion `per_second` times a second while it lives: each reload logs a line
/// (the config is unchanged, so nothing else happens).
struct ReloadStorm {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReloadStorm {
    fn start(pid: i32, per_second: u32) -> ReloadStorm {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let pause = Duration::from_secs(1) / per_second;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: kill(2) with a pid this test started and a plain signal number.
                unsafe { libc::kill(pid, libc::SIGHUP) };
                std::thread::sleep(pause);
            }
        });
        ReloadStorm { stop, thread: Some(thread) }
    }
}

impl Drop for ReloadStorm {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// CPU seconds the bastion's thread named `name` has used.
fn thread_cpu_seconds(bed: &Bed, name: &str) -> f64 {
    let pid = bed.bastion.process.pid();
    // SAFETY: sysconf(3) with a valid name; it reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
        let used: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        return used / ticks;
    }
    panic!("no thread {name} in the bastion");
}

fn lines_containing(text: &str, what: &str) -> usize {
    text.lines().filter(|l| l.contains(what)).count()
}

#[test]
#[ignore = "needs root, network namespaces, moto and the binaries under test: `make integration-test` runs it"]
fn cloudwatch_without_an_answer_costs_the_tunnel_nothing_and_shipping_resumes() {
    let bed = Bed::start(2, 1_000_000);
    let tunnels: Vec<WgInterface> = (0..2).map(|i| bed.topo.start_client_tunnel(i, bed.topo.endpoint_v4())).collect();
    for i in 0..2 {
        bed.topo.clients[i].ns.ping(PRIVATE_HOST, STEP).unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    }
    let pid = bed.bastion.process.pid();

    // What shipping costs: about 100 lines a second for 20 s, the shipper thread's CPU.
    let (cpu_before, log_before, started) =
        (thread_cpu_seconds(&bed, "cloudwatch"), bed.bastion.process.log(), Instant::now());
    {
        let _storm = ReloadStorm::start(pid, 100);
        std::thread::sleep(Duration::from_secs(20));
    }
    std::thread::sleep(Duration::from_secs(6));
    let elapsed = started.elapsed().as_secs_f64();
    let shipper_cpu = thread_cpu_seconds(&bed, "cloudwatch") - cpu_before;
    let lines = lines_containing(&bed.bastion.process.log(), "reload (") - lines_containing(&log_before, "reload (");
    eprintln!(
        "FIGURE shipping {:.0} lines/s: the shipper thread used {shipper_cpu:.2} CPU-s in {elapsed:.0} s = {:.2} % of a core",
        lines as f64 / 20.0,
        shipper_cpu / elapsed * 100.0
    );

    // No answer from CloudWatch for the outage, while client 0 sends 200 Mbit/s of UDP, client 1
    // pings every 50 ms and the bastion logs about 100 lines a second.
    let outage = outage();
    let rss_before = rss_kib(&bed);
    std::fs::write(&bed.hang_file, "").unwrap();
    let host_ns = &bed.topo.private_hosts[0].ns;
    let dir = bed.topo.dir.path();
    let _iperf_server =
        host_ns.spawn("iperf3 server", &["iperf3", "-s", "-p", "5299"], &[], &dir.join("iperf3-server.log"));
    std::thread::sleep(Duration::from_millis(500));
    let seconds = outage.as_secs().saturating_sub(5).to_string();
    let load = bed.topo.clients[0].ns.spawn(
        "iperf3 200 Mbit/s",
        &["iperf3", "-c", PRIVATE_HOST, "-p", "5299", "-u", "-b", "200M", "-l", "1300", "-t", &seconds],
        &[],
        &dir.join("iperf3-client.log"),
    );
    let pinger = Pinger::start(
        &bed.topo.clients[1].ns,
        PRIVATE_HOST,
        Duration::from_millis(50),
        ((outage.as_millis() - 5_000) / 50) as u32,
        &dir.join("ping.log"),
    );
    let mut rss_peak = rss_before;
    {
        let _storm = ReloadStorm::start(pid, 100);
        let until = Instant::now() + outage - Duration::from_secs(4);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_secs(1));
            rss_peak = rss_peak.max(rss_kib(&bed));
        }
    }
    let report = pinger.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    let _ = load.wait_exit(STEP);
    let iperf = std::fs::read_to_string(dir.join("iperf3-client.log")).unwrap_or_default();
    assert_eq!(report.lost(), 0, "pings lost while CloudWatch did not answer ({} sent)\n{}", report.sent, bed.report());
    let hangs = bed.proxy.faults().iter().filter(|(kind, _)| kind == "hang").count();
    assert!(hangs >= 1, "the shipper never tried during the outage: {}", bed.proxy_report());
    assert!(rss_peak <= rss_before + 8 * 1024, "RSS grew from {rss_before} KiB to {rss_peak} KiB");

    // CloudWatch answers again: what was queued arrives without a restart (all of it, or all but
    // what a full queue dropped, which a line says).
    std::fs::remove_file(&bed.hang_file).unwrap();
    let log = bed.bastion.process.log();
    let made = lines_containing(&log, "reload (");
    let arrived = wait_until("the outage's lines in CloudWatch", Duration::from_secs(180), || {
        let log = bed.bastion.process.log();
        let dropped: usize = log
            .lines()
            .filter_map(|l| l.split("cloudwatch: ").nth(1)?.split(" line(s) dropped").next()?.parse::<usize>().ok())
            .sum();
        let arrived = lines_containing(&bed.cloudwatch_messages().join("\n"), "reload (");
        if arrived + dropped >= made {
            Ok((arrived, dropped))
        } else {
            Err(format!("{arrived} of {made} reload lines arrived, {dropped} dropped\n{}", bed.proxy_report()))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    eprintln!(
        "FIGURE outage {} s under iperf3 ({}): {} pings, {} lost; {made} reload lines logged, {} arrived after, {} \
         dropped (queue full); RSS {rss_before} -> peak {rss_peak} KiB; {hangs} requests held",
        outage.as_secs(),
        iperf.lines().rev().find(|l| l.contains("receiver")).unwrap_or("no iperf3 summary").trim(),
        report.sent,
        report.lost(),
        arrived.0,
        arrived.1,
    );
    drop(tunnels);
}

fn rss_kib(bed: &Bed) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", bed.bastion.process.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap()
}
