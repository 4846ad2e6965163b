//! Stock WireGuard clients (no `bastion watch`) when their bastion dies, behind the NLB model
//! as AWS documents it (`docs`: an unhealthy target keeps its UDP flows; a deregistered one
//! loses them at the end of the deregistration delay): with `[siblings]` the surviving bastion
//! deregisters the dead one, which the load balancer reports unhealthy, and marks its instance
//! unhealthy; the client's next packet is a new flow, on the survivor, which starts the
//! handshake. Without it the client stays stranded. Under the seed article's model (a
//! deregistered target keeps a busy flow until it idles 30 s) deregistration frees nobody who
//! keeps talking; with ip targets the survivor in the dead target's subnet takes its address
//! over, and the kept flow reaches it. A partition between the bastions makes nobody act.
//!
//! Fast health checks (1 s, thresholds 2) and a 2 s deregistration delay keep the tests short;
//! `make bench-failover` measures with AWS's fastest checks. The tests assert what happens, and
//! print the figures.

use std::time::{Duration, Instant};

use bastion_tests::bastion;
use bastion_tests::cluster::{FREE_TARGETS, IP_TARGETS, TARGETS};
use bastion_tests::ha::{instance_id, CrashUnderLoad, HaBastion, HaBed, HaOptions};
use bastion_tests::nlb::{FlowPolicy, NlbParams};
use bastion_tests::ping;
use bastion_tests::wait_until;

fn documented(siblings: bool) -> HaOptions {
    let nlb = NlbParams {
        interval: Duration::from_secs(1),
        check_timeout: Duration::from_millis(800),
        deregistration_delay: Duration::from_secs(2),
        flows: FlowPolicy::Documented,
        ..NlbParams::default()
    };
    HaOptions { siblings, ..HaOptions::ours(&bastion::binary(), nlb) }
}

/// The seed article's model (kept until idle 30 s, moved after 90 s), ip targets taken over.
fn article_with_takeover() -> HaOptions {
    let base = documented(true);
    HaOptions { take_over: true, nlb: NlbParams { flows: FlowPolicy::ARTICLE, ..base.nlb }, ..base }
}

fn wall_clock() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_survivor_takes_the_dead_bastion_out_and_a_stock_client_recovers() {
    let bed = HaBed::start(&documented(true));
    let CrashUnderLoad { pinger, dead, killed_at, detected } = bed.crash_under_load(600);
    let detected_at = wall_clock() - detected.elapsed().as_secs_f64();
    let reply = wait_until("a reply after the crash", Duration::from_secs(30), || {
        ping::parse(&pinger.log(), 0).first_reply_after(killed_at + 0.5).ok_or_else(|| bed.nlb.report())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    assert_eq!(bed.serving_target(), Some(1 - dead), "the new flow is on the survivor\n{}", bed.nlb.report());

    // What the survivor did, as the API emulator saw it: from the survivor's address, on the
    // dead one's ids; and nothing from anyone else.
    let calls = bed.nlb.api_calls();
    let survivor = std::net::IpAddr::V4(TARGETS[1 - dead].address);
    let acted: Vec<_> = calls.iter().filter(|c| c.action != "DescribeTargetHealth").collect();
    assert!(
        acted.iter().any(|c| c.action == "DeregisterTargets" && c.id == instance_id(dead) && c.status == 200),
        "{acted:#?}\n{}",
        bed.report()
    );
    assert!(
        acted.iter().any(|c| c.action == "SetInstanceHealth" && c.id == instance_id(dead) && c.status == 200),
        "{acted:#?}"
    );
    assert!(acted.iter().all(|c| c.from == survivor && c.id == instance_id(dead)), "{acted:#?}");
    let survivor_bastion = match &bed.bastions[1 - dead] {
        bastion_tests::ha::HaBastion::Ours(b) => b,
        _ => unreachable!(),
    };
    let log = survivor_bastion.process.log();
    assert!(log.contains(&format!("siblings: deregistered target {}", instance_id(dead))), "{log}");
    // The audit trail has both actions, naming the dead sibling.
    for action in ["deregistered", "marked_unhealthy"] {
        let record = format!(r#""action":"{action}","bastion":"#);
        assert!(
            log.lines().any(|l| l.contains("bastion: audit {")
                && l.contains(r#""event":"sibling_action""#)
                && l.contains(&record)
                && l.contains(&format!(r#""target":"{}""#, instance_id(dead)))),
            "no audit record of {action}:\n{log}"
        );
    }
    // bastion status counts what it did.
    let status = survivor_bastion.status_json().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status["siblings"]["deregistered"], 1, "{status}");
    assert_eq!(status["siblings"]["marked_unhealthy"], 1, "{status}");
    let deregistered = acted.iter().find(|c| c.action == "DeregisterTargets").unwrap().at;
    eprintln!(
        "FIGURE stock client, crash, docs model (checks 1 s x2, delay 2 s): detection {:.2} s after the kill, \
         deregistration {:.2} s after detection, first reply {:.2} s after detection",
        detected_at - killed_at,
        deregistered.duration_since(detected).as_secs_f64(),
        reply.at - detected_at
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn without_siblings_a_stock_client_stays_stranded_under_the_documented_model() {
    let bed = HaBed::start(&documented(false));
    let CrashUnderLoad { pinger, dead, killed_at, .. } = bed.crash_under_load(600);
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        ping::parse(&pinger.log(), 0).first_reply_after(killed_at + 0.5),
        None,
        "a stock client came back with nobody acting: the model does not keep an unhealthy target's flows\n{}",
        bed.report()
    );
    assert_eq!(bed.serving_target(), Some(dead), "{}", bed.nlb.report());
    assert!(bed.nlb.api_calls().is_empty());
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn under_the_articles_model_the_survivor_takes_the_dead_address_over_and_a_stock_client_recovers() {
    let bed = HaBed::start(&article_with_takeover());
    let CrashUnderLoad { pinger, dead, killed_at, detected } = bed.crash_under_load(600);
    let detected_at = wall_clock() - detected.elapsed().as_secs_f64();
    let reply = wait_until("a reply after the crash", Duration::from_secs(30), || {
        ping::parse(&pinger.log(), 0).first_reply_after(killed_at + 0.5).ok_or_else(|| bed.nlb.report())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    // The load balancer kept the flow on the dead target's address (the article's model); the
    // survivor answers on it.
    assert_eq!(bed.serving_target(), Some(dead), "{}", bed.nlb.report());
    let survivor = std::net::IpAddr::V4(TARGETS[1 - dead].address);
    let calls = bed.nlb.api_calls();
    let acted: Vec<_> = calls.iter().filter(|c| c.action != "DescribeTargetHealth" && c.at >= detected).collect();
    let taken = acted
        .iter()
        .find(|c| c.action == "AssignPrivateIpAddresses" && c.id == IP_TARGETS[dead].to_string() && c.status == 200)
        .unwrap_or_else(|| panic!("no takeover: {acted:#?}\n{}", bed.report()));
    assert!(acted.iter().any(|c| c.action == "DeregisterTargets" && c.id == IP_TARGETS[dead].to_string()));
    // The dead instance (found by its address, before the takeover) is marked for replacement.
    let marked = acted.iter().find(|c| c.action == "SetInstanceHealth").unwrap_or_else(|| panic!("{acted:#?}"));
    assert_eq!(marked.id, instance_id(dead), "{acted:#?}");
    assert!(marked.at <= taken.at, "looked up and marked before the address moved: {acted:#?}");
    assert!(acted.iter().all(|c| c.from == survivor && c.status == 200), "{acted:#?}");
    let survivor_bastion = match &bed.bastions[1 - dead] {
        bastion_tests::ha::HaBastion::Ours(b) => b,
        _ => unreachable!(),
    };
    let log = survivor_bastion.process.log();
    assert!(log.contains(&format!("siblings: took over address {}", IP_TARGETS[dead])), "{log}");
    assert!(
        log.lines().any(|l| l.contains("bastion: audit {") && l.contains(r#""action":"took_over_address""#)),
        "no audit record of the takeover:\n{log}"
    );
    let status = survivor_bastion.status_json().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status["siblings"]["taken_over"], 1, "{status}");
    // The client still talks to the load balancer's address: the survivor's answers left from
    // the address the flow came to, or the load balancer would not have passed them back.
    let tunnel = bed.tunnel.name();
    let endpoints = bed.cluster.topo.clients[0].ns.run(&["wg", "show", tunnel, "endpoints"]);
    assert!(endpoints.contains(&bed.cluster.topo.endpoint_v4().to_string()), "{endpoints}");
    eprintln!(
        "FIGURE stock client, crash, article model, ip targets (checks 1 s x2): detection {:.2} s after the kill, \
         takeover {:.2} s after detection, first reply {:.2} s after detection",
        detected_at - killed_at,
        taken.at.duration_since(detected).as_secs_f64(),
        reply.at - detected_at
    );
}

/// A stock client's requests to the first private host, one every 100 ms.
fn requests_every_100_ms(bed: &HaBed, count: u32) -> ping::Pinger {
    let host = bed.cluster.topo.private_hosts[0].v4.to_string();
    ping::Pinger::start(
        &bed.cluster.topo.clients[0].ns,
        &host,
        Duration::from_millis(100),
        count,
        &bed.dir().join("ping.log"),
    )
}

/// ip targets: Auto Scaling deregisters nothing, so a leaving bastion takes itself out: at
/// SIGTERM (or the lifecycle hook's Terminated) it deregisters its own address, and the lowest
/// healthy sibling of its subnet takes the address over, so the flow a stock client keeps on it
/// goes on there, whatever the load balancer does with a deregistered target's flows.
fn a_leaving_ip_targets_address_is_taken_over(flows: FlowPolicy) {
    let base = documented(true);
    let nlb = NlbParams { flows, ..base.nlb };
    let bed = HaBed::start(&HaOptions { take_over: true, drain_seconds: 6, nlb, ..base });
    let leaving = bed.warm_up();
    let heir = 1 - leaving;
    let pinger = requests_every_100_ms(&bed, 100);
    std::thread::sleep(Duration::from_secs(1));
    let stopped = Instant::now();
    bed.stop(leaving);
    let own = IP_TARGETS[leaving].to_string();
    let call = |action: &str, by: usize| {
        let from = std::net::IpAddr::V4(TARGETS[by].address);
        bed.nlb.api_calls().into_iter().find(|c| c.action == action && c.id == own && c.from == from && c.status == 200)
    };
    let handed = wait_until("the sibling to take the leaving bastion's address over", Duration::from_secs(8), || {
        call("AssignPrivateIpAddresses", heir).ok_or_else(|| format!("{:#?}", bed.nlb.api_calls()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    let deregistered =
        call("DeregisterTargets", leaving).unwrap_or_else(|| panic!("no self-deregistration\n{}", bed.report()));
    let report = pinger.finish(Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    let heir_log = match &bed.bastions[heir] {
        bastion_tests::ha::HaBastion::Ours(b) => b.process.log(),
        _ => unreachable!(),
    };
    assert!(heir_log.contains(&format!("siblings: took over address {own}")), "{heir_log}");
    // The client's datagrams under the leaving bastion's session went to it, its answers came
    // back through the heir, until the client had re-keyed with the heir: nothing lost.
    let leaving_primary = TARGETS[leaving].address;
    let heir_status = match &bed.bastions[heir] {
        bastion_tests::ha::HaBastion::Ours(b) => b.status_json().unwrap_or_else(|e| panic!("{e}")),
        _ => unreachable!(),
    };
    let relayed = heir_status["siblings"]["relayed"].as_u64().unwrap_or_default();
    assert!(relayed > 0, "the heir relayed nothing: {}", heir_status["siblings"]);
    assert!(heir_log.contains(&format!("come to {own} go to {leaving_primary}:")), "{heir_log}");
    assert_eq!(report.lost(), 0, "lost {} of {}:\n{}", report.lost(), report.sent, bed.report());
    eprintln!(
        "FIGURE ip targets, planned stop ({} model, delay 2 s): deregistered itself {:.2} s and its address taken \
         over {:.2} s after SIGTERM, {} datagrams relayed, {} of {} requests lost",
        flows.name(),
        deregistered.at.duration_since(stopped).as_secs_f64(),
        handed.at.duration_since(stopped).as_secs_f64(),
        relayed,
        report.lost(),
        report.sent
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_leaving_ip_targets_address_is_taken_over_and_a_stock_client_goes_on_under_the_documented_model() {
    a_leaving_ip_targets_address_is_taken_over(FlowPolicy::Documented);
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_leaving_ip_targets_address_is_taken_over_and_a_stock_client_goes_on_under_the_articles_model() {
    a_leaving_ip_targets_address_is_taken_over(FlowPolicy::ARTICLE);
}

/// Instance targets: scale-in as Auto Scaling does it (deregistered, the delay, then SIGTERM).
/// Under AWS's documented behaviour the flow ends with the delay and the client's next datagram
/// is a new flow to the other bastion, still under the leaving one's session: the survivor
/// passes it to the leaving bastion, which answers through the survivor until the client has
/// re-keyed there.
#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_survivor_relays_to_a_leaving_instance_target_and_a_stock_client_loses_nothing_at_scale_in() {
    let base = documented(true);
    // The stack's: longer than the survivor's 2 s poll, so that it sees the target draining
    // before its flows move.
    let nlb = NlbParams { deregistration_delay: Duration::from_secs(3), ..base.nlb };
    let bed = HaBed::start(&HaOptions { drain_seconds: 6, nlb, ..base });
    let leaving = bed.warm_up();
    let heir = 1 - leaving;
    let pinger = requests_every_100_ms(&bed, 120);
    std::thread::sleep(Duration::from_secs(1));
    bed.nlb.deregister(leaving);
    std::thread::sleep(nlb.deregistration_delay);
    bed.stop(leaving);
    let report = pinger.finish(Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
    let bastion_tests::ha::HaBastion::Ours(heir_bastion) = &bed.bastions[heir] else { unreachable!() };
    let heir_log = heir_bastion.process.log();
    let leaving_primary = TARGETS[leaving].address;
    assert!(heir_log.contains(&format!("go to {leaving_primary}:")), "{heir_log}");
    // The flow did move: the client's datagrams reached the heir as a new flow.
    assert_eq!(bed.serving_target(), Some(heir), "{}", bed.nlb.report());
    let status = heir_bastion.status_json().unwrap_or_else(|e| panic!("{e}"));
    let relayed = status["siblings"]["relayed"].as_u64().unwrap_or_default();
    assert!(relayed > 0, "the heir relayed nothing: {}", status["siblings"]);
    assert_eq!(report.lost(), 0, "lost {} of {}:\n{}", report.lost(), report.sent, bed.report());
    eprintln!(
        "FIGURE instance targets, planned scale-in (docs model, delay 3 s): {relayed} datagrams relayed, {} of {} \
         requests lost",
        report.lost(),
        report.sent
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_partition_between_bastions_makes_nobody_act() {
    // ip targets with takeover on: neither a deregistration nor a takeover may come of it.
    let bed = HaBed::start(&HaOptions { take_over: true, ..documented(true) });
    bed.partition_bastions();
    // Proof the partition holds: bastion 0 cannot reach bastion 1's health port.
    let target = std::net::SocketAddr::from((TARGETS[1].address, bastion_tests::cluster::HEALTH_PORT));
    assert!(bastion_tests::http::get(bed.cluster.bastion_ns(0), target, "/", Duration::from_secs(1)).is_err());
    let since = Instant::now();
    let window = Duration::from_secs(12);
    std::thread::sleep(window);
    assert!(bed.nlb.is_healthy(0) && bed.nlb.is_healthy(1), "{}", bed.nlb.report());
    let calls = bed.nlb.api_calls();
    // Each bastion registered its own address at its start (register_self); nothing else.
    for (i, address) in IP_TARGETS.iter().enumerate() {
        let from = std::net::IpAddr::V4(TARGETS[i].address);
        let own = |c: &&bastion_tests::nlb::ApiCall| {
            c.action == "RegisterTargets" && c.from == from && c.id == address.to_string() && c.status == 200
        };
        assert_eq!(calls.iter().filter(own).count(), 1, "bastion {i} registers itself once: {calls:#?}");
    }
    let acted: Vec<_> =
        calls.iter().filter(|c| c.action != "DescribeTargetHealth" && c.action != "RegisterTargets").collect();
    assert!(acted.is_empty(), "a partition made a bastion act: {acted:#?}\n{}", bed.report());
    for (i, t) in TARGETS.iter().enumerate() {
        let polls = calls.iter().filter(|c| c.from == std::net::IpAddr::V4(t.address) && c.at >= since).count();
        let log = match &bed.bastions[i] {
            bastion_tests::ha::HaBastion::Ours(b) => b.process.log(),
            _ => unreachable!(),
        };
        assert!(
            log.contains("siblings: the load balancer reports this bastion healthy: acting on dead siblings"),
            "bastion {i} never stood as a healthy target (then nothing would act anyway):\n{log}"
        );
        assert!(log.contains("siblings: network interface eni-"), "bastion {i} takeover not set up:\n{log}");
        assert!(polls >= 3, "bastion {i} polled {polls} times in {window:?}: is it watching?\n{}", bed.report());
        assert!(polls <= 7, "bastion {i} made {polls} calls in {window:?}: more than one per 2 s");
        eprintln!("FIGURE steady state: bastion {i} made {polls} DescribeTargetHealth calls in {} s", window.as_secs());
    }
}

/// A new flow placed on load balancer target `target` is served: the client moves to new ports
/// until one lands there.
fn a_new_flow_is_served_on(bed: &HaBed, target: usize) -> u16 {
    let host = bed.cluster.topo.private_hosts[0].v4.to_string();
    let client = &bed.cluster.topo.clients[0].ns;
    for port in 52_000..52_016u16 {
        bed.tunnel.wg_set(&["listen-port", &port.to_string()]);
        client.ping(&host, Duration::from_secs(10)).unwrap_or_else(|e| panic!("port {port}: {e}\n{}", bed.report()));
        let on = wait_until("the load balancer to track the new flow", Duration::from_secs(5), || {
            bed.serving_target().ok_or_else(|| bed.nlb.report())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        if on == target {
            return port;
        }
    }
    panic!("no new flow landed on target {target} in 16 ports\n{}", bed.report());
}

/// After bastion `back` lost its own address to a sibling (taken over while it drained or was
/// down): it has EC2 assign it a fresh one, registers that, the load balancer finds it healthy
/// there, and a new flow placed there is served.
fn serves_again_at_a_fresh_address(bed: &HaBed, back: usize, since: Instant) {
    let fresh = FREE_TARGETS[0];
    let target = IP_TARGETS.len();
    let from = std::net::IpAddr::V4(TARGETS[back].address);
    wait_until("the bastion to register a fresh address", Duration::from_secs(20), || {
        bed.nlb
            .api_calls()
            .into_iter()
            .find(|c| c.action == "RegisterTargets" && c.id == fresh.to_string() && c.from == from && c.at >= since)
            .ok_or_else(|| format!("{:#?}", bed.nlb.api_calls()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    bed.nlb.wait_healthy(target, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    let HaBastion::Ours(b) = &bed.bastions[back] else { unreachable!() };
    let log = b.process.log();
    assert!(log.contains(&format!("siblings: EC2 assigned {fresh} to ")), "{log}");
    assert!(log.contains(r#""action":"assigned_fresh_address""#), "no audit record:\n{log}");
    // Its old address is off its link (the sibling holds it).
    let on_link = bed.cluster.bastion_ns(back).run(&["ip", "-4", "-o", "addr", "show", "dev", "pub0"]);
    assert!(!on_link.contains(&format!("{}/32", IP_TARGETS[back])), "{on_link}");
    assert!(on_link.contains(&format!("{fresh}/32")), "{on_link}");
    let port = a_new_flow_is_served_on(bed, target);
    eprintln!("FIGURE a new flow (client port {port}) served at the fresh address {fresh}");
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_bastion_back_from_standby_serves_again_at_a_fresh_address_when_a_sibling_took_its_own() {
    let base = documented(true);
    let bed = HaBed::start(&HaOptions { take_over: true, imds_lifecycle: true, drain_seconds: 60, ..base });
    let away = bed.warm_up();
    let sibling = 1 - away;
    let since = Instant::now();
    bed.set_lifecycle(away, "Standby");
    // Standby drains it: it deregisters its address, which its sibling takes over.
    let own = IP_TARGETS[away].to_string();
    let by_sibling = std::net::IpAddr::V4(TARGETS[sibling].address);
    wait_until("the sibling to take the address over", Duration::from_secs(15), || {
        bed.nlb
            .api_calls()
            .into_iter()
            .find(|c| c.action == "AssignPrivateIpAddresses" && c.id == own && c.from == by_sibling && c.status == 200)
            .ok_or_else(|| format!("{:#?}", bed.nlb.api_calls()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    bed.set_lifecycle(away, "InService");
    serves_again_at_a_fresh_address(&bed, away, since);
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_bastion_restarted_on_its_instance_serves_again_at_a_fresh_address_when_a_sibling_took_its_own() {
    let base = documented(true);
    let mut bed = HaBed::start(&HaOptions { take_over: true, ..base });
    let CrashUnderLoad { pinger, dead, detected, .. } = bed.crash_under_load(100);
    let own = IP_TARGETS[dead].to_string();
    wait_until("the survivor to take the dead address over", Duration::from_secs(15), || {
        bed.nlb
            .api_calls()
            .into_iter()
            .find(|c| c.action == "AssignPrivateIpAddresses" && c.id == own && c.at >= detected && c.status == 200)
            .ok_or_else(|| format!("{:#?}", bed.nlb.api_calls()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    drop(pinger);
    let since = Instant::now();
    bed.restart(dead);
    serves_again_at_a_fresh_address(&bed, dead, since);
}

/// A survivor marks the dead instance unhealthy; Auto Scaling (the test bed, 3 s after the
/// call) replaces it; the replacement joins the group (ip targets: it registers the address it
/// came with; instance targets: Auto Scaling registers it), the load balancer finds it healthy,
/// and a new flow placed on it is served. The client recovered meanwhile where anyone could
/// free it (not under the article's model without a takeover).
fn the_marked_instance_is_replaced_and_its_replacement_serves(options: HaOptions) -> HaBed {
    let mut bed = HaBed::start(&options);
    let CrashUnderLoad { pinger, dead, detected, killed_at } = bed.crash_under_load(100);
    let lag = Duration::from_secs(3);
    let r = bed.replace_marked(detected, lag, Duration::from_secs(20));
    assert_eq!(r.slot, dead, "{r:?}");
    let target = match r.address {
        Some(address) => {
            let all: Vec<_> = IP_TARGETS.iter().chain(&FREE_TARGETS).collect();
            all.iter().position(|a| **a == address).expect("a subnet address")
        }
        None => dead,
    };
    bed.nlb.wait_healthy(target, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    let healthy_again = Instant::now();
    let stranded = options.nlb.flows == FlowPolicy::ARTICLE && options.subnets_apart;
    if !stranded {
        assert!(
            ping::parse(&pinger.log(), 0).first_reply_after(killed_at + 0.5).is_some(),
            "no reply after the crash\n{}",
            bed.report()
        );
    }
    let port = a_new_flow_is_served_on(&bed, target);
    eprintln!(
        "FIGURE replacement ({} model, {} targets): marked {:.2} s after detection, launched {:.2} s after the mark, \
         healthy in the group {:.2} s after launch; a new flow (port {port}) served by {}",
        options.nlb.flows.name(),
        if options.take_over { "ip" } else { "instance" },
        r.marked.duration_since(detected).as_secs_f64(),
        r.launched.duration_since(r.marked).as_secs_f64(),
        healthy_again.duration_since(r.launched).as_secs_f64(),
        r.instance,
    );
    bed
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_marked_instance_target_is_replaced_and_its_replacement_serves() {
    the_marked_instance_is_replaced_and_its_replacement_serves(documented(true));
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn with_one_bastion_per_subnet_the_survivor_marks_the_dead_ip_targets_instance_for_replacement() {
    let options = HaOptions { subnets_apart: true, ..article_with_takeover() };
    let bed = the_marked_instance_is_replaced_and_its_replacement_serves(options);
    // Nobody could take the dead address over; the survivor found its instance by the address
    // (EC2) and marked it.
    let calls = bed.nlb.api_calls();
    let dead =
        IP_TARGETS.iter().position(|a| calls.iter().any(|c| c.action == "DeregisterTargets" && c.id == a.to_string()));
    let dead = dead.unwrap_or_else(|| panic!("nothing deregistered: {calls:#?}"));
    let survivor = std::net::IpAddr::V4(TARGETS[1 - dead].address);
    assert!(!calls.iter().any(|c| c.action == "AssignPrivateIpAddresses" && c.id == IP_TARGETS[dead].to_string()));
    let looked_up = calls
        .iter()
        .find(|c| c.action == "DescribeNetworkInterfaces" && c.id == IP_TARGETS[dead].to_string())
        .unwrap_or_else(|| panic!("{calls:#?}"));
    let marked = calls
        .iter()
        .find(|c| c.action == "SetInstanceHealth" && c.id == instance_id(dead))
        .unwrap_or_else(|| panic!("{calls:#?}"));
    assert!(looked_up.from == survivor && marked.from == survivor && marked.at >= looked_up.at, "{calls:#?}");
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_marked_ip_target_is_replaced_and_its_replacement_serves() {
    the_marked_instance_is_replaced_and_its_replacement_serves(article_with_takeover());
}
