//! `bastion init` booting as PID 1 of its own PID and mount namespace (`unshare --pid --fork
//! --mount-proc`), inside a network namespace ("the instance") joined by a veth to a second one
//! ("the VPC") where a real DHCP server (dnsmasq) and the IMDSv2 emulator (`tests/imds/`) run.
//!
//! What is checked is what a real server or the kernel saw: the address dnsmasq leased is the one
//! `ip -j addr` shows, the emulator's request log proves the token was sent (and the emulator
//! refuses a request without one), health answers come over TCP, the service is really killed
//! and really restarted, a WireGuard client (wireguard-go + wg) really gets through, and init
//! really exits 0 after the drain.
//!
//! Run as root: `BASTION_BIN=target/debug/bastion cargo test -p bastion-tests --test init`
//! (the Makefile sets BASTION_BIN; without it these tests say so and skip).
//! All traffic stays inside the namespaces made here (10.77.0.0/24 and 10.100.0.0/24 exist only
//! there); the IMDS address is always given with `--imds`, so nothing goes to 169.254.169.254.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use local::{http_get, wait_until, Netns, Process};

const VPC_ADDRESS: &str = "10.77.0.1";
const IMDS_PORT: u16 = 8775;
const HEALTH_PORT: u16 = 8080;
const LEASE_MTU: u32 = 9001;

// ============================================================================================
// Local guards: small stand-ins for the shared harness (tests/src, being written on branch
// `harness`). Replace with `bastion_tests::{Netns, Process, wait_until, ...}` once it is on main.
// ============================================================================================
mod local {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// Retries `check` every 100 ms until it returns Ok, or panics after `timeout` with the
    /// last error.
    pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
        let started = Instant::now();
        loop {
            match check() {
                Ok(v) => return v,
                Err(e) if started.elapsed() >= timeout => {
                    panic!("timed out after {:.1} s waiting for {what}: {e}", timeout.as_secs_f64())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Runs a command to completion; returns (success, stdout + stderr).
    pub fn run(argv: &[&str]) -> (bool, String) {
        match Command::new(argv[0]).args(&argv[1..]).stdin(Stdio::null()).output() {
            Ok(out) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                (out.status.success(), text)
            }
            Err(e) => (false, format!("cannot run {}: {e}", argv[0])),
        }
    }

    pub fn run_ok(argv: &[&str]) -> String {
        let (ok, out) = run(argv);
        assert!(ok, "`{}` failed: {out}", argv.join(" "));
        out
    }

    /// A network namespace, deleted on drop with everything still running in it.
    pub struct Netns {
        pub name: String,
    }

    impl Netns {
        pub fn new(name: &str) -> Netns {
            run_ok(&["ip", "netns", "add", name]);
            let ns = Netns { name: name.to_string() };
            ns.run(&["ip", "link", "set", "lo", "up"]);
            ns
        }

        pub fn argv<'a>(&'a self, argv: &[&'a str]) -> Vec<&'a str> {
            let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
            full.extend_from_slice(argv);
            full
        }

        pub fn run(&self, argv: &[&str]) -> String {
            run_ok(&self.argv(argv))
        }

        pub fn exec(&self, argv: &[&str]) -> (bool, String) {
            run(&self.argv(argv))
        }

        /// Runs `f` on a thread that joined this namespace (its sockets live here).
        pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            let path = Path::new("/var/run/netns").join(&self.name);
            std::thread::scope(|scope| {
                scope
                    .spawn(move || {
                        let file = std::fs::File::open(&path).expect("open netns");
                        // SAFETY: setns on this thread only, with a valid namespace fd.
                        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                        assert_eq!(rc, 0, "setns {}: {}", path.display(), std::io::Error::last_os_error());
                        f()
                    })
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        }

        pub fn pids(&self) -> Vec<i32> {
            run(&["ip", "netns", "pids", &self.name]).1.split_whitespace().filter_map(|p| p.parse().ok()).collect()
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            for pid in self.pids() {
                // SAFETY: signalling a pid we listed in our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
            let _ = run(&["ip", "netns", "del", &self.name]);
        }
    }

    /// A long-running process with stdout+stderr in a log file; SIGTERM, then SIGKILL, on drop.
    pub struct Process {
        pub label: String,
        child: Mutex<(Child, Option<ExitStatus>)>,
        pub pid: i32,
        pub log_path: PathBuf,
    }

    impl Process {
        pub fn spawn(label: &str, argv: &[&str], log_path: &Path) -> Process {
            let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).expect("open log");
            let log2 = log.try_clone().unwrap();
            let mut cmd = Command::new(argv[0]);
            cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log2));
            // SAFETY: prctl in the child before exec; async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
            Process {
                label: label.to_string(),
                pid: child.id() as i32,
                child: Mutex::new((child, None)),
                log_path: log_path.to_path_buf(),
            }
        }

        pub fn log(&self) -> String {
            std::fs::read_to_string(&self.log_path).unwrap_or_default()
        }

        /// Waits for a log line containing `needle` that appears after byte `from`; returns it.
        pub fn wait_for_log_after(&self, from: usize, needle: &str, timeout: Duration) -> String {
            wait_until(&format!("`{needle}` in the log of {}", self.label), timeout, || {
                let log = self.log();
                if let Some(line) = log.get(from..).unwrap_or("").lines().find(|l| l.contains(needle)) {
                    return Ok(line.to_string());
                }
                if let Some(status) = self.try_exit() {
                    return Err(format!("{} exited ({status:?}); log:\n{log}", self.label));
                }
                Err(format!("log so far:\n{log}"))
            })
        }

        pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
            self.wait_for_log_after(0, needle, timeout)
        }

        pub fn try_exit(&self) -> Option<ExitStatus> {
            let mut state = self.child.lock().unwrap();
            if state.1.is_none() {
                state.1 = state.0.try_wait().ok().flatten();
            }
            state.1
        }

        pub fn wait_exit(&self, timeout: Duration) -> ExitStatus {
            wait_until(&format!("{} to exit", self.label), timeout, || {
                self.try_exit().ok_or_else(|| format!("still running; log:\n{}", self.log()))
            })
        }

        pub fn describe(status: ExitStatus) -> String {
            match (status.code(), status.signal()) {
                (Some(c), _) => format!("exit status {c}"),
                (_, Some(s)) => format!("signal {s}"),
                _ => format!("{status:?}"),
            }
        }
    }

    impl Drop for Process {
        fn drop(&mut self) {
            if self.try_exit().is_some() {
                return;
            }
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.pid, libc::SIGTERM) };
            let started = Instant::now();
            while self.try_exit().is_none() && started.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if self.try_exit().is_none() {
                // SAFETY: as above.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                let _ = self.child.lock().unwrap().0.wait();
            }
        }
    }

    /// One HTTP/1.0 GET from inside `ns`: (status, body).
    pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
        let path = path.to_string();
        ns.enter(move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).map_err(|e| format!("read from {addr}: {e}"))?;
            let text = String::from_utf8_lossy(&out).into_owned();
            let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or(format!("no status in {text:?}"))?;
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
            Ok((status, body))
        })
    }

    /// The pids whose parent is `ppid` (from /proc/*/stat).
    pub fn children_of(ppid: i32) -> Vec<i32> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let Some(after) = stat.rsplit_once(')').map(|(_, a)| a.to_string()) else { continue };
            if after.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok()) == Some(ppid) {
                out.push(pid);
            }
        }
        out
    }

    pub fn find_in_path(tool: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    }
}
// ============================================================================================

/// The binary under test, or None (and the test says it skips) without BASTION_BIN.
fn bastion_bin() -> Option<PathBuf> {
    let Some(path) = std::env::var_os("BASTION_BIN") else {
        eprintln!("BASTION_BIN is not set: skipping (the Makefile sets it; or BASTION_BIN=target/debug/bastion)");
        return None;
    };
    // Relative to the workspace root (cargo runs tests in the package's folder).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    assert!(path.is_file(), "BASTION_BIN={} is not a file", path.display());
    Some(std::fs::canonicalize(path).unwrap())
}

fn require_root_and_tools() {
    // SAFETY: plain getter.
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests create namespaces: run them as root");
    for tool in ["ip", "unshare", "dnsmasq", "python3", "wireguard-go", "wg", "ping"] {
        assert!(local::find_in_path(tool).is_some(), "`{tool}` is missing: run `make test-deps`");
    }
}

/// A short name unique to this run and call: fits interface names (15 characters).
fn unique(role: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("bi{:x}{}{role}", std::process::id() % 0xfffff, N.fetch_add(1, Ordering::Relaxed))
}

/// A scratch folder outside /tmp (init mounts its own tmpfs on /tmp in its mount namespace).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The instance's namespace, the VPC's namespace with dnsmasq and the IMDS emulator, a veth
/// between them. Field order is drop order: processes before namespaces.
struct Vpc {
    _imds: Process,
    _dnsmasq: Process,
    instance: Netns,
    vpc: Netns,
    veth: String,
    dir: PathBuf,
    mode_file: PathBuf,
}

impl Vpc {
    /// `user_data`: the file the emulator serves; `mode`: its initial misbehaviour.
    fn start(user_data: Option<&str>, mode: &str) -> Vpc {
        let p = unique("");
        let dir = scratch(&p);
        let instance = Netns::new(&format!("{p}i"));
        let vpc = Netns::new(&format!("{p}v"));
        let veth = format!("{p}e0");
        let peer = format!("{p}v0");
        local::run_ok(&["ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        local::run_ok(&["ip", "link", "set", &veth, "netns", &instance.name]);
        local::run_ok(&["ip", "link", "set", &peer, "netns", &vpc.name]);
        vpc.run(&["ip", "addr", "add", &format!("{VPC_ADDRESS}/24"), "dev", &peer]);
        vpc.run(&["ip", "link", "set", &peer, "up"]);

        let leases = dir.join("leases");
        let dnsmasq = Process::spawn(
            "dnsmasq",
            &vpc.argv(&[
                "dnsmasq",
                "--keep-in-foreground",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
                &format!("--interface={peer}"),
                "--bind-interfaces",
                "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m",
                &format!("--dhcp-option=option:router,{VPC_ADDRESS}"),
                &format!("--dhcp-option=option:mtu,{LEASE_MTU}"),
                // Renewals every few seconds, so a test sees them (the lease itself is 2 min).
                "--dhcp-option=option:T1,4",
                "--dhcp-option=option:T2,7",
                &format!("--dhcp-leasefile={}", leases.display()),
                &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
                "--no-ping",
                "--log-dhcp",
                "--log-facility=-",
            ]),
            &dir.join("dnsmasq.log"),
        );

        let mode_file = dir.join("imds-mode");
        std::fs::write(&mode_file, mode).unwrap();
        let user_data_path = dir.join("user-data.toml");
        let mut args = vec![
            "python3".to_string(),
            emulator_script().display().to_string(),
            "--bind".into(),
            VPC_ADDRESS.into(),
            "--port".into(),
            IMDS_PORT.to_string(),
            "--log".into(),
            dir.join("imds-requests.jsonl").display().to_string(),
            "--mode-file".into(),
            mode_file.display().to_string(),
        ];
        if let Some(text) = user_data {
            std::fs::write(&user_data_path, text).unwrap();
            args.push("--user-data".into());
            args.push(user_data_path.display().to_string());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let imds = Process::spawn("imds emulator", &vpc.argv(&argv), &dir.join("imds.log"));
        imds.wait_for_log("listening on", Duration::from_secs(10));
        Vpc { _imds: imds, _dnsmasq: dnsmasq, instance, vpc, veth, dir, mode_file }
    }

    fn set_mode(&self, mode: &str) {
        std::fs::write(&self.mode_file, mode).unwrap();
    }

    /// `bastion init` as PID 1 of a new PID + mount namespace inside the instance namespace.
    fn start_init(&self, bin: &Path) -> Process {
        let imds = format!("http://{VPC_ADDRESS}:{IMDS_PORT}");
        let run_dir = self.dir.join("run");
        let run_dir = run_dir.display().to_string();
        let argv = self.instance.argv(&[
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            // If the test dies, unshare's child (our init) dies with it.
            "--kill-child",
            bin.to_str().unwrap(),
            "init",
            "--imds",
            &imds,
            "--run-dir",
            &run_dir,
            "--baked-config",
            "/nonexistent/bastion.toml",
            "--modules-list",
            "/nonexistent/modules",
        ]);
        Process::spawn("bastion init", &argv, &self.dir.join("init.log"))
    }

    /// The user-data requests the emulator logged: (token sent, token valid, status).
    fn user_data_requests(&self) -> Vec<(bool, bool, u16)> {
        self.imds_log()
            .lines()
            .filter(|l| l.contains("\"path\": \"/latest/user-data\""))
            .map(|l| (l.contains("\"token_sent\": true"), l.contains("\"token_valid\": true"), json_status(l)))
            .collect()
    }

    fn imds_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("imds-requests.jsonl")).unwrap_or_default()
    }

    /// The address dnsmasq leased (its lease file: `expiry mac ip host clientid`).
    fn leased_address(&self) -> Option<String> {
        let leases = std::fs::read_to_string(self.dir.join("leases")).ok()?;
        leases.lines().next()?.split_whitespace().nth(2).map(str::to_string)
    }

    fn health(&self, addr: &str) -> Result<(u16, String), String> {
        http_get(&self.instance, format!("{addr}:{HEALTH_PORT}").parse().unwrap(), "/")
    }
}

fn json_status(line: &str) -> u16 {
    line.split("\"status\": ").nth(1).and_then(|r| r.get(..3)).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn emulator_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("imds/imds_emulator.py")
}

/// The host pid of our init: the child of the `unshare` process.
fn init_host_pid(unshare: &Process) -> i32 {
    wait_until("the init process under unshare", Duration::from_secs(10), || {
        local::children_of(unshare.pid).first().copied().ok_or_else(|| "not forked yet".to_string())
    })
}

/// Counters from the `Icmp:` lines of /proc/net/snmp in `ns`.
fn icmp_counter(ns: &Netns, name: &str) -> u64 {
    let snmp = ns.run(&["cat", "/proc/net/snmp"]);
    let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Icmp:")).collect();
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let values: Vec<&str> = lines[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("no {name} in {snmp}"));
    values[i].parse().unwrap()
}

fn wg_key_pair() -> (String, String) {
    let private = local::run_ok(&["wg", "genkey"]).trim().to_string();
    let mut child = std::process::Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(private.as_bytes()).unwrap();
    let mut public = String::new();
    child.stdout.take().unwrap().read_to_string(&mut public).unwrap();
    child.wait().unwrap();
    (private, public.trim().to_string())
}

fn service_config(bastion_private: &str, client_public: &str) -> String {
    format!(
        r#"[interface]
private_key = "{bastion_private}"
address = ["10.100.0.1/24"]
listen_port = 51820

[[peer]]
name = "client"
public_key = "{client_public}"
allowed_ips = ["10.100.0.2/32"]

[nat]
reach = ["10.77.0.0/24"]

[health]
listen = "0.0.0.0:{HEALTH_PORT}"
drain_seconds = 4
"#
    )
}

const LONG: Duration = Duration::from_secs(30);

#[test]
fn boots_leases_fetches_config_supervises_and_drains() {
    let Some(bin) = bastion_bin() else { return };
    require_root_and_tools();
    let (bastion_private, bastion_public) = wg_key_pair();
    let (client_private, client_public) = wg_key_pair();
    let config = service_config(&bastion_private, &client_public);
    let vpc = Vpc::start(Some(&config), "normal");
    let init = vpc.start_init(&bin);

    // --- The lease: what dnsmasq handed out is what the kernel of the instance holds.
    let lease_line = init.wait_for_log("lease: ", LONG);
    let leased = wait_until("dnsmasq's lease file", Duration::from_secs(5), || {
        vpc.leased_address().ok_or_else(|| "no lease recorded".to_string())
    });
    assert!(
        lease_line.contains(&format!("{leased}/24 router {VPC_ADDRESS} mtu {LEASE_MTU} lease 120 s")),
        "{lease_line}"
    );
    let addr_json = vpc.instance.run(&["ip", "-j", "-4", "addr", "show", "dev", &vpc.veth]);
    assert!(addr_json.contains(&format!("\"local\":\"{leased}\",\"prefixlen\":24")), "{addr_json}");
    let route_json = vpc.instance.run(&["ip", "-j", "-4", "route", "show", "default"]);
    assert!(
        route_json.contains(&format!("\"gateway\":\"{VPC_ADDRESS}\",\"dev\":\"{}\"", vpc.veth)),
        "{route_json}"
    );
    let link_json = vpc.instance.run(&["ip", "-j", "link", "show", "dev", &vpc.veth]);
    assert!(link_json.contains(&format!("\"mtu\":{LEASE_MTU},")), "{link_json}");

    // --- The config came over IMDSv2 with a token, and the emulator really checks tokens.
    init.wait_for_log("config: accepted user-data", LONG);
    let log = vpc.imds_log();
    assert!(
        log.lines().any(|l| l.contains("\"method\": \"PUT\", \"path\": \"/latest/api/token\"")
            && l.contains("\"ttl\": 21600")
            && json_status(l) == 200),
        "no token request with a 21600 s TTL:\n{log}"
    );
    assert_eq!(vpc.user_data_requests().first(), Some(&(true, true, 200)), "{log}");
    let emulator: SocketAddr = format!("{VPC_ADDRESS}:{IMDS_PORT}").parse().unwrap();
    let (status, _) = http_get(&vpc.vpc, emulator, "/latest/user-data").unwrap();
    assert_eq!(status, 401, "the emulator must refuse user-data without a token");
    let refused = vpc.user_data_requests();
    assert_eq!(refused.last(), Some(&(false, false, 401)), "{}", vpc.imds_log());
    // The accepted config is on disk for the service, readable by root only.
    let written = vpc.dir.join("run/bastion.toml");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), config);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&written).unwrap().permissions().mode() & 0o777, 0o600);

    // --- The service is up: health 200 on the instance, seen from inside and from the VPC.
    init.wait_for_log("service: started pid", LONG);
    wait_until("health 200 from the service", LONG, || match vpc.health("127.0.0.1") {
        Ok((200, body)) => Ok(body),
        other => Err(format!("{other:?}")),
    });
    let from_vpc: SocketAddr = format!("{leased}:{HEALTH_PORT}").parse().unwrap();
    assert_eq!(http_get(&vpc.vpc, from_vpc, "/").map(|r| r.0), Ok(200));

    // --- A WireGuard client in the VPC gets through to the bastion's tunnel address.
    let wg_name = unique("wg");
    let _client = Process::spawn(
        "wireguard-go",
        &vpc.vpc.argv(&["wireguard-go", "-f", &wg_name]),
        &vpc.dir.join("wireguard-go.log"),
    );
    wait_until("wireguard-go's interface", Duration::from_secs(10), || {
        let (ok, out) = vpc.vpc.exec(&["ip", "link", "show", &wg_name]);
        if ok { Ok(()) } else { Err(out) }
    });
    let key_file = vpc.dir.join("client.key");
    std::fs::write(&key_file, &client_private).unwrap();
    vpc.vpc.run(&[
        "wg", "set", &wg_name, "private-key", key_file.to_str().unwrap(), "peer", &bastion_public,
        "endpoint", &format!("{leased}:51820"), "allowed-ips", "10.100.0.0/24",
    ]);
    vpc.vpc.run(&["ip", "addr", "add", "10.100.0.2/24", "dev", &wg_name]);
    vpc.vpc.run(&["ip", "link", "set", &wg_name, "up"]);
    wait_until("a ping through the tunnel to 10.100.0.1", LONG, || {
        let (ok, out) = vpc.vpc.exec(&["ping", "-n", "-c", "1", "-W", "1", "10.100.0.1"]);
        if ok { Ok(()) } else { Err(out) }
    });

    // --- DHCP renewals (T1 = 4 s) are answered, and the instance's kernel never answered one
    // of them with "port unreachable" (init holds UDP port 68 once the kernel has the address).
    // Counted where the DHCP server is: only ICMP that crossed the veth (the self-test's
    // loopback traffic stays in the instance).
    init.wait_for_log("lease renewed", LONG);
    assert_eq!(icmp_counter(&vpc.vpc, "InDestUnreachs"), 0, "the DHCP server got port-unreachable");
    let acks = std::fs::read_to_string(vpc.dir.join("dnsmasq.log")).unwrap().matches("DHCPACK").count();
    assert!(acks >= 2, "dnsmasq acked {acks} times");

    // --- kill -9 of the service: init logs why, restarts it, health comes back.
    let init_pid = init_host_pid(&init);
    let service_pid = wait_until("the service process", Duration::from_secs(5), || {
        local::children_of(init_pid).first().copied().ok_or_else(|| "no child".to_string())
    });
    let before = init.log().len();
    // SAFETY: killing the service process we found under our init.
    unsafe { libc::kill(service_pid, libc::SIGKILL) };
    let line = init.wait_for_log_after(before, "killed by signal 9 (SIGKILL)", LONG);
    assert!(line.contains("restarting in 1 s"), "{line}");
    init.wait_for_log_after(before, "service: started pid", LONG);
    wait_until("health 200 after the restart", LONG, || match vpc.health("127.0.0.1") {
        Ok((200, body)) => Ok(body),
        other => Err(format!("{other:?}")),
    });
    let new_service = local::children_of(init_pid);
    assert!(!new_service.is_empty() && !new_service.contains(&service_pid), "{new_service:?}");

    // --- SIGTERM to init: drain (503 while the service keeps going), then everything stops
    // and init exits 0 (as `bastion init`; the machine's PID 1 would power off here).
    let before = init.log().len();
    // SAFETY: signalling our init.
    unsafe { libc::kill(init_pid, libc::SIGTERM) };
    init.wait_for_log_after(before, "shutdown: SIGTERM: draining", Duration::from_secs(5));
    let draining = wait_until("health 503 during the drain", Duration::from_secs(4), || match vpc.health("127.0.0.1") {
        Ok((503, body)) => Ok(body),
        other => Err(format!("{other:?}")),
    });
    assert!(!draining.is_empty());
    let status = init.wait_exit(LONG);
    assert_eq!(status.code(), Some(0), "init ended with {}: {}", Process::describe(status), init.log());
    let log = init.log();
    assert!(log.contains("shutdown: service (pid"), "{log}");
    assert!(log.contains("shutdown: done"), "{log}");
    assert!(!log.contains("PANIC"), "{log}");
    assert!(vpc.instance.pids().is_empty(), "processes left in the instance: {:?}", vpc.instance.pids());
}

#[test]
fn bad_imds_answers_are_reported_in_health_and_retried() {
    let Some(bin) = bastion_bin() else { return };
    require_root_and_tools();
    let (bastion_private, _) = wg_key_pair();
    let (_, client_public) = wg_key_pair();
    let config = service_config(&bastion_private, &client_public);
    // (mode, what the console and health must say)
    let cases: &[(&str, &str)] = &[
        ("404", "404, the instance has no user-data, and the image has no /nonexistent/bastion.toml"),
        ("invalid-toml", "user-data:1: file: TOML syntax"),
        ("never-ending", "response not complete after 5.0 s"),
        ("huge", "response body larger than 65536 bytes"),
        ("huge-unlabelled", "response body larger than 65536 bytes"),
    ];
    // All at once, each in its own pair of namespaces: the retries overlap instead of adding up.
    let runs: Vec<(Vpc, Process)> = cases
        .iter()
        .map(|(mode, _)| {
            let vpc = Vpc::start(Some(&config), mode);
            let init = vpc.start_init(&bin);
            (vpc, init)
        })
        .collect();
    for ((mode, expected), (vpc, init)) in cases.iter().zip(&runs) {
        let line = init.wait_for_log("config: ERROR ", LONG);
        assert!(line.contains(expected), "{mode}: console says {line:?}, expected {expected:?}");
        let (status, body) = wait_until(&format!("{mode}: health 503 with the reason"), LONG, || match vpc.health("127.0.0.1") {
            Ok((503, body)) if body.contains(expected) => Ok((503, body)),
            other => Err(format!("{other:?}")),
        });
        assert_eq!(status, 503);
        assert!(body.starts_with("config: "), "{mode}: {body}");
        // It keeps trying: a second request for user-data, with a valid token each time.
        wait_until(&format!("{mode}: a second user-data request"), LONG, || {
            let requests = vpc.user_data_requests();
            if requests.len() >= 2 { Ok(()) } else { Err(format!("{requests:?}")) }
        });
        assert!(vpc.user_data_requests().iter().all(|(sent, valid, _)| *sent && *valid), "{}", vpc.imds_log());
        assert!(init.try_exit().is_none(), "{mode}: init exited: {}", init.log());
        assert!(!init.log().contains("PANIC"), "{mode}: {}", init.log());
        assert!(init.log().contains("trying again in"), "{mode}: {}", init.log());
    }

    // Once IMDS answers properly, the next attempt is accepted and the service starts.
    let (vpc, init) = &runs[0];
    vpc.set_mode("normal");
    init.wait_for_log("config: accepted user-data", Duration::from_secs(60));
    init.wait_for_log("service: started pid", LONG);
    wait_until("health 200 once the config arrived", LONG, || match vpc.health("127.0.0.1") {
        Ok((200, body)) => Ok(body),
        other => Err(format!("{other:?}")),
    });

    // SIGTERM with no service running stops at once and cleanly.
    for (vpc, init) in &runs[1..] {
        let pid = init_host_pid(init);
        // SAFETY: signalling our init.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = init.wait_exit(Duration::from_secs(15));
        assert_eq!(status.code(), Some(0), "{}", init.log());
        assert!(init.log().contains("no service running, nothing to drain"), "{}", init.log());
        let _ = vpc;
    }
}
