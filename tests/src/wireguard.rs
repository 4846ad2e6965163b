//! The independent WireGuard peer: `wireguard-go -f NAME` inside a namespace, configured with
//! `wg` (keys from `wg genkey`/`wg pubkey`). Its control socket
//! `/var/run/wireguard/NAME.sock` is shared by every namespace, hence unique names.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::command;
use crate::netns::Netns;
use crate::process::Process;
use crate::rundir::RunDir;
use crate::wait::wait_until;

/// A Curve25519 key pair in WireGuard's base64.
#[derive(Clone)]
pub struct Keypair {
    pub private: String,
    pub public: String,
}

impl Keypair {
    pub fn generate() -> Keypair {
        let private = command::run_ok(&["wg", "genkey"]).trim().to_string();
        let public =
            command::run_with_input(&["wg", "pubkey"], Some(private.as_bytes())).expect_success().trim().to_string();
        Keypair { private, public }
    }
}

/// A preshared key from `wg genpsk`.
pub fn generate_psk() -> String {
    command::run_ok(&["wg", "genpsk"]).trim().to_string()
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private half stays out of test output.
        write!(f, "Keypair {{ public: {} }}", self.public)
    }
}

/// One `[Peer]` of a `wg setconf` file.
#[derive(Clone, Debug, Default)]
pub struct WgPeer {
    pub public_key: String,
    pub preshared_key: Option<String>,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: Option<u16>,
}

/// A `wg setconf` file: the interface's key and port, and its peers.
#[derive(Clone, Debug, Default)]
pub struct WgConf {
    pub private_key: String,
    pub listen_port: Option<u16>,
    pub peers: Vec<WgPeer>,
}

impl WgConf {
    pub fn to_text(&self) -> String {
        let mut s = String::from("[Interface]\n");
        writeln!(s, "PrivateKey = {}", self.private_key).unwrap();
        if let Some(port) = self.listen_port {
            writeln!(s, "ListenPort = {port}").unwrap();
        }
        for peer in &self.peers {
            s.push_str("\n[Peer]\n");
            writeln!(s, "PublicKey = {}", peer.public_key).unwrap();
            if let Some(psk) = &peer.preshared_key {
                writeln!(s, "PresharedKey = {psk}").unwrap();
            }
            if let Some(endpoint) = peer.endpoint {
                writeln!(s, "Endpoint = {endpoint}").unwrap();
            }
            if !peer.allowed_ips.is_empty() {
                writeln!(s, "AllowedIPs = {}", peer.allowed_ips.join(", ")).unwrap();
            }
            if let Some(keepalive) = peer.persistent_keepalive {
                writeln!(s, "PersistentKeepalive = {keepalive}").unwrap();
            }
        }
        s
    }
}

/// A userspace WireGuard interface in a namespace: wireguard-go, or another implementation that
/// serves the same control socket (boringtun-cli). Drop stops the process (its guard) and removes
/// the control socket if the process left it behind.
pub struct WgInterface {
    name: String,
    ns_name: String,
    socket: PathBuf,
    process: Process,
    conf_path: PathBuf,
}

impl WgInterface {
    /// Starts `wireguard-go -f NAME` in `ns` and waits for its control socket. `name` must be
    /// unique on the machine (the socket folder is shared): use [`crate::unique_name`].
    pub fn start(ns: &Netns, name: &str, dir: &RunDir) -> WgInterface {
        WgInterface::start_program(
            ns,
            name,
            dir,
            "wireguard-go",
            &["wireguard-go", "-f", name],
            &[("LOG_LEVEL", "verbose")],
        )
    }

    /// Like [`WgInterface::start`], with the wireguard-go at `binary` (another version).
    pub fn start_wireguard_go(ns: &Netns, name: &str, dir: &RunDir, binary: &std::path::Path) -> WgInterface {
        let binary = binary.to_str().expect("the wireguard-go path is UTF-8");
        WgInterface::start_program(ns, name, dir, "wireguard-go", &[binary, "-f", name], &[("LOG_LEVEL", "verbose")])
    }

    /// Starts another userspace WireGuard that creates interface `name` and serves the same
    /// control socket (`argv` runs in the foreground, e.g. `boringtun-cli -f NAME`), and waits
    /// for the socket. `program` names it in messages and in its log file's name.
    pub fn start_program(
        ns: &Netns,
        name: &str,
        dir: &RunDir,
        program: &str,
        argv: &[&str],
        envs: &[(&str, &str)],
    ) -> WgInterface {
        assert!(name.len() <= 15, "interface name {name} is longer than 15 characters");
        let socket = PathBuf::from(format!("/var/run/wireguard/{name}.sock"));
        assert!(!socket.exists(), "{} already exists: another wireguard-go uses the name {name}", socket.display());
        let log = dir.path().join(format!("{program}-{name}.log"));
        let process = ns.spawn(&format!("{program} {name}"), argv, envs, &log);
        let wg = WgInterface {
            name: name.to_string(),
            ns_name: ns.name().to_string(),
            socket,
            process,
            conf_path: dir.path().join(format!("{name}.conf")),
        };
        wait_until(&format!("{program}'s socket {}", wg.socket.display()), Duration::from_secs(10), || {
            if wg.socket.exists() {
                Ok(())
            } else {
                Err(wg.process.log_report())
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
        wg
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    pub fn log_report(&self) -> String {
        self.process.log_report()
    }

    fn ns_exec<S: AsRef<std::ffi::OsStr>>(&self, argv: &[S]) -> command::Output {
        // A non-owning handle: whoever started the interface owns the namespace.
        Netns::borrowed(&self.ns_name).exec(argv)
    }

    fn ns_run(&self, argv: &[&str]) -> String {
        let out = self.ns_exec(argv);
        if !out.success() {
            panic!("{out}\n{}", self.process.log_report());
        }
        out.stdout
    }

    /// Replaces the whole WireGuard configuration (`wg setconf`).
    pub fn set_conf(&self, conf: &WgConf) {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&self.conf_path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, conf.to_text().as_bytes()))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.conf_path.display()));
        self.ns_run(&["wg", "setconf", &self.name, self.conf_path.to_str().unwrap()]);
    }

    /// `wg set NAME ARGS...` (e.g. `["peer", KEY, "endpoint", "..."]`).
    pub fn wg_set(&self, args: &[&str]) {
        let mut argv = vec!["wg", "set", &self.name];
        argv.extend_from_slice(args);
        self.ns_run(&argv);
    }

    /// Adds an address (v4 or v6) to the interface.
    pub fn add_address(&self, cidr: &str) {
        if cidr.contains(':') {
            self.ns_run(&["ip", "-6", "addr", "add", cidr, "dev", &self.name, "nodad"]);
        } else {
            self.ns_run(&["ip", "addr", "add", cidr, "dev", &self.name]);
        }
    }

    pub fn set_mtu(&self, mtu: u16) {
        self.ns_run(&["ip", "link", "set", &self.name, "mtu", &mtu.to_string()]);
    }

    pub fn up(&self) {
        self.ns_run(&["ip", "link", "set", &self.name, "up"]);
    }

    /// Routes `cidr` into the tunnel.
    pub fn add_route(&self, cidr: &str) {
        let family = if cidr.contains(':') { "-6" } else { "-4" };
        self.ns_run(&["ip", family, "route", "add", cidr, "dev", &self.name]);
    }

    /// `wg show NAME` (no private key in it).
    pub fn show(&self) -> String {
        let out = self.ns_exec(&["wg", "show", &self.name]);
        format!("{}{}", out.stdout, out.stderr)
    }

    /// Unix time of the last handshake with `peer`, if any.
    pub fn latest_handshake(&self, peer: &str) -> Option<u64> {
        let out = self.ns_exec(&["wg", "show", &self.name, "latest-handshakes"]);
        out.stdout.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(peer)).then(|| fields.next()?.parse::<u64>().ok()).flatten().filter(|&t| t != 0)
        })
    }

    /// Bytes received from and sent to `peer`, as `wg show NAME transfer` counts them.
    pub fn transfer(&self, peer: &str) -> Option<(u64, u64)> {
        let out = self.ns_exec(&["wg", "show", &self.name, "transfer"]);
        out.stdout.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [key, rx, tx] if key == peer => Some((rx.parse().ok()?, tx.parse().ok()?)),
                _ => None,
            }
        })
    }

    /// Waits for a handshake with `peer` completed at or after `since` (Unix seconds).
    pub fn wait_handshake(&self, peer: &str, since: u64, timeout: Duration) -> Result<u64, String> {
        wait_until(&format!("a handshake of {} with peer {peer}", self.name), timeout, || {
            match self.latest_handshake(peer) {
                Some(t) if t >= since => Ok(t),
                _ => Err(format!("{}\n{}", self.show(), self.process.log_report())),
            }
        })
    }
}

/// Seconds since the Unix epoch, as `wg show latest-handshakes` counts.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

impl Drop for WgInterface {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_file(&self.socket);
    }
}
