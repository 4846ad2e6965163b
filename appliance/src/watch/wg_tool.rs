//! The same two operations as [`super::uapi`] through the `wg` tool (wireguard-tools), for
//! interfaces that have no API socket: kernel WireGuard, which `wg` reaches over netlink. `wg
//! show IF dump` is translated into the API's `get` answer and our `set` lines into one `wg set`
//! command, so the watcher's logic is the same for both. The translations are pure functions
//! with tests; only [`WgTool`] runs the program.
//!
//! Tested here against wireguard-go (for which `wg` uses the API socket); the development
//! machine has no WireGuard kernel module, so the kernel path itself is untested.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine as _;
use zeroize::Zeroizing;

use super::uapi::{parse_get, Device, UapiError};

fn b64_to_hex(key: &str) -> Option<String> {
    let bytes = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(key).ok()?);
    (bytes.len() == 32).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn hex_to_b64(hex: &str) -> Option<String> {
    if hex.len() != 64 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..32).map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    let bytes = Zeroizing::new(bytes?);
    Some(base64::engine::general_purpose::STANDARD.encode(&*bytes))
}

fn bad(line: usize, message: &str) -> UapiError {
    UapiError::Answer { line, message: format!("wg show dump: {message}") }
}

/// `wg show IF dump` → the text of an API `get` answer. The interface's private key (first
/// line) is dropped.
pub fn dump_to_get(dump: &str) -> Result<Zeroizing<String>, UapiError> {
    let mut out = Zeroizing::new(String::new());
    for (i, line) in dump.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        if i == 0 {
            let port = fields.get(2).ok_or_else(|| bad(1, "expected the interface line"))?;
            out.push_str(&format!("listen_port={port}\n"));
            continue;
        }
        let [public, psk, endpoint, allowed, handshake, rx, tx, keepalive] = fields[..] else {
            return Err(bad(i + 1, "expected 8 tab-separated fields"));
        };
        let public = b64_to_hex(public).ok_or_else(|| bad(i + 1, "public key: expected base64 of 32 bytes"))?;
        out.push_str(&format!("public_key={public}\n"));
        if psk != "(none)" {
            let psk = Zeroizing::new(b64_to_hex(psk).ok_or_else(|| bad(i + 1, "preshared key: expected base64"))?);
            out.push_str(&format!("preshared_key={}\n", psk.as_str()));
        }
        if endpoint != "(none)" {
            out.push_str(&format!("endpoint={endpoint}\n"));
        }
        if allowed != "(none)" {
            for net in allowed.split(',') {
                out.push_str(&format!("allowed_ip={net}\n"));
            }
        }
        out.push_str(&format!("last_handshake_time_sec={handshake}\nrx_bytes={rx}\ntx_bytes={tx}\n"));
        if keepalive != "off" {
            out.push_str(&format!("persistent_keepalive_interval={keepalive}\n"));
        }
    }
    Ok(out)
}

/// Our `set` lines → the arguments of one `wg set IF ...` and what to feed it on stdin (a
/// preshared key, given as `preshared-key /dev/stdin`; at most one).
pub fn set_to_args(lines: &str) -> Result<(Vec<String>, Option<Zeroizing<String>>), String> {
    let mut args = Vec::new();
    let mut stdin = None;
    let mut allowed: Vec<String> = Vec::new();
    let flush = |args: &mut Vec<String>, allowed: &mut Vec<String>| {
        if !allowed.is_empty() {
            args.push("allowed-ips".into());
            args.push(allowed.join(","));
            allowed.clear();
        }
    };
    for line in lines.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line.split_once('=').ok_or_else(|| format!("not key=value: {}", line.len()))?;
        match key {
            "listen_port" => args.extend(["listen-port".into(), value.to_string()]),
            "public_key" => {
                flush(&mut args, &mut allowed);
                args.push("peer".into());
                args.push(hex_to_b64(value).ok_or("public_key: expected 64 hex digits")?);
            }
            "remove" if value == "true" => args.push("remove".into()),
            "replace_allowed_ips" => {}
            "preshared_key" => {
                if stdin.is_some() {
                    return Err("more than one preshared key".into());
                }
                stdin = Some(Zeroizing::new(hex_to_b64(value).ok_or("preshared_key: expected 64 hex digits")?));
                args.extend(["preshared-key".into(), "/dev/stdin".into()]);
            }
            "endpoint" => args.extend(["endpoint".into(), value.to_string()]),
            "persistent_keepalive_interval" => args.extend(["persistent-keepalive".into(), value.to_string()]),
            "allowed_ip" => allowed.push(value.to_string()),
            other => return Err(format!("no wg option for {other}")),
        }
    }
    flush(&mut args, &mut allowed);
    Ok((args, stdin))
}

/// An interface reached through the `wg` program.
pub struct WgTool {
    interface: String,
}

impl WgTool {
    pub fn new(interface: &str) -> WgTool {
        WgTool { interface: interface.to_string() }
    }

    pub fn get(&self) -> Result<Device, UapiError> {
        let out = Command::new("wg")
            .args(["show", &self.interface, "dump"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.io(e))?;
        let stdout = Zeroizing::new(out.stdout);
        if !out.status.success() {
            return Err(self.failed("show", &out.stderr));
        }
        let text = std::str::from_utf8(&stdout).map_err(|_| bad(0, "not UTF-8"))?;
        parse_get(&dump_to_get(text)?)
    }

    pub fn set(&self, lines: &str) -> Result<(), UapiError> {
        let (args, secret) = set_to_args(lines).map_err(UapiError::Tool)?;
        let mut child = Command::new("wg")
            .arg("set")
            .arg(&self.interface)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.io(e))?;
        if let Some(mut stdin) = child.stdin.take() {
            if let Some(secret) = &secret {
                stdin.write_all(secret.as_bytes()).map_err(|e| self.io(e))?;
            }
        }
        let out = child.wait_with_output().map_err(|e| self.io(e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.failed("set", &out.stderr))
        }
    }

    fn io(&self, source: std::io::Error) -> UapiError {
        UapiError::Socket { path: format!("wg ({})", self.interface).into(), source }
    }

    fn failed(&self, what: &str, stderr: &[u8]) -> UapiError {
        let text = String::from_utf8_lossy(stderr);
        UapiError::Tool(format!("wg {what} {}: {}", self.interface, crate::keys::redact_key_like(text.trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUB: &str = "uFmW/sycfx/G0lcqdu2hHVm80gvo5UOxXOS9hajnWjM=";
    const PUB_HEX: &str = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";
    const PSK: &str = "GIUVCT6VL18i6GXO8wEucvi18LWYrAMJ1drM47cPz1I=";

    #[test]
    fn a_dump_reads_as_the_api_answer() {
        let dump = format!(
            "cGlyaXZhdGU=\tcHVibGlj\t41000\toff\n{PUB}\t{PSK}\t192.0.2.1:51820\t10.100.0.0/24,10.0.1.0/24\t1700000000\t2224\t38333\t25\n"
        );
        let device = parse_get(&dump_to_get(&dump).unwrap()).unwrap();
        assert_eq!(device.listen_port, 41000);
        let p = &device.peers[0];
        assert_eq!(p.public_key, PUB_HEX);
        assert_eq!((p.counters.rx_bytes, p.counters.tx_bytes), (2224, 38333));
        assert_eq!(p.endpoint.as_deref(), Some("192.0.2.1:51820"));
        assert!(p.allows("10.0.1.7".parse().unwrap()));
        // And what a move sends back is one wg set with the same settings.
        let lines = format!("listen_port=0\n{}", p.recreate().as_str());
        let (args, stdin) = set_to_args(&lines).unwrap();
        let joined = args.join(" ");
        assert!(joined.starts_with(&format!("listen-port 0 peer {PUB} remove peer {PUB} ")), "{joined}");
        for part in [
            "preshared-key /dev/stdin",
            "endpoint 192.0.2.1:51820",
            "allowed-ips 10.100.0.0/24,10.0.1.0/24",
            "persistent-keepalive 25",
        ] {
            assert!(joined.contains(part), "{part} in {joined}");
        }
        assert_eq!(stdin.as_deref().map(String::as_str), Some(PSK));
        assert!(!args.iter().any(|a| a == PSK), "the preshared key goes on stdin, not the command line");
    }

    #[test]
    fn bad_dumps_and_lines_are_errors() {
        assert!(dump_to_get("x\ty\t1\toff\nshort\tline\n").is_err());
        assert!(dump_to_get("x\ty\t1\toff\nnotbase64\t(none)\t(none)\t(none)\t0\t0\t0\toff\n").is_err());
        assert!(set_to_args("fwmark=1\n").is_err());
        assert!(set_to_args("public_key=zz\n").is_err());
    }
}
