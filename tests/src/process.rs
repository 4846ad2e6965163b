//! A long-running process (wireguard-go, an HTTP server, `bastion run`) whose stdout and stderr
//! go to one log file, and which is stopped (SIGTERM, then SIGKILL) and reaped on drop.

use std::ffi::OsStr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::wait::{wait_until, POLL};

pub struct Process {
    label: String,
    command: String,
    /// The child and, once reaped, its status; behind a lock so every method takes `&self`
    /// and a guard can be shared with the threads of a test.
    state: Mutex<(Child, Option<ExitStatus>)>,
    pid: i32,
    log_path: PathBuf,
    /// How long drop waits after SIGTERM before SIGKILL.
    grace: Duration,
}

impl Process {
    /// Starts `argv` with stdout and stderr appended to `log_path`. `label` names it in
    /// messages. The process gets SIGKILL if the thread that started it dies (so a test run
    /// killed outright does not leave it behind): keep the guard on the test's own thread.
    pub fn spawn<S: AsRef<OsStr>>(label: &str, argv: &[S], envs: &[(&str, &str)], log_path: &Path) -> Process {
        let command = crate::command::command_line(argv);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap_or_else(|e| panic!("cannot open log {}: {e}", log_path.display()));
        let log2 = log.try_clone().expect("clone log file handle");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log2));
        for (k, v) in envs {
            cmd.env(k, v);
        }
        // SAFETY: the closure runs between fork and exec and calls only prctl(2), which is
        //   async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {label} (`{command}`): {e}"));
        Process {
            label: label.to_string(),
            command,
            pid: child.id() as i32,
            state: Mutex::new((child, None)),
            log_path: log_path.to_path_buf(),
            grace: Duration::from_secs(3),
        }
    }

    /// Sets how long drop waits between SIGTERM and SIGKILL.
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process has printed so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The log framed for a failure message.
    pub fn log_report(&self) -> String {
        format!(
            "--- log of {} (`{}`, {}) ---\n{}\n--- end of log of {} ---",
            self.label,
            self.command,
            self.log_path.display(),
            self.log().trim_end(),
            self.label
        )
    }

    /// The log's current length: pass it to [`Process::wait_for_log_after`] to wait for a line
    /// printed after this point.
    pub fn log_len(&self) -> usize {
        self.log().len()
    }

    /// Waits until the log contains `needle`; returns the first line holding it. On timeout
    /// the error holds the whole log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.wait_for_log_after(0, needle, timeout)
    }

    /// Like [`Process::wait_for_log`], looking only at what was printed after byte `offset`.
    pub fn wait_for_log_after(&self, offset: usize, needle: &str, timeout: Duration) -> Result<String, String> {
        wait_until(&format!("{} to log {needle:?}", self.label), timeout, || {
            let log = self.log();
            let fresh = log.get(offset..).unwrap_or("");
            match fresh.lines().find(|l| l.contains(needle)) {
                Some(line) => Ok(line.to_string()),
                // Says so when the process has ended: then the line will never come.
                None => Err(self.check_running().err().unwrap_or_else(|| self.log_report())),
            }
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Child, Option<ExitStatus>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn signal(&self, signal: i32) {
        // Under the lock: a reaped pid could be reused, so never signal after reaping.
        let state = self.state();
        if state.1.is_none() {
            // SAFETY: kill(2) takes plain integers; the pid is ours and not yet reaped (checked under the lock).
            unsafe {
                libc::kill(self.pid, signal);
            }
        }
    }

    /// The exit status if the process has ended (reaping it), else `None`.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        let mut state = self.state();
        if state.1.is_none() {
            if let Ok(Some(status)) = state.0.try_wait() {
                state.1 = Some(status);
            }
        }
        state.1
    }

    pub fn is_running(&self) -> bool {
        self.try_exit().is_none()
    }

    /// `Err` with the exit status and the log once the process has ended.
    pub fn check_running(&self) -> Result<(), String> {
        match self.try_exit() {
            None => Ok(()),
            Some(status) => {
                Err(format!("{} has exited ({})\n{}", self.label, Self::describe(status), self.log_report()))
            }
        }
    }

    /// Waits for the process to end by itself; on timeout the error holds the log.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} still running after {:.1} s\n{}",
                    self.label,
                    timeout.as_secs_f64(),
                    self.log_report()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Describes an exit status the way a shell would.
    pub fn describe(status: ExitStatus) -> String {
        match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => format!("{status:?}"),
        }
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL; always reaps.
    pub fn stop(&self) -> ExitStatus {
        if let Some(status) = self.try_exit() {
            return status;
        }
        self.signal(libc::SIGTERM);
        if let Ok(status) = self.wait_exit(self.grace) {
            return status;
        }
        self.signal(libc::SIGKILL);
        let mut state = self.state();
        let status = state.0.wait().expect("reap after SIGKILL");
        state.1 = Some(status);
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The pids whose parent is `ppid` (from `/proc/PID/stat`): e.g. the process `unshare --fork`
/// started, or the service a supervisor runs.
pub fn children_of(ppid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| parent_of(*pid) == Some(ppid))
        .collect()
}

/// The parent pid from `/proc/PID/stat`: the field after the state, which follows the command
/// name in parentheses (a name that may itself hold spaces and parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}
