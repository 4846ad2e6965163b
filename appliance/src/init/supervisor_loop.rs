//! The thin shell around `supervise::Supervisor`: waits for events from init's threads (signals,
//! the power button, the network, the config) and for the machine's wakeups, reaps children
//! (PID 1 inherits every orphan), and carries out the machine's actions — log lines, the
//! standby 503 responder, spawning and signalling the service, power off.

use super::config_source::{Accepted, Rejected};
use super::standby_health::StandbyHealth;
use super::supervise::{describe_exit, Action, Ending, Input, Supervisor};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// What init's threads send.
pub enum Event {
    Signal(Signal),
    PowerButton(String),
    /// The primary interface has its first lease.
    NetworkUp,
    ConfigRejected(Rejected),
    ConfigAccepted(Accepted),
}

/// Runs the machine until it finishes. With `Ending::PowerOff` it never returns.
pub fn run(
    ending: Ending,
    health_listen: SocketAddr,
    reason: &str,
    start_config: Box<dyn FnOnce() + Send>,
    events: Receiver<Event>,
) {
    let (mut machine, first) = Supervisor::new(ending, health_listen, reason);
    let mut shell = Shell { standby: None, start_config: Some(start_config) };
    let mut inputs = VecDeque::new();
    shell.carry_out(first, &mut inputs);
    loop {
        while let Some(input) = inputs.pop_front() {
            let actions = machine.handle(input, Instant::now());
            if let Some(ending) = shell.carry_out(actions, &mut inputs) {
                finish(ending);
                return;
            }
        }
        let wait = machine
            .next_wakeup()
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600));
        match events.recv_timeout(wait) {
            Ok(Event::Signal(Signal::SIGCHLD)) => reap(&mut inputs),
            Ok(Event::Signal(s)) => inputs.push_back(Input::Signal(s)),
            Ok(Event::PowerButton(what)) => inputs.push_back(Input::PowerButton(what)),
            Ok(Event::NetworkUp) => inputs.push_back(Input::NetworkUp),
            Ok(Event::ConfigRejected(r)) => inputs.push_back(Input::ConfigRejected(r)),
            Ok(Event::ConfigAccepted(a)) => inputs.push_back(Input::ConfigAccepted(a)),
            Err(RecvTimeoutError::Timeout) => inputs.push_back(Input::Tick),
            // Every sender gone cannot happen (the signal thread lives forever); do not spin.
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_secs(1));
                inputs.push_back(Input::Tick);
            }
        }
    }
}

struct Shell {
    standby: Option<StandbyHealth>,
    start_config: Option<Box<dyn FnOnce() + Send>>,
}

impl Shell {
    /// Does what the machine said; answers (a spawn's pid) go back as inputs. Returns the
    /// ending once the machine is finished.
    fn carry_out(&mut self, actions: Vec<Action>, inputs: &mut VecDeque<Input>) -> Option<Ending> {
        for action in actions {
            match action {
                Action::Log(line) => crate::log!("{line}"),
                Action::FetchConfig => {
                    if let Some(start) = self.start_config.take() {
                        start();
                    }
                }
                Action::Standby { listen, reason } => self.standby(listen, &reason),
                Action::StopStandby => {
                    if let Some(s) = self.standby.take() {
                        s.stop();
                    }
                }
                Action::Spawn { config } => match spawn_service(&config) {
                    Ok(pid) => inputs.push_back(Input::Spawned { pid }),
                    Err(e) => inputs.push_back(Input::SpawnFailed { error: e.to_string() }),
                },
                Action::Kill { pid, signal } => {
                    if let Err(e) = kill(Pid::from_raw(pid), signal) {
                        crate::log!("shutdown: ERROR {} to service pid {pid}: {e}", signal.as_str());
                    }
                }
                Action::Finish(ending) => return Some(ending),
            }
        }
        None
    }

    /// Shows `reason` on the 503 responder, (re)starting it when the address moved.
    fn standby(&mut self, listen: SocketAddr, reason: &str) {
        if let Some(s) = &self.standby {
            if s.listen() == listen {
                s.set_reason(reason);
                return;
            }
        }
        if let Some(old) = self.standby.take() {
            old.stop();
        }
        match StandbyHealth::start(listen, reason) {
            Ok(s) => self.standby = Some(s),
            Err(e) => crate::log!("health: ERROR cannot serve 503 on {listen}: {e}"),
        }
    }
}

/// Reaps every exited child; PID 1 inherits orphans, so not all of them are the service.
fn reap(inputs: &mut VecDeque<Input>) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    inputs.push_back(Input::ChildExited { pid: pid.as_raw(), how: describe_exit(&status) });
                }
            }
        }
    }
}

fn finish(ending: Ending) {
    if ending == Ending::PowerOff {
        super::shutdown::power_off();
        // The kernel refused to power off; PID 1 must not exit (that panics the kernel).
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// `bastion run --config FILE` from our own executable.
fn spawn_service(config: &Path) -> std::io::Result<i32> {
    use std::os::unix::process::CommandExt;
    let child = std::process::Command::new("/proc/self/exe")
        .arg0("bastion")
        .arg("run")
        .arg("--config")
        .arg(config)
        // On EC2 the service learns from IMDS that Auto Scaling is taking the instance out.
        .env(crate::service::LIFECYCLE_ENABLE_VAR, "1")
        .stdin(std::process::Stdio::null())
        .spawn()?;
    // The child is reaped by `reap` (waitpid -1), never through `Child`.
    Ok(child.id() as i32)
}
