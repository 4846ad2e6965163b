//! The periodic self-test of a running service: every `interval_seconds` it checks that our
//! nftables table is still there (putting it back when something outside removed it), then runs
//! the in-process WireGuard client (`crate::selftest`) against the service over loopback, logs
//! the one-line result and records it for health and status.

use super::nat_guard::InstalledNat;
use super::{LastSelfTest, ServiceState};
use crate::log;
use crate::selftest::{self, SelfTestPlan};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct SelfTestLoop {
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SelfTestLoop {
    /// Starts the loop; the first run is at once.
    pub fn start(
        plan: SelfTestPlan,
        interval: Duration,
        nat: Arc<InstalledNat>,
        state: Arc<ServiceState>,
    ) -> std::io::Result<SelfTestLoop> {
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let thread = std::thread::Builder::new().name("selftest".into()).spawn(move || {
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                if let Some(problem) = nat.problem() {
                    // Health shows this until the run below passes with the table back.
                    let line = format!("selftest: FAIL nat: {problem}");
                    log!("{line}");
                    state.record_selftest(LastSelfTest { passed: false, line, at: Instant::now(), duration: None });
                    nat.reinstall();
                }
                let started = Instant::now();
                let outcome = selftest::run(&plan);
                let duration = Some(started.elapsed());
                let line = outcome.to_string();
                log!("{line}");
                state.record_selftest(LastSelfTest { passed: outcome.passed(), line, at: Instant::now(), duration });
                next = Instant::now() + interval;
            }
        })?;
        Ok(SelfTestLoop { stopping, thread: Some(thread) })
    }

    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SelfTestLoop {
    fn drop(&mut self) {
        self.stop();
    }
}
