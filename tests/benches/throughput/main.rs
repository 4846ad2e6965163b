//! `make bench`: throughput and CPU cost of one bastion, `bastion run` against wireguard-go and
//! boringtun-cli as the bastion, measured in the same run on the same kind of topology.
//!
//! Every client is wireguard-go in its own namespace; the far end is iperf3 in the private host;
//! the bastion forwards and masquerades between them. Each scenario is repeated, and the
//! implementations take turns within every repetition (in a rotating order), so that the load
//! other work puts on these shared 2-core machines falls on all of them alike. The results are
//! meant to be read as ratios between implementations of the same run: absolute figures drift.
//!
//! This is a measurement, not a test: it asserts nothing about speed. It fails only when a
//! bastion cannot be set up at all.
//!
//! ```text
//! cargo bench -p bastion-tests --bench throughput -- [--seconds N] [--reps N]
//!     [--scenarios tcp-up,tcp-down,tcp-up-4,udp-up,tcp-down-4,tcp-up-1x4,tcp-down-1x4]
//!     [--udp-mbit N]
//!     [--only bastion,wireguard-go,wireguard-go-2023,boringtun-cli] [--out DIR] [--tun-txqueuelen N]
//!     [--client wireguard-go|wireguard-go-2023] [--bastion-env KEY=VALUE ...]
//!     [--handshake-seconds N] [--ceiling-seconds N] [--ceiling-layouts pinned,shared,one-peer]
//!     [--ceiling-offer PACKETS_PER_SECOND]
//! ```
//! Environment: `BASTION_BIN` (required), `BORINGTUN_BIN` (optional: without it, or when it
//! cannot start, boringtun-cli is left out and the report says why), `WIREGUARD_GO_NEW_BIN`
//! (Debian trixie's wireguard-go 0.0.20231211, which `make bench` fetches; without it
//! wireguard-go-2023 is left out), `BENCH_COMMAND` (the command line to print in the report;
//! `make bench` sets it).
//!
//! The clients are the newer wireguard-go when it is there (`--client wireguard-go` for
//! Debian bookworm's 0.0.20220316), so a client without offloads is not what limits the run.

mod bed;
mod cpu;
mod floor;
mod generator;
mod handshakes;
mod iperf;
mod report;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bed::{Bed, Binaries, Implementation};
use iperf::Traffic;

/// One way of loading the bastion.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub description: String,
    pub clients: usize,
    pub traffic: Traffic,
}

fn all_scenarios(udp_mbit: u32) -> Vec<Scenario> {
    vec![
        Scenario {
            name: "tcp-up",
            description: "1 TCP stream, client → private host".into(),
            clients: 1,
            traffic: Traffic::Tcp { reverse: false, streams: 1 },
        },
        Scenario {
            name: "tcp-down",
            description: "1 TCP stream, private host → client (-R)".into(),
            clients: 1,
            traffic: Traffic::Tcp { reverse: true, streams: 1 },
        },
        Scenario {
            name: "tcp-up-4",
            description: "4 clients × 1 TCP stream each, client → private host".into(),
            clients: 4,
            traffic: Traffic::Tcp { reverse: false, streams: 1 },
        },
        Scenario {
            name: "udp-up",
            description: format!("UDP offered at {udp_mbit} Mbit/s, client → private host"),
            clients: 1,
            traffic: Traffic::Udp { mbit: udp_mbit },
        },
        Scenario {
            name: "tcp-down-4",
            description: "4 clients × 1 TCP stream each, private host → client (-R)".into(),
            clients: 4,
            traffic: Traffic::Tcp { reverse: true, streams: 1 },
        },
        Scenario {
            name: "tcp-up-1x4",
            description: "1 client × 4 TCP streams (-P 4), client → private host: one peer, many flows".into(),
            clients: 1,
            traffic: Traffic::Tcp { reverse: false, streams: 4 },
        },
        Scenario {
            name: "tcp-down-1x4",
            description: "1 client × 4 TCP streams (-P 4), private host → client (-R): one peer, many flows".into(),
            clients: 1,
            traffic: Traffic::Tcp { reverse: true, streams: 4 },
        },
    ]
}

const DEFAULT_SCENARIOS: &str = "tcp-up,tcp-down,tcp-up-4,udp-up";

/// What the command line asks for.
#[derive(Clone, Debug)]
pub struct Options {
    pub seconds: u32,
    pub reps: usize,
    pub scenarios: Vec<Scenario>,
    pub udp_mbit: u32,
    pub only: Vec<Implementation>,
    pub out: PathBuf,
    /// An experiment: every bastion's TUN queue set to this many packets.
    pub tun_txqueuelen: Option<u32>,
    /// The clients' wireguard-go: the newer one (when fetched) unless `--client wireguard-go`.
    pub client: Implementation,
    /// `--bastion-env KEY=VALUE`: the environment of `bastion run` (BASTION_NO_UDP_GSO=1 measures
    /// it without UDP GSO).
    pub bastion_env: Vec<(String, String)>,
    /// Seconds of the handshake flood per implementation (`--handshake-seconds`, 0: none).
    pub handshake_seconds: u32,
    /// Seconds of each ceiling case with the load generator (`--ceiling-seconds`, 0: none).
    pub ceiling_seconds: u32,
    /// The ceiling's layouts (`--ceiling-layouts`, default all).
    pub ceiling_layouts: Vec<generator::Layout>,
    /// Packets a second the generator offers at most (`--ceiling-offer`; default: as many as it
    /// can), so that it leaves the bastion a share of the second core.
    pub ceiling_offer: Option<u32>,
}

const ALL: [Implementation; 4] =
    [Implementation::Bastion, Implementation::WireguardGo, Implementation::WireguardGoNew, Implementation::Boringtun];

fn parse_options() -> Result<Options, String> {
    let mut seconds = 10;
    let mut reps = 3;
    let mut scenario_names = DEFAULT_SCENARIOS.to_string();
    let mut udp_mbit = 200;
    let mut only = ALL.to_vec();
    let mut client = Implementation::WireguardGoNew;
    let mut bastion_env = Vec::new();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = workspace.join("target/bench");
    let mut tun_txqueuelen = None;
    let mut handshake_seconds = 8;
    let mut ceiling_seconds = 5;
    let mut ceiling_layouts = generator::Layout::ALL.to_vec();
    let mut ceiling_offer = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(format!("{name}: expected a positive whole number, got {v:?}"))
        };
        match arg.as_str() {
            // cargo bench passes this to every bench binary.
            "--bench" => {}
            "--seconds" => seconds = number("--seconds", value("--seconds")?)?,
            "--reps" => reps = number("--reps", value("--reps")?)? as usize,
            "--udp-mbit" => udp_mbit = number("--udp-mbit", value("--udp-mbit")?)?,
            "--scenarios" => scenario_names = value("--scenarios")?,
            // cargo runs benches in the package folder: a relative path means the workspace's.
            "--out" => out = workspace.join(value("--out")?),
            "--ceiling-seconds" => {
                let v = value("--ceiling-seconds")?;
                ceiling_seconds =
                    v.parse().map_err(|_| format!("--ceiling-seconds: expected a whole number, got {v:?}"))?;
            }
            "--ceiling-layouts" => {
                ceiling_layouts = Vec::new();
                for name in value("--ceiling-layouts")?.split(',') {
                    let layout = generator::Layout::ALL.into_iter().find(|l| l.name() == name).ok_or(format!(
                        "--ceiling-layouts: unknown layout {name:?} (expected pinned, shared, one-peer)"
                    ))?;
                    ceiling_layouts.push(layout);
                }
            }
            "--ceiling-offer" => ceiling_offer = Some(number("--ceiling-offer", value("--ceiling-offer")?)?),
            "--handshake-seconds" => {
                let v = value("--handshake-seconds")?;
                handshake_seconds =
                    v.parse().map_err(|_| format!("--handshake-seconds: expected a whole number, got {v:?}"))?;
            }
            "--tun-txqueuelen" => tun_txqueuelen = Some(number("--tun-txqueuelen", value("--tun-txqueuelen")?)?),
            "--only" => {
                only = Vec::new();
                for name in value("--only")?.split(',') {
                    let implementation = ALL.into_iter().find(|i| i.label() == name).ok_or(format!(
                        "--only: unknown implementation {name:?} (expected bastion, wireguard-go, wireguard-go-2023, boringtun-cli)"
                    ))?;
                    only.push(implementation);
                }
            }
            "--bastion-env" => {
                let pair = value("--bastion-env")?;
                let (key, val) =
                    pair.split_once('=').ok_or(format!("--bastion-env: expected KEY=VALUE, got {pair:?}"))?;
                bastion_env.push((key.to_string(), val.to_string()));
            }
            "--client" => {
                let name = value("--client")?;
                client = [Implementation::WireguardGo, Implementation::WireguardGoNew]
                    .into_iter()
                    .find(|i| i.label() == name)
                    .ok_or(format!("--client: expected wireguard-go or wireguard-go-2023, got {name:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?} (see the top of benches/throughput/main.rs)")),
        }
    }
    let known = all_scenarios(udp_mbit);
    let mut scenarios = Vec::new();
    for name in scenario_names.split(',') {
        let scenario = known.iter().find(|s| s.name == name).ok_or(format!(
            "--scenarios: unknown scenario {name:?} (expected some of {})",
            known.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        ))?;
        scenarios.push(scenario.clone());
    }
    Ok(Options {
        seconds,
        reps,
        scenarios,
        udp_mbit,
        only,
        out,
        tun_txqueuelen,
        client,
        bastion_env,
        handshake_seconds,
        ceiling_seconds,
        ceiling_layouts,
        ceiling_offer,
    })
}

/// One measured run: one implementation, one scenario, one repetition.
#[derive(Clone, Debug)]
pub struct Run {
    pub scenario: &'static str,
    pub implementation: Implementation,
    pub rep: usize,
    /// Unix seconds at the start.
    pub started: u64,
    pub result: Result<Measurement, String>,
}

#[derive(Clone, Debug)]
pub struct Measurement {
    /// Received Mbit/s, summed over the clients.
    pub mbit: f64,
    /// Received bytes, summed over the clients.
    pub bytes: f64,
    pub retransmits: f64,
    /// UDP loss in percent (mean over the clients).
    pub lost_percent: f64,
    /// CPU seconds of the bastion process and of the clients' wireguard-go processes.
    pub bastion_cpu: f64,
    pub client_cpu: f64,
    pub window: cpu::Window,
    pub drops: bed::Drops,
    pub loadavg_before: String,
}

impl Measurement {
    fn gigabytes(&self) -> f64 {
        self.bytes / 1e9
    }

    /// Bastion CPU seconds per GB received.
    pub fn bastion_cpu_per_gb(&self) -> f64 {
        self.bastion_cpu / self.gigabytes()
    }

    pub fn client_cpu_per_gb(&self) -> f64 {
        self.client_cpu / self.gigabytes()
    }

    /// Cores the bastion kept busy on average.
    pub fn bastion_cores(&self) -> f64 {
        self.bastion_cpu / self.window.wall
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs `scenario` once on `bed`: every client's iperf3 at once, the CPU meter around them.
fn measure(bed: &Bed, scenario: &Scenario, seconds: u32) -> Result<Measurement, String> {
    bed.warm_up(scenario.clients)?;
    let server = bed.topo.private_hosts[0].v4;
    let mut pids = vec![bed.bastion_pid()];
    pids.extend(bed.client_pids(scenario.clients));
    let loadavg_before = loadavg();
    let drops_before = bed.drops(scenario.clients);
    let meter = cpu::Meter::start(&pids);
    let outputs: Vec<bastion_tests::Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = bed
            .topo
            .clients
            .iter()
            .take(scenario.clients)
            .enumerate()
            .map(|(i, client)| {
                let argv = iperf::client_argv(server, i, scenario.traffic, seconds);
                scope.spawn(move || client.ns.exec(&argv))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("iperf3 client thread")).collect()
    });
    let window = meter.stop();
    let drops = bed.drops(scenario.clients).since(drops_before);
    bed.check_running()?;
    let mut total = iperf::Report::default();
    for (i, out) in outputs.iter().enumerate() {
        let report = iperf::parse(&out.stdout).map_err(|e| format!("client {i}: {e}\n{out}"))?;
        total.bytes += report.bytes;
        total.bits_per_second += report.bits_per_second;
        total.retransmits += report.retransmits;
        total.lost_percent += report.lost_percent / outputs.len() as f64;
    }
    if total.bytes <= 0.0 {
        return Err("no bytes arrived".into());
    }
    Ok(Measurement {
        mbit: total.bits_per_second / 1e6,
        bytes: total.bytes,
        retransmits: total.retransmits,
        lost_percent: total.lost_percent,
        bastion_cpu: window.process_seconds[0],
        client_cpu: window.process_seconds[1..].iter().sum(),
        window,
        drops,
        loadavg_before,
    })
}

/// QEMU user mode and the aarch64 crypto floor, when `make bench` provided them
/// (`QEMU_AARCH64`, `CRYPTO_FLOOR_AARCH64_BIN`); a note says why not otherwise.
fn aarch64_tools(notes: &mut Vec<String>) -> Option<bed::Aarch64> {
    let file = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_file());
    match (file("QEMU_AARCH64"), file("CRYPTO_FLOOR_AARCH64_BIN")) {
        (Some(qemu), Some(crypto_floor)) => {
            let data_plane = file("DATA_PLANE_AARCH64_BIN");
            if data_plane.is_none() {
                notes.push("no emulated aarch64 ceiling: DATA_PLANE_AARCH64_BIN is not set or not a file".to_string());
            }
            Some(bed::Aarch64 { qemu, crypto_floor, data_plane })
        }
        _ => {
            notes.push(
                "no emulated aarch64 figures: QEMU_AARCH64 or CRYPTO_FLOOR_AARCH64_BIN is not set or not a file"
                    .to_string(),
            );
            None
        }
    }
}

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    if std::env::var_os("BASTION_BIN").is_none() {
        eprintln!("bench: BASTION_BIN is not set (`make bench` builds the release binary and sets it)");
        std::process::exit(2);
    }
    let bastion = bastion_tests::bastion::binary();
    let wireguard_go_new = std::env::var_os("WIREGUARD_GO_NEW_BIN").map(PathBuf::from).filter(|p| p.is_file());
    let mut notes = Vec::new();
    let client = match (options.client, &wireguard_go_new) {
        (Implementation::WireguardGoNew, Some(path)) => Some(path.clone()),
        (Implementation::WireguardGoNew, None) => {
            notes.push("clients: wireguard-go on PATH (WIREGUARD_GO_NEW_BIN is not set or not a file)".to_string());
            None
        }
        _ => None,
    };
    let binaries = Binaries {
        bastion,
        boringtun: std::env::var_os("BORINGTUN_BIN").map(PathBuf::from),
        boringtun_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        wireguard_go_new,
        client,
        bastion_env: options.bastion_env.clone(),
        aarch64: aarch64_tools(&mut notes),
    };
    let started = Instant::now();
    let loadavg_start = loadavg();
    eprintln!("bench: load average at start: {loadavg_start}");
    let floor = floor::measure(&binaries.bastion, binaries.aarch64.as_ref());
    eprintln!("bench: {}", floor.markdown());

    // Beds first: a failure here is the only thing that fails the benchmark (boringtun-cli's
    // excepted: the comparison goes on without it).
    let mut beds: Vec<Bed> = Vec::new();
    for &implementation in &options.only {
        if implementation == Implementation::WireguardGoNew && binaries.wireguard_go_new.is_none() {
            notes.push("wireguard-go-2023 left out: WIREGUARD_GO_NEW_BIN is not set or not a file".to_string());
            continue;
        }
        if implementation == Implementation::Boringtun {
            match &binaries.boringtun {
                None => {
                    notes.push("boringtun-cli left out: BORINGTUN_BIN is not set".to_string());
                    continue;
                }
                Some(path) if !path.is_file() => {
                    notes.push(format!("boringtun-cli left out: {} does not exist", path.display()));
                    continue;
                }
                Some(_) => {}
            }
        }
        eprintln!("bench: setting up {}", implementation.label());
        let attempt = std::panic::catch_unwind(|| Bed::start(implementation, &binaries));
        match attempt {
            Ok(bed) => beds.push(bed),
            Err(panic) if implementation == Implementation::Boringtun => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                notes.push(format!("boringtun-cli left out: it did not come up: {why}"));
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    for bed in &beds {
        if let Some(packets) = options.tun_txqueuelen {
            bed.set_tun_txqueuelen(packets);
        }
        let pid = bed.bastion_pid();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let txqueuelen = bed.tun_txqueuelen();
        eprintln!(
            "bench: {} runs as pid {pid} ({}), TUN txqueuelen {txqueuelen}",
            bed.implementation.label(),
            comm.trim()
        );
        notes.push(format!("{}: TUN txqueuelen {txqueuelen}", bed.implementation.label()));
    }

    let mut runs: Vec<Run> = Vec::new();
    let total = options.reps * options.scenarios.len() * beds.len();
    for rep in 0..options.reps {
        for (s, scenario) in options.scenarios.iter().enumerate() {
            // A rotating order: every implementation goes first, second, ... equally often.
            let n = beds.len();
            for k in 0..n {
                let bed = &beds[(k + rep + s) % n];
                let started_at = unix_now();
                let result = measure(bed, scenario, options.seconds);
                match &result {
                    Ok(m) => eprintln!(
                        "bench: [{:>2}/{total}] rep {} {:<10} {:<13} {:>7.0} Mbit/s  bastion {:>5.1} CPU-s/GB ({:.2} cores)  CPU pressure {:.0}%",
                        runs.len() + 1,
                        rep + 1,
                        scenario.name,
                        bed.implementation.label(),
                        m.mbit,
                        m.bastion_cpu_per_gb(),
                        m.bastion_cores(),
                        m.window.cpu_pressure * 100.0,
                    ),
                    Err(e) => eprintln!(
                        "bench: [{:>2}/{total}] rep {} {} {} FAILED: {e}",
                        runs.len() + 1,
                        rep + 1,
                        scenario.name,
                        bed.implementation.label()
                    ),
                }
                runs.push(Run {
                    scenario: scenario.name,
                    implementation: bed.implementation,
                    rep,
                    started: started_at,
                    result,
                });
            }
        }
    }
    let loadavg_end = loadavg();
    eprintln!("bench: load average at end: {loadavg_end}");
    let implementations: Vec<Implementation> = beds.iter().map(|b| b.implementation).collect();
    drop(beds);
    let mut handshake_figures = Vec::new();
    if options.handshake_seconds > 0 {
        for &implementation in &implementations {
            let figure = handshakes::measure(implementation, &binaries, options.handshake_seconds);
            match &figure {
                Ok(f) => eprintln!("bench: handshakes {}", f.line()),
                Err(e) => eprintln!("bench: handshakes {} FAILED: {e}", implementation.label()),
            }
            handshake_figures.push(figure);
        }
    }

    let mut ceilings = Vec::new();
    if options.ceiling_seconds > 0 {
        let mut ceiling = |implementation: Implementation, layout: generator::Layout, packet_bytes: usize| {
            let ceiling = generator::measure(
                implementation,
                layout,
                &binaries,
                packet_bytes,
                options.ceiling_seconds,
                options.ceiling_offer,
            );
            match &ceiling {
                Ok(c) => eprintln!(
                    "bench: ceiling {:<17} {:<13} {:>4} B: offered {:>8.0}/s delivered {:>8.0}/s ({:.2} Gbit/s), bastion {:.2} cores, generator {:.2}",
                    implementation.label(),
                    format!("{layout:?}"),
                    packet_bytes,
                    c.offered_per_second(),
                    c.delivered_per_second(),
                    c.delivered_gbit(),
                    c.bastion_cpu / c.seconds,
                    c.generator_cpu / c.send_seconds
                ),
                Err(e) => eprintln!("bench: ceiling {} {layout:?} FAILED: {e}", implementation.label()),
            }
            ceilings.push(ceiling);
        };
        for packet_bytes in [1420, 128] {
            for &layout in &options.ceiling_layouts {
                for implementation in [Implementation::Bastion, Implementation::WireguardGoNew] {
                    if implementations.contains(&implementation) {
                        ceiling(implementation, layout, packet_bytes);
                    }
                }
            }
            // The aarch64 build of the same packet path under QEMU user mode, on a core of its
            // own like the pinned `bastion run` above (emulated: see docs/performance.md).
            let emulated = binaries.aarch64.as_ref().is_some_and(|a| a.data_plane.is_some());
            let pinned = options.ceiling_layouts.contains(&generator::Layout::Pinned);
            if emulated && pinned && implementations.contains(&Implementation::Bastion) {
                ceiling(Implementation::DataPlaneAarch64, generator::Layout::Pinned, packet_bytes);
            }
        }
    }
    let context = report::Context {
        options: options.clone(),
        implementations,
        notes,
        loadavg_start,
        loadavg_end,
        elapsed: started.elapsed().as_secs_f64(),
        boringtun_threads: binaries.boringtun_threads,
        floor: Some(floor),
        handshakes: handshake_figures,
        ceilings,
        client: match &binaries.client {
            Some(path) => format!("wireguard-go-2023 ({})", path.display()),
            None => "wireguard-go from PATH (Debian bookworm's 0.0.20220316 here)".to_string(),
        },
    };
    let summary = report::summarize(&options.scenarios, &context.implementations, &runs);
    let markdown = report::markdown(&context, &summary, &runs);
    println!("{markdown}");
    match report::write_files(&options.out, &context, &summary, &runs, &markdown) {
        Ok(paths) => {
            for p in paths {
                eprintln!("bench: wrote {}", p.display());
            }
        }
        Err(e) => {
            eprintln!("bench: cannot write the report to {}: {e}", options.out.display());
            std::process::exit(1);
        }
    }
}
