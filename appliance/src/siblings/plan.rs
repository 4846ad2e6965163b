//! What a bastion does about its siblings, decided from what the load balancer reports (no
//! I/O; time passed in).
//!
//! Behind an NLB a UDP flow stays on its target while the target is unhealthy (termination
//! "can't be enabled for UDP"), so a stock WireGuard client of a crashed bastion keeps sending
//! into nothing. A deregistered target's flows end with its deregistration delay (AWS's API
//! reference). So a survivor takes a dead sibling out: it deregisters a target the load
//! balancer itself reports `unhealthy` for failed health checks, and marks that instance
//! unhealthy in its Auto Scaling group so that the replacement starts at once.
//!
//! The rules, each a test below:
//! - never act on itself (a target whose id is one of ours);
//! - act only while the load balancer reports this bastion `healthy`: a bastion cut off from
//!   the others, or one that is failing, does nothing; and since this bastion stays, the group
//!   never loses its last healthy target by our hand;
//! - act only on what the load balancer reports (`unhealthy`, reason
//!   `Target.FailedHealthChecks`), never on our own probes: a partition between bastions
//!   changes nothing;
//! - idempotent: every survivor may act at once (DeregisterTargets and SetInstanceHealth of a
//!   target that is already out do nothing); one bastion acts on one target again only after
//!   [`ACT_AGAIN_AFTER`] if the load balancer still reports it unhealthy.

use std::collections::HashMap;
use std::time::Duration;

/// How long a bastion waits before it acts again on a target it acted on.
pub const ACT_AGAIN_AFTER: Duration = Duration::from_secs(30);

/// The reason DescribeTargetHealth gives for a target that failed its health checks.
pub const FAILED_HEALTH_CHECKS: &str = "Target.FailedHealthChecks";

/// One target as the load balancer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub port: Option<u16>,
    pub state: String,
    pub reason: String,
}

/// What to do about one dead sibling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// DeregisterTargets: its flows end with the deregistration delay.
    Deregister { id: String, port: Option<u16> },
    /// SetInstanceHealth Unhealthy: Auto Scaling replaces it now.
    MarkUnhealthy { instance_id: String },
}

/// Why nothing is done this round (for a log line when it changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// This bastion is a healthy target: it may act.
    Healthy,
    /// The load balancer does not list this bastion (not registered yet, or another group).
    NotATarget,
    /// The load balancer reports this bastion in this state (`initial`, `unhealthy`,
    /// `draining`...).
    NotHealthy(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub standing: Standing,
    /// The targets acted on (id), with their actions.
    pub actions: Vec<Action>,
}

/// A bastion's memory of what it did, by target id.
#[derive(Debug, Default)]
pub struct Planner {
    acted: HashMap<String, Duration>,
}

impl Planner {
    /// What to do, given the group's targets, the ids that are this bastion (its instance id
    /// and its private addresses), whether to mark instances unhealthy, and the time.
    pub fn decide(&mut self, targets: &[Target], me: &[String], mark_unhealthy: bool, now: Duration) -> Decision {
        let is_me = |t: &Target| me.iter().any(|m| m == &t.id);
        let standing = match targets.iter().find(|t| is_me(t)) {
            None => Standing::NotATarget,
            Some(t) if t.state == "healthy" => Standing::Healthy,
            Some(t) => Standing::NotHealthy(t.state.clone()),
        };
        // Forget targets that are gone from the group or healthy again.
        self.acted.retain(|id, _| targets.iter().any(|t| &t.id == id && t.state == "unhealthy"));
        let mut actions = Vec::new();
        if standing != Standing::Healthy {
            return Decision { standing, actions };
        }
        for t in targets {
            if is_me(t) || t.state != "unhealthy" || t.reason != FAILED_HEALTH_CHECKS {
                continue;
            }
            if self.acted.get(&t.id).is_some_and(|&at| now.saturating_sub(at) < ACT_AGAIN_AFTER) {
                continue;
            }
            self.acted.insert(t.id.clone(), now);
            actions.push(Action::Deregister { id: t.id.clone(), port: t.port });
            if mark_unhealthy && t.id.starts_with("i-") {
                actions.push(Action::MarkUnhealthy { instance_id: t.id.clone() });
            }
        }
        Decision { standing, actions }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, state: &str) -> Target {
        let reason = match state {
            "unhealthy" => FAILED_HEALTH_CHECKS,
            "initial" => "Elb.RegistrationInProgress",
            "draining" => "Target.DeregistrationInProgress",
            _ => "",
        };
        Target { id: id.into(), port: Some(51820), state: state.into(), reason: reason.into() }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn me() -> Vec<String> {
        vec!["i-a".to_string(), "10.0.1.1".to_string()]
    }

    #[test]
    fn a_healthy_bastion_takes_out_a_sibling_the_load_balancer_reports_unhealthy() {
        let mut p = Planner::default();
        let d = p.decide(&[t("i-a", "healthy"), t("i-b", "unhealthy"), t("i-c", "healthy")], &me(), true, s(0));
        assert_eq!(d.standing, Standing::Healthy);
        assert_eq!(
            d.actions,
            vec![
                Action::Deregister { id: "i-b".into(), port: Some(51820) },
                Action::MarkUnhealthy { instance_id: "i-b".into() }
            ]
        );
        // An ip target has no instance to mark; nor does anything get marked when told not to.
        let d = Planner::default().decide(&[t("10.0.1.1", "healthy"), t("10.0.1.2", "unhealthy")], &me(), true, s(0));
        assert_eq!(d.actions, vec![Action::Deregister { id: "10.0.1.2".into(), port: Some(51820) }]);
        let d = Planner::default().decide(&[t("i-a", "healthy"), t("i-b", "unhealthy")], &me(), false, s(0));
        assert_eq!(d.actions, vec![Action::Deregister { id: "i-b".into(), port: Some(51820) }]);
    }

    #[test]
    fn never_itself_never_unless_healthy_never_on_anything_but_failed_checks() {
        let cases: &[(&[Target], Standing)] = &[
            // Itself unhealthy (cut off, failing): nothing, whatever the others are.
            (&[], Standing::NotATarget),
            (&[Target { id: "i-z".into(), ..t("i-b", "unhealthy") }], Standing::NotATarget),
        ];
        for (targets, standing) in cases {
            let d = Planner::default().decide(targets, &me(), true, s(0));
            assert_eq!(&d.standing, standing);
            assert!(d.actions.is_empty());
        }
        for mine in ["unhealthy", "initial", "draining", "unavailable", "unused"] {
            let d = Planner::default().decide(&[t("i-a", mine), t("i-b", "unhealthy")], &me(), true, s(0));
            assert_eq!(d.standing, Standing::NotHealthy(mine.into()));
            assert!(d.actions.is_empty(), "{mine}: {:?}", d.actions);
        }
        // Others that are starting, draining, or unhealthy for another reason: left alone.
        let others = [
            t("i-b", "initial"),
            t("i-c", "draining"),
            t("i-d", "unused"),
            Target { reason: "Target.Timeout".into(), ..t("i-e", "unavailable") },
            Target { reason: "Elb.InternalError".into(), ..t("i-f", "unhealthy") },
        ];
        let mut all = vec![t("i-a", "healthy")];
        all.extend(others.iter().cloned());
        assert!(Planner::default().decide(&all, &me(), true, s(0)).actions.is_empty());
    }

    #[test]
    fn acts_once_then_again_only_if_the_target_is_still_reported_unhealthy_later() {
        let mut p = Planner::default();
        let group = [t("i-a", "healthy"), t("i-b", "unhealthy")];
        assert_eq!(p.decide(&group, &me(), true, s(0)).actions.len(), 2);
        assert!(p.decide(&group, &me(), true, s(2)).actions.is_empty(), "no second call 2 s later");
        assert!(p.decide(&group, &me(), true, s(29)).actions.is_empty());
        assert_eq!(p.decide(&group, &me(), true, s(30)).actions.len(), 2, "still reported unhealthy: again");
        // Gone (deregistered), then back and failing again: acted on at once.
        assert!(p.decide(&[t("i-a", "healthy")], &me(), true, s(31)).actions.is_empty());
        assert_eq!(p.decide(&group, &me(), true, s(32)).actions.len(), 2);
    }
}
