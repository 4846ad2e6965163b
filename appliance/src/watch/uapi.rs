//! The cross-platform userspace API of WireGuard (wireguard-go, boringtun-cli, the wireguard
//! apps): `get=1` and `set=1` over the interface's unix socket, `/var/run/wireguard/NAME.sock`.
//! Format: <https://www.wireguard.com/xplatform/>.
//!
//! [`parse_get`] is a pure function (fuzzed with the other parsers); [`Uapi`] does the socket
//! I/O. The answer to `get` holds the interface's private key and the peers' preshared keys:
//! the private key is never kept, preshared keys only inside the zeroized lines that re-create
//! a peer ([`UapiPeer::recreate`]), and none of them is ever shown.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ip_network::IpNetwork;
use zeroize::Zeroizing;

use super::stall::Counters;

/// The most of an answer read: a client interface has a handful of peers (each about 300 bytes).
const MAX_ANSWER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    #[error("{path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("line {line} of the answer: {message}")]
    Answer { line: usize, message: String },
    #[error("the interface refused the change (errno={0})")]
    Refused(i64),
    #[error("the answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
    /// The `wg` tool (kernel interfaces) failed or was given what it cannot say.
    #[error("{0}")]
    Tool(String),
}

/// What `get=1` says about the interface.
#[derive(Debug, Default)]
pub struct Device {
    pub listen_port: u16,
    pub peers: Vec<UapiPeer>,
}

#[derive(Debug)]
pub struct UapiPeer {
    /// Hex, as the API writes it: the peer's identity in this module (never logged).
    pub public_key: String,
    pub counters: Counters,
    pub last_handshake_sec: u64,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<IpNetwork>,
    /// The `set` lines that re-create the peer as it is (keys included).
    recreate: SetLines,
}

/// `set` lines that may hold a preshared key: zeroized when dropped, hidden from `Debug`.
struct SetLines(Zeroizing<String>);

impl std::fmt::Debug for SetLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<set lines, hidden>")
    }
}

impl UapiPeer {
    /// The `set` lines that remove the peer and add it again with the same settings: its
    /// sessions are gone, so the next packet starts a handshake from this side.
    pub fn recreate(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("public_key={}\nremove=true\n{}", self.public_key, self.recreate.0.as_str()))
    }

    /// Whether `address` is inside one of the peer's allowed IPs.
    pub fn allows(&self, address: std::net::IpAddr) -> bool {
        self.allowed_ips.iter().any(|net| net.contains(address))
    }
}

/// Reads the answer to `get=1` (without its final empty line).
pub fn parse_get(text: &str) -> Result<Device, UapiError> {
    let mut device = Device::default();
    let mut errno = None;
    for (i, line) in text.lines().enumerate() {
        let bad = |message: String| UapiError::Answer { line: i + 1, message };
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| bad("expected key=value".into()))?;
        let number = || value.parse::<u64>().map_err(|_| bad(format!("{key}: expected a number")));
        if key == "public_key" {
            if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("public_key: expected 64 hex digits".into()));
            }
            device.peers.push(UapiPeer {
                public_key: value.to_string(),
                counters: Counters { rx_bytes: 0, tx_bytes: 0 },
                last_handshake_sec: 0,
                endpoint: None,
                allowed_ips: Vec::new(),
                recreate: SetLines(Zeroizing::new(format!("public_key={value}\nreplace_allowed_ips=true\n"))),
            });
            continue;
        }
        match (device.peers.last_mut(), key) {
            (_, "errno") => errno = Some(number()?),
            (None, "listen_port") => {
                device.listen_port = u16::try_from(number()?).map_err(|_| bad("listen_port: expected a port".into()))?
            }
            (None, _) => {} // private_key, fwmark: not needed (and the key is not kept)
            (Some(peer), "rx_bytes") => peer.counters.rx_bytes = number()?,
            (Some(peer), "tx_bytes") => peer.counters.tx_bytes = number()?,
            (Some(peer), "last_handshake_time_sec") => peer.last_handshake_sec = number()?,
            (Some(peer), "endpoint") => {
                peer.endpoint = Some(value.to_string());
                peer.recreate.0.push_str(&format!("endpoint={value}\n"));
            }
            (Some(peer), "allowed_ip") => {
                let net =
                    value.parse::<IpNetwork>().map_err(|_| bad("allowed_ip: expected an address/prefix".into()))?;
                peer.allowed_ips.push(net);
                peer.recreate.0.push_str(&format!("allowed_ip={value}\n"));
            }
            (Some(peer), "preshared_key" | "persistent_keepalive_interval") => {
                if key == "persistent_keepalive_interval" {
                    number()?;
                }
                peer.recreate.0.push_str(&format!("{key}={value}\n"));
            }
            (Some(_), _) => {} // protocol_version, last_handshake_time_nsec...
        }
    }
    match errno {
        Some(0) | None => Ok(device),
        Some(e) => Err(UapiError::Refused(e as i64)),
    }
}

/// One interface's API socket.
pub struct Uapi {
    path: PathBuf,
}

impl Uapi {
    /// The socket wireguard-go makes for interface `name`.
    pub fn for_interface(name: &str) -> Uapi {
        Uapi { path: PathBuf::from(format!("/var/run/wireguard/{name}.sock")) }
    }

    pub fn at(path: &Path) -> Uapi {
        Uapi { path: path.to_path_buf() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self) -> Result<Device, UapiError> {
        let answer = self.exchange(b"get=1\n\n")?;
        parse_get(std::str::from_utf8(&answer).map_err(|_| UapiError::Answer { line: 0, message: "not UTF-8".into() })?)
    }

    /// Sends `set=1` with `lines` (each ending in a newline).
    pub fn set(&self, lines: &str) -> Result<(), UapiError> {
        let request = Zeroizing::new(format!("set=1\n{lines}\n"));
        let answer = self.exchange(request.as_bytes())?;
        let text = String::from_utf8_lossy(&answer);
        match text.trim().strip_prefix("errno=").map(|n| n.parse::<i64>()) {
            Some(Ok(0)) => Ok(()),
            Some(Ok(e)) => Err(UapiError::Refused(e)),
            _ => Err(UapiError::Answer { line: 1, message: "expected errno=N".into() }),
        }
    }

    fn exchange(&self, request: &[u8]) -> Result<Zeroizing<Vec<u8>>, UapiError> {
        let io = |source| UapiError::Socket { path: self.path.clone(), source };
        let mut stream = UnixStream::connect(&self.path).map_err(io)?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
        stream.set_write_timeout(Some(Duration::from_secs(5))).map_err(io)?;
        stream.write_all(request).map_err(io)?;
        let mut answer = Zeroizing::new(Vec::new());
        let mut chunk = [0u8; 4096];
        // The answer ends with an empty line; the peer may keep the connection open.
        while !answer.ends_with(b"\n\n") {
            let n = stream.read(&mut chunk).map_err(io)?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
            if answer.len() > MAX_ANSWER {
                return Err(UapiError::TooLarge);
            }
        }
        chunk.iter_mut().for_each(|b| *b = 0);
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a\n\
listen_port=12912\n\
public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\n\
preshared_key=188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52\n\
allowed_ip=192.168.4.4/32\n\
endpoint=[abcd:23::33%2]:51820\n\
last_handshake_time_sec=1700000000\n\
last_handshake_time_nsec=0\n\
tx_bytes=38333\n\
rx_bytes=2224\n\
persistent_keepalive_interval=25\n\
protocol_version=1\n\
public_key=58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376\n\
endpoint=182.122.22.19:3233\n\
allowed_ip=192.168.4.6/32\n\
allowed_ip=::/0\n\
tx_bytes=1212111\n\
rx_bytes=1929999999\n\
errno=0\n";

    #[test]
    fn the_answer_to_get_is_read() {
        let device = parse_get(ANSWER).unwrap();
        assert_eq!(device.listen_port, 12912);
        assert_eq!(device.peers.len(), 2);
        let p = &device.peers[0];
        assert_eq!(p.counters, Counters { rx_bytes: 2224, tx_bytes: 38333 });
        assert_eq!(p.last_handshake_sec, 1_700_000_000);
        assert!(p.allows("192.168.4.4".parse().unwrap()) && !p.allows("192.168.4.5".parse().unwrap()));
        assert!(device.peers[1].allows("2001:db8::1".parse().unwrap()));
        let recreate = p.recreate();
        assert_eq!(
            recreate.as_str(),
            "public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\nremove=true\n\
             public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\nreplace_allowed_ips=true\n\
             preshared_key=188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52\n\
             allowed_ip=192.168.4.4/32\nendpoint=[abcd:23::33%2]:51820\npersistent_keepalive_interval=25\n"
        );
        let shown = format!("{device:?}");
        assert!(!shown.contains("e84b5a6d") && !shown.contains("18851509"), "no key in Debug: {shown}");
    }

    #[test]
    fn bad_answers_are_errors_naming_the_line() {
        for (text, line) in [
            ("listen_port=70000\n", 1),
            ("public_key=xyz\n", 1),
            ("listen_port=1\npublic_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\nrx_bytes=-1\n", 3),
            ("garbage\n", 1),
        ] {
            match parse_get(text) {
                Err(UapiError::Answer { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(parse_get("errno=19\n"), Err(UapiError::Refused(19))));
    }
}
