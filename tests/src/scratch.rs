//! Test support: run a test body in a scratch network namespace of its own, so kernel tests
//! never touch the host's links, routes or nftables, and can run in parallel.
//!
//! A network namespace belongs to a thread: [`run`] starts a new thread, moves it into a new
//! namespace with `unshare(CLONE_NEWNET)`, and runs the body there. The namespace disappears
//! with the thread (and the commands it started). Commands (`ip`, `nft`) started from that
//! thread inherit its namespace.

use std::process::{Command, Output, Stdio};

/// The scratch namespace the body runs in.
pub struct ScratchNetns {
    _private: (),
}

impl ScratchNetns {
    /// Runs a command in this namespace and returns its output; panics with its stderr when it
    /// fails.
    pub fn command_output(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program, args);
        assert!(
            out.status.success(),
            "{program} {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn command_ok(&self, program: &str, args: &[&str]) {
        self.command_output(program, args);
    }

    pub fn command(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"))
    }
}

/// Runs `body` on a new thread inside a new, empty network namespace (with `lo` up).
pub fn run<T: Send + 'static>(body: impl FnOnce(&ScratchNetns) -> T + Send + 'static) -> T {
    assert!(
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        unsafe { libc::geteuid() } == 0,
        "kernel tests need root (they create network namespaces); run them as root"
    );
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare(2) takes a flag; it changes only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        let netns = ScratchNetns { _private: () };
        netns.command_ok("ip", &["link", "set", "lo", "up"]);
        body(&netns)
    });
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

impl ScratchNetns {
    /// Runs a command with `input` on its standard input; panics with its stderr when it fails.
    pub fn command_with_stdin(&self, program: &str, args: &[&str], input: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{program} {} <<{input}\n: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A named network namespace (`ip netns add`), unique to this process and test, deleted on
/// drop even when the test fails. Used for the far ends of veth pairs.
pub struct NamedNetns {
    name: String,
}

impl NamedNetns {
    pub fn new(tag: &str) -> NamedNetns {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("bnl{}{tag}{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let out = Command::new("ip").args(["netns", "add", &name]).output().expect("run ip netns add");
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        NamedNetns { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside this namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.name]).args(args).output().expect("run ip netns exec")
    }

    /// `ip ARGS` inside this namespace; panics when it fails.
    pub fn ip(&self, args: &str) {
        let mut full = vec!["ip"];
        full.extend(args.split(' '));
        let out = self.run(&full);
        assert!(out.status.success(), "ip {args} in {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
    }

    /// Starts a long-running command inside this namespace, its stdout and stderr to `log`.
    pub fn spawn_logged(&self, args: &[&str], log: &std::path::Path) -> Spawned {
        let file = std::fs::File::create(log).expect("create log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file)
            .spawn()
            .expect("spawn in namespace");
        Spawned { child }
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A process started by a test; killed and reaped on drop.
pub struct Spawned {
    child: std::process::Child,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drops every capability of the calling thread (only), to see the errors an unprivileged
/// caller gets. Capabilities are per thread in Linux; the raw syscall changes only this one.
pub fn drop_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset reads one header and two data structs, laid out as the kernel's v3 ABI
    //   (`#[repr(C)]`), from live locals.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}
