//! Signals to init and the end of the machine.
//!
//! Every thread of init has SIGTERM, SIGINT, SIGHUP and SIGCHLD blocked; one thread takes them
//! with `sigwait` and hands them to the supervisor as events. (PID 1 gets no signal it has no
//! handler for — unless the signal is blocked, which is why this works for PID 1 too.) Ctrl-Alt-Del
//! on the appliance is turned into SIGINT (instead of an instant reboot), so it drains like the
//! power button. `power_off` is the last step: sync, then `reboot(RB_POWER_OFF)`.

use nix::sys::signal::{SigSet, Signal};

/// The signals init handles; blocked in every thread.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGCHLD, Signal::SIGUSR1, Signal::SIGUSR2] {
        set.add(s);
    }
    set
}

/// Blocks the handled signals in the calling thread; call before any other thread exists so
/// they all inherit the mask. (Children get a clean mask: `std::process::Command` resets it.)
pub fn block_signals() {
    if let Err(e) = handled().thread_block() {
        crate::log!("shutdown: ERROR cannot block signals: {e}");
    }
}

/// Starts the thread that turns signals into `deliver(signal)` calls.
pub fn forward_signals(deliver: impl Fn(Signal) + Send + 'static) {
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
        let set = handled();
        loop {
            match set.wait() {
                Ok(signal) => deliver(signal),
                Err(e) => {
                    crate::log!("shutdown: ERROR sigwait: {e}");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
    });
    if let Err(e) = spawned {
        crate::log!("shutdown: ERROR cannot start the signal thread: {e}");
    }
}

/// On the appliance: Ctrl-Alt-Del sends SIGINT to PID 1 rather than rebooting at once.
pub fn ctrl_alt_del_to_sigint() {
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        crate::log!("shutdown: cannot route Ctrl-Alt-Del to init: {e}");
    }
}

/// Flushes file systems and powers the machine off. Only returns if the kernel refuses; then
/// PID 1 must still not exit, so the caller parks.
pub fn power_off() {
    crate::log!("shutdown: sync and power off");
    nix::unistd::sync();
    let Err(e) = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    crate::log!("shutdown: ERROR power off refused: {e}");
}
