//! Stock WireGuard clients (no `bastion watch`) when their bastion dies, behind the NLB model
//! as AWS documents it (`docs`: an unhealthy target keeps its UDP flows; a deregistered one
//! loses them at the end of the deregistration delay): with `[siblings]` the surviving bastion
//! deregisters the dead one, which the load balancer reports unhealthy, and marks its instance
//! unhealthy; the client's next packet is a new flow, on the survivor, which starts the
//! handshake. Without it the client stays stranded. A partition between the bastions makes
//! nobody act.
//!
//! Fast health checks (1 s, thresholds 2) and a 2 s deregistration delay keep the tests short;
//! `make bench-failover` measures with AWS's fastest checks. The tests assert what happens, and
//! print the figures.

use std::time::{Duration, Instant};

use bastion_tests::bastion;
use bastion_tests::cluster::TARGETS;
use bastion_tests::ha::{instance_id, CrashUnderLoad, HaBed, HaOptions};
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
fn a_partition_between_bastions_makes_nobody_act() {
    let bed = HaBed::start(&documented(true));
    bed.partition_bastions();
    // Proof the partition holds: bastion 0 cannot reach bastion 1's health port.
    let target = std::net::SocketAddr::from((TARGETS[1].address, bastion_tests::cluster::HEALTH_PORT));
    assert!(bastion_tests::http::get(bed.cluster.bastion_ns(0), target, "/", Duration::from_secs(1)).is_err());
    let since = Instant::now();
    let window = Duration::from_secs(12);
    std::thread::sleep(window);
    assert!(bed.nlb.is_healthy(0) && bed.nlb.is_healthy(1), "{}", bed.nlb.report());
    let calls = bed.nlb.api_calls();
    let acted: Vec<_> = calls.iter().filter(|c| c.action != "DescribeTargetHealth").collect();
    assert!(acted.is_empty(), "a partition made a bastion act: {acted:#?}\n{}", bed.report());
    for (i, t) in TARGETS.iter().enumerate() {
        let polls = calls.iter().filter(|c| c.from == std::net::IpAddr::V4(t.address) && c.at >= since).count();
        assert!(polls >= 3, "bastion {i} polled {polls} times in {window:?}: is it watching?\n{}", bed.report());
        assert!(polls <= 7, "bastion {i} made {polls} calls in {window:?}: more than one per 2 s");
        eprintln!("FIGURE steady state: bastion {i} made {polls} DescribeTargetHealth calls in {} s", window.as_secs());
    }
}
