//! A named network namespace (`ip netns add`), deleted on drop together with anything still
//! running in it. Commands run inside with `ip netns exec`; Rust code (sockets for HTTP, TCP
//! probes, UDP floods) runs inside with [`Netns::enter`], on a thread that joins the namespace.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use crate::command::{self, Output};
use crate::process::Process;
use crate::wait::wait_until;

pub struct Netns {
    name: String,
    /// Only the owner deletes the namespace on drop.
    owned: bool,
}

impl Netns {
    /// Creates a namespace named `name` (make it unique: see [`crate::unique_name`]), with its
    /// loopback up.
    pub fn new(name: &str) -> Netns {
        command::run_ok(&["ip", "netns", "add", name]);
        // From here on drop deletes it, even if the next step fails.
        let ns = Netns { name: name.to_string(), owned: true };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A handle on a namespace someone else owns (and deletes).
    pub fn borrowed(name: &str) -> Netns {
        Netns { name: name.to_string(), owned: false }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn argv<S: AsRef<OsStr>>(&self, argv: &[S]) -> Vec<std::ffi::OsString> {
        let mut full: Vec<std::ffi::OsString> =
            vec!["ip".into(), "netns".into(), "exec".into(), self.name.clone().into()];
        full.extend(argv.iter().map(|a| a.as_ref().to_os_string()));
        full
    }

    /// Runs a command inside the namespace to completion; never panics on failure.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Output {
        command::run(&self.argv(argv))
    }

    /// Runs a command inside the namespace, feeding it `stdin`.
    pub fn exec_with_input<S: AsRef<OsStr>>(&self, argv: &[S], stdin: &[u8]) -> Output {
        command::run_with_input(&self.argv(argv), Some(stdin))
    }

    /// Runs a command inside the namespace; panics (with its output) unless it succeeds.
    pub fn run<S: AsRef<OsStr>>(&self, argv: &[S]) -> String {
        self.exec(argv).expect_success()
    }

    /// Starts a long-running command inside the namespace (`ip netns exec` execs it, so the
    /// guard's pid is the command's own), logging to `log_path`.
    pub fn spawn<S: AsRef<OsStr>>(&self, label: &str, argv: &[S], envs: &[(&str, &str)], log_path: &Path) -> Process {
        Process::spawn(label, &self.argv(argv), envs, log_path)
    }

    /// Sets a sysctl inside the namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.run(&["sysctl", "-qw", &format!("{key}={value}")]);
    }

    /// Reads a sysctl inside the namespace.
    pub fn sysctl_get(&self, key: &str) -> String {
        self.run(&["sysctl", "-n", key]).trim().to_string()
    }

    /// One ping (v4 or v6) answered within `timeout`, retried until then.
    pub fn ping(&self, address: &str, timeout: Duration) -> Result<(), String> {
        wait_until(&format!("a ping answer from {address} in namespace {}", self.name), timeout, || {
            let out = self.exec(&["ping", "-n", "-c", "1", "-W", "1", address]);
            if out.success() {
                Ok(())
            } else {
                Err(out.to_string())
            }
        })
    }

    /// Runs `f` on a thread that has joined this namespace: sockets it opens live here.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/var/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file =
                        std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
                    // setns(CLONE_NEWNET) changes only this thread's namespace.
                    // SAFETY: setns(2) takes an open fd (borrowed from `file`) and a flag; it changes only this thread.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns into {}: {}", path.display(), std::io::Error::last_os_error());
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Like [`Netns::enter`], but returns at once: `f` runs on its own thread in the namespace
    /// until it returns by itself (keep it bounded), and the handle gives its result.
    pub fn enter_background<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = Path::new("/var/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
            // SAFETY: setns(2) takes an open fd (borrowed from `file`) and a flag; it changes only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {}: {}", path.display(), std::io::Error::last_os_error());
            f()
        })
    }

    /// Pids of the processes still running in the namespace.
    pub fn pids(&self) -> Vec<i32> {
        command::run(&["ip", "netns", "pids", &self.name])
            .stdout
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Guards normally stopped everything already; this catches what escaped them, so the
        // namespace (and its interfaces) really goes away.
        for pid in self.pids() {
            // SAFETY: kill(2) takes plain integers; a pid that is gone only makes it fail.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let out = command::run(&["ip", "netns", "del", &self.name]);
        if !out.success() {
            eprintln!("cleanup: {out}");
        }
    }
}
