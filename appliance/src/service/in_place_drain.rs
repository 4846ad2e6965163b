//! The drain the lifecycle state starts ([`super::lifecycle`]): health 503 and move notices to
//! every peer with a live session, while WireGuard keeps serving whoever stays (stock clients)
//! until the instance stops. `InService` again ends it, but never a drain a signal began (a
//! shutdown is not the poller's to end).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{lifecycle, move_notices, ServiceState};
use crate::log;
use crate::tunnel::DataPlane;

pub struct InPlaceDrain {
    state: Arc<ServiceState>,
    /// Weak: the poller runs until the process ends, and the data plane (with its TUN) must go
    /// when the service stops.
    data_plane: Weak<DataPlane>,
    /// When the drain this poller began started (None: it began none, or it ended).
    started: Mutex<Option<Instant>>,
    /// Log the next round of notices (the first of each drain; one is sent every second).
    log_next_round: AtomicBool,
}

impl InPlaceDrain {
    pub fn new(state: Arc<ServiceState>, data_plane: &Arc<DataPlane>) -> InPlaceDrain {
        InPlaceDrain {
            state,
            data_plane: Arc::downgrade(data_plane),
            started: Mutex::new(None),
            log_next_round: AtomicBool::new(false),
        }
    }
}

impl lifecycle::Actions for InPlaceDrain {
    fn start_drain(&self, leaving: &str) -> Duration {
        self.log_next_round.store(true, Ordering::Relaxed);
        let seconds = self.state.drain_seconds.load(Ordering::Relaxed);
        let mut drain = self.state.drain_started.lock().unwrap_or_else(|e| e.into_inner());
        if drain.is_none() {
            let now = Instant::now();
            *drain = Some(now);
            *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        }
        log!(
            "lifecycle: target-lifecycle-state is {leaving}: draining in place (health 503, peers asked \
             to move for {seconds} s); WireGuard keeps serving until the instance stops"
        );
        Duration::from_secs(seconds)
    }

    fn end_drain(&self, now_state: &str) {
        let ours = self.started.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut drain = self.state.drain_started.lock().unwrap_or_else(|e| e.into_inner());
        if ours.is_some() && *drain == ours {
            *drain = None;
            log!("lifecycle: target-lifecycle-state is {now_state} again: drain ended, health serves again");
        }
    }

    fn send_notices(&self) {
        let Some(data_plane) = self.data_plane.upgrade() else { return };
        let (sent, asked) = move_notices::ask_everyone(&data_plane);
        if self.log_next_round.swap(false, Ordering::Relaxed) {
            log!("lifecycle: asked {sent} of {asked} peer(s) with a live session to move");
        }
    }
}
