//! `bastion run` under test: a config written from a [`BastionSetup`] for a [`Topology`], the
//! process in the bastion namespace, and its health responder queried from inside that
//! namespace. The binary comes from `BASTION_BIN` (the Makefile sets it).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::{self, HttpResponse};
use crate::process::Process;
use crate::topology::{Topology, BASTION_TUNNEL_V4, BASTION_TUNNEL_V6, LISTEN_PORT};
use crate::wait::wait_until;

/// The `bastion` binary under test, from `BASTION_BIN` (the Makefile sets it). Panics, saying
/// what to do, when it is not set: a test never passes by doing nothing. A relative path that
/// is not a file from here (cargo runs tests in `tests/`) is taken from the workspace root, so
/// `BASTION_BIN=target/debug/bastion` works.
pub fn binary() -> PathBuf {
    let given = PathBuf::from(std::env::var_os("BASTION_BIN").unwrap_or_else(|| {
        panic!("BASTION_BIN is not set: run `make integration-test`, or set BASTION_BIN=target/release/bastion")
    }));
    let path = if given.is_relative() && !given.is_file() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&given)
    } else {
        given
    };
    assert!(path.is_file(), "BASTION_BIN={} is not a file: build it first (`make build`)", path.display());
    path
}

/// The environment variable that makes `bastion run` poll IMDS for the Auto Scaling lifecycle
/// state (init sets it on the appliance).
pub const LIFECYCLE_VAR: &str = "BASTION_LIFECYCLE_FROM_IMDS";

/// What varies between tests' configs; everything else follows the topology.
#[derive(Clone, Debug)]
pub struct BastionSetup {
    pub interface_name: String,
    pub drain_seconds: u32,
    /// Port of the health responder, on 0.0.0.0 in the bastion namespace.
    pub health_port: u16,
    /// `[nat] reach`: default, private host 0's v4 and v6 addresses only, so every other
    /// private host is outside reach.
    pub nat_reach: Vec<String>,
    /// Per-peer `reach`, by client index (missing = none).
    pub peer_reach: Vec<Vec<String>>,
    pub masquerade: bool,
    /// TOML appended verbatim (extra sections).
    pub extra_toml: String,
    /// The clients configured as peers, by index; `None` = every client of the topology.
    pub peers: Option<Vec<usize>>,
    /// Words before the binary on its command line (e.g. `setpriv --bounding-set=...`).
    pub command_prefix: Vec<String>,
    /// Environment variables of the process (e.g. `AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    pub env: Vec<(String, String)>,
    /// `private_key_ssm = "NAME"` instead of the key in the file.
    pub key_in_ssm: Option<String>,
}

impl Default for BastionSetup {
    fn default() -> Self {
        BastionSetup {
            interface_name: "wg0".into(),
            drain_seconds: 3,
            health_port: 8080,
            nat_reach: vec!["10.0.1.10/32".into(), "fd00:1::a/128".into()],
            peer_reach: Vec::new(),
            masquerade: true,
            extra_toml: String::new(),
            peers: None,
            command_prefix: Vec::new(),
            env: Vec::new(),
            key_in_ssm: None,
        }
    }
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

impl BastionSetup {
    /// The config for `topo`: the bastion's key and tunnel addresses, one peer per client.
    pub fn to_toml(&self, topo: &Topology) -> String {
        let mut s = String::new();
        writeln!(s, "[interface]").unwrap();
        match &self.key_in_ssm {
            Some(name) => writeln!(s, "private_key_ssm = \"{name}\"").unwrap(),
            None => writeln!(s, "private_key = \"{}\"", topo.bastion_keys.private).unwrap(),
        }
        writeln!(s, "address = [\"{BASTION_TUNNEL_V4}/24\", \"{BASTION_TUNNEL_V6}/64\"]").unwrap();
        writeln!(s, "listen_port = {LISTEN_PORT}").unwrap();
        writeln!(s, "name = \"{}\"", self.interface_name).unwrap();
        for (i, client) in topo.clients.iter().enumerate() {
            if self.peers.as_ref().is_some_and(|p| !p.contains(&i)) {
                continue;
            }
            writeln!(s, "\n[[peer]]").unwrap();
            writeln!(s, "name = \"{}\"", client.name).unwrap();
            writeln!(s, "public_key = \"{}\"", client.keys.public).unwrap();
            let allowed = [format!("{}/32", client.tunnel_v4), format!("{}/128", client.tunnel_v6)];
            writeln!(s, "allowed_ips = {}", toml_list(&allowed)).unwrap();
            if let Some(reach) = self.peer_reach.get(i).filter(|r| !r.is_empty()) {
                writeln!(s, "reach = {}", toml_list(reach)).unwrap();
            }
        }
        writeln!(s, "\n[nat]").unwrap();
        writeln!(s, "masquerade = {}", self.masquerade).unwrap();
        writeln!(s, "egress = \"auto\"").unwrap();
        writeln!(s, "reach = {}", toml_list(&self.nat_reach)).unwrap();
        writeln!(s, "\n[health]").unwrap();
        writeln!(s, "listen = \"0.0.0.0:{}\"", self.health_port).unwrap();
        writeln!(s, "drain_seconds = {}", self.drain_seconds).unwrap();
        s.push_str(&self.extra_toml);
        s
    }
}

/// A running `bastion run`. Drop sends SIGTERM twice (the second ends the drain at once, still
/// cleaning up), then SIGKILL if it still runs.
pub struct Bastion {
    pub process: Process,
    pub binary: PathBuf,
    pub config: PathBuf,
    /// The control socket (`--socket`, in the topology's directory: every bastion of a test has
    /// its own, whatever its namespace).
    pub socket: PathBuf,
    pub setup: BastionSetup,
    health: SocketAddr,
    ns_name: String,
}

impl Bastion {
    /// Writes the config for `setup` and starts `BINARY run --config FILE` in the topology's
    /// bastion namespace. Does not wait: see [`Bastion::wait_healthy`].
    pub fn start(topo: &Topology, binary: &std::path::Path, setup: BastionSetup) -> Bastion {
        Bastion::start_in(topo, &topo.bastion, binary, setup)
    }

    /// Like [`Bastion::start`], in namespace `ns` (another bastion of the same cluster: the
    /// config, key and peers still come from `topo`).
    pub fn start_in(topo: &Topology, ns: &crate::Netns, binary: &std::path::Path, setup: BastionSetup) -> Bastion {
        let name = crate::unique_name("cfg");
        let config = topo.dir.write(&format!("bastion-{name}.toml"), &setup.to_toml(topo));
        let socket = topo.dir.path().join(format!("{name}.sock"));
        let mut argv: Vec<std::ffi::OsString> = setup.command_prefix.iter().map(Into::into).collect();
        argv.extend(
            [
                binary.as_os_str(),
                "run".as_ref(),
                "--config".as_ref(),
                config.as_os_str(),
                "--socket".as_ref(),
                socket.as_os_str(),
            ]
            .map(Into::into),
        );
        let mut process = ns.spawn(
            &format!("bastion run in {}", ns.name()),
            &argv,
            &setup.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
            &topo.dir.path().join(format!("bastion-{name}.log")),
        );
        process.set_grace(Duration::from_secs(5));
        Bastion {
            process,
            binary: binary.to_path_buf(),
            config,
            socket,
            health: SocketAddr::from(([127, 0, 0, 1], setup.health_port)),
            setup,
            ns_name: ns.name().to_string(),
        }
    }

    fn ns(&self) -> crate::Netns {
        // A non-owning handle: the topology owns (and deletes) the namespace.
        crate::netns::Netns::borrowed(&self.ns_name)
    }

    /// One `GET /` of the health responder from inside the bastion namespace.
    pub fn health(&self) -> Result<HttpResponse, String> {
        http::get(&self.ns(), self.health, "/", Duration::from_secs(2))
    }

    /// One `GET path` of the health responder.
    pub fn health_path(&self, path: &str) -> Result<HttpResponse, String> {
        http::get(&self.ns(), self.health, path, Duration::from_secs(2))
    }

    /// One `HEAD /` of the health responder.
    pub fn health_head(&self) -> Result<HttpResponse, String> {
        http::request(&self.ns(), "HEAD", self.health, "/", Duration::from_secs(2))
    }

    /// Polls health until `accept` holds; on timeout the error shows the last answer and the
    /// service's log.
    pub fn wait_health(
        &self,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&HttpResponse) -> bool,
    ) -> Result<HttpResponse, String> {
        let result = wait_until(what, timeout, || {
            if self.process.try_exit().is_some() {
                // Not worth waiting for: say so now (the log is appended below).
                return Ok(Err(format!("{} exited", self.process.label())));
            }
            match self.health() {
                Ok(r) if accept(&r) => Ok(Ok(r)),
                Ok(r) => Err(format!("health answered {} {:?}", r.status, r.body)),
                Err(e) => Err(e),
            }
        });
        let exited = |e: String| {
            let status = self.process.try_exit().map(Process::describe).unwrap_or_default();
            format!("{e} ({status}) while waiting for {what}\n{}", self.process.log_report())
        };
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(exited(e)),
            Err(e) => Err(format!("{e}\n{}", self.process.log_report())),
        }
    }

    /// Waits for 200 with body `NAME up`.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<HttpResponse, String> {
        let expected = format!("{} up", self.setup.interface_name);
        self.wait_health(&format!("health 200 {expected:?}"), timeout, |r| r.status == 200 && r.body.trim() == expected)
    }

    pub fn log_report(&self) -> String {
        self.process.log_report()
    }

    /// What `bastion status --socket SOCKET` prints.
    pub fn status(&self) -> Result<String, String> {
        self.control(&["status"])
    }

    /// `bastion status --json`, parsed.
    pub fn status_json(&self) -> Result<serde_json::Value, String> {
        let text = self.control(&["status", "--json"])?;
        serde_json::from_str(&text).map_err(|e| format!("status --json is not JSON: {e}: {text}"))
    }

    /// `bastion reload --socket SOCKET`: its output, and whether it exited 0.
    pub fn reload(&self) -> (bool, String) {
        let out = self.ns().exec(&[self.binary.to_str().unwrap(), "reload", "--socket", self.socket.to_str().unwrap()]);
        (out.success(), out.to_string())
    }

    fn control(&self, words: &[&str]) -> Result<String, String> {
        let mut argv = vec![self.binary.to_str().unwrap()];
        argv.extend(words);
        argv.extend(["--socket", self.socket.to_str().unwrap()]);
        let out = self.ns().exec(&argv);
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(out.to_string())
        }
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        if self.process.is_running() {
            self.process.signal(libc::SIGTERM);
            std::thread::sleep(Duration::from_millis(100));
            self.process.signal(libc::SIGTERM);
        }
        // Process's own drop waits, then SIGKILLs.
    }
}

/// The clock the service stamps its log lines with (CLOCK_BOOTTIME, seconds): read it in the
/// test to place a log line on the test's own timeline.
pub fn log_clock_now() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`, a live local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The time stamp of a service log line (`[   12.345678] bastion: ...`), on [`log_clock_now`]'s
/// clock.
pub fn log_line_time(line: &str) -> Option<f64> {
    let stamp = line.trim_start().strip_prefix('[')?.split(']').next()?;
    stamp.trim().parse().ok()
}

/// In a `bastion status` report, the number after `label` on peer `peer`'s line (e.g.
/// `"handshakes"`, `"failover handshakes"`).
pub fn peer_counter(status: &str, peer: &str, label: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.split_whitespace().next() == Some(peer))?;
    let after = line.split(&format!("  {label} ")).nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

/// A `[[peer]]` table for a bastion config: a peer beside the topology's clients, with one
/// IPv4 address (for `BastionSetup::extra_toml`).
pub fn peer_toml(name: &str, public_key: &str, address: std::net::Ipv4Addr) -> String {
    format!("\n[[peer]]\nname = \"{name}\"\npublic_key = \"{public_key}\"\nallowed_ips = [\"{address}/32\"]\n")
}

/// In a `bastion status` report, the number before `label` on the `dropped:` line (e.g.
/// `"cookie replies"`, `"handshakes from unknown keys"`).
pub fn dropped_counter(status: &str, label: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.trim_start().starts_with("dropped:"))?;
    let line = line.trim_start().strip_prefix("dropped:")?;
    line.split(',').find_map(|part| {
        let (number, rest) = part.trim().split_once(' ')?;
        (rest == label).then(|| number.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "interface: wg0  UDP port 51820  health 200\n\
        draining: no\n\
        peers: 2\n  \
        alice  endpoint 192.0.2.101:4000  last handshake 1 s ago  handshakes 2  received 1.0 KiB  sent 3 B  failover handshakes 1\n  \
        bob  endpoint -  last handshake never  handshakes 0  received 0 B  sent 0 B  failover handshakes 0\n\
        dropped: 7 datagrams not ours, 1 rejected, 5 handshakes from unknown keys, 300 cookie replies, 2 TUN packets with no peer\n";

    #[test]
    fn status_counters_are_read_by_label() {
        assert_eq!(peer_counter(STATUS, "alice", "handshakes"), Some(2));
        assert_eq!(peer_counter(STATUS, "alice", "failover handshakes"), Some(1));
        assert_eq!(peer_counter(STATUS, "bob", "failover handshakes"), Some(0));
        assert_eq!(peer_counter(STATUS, "carol", "handshakes"), None);
        assert_eq!(dropped_counter(STATUS, "cookie replies"), Some(300));
        assert_eq!(dropped_counter(STATUS, "handshakes from unknown keys"), Some(5));
        assert_eq!(dropped_counter(STATUS, "datagrams not ours"), Some(7));
        assert_eq!(dropped_counter(STATUS, "nothing"), None);
    }

    #[test]
    fn log_lines_carry_their_time() {
        assert_eq!(log_line_time("[    12.500000] bastion: peer alice handshake completed"), Some(12.5));
        assert_eq!(log_line_time("no stamp"), None);
    }
}
