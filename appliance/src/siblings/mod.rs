//! `[siblings]`: a bastion that takes a dead sibling out of the load balancer, so that stock
//! WireGuard clients (the official apps, with no helper beside them) recover on their own.
//!
//! Every [`Siblings::poll_seconds`] (2 s by default: one DescribeTargetHealth call per bastion)
//! it reads the target group's health as the load balancer sees it; [`plan::Planner`] decides
//! (no I/O); this shell makes the calls (ELBv2 DeregisterTargets, Auto Scaling
//! SetInstanceHealth), logs each with its reason, and backs off (init's `Backoff`, doubling
//! to 60 s) while AWS
//! answers with errors. Which targets are this bastion comes from IMDS (its instance id and
//! private IPv4 address), so the same config serves every bastion of the group.
//!
//! The endpoints are AWS's own in the target group's region, or `[aws] endpoint_url`;
//! credentials come from the standard chain (on EC2: the instance role).

pub mod plan;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bastion_aws::{Client, Environment};

use crate::config::{Aws, Siblings};
use crate::init::backoff::Backoff;
use crate::log;
use plan::{Action, Planner, Standing, Target};

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the poller has done, for `bastion status` and the metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Targets this bastion deregistered.
    pub deregistered: AtomicU64,
    /// Instances this bastion marked unhealthy.
    pub marked_unhealthy: AtomicU64,
    /// Rounds that failed (AWS unreachable, denied, throttled past its retries).
    pub failures: AtomicU64,
}

/// Starts the poller when `[siblings] target_group_arn` is set (counting into `counters`); it
/// runs until the process ends.
pub fn start(
    siblings: &Siblings,
    aws: &Aws,
    counters: Arc<Counters>,
    recorder: crate::audit::Recorder,
) -> Option<JoinHandle<()>> {
    let arn = siblings.target_group_arn.clone()?;
    let region = crate::config::values::region_of_arn(&arn).unwrap_or_default().to_string();
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    if let Some(url) = &aws.endpoint_url {
        vars.push(("AWS_ENDPOINT_URL_ELASTICLOADBALANCING".into(), url.clone()));
        vars.push(("AWS_ENDPOINT_URL_AUTOSCALING".into(), url.clone()));
    }
    let env = Environment::from_vars(vars);
    let poll = Duration::from_secs(siblings.poll_seconds);
    let mark_unhealthy = siblings.mark_unhealthy;
    // Resource names, no secrets: shown whole rather than as key-like text.
    crate::keys::show_in_diagnostics(&arn);
    log!(
        "siblings: watching target group {arn} every {} s (a target the load balancer reports unhealthy is \
         deregistered{})",
        poll.as_secs(),
        if mark_unhealthy { " and its instance marked unhealthy" } else { "" }
    );
    Some(std::thread::spawn(move || run(Client::new(env, region), &arn, poll, mark_unhealthy, &counters, recorder)))
}

/// Whether `id` has the shape of an EC2 instance id (`i-` and 8 or 17 hex digits).
pub fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// This bastion's ids as a target can be registered: its instance id and private IPv4.
fn own_ids(env: &Environment) -> Result<Vec<String>, String> {
    let imds = bastion_aws::imds::Imds::new(&env.imds_endpoint());
    let mut ids = Vec::new();
    for path in ["meta-data/instance-id", "meta-data/local-ipv4"] {
        match imds.get(path) {
            Ok(text) if !text.trim().is_empty() && text.trim().len() < 64 => ids.push(text.trim().to_string()),
            Ok(_) => {}
            Err(bastion_aws::imds::ImdsError::NotFound(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    if ids.is_empty() {
        return Err("IMDS has neither meta-data/instance-id nor meta-data/local-ipv4".into());
    }
    Ok(ids)
}

fn run(
    client: Client,
    arn: &str,
    poll: Duration,
    mark_unhealthy: bool,
    counters: &Counters,
    recorder: crate::audit::Recorder,
) {
    let mut poller = Poller {
        client,
        arn,
        mark_unhealthy,
        counters,
        recorder,
        started: Instant::now(),
        planner: Planner::default(),
        me: None,
        last_standing: None,
    };
    let mut backoff = Backoff::new(poll * 2, MAX_BACKOFF, Duration::MAX);
    let mut wait = poll;
    let mut last_problem: Option<String> = None;
    loop {
        std::thread::sleep(wait);
        match poller.round() {
            Ok(()) => {
                if last_problem.take().is_some() {
                    log!("siblings: AWS answers again");
                }
                backoff.reset();
                wait = poll;
            }
            Err(problem) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                if last_problem.as_ref() != Some(&problem) {
                    log!("siblings: {problem} (trying again with backoff, up to {} s)", MAX_BACKOFF.as_secs());
                    last_problem = Some(problem);
                }
                wait = backoff.after_failure(Duration::ZERO);
            }
        }
    }
}

/// The poller's state between rounds.
struct Poller<'a> {
    client: Client,
    arn: &'a str,
    mark_unhealthy: bool,
    counters: &'a Counters,
    /// Each action taken is an audit record too.
    recorder: crate::audit::Recorder,
    started: Instant,
    planner: Planner,
    /// This bastion's target ids, once IMDS told them.
    me: Option<Vec<String>>,
    /// What the last round logged about this bastion's own standing.
    last_standing: Option<Standing>,
}

impl Poller<'_> {
    /// One read of the group's health, and the actions it calls for.
    fn round(&mut self) -> Result<(), String> {
        if self.me.is_none() {
            let ids =
                own_ids(self.client.env()).map_err(|e| format!("cannot tell which target is this bastion: {e}"))?;
            ids.iter().filter(|id| is_instance_id(id)).for_each(|id| crate::keys::show_in_diagnostics(id));
            log!("siblings: this bastion is target {}", ids.join(" or "));
            self.me = Some(ids);
        }
        let me = self.me.as_deref().unwrap_or_default();
        let targets: Vec<Target> = self
            .client
            .describe_target_health(self.arn)
            .map_err(|e| format!("DescribeTargetHealth: {e}"))?
            .into_iter()
            .map(|t| Target { id: t.id, port: t.port, state: t.state, reason: t.reason })
            .collect();
        for t in targets.iter().filter(|t| is_instance_id(&t.id)) {
            crate::keys::show_in_diagnostics(&t.id);
        }
        let decision = self.planner.decide(&targets, me, self.mark_unhealthy, self.started.elapsed());
        if self.last_standing.as_ref() != Some(&decision.standing) {
            match &decision.standing {
                Standing::Healthy => {
                    log!("siblings: the load balancer reports this bastion healthy: acting on dead siblings")
                }
                Standing::NotATarget => log!("siblings: the load balancer does not list this bastion: not acting"),
                Standing::NotHealthy(state) => {
                    log!("siblings: the load balancer reports this bastion {state}: not acting")
                }
            }
            self.last_standing = Some(decision.standing.clone());
        }
        let healthy = targets.iter().filter(|t| t.state == "healthy").count();
        for action in &decision.actions {
            carry_out(&self.client, self.arn, action, healthy)?;
            let (counter, target, what) = match action {
                Action::Deregister { id, .. } => (&self.counters.deregistered, id, "deregistered"),
                Action::MarkUnhealthy { instance_id } => {
                    (&self.counters.marked_unhealthy, instance_id, "marked_unhealthy")
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.recorder.record(crate::audit::AuditEvent::SiblingAction {
                target: target.clone(),
                action: what.into(),
                reason: format!("the load balancer reports it unhealthy; {healthy} target(s) healthy"),
            });
        }
        Ok(())
    }
}

fn carry_out(client: &Client, arn: &str, action: &Action, healthy: usize) -> Result<(), String> {
    match action {
        Action::Deregister { id, port } => {
            client.deregister_target(arn, id, *port).map_err(|e| format!("DeregisterTargets {id}: {e}"))?;
            log!(
                "siblings: deregistered target {id}{}: the load balancer reports it unhealthy (failed health checks), \
                 {healthy} target(s) healthy; its flows end with the deregistration delay",
                port.map(|p| format!(" port {p}")).unwrap_or_default()
            );
        }
        Action::MarkUnhealthy { instance_id } => {
            client.set_instance_unhealthy(instance_id).map_err(|e| format!("SetInstanceHealth {instance_id}: {e}"))?;
            log!("siblings: marked instance {instance_id} unhealthy in its Auto Scaling group (it is replaced now)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_ids_are_told_from_anything_else() {
        for id in ["i-0123abcd", "i-0123456789abcdef0"] {
            assert!(super::is_instance_id(id), "{id}");
        }
        for id in ["", "i-", "i-0123abc", "i-0123456789ABCDEF0", "10.0.1.1", "i-0123456789abcdef0x", "j-0123abcd"] {
            assert!(!super::is_instance_id(id), "{id}");
        }
    }
}
