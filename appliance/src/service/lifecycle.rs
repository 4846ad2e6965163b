//! Learning early that the load balancer is taking this bastion out: EC2 Auto Scaling writes
//! the instance's target lifecycle state to IMDS (`autoscaling/target-lifecycle-state`) as soon
//! as it decides to terminate it (or detach it, or put it in standby), before it deregisters
//! the target and waits out the deregistration delay. The power button comes only after that
//! delay, too late to move anyone; so on the appliance the service polls the state every
//! [`POLL`] and, once it reads a leaving state, drains in place: health answers 503 and the
//! peers are asked to move ([`super::move_notices`]) for `drain_seconds`, while WireGuard keeps
//! serving whoever stays (stock clients) until the instance stops.
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

/// Starts the poller when enabled; `on_leaving(state)` is called once, from its thread.
pub fn start(on_leaving: impl FnOnce(&str) + Send + 'static) -> Option<JoinHandle<()>> {
    if std::env::var(ENABLE_VAR).map(|v| v != "1").unwrap_or(true) {
        return None;
    }
    let env = bastion_aws::Environment::from_vars(std::env::vars().collect::<Vec<(String, String)>>());
    let imds = Arc::new(bastion_aws::imds::Imds::new(&env.imds_endpoint()));
    let thread = std::thread::Builder::new().name("lifecycle".into()).spawn(move || {
        let mut last_problem = String::new();
        loop {
            match imds.get(PATH) {
                Ok(state) if leaving(&state) => return on_leaving(state.trim()),
                Ok(_) => last_problem.clear(),
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
            std::thread::sleep(POLL);
        }
    });
    thread.ok()
}

/// The drain in place: until `until`, `send_notices()` every `repeat`.
pub fn notify_until(until: Instant, repeat: Duration, mut send_notices: impl FnMut()) {
    while Instant::now() < until {
        send_notices();
        std::thread::sleep(repeat.min(until.saturating_duration_since(Instant::now())));
    }
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
}
