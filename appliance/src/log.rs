//! Structured log lines: one event per line on stderr (the serial console on the appliance).
//!
//! Every line starts with the time since boot (CLOCK_BOOTTIME) in the format of the kernel's own
//! console lines, so a console capture reads as one timeline from firmware to health 200. The
//! kernel's printk clock starts a little earlier than CLOCK_BOOTTIME (measured under QEMU:
//! 0.06–0.17 s), so an early line of ours can carry a smaller time than the kernel line before
//! it. Callers pass only facts that are safe to print; as a second line of defence every line
//! goes through `keys::redact_key_like`, so a key-like fragment of what an operator typed
//! (a path, a field name) never reaches the console.
//!
//! `[log] format = "json"` makes every line one JSON object (`time`, `uptime`, and `message` or
//! `audit`); an audit record ([`write_audit`]) is a JSON object in either format. A tee
//! ([`set_tee`]: the CloudWatch shipper) also gets every line, always as JSON, with its Unix time.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// How lines look on the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

static FORMAT: AtomicU8 = AtomicU8::new(0);

/// Where every line also goes (Unix milliseconds, the line as JSON).
pub type Tee = Arc<dyn Fn(i64, &str) + Send + Sync>;
static TEE: RwLock<Option<Tee>> = RwLock::new(None);

pub fn set_format(format: LogFormat) {
    FORMAT.store(format as u8, Ordering::Relaxed);
}

fn format() -> LogFormat {
    if FORMAT.load(Ordering::Relaxed) == LogFormat::Json as u8 {
        LogFormat::Json
    } else {
        LogFormat::Text
    }
}

/// Every line from now on also goes to `tee` (None: to nothing more).
pub fn set_tee(tee: Option<Tee>) {
    *TEE.write().unwrap_or_else(|e| e.into_inner()) = tee;
}

/// Milliseconds since the Unix epoch (the wall clock: CloudWatch's and the audit records' time).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The JSON form of a line: `{"time", "uptime", KEY: value}`.
fn json_line(now_ms: i64, uptime: f64, key: &str, value: serde_json::Value) -> String {
    let time = bastion_aws::time::UtcTime(now_ms.div_euclid(1000)).rfc3339();
    let time = format!("{}.{:03}Z", time.trim_end_matches('Z'), now_ms.rem_euclid(1000));
    let mut object = serde_json::Map::new();
    object.insert("time".into(), time.into());
    object.insert("uptime".into(), serde_json::json!((uptime * 1e6).round() / 1e6));
    object.insert(key.into(), value);
    serde_json::Value::Object(object).to_string()
}

/// One line out: the console in its format, the tee as JSON.
fn emit(text_form: impl FnOnce(f64) -> String, key: &str, value: serde_json::Value) {
    let uptime = uptime_seconds();
    let now_ms = unix_ms();
    let tee = TEE.read().unwrap_or_else(|e| e.into_inner()).clone();
    let json = (format() == LogFormat::Json || tee.is_some()).then(|| json_line(now_ms, uptime, key, value));
    let line = match (format(), &json) {
        (LogFormat::Json, Some(json)) => format!("{json}\n"),
        _ => text_form(uptime),
    };
    // One write call per line so lines from different threads never interleave mid-line.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    if let (Some(tee), Some(json)) = (tee, json) {
        tee(now_ms, &json);
    }
}

/// Seconds since the machine booted, as the kernel counts them for its own log lines.
pub fn uptime_seconds() -> f64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9,
        Err(_) => 0.0,
    }
}

/// Writes one log line; use the [`crate::log!`] macro rather than calling this directly.
pub fn write_line(args: std::fmt::Arguments) {
    let text = crate::keys::redact_key_like(&args.to_string()).into_owned();
    emit(|uptime| format!("[{uptime:>12.6}] bastion: {text}\n"), "message", text.clone().into());
}

/// An audit record's text as the log writes it: its JSON, key-like runs hidden.
pub fn audit_text(record: &serde_json::Value) -> String {
    crate::keys::redact_key_like(&record.to_string()).into_owned()
}

/// Writes one audit record (a JSON object): `[uptime] bastion: audit {...}` as text, or
/// `{"time", "uptime", "audit": {...}}` as JSON. Redacted like every line.
pub fn write_audit(record: &serde_json::Value) {
    let text = audit_text(record);
    let value = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::Value::String(text.clone()));
    emit(|uptime| format!("[{uptime:>12.6}] bastion: audit {text}\n"), "audit", value);
}

/// `log!("peer {} handshake completed", name)`: one event, one line.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::write_line(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_the_time_and_the_message() {
        let line = json_line(1_700_000_000_123, 12.5, "message", "tunnel: wg0 up".into());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["uptime"], 12.5);
        assert_eq!(v["message"], "tunnel: wg0 up");
    }
}
