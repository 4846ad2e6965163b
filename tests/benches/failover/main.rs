//! `make bench-failover`: what a user sees when the bastion serving them dies, behind the NLB
//! model ([`bastion_tests::nlb`], AWS's fastest health checks by default: every 5 s, 2 to
//! change). Two suites, each case with an active client (a request every 100 ms) and an idle
//! one (keepalive 25 s, its first request 15 s after the failure):
//! - `watch`: {flush LB, sticky NLB} × {stock client, client with `bastion watch`} ×
//!   {wireguard-go bastions, our bastions};
//! - `stock`: stock clients only, {`docs` model, `article` model} × {our bastions with
//!   `[siblings]` and ip targets taken over, with `[siblings]` (instance targets), ours
//!   without, wireguard-go}, crash (kill -9); and a planned scale-in under each model
//!   (deregistration, the delay, then SIGTERM), counting the lost requests.
//!
//! - `gone`: the `stock` crash cases of our bastions with `[siblings]`, with the whole instance
//!   gone (its link down: the load balancer's checks time out) rather than the process killed.
//!
//! One table (markdown and JSON) and a plot of the active client's replies around the failure
//! (SVG), all from the same run.
//!
//! `make ha-demo` runs one case (sticky NLB, our bastions, client with watch) and narrates it.
//!
//! Options: `--out DIR`, `--suite all|watch|stock|gone`, `--interval S` (health check interval),
//! `--delay S` (deregistration delay, default 3), `--give-up S` (how long a client may stay
//! without an answer before the case is written "never"), `--demo` (with `--lb MODEL`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bastion_tests::ha::{BastionKind, HaBed, HaOptions};
use bastion_tests::nlb::{FlowPolicy, NlbParams};
use bastion_tests::ping::{self, Pinger};

const REQUEST_EVERY: Duration = Duration::from_millis(100);
/// The idle client's first request after the failure: after the load balancer has noticed.
const IDLE_FIRST_REQUEST: Duration = Duration::from_secs(15);
const KEEPALIVE: u16 = 25;

#[derive(Clone)]
struct Case {
    lb: FlowPolicy,
    watch: bool,
    bastions: BastionKind,
    /// Our bastions act on dead siblings (`[siblings]`).
    siblings: bool,
    /// ... with ip targets and address takeover (`take_over_addresses`).
    take_over: bool,
    /// The crash takes the whole instance away (its link goes down: health checks time out
    /// instead of being refused), not only the process.
    gone: bool,
}

impl Case {
    fn bastions_name(&self) -> String {
        let name = match (&self.bastions, self.siblings, self.take_over) {
            (BastionKind::Ours(_), true, true) => "ours + siblings + takeover (ip targets)",
            (BastionKind::Ours(_), true, false) => "ours + siblings",
            (b, _, _) => b.name(),
        };
        if self.gone {
            format!("{name}, instance gone")
        } else {
            name.to_string()
        }
    }

    fn label(&self) -> String {
        format!(
            "{} LB, {} client, {} bastions",
            self.lb.name(),
            if self.watch { "watch" } else { "stock" },
            self.bastions_name()
        )
    }
}

/// A planned scale-in seen by an active stock client.
#[derive(Default, Clone)]
struct ScaleIn {
    sent: u32,
    answered: u32,
    /// The longest run of requests in a row without an answer.
    longest_run: u32,
}

#[derive(Default, Clone)]
struct Active {
    detection: Option<f64>,
    reroute: Option<f64>,
    first_reply: Option<f64>,
    /// Reply times relative to the kill.
    replies: Vec<f64>,
}

#[derive(Default, Clone)]
struct Idle {
    /// From the first request after the failure to its first answer.
    reply_after_first_request: Option<f64>,
}

struct Settings {
    out: PathBuf,
    nlb: NlbParams,
    give_up: Duration,
    demo: bool,
    /// The demo's load balancer model.
    demo_lb: FlowPolicy,
    suite: String,
}

fn now_wall() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn options(case: &Case, settings: &Settings, binary: &std::path::Path, keepalive: Option<u16>) -> HaOptions {
    HaOptions {
        bastions: case.bastions.clone(),
        nlb: NlbParams { flows: case.lb, ..settings.nlb },
        watch: case.watch.then(|| binary.to_path_buf()),
        keepalive,
        drain_seconds: 3,
        imds_lifecycle: false,
        siblings: case.siblings,
        take_over: case.take_over,
        subnets_apart: false,
    }
}

fn run_active(case: &Case, settings: &Settings, binary: &std::path::Path) -> Active {
    let bed = HaBed::start(&options(case, settings, binary, None));
    let target = bed.warm_up();
    let host = bed.cluster.topo.private_hosts[0].v4.to_string();
    let count = ((settings.give_up.as_secs_f64() + 8.0) / REQUEST_EVERY.as_secs_f64()) as u32;
    let pinger =
        Pinger::start(&bed.cluster.topo.clients[0].ns, &host, REQUEST_EVERY, count, &bed.dir().join("ping.log"));
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    let killed_wall = now_wall();
    if settings.demo {
        eprintln!("demo: killing bastion {target} (kill -9), the one serving the client");
    }
    if case.gone {
        bed.vanish(target);
    } else {
        bed.crash(target);
    }
    let deadline = killed + settings.give_up;
    let mut result = Active::default();
    let mut narrated = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        if settings.demo {
            narrated = narrate(&bed, killed, narrated);
        }
        let report = ping::parse(&pinger.log(), 0);
        if let Some(reply) = report.first_reply_after(killed_wall + 0.05) {
            result.first_reply = Some(reply.at - killed_wall);
            break;
        }
    }
    // Recovered (or given up): wait for the load balancer's verdict too, for the table.
    let p = settings.nlb;
    let verdict_by = killed + p.interval * (p.unhealthy_threshold + 1) + Duration::from_secs(2);
    while Instant::now() < verdict_by && bed.nlb.detected_unhealthy(target, killed).is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    result.detection = bed.nlb.detected_unhealthy(target, killed).map(|t| (t - killed).as_secs_f64());
    let client = bed.cluster.topo.clients[0].public_v4;
    result.reroute = bed.nlb.new_flow_on(client, 1 - target, killed).map(|t| (t - killed).as_secs_f64());
    result.replies = ping::parse(&pinger.log(), 0).replies.iter().map(|r| r.at - killed_wall).collect();
    if settings.demo {
        narrate(&bed, killed, narrated);
        if let Some(w) = &bed.watch {
            eprintln!("{}", w.log_report());
        }
    }
    result
}

/// Prints the load balancer's new events since `shown`; how many are shown now.
fn narrate(bed: &HaBed, killed: Instant, shown: usize) -> usize {
    let events = bed.nlb.events();
    for e in events.iter().skip(shown) {
        let at = if e.at >= killed { (e.at - killed).as_secs_f64() } else { -(killed - e.at).as_secs_f64() };
        eprintln!("demo: {at:+7.2} s from the kill: load balancer: {:?}", e.what);
    }
    events.len()
}

fn run_idle(case: &Case, settings: &Settings, binary: &std::path::Path) -> Idle {
    let bed = HaBed::start(&options(case, settings, binary, Some(KEEPALIVE)));
    let target = bed.warm_up();
    std::thread::sleep(Duration::from_secs(3));
    if case.gone {
        bed.vanish(target);
    } else {
        bed.crash(target);
    }
    std::thread::sleep(IDLE_FIRST_REQUEST);
    let host = bed.cluster.topo.private_hosts[0].v4.to_string();
    let first_request = now_wall();
    let count = (settings.give_up.as_secs_f64() / REQUEST_EVERY.as_secs_f64()) as u32;
    let pinger =
        Pinger::start(&bed.cluster.topo.clients[0].ns, &host, REQUEST_EVERY, count, &bed.dir().join("ping.log"));
    let deadline = Instant::now() + settings.give_up;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(reply) = ping::parse(&pinger.log(), 0).first_reply_after(first_request) {
            return Idle { reply_after_first_request: Some(reply.at - first_request) };
        }
    }
    Idle::default()
}

/// A planned scale-in as Auto Scaling does it with a load balancer: the serving bastion is
/// deregistered first, keeps serving through the deregistration delay, then is stopped
/// (SIGTERM; our bastions drain, wireguard-go stops).
fn run_scale_in(case: &Case, settings: &Settings, binary: &std::path::Path) -> ScaleIn {
    let bed = HaBed::start(&options(case, settings, binary, None));
    let target = bed.warm_up();
    let host = bed.cluster.topo.private_hosts[0].v4.to_string();
    let window = settings.nlb.deregistration_delay + Duration::from_secs(12);
    let count = ((window.as_secs_f64() + 2.0) / REQUEST_EVERY.as_secs_f64()) as u32;
    let pinger =
        Pinger::start(&bed.cluster.topo.clients[0].ns, &host, REQUEST_EVERY, count, &bed.dir().join("ping.log"));
    std::thread::sleep(Duration::from_secs(2));
    bed.nlb.deregister(target);
    std::thread::sleep(settings.nlb.deregistration_delay);
    bed.stop(target);
    let report = pinger.finish(window + Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    ScaleIn { sent: report.sent, answered: report.replies.len() as u32, longest_run: report.longest_unanswered_run() }
}

fn seconds(v: Option<f64>, give_up: Duration) -> String {
    match v {
        Some(s) => format!("{s:.1} s"),
        None => format!("never (> {} s)", give_up.as_secs()),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut settings = Settings {
        out: PathBuf::from("target/bench"),
        nlb: NlbParams::default(),
        give_up: Duration::from_secs(45),
        demo: false,
        demo_lb: FlowPolicy::STICKY,
        suite: "all".into(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--out" => settings.out = PathBuf::from(value()),
            "--interval" => settings.nlb.interval = Duration::from_secs(value().parse().expect("--interval: seconds")),
            "--delay" => {
                settings.nlb.deregistration_delay = Duration::from_secs(value().parse().expect("--delay: seconds"))
            }
            "--suite" => {
                settings.suite = value();
                assert!(
                    ["all", "watch", "stock", "gone"].contains(&settings.suite.as_str()),
                    "--suite: all, watch, stock or gone"
                );
            }
            "--give-up" => settings.give_up = Duration::from_secs(value().parse().expect("--give-up: seconds")),
            "--demo" => settings.demo = true,
            "--lb" => settings.demo_lb = FlowPolicy::parse(&value()).unwrap_or_else(|e| panic!("{e}")),
            "--bench" => {} // cargo bench passes it
            other => {
                panic!(
                    "unknown option {other}: expected --out DIR, --suite all|watch|stock|gone, --interval S, --delay S, \
                     --give-up S, --demo [--lb MODEL]"
                )
            }
        }
    }
    bastion_tests::require_root_and_tools();
    let binary = bastion_tests::bastion::binary();
    if settings.demo {
        let case = Case {
            lb: settings.demo_lb,
            watch: true,
            bastions: BastionKind::Ours(binary.clone()),
            siblings: false,
            take_over: false,
            gone: false,
        };
        eprintln!(
            "demo: {} — health checks every {} s, {} to change; a request every 100 ms",
            case.label(),
            settings.nlb.interval.as_secs(),
            settings.nlb.unhealthy_threshold
        );
        let a = run_active(&case, &settings, &binary);
        eprintln!(
            "demo: LB detection {}, re-route {}, first reply {}",
            seconds(a.detection, settings.give_up),
            seconds(a.reroute, settings.give_up),
            seconds(a.first_reply, settings.give_up)
        );
        return;
    }
    let mut cases = Vec::new();
    let ours = BastionKind::Ours(binary.clone());
    let suite = |name: &str| settings.suite == "all" || settings.suite == name;
    if suite("watch") {
        for lb in [FlowPolicy::Flush, FlowPolicy::STICKY] {
            for watch in [false, true] {
                for bastions in [BastionKind::WireguardGo, ours.clone()] {
                    cases.push(Case { lb, watch, bastions, siblings: false, take_over: false, gone: false });
                }
            }
        }
    }
    let mut stock = Vec::new();
    for lb in [FlowPolicy::Documented, FlowPolicy::ARTICLE] {
        let case = |bastions: &BastionKind, siblings, take_over, gone| Case {
            lb,
            watch: false,
            bastions: bastions.clone(),
            siblings,
            take_over,
            gone,
        };
        if suite("stock") {
            stock.push(case(&ours, true, true, false));
            stock.push(case(&ours, true, false, false));
            stock.push(case(&ours, false, false, false));
            stock.push(case(&BastionKind::WireguardGo, false, false, false));
        }
        if suite("gone") {
            cases.push(case(&ours, true, true, true));
            cases.push(case(&ours, true, false, true));
        }
    }
    cases.extend(stock.iter().cloned());
    let mut results = Vec::new();
    for case in &cases {
        eprintln!("bench-failover: {} (active client)", case.label());
        let active = run_active(case, &settings, &binary);
        eprintln!("bench-failover: {} (idle client)", case.label());
        let idle = run_idle(case, &settings, &binary);
        results.push((case.clone(), active, idle));
    }
    let mut scale_ins = Vec::new();
    for case in &stock {
        eprintln!("bench-failover: {} (planned scale-in)", case.label());
        scale_ins.push((case.clone(), run_scale_in(case, &settings, &binary)));
    }
    std::fs::create_dir_all(&settings.out).unwrap();
    let mut table = table(&results, &settings);
    if !scale_ins.is_empty() {
        table.push_str(&scale_in_table(&scale_ins, &settings));
    }
    println!("{table}");
    std::fs::write(settings.out.join("failover.md"), &table).unwrap();
    std::fs::write(settings.out.join("failover.json"), json(&results, &scale_ins)).unwrap();
    std::fs::write(settings.out.join("failover.svg"), svg(&results, &settings)).unwrap();
    eprintln!("bench-failover: wrote {}/failover.{{md,json,svg}}", settings.out.display());
}

fn table(results: &[(Case, Active, Idle)], settings: &Settings) -> String {
    let g = settings.give_up;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Health checks every {} s, {} to change; deregistration delay {} s; active client: a request every 100 ms; \
         idle client: keepalive {KEEPALIVE} s, first request {} s after the kill. Times from the kill -9 of the serving \
         bastion. `make bench-failover`.\n",
        settings.nlb.interval.as_secs(),
        settings.nlb.unhealthy_threshold,
        settings.nlb.deregistration_delay.as_secs(),
        IDLE_FIRST_REQUEST.as_secs()
    );
    let _ = writeln!(
        t,
        "| load balancer | client | bastions | LB detection | re-route | re-route → first reply | total outage (active) | idle: first request → reply |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
    for (case, a, i) in results {
        let after_reroute = match (a.reroute, a.first_reply) {
            (Some(r), Some(f)) => Some((f - r).max(0.0)),
            _ => None,
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            case.lb.name(),
            if case.watch { "bastion watch" } else { "stock" },
            case.bastions_name(),
            seconds(a.detection, g),
            seconds(a.reroute, g),
            seconds(after_reroute, g),
            seconds(a.first_reply, g),
            seconds(i.reply_after_first_request, g)
        );
    }
    t
}

fn scale_in_table(rows: &[(Case, ScaleIn)], settings: &Settings) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nPlanned scale-in, stock client doing a request every 100 ms: the serving bastion is deregistered, keeps \
         serving for the {} s delay, then gets SIGTERM.\n",
        settings.nlb.deregistration_delay.as_secs()
    );
    let _ = writeln!(t, "| load balancer | bastions | requests | lost | longest run unanswered |");
    let _ = writeln!(t, "|---|---|---|---|---|");
    for (case, r) in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} ({:.1} s) |",
            case.lb.name(),
            case.bastions_name(),
            r.sent,
            r.sent.saturating_sub(r.answered),
            r.longest_run,
            f64::from(r.longest_run) * REQUEST_EVERY.as_secs_f64()
        );
    }
    t
}

fn json(results: &[(Case, Active, Idle)], scale_ins: &[(Case, ScaleIn)]) -> String {
    let mut rows: Vec<serde_json::Value> = results
        .iter()
        .map(|(c, a, i)| {
            serde_json::json!({
                "lb": c.lb.name(), "watch": c.watch, "bastions": c.bastions_name(),
                "detection_s": a.detection, "reroute_s": a.reroute, "first_reply_s": a.first_reply,
                "idle_reply_after_first_request_s": i.reply_after_first_request,
                "active_replies_s": a.replies,
            })
        })
        .collect();
    rows.extend(scale_ins.iter().map(|(c, r)| {
        serde_json::json!({
            "lb": c.lb.name(), "watch": c.watch, "bastions": c.bastions_name(), "scale_in": true,
            "requests": r.sent, "answered": r.answered, "longest_unanswered_run": r.longest_run,
        })
    }));
    serde_json::to_string_pretty(&rows).unwrap()
}

/// One row per case: a dot per answered request of the active client, from 3 s before the kill
/// to `give_up` after; the kill at 0, the load balancer's detection as a tick. Hand-written SVG
/// (a few dozen lines; a plotting crate would add more to the build than the plot is worth).
fn svg(results: &[(Case, Active, Idle)], settings: &Settings) -> String {
    let (left, width, row, top) = (330.0, 700.0, 28.0, 40.0);
    let (t0, t1) = (-3.0, settings.give_up.as_secs_f64());
    let x = |t: f64| left + (t - t0) / (t1 - t0) * width;
    let height = top + row * results.len() as f64 + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\">Replies of a client doing a request every 100 ms; the serving bastion is killed at 0 s</text>\n",
        left + width + 20.0
    );
    let bottom = top + row * results.len() as f64;
    let mut t = 0.0;
    while t <= t1 {
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{bottom}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{1}\" text-anchor=\"middle\">{t} s</text>",
            x(t),
            bottom + 15.0
        );
        t += 5.0;
    }
    let _ = writeln!(s, "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{bottom}\" stroke=\"red\"/>", x(0.0));
    for (n, (case, a, _)) in results.iter().enumerate() {
        let y = top + row * n as f64 + row / 2.0;
        let _ = writeln!(s, "<text x=\"10\" y=\"{:.1}\">{}</text>", y + 4.0, case.label());
        for r in a.replies.iter().filter(|r| **r >= t0 && **r <= t1) {
            let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"1.5\" fill=\"#1f77b4\"/>", x(*r));
        }
        if let Some(d) = a.detection {
            let _ = writeln!(
                s,
                "<line x1=\"{0:.1}\" y1=\"{1:.1}\" x2=\"{0:.1}\" y2=\"{2:.1}\" stroke=\"orange\" stroke-width=\"2\"/>",
                x(d),
                y - 9.0,
                y + 9.0
            );
        }
    }
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"{:.1}\">red: kill -9 · orange: the load balancer finds it unhealthy · dots: answers</text>\n</svg>",
        bottom + 32.0
    );
    s
}
