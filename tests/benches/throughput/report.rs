//! What a benchmark run found: medians and ranges per scenario and implementation, ratios of
//! `bastion run` to the others taken per repetition (the runs compared ran seconds apart), and
//! the files under `target/bench/` (markdown as printed, JSON with every run).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::bed::Implementation;
use crate::{Measurement, Options, Run, Scenario};

/// What the report says about how it was made.
pub struct Context {
    pub options: Options,
    pub implementations: Vec<Implementation>,
    pub notes: Vec<String>,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub elapsed: f64,
    pub boringtun_threads: usize,
    /// What the clients run (`wireguard-go 0.0.20231211`, or the one on PATH).
    pub client: String,
    /// The crypto floor and the memory per peer (see `floor`).
    pub floor: Option<crate::floor::Floor>,
    /// Handshakes under a flood, per implementation (see `handshakes`).
    pub handshakes: Vec<Result<crate::handshakes::HandshakeFigure, String>>,
    /// The bastion's own ceiling with the load generator (see `generator`).
    pub ceilings: Vec<Result<crate::generator::Ceiling, String>>,
}

/// Median and range of one figure over the repetitions.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Stat { median, min: v[0], max: v[n - 1] })
    }

    fn show(&self, decimals: usize) -> String {
        if self.min == self.max {
            format!("{:.*}", decimals, self.median)
        } else {
            format!("{:.*} [{:.*}–{:.*}]", decimals, self.median, decimals, self.min, decimals, self.max)
        }
    }

    fn json(&self) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max })
    }
}

fn show(stat: Option<Stat>, decimals: usize) -> String {
    stat.map(|s| s.show(decimals)).unwrap_or_else(|| "–".into())
}

fn json_stat(stat: Option<Stat>) -> Value {
    stat.map(|s| s.json()).unwrap_or(Value::Null)
}

/// One implementation in one scenario.
pub struct Cell {
    pub implementation: Implementation,
    pub ok: usize,
    pub failed: usize,
    pub mbit: Option<Stat>,
    pub cpu_per_gb: Option<Stat>,
    pub cores: Option<Stat>,
    pub client_cpu_per_gb: Option<Stat>,
    pub retransmits: Option<Stat>,
    pub lost_percent: Option<Stat>,
    /// Share of the run (%) in which some runnable task waited for a CPU.
    pub cpu_pressure: Option<Stat>,
    /// Packets dropped in the bastion namespace's UDP receive buffers and at its TUN, and in
    /// the private host's UDP receive buffers.
    pub bastion_udp_drops: Option<Stat>,
    pub tun_drops: Option<Stat>,
    pub clients_udp_drops: Option<Stat>,
    pub clients_tun_drops: Option<Stat>,
    pub host_udp_drops: Option<Stat>,
    /// The busiest threads of the bastion process in the run of median throughput.
    pub threads: String,
}

/// `bastion run` over another implementation, per repetition.
pub struct Ratio {
    pub versus: Implementation,
    pub mbit: Option<Stat>,
    pub cpu_per_gb: Option<Stat>,
}

pub struct ScenarioSummary {
    pub scenario: Scenario,
    pub cells: Vec<Cell>,
    pub ratios: Vec<Ratio>,
}

fn measurements<'a>(runs: &'a [Run], scenario: &str, who: Implementation) -> Vec<&'a Measurement> {
    runs.iter()
        .filter(|r| r.scenario == scenario && r.implementation == who)
        .filter_map(|r| r.result.as_ref().ok())
        .collect()
}

fn thread_summary(m: &Measurement) -> String {
    let busy: Vec<String> = m
        .window
        .threads
        .iter()
        .filter(|t| t.load >= 0.01)
        .take(6)
        .map(|t| format!("{} {:.2}", t.name, t.load))
        .collect();
    if busy.is_empty() {
        "(none above 0.01)".into()
    } else {
        busy.join(", ")
    }
}

pub fn summarize(scenarios: &[Scenario], implementations: &[Implementation], runs: &[Run]) -> Vec<ScenarioSummary> {
    scenarios
        .iter()
        .map(|scenario| {
            let cells = implementations
                .iter()
                .map(|&who| {
                    let ms = measurements(runs, scenario.name, who);
                    let stat = |f: &dyn Fn(&Measurement) -> f64| Stat::of(&ms.iter().map(|m| f(m)).collect::<Vec<_>>());
                    let failed = runs
                        .iter()
                        .filter(|r| r.scenario == scenario.name && r.implementation == who && r.result.is_err())
                        .count();
                    let median_run = {
                        let mut sorted = ms.clone();
                        sorted.sort_by(|a, b| a.mbit.total_cmp(&b.mbit));
                        sorted.get(sorted.len() / 2).copied()
                    };
                    let is_udp = matches!(scenario.traffic, crate::iperf::Traffic::Udp { .. });
                    Cell {
                        implementation: who,
                        ok: ms.len(),
                        failed,
                        mbit: stat(&|m| m.mbit),
                        cpu_per_gb: stat(&|m| m.bastion_cpu_per_gb()),
                        cores: stat(&|m| m.bastion_cores()),
                        client_cpu_per_gb: stat(&|m| m.client_cpu_per_gb()),
                        retransmits: if is_udp { None } else { stat(&|m| m.retransmits) },
                        lost_percent: if is_udp { stat(&|m| m.lost_percent) } else { None },
                        cpu_pressure: stat(&|m| m.window.cpu_pressure * 100.0),
                        bastion_udp_drops: stat(&|m| m.drops.bastion_udp_rcvbuf as f64),
                        tun_drops: stat(&|m| m.drops.bastion_tun_tx_dropped as f64),
                        clients_udp_drops: stat(&|m| m.drops.clients_udp_rcvbuf as f64),
                        clients_tun_drops: stat(&|m| m.drops.clients_tun_tx_dropped as f64),
                        host_udp_drops: stat(&|m| m.drops.host_udp_rcvbuf as f64),
                        threads: median_run.map(thread_summary).unwrap_or_default(),
                    }
                })
                .collect();
            let ratios = implementations
                .iter()
                .filter(|&&i| i != Implementation::Bastion)
                .map(|&versus| {
                    let paired = |f: &dyn Fn(&Measurement) -> f64| {
                        let values: Vec<f64> = runs
                            .iter()
                            .filter(|r| r.scenario == scenario.name && r.implementation == Implementation::Bastion)
                            .filter_map(|ours| {
                                let theirs = runs.iter().find(|r| {
                                    r.scenario == scenario.name && r.implementation == versus && r.rep == ours.rep
                                })?;
                                let (a, b) = (ours.result.as_ref().ok()?, theirs.result.as_ref().ok()?);
                                Some(f(a) / f(b))
                            })
                            .collect();
                        Stat::of(&values)
                    };
                    Ratio { versus, mbit: paired(&|m| m.mbit), cpu_per_gb: paired(&|m| m.bastion_cpu_per_gb()) }
                })
                .collect();
            ScenarioSummary { scenario: scenario.clone(), cells, ratios }
        })
        .collect()
}

fn command_line() -> String {
    std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
        let args: Vec<String> = std::env::args().collect();
        args.join(" ")
    })
}

fn first_line(argv: &[&str]) -> String {
    let out = bastion_tests::command::run(argv);
    let text = if out.stdout.trim().is_empty() { out.stderr } else { out.stdout };
    text.lines().next().unwrap_or("").trim().to_string()
}

/// Versions and machine facts, for the notes.
fn machine() -> Vec<(String, String)> {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut facts = vec![
        ("cpus".to_string(), format!("{cpus} × {cpu_model}")),
        ("kernel".to_string(), first_line(&["uname", "-r"])),
        ("wireguard-go".to_string(), first_line(&["wireguard-go", "--version"])),
        ("iperf3".to_string(), first_line(&["iperf3", "--version"])),
    ];
    if let Some(bin) = std::env::var_os("WIREGUARD_GO_NEW_BIN") {
        let version = first_line(&[bin.to_str().unwrap_or(""), "--version"]);
        facts.push((
            "wireguard-go-2023".to_string(),
            format!("{version} (Debian package 0.0.20231211, {})", bin.to_string_lossy()),
        ));
    }
    if let Some(bin) = std::env::var_os("BORINGTUN_BIN") {
        facts.push(("boringtun-cli".to_string(), first_line(&[bin.to_str().unwrap_or(""), "--version"])));
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let commit = first_line(&["git", "-C", repo.to_str().unwrap_or("."), "describe", "--always", "--dirty"]);
    facts.push(("commit".to_string(), commit));
    facts
}

pub fn markdown(context: &Context, summary: &[ScenarioSummary], runs: &[Run]) -> String {
    let o = &context.options;
    let mut s = String::new();
    let labels: Vec<&str> = context.implementations.iter().map(|i| i.label()).collect();
    writeln!(s, "## Throughput of one bastion").unwrap();
    writeln!(s).unwrap();
    writeln!(s, "Command: `{}`", command_line()).unwrap();
    writeln!(
        s,
        "Bastions: {} (clients: {} in every case; far end: iperf3 in the private host). \
         {} repetitions × {} s per scenario and implementation, implementations alternating in \
         rotating order; {:.0} s in all.",
        labels.join(", "),
        context.client,
        o.reps,
        o.seconds,
        context.elapsed
    )
    .unwrap();
    writeln!(s, "Load average: {} at the start, {} at the end.", context.loadavg_start, context.loadavg_end).unwrap();
    if let Some(floor) = &context.floor {
        writeln!(s, "{}", floor.markdown()).unwrap();
    }
    if !o.bastion_env.is_empty() {
        let env: Vec<String> = o.bastion_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(s, "`bastion run` environment: {} (`--bastion-env`).", env.join(" ")).unwrap();
    }
    if let Some(packets) = o.tun_txqueuelen {
        writeln!(s, "Experiment: every bastion's TUN txqueuelen set to {packets} packets (`--tun-txqueuelen`).")
            .unwrap();
    }
    writeln!(s).unwrap();
    writeln!(
        s,
        "Median [min–max] over the repetitions. CPU-s/GB: CPU seconds (user+system, all threads) \
                 of the process per 10⁹ bytes of iperf3 payload received; cores: its CPU seconds per \
                 second; CPU pressure: share of the run in which some runnable task waited for a CPU \
                 (/proc/pressure/cpu, whole machine: this benchmark and anything else running)."
    )
    .unwrap();
    writeln!(s).unwrap();
    writeln!(
        s,
        "| scenario | bastion | Mbit/s | bastion CPU-s/GB | bastion cores | clients' wg-go CPU-s/GB | retransmits | UDP loss % | CPU pressure % |"
    )
    .unwrap();
    writeln!(s, "|---|---|---|---|---|---|---|---|---|").unwrap();
    for sc in summary {
        for c in &sc.cells {
            let failed = if c.failed > 0 { format!(" ({} failed)", c.failed) } else { String::new() };
            writeln!(
                s,
                "| {} | {}{} | {} | {} | {} | {} | {} | {} | {} |",
                sc.scenario.name,
                c.implementation.label(),
                failed,
                show(c.mbit, 0),
                show(c.cpu_per_gb, 1),
                show(c.cores, 2),
                show(c.client_cpu_per_gb, 1),
                show(c.retransmits, 0),
                show(c.lost_percent, 2),
                show(c.cpu_pressure, 0),
            )
            .unwrap();
        }
    }
    writeln!(s).unwrap();
    let others: Vec<Implementation> =
        context.implementations.iter().copied().filter(|&i| i != Implementation::Bastion).collect();
    if context.implementations.contains(&Implementation::Bastion) && !others.is_empty() {
        writeln!(
            s,
            "Ratios `bastion run` / other, taken per repetition (runs seconds apart), median [min–max]. \
                     Throughput above 1 and CPU-s/GB below 1 favour `bastion run`."
        )
        .unwrap();
        writeln!(s).unwrap();
        let mut header = String::from("| scenario |");
        let mut rule = String::from("|---|");
        for other in &others {
            write!(header, " Mbit/s ÷ {0} | CPU-s/GB ÷ {0} |", other.label()).unwrap();
            rule.push_str("---|---|");
        }
        writeln!(s, "{header}\n{rule}").unwrap();
        for sc in summary {
            let mut row = format!("| {} |", sc.scenario.name);
            for other in &others {
                let r = sc.ratios.iter().find(|r| r.versus == *other);
                write!(row, " {} | {} |", show(r.and_then(|r| r.mbit), 2), show(r.and_then(|r| r.cpu_per_gb), 2))
                    .unwrap();
            }
            writeln!(s, "{row}").unwrap();
        }
        writeln!(s).unwrap();
    }
    writeln!(
        s,
        "Packets dropped per run where a queue was full (median [min–max]): UDP receive buffers \
                 (the WireGuard socket's reader, or the iperf3 receiver in the private host, was too slow) \
                 and the kernel's queue in front of a TUN (the userspace WireGuard did not read its TUN \
                 fast enough); on the bastion and on the clients of the scenario (summed):"
    )
    .unwrap();
    writeln!(s).unwrap();
    writeln!(s, "| scenario | bastion | bastion UDP | bastion TUN | clients' UDP | clients' TUN | private host UDP |")
        .unwrap();
    writeln!(s, "|---|---|---|---|---|---|---|").unwrap();
    for sc in summary {
        for c in &sc.cells {
            writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                sc.scenario.name,
                c.implementation.label(),
                show(c.bastion_udp_drops, 0),
                show(c.tun_drops, 0),
                show(c.clients_udp_drops, 0),
                show(c.clients_tun_drops, 0),
                show(c.host_udp_drops, 0)
            )
            .unwrap();
        }
    }
    writeln!(s).unwrap();
    writeln!(s, "Busiest threads of the bastion process (cores), in the run of median throughput:").unwrap();
    writeln!(s).unwrap();
    writeln!(s, "| scenario | bastion | threads |").unwrap();
    writeln!(s, "|---|---|---|").unwrap();
    for sc in summary {
        for c in &sc.cells {
            writeln!(s, "| {} | {} | {} |", sc.scenario.name, c.implementation.label(), c.threads).unwrap();
        }
    }
    writeln!(s).unwrap();
    writeln!(s, "Scenarios:").unwrap();
    for sc in summary {
        writeln!(s, "- `{}`: {}", sc.scenario.name, sc.scenario.description).unwrap();
    }
    writeln!(s).unwrap();
    writeln!(s, "Machine and versions:").unwrap();
    for (k, v) in machine() {
        writeln!(s, "- {k}: {v}").unwrap();
    }
    if context.implementations.contains(&Implementation::Boringtun) {
        writeln!(s, "- boringtun-cli runs with `--threads {}`", context.boringtun_threads).unwrap();
    }
    let failures: Vec<&Run> = runs.iter().filter(|r| r.result.is_err()).collect();
    for note in &context.notes {
        writeln!(s, "- note: {note}").unwrap();
    }
    for f in failures {
        let why = f.result.as_ref().err().map(|e| e.lines().next().unwrap_or("").to_string()).unwrap_or_default();
        writeln!(s, "- failed run: rep {} {} {}: {why}", f.rep + 1, f.scenario, f.implementation.label()).unwrap();
    }
    if !context.ceilings.is_empty() {
        writeln!(s).unwrap();
        s.push_str(&crate::generator::markdown(&context.ceilings, o.ceiling_seconds, o.ceiling_offer));
        let delivered = |i: Implementation, layout, bytes| {
            context
                .ceilings
                .iter()
                .flatten()
                .find(|c| c.implementation == i && c.layout == layout && c.packet_bytes == bytes)
                .map(|c| c.delivered_per_second())
        };
        for bytes in [1420, 128] {
            for layout in [
                crate::generator::Layout::Pinned,
                crate::generator::Layout::Shared,
                crate::generator::Layout::SharedOnePeer,
            ] {
                if let (Some(ours), Some(theirs)) = (
                    delivered(Implementation::Bastion, layout, bytes),
                    delivered(Implementation::WireguardGoNew, layout, bytes).filter(|t| *t > 0.0),
                ) {
                    writeln!(
                        s,
                        "\nCeiling, {bytes}-byte packets, {}: `bastion run` ÷ wireguard-go-2023 delivered packets/s {:.2}.",
                        layout.label(),
                        ours / theirs
                    )
                    .unwrap();
                }
            }
            let pinned = crate::generator::Layout::Pinned;
            if let (Some(emulated), Some(native)) = (
                delivered(Implementation::DataPlaneAarch64, pinned, bytes),
                delivered(Implementation::Bastion, pinned, bytes).filter(|n| *n > 0.0),
            ) {
                writeln!(
                    s,
                    "\nCeiling, {bytes}-byte packets, pinned: the aarch64 data plane under QEMU user mode (emulated) \
                     delivers {:.3}× what native `bastion run` does (1 / {:.1}).",
                    emulated / native,
                    native / emulated.max(1.0)
                )
                .unwrap();
            }
        }
    }
    if !context.handshakes.is_empty() {
        writeln!(s).unwrap();
        s.push_str(&crate::handshakes::markdown(&context.handshakes, o.handshake_seconds));
        let per_cpu = |i: Implementation| {
            context.handshakes.iter().flatten().find(|f| f.implementation == i).map(|f| f.responses_per_cpu_second())
        };
        if let Some(ours) = per_cpu(Implementation::Bastion) {
            for other in [Implementation::WireguardGoNew, Implementation::WireguardGo, Implementation::Boringtun] {
                if let Some(theirs) = per_cpu(other).filter(|t| *t > 0.0) {
                    writeln!(s, "\nResponses per CPU-second, `bastion run` ÷ {}: {:.2}.", other.label(), ours / theirs)
                        .unwrap();
                }
            }
        }
    }
    s
}

fn run_json(r: &Run) -> Value {
    let result = match &r.result {
        Ok(m) => json!({
            "mbit": m.mbit,
            "bytes": m.bytes,
            "retransmits": m.retransmits,
            "lost_percent": m.lost_percent,
            "bastion_cpu_seconds": m.bastion_cpu,
            "bastion_cpu_seconds_per_gb": m.bastion_cpu_per_gb(),
            "client_cpu_seconds": m.client_cpu,
            "wall_seconds": m.window.wall,
            "cpu_pressure_some": m.window.cpu_pressure,
            "drops": {
                "bastion_udp_rcvbuf": m.drops.bastion_udp_rcvbuf,
                "bastion_tun_tx_dropped": m.drops.bastion_tun_tx_dropped,
                "clients_udp_rcvbuf": m.drops.clients_udp_rcvbuf,
                "clients_tun_tx_dropped": m.drops.clients_tun_tx_dropped,
                "host_udp_rcvbuf": m.drops.host_udp_rcvbuf,
            },
            "loadavg_before": m.loadavg_before,
            "threads": m.window.threads.iter().map(|t| json!({"name": t.name, "cores": t.load})).collect::<Vec<_>>(),
        }),
        Err(e) => json!({ "error": e }),
    };
    json!({
        "scenario": r.scenario,
        "implementation": r.implementation.label(),
        "rep": r.rep + 1,
        "started_unix": r.started,
        "result": result,
    })
}

/// Writes `throughput.md` and `throughput.json` into `dir`.
pub fn write_files(
    dir: &Path,
    context: &Context,
    summary: &[ScenarioSummary],
    runs: &[Run],
    markdown: &str,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let scenarios: Vec<Value> = summary
        .iter()
        .map(|sc| {
            json!({
                "name": sc.scenario.name,
                "description": sc.scenario.description,
                "implementations": sc.cells.iter().map(|c| json!({
                    "implementation": c.implementation.label(),
                    "runs_ok": c.ok,
                    "runs_failed": c.failed,
                    "mbit": json_stat(c.mbit),
                    "bastion_cpu_seconds_per_gb": json_stat(c.cpu_per_gb),
                    "bastion_cores": json_stat(c.cores),
                    "clients_cpu_seconds_per_gb": json_stat(c.client_cpu_per_gb),
                    "retransmits": json_stat(c.retransmits),
                    "udp_lost_percent": json_stat(c.lost_percent),
                    "cpu_pressure_percent": json_stat(c.cpu_pressure),
                    "bastion_udp_rcvbuf_drops": json_stat(c.bastion_udp_drops),
                    "bastion_tun_tx_dropped": json_stat(c.tun_drops),
                    "clients_udp_rcvbuf_drops": json_stat(c.clients_udp_drops),
                    "clients_tun_tx_dropped": json_stat(c.clients_tun_drops),
                    "host_udp_rcvbuf_drops": json_stat(c.host_udp_drops),
                    "threads_median_run": c.threads,
                })).collect::<Vec<_>>(),
                "ratios_bastion_over": sc.ratios.iter().map(|r| json!({
                    "versus": r.versus.label(),
                    "mbit": json_stat(r.mbit),
                    "bastion_cpu_seconds_per_gb": json_stat(r.cpu_per_gb),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let o = &context.options;
    let report = json!({
        "command": command_line(),
        "seconds": o.seconds,
        "repetitions": o.reps,
        "udp_mbit": o.udp_mbit,
        "tun_txqueuelen": o.tun_txqueuelen,
        "implementations": context.implementations.iter().map(|i| i.label()).collect::<Vec<_>>(),
        "boringtun_threads": context.boringtun_threads,
        "loadavg_start": context.loadavg_start,
        "loadavg_end": context.loadavg_end,
        "elapsed_seconds": context.elapsed,
        "machine": machine().into_iter().map(|(k, v)| (k, Value::String(v))).collect::<serde_json::Map<_, _>>(),
        "notes": context.notes,
        "scenarios": scenarios,
        "runs": runs.iter().map(run_json).collect::<Vec<_>>(),
    });
    let md = dir.join("throughput.md");
    let js = dir.join("throughput.json");
    std::fs::write(&md, markdown)?;
    std::fs::write(&js, serde_json::to_string_pretty(&report).unwrap_or_default() + "\n")?;
    Ok(vec![md, js])
}
