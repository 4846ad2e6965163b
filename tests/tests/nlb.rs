//! Failover behind the NLB model (`bastion_tests::nlb`): flows stay on a dead or deregistered
//! target until idle 30 s, as AWS's NLB keeps UDP flows, so a busy stock client is stranded
//! when its bastion dies; `bastion watch` moves it to a new flow, which the load balancer
//! places on the healthy bastion. A planned drain (deregistration + SIGTERM) with `bastion
//! watch` loses no request: the draining bastion asks its peers to move while it still serves.
//!
//! Fast health checks (1 s, thresholds 2) keep the tests short; `make bench-failover` measures
//! with AWS's fastest (5 s, 2). The tests assert that recovery happens, not how fast.

use std::time::Duration;

use bastion_tests::bastion;
use bastion_tests::ha::{start_watch, BastionKind, CrashUnderLoad, HaBastion, HaBed, HaOptions};
use bastion_tests::nlb::{FlowPolicy, NlbParams};
use bastion_tests::ping::{self, Pinger};
use bastion_tests::wait_until;

const STEP: Duration = Duration::from_secs(10);

fn fast_sticky() -> NlbParams {
    NlbParams {
        interval: Duration::from_secs(1),
        check_timeout: Duration::from_millis(800),
        flows: FlowPolicy::STICKY,
        ..NlbParams::default()
    }
}

fn options(watch: bool, drain_seconds: u32) -> HaOptions {
    let binary = bastion::binary();
    HaOptions {
        bastions: BastionKind::Ours(binary.clone()),
        nlb: fast_sticky(),
        watch: watch.then_some(binary),
        keepalive: None,
        drain_seconds,
        imds_lifecycle: false,
        siblings: false,
        take_over: false,
        subnets_apart: false,
    }
}

fn host0(bed: &HaBed) -> String {
    bed.cluster.topo.private_hosts[0].v4.to_string()
}

fn wall_clock() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn sticky_flows_strand_a_stock_client_and_bastion_watch_moves_it() {
    stranded_then_moved(&[]);
}

/// The same through the `wg` tool (the backend for kernel WireGuard; here `wg` itself talks to
/// wireguard-go's socket).
#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn bastion_watch_through_the_wg_tool_moves_a_stranded_client_too() {
    stranded_then_moved(&["--backend", "wg"]);
}

fn stranded_then_moved(watch_args: &[&str]) {
    let bed = HaBed::start(&options(false, 3));
    let CrashUnderLoad { pinger, dead: serving, killed_at, detected } = bed.crash_under_load(600);
    // Sticky: the busy client's flow stays on the dead target; nothing comes back.
    std::thread::sleep(Duration::from_secs(4));
    let stranded = ping::parse(&pinger.log(), 0);
    assert_eq!(
        stranded.first_reply_after(killed_at + 0.5),
        None,
        "a stock client came back by itself {:.1} s after detection: the model does not keep the flow\n{}",
        detected.elapsed().as_secs_f64(),
        bed.report()
    );
    assert_eq!(bed.serving_target(), Some(serving), "the flow is still on the dead target\n{}", bed.nlb.report());

    // bastion watch moves the tunnel to a new flow, which goes to the healthy bastion.
    let watch_started = wall_clock();
    let watch = start_watch(&bed.cluster, &bed.tunnel, &bastion::binary(), watch_args);
    wait_until("a reply after bastion watch started", Duration::from_secs(20), || {
        ping::parse(&pinger.log(), 0).first_reply_after(watch_started).ok_or_else(|| watch.log_report())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    watch.wait_for_log("moved to a new flow: listen port", STEP).unwrap();
    let through = if watch_args.contains(&"wg") { "through the wg tool" } else { "through the API socket" };
    assert!(watch.log().contains(through), "{}", watch.log_report());
    assert_eq!(bed.serving_target(), Some(1 - serving), "{}", bed.nlb.report());
    let recovered = ping::parse(&pinger.log(), 0).first_reply_after(watch_started).unwrap();
    eprintln!(
        "FIGURE first reply {:.2} s after bastion watch started\n{}",
        recovered.at - watch_started,
        watch.log_report()
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_planned_drain_with_bastion_watch_loses_no_request() {
    let bed = HaBed::start(&options(true, 6));
    let serving = bed.warm_up();
    let pinger = Pinger::start(
        &bed.cluster.topo.clients[0].ns,
        &host0(&bed),
        Duration::from_millis(100),
        120,
        &bed.dir().join("ping.log"),
    );
    std::thread::sleep(Duration::from_secs(2));
    bed.drain(serving);
    let watch = bed.watch.as_ref().unwrap();
    watch
        .wait_for_log("(a draining bastion asks its peers to move); moved to a new flow", STEP)
        .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    let report = pinger.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.lost(), 0, "requests lost during the drain ({} sent)\n{}", report.sent, bed.report());
    assert_eq!(bed.serving_target(), Some(1 - serving), "{}", bed.nlb.report());
    wait_until("the drained bastion to exit", STEP, || {
        if bed.is_running(serving) {
            Err("running".into())
        } else {
            Ok(())
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    eprintln!("FIGURE {} requests, {} lost\n{}\n{}", report.sent, report.lost(), watch.log_report(), bed.nlb.report());
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn the_lifecycle_state_in_imds_makes_the_bastion_ask_its_peers_to_move_before_it_stops() {
    let bed = HaBed::start(&HaOptions { imds_lifecycle: true, ..options(true, 30) });
    let serving = bed.warm_up();
    let pinger = Pinger::start(
        &bed.cluster.topo.clients[0].ns,
        &host0(&bed),
        Duration::from_millis(100),
        150,
        &bed.dir().join("ping.log"),
    );
    std::thread::sleep(Duration::from_secs(2));
    // Scale-in: Auto Scaling marks the instance Terminated, then deregisters the target; the
    // power button would come only after the deregistration delay.
    bed.set_lifecycle(serving, "Terminated");
    bed.nlb.deregister(serving);
    let HaBastion::Ours(draining) = &bed.bastions[serving] else { unreachable!() };
    draining
        .process
        .wait_for_log("lifecycle: target-lifecycle-state is Terminated: draining in place", STEP)
        .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    let watch = bed.watch.as_ref().unwrap();
    watch
        .wait_for_log("(a draining bastion asks its peers to move); moved to a new flow", STEP)
        .unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    let report = pinger.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.lost(), 0, "requests lost ({} sent)\n{}", report.sent, bed.report());
    assert_eq!(bed.serving_target(), Some(1 - serving), "{}", bed.nlb.report());
    assert!(bed.is_running(serving), "a lifecycle drain keeps serving until the instance stops");
    assert_eq!(draining.health().map(|r| r.status), Ok(503), "health says draining");
}

/// Standby is not forever: an instance that Auto Scaling puts back in service ends the drain
/// the lifecycle state began, answers 200 again and keeps polling (before, it stayed 503
/// "draining" for good).
#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn back_in_service_after_standby_ends_the_drain() {
    let bed = HaBed::start(&HaOptions { imds_lifecycle: true, ..options(false, 30) });
    let HaBastion::Ours(bastion) = &bed.bastions[0] else { unreachable!() };
    bastion.wait_healthy(STEP).unwrap_or_else(|e| panic!("{e}\n{}", bed.report()));
    for round in 0..2 {
        let offset = bastion.process.log().len();
        bed.set_lifecycle(0, "Standby");
        wait_until("health 503 in standby", STEP, || match bastion.health() {
            Ok(r) if r.status == 503 && r.body.contains("draining") => Ok(()),
            other => Err(format!("{other:?}")),
        })
        .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", bed.report()));
        bed.set_lifecycle(0, "InService");
        bastion
            .process
            .wait_for_log_after(offset, "lifecycle: target-lifecycle-state is InService again: drain ended", STEP)
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", bed.report()));
        bastion.wait_healthy(STEP).unwrap_or_else(|e| panic!("round {round}: {e}\n{}", bed.report()));
    }
}
