//! Structured log lines: one event per line on stderr (the serial console on the appliance).
//!
//! Every line starts with the time since boot (CLOCK_BOOTTIME) in the format of the kernel's own
//! console lines, so a console capture reads as one timeline from firmware to health 200. The
//! kernel's printk clock starts a little earlier than CLOCK_BOOTTIME (measured under QEMU:
//! 0.06–0.17 s), so an early line of ours can carry a smaller time than the kernel line before
//! it. Callers pass only facts that are safe to print; as a second line of defence every line
//! goes through `keys::redact_key_like`, so a key-like fragment of what an operator typed
//! (a path, a field name) never reaches the console.

use std::io::Write;

/// Seconds since the machine booted, as the kernel counts them for its own log lines.
pub fn uptime_seconds() -> f64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9,
        Err(_) => 0.0,
    }
}

/// Writes one log line; use the [`crate::log!`] macro rather than calling this directly.
pub fn write_line(args: std::fmt::Arguments) {
    let text = args.to_string();
    let line = format!("[{:>12.6}] bastion: {}\n", uptime_seconds(), crate::keys::redact_key_like(&text));
    // One write call per line so lines from different threads never interleave mid-line.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `log!("peer {} handshake completed", name)`: one event, one line.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::write_line(format_args!($($arg)*)) };
}
