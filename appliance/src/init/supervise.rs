//! Supervision: the service runs as a child (`bastion run --config FILE`); init reaps every
//! child (its own and orphans: PID 1 inherits them), restarts the service when it exits
//! (backoff 1 s doubling to 30 s, reset after 60 s of good running, reason logged), serves the
//! standby 503 while no service runs, and carries out drain and shutdown.
//!
//! Everything init waits for arrives as an [`Event`] on one channel, from the signal, power
//! button, network and config threads; this loop is the only place that changes state.

use super::backoff::Backoff;
use super::config_source::{Accepted, Rejected};
use super::standby_health::StandbyHealth;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Extra time past `drain_seconds` before a service that does not stop is killed.
const DRAIN_GRACE: Duration = Duration::from_secs(15);

pub enum Event {
    Signal(Signal),
    PowerButton(String),
    /// The primary interface has its first lease: start fetching the config.
    NetworkUp,
    ConfigRejected(Rejected),
    ConfigAccepted(Accepted),
}

/// How this init ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// PID 1 of the machine: sync and power off, never exit.
    PowerOff,
    /// `bastion init` (tests): return, and the process exits 0.
    Exit,
}

/// The state the loop keeps.
pub struct Supervisor {
    ending: Ending,
    standby: Option<StandbyHealth>,
    health_listen: SocketAddr,
    config: Option<Accepted>,
    service: Option<(Pid, Instant)>,
    restart_at: Option<Instant>,
    backoff: Backoff,
    /// Set once a shutdown is asked for: when a service still running gets SIGKILL.
    shutdown: Option<Option<Instant>>,
    start_config: Option<Box<dyn FnOnce() + Send>>,
}

impl Supervisor {
    /// `start_config` is run once, on the first `NetworkUp`.
    pub fn new(
        ending: Ending,
        health_listen: SocketAddr,
        reason: &str,
        start_config: Box<dyn FnOnce() + Send>,
    ) -> Supervisor {
        let mut s = Supervisor {
            ending,
            standby: None,
            health_listen,
            config: None,
            service: None,
            restart_at: None,
            backoff: Backoff::service_restart(),
            shutdown: None,
            start_config: Some(start_config),
        };
        s.standby(reason);
        s
    }

    /// Runs until shutdown is complete. With `Ending::PowerOff` it never returns.
    pub fn run(mut self, events: Receiver<Event>) {
        loop {
            let now = Instant::now();
            let next = [self.restart_at, self.shutdown.flatten()]
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(3600));
            match events.recv_timeout(next) {
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
                // Every sender gone cannot happen (the signal thread lives forever); do not spin.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_secs(1)),
            }
            self.on_timers();
            if self.shutdown.is_some() && self.service.is_none() {
                self.finish();
                return;
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Signal(Signal::SIGCHLD) => self.reap(),
            Event::Signal(s @ (Signal::SIGTERM | Signal::SIGINT)) => self.request_shutdown(s.as_str().to_string()),
            Event::Signal(s) => crate::log!("init: {} ignored", s.as_str()),
            Event::PowerButton(what) => self.request_shutdown(what),
            Event::NetworkUp => {
                if let Some(start) = self.start_config.take() {
                    if self.config.is_none() {
                        self.set_reason("config: fetching user-data");
                    }
                    start();
                }
            }
            Event::ConfigRejected(r) => {
                if let Some(listen) = r.health_listen {
                    self.health_listen = listen;
                }
                self.standby(&r.health);
            }
            Event::ConfigAccepted(config) => {
                self.health_listen = config.health_listen;
                self.config = Some(config);
                if self.shutdown.is_none() {
                    self.start_service();
                }
            }
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        if self.restart_at.is_some_and(|at| at <= now) {
            self.restart_at = None;
            if self.shutdown.is_none() {
                self.start_service();
            }
        }
        if let (Some(Some(kill_at)), Some((pid, _))) = (self.shutdown, self.service) {
            if kill_at <= now {
                crate::log!("shutdown: service (pid {pid}) still running after its drain time; killing it");
                let _ = kill(pid, Signal::SIGKILL);
                // Reaped on SIGCHLD; do not kill again.
                self.shutdown = Some(None);
            }
        }
    }

    /// Shows `reason` on the 503 responder, (re)starting it on the current health address.
    fn standby(&mut self, reason: &str) {
        if let Some(s) = &self.standby {
            if s.listen() == self.health_listen {
                s.set_reason(reason);
                return;
            }
        }
        if let Some(old) = self.standby.take() {
            old.stop();
        }
        match StandbyHealth::start(self.health_listen, reason) {
            Ok(s) => self.standby = Some(s),
            Err(e) => crate::log!("health: ERROR cannot serve 503 on {}: {e}", self.health_listen),
        }
    }

    fn set_reason(&mut self, reason: &str) {
        if self.service.is_none() {
            self.standby(reason);
        }
    }

    fn start_service(&mut self) {
        let Some(config) = self.config.clone() else { return };
        if self.service.is_some() {
            return;
        }
        // The service binds the health port next; the standby responder must let go of it first.
        if let Some(s) = self.standby.take() {
            s.stop();
        }
        match spawn_service(&config.path) {
            Ok(pid) => {
                crate::log!(
                    "service: started pid {pid}: bastion run --config {} ({})",
                    config.path.display(),
                    config.origin
                );
                self.service = Some((pid, Instant::now()));
            }
            Err(e) => {
                let delay = self.backoff.after_failure(Duration::ZERO);
                crate::log!("service: ERROR cannot start: {e}; trying again in {} s", delay.as_secs());
                self.standby(&format!("service: cannot start: {e}"));
                self.restart_at = Some(Instant::now() + delay);
            }
        }
    }

    /// Reaps every exited child; PID 1 inherits orphans, so not all of them are the service.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    match self.service {
                        Some((service, started)) if service == pid => {
                            self.service = None;
                            self.on_service_exit(pid, &status, started.elapsed());
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn on_service_exit(&mut self, pid: Pid, status: &WaitStatus, ran_for: Duration) {
        let how = describe_exit(status);
        if self.shutdown.is_some() {
            crate::log!("shutdown: service (pid {pid}) stopped: {how}");
            return;
        }
        let delay = self.backoff.after_failure(ran_for);
        crate::log!(
            "service: pid {pid} {how} after {:.1} s; restarting in {} s",
            ran_for.as_secs_f64(),
            delay.as_secs()
        );
        self.standby(&format!("service: restarting after {how}"));
        self.restart_at = Some(Instant::now() + delay);
    }

    fn request_shutdown(&mut self, what: String) {
        if self.shutdown.is_some() {
            if let Some((pid, _)) = self.service {
                crate::log!("shutdown: {what} again: killing the service (pid {pid}) now");
                let _ = kill(pid, Signal::SIGKILL);
            }
            return;
        }
        self.restart_at = None;
        let drain = self.config.as_ref().map(|c| c.drain_seconds).unwrap_or(0);
        match self.service {
            Some((pid, _)) => {
                crate::log!(
                    "shutdown: {what}: draining (service pid {pid} answers 503 and keeps forwarding for {drain} s), then {}",
                    self.ending_text()
                );
                if let Err(e) = kill(pid, Signal::SIGTERM) {
                    crate::log!("shutdown: ERROR SIGTERM to service pid {pid}: {e}");
                }
                self.shutdown = Some(Some(Instant::now() + Duration::from_secs(drain) + DRAIN_GRACE));
            }
            None => {
                crate::log!("shutdown: {what}: no service running, nothing to drain; {}", self.ending_text());
                self.shutdown = Some(None);
            }
        }
    }

    fn ending_text(&self) -> &'static str {
        match self.ending {
            Ending::PowerOff => "power off",
            Ending::Exit => "exit",
        }
    }

    fn finish(&mut self) {
        if let Some(s) = self.standby.take() {
            s.stop();
        }
        match self.ending {
            Ending::Exit => crate::log!("shutdown: done; exiting (bastion init, so no power-off)"),
            Ending::PowerOff => {
                super::shutdown::power_off();
                // The kernel refused to power off; PID 1 must not exit (that panics the kernel).
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    }
}

/// `bastion run --config FILE` from our own executable.
fn spawn_service(config: &Path) -> std::io::Result<Pid> {
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new("/proc/self/exe")
        .arg0("bastion")
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .spawn()?;
    // The child is reaped by `reap` (waitpid -1), never through `Child`.
    Ok(Pid::from_raw(child.id() as i32))
}

/// "exit status 1", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, signal, core) => format!(
            "killed by signal {} ({}){}",
            *signal as i32,
            signal.as_str(),
            if *core { ", core dumped" } else { "" }
        ),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons_for_the_log() {
        let pid = Pid::from_raw(2);
        assert_eq!(describe_exit(&WaitStatus::Exited(pid, 1)), "exit status 1");
        assert_eq!(describe_exit(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)), "killed by signal 9 (SIGKILL)");
        assert_eq!(
            describe_exit(&WaitStatus::Signaled(pid, Signal::SIGSEGV, true)),
            "killed by signal 11 (SIGSEGV), core dumped"
        );
    }
}
