//! Learning early that the load balancer is taking this bastion out: EC2 Auto Scaling writes
//! the instance's target lifecycle state to IMDS (`autoscaling/target-lifecycle-state`) as soon
//! as it decides to terminate it (or detach it, or put it in standby), before it deregisters
//! the target and waits out the deregistration delay. The power button comes only after that
//! delay, too late to move anyone; so on the appliance the service polls the state every
//! [`POLL`] and, once it reads a leaving state, drains in place: health answers 503 and the
//! peers are asked to move ([`super::move_notices`]) for `drain_seconds`, while WireGuard keeps
//! serving whoever stays (stock clients) until the instance stops.
//!
//! Standby and Detached can end: an instance put back in service (`InService` again) ends
//! the drain it started, and health answers 200 again. So polling never stops. [`Tracker`]
//! decides (no I/O); [`start`] is the thread that reads IMDS and carries it out.
//!
//! Enabled by the environment variable [`ENABLE_VAR`] (init sets it for the service it starts;
//! `bastion run` elsewhere can set it too). IMDS is found as the AWS SDKs find it.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::log;

pub const ENABLE_VAR: &str = "BASTION_LIFECYCLE_FROM_IMDS";
pub const POLL: Duration = Duration::from_secs(5);
const PATH: &str = "meta-data/autoscaling/target-lifecycle-state";

/// Whether `state` (the IMDS item's text) means the instance is leaving its target groups.
pub fn leaving(state: &str) -> bool {
    matches!(state.trim(), "Terminated" | "Warmed:Terminated" | "Detached" | "Standby")
}

/// What to do about the state just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// The instance is leaving: drain in place.
    StartDrain,
    /// It is back in service after a drain this poller started: end that drain.
    EndDrain,
}

/// The poller's memory: whether it has a drain going.
#[derive(Debug, Default)]
pub struct Tracker {
    draining: bool,
}

impl Tracker {
    pub fn observe(&mut self, state: &str) -> Step {
        match (self.draining, leaving(state), state.trim() == "InService") {
            (false, true, _) => {
                self.draining = true;
                Step::StartDrain
            }
            (true, _, true) => {
                self.draining = false;
                Step::EndDrain
            }
            _ => Step::Nothing,
        }
    }
}

/// What the poller asks of the service (`super::in_place_drain` carries it out).
pub trait Actions: Send + 'static {
    /// Drain in place (the state read is passed); returns how long to send move notices.
    fn start_drain(&self, leaving: &str) -> Duration;
    /// The instance is in service again: end the drain `start_drain` began.
    fn end_drain(&self, now_state: &str);
    /// Send one round of move notices.
    fn send_notices(&self);
}

/// Starts the poller when enabled; it runs until the process ends.
pub fn start(actions: impl Actions) -> Option<JoinHandle<()>> {
    if std::env::var(ENABLE_VAR).map(|v| v != "1").unwrap_or(true) {
        return None;
    }
    let env = bastion_aws::Environment::from_vars(std::env::vars().collect::<Vec<(String, String)>>());
    let imds = Arc::new(bastion_aws::imds::Imds::new(&env.imds_endpoint()));
    let thread = std::thread::Builder::new().name("lifecycle".into()).spawn(move || {
        let mut last_problem = String::new();
        let mut tracker = Tracker::default();
        let mut notices_until: Option<Instant> = None;
        let mut next_poll = Instant::now();
        loop {
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + POLL;
                match imds.get(PATH) {
                    Ok(state) => {
                        last_problem.clear();
                        match tracker.observe(&state) {
                            Step::StartDrain => {
                                notices_until = Some(Instant::now() + actions.start_drain(state.trim()))
                            }
                            Step::EndDrain => {
                                notices_until = None;
                                actions.end_drain(state.trim());
                            }
                            Step::Nothing => {}
                        }
                    }
                    Err(e) => {
                        let problem = e.to_string();
                        if problem != last_problem {
                            log!(
                                "lifecycle: cannot read {PATH} from IMDS ({problem}); still polling every {} s",
                                POLL.as_secs()
                            );
                            last_problem = problem;
                        }
                    }
                }
            }
            let notifying = notices_until.is_some_and(|until| Instant::now() < until);
            if notifying {
                actions.send_notices();
            }
            let next_notice = if notifying { super::move_notices::REPEAT } else { POLL };
            std::thread::sleep(next_notice.min(next_poll.saturating_duration_since(Instant::now())));
        }
    });
    thread.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaving_states() {
        for state in ["Terminated", "Terminated\n", "Warmed:Terminated", "Detached", "Standby"] {
            assert!(leaving(state), "{state}");
        }
        for state in ["InService", "Pending", "Warmed:Running", "", "terminated", "<html>"] {
            assert!(!leaving(state), "{state}");
        }
    }

    #[test]
    fn standby_then_in_service_starts_and_ends_one_drain() {
        let mut t = Tracker::default();
        let steps: Vec<Step> =
            ["InService", "Standby", "Standby", "Pending", "InService\n", "InService", "Detached", "Terminated"]
                .iter()
                .map(|s| t.observe(s))
                .collect();
        use Step::*;
        assert_eq!(steps, [Nothing, StartDrain, Nothing, Nothing, EndDrain, Nothing, StartDrain, Nothing]);
    }
}
