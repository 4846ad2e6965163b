//! Supervision as a state machine: what init does about each thing that happens — start the
//! service when a config is accepted, restart it with backoff when it exits (1 s doubling to
//! 30 s, reset after 60 s of good running), show the standby 503 while no service runs, drain
//! and stop on shutdown (SIGKILL when the service outlives its drain), then power off or exit.
//!
//! No I/O here and no clock: `Supervisor::handle` takes an [`Input`] and the time, and returns
//! the [`Action`]s to carry out; `supervisor_loop` spawns, signals, reaps, serves the standby
//! page and sleeps until `next_wakeup`.

use super::backoff::Backoff;
use super::config_source::{Accepted, Rejected};
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Extra time past `drain_seconds` before a service that does not stop is killed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(15);

/// How this init ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// PID 1 of the machine: sync and power off, never exit.
    PowerOff,
    /// `bastion init` (tests): return, and the process exits 0.
    Exit,
}

impl Ending {
    fn text(self) -> &'static str {
        match self {
            Ending::PowerOff => "power off",
            Ending::Exit => "exit",
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Input {
    Signal(Signal),
    PowerButton(String),
    /// The primary interface has its first lease: time to fetch the config.
    NetworkUp,
    ConfigRejected(Rejected),
    ConfigAccepted(Accepted),
    /// The service asked for by [`Action::Spawn`] runs as `pid`...
    Spawned {
        pid: i32,
    },
    /// ...or could not be started.
    SpawnFailed {
        error: String,
    },
    /// A child (the service, or an orphan PID 1 inherited) was reaped; `how` as
    /// [`describe_exit`] puts it.
    ChildExited {
        pid: i32,
        how: String,
    },
    /// Nothing but time passed (a wakeup the machine asked for).
    Tick,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// One console line (without the `bastion: ` prefix).
    Log(String),
    /// Start fetching the config (once).
    FetchConfig,
    /// Serve 503 with `reason` on `listen` (restarting the responder if the address moved).
    Standby {
        listen: SocketAddr,
        reason: String,
    },
    /// Stop the standby responder (the service binds the port next).
    StopStandby,
    /// Start `bastion run --config PATH`; answer with `Spawned` or `SpawnFailed`.
    Spawn {
        config: PathBuf,
    },
    Kill {
        pid: i32,
        signal: Signal,
    },
    /// Everything is done: power off or exit.
    Finish(Ending),
}

#[derive(Debug)]
pub struct Supervisor {
    ending: Ending,
    health_listen: SocketAddr,
    config: Option<Accepted>,
    /// The service's pid and when it started.
    service: Option<(i32, Instant)>,
    /// A spawn was asked for and not answered yet.
    spawning: bool,
    restart_at: Option<Instant>,
    backoff: Backoff,
    /// Set once a shutdown is asked for, with when a service still running gets SIGKILL.
    shutdown: Option<Option<Instant>>,
    fetch_started: bool,
    finished: bool,
}

impl Supervisor {
    /// The machine at boot, and its first actions (the standby page with `reason`).
    pub fn new(ending: Ending, health_listen: SocketAddr, reason: &str) -> (Supervisor, Vec<Action>) {
        let s = Supervisor {
            ending,
            health_listen,
            config: None,
            service: None,
            spawning: false,
            restart_at: None,
            backoff: Backoff::service_restart(),
            shutdown: None,
            fetch_started: false,
            finished: false,
        };
        let first = vec![Action::Standby { listen: health_listen, reason: reason.to_string() }];
        (s, first)
    }

    /// When the machine wants a `Tick` at the latest (a restart or a kill is due).
    pub fn next_wakeup(&self) -> Option<Instant> {
        [self.restart_at, self.shutdown.flatten()].into_iter().flatten().min()
    }

    #[cfg(test)]
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// The service's pid, while one runs.
    #[cfg(test)]
    pub fn service_pid(&self) -> Option<i32> {
        self.service.map(|(pid, _)| pid)
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        match input {
            Input::Signal(Signal::SIGCHLD) | Input::Tick => {}
            Input::Signal(s @ (Signal::SIGTERM | Signal::SIGINT)) => self.request_shutdown(s.as_str(), now, &mut out),
            Input::Signal(s) => out.push(Action::Log(format!("init: {} ignored", s.as_str()))),
            Input::PowerButton(what) => self.request_shutdown(&what, now, &mut out),
            Input::NetworkUp => {
                if !self.fetch_started {
                    self.fetch_started = true;
                    if self.config.is_none() {
                        self.standby("config: fetching user-data", &mut out);
                    }
                    out.push(Action::FetchConfig);
                }
            }
            Input::ConfigRejected(r) => {
                if let Some(listen) = r.health_listen {
                    self.health_listen = listen;
                }
                self.standby(&r.health, &mut out);
            }
            Input::ConfigAccepted(config) => {
                self.health_listen = config.health_listen;
                self.config = Some(config);
                if self.shutdown.is_none() {
                    self.start_service(&mut out);
                }
            }
            Input::Spawned { pid } => {
                self.spawning = false;
                let config = self.config.as_ref().expect("spawned only with a config");
                out.push(Action::Log(format!(
                    "service: started pid {pid}: bastion run --config {} ({})",
                    config.path.display(),
                    config.origin
                )));
                self.service = Some((pid, now));
                if self.shutdown.is_some() {
                    // A shutdown came while it was starting: stop it like a running one.
                    self.shutdown = None;
                    self.request_shutdown("shutdown during start", now, &mut out);
                }
            }
            Input::SpawnFailed { error } => {
                self.spawning = false;
                let delay = self.backoff.after_failure(Duration::ZERO);
                out.push(Action::Log(format!(
                    "service: ERROR cannot start: {error}; trying again in {} s",
                    delay.as_secs()
                )));
                self.standby(&format!("service: cannot start: {error}"), &mut out);
                self.restart_at = Some(now + delay);
            }
            Input::ChildExited { pid, how } => {
                if let Some((service, started)) = self.service {
                    if service == pid {
                        self.service = None;
                        self.on_service_exit(pid, &how, now.saturating_duration_since(started), now, &mut out);
                    }
                }
            }
        }
        self.on_time(now, &mut out);
        if self.shutdown.is_some() && self.service.is_none() && !self.spawning {
            out.push(Action::StopStandby);
            if self.ending == Ending::Exit {
                out.push(Action::Log("shutdown: done; exiting (bastion init, so no power-off)".into()));
            }
            out.push(Action::Finish(self.ending));
            self.finished = true;
        }
        out
    }

    fn on_time(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.restart_at.is_some_and(|at| at <= now) {
            self.restart_at = None;
            if self.shutdown.is_none() {
                self.start_service(out);
            }
        }
        if let (Some(Some(kill_at)), Some((pid, _))) = (self.shutdown, self.service) {
            if kill_at <= now {
                out.push(Action::Log(format!(
                    "shutdown: service (pid {pid}) still running after its drain time; killing it"
                )));
                out.push(Action::Kill { pid, signal: Signal::SIGKILL });
                // Reaped as a ChildExited; do not kill again.
                self.shutdown = Some(None);
            }
        }
    }

    fn standby(&mut self, reason: &str, out: &mut Vec<Action>) {
        if self.service.is_none() {
            out.push(Action::Standby { listen: self.health_listen, reason: reason.to_string() });
        }
    }

    fn start_service(&mut self, out: &mut Vec<Action>) {
        let Some(config) = self.config.clone() else { return };
        if self.service.is_some() || self.spawning {
            return;
        }
        out.push(Action::StopStandby);
        out.push(Action::Spawn { config: config.path });
        self.spawning = true;
    }

    fn on_service_exit(&mut self, pid: i32, how: &str, ran_for: Duration, now: Instant, out: &mut Vec<Action>) {
        if self.shutdown.is_some() {
            out.push(Action::Log(format!("shutdown: service (pid {pid}) stopped: {how}")));
            return;
        }
        let delay = self.backoff.after_failure(ran_for);
        out.push(Action::Log(format!(
            "service: pid {pid} {how} after {:.1} s; restarting in {} s",
            ran_for.as_secs_f64(),
            delay.as_secs()
        )));
        self.standby(&format!("service: restarting after {how}"), out);
        self.restart_at = Some(now + delay);
    }

    fn request_shutdown(&mut self, what: &str, now: Instant, out: &mut Vec<Action>) {
        if self.shutdown.is_some() {
            if let Some((pid, _)) = self.service {
                out.push(Action::Log(format!("shutdown: {what} again: killing the service (pid {pid}) now")));
                out.push(Action::Kill { pid, signal: Signal::SIGKILL });
            }
            return;
        }
        self.restart_at = None;
        let drain = self.config.as_ref().map(|c| c.drain_seconds).unwrap_or(0);
        match self.service {
            Some((pid, _)) => {
                out.push(Action::Log(format!(
                    "shutdown: {what}: draining (service pid {pid} answers 503 and keeps forwarding for {drain} s), then {}",
                    self.ending.text()
                )));
                out.push(Action::Kill { pid, signal: Signal::SIGTERM });
                self.shutdown = Some(Some(now + Duration::from_secs(drain) + DRAIN_GRACE));
            }
            None => {
                out.push(Action::Log(format!(
                    "shutdown: {what}: no service running, nothing to drain; {}",
                    self.ending.text()
                )));
                self.shutdown = Some(None);
            }
        }
    }
}

/// "exit status 1", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: &nix::sys::wait::WaitStatus) -> String {
    use nix::sys::wait::WaitStatus;
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
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    fn listen() -> SocketAddr {
        "0.0.0.0:8080".parse().unwrap()
    }

    fn accepted(drain: u64) -> Accepted {
        Accepted {
            path: "/run/bastion/bastion.toml".into(),
            origin: "user-data".into(),
            health_listen: listen(),
            drain_seconds: drain,
        }
    }

    fn logs(actions: &[Action]) -> Vec<&str> {
        actions.iter().filter_map(|a| if let Action::Log(l) = a { Some(l.as_str()) } else { None }).collect()
    }

    fn without_logs(actions: Vec<Action>) -> Vec<Action> {
        actions.into_iter().filter(|a| !matches!(a, Action::Log(_))).collect()
    }

    /// A machine with a running service (pid 42) started at `t0`.
    fn running(t0: Instant, drain: u64) -> Supervisor {
        let (mut s, _) = Supervisor::new(Ending::Exit, listen(), "network: waiting for a DHCP lease");
        s.handle(Input::NetworkUp, t0);
        s.handle(Input::ConfigAccepted(accepted(drain)), t0);
        s.handle(Input::Spawned { pid: 42 }, t0);
        s
    }

    #[test]
    fn boot_fetches_the_config_then_starts_the_service() {
        let t0 = Instant::now();
        let (mut s, first) = Supervisor::new(Ending::Exit, listen(), "network: waiting for a DHCP lease");
        assert_eq!(
            first,
            vec![Action::Standby { listen: listen(), reason: "network: waiting for a DHCP lease".into() }]
        );
        let a = s.handle(Input::NetworkUp, t0);
        assert_eq!(
            a,
            vec![
                Action::Standby { listen: listen(), reason: "config: fetching user-data".into() },
                Action::FetchConfig
            ]
        );
        // A second lease does not fetch again.
        assert_eq!(s.handle(Input::NetworkUp, t0), vec![]);
        let rejected = Rejected {
            reason: "config: user-data:1: file: TOML syntax".into(),
            health: "config: user-data rejected (1 problem), see the serial console".into(),
            health_listen: Some("0.0.0.0:9090".parse().unwrap()),
        };
        let a = s.handle(Input::ConfigRejected(rejected.clone()), t0);
        assert_eq!(a, vec![Action::Standby { listen: "0.0.0.0:9090".parse().unwrap(), reason: rejected.health }]);
        let a = s.handle(Input::ConfigAccepted(accepted(5)), t0);
        assert_eq!(a, vec![Action::StopStandby, Action::Spawn { config: "/run/bastion/bastion.toml".into() }]);
        let a = s.handle(Input::Spawned { pid: 42 }, t0);
        assert_eq!(
            logs(&a),
            vec!["service: started pid 42: bastion run --config /run/bastion/bastion.toml (user-data)"]
        );
        assert_eq!(s.service_pid(), Some(42));
    }

    #[test]
    fn a_crashing_service_is_restarted_with_backoff_and_reset_after_good_running() {
        let t0 = Instant::now();
        let mut s = running(t0, 5);
        let mut now = t0;
        let mut delays = Vec::new();
        for pid in 42..47 {
            now += Duration::from_secs(2);
            let a = s.handle(Input::ChildExited { pid, how: "exit status 1".into() }, now);
            assert!(a.contains(&Action::Standby {
                listen: listen(),
                reason: "service: restarting after exit status 1".into()
            }));
            let at = s.next_wakeup().unwrap();
            delays.push(at.duration_since(now).as_secs());
            // Nothing before the time comes...
            assert_eq!(without_logs(s.handle(Input::Tick, at - Duration::from_millis(1))), vec![]);
            // ...then a restart.
            assert_eq!(
                without_logs(s.handle(Input::Tick, at)),
                vec![Action::StopStandby, Action::Spawn { config: "/run/bastion/bastion.toml".into() }]
            );
            now = at;
            s.handle(Input::Spawned { pid: pid + 1 }, now);
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16]);
        // After a minute of good running the delay starts over.
        now += Duration::from_secs(61);
        s.handle(Input::ChildExited { pid: 47, how: "killed by signal 9 (SIGKILL)".into() }, now);
        assert_eq!(s.next_wakeup().unwrap().duration_since(now).as_secs(), 1);
        // An orphan's exit changes nothing.
        assert_eq!(s.handle(Input::ChildExited { pid: 1234, how: "exit status 0".into() }, now), vec![]);
    }

    #[test]
    fn shutdown_drains_then_kills_a_service_that_does_not_stop_then_finishes() {
        let t0 = Instant::now();
        let mut s = running(t0, 5);
        let a = s.handle(Input::PowerButton("power button (/dev/input/event0 Power Button)".into()), t0);
        assert_eq!(without_logs(a.clone()), vec![Action::Kill { pid: 42, signal: Signal::SIGTERM }]);
        assert!(
            logs(&a)[0].contains("draining (service pid 42 answers 503 and keeps forwarding for 5 s), then exit"),
            "{a:?}"
        );
        let kill_at = s.next_wakeup().unwrap();
        assert_eq!(kill_at.duration_since(t0), Duration::from_secs(5) + DRAIN_GRACE);
        let a = s.handle(Input::Tick, kill_at);
        assert_eq!(without_logs(a), vec![Action::Kill { pid: 42, signal: Signal::SIGKILL }]);
        assert_eq!(s.handle(Input::Tick, kill_at + Duration::from_secs(1)), vec![], "killed once");
        let a = s.handle(Input::ChildExited { pid: 42, how: "killed by signal 9 (SIGKILL)".into() }, kill_at);
        assert_eq!(without_logs(a), vec![Action::StopStandby, Action::Finish(Ending::Exit)]);
        assert!(s.finished());
    }

    #[test]
    fn a_second_signal_kills_at_once_and_stray_signals_are_ignored() {
        let t0 = Instant::now();
        let mut s = running(t0, 30);
        assert_eq!(logs(&s.handle(Input::Signal(Signal::SIGHUP), t0)), vec!["init: SIGHUP ignored"]);
        s.handle(Input::Signal(Signal::SIGTERM), t0);
        let a = s.handle(Input::Signal(Signal::SIGINT), t0);
        assert_eq!(without_logs(a), vec![Action::Kill { pid: 42, signal: Signal::SIGKILL }]);
        let a = s.handle(Input::ChildExited { pid: 42, how: "exit status 0".into() }, t0);
        assert!(a.contains(&Action::Finish(Ending::Exit)));
    }

    #[test]
    fn shutdown_without_a_service_finishes_at_once_and_never_restarts() {
        let t0 = Instant::now();
        let (mut s, _) = Supervisor::new(Ending::PowerOff, listen(), "network: waiting for a DHCP lease");
        let a = s.handle(Input::Signal(Signal::SIGTERM), t0);
        assert_eq!(logs(&a)[0], "shutdown: SIGTERM: no service running, nothing to drain; power off");
        assert!(a.contains(&Action::Finish(Ending::PowerOff)));
        // A config that arrives now starts nothing.
        assert_eq!(s.handle(Input::ConfigAccepted(accepted(5)), t0), vec![]);
    }

    #[test]
    fn a_spawn_failure_is_retried_and_a_shutdown_during_start_stops_the_new_service() {
        let t0 = Instant::now();
        let (mut s, _) = Supervisor::new(Ending::Exit, listen(), "x");
        s.handle(Input::ConfigAccepted(accepted(2)), t0);
        let a = s.handle(Input::SpawnFailed { error: "ENOMEM".into() }, t0);
        assert!(a.contains(&Action::Standby { listen: listen(), reason: "service: cannot start: ENOMEM".into() }));
        let at = s.next_wakeup().unwrap();
        assert!(without_logs(s.handle(Input::Tick, at))
            .contains(&Action::Spawn { config: "/run/bastion/bastion.toml".into() }));
        // SIGTERM arrives before the spawn is answered: nothing is finished yet...
        let a = s.handle(Input::Signal(Signal::SIGTERM), at);
        assert!(!a.iter().any(|x| matches!(x, Action::Finish(_))), "{a:?}");
        // ...and the service that then turns up is drained at once.
        let a = s.handle(Input::Spawned { pid: 7 }, at);
        assert!(a.contains(&Action::Kill { pid: 7, signal: Signal::SIGTERM }), "{a:?}");
    }

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
