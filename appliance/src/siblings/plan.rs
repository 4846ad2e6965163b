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
//!
//! Where the load balancer keeps a deregistered target's busy flows (the seed article saw them
//! stay until idle 30 s), deregistration does not free a stock client that keeps talking. With
//! ip targets the flow is bound to an address, not to an instance, so a survivor in the same
//! subnet also takes the dead target's address over ([`Action::TakeOver`]): the flow's packets
//! reach the survivor, whose fast failover answers them. Exactly one survivor does it: the
//! healthy target with the lowest address in this bastion's subnet (all of them compute the
//! same from the same report); one that is not in the subnet, or not the lowest, leaves it.
//! It takes over a leaving sibling's address the same way: a target the load balancer reports
//! `draining` (deregistered: it drains, or a survivor took it out), so a planned scale-in
//! moves the flows it still has to a live bastion before it stops. An address is taken once
//! while its target is in the group (again only after [`Planner::take_over_failed`]).
//!
//! A sibling that leaves with instance targets (or ip targets nobody takes over) keeps its
//! sessions until its deregistration delay ends; then the load balancer moves their flows to
//! other targets, where nobody holds them. So every healthy bastion relays datagrams of
//! sessions it does not hold to a target it saw healthy that went draining
//! ([`Action::RelayToLeaving`]), once while it drains and for [`RELAY_AFTER_LEFT`] after the
//! load balancer stopped listing it, then stops ([`Action::StopRelayingTo`], also when it is
//! back in service); never to one that was unhealthy first (a dead sibling deregistered by a
//! survivor holds nothing worth passing on).
//!
//! A dead ip target's instance is found by its address (EC2, in the shell) and marked
//! unhealthy by the taker, before it takes the address; where nobody takes it over (no healthy
//! sibling in its subnet) by the healthy target with the lowest address of the whole group.
//! Either way the holder is left alone when it is this bastion or has a target the load
//! balancer reports healthy ([`holder_verdict`]: a sibling that took the address over since).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use ip_network::Ipv4Network;

/// How long a bastion waits before it acts again on a target it acted on.
pub const ACT_AGAIN_AFTER: Duration = Duration::from_secs(30);

/// How long a leaving sibling is still relayed to after the load balancer stopped listing it:
/// its flows move when its deregistration delay ends, the moment it leaves the list, and its
/// clients re-key here within a round trip or two of that.
pub const RELAY_AFTER_LEFT: Duration = Duration::from_secs(30);

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
    /// Move the target's address to this bastion (same subnet, ip targets): a `dead` one (the
    /// load balancer's unhealthy) or a leaving one (draining).
    TakeOver { address: Ipv4Addr, dead: bool },
    /// SetInstanceHealth Unhealthy on the instance that holds `address` now (a dead ip
    /// target, looked up just before this bastion takes the address over).
    MarkHolderUnhealthy { address: Ipv4Addr },
    /// Pass datagrams of sessions this bastion does not hold to the leaving sibling `id` (a
    /// healthy target that went draining: its flows come to other targets when its
    /// deregistration delay ends, still under its sessions; `tunnel::relay`). Instance
    /// targets, and ip targets where nobody takes addresses over.
    RelayToLeaving { id: String },
    /// Stop passing datagrams to the leaving sibling `id`: gone from the list for
    /// [`RELAY_AFTER_LEFT`], or back in service.
    StopRelayingTo { id: String },
}

/// What a bastion may do besides deregistering, from its config and IMDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rules {
    /// Mark a dead instance target unhealthy in its Auto Scaling group.
    pub mark_unhealthy: bool,
    /// This bastion's subnet, when it takes over dead siblings' addresses in it.
    pub take_over_in: Option<Ipv4Network>,
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
    /// Targets whose address this bastion took over, while they are in the group.
    taken: HashSet<String>,
    /// Targets last seen healthy (draining after that: leaving, not dead).
    seen_healthy: HashSet<String>,
    /// Leaving targets this bastion relays to, with when the load balancer last listed them
    /// draining.
    relaying: HashMap<String, Duration>,
}

impl Planner {
    /// What to do, given the group's targets, the ids that are this bastion (its instance id
    /// and its private addresses), what it may do, and the time.
    pub fn decide(&mut self, targets: &[Target], me: &[String], rules: Rules, now: Duration) -> Decision {
        let is_me = |t: &Target| me.iter().any(|m| m == &t.id);
        // One of its targets healthy is enough (an address of its own it deregistered may be
        // reported draining beside the fresh one it serves on).
        let mine: Vec<&Target> = targets.iter().filter(|t| is_me(t)).collect();
        let standing = match mine.first() {
            None => Standing::NotATarget,
            Some(_) if mine.iter().any(|t| t.state == "healthy") => Standing::Healthy,
            Some(t) => Standing::NotHealthy(t.state.clone()),
        };
        // Forget targets that are gone from the group or healthy again.
        self.acted.retain(|id, _| targets.iter().any(|t| &t.id == id && t.state == "unhealthy"));
        self.taken.retain(|id| targets.iter().any(|t| &t.id == id));
        let mut actions = Vec::new();
        self.relaying.retain(|id, listed| {
            let keep = match targets.iter().find(|t| &t.id == id) {
                Some(t) if t.state == "draining" => {
                    *listed = now;
                    true
                }
                Some(_) => false,
                None => now.saturating_sub(*listed) < RELAY_AFTER_LEFT,
            };
            if !keep {
                actions.push(Action::StopRelayingTo { id: id.clone() });
            }
            keep
        });
        let was_healthy = std::mem::take(&mut self.seen_healthy);
        for t in targets {
            if t.state == "healthy" || (t.state == "draining" && was_healthy.contains(&t.id)) {
                self.seen_healthy.insert(t.id.clone());
            }
        }
        if standing != Standing::Healthy {
            return Decision { standing, actions };
        }
        for t in targets.iter().filter(|t| !is_me(t)) {
            let dead = t.state == "unhealthy" && t.reason == FAILED_HEALTH_CHECKS;
            let leaving = t.state == "draining";
            let relayed_to = t.id.starts_with("i-") || rules.take_over_in.is_none();
            if leaving && relayed_to && self.seen_healthy.contains(&t.id) && !self.relaying.contains_key(&t.id) {
                self.relaying.insert(t.id.clone(), now);
                actions.push(Action::RelayToLeaving { id: t.id.clone() });
            }
            let mut marked = false;
            if !self.taken.contains(&t.id) && (dead || leaving) {
                if let Some(address) = rules.take_over_in.and_then(|subnet| takes_over(targets, me, subnet, t)) {
                    self.taken.insert(t.id.clone());
                    // The taker marks before it takes: afterwards the address is its own.
                    if dead && rules.mark_unhealthy {
                        actions.push(Action::MarkHolderUnhealthy { address });
                        marked = true;
                    }
                    actions.push(Action::TakeOver { address, dead });
                }
            }
            if !dead || self.acted.get(&t.id).is_some_and(|&at| now.saturating_sub(at) < ACT_AGAIN_AFTER) {
                continue;
            }
            self.acted.insert(t.id.clone(), now);
            actions.push(Action::Deregister { id: t.id.clone(), port: t.port });
            if rules.mark_unhealthy && t.id.starts_with("i-") {
                actions.push(Action::MarkUnhealthy { instance_id: t.id.clone() });
            }
            // A dead ip target nobody here takes over (no healthy sibling in its subnet, or
            // takeover off) still gets its instance replaced: the lowest healthy address of the
            // whole group marks the holder (the shell leaves a holder that has a healthy target:
            // a taker elsewhere may have moved the address to itself since).
            if let (true, false, Ok(address)) = (rules.mark_unhealthy, marked, t.id.parse::<Ipv4Addr>()) {
                if lowest_healthy(targets, |_| true).is_some_and(|lowest| me.contains(&lowest.id)) {
                    actions.push(Action::MarkHolderUnhealthy { address });
                }
            }
        }
        Decision { standing, actions }
    }
}

impl Planner {
    /// The takeover of `id`'s address did not happen: the next round tries again.
    pub fn take_over_failed(&mut self, id: &str) {
        self.taken.remove(id);
    }

    /// Relaying to `id` could not start: the next round tries again.
    pub fn relay_failed(&mut self, id: &str) {
        self.relaying.remove(id);
    }
}

/// What to do about the instance EC2 names as the holder of a dead ip target's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderVerdict {
    /// Mark it unhealthy: Auto Scaling replaces it.
    Mark,
    /// It is this bastion.
    Itself,
    /// It has a target the load balancer reports healthy (this address): a live sibling that
    /// took the address over since the load balancer found it dead. Left alone.
    Serving(String),
}

/// Whether to mark `instance`, whose interface holds a dead ip target's address and has
/// `addresses`, given this bastion's ids and the group's targets.
pub fn holder_verdict(instance: &str, addresses: &[String], me: &[String], targets: &[Target]) -> HolderVerdict {
    if me.iter().any(|m| m == instance) {
        return HolderVerdict::Itself;
    }
    let healthy = targets.iter().find(|t| t.state == "healthy" && (t.id == instance || addresses.contains(&t.id)));
    match healthy {
        Some(t) => HolderVerdict::Serving(t.id.clone()),
        None => HolderVerdict::Mark,
    }
}

/// How long a taken-over address stays after its last datagram: longer than the load
/// balancer keeps an idle UDP flow (120 s), so no flow to it is left when it is given back.
pub const GIVE_BACK_AFTER: Duration = Duration::from_secs(150);

/// Whether to give a taken-over address back to the subnet: nothing came to it for
/// [`GIVE_BACK_AFTER`] (`last_heard`: how long ago a peer's datagram last arrived there, `None`
/// when none ever did since it was `taken` that long ago).
pub fn give_back(taken: Duration, last_heard: Option<Duration>) -> bool {
    last_heard.unwrap_or(taken).min(taken) >= GIVE_BACK_AFTER
}

/// The address of `dead` when this bastion is the one to take it over: it is an address of
/// `subnet`, and of the healthy targets in `subnet` this bastion has the lowest address.
fn takes_over(targets: &[Target], me: &[String], subnet: Ipv4Network, dead: &Target) -> Option<Ipv4Addr> {
    let address = dead.id.parse::<Ipv4Addr>().ok().filter(|a| subnet.contains(*a))?;
    let lowest = lowest_healthy(targets, |a| subnet.contains(a))?;
    me.iter().any(|m| m == &lowest.id).then_some(address)
}

/// The healthy ip target with the lowest address among those `within` accepts.
fn lowest_healthy(targets: &[Target], within: impl Fn(Ipv4Addr) -> bool) -> Option<&Target> {
    targets
        .iter()
        .filter(|t| t.state == "healthy")
        .filter_map(|t| t.id.parse::<Ipv4Addr>().ok().filter(|a| within(*a)).map(|a| (a, t)))
        .min_by_key(|(a, _)| *a)
        .map(|(_, t)| t)
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

    const MARK: Rules = Rules { mark_unhealthy: true, take_over_in: None };

    fn me() -> Vec<String> {
        vec!["i-a".to_string(), "10.0.1.1".to_string()]
    }

    #[test]
    fn a_healthy_bastion_takes_out_a_sibling_the_load_balancer_reports_unhealthy() {
        let mut p = Planner::default();
        let d = p.decide(&[t("i-a", "healthy"), t("i-b", "unhealthy"), t("i-c", "healthy")], &me(), MARK, s(0));
        assert_eq!(d.standing, Standing::Healthy);
        assert_eq!(
            d.actions,
            vec![
                Action::Deregister { id: "i-b".into(), port: Some(51820) },
                Action::MarkUnhealthy { instance_id: "i-b".into() }
            ]
        );
        // An ip target's instance is the one holding its address (the shell asks EC2); nothing
        // gets marked when told not to.
        let d = Planner::default().decide(&[t("10.0.1.1", "healthy"), t("10.0.1.2", "unhealthy")], &me(), MARK, s(0));
        assert_eq!(
            d.actions,
            vec![
                Action::Deregister { id: "10.0.1.2".into(), port: Some(51820) },
                Action::MarkHolderUnhealthy { address: "10.0.1.2".parse().unwrap() }
            ]
        );
        let d = Planner::default().decide(&[t("i-a", "healthy"), t("i-b", "unhealthy")], &me(), Rules::default(), s(0));
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
            let d = Planner::default().decide(targets, &me(), MARK, s(0));
            assert_eq!(&d.standing, standing);
            assert!(d.actions.is_empty());
        }
        for mine in ["unhealthy", "initial", "draining", "unavailable", "unused"] {
            let d = Planner::default().decide(&[t("i-a", mine), t("i-b", "unhealthy")], &me(), MARK, s(0));
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
        assert!(Planner::default().decide(&all, &me(), MARK, s(0)).actions.is_empty());
    }

    #[test]
    fn a_bastion_with_one_healthy_target_of_its_own_stands_healthy_whatever_its_others_are() {
        // Back from a drain with a fresh address: its old one is still reported draining.
        let me = vec!["i-a".to_string(), "10.0.1.1".to_string(), "10.0.1.21".to_string(), "10.0.1.31".to_string()];
        let group = [t("10.0.1.21", "draining"), t("10.0.1.31", "healthy"), t("10.0.1.22", "unhealthy")];
        let d = Planner::default().decide(&group, &me, Rules::default(), s(0));
        assert_eq!(d.standing, Standing::Healthy);
        assert_eq!(d.actions, vec![Action::Deregister { id: "10.0.1.22".into(), port: Some(51820) }]);
        // None of its own healthy: the first one's state.
        let group = [t("10.0.1.21", "draining"), t("10.0.1.31", "initial"), t("10.0.1.22", "unhealthy")];
        let d = Planner::default().decide(&group, &me, Rules::default(), s(0));
        assert_eq!(d.standing, Standing::NotHealthy("draining".into()));
        assert!(d.actions.is_empty());
    }

    #[test]
    fn acts_once_then_again_only_if_the_target_is_still_reported_unhealthy_later() {
        let mut p = Planner::default();
        let group = [t("i-a", "healthy"), t("i-b", "unhealthy")];
        assert_eq!(p.decide(&group, &me(), MARK, s(0)).actions.len(), 2);
        assert!(p.decide(&group, &me(), MARK, s(2)).actions.is_empty(), "no second call 2 s later");
        assert!(p.decide(&group, &me(), MARK, s(29)).actions.is_empty());
        assert_eq!(p.decide(&group, &me(), MARK, s(30)).actions.len(), 2, "still reported unhealthy: again");
        // Gone (deregistered), then back and failing again: acted on at once.
        assert!(p.decide(&[t("i-a", "healthy")], &me(), MARK, s(31)).actions.is_empty());
        assert_eq!(p.decide(&group, &me(), MARK, s(32)).actions.len(), 2);
    }

    #[test]
    fn a_taken_address_is_given_back_once_nothing_came_to_it_for_longer_than_a_flow_lives() {
        assert!(!give_back(s(10), None), "just taken");
        assert!(!give_back(s(200), Some(s(5))), "still in use");
        assert!(!give_back(s(200), Some(s(149))));
        assert!(give_back(s(200), Some(s(150))));
        assert!(give_back(s(150), None), "nobody came");
        assert!(!give_back(s(100), Some(s(400))), "heard before it was taken: counts from the takeover");
    }

    fn take_over(subnet: &str) -> Rules {
        Rules { mark_unhealthy: true, take_over_in: Some(subnet.parse().unwrap()) }
    }

    #[test]
    fn a_dead_ip_target_nobody_takes_over_is_marked_by_the_lowest_healthy_address_of_the_group() {
        let me = vec!["i-a".to_string(), "10.0.2.5".to_string()];
        let dead: Ipv4Addr = "10.0.1.9".parse().unwrap();
        // The only survivor, in another subnet: it deregisters and marks the holder.
        let group = [t("10.0.2.5", "healthy"), t("10.0.1.9", "unhealthy")];
        let d = Planner::default().decide(&group, &me, take_over("10.0.2.0/24"), s(0));
        assert_eq!(
            d.actions,
            vec![
                Action::Deregister { id: "10.0.1.9".into(), port: Some(51820) },
                Action::MarkHolderUnhealthy { address: dead }
            ]
        );
        // The same with takeover off.
        let d = Planner::default().decide(&group, &me, MARK, s(0));
        assert!(d.actions.contains(&Action::MarkHolderUnhealthy { address: dead }), "{:?}", d.actions);
        // A lower healthy address elsewhere in the group marks, not this one; nor when told not to mark.
        let lower = [t("10.0.2.5", "healthy"), t("10.0.0.7", "healthy"), t("10.0.1.9", "unhealthy")];
        let d = Planner::default().decide(&lower, &me, take_over("10.0.2.0/24"), s(0));
        assert_eq!(d.actions, vec![Action::Deregister { id: "10.0.1.9".into(), port: Some(51820) }]);
        let no_mark = Rules { mark_unhealthy: false, take_over_in: Some("10.0.2.0/24".parse().unwrap()) };
        let d = Planner::default().decide(&group, &me, no_mark, s(0));
        assert_eq!(d.actions, vec![Action::Deregister { id: "10.0.1.9".into(), port: Some(51820) }]);
    }

    #[test]
    fn the_holder_of_a_dead_address_is_marked_unless_it_is_this_bastion_or_serves() {
        let me = vec!["i-a".to_string(), "10.0.1.5".to_string()];
        let group = [t("10.0.1.5", "healthy"), t("10.0.1.9", "unhealthy"), t("10.0.1.7", "healthy")];
        let addresses = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(holder_verdict("i-b", &addresses(&["10.0.1.2", "10.0.1.9"]), &me, &group), HolderVerdict::Mark);
        assert_eq!(holder_verdict("i-a", &addresses(&["10.0.1.9"]), &me, &group), HolderVerdict::Itself);
        // A sibling that took the address over has its own healthy target.
        assert_eq!(
            holder_verdict("i-c", &addresses(&["10.0.1.3", "10.0.1.7", "10.0.1.9"]), &me, &group),
            HolderVerdict::Serving("10.0.1.7".into())
        );
        // An instance target counts as well.
        let instances = [t("i-c", "healthy"), t("10.0.1.9", "unhealthy")];
        assert_eq!(holder_verdict("i-c", &[], &me, &instances), HolderVerdict::Serving("i-c".into()));
    }

    #[test]
    fn a_healthy_sibling_that_goes_draining_is_relayed_to_once_while_it_drains_and_a_dead_one_never() {
        let relay = |id: &str| Action::RelayToLeaving { id: id.into() };
        let stop = |id: &str| Action::StopRelayingTo { id: id.into() };
        let mut p = Planner::default();
        let serving = [t("i-a", "healthy"), t("i-b", "healthy")];
        let leaving = [t("i-a", "healthy"), t("i-b", "draining")];
        assert!(p.decide(&serving, &me(), MARK, s(0)).actions.is_empty());
        assert_eq!(p.decide(&leaving, &me(), MARK, s(2)).actions, vec![relay("i-b")]);
        assert!(p.decide(&leaving, &me(), MARK, s(4)).actions.is_empty(), "once while it drains");
        // Back in service (Standby, then InService): stopped; leaving again: relayed to again.
        assert_eq!(p.decide(&serving, &me(), MARK, s(6)).actions, vec![stop("i-b")]);
        assert_eq!(p.decide(&leaving, &me(), MARK, s(8)).actions, vec![relay("i-b")]);
        // Gone from the list (its delay ended, its flows moved here): relayed to until
        // RELAY_AFTER_LEFT after it was last listed draining (at 8 s), also while this bastion
        // is not healthy, then stopped.
        let gone = [t("i-a", "healthy")];
        assert!(p.decide(&gone, &me(), MARK, s(10)).actions.is_empty());
        assert!(p.decide(&[t("i-a", "unhealthy")], &me(), MARK, s(8 + 29)).actions.is_empty());
        assert_eq!(p.decide(&[t("i-a", "unhealthy")], &me(), MARK, s(8 + 30)).actions, vec![stop("i-b")]);
        // Relaying that could not start is tried again.
        let mut p = Planner::default();
        p.decide(&serving, &me(), MARK, s(0));
        assert_eq!(p.decide(&leaving, &me(), MARK, s(2)).actions, vec![relay("i-b")]);
        p.relay_failed("i-b");
        assert_eq!(p.decide(&leaving, &me(), MARK, s(4)).actions, vec![relay("i-b")]);
        // Dead, then deregistered by a survivor: it holds no session worth passing on.
        let mut p = Planner::default();
        p.decide(&serving, &me(), MARK, s(0));
        assert_eq!(p.decide(&[t("i-a", "healthy"), t("i-b", "unhealthy")], &me(), MARK, s(2)).actions.len(), 2);
        assert!(p.decide(&leaving, &me(), MARK, s(4)).actions.is_empty());
        // Never seen healthy (this bastion started while it drained): left alone.
        assert!(Planner::default().decide(&leaving, &me(), MARK, s(0)).actions.is_empty());
        // An ip target: relayed to where nobody takes addresses over; taken over otherwise.
        let me = vec!["i-a".to_string(), "10.0.1.5".to_string()];
        let serving = [t("10.0.1.5", "healthy"), t("10.0.1.9", "healthy")];
        let leaving = [t("10.0.1.5", "healthy"), t("10.0.1.9", "draining")];
        let mut p = Planner::default();
        p.decide(&serving, &me, MARK, s(0));
        assert_eq!(p.decide(&leaving, &me, MARK, s(2)).actions, vec![relay("10.0.1.9")]);
        let mut p = Planner::default();
        p.decide(&serving, &me, take_over("10.0.1.0/24"), s(0));
        let d = p.decide(&leaving, &me, take_over("10.0.1.0/24"), s(2));
        assert_eq!(d.actions, vec![Action::TakeOver { address: "10.0.1.9".parse().unwrap(), dead: false }]);
        // Not healthy itself: nothing.
        let mut p = Planner::default();
        p.decide(&[t("10.0.1.5", "unhealthy"), t("10.0.1.9", "healthy")], &me, MARK, s(0));
        assert!(p.decide(&[t("10.0.1.5", "unhealthy"), t("10.0.1.9", "draining")], &me, MARK, s(2)).actions.is_empty());
    }

    #[test]
    fn the_lowest_healthy_address_of_the_subnet_takes_a_dead_siblings_address_over() {
        let me = vec!["i-a".to_string(), "10.0.1.5".to_string()];
        let group = [t("10.0.1.5", "healthy"), t("10.0.1.9", "unhealthy"), t("10.0.2.3", "healthy")];
        let d = Planner::default().decide(&group, &me, take_over("10.0.1.0/24"), s(0));
        assert_eq!(
            d.actions,
            vec![
                Action::MarkHolderUnhealthy { address: "10.0.1.9".parse().unwrap() },
                Action::TakeOver { address: "10.0.1.9".parse().unwrap(), dead: true },
                Action::Deregister { id: "10.0.1.9".into(), port: Some(51820) }
            ],
            "its instance marked (looked up while it still holds the address), taken over, and deregistered \
             (new flows go elsewhere; the old ones reach it here)"
        );
        // A lower healthy address in the subnet does it, not this one; deregistering stays.
        let lower = [t("10.0.1.5", "healthy"), t("10.0.1.2", "healthy"), t("10.0.1.9", "unhealthy")];
        let d = Planner::default().decide(&lower, &me, take_over("10.0.1.0/24"), s(0));
        assert_eq!(d.actions, vec![Action::Deregister { id: "10.0.1.9".into(), port: Some(51820) }]);
        // A lower address that is not healthy does not count.
        let lower_dead = [t("10.0.1.5", "healthy"), t("10.0.1.2", "unhealthy"), t("10.0.1.9", "unhealthy")];
        let d = Planner::default().decide(&lower_dead, &me, take_over("10.0.1.0/24"), s(0));
        assert_eq!(d.actions.iter().filter(|a| matches!(a, Action::TakeOver { .. })).count(), 2);
        // Not the taker: no mark either (after the takeover the address would name the taker).
        let d = Planner::default().decide(&lower, &me, take_over("10.0.1.0/24"), s(0));
        assert!(!d.actions.iter().any(|a| matches!(a, Action::MarkHolderUnhealthy { .. })));
        // Another subnet's address, an instance target, or takeover off: deregistration only.
        for (group, rules) in [
            (vec![t("10.0.1.5", "healthy"), t("10.0.2.9", "unhealthy")], take_over("10.0.1.0/24")),
            (vec![t("10.0.1.5", "healthy"), t("i-b", "unhealthy")], take_over("10.0.1.0/24")),
            (vec![t("10.0.1.5", "healthy"), t("10.0.1.9", "unhealthy")], MARK),
        ] {
            let d = Planner::default().decide(&group, &me, rules, s(0));
            assert!(!d.actions.iter().any(|a| matches!(a, Action::TakeOver { .. })), "{group:?}: {:?}", d.actions);
            assert!(!d.actions.is_empty());
        }
        // A leaving sibling (draining): its address is taken, once, and nothing else is done.
        let mut p = Planner::default();
        let leaving = [t("10.0.1.5", "healthy"), t("10.0.1.9", "draining")];
        let d = p.decide(&leaving, &me, take_over("10.0.1.0/24"), s(0));
        assert_eq!(d.actions, vec![Action::TakeOver { address: "10.0.1.9".parse().unwrap(), dead: false }]);
        assert!(p.decide(&leaving, &me, take_over("10.0.1.0/24"), s(2)).actions.is_empty(), "once");
        p.take_over_failed("10.0.1.9");
        assert_eq!(p.decide(&leaving, &me, take_over("10.0.1.0/24"), s(4)).actions.len(), 1, "again after a failure");
        // A dead one taken over and deregistered is not taken again while it drains.
        let mut p = Planner::default();
        let d = p.decide(&group, &me, take_over("10.0.1.0/24"), s(0));
        assert_eq!(d.actions.len(), 3);
        let draining = [t("10.0.1.5", "healthy"), t("10.0.1.9", "draining"), t("10.0.2.3", "healthy")];
        assert!(p.decide(&draining, &me, take_over("10.0.1.0/24"), s(2)).actions.is_empty());
        // Without takeover a draining target is left alone.
        assert!(Planner::default().decide(&leaving, &me, MARK, s(0)).actions.is_empty());
        // Not healthy itself: nothing at all, as ever.
        let d = Planner::default().decide(
            &[t("10.0.1.5", "unhealthy"), t("10.0.1.9", "unhealthy")],
            &me,
            take_over("10.0.1.0/24"),
            s(0),
        );
        assert!(d.actions.is_empty());
    }
}
