//! A running stand-in for an AWS Network Load Balancer in front of a [`crate::Cluster`]: the
//! decisions are [`model::NlbModel`]'s; this shell runs the health checks (HTTP `GET /` to each
//! target's health port from the load balancer's namespace, one thread per target), places new
//! flows by rewriting the listener's DNAT rule (a hash of the client's address and port over the
//! targets the model allows, as NLB hashes a flow), and every [`SWEEP`] reads the kernel's
//! tracked flows (`conntrack -L`) and forgets those the model says to (`conntrack -D`).
//!
//! A flow's idle time is read from conntrack's countdown: the load balancer's UDP timeouts are
//! set to the model's `flow_idle`, and every packet restarts the countdown, so idle =
//! `flow_idle` − remaining (to the second). Everything the load balancer decides is kept as
//! [`NlbEvent`]s with their time, for failure messages and for the failover bench.

pub mod api;
pub mod model;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use api::{ApiCall, ApiSetup, NetworkInterface};
pub use model::{FlowPolicy, FlowVerdict, ForgetReason, HealthChange, NlbModel, NlbParams};

use crate::netns::Netns;
use crate::topology::LISTEN_PORT;

/// How often the tracked flows are compared with the model.
pub const SWEEP: Duration = Duration::from_millis(200);

/// One decision of the load balancer, with when it was made.
#[derive(Clone, Debug)]
pub struct NlbEvent {
    pub at: Instant,
    pub what: NlbEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NlbEventKind {
    Health(HealthChange),
    Deregistered(usize),
    /// A tracked flow was forgotten; its next packet is placed anew.
    Forgot {
        client: SocketAddrV4,
        target: usize,
        reason: ForgetReason,
    },
    /// A flow seen for the first time (to within one sweep).
    NewFlow {
        client: SocketAddrV4,
        target: usize,
    },
}

/// A flow the kernel tracks for the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub client: SocketAddrV4,
    /// Index of the target it is NATed to (`None`: an address that is no target).
    pub target: Option<usize>,
    /// Seconds of conntrack's countdown left.
    pub remaining: u64,
}

struct Shared {
    model: Mutex<NlbModel>,
    lb: Netns,
    vip: Ipv4Addr,
    targets: Vec<SocketAddr>,
    started: Instant,
    stop: AtomicBool,
    events: Mutex<Vec<NlbEvent>>,
    /// The targets the listener rule currently hashes over.
    placed: Mutex<Vec<usize>>,
    /// The AWS API calls answered ([`api`]).
    api_calls: Mutex<Vec<ApiCall>>,
    /// What the API emulator holds, once it runs.
    cloud: std::sync::OnceLock<Arc<api::Cloud>>,
}

/// The running load balancer; dropping it stops its threads (the rules stay with the namespace).
pub struct Nlb {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Nlb {
    /// Takes over the listener of the load balancer in `lb` (its table `ip nlb`, chain
    /// `listener`): `targets[i]` is target i's WireGuard address (its health port is
    /// `health_port`), in zone `zones[i]`.
    pub fn start(
        lb: &Netns,
        vip: Ipv4Addr,
        targets: &[Ipv4Addr],
        health_port: u16,
        zones: &[usize],
        params: NlbParams,
    ) -> Nlb {
        assert_eq!(targets.len(), zones.len(), "one zone per target");
        let idle = params.flow_idle.as_secs().to_string();
        lb.sysctl("net.netfilter.nf_conntrack_udp_timeout", &idle);
        lb.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream", &idle);
        // A dead target's "port unreachable" would reach the client; an instance that is gone
        // answers nothing.
        nft(lb, "add rule ip nlb forward iifname \"br0\" icmp type destination-unreachable drop\n");
        let shared = Arc::new(Shared {
            model: Mutex::new(NlbModel::new(params, zones)),
            lb: Netns::borrowed(lb.name()),
            vip,
            targets: targets.iter().map(|&a| SocketAddr::from((a, health_port))).collect(),
            started: Instant::now(),
            stop: AtomicBool::new(false),
            events: Mutex::new(Vec::new()),
            placed: Mutex::new(Vec::new()),
            api_calls: Mutex::new(Vec::new()),
            cloud: std::sync::OnceLock::new(),
        });
        shared.place_new_flows(&shared.model.lock().unwrap());
        let mut threads = Vec::new();
        for target in 0..targets.len() {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || shared.check_loop(target)));
        }
        let sweeper = shared.clone();
        threads.push(std::thread::spawn(move || sweeper.sweep_loop()));
        Nlb { shared, threads }
    }

    pub fn params(&self) -> NlbParams {
        *self.shared.model.lock().unwrap().params()
    }

    pub fn is_healthy(&self, target: usize) -> bool {
        self.shared.model.lock().unwrap().is_healthy(target)
    }

    /// Waits until the load balancer's checks have made `target` healthy.
    pub fn wait_healthy(&self, target: usize, timeout: Duration) -> Result<(), String> {
        crate::wait_until(&format!("the load balancer to find target {target} healthy"), timeout, || {
            if self.is_healthy(target) {
                Ok(())
            } else {
                Err(self.report())
            }
        })
    }

    /// Deregisters `target`, as scale-in or an instance refresh does.
    pub fn deregister(&self, target: usize) {
        let model = &mut self.shared.model.lock().unwrap();
        model.deregister(target, self.shared.started.elapsed());
        self.shared.event(NlbEventKind::Deregistered(target));
        self.shared.place_new_flows(model);
    }

    /// Answers the bastions' AWS calls about the target group on `listen` (an address of the
    /// load balancer's namespace), from this model, until the load balancer is dropped.
    pub fn serve_api(&mut self, listen: SocketAddr, setup: ApiSetup) {
        self.threads.push(api::serve(self.shared.clone(), listen, setup));
    }

    /// Auto Scaling replaces the instance of target slot `slot` with `instance`
    /// ([`api::replace_instance`]); with ip targets, the address the new instance comes with.
    pub fn replace_instance(&self, slot: usize, instance: &str) -> Option<Ipv4Addr> {
        api::replace_instance(&self.shared, slot, instance)
    }

    /// The AWS calls answered so far.
    pub fn api_calls(&self) -> Vec<ApiCall> {
        self.shared.api_calls.lock().unwrap().clone()
    }

    /// Makes `target` an address no target was registered at yet (one EC2 may assign a bastion,
    /// which registers it itself).
    pub fn never_registered(&self, target: usize) {
        let model = &mut self.shared.model.lock().unwrap();
        model.never_registered(target);
        self.shared.place_new_flows(model);
    }

    /// Registers `target` again (a replacement instance, or a test putting it back).
    pub fn register(&self, target: usize) {
        let model = &mut self.shared.model.lock().unwrap();
        model.register(target, self.shared.started.elapsed());
        self.shared.place_new_flows(model);
    }

    pub fn events(&self) -> Vec<NlbEvent> {
        self.shared.events.lock().unwrap().clone()
    }

    /// When the load balancer first found `target` unhealthy at or after `since`.
    pub fn detected_unhealthy(&self, target: usize, since: Instant) -> Option<Instant> {
        let unhealthy = NlbEventKind::Health(HealthChange { target, healthy: false });
        self.events().into_iter().find(|e| e.at >= since && e.what == unhealthy).map(|e| e.at)
    }

    /// When a flow from `client_ip` first showed up on `target` at or after `since`.
    pub fn new_flow_on(&self, client_ip: Ipv4Addr, target: usize, since: Instant) -> Option<Instant> {
        self.events().into_iter().find_map(|e| match e.what {
            NlbEventKind::NewFlow { client, target: t }
                if e.at >= since && t == target && *client.ip() == client_ip =>
            {
                Some(e.at)
            }
            _ => None,
        })
    }

    /// The flows the kernel tracks for the listener now.
    pub fn flows(&self) -> Vec<Flow> {
        self.shared.flows()
    }

    /// The target the flow from `client` is on, if the load balancer tracks one.
    pub fn target_of(&self, client: SocketAddrV4) -> Option<usize> {
        self.flows().into_iter().find(|f| f.client == client).and_then(|f| f.target)
    }

    /// The events, the rules and the flows, for failure messages.
    pub fn report(&self) -> String {
        let started = self.shared.started;
        let events: Vec<String> = self
            .events()
            .iter()
            .map(|e| format!("  {:7.2} s {:?}", e.at.duration_since(started).as_secs_f64(), e.what))
            .collect();
        let model = self.shared.model.lock().unwrap();
        let health: Vec<String> =
            (0..self.shared.targets.len()).map(|t| format!("{t}: {}", model.is_healthy(t))).collect();
        format!(
            "--- load balancer ({}; healthy {}) ---\n{}\nnew flows to {:?}\nflows: {:?}",
            model.params().flows.name(),
            health.join(", "),
            events.join("\n"),
            self.shared.placed.lock().unwrap(),
            self.shared.flows()
        )
    }
}

impl Drop for Nlb {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn event(&self, what: NlbEventKind) {
        self.events.lock().unwrap().push(NlbEvent { at: Instant::now(), what });
    }

    /// Sleeps `duration`, waking early when told to stop; false once stopped.
    fn nap(&self, duration: Duration) -> bool {
        let until = Instant::now() + duration;
        while !self.stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        false
    }

    fn check_loop(&self, target: usize) {
        let (interval, timeout) = {
            let model = self.model.lock().unwrap();
            (model.params().interval, model.params().check_timeout)
        };
        loop {
            let started = Instant::now();
            let passed =
                matches!(crate::http::get(&self.lb, self.targets[target], "/", timeout), Ok(r) if r.status == 200);
            {
                let model = &mut self.model.lock().unwrap();
                if let Some(change) = model.record_check(target, passed, self.started.elapsed()) {
                    self.event(NlbEventKind::Health(change));
                    self.place_new_flows(model);
                }
            }
            if !self.nap(interval.saturating_sub(started.elapsed())) {
                return;
            }
        }
    }

    fn sweep_loop(&self) {
        let mut seen = std::collections::HashSet::new();
        while self.nap(SWEEP) {
            let flows = self.flows();
            for flow in &flows {
                if let Some(target) = flow.target {
                    if seen.insert((flow.client, target)) {
                        self.event(NlbEventKind::NewFlow { client: flow.client, target });
                    }
                }
            }
            seen.retain(|&(client, target)| flows.iter().any(|f| f.client == client && f.target == Some(target)));
            let model = self.model.lock().unwrap();
            let idle_after = model.params().flow_idle.as_secs();
            let now = self.started.elapsed();
            for flow in flows {
                let Some(target) = flow.target else { continue };
                let idle = Duration::from_secs(idle_after.saturating_sub(flow.remaining));
                if let FlowVerdict::Forget(reason) = model.flow_verdict(target, idle, now) {
                    self.forget(flow.client);
                    self.event(NlbEventKind::Forgot { client: flow.client, target, reason });
                }
            }
        }
    }

    /// Points the listener's rule at the targets the model allows for new flows.
    fn place_new_flows(&self, model: &NlbModel) {
        let targets = model.new_flow_targets();
        let mut placed = self.placed.lock().unwrap();
        if *placed == targets && !targets.is_empty() {
            return;
        }
        let address = |t: usize| self.targets[t].ip().to_string();
        let head = format!("add rule ip nlb listener ip daddr {} udp dport {LISTEN_PORT}", self.vip);
        let rule = match targets.as_slice() {
            [] => format!("{head} drop\n"),
            [one] => format!("{head} dnat to {}\n", address(*one)),
            many => {
                let map: Vec<String> = many.iter().enumerate().map(|(i, &t)| format!("{i} : {}", address(t))).collect();
                format!(
                    "{head} dnat to jhash ip saddr . udp sport mod {} seed 0x5eed map {{ {} }}\n",
                    many.len(),
                    map.join(", ")
                )
            }
        };
        nft(&self.lb, &format!("flush chain ip nlb listener\n{rule}"));
        *placed = targets;
    }

    fn flows(&self) -> Vec<Flow> {
        let out = self.lb.exec(&[
            "conntrack",
            "-L",
            "-p",
            "udp",
            "--orig-dst",
            &self.vip.to_string(),
            "--dport",
            &LISTEN_PORT.to_string(),
        ]);
        out.stdout.lines().filter_map(|line| parse_flow(line, &self.targets)).collect()
    }

    fn forget(&self, client: SocketAddrV4) {
        self.lb.exec(&[
            "conntrack",
            "-D",
            "-p",
            "udp",
            "--orig-src",
            &client.ip().to_string(),
            "--sport",
            &client.port().to_string(),
            "--orig-dst",
            &self.vip.to_string(),
            "--dport",
            &LISTEN_PORT.to_string(),
        ]);
    }
}

fn nft(lb: &Netns, script: &str) {
    let out = lb.exec_with_input(&["nft", "-f", "-"], script.as_bytes());
    assert!(out.success(), "nft in the load balancer: {out}\nscript:\n{script}");
}

/// One line of `conntrack -L`:
/// `udp 17 117 src=C dst=VIP sport=P dport=51820 [UNREPLIED] src=T dst=C sport=51820 dport=P ...`.
fn parse_flow(line: &str, targets: &[SocketAddr]) -> Option<Flow> {
    let mut words = line.split_whitespace();
    if words.next()? != "udp" {
        return None;
    }
    words.next()?;
    let remaining = words.next()?.parse().ok()?;
    let field = |name: &str, nth: usize| {
        line.split_whitespace().filter_map(|w| w.strip_prefix(name)).nth(nth).map(str::to_string)
    };
    let client = SocketAddrV4::new(field("src=", 0)?.parse().ok()?, field("sport=", 0)?.parse().ok()?);
    let reply_source: Ipv4Addr = field("src=", 1)?.parse().ok()?;
    let target = targets.iter().position(|t| t.ip() == reply_source);
    Some(Flow { client, target, remaining })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_lines_are_read() {
        let targets: Vec<SocketAddr> =
            ["198.51.100.11:8080", "198.51.100.12:8080"].iter().map(|a| a.parse().unwrap()).collect();
        let line = "udp      17 117 src=192.0.2.10 dst=192.0.2.1 sport=41000 dport=51820 src=198.51.100.12 \
                    dst=192.0.2.10 sport=51820 dport=41000 [ASSURED] mark=0 use=1";
        let flow = parse_flow(line, &targets).unwrap();
        assert_eq!(flow, Flow { client: "192.0.2.10:41000".parse().unwrap(), target: Some(1), remaining: 117 });
        let unreplied = "udp      17 29 src=192.0.2.10 dst=192.0.2.1 sport=41000 dport=51820 [UNREPLIED] \
                         src=198.51.100.11 dst=192.0.2.10 sport=51820 dport=41000 mark=0 use=1";
        assert_eq!(parse_flow(unreplied, &targets).unwrap().target, Some(0));
        assert_eq!(parse_flow("conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown.", &targets), None);
    }
}
