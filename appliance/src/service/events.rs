//! What the main thread of `bastion run` waits for: the drain signals, SIGHUP (reload), a
//! `bastion reload` from the control socket, the next refresh of an SSM source. Every handled
//! signal is blocked in every thread and taken here with `sigtimedwait`, so no handler runs
//! and no signal is lost; stray ones are logged and waited past.

use crate::control::ReloadAnswer;
use crate::log;
use nix::sys::signal::{SigSet, Signal};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the wait looks at the control socket's requests between signals.
const SLICE: Duration = Duration::from_millis(50);

/// The signals that drain and stop the service.
const DRAIN_SIGNALS: [Signal; 2] = [Signal::SIGTERM, Signal::SIGINT];
/// Reads the config source again.
const RELOAD_SIGNAL: Signal = Signal::SIGHUP;
/// Signals that may arrive by accident and would otherwise kill or stop the process: logged and
/// ignored.
const STRAY_SIGNALS: [Signal; 11] = [
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGQUIT,
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

pub enum Event {
    /// A drain signal.
    Stop(Signal),
    /// Read the config source again; `reply` waits for the answer when `bastion reload` asked.
    Reload { reply: Option<mpsc::Sender<ReloadAnswer>>, why: &'static str },
}

pub fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in DRAIN_SIGNALS.into_iter().chain([RELOAD_SIGNAL]).chain(STRAY_SIGNALS) {
        set.add(signal);
    }
    set
}

/// The next event; at `refresh` (when there is one), a reload of the source.
pub fn next(
    signals: &SigSet,
    requests: &mpsc::Receiver<mpsc::Sender<ReloadAnswer>>,
    refresh: Option<Instant>,
) -> Event {
    loop {
        let until = refresh.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        if let Some(event) = next_until(signals, requests, until) {
            return event;
        }
        if refresh.is_some() {
            return Event::Reload { reply: None, why: "refresh" };
        }
    }
}

/// The next event before `deadline`, or `None` when the deadline came first.
pub fn next_until(
    signals: &SigSet,
    requests: &mpsc::Receiver<mpsc::Sender<ReloadAnswer>>,
    deadline: Instant,
) -> Option<Event> {
    loop {
        if let Ok(reply) = requests.try_recv() {
            return Some(Event::Reload { reply: Some(reply), why: "bastion reload" });
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        match wait_signal(signals, left.min(SLICE)) {
            Some(signal) if DRAIN_SIGNALS.contains(&signal) => return Some(Event::Stop(signal)),
            Some(RELOAD_SIGNAL) => return Some(Event::Reload { reply: None, why: "SIGHUP" }),
            Some(signal) => {
                log!("{} ignored: SIGTERM or SIGINT stop bastion run (with a drain), SIGHUP reloads", signal.as_str())
            }
            None => {}
        }
    }
}

/// One `sigtimedwait` of at most `timeout`.
fn wait_signal(signals: &SigSet, timeout: Duration) -> Option<Signal> {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as libc::c_long };
    // SAFETY: a valid signal set and timespec; no out-parameter is written (null).
    let rc = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &ts) };
    if rc > 0 {
        Signal::try_from(rc).ok()
    } else {
        None
    }
}
