//! What an AWS Network Load Balancer decides for UDP, with no I/O: target health from health
//! checks (interval, thresholds), where a new flow may go, and whether a tracked flow stays on
//! its target. Time is passed in (time since the load balancer started), so every rule is a
//! table-driven unit test; [`super::Nlb`] is the shell that runs health checks and edits the
//! kernel's flows.
//!
//! The rules common to every model:
//! - a flow (client address and port) stays on its target until it has been idle
//!   [`NlbParams::flow_idle`] (120 s);
//! - new flows go to healthy registered targets only; when none is healthy, to every registered
//!   target (fail-open);
//! - a deregistered target drains for [`NlbParams::deregistration_delay`], then leaves the group.
//!
//! What happens to the flows of a target that stops serving is where AWS's documentation and
//! the seed article disagree, so it is a choice ([`FlowPolicy`]):
//! - `docs`, as AWS's API reference and user guide say: an unhealthy target keeps its UDP flows
//!   (termination "can't be enabled for UDP"); a deregistered one keeps them until the end of
//!   the deregistration delay, when they are terminated ([`FlowPolicy::Documented`]);
//! - `article`, as the article observed: unhealthy or deregistered, a flow is kept until it has
//!   been idle 30 s, and moved once the target has been out 90 s if another target of its zone
//!   is healthy ([`FlowPolicy::ARTICLE`]; `sticky` is the same without the move);
//! - `flush` is the stand-in the earlier tests used: such flows move at once.

use std::time::Duration;

/// What happens to the flows of a target that stops serving (unhealthy or deregistered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowPolicy {
    /// They move at once: the next packet of each goes to a healthy target.
    Flush,
    /// AWS's documentation: an unhealthy target keeps them; a deregistered one until the end
    /// of the deregistration delay.
    Documented,
    /// They stay until idle `unhealthy_idle`; with `move_after`, they move once the target has
    /// been out that long and another target of its zone is healthy.
    Sticky { unhealthy_idle: Duration, move_after: Option<Duration> },
}

impl FlowPolicy {
    /// What NLB does by the article's observation: kept until idle 30 s, never moved.
    pub const STICKY: FlowPolicy = FlowPolicy::Sticky { unhealthy_idle: Duration::from_secs(30), move_after: None };
    /// The article's model: the same, with active flows moved after 90 s when the zone has
    /// another healthy target.
    pub const ARTICLE: FlowPolicy =
        FlowPolicy::Sticky { unhealthy_idle: Duration::from_secs(30), move_after: Some(Duration::from_secs(90)) };

    /// `docs`, `article`, `flush` or `sticky` (bench and demo options).
    pub fn parse(text: &str) -> Result<FlowPolicy, String> {
        match text {
            "docs" => Ok(FlowPolicy::Documented),
            "article" | "sticky-moving" => Ok(FlowPolicy::ARTICLE),
            "flush" => Ok(FlowPolicy::Flush),
            "sticky" => Ok(FlowPolicy::STICKY),
            other => Err(format!("unknown load balancer model {other:?}: expected docs, article, flush or sticky")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            FlowPolicy::Flush => "flush",
            FlowPolicy::Documented => "docs",
            FlowPolicy::Sticky { move_after: None, .. } => "sticky",
            FlowPolicy::Sticky { move_after: Some(_), .. } => "article",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct NlbParams {
    /// Between two health checks of a target (AWS: 5–300 s).
    pub interval: Duration,
    /// Consecutive passed checks that make a target healthy (AWS: 2–10).
    pub healthy_threshold: u32,
    /// Consecutive failed checks that make a target unhealthy (AWS: 2–10).
    pub unhealthy_threshold: u32,
    /// How long one check may take.
    pub check_timeout: Duration,
    /// A flow with no packet for this long is forgotten (AWS: 120 s for UDP, fixed).
    pub flow_idle: Duration,
    /// How long a deregistered target drains (AWS: 0–3600 s, 300 by default; the stack sets
    /// it).
    pub deregistration_delay: Duration,
    pub flows: FlowPolicy,
}

impl Default for NlbParams {
    /// AWS's fastest settings: a check every 5 s, 2 to change state; the sticky flows.
    fn default() -> NlbParams {
        NlbParams {
            interval: Duration::from_secs(5),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            check_timeout: Duration::from_secs(2),
            flow_idle: Duration::from_secs(120),
            deregistration_delay: Duration::from_secs(3),
            flows: FlowPolicy::STICKY,
        }
    }
}

#[derive(Clone, Debug)]
struct TargetState {
    zone: usize,
    registered: bool,
    healthy: bool,
    /// Consecutive checks with the same result, as long as it differs from `healthy`.
    streak: u32,
    /// Since when the target has not been serving (unhealthy or deregistered).
    out_since: Option<Duration>,
    /// When it was deregistered (while it is not registered).
    deregistered_at: Option<Duration>,
    /// Registered and not yet through its first checks.
    initial: bool,
}

/// A target's health as DescribeTargetHealth reports it: `(State, Reason)`.
pub type ReportedHealth = (&'static str, &'static str);

/// A change of a target's health, for the log and the bench's "LB detection".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthChange {
    pub target: usize,
    pub healthy: bool,
}

/// What to do with one tracked flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowVerdict {
    Keep,
    /// Forget it: its next packet is a new flow, placed on a serving target.
    Forget(ForgetReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForgetReason {
    /// No packet for `flow_idle`.
    Idle,
    /// Its target is out and the policy moves such flows at once.
    Flushed,
    /// Its target is out and the flow has been idle `unhealthy_idle`.
    IdleOnUnhealthy,
    /// Its target has been out `move_after` and its zone has another healthy target.
    MovedInZone,
    /// Its target was deregistered and the deregistration delay is over (`docs`).
    Terminated,
}

pub struct NlbModel {
    params: NlbParams,
    targets: Vec<TargetState>,
}

impl NlbModel {
    /// Targets registered in `zones[i]`'s zone, not yet healthy (they pass `healthy_threshold`
    /// checks first, as a newly registered target does).
    pub fn new(params: NlbParams, zones: &[usize]) -> NlbModel {
        let targets = zones
            .iter()
            .map(|&zone| TargetState {
                zone,
                registered: true,
                healthy: false,
                streak: 0,
                out_since: Some(Duration::ZERO),
                deregistered_at: None,
                initial: true,
            })
            .collect();
        NlbModel { params, targets }
    }

    pub fn params(&self) -> &NlbParams {
        &self.params
    }

    pub fn is_healthy(&self, target: usize) -> bool {
        self.targets[target].healthy
    }

    /// One health check's result.
    pub fn record_check(&mut self, target: usize, passed: bool, now: Duration) -> Option<HealthChange> {
        let threshold = if passed { self.params.healthy_threshold } else { self.params.unhealthy_threshold };
        let t = &mut self.targets[target];
        if passed == t.healthy {
            t.streak = 0;
            return None;
        }
        t.streak += 1;
        if t.streak < threshold {
            return None;
        }
        t.streak = 0;
        t.healthy = passed;
        t.initial = false;
        if t.registered {
            t.out_since = if passed { None } else { Some(now) };
        }
        Some(HealthChange { target, healthy: passed })
    }

    /// Takes the target out of the group (scale-in, instance refresh): no new flows; its flows
    /// are treated as those of an unhealthy target.
    pub fn deregister(&mut self, target: usize, now: Duration) {
        let t = &mut self.targets[target];
        if t.registered {
            t.registered = false;
            t.out_since.get_or_insert(now);
            t.deregistered_at = Some(now);
        }
    }

    /// Makes `target` one that was never registered (an address a bastion may register later):
    /// not reported, no flows.
    pub fn never_registered(&mut self, target: usize) {
        let t = &mut self.targets[target];
        t.registered = false;
        t.deregistered_at = None;
    }

    /// Puts the target (back) into the group: it is `initial` until it passes its checks.
    pub fn register(&mut self, target: usize, now: Duration) {
        let t = &mut self.targets[target];
        if !t.registered {
            *t = TargetState {
                zone: t.zone,
                registered: true,
                healthy: false,
                streak: 0,
                out_since: Some(now),
                deregistered_at: None,
                initial: true,
            };
        }
    }

    /// What DescribeTargetHealth says of `target` at `now`; `None` once it has left the group
    /// (deregistered and drained).
    pub fn reported_health(&self, target: usize, now: Duration) -> Option<ReportedHealth> {
        let t = &self.targets[target];
        Some(match (t.registered, t.healthy, t.initial) {
            (false, _, _) => {
                let since = t.deregistered_at?;
                if now.saturating_sub(since) >= self.params.deregistration_delay {
                    return None;
                }
                ("draining", "Target.DeregistrationInProgress")
            }
            (true, true, _) => ("healthy", ""),
            (true, false, true) => ("initial", "Elb.InitialHealthChecking"),
            (true, false, false) => ("unhealthy", "Target.FailedHealthChecks"),
        })
    }

    fn serving(&self, target: usize) -> bool {
        let t = &self.targets[target];
        t.registered && t.healthy
    }

    fn failing_open(&self) -> bool {
        !self.targets.iter().any(|t| t.registered && t.healthy)
    }

    /// The targets a new flow may be placed on (hashed over them by the shell).
    pub fn new_flow_targets(&self) -> Vec<usize> {
        let open = self.failing_open();
        (0..self.targets.len()).filter(|&i| self.targets[i].registered && (open || self.targets[i].healthy)).collect()
    }

    /// Whether a flow on `target`, idle for `idle`, stays there.
    pub fn flow_verdict(&self, target: usize, idle: Duration, now: Duration) -> FlowVerdict {
        if idle >= self.params.flow_idle {
            return FlowVerdict::Forget(ForgetReason::Idle);
        }
        let t = &self.targets[target];
        if self.serving(target) || (t.registered && self.failing_open()) {
            return FlowVerdict::Keep;
        }
        match self.params.flows {
            FlowPolicy::Flush => FlowVerdict::Forget(ForgetReason::Flushed),
            FlowPolicy::Documented => match t.deregistered_at {
                Some(at) if now.saturating_sub(at) >= self.params.deregistration_delay => {
                    FlowVerdict::Forget(ForgetReason::Terminated)
                }
                _ => FlowVerdict::Keep,
            },
            FlowPolicy::Sticky { unhealthy_idle, move_after } => {
                if idle >= unhealthy_idle {
                    return FlowVerdict::Forget(ForgetReason::IdleOnUnhealthy);
                }
                let out_for = now.saturating_sub(t.out_since.unwrap_or(now));
                let zone_has_another =
                    (0..self.targets.len()).any(|i| i != target && self.targets[i].zone == t.zone && self.serving(i));
                match move_after {
                    Some(after) if out_for >= after && zone_has_another => {
                        FlowVerdict::Forget(ForgetReason::MovedInZone)
                    }
                    _ => FlowVerdict::Keep,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    /// Two targets in different zones, both healthy after two passed checks each.
    fn healthy_pair(flows: FlowPolicy, zones: &[usize]) -> NlbModel {
        let mut m = NlbModel::new(NlbParams { flows, ..NlbParams::default() }, zones);
        for t in 0..zones.len() {
            assert_eq!(m.record_check(t, true, s(0)), None);
            assert_eq!(m.record_check(t, true, s(5)), Some(HealthChange { target: t, healthy: true }));
        }
        m
    }

    #[test]
    fn a_target_never_registered_is_not_reported_until_it_is_registered() {
        let mut m = healthy_pair(FlowPolicy::Documented, &[0, 1, 0]);
        m.never_registered(2);
        assert_eq!(m.reported_health(2, s(10)), None);
        assert_eq!(m.new_flow_targets(), vec![0, 1]);
        m.register(2, s(20));
        assert_eq!(m.reported_health(2, s(20)), Some(("initial", "Elb.InitialHealthChecking")));
        m.record_check(2, true, s(21));
        assert_eq!(m.record_check(2, true, s(22)), Some(HealthChange { target: 2, healthy: true }));
        assert_eq!(m.new_flow_targets(), vec![0, 1, 2]);
    }

    #[test]
    fn health_changes_after_the_threshold_of_consecutive_results() {
        let mut m = healthy_pair(FlowPolicy::STICKY, &[0, 1]);
        // One failure, then a pass: the streak starts again.
        assert_eq!(m.record_check(0, false, s(10)), None);
        assert_eq!(m.record_check(0, true, s(15)), None);
        assert_eq!(m.record_check(0, false, s(20)), None);
        assert_eq!(m.record_check(0, false, s(25)), Some(HealthChange { target: 0, healthy: false }));
        assert_eq!(m.record_check(0, false, s(30)), None, "no second change");
        assert_eq!(m.new_flow_targets(), vec![1]);
        assert_eq!(m.record_check(0, true, s(35)), None);
        assert_eq!(m.record_check(0, true, s(40)), Some(HealthChange { target: 0, healthy: true }));
        assert_eq!(m.new_flow_targets(), vec![0, 1]);
    }

    #[test]
    fn new_flows_fail_open_when_no_target_is_healthy() {
        let m = NlbModel::new(NlbParams::default(), &[0, 1]);
        assert_eq!(m.new_flow_targets(), vec![0, 1], "nothing healthy yet: every registered target");
        let mut m = healthy_pair(FlowPolicy::STICKY, &[0, 1]);
        m.deregister(1, s(10));
        for now in [10, 15] {
            m.record_check(0, false, s(now));
        }
        assert_eq!(m.new_flow_targets(), vec![0], "fail-open covers registered targets only");
        assert_eq!(m.flow_verdict(0, s(1), s(16)), FlowVerdict::Keep, "failing open, the flow stays");
    }

    #[test]
    fn flows_of_a_target_that_stops_serving() {
        use FlowVerdict::*;
        use ForgetReason::*;
        // (policy, zones, how target 0 stops serving at 20 s, idle, now, verdict)
        type Case = (FlowPolicy, &'static [usize], &'static str, u64, u64, FlowVerdict);
        let cases: &[Case] = &[
            (FlowPolicy::STICKY, &[0, 1], "healthy", 119, 30, Keep),
            (FlowPolicy::STICKY, &[0, 1], "healthy", 120, 30, Forget(Idle)),
            (FlowPolicy::Flush, &[0, 1], "unhealthy", 0, 20, Forget(Flushed)),
            (FlowPolicy::Flush, &[0, 1], "deregistered", 0, 20, Forget(Flushed)),
            (FlowPolicy::STICKY, &[0, 1], "unhealthy", 29, 200, Keep),
            (FlowPolicy::STICKY, &[0, 1], "unhealthy", 30, 50, Forget(IdleOnUnhealthy)),
            (FlowPolicy::STICKY, &[0, 1], "deregistered", 29, 200, Keep),
            (FlowPolicy::STICKY, &[0, 1], "deregistered", 30, 50, Forget(IdleOnUnhealthy)),
            // Moving needs another healthy target in the same zone, and 90 s out.
            (FlowPolicy::ARTICLE, &[0, 1], "unhealthy", 1, 200, Keep),
            (FlowPolicy::ARTICLE, &[0, 0], "unhealthy", 1, 109, Keep),
            (FlowPolicy::ARTICLE, &[0, 0], "unhealthy", 1, 110, Forget(MovedInZone)),
            (FlowPolicy::ARTICLE, &[0, 0], "deregistered", 1, 110, Forget(MovedInZone)),
            // AWS's documentation: unhealthy keeps UDP flows until they idle out (120 s);
            // deregistered keeps them until the delay (3 s here) is over, however busy.
            (FlowPolicy::Documented, &[0, 0], "unhealthy", 119, 500, Keep),
            (FlowPolicy::Documented, &[0, 0], "unhealthy", 120, 500, Forget(Idle)),
            (FlowPolicy::Documented, &[0, 1], "deregistered", 0, 22, Keep),
            (FlowPolicy::Documented, &[0, 1], "deregistered", 0, 23, Forget(Terminated)),
        ];
        for &(policy, zones, how, idle, now, verdict) in cases {
            let mut m = healthy_pair(policy, zones);
            match how {
                "unhealthy" => {
                    m.record_check(0, false, s(15));
                    m.record_check(0, false, s(20));
                }
                "deregistered" => m.deregister(0, s(20)),
                _ => {}
            }
            assert_eq!(m.flow_verdict(0, s(idle), s(now)), verdict, "{policy:?} {zones:?} {how} idle {idle} at {now}");
            assert_eq!(m.flow_verdict(1, s(0), s(now)), Keep, "the other target's flows stay");
        }
    }

    #[test]
    fn policies_parse_and_name_themselves() {
        for name in ["docs", "article", "flush", "sticky"] {
            assert_eq!(FlowPolicy::parse(name).unwrap().name(), name);
        }
        assert_eq!(FlowPolicy::parse("sticky-moving"), Ok(FlowPolicy::ARTICLE), "the earlier name");
        assert!(FlowPolicy::parse("round-robin").unwrap_err().contains("expected docs, article"));
    }

    #[test]
    fn describe_target_health_states_through_a_target_life() {
        let mut m = NlbModel::new(NlbParams::default(), &[0, 1]);
        assert_eq!(m.reported_health(0, s(0)), Some(("initial", "Elb.InitialHealthChecking")));
        m.record_check(0, true, s(0));
        m.record_check(0, true, s(5));
        assert_eq!(m.reported_health(0, s(5)), Some(("healthy", "")));
        m.record_check(0, false, s(10));
        m.record_check(0, false, s(15));
        assert_eq!(m.reported_health(0, s(15)), Some(("unhealthy", "Target.FailedHealthChecks")));
        m.deregister(0, s(16));
        assert_eq!(m.reported_health(0, s(18)), Some(("draining", "Target.DeregistrationInProgress")));
        assert_eq!(m.reported_health(0, s(19)), None, "3 s later it has left the group");
        assert!(!m.new_flow_targets().contains(&0));
        m.register(0, s(30));
        assert_eq!(m.reported_health(0, s(30)), Some(("initial", "Elb.InitialHealthChecking")));
        m.record_check(0, true, s(30));
        m.record_check(0, true, s(35));
        assert_eq!(m.reported_health(0, s(35)), Some(("healthy", "")));
    }
}
