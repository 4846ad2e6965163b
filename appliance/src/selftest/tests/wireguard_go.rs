//! The self-test client against an independent WireGuard implementation: wireguard-go as the
//! server, in a network namespace of this test's own (root only), with the kernel answering the
//! ping on the tunnel address and a real TCP listener as the probe target.
//!
//! The namespace is unshared by a thread of the test's own, so it belongs to that thread and its
//! children and disappears with them; everything else (the wireguard-go process, its socket file,
//! the key file) is removed by guards, also when an assertion fails.

use super::super::*;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const SERVER_PORT: u16 = 51820;
const PROBE: &str = "10.0.1.5:8443";

#[test]
fn against_wireguard_go_in_a_network_namespace() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the wireguard-go self-test needs root (network namespaces, TUN): run the unit tests as root (`make unit-test`)"
    );
    // A thread of our own: unshare(CLONE_NEWNET) moves only the calling thread.
    if let Err(panic) = std::thread::spawn(scenario).join() {
        std::panic::resume_unwind(panic);
    }
}

fn scenario() {
    // SAFETY: unshare only changes this thread's namespace membership.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());

    let name = unique_name();
    let dir = ScratchDir::create(&name);
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&["ip", "addr", "add", "10.0.1.5/32", "dev", "lo"]);

    // The responder is fully configured before the client sends anything (wireguard-go otherwise
    // makes the initiator wait for its 5 s retransmission).
    let server = WireguardGo::start(&name, &dir);
    let server_private = PrivateKey::generate();
    let client_private = PrivateKey::generate();
    let key_file = dir.write_secret("server.key", &server_private.expose_base64());
    sh(&[
        "wg",
        "set",
        &name,
        "private-key",
        key_file.to_str().unwrap(),
        "listen-port",
        &SERVER_PORT.to_string(),
        "peer",
        &client_private.public_key().to_base64(),
        "allowed-ips",
        "10.100.0.254/32,fd00::fe/128",
    ]);
    sh(&["ip", "addr", "add", "10.100.0.1/24", "dev", &name]);
    sh(&["ip", "-6", "addr", "add", "fd00::1/64", "dev", &name, "nodad"]);
    // A destination the namespace refuses to route, as a firewall or an ACL route would: the
    // kernel answers with an ICMP error, which only leaves when forwarding is on.
    sh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    sh(&["ip", "route", "add", "prohibit", "10.0.7.0/24"]);
    sh(&["ip", "link", "set", &name, "up"]);
    let listener = ProbeListener::start(PROBE.parse().unwrap());

    let plan = SelfTestPlan {
        server: (std::net::Ipv4Addr::LOCALHOST, SERVER_PORT).into(),
        server_public: server_private.public_key(),
        client_private: client_private.clone(),
        client_address: "10.100.0.254".parse().unwrap(),
        ping_target: "10.100.0.1".parse().unwrap(),
        probes: vec![PROBE.parse().unwrap()],
        timeout: Duration::from_secs(5),
    };

    // PASS: handshake, ping answered by the kernel through wireguard-go's TUN, TCP to the listener.
    let outcome = run(&plan);
    eprintln!("{outcome}");
    assert!(outcome.passed(), "{outcome} (wireguard-go log:\n{})", server.log());
    let handshakes = sh(&["wg", "show", &name, "latest-handshakes"]);
    assert!(!handshakes.trim().ends_with("\t0"), "wireguard-go records no handshake with the client: {handshakes}");
    let seen = listener.connections(1);
    assert_eq!(seen, vec![Ending::Eof], "the probe connects once and closes with a FIN");

    // IPv6: ICMPv6 echo (its checksum covers our address) answered by the kernel.
    let v6 = SelfTestPlan {
        server: (std::net::Ipv6Addr::LOCALHOST, SERVER_PORT).into(),
        client_address: "fd00::fe".parse().unwrap(),
        ping_target: "fd00::1".parse().unwrap(),
        probes: vec![],
        ..plan.clone()
    };
    std::thread::sleep(Duration::from_millis(50));
    let outcome = run(&v6);
    eprintln!("{outcome}");
    assert!(outcome.passed(), "{outcome}");

    // FAIL with the kernel's ICMP error for a destination it will not route.
    std::thread::sleep(Duration::from_millis(50));
    let blocked = SelfTestPlan { probes: vec![plan.probes[0], "10.0.7.7:80".parse().unwrap()], ..plan.clone() };
    let outcome = run(&blocked);
    eprintln!("{outcome}");
    assert!(
        matches!(&outcome, SelfTestOutcome::Fail { step: Step::Probe(target), reason, probes, .. }
            if target.to_string() == "10.0.7.7:80" && probes.len() == 1
                && reason.ends_with("administratively prohibited (ICMP from 10.100.0.1)")),
        "{outcome}"
    );

    // FAIL naming the probe once nothing listens there.
    assert_eq!(listener.connections(2), vec![Ending::Eof, Ending::Eof]);
    drop(listener);
    // wireguard-go drops a second initiation from one peer within 20 ms.
    std::thread::sleep(Duration::from_millis(50));
    let outcome = run(&plan);
    eprintln!("{outcome}");
    match &outcome {
        SelfTestOutcome::Fail { step: Step::Probe(target), reason, handshake: Some(_), ping: Some(_), .. } => {
            assert_eq!(target.to_string(), PROBE);
            assert_eq!(reason, "connection refused");
        }
        _ => panic!("expected FAIL at the probe, got: {outcome}"),
    }

    // FAIL at the handshake with a key that is not the server's.
    let wrong = SelfTestPlan {
        server_public: PrivateKey::generate().public_key(),
        timeout: Duration::from_secs(1),
        ..plan.clone()
    };
    let outcome = run(&wrong);
    eprintln!("{outcome}");
    assert!(
        matches!(&outcome, SelfTestOutcome::Fail { step: Step::Handshake, reason, .. }
            if reason == "no response from 127.0.0.1:51820 within 1 s"),
        "{outcome}"
    );

    drop(server);
}

/// Interface names are global to the socket folder `/var/run/wireguard/`: unique per run.
fn unique_name() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("bst{}s{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs a command to completion; panics with its output when it fails. Returns stdout.
fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (make test-deps installs it)", args[0]));
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch folder for the key file and the wireguard-go log, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create(name: &str) -> ScratchDir {
        let path = std::env::temp_dir().join(format!("bastion-selftest-{name}"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        ScratchDir(path)
    }
    fn write_secret(&self, file: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.0.join(file);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        path
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `wireguard-go -f NAME` in the current thread's namespace, killed on drop.
struct WireguardGo {
    child: Child,
    name: String,
    log: PathBuf,
}

impl WireguardGo {
    fn start(name: &str, dir: &ScratchDir) -> WireguardGo {
        let log = dir.path().join("wireguard-go.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("wireguard-go")
            .args(["-f", name])
            .env("LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("wireguard-go (make test-deps installs it)");
        let server = WireguardGo { child, name: name.to_string(), log };
        let socket = server.socket();
        for _ in 0..500 {
            if socket.exists() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("wireguard-go did not create {} within 5 s:\n{}", socket.display(), server.log());
    }
    fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/wireguard/{}.sock", self.name))
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("wireguard-go log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.socket());
    }
}

/// How an accepted probe connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    /// An orderly close (the client's FIN).
    Eof,
    Error(String),
}

/// A TCP listener that accepts in a thread and records how each connection ended; it stops
/// listening (the port then refuses) when dropped.
struct ProbeListener {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Ending>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProbeListener {
    fn start(addr: std::net::SocketAddr) -> ProbeListener {
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nonblocking(false).unwrap();
                            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                            let mut buf = [0u8; 512];
                            let ending = loop {
                                match stream.read(&mut buf) {
                                    Ok(0) => break Ending::Eof,
                                    Ok(_) => continue,
                                    Err(e) => break Ending::Error(e.to_string()),
                                }
                            };
                            seen.lock().unwrap().push(ending);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        ProbeListener { stop, seen, thread: Some(thread) }
    }

    /// The connections seen so far, waiting up to a second for `expected` of them to end.
    fn connections(&self, expected: usize) -> Vec<Ending> {
        for _ in 0..100 {
            if self.seen.lock().unwrap().len() >= expected {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ProbeListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
