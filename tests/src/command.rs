//! Running a short command (ip, wg, nft, sysctl...) and keeping what it said, so a failure
//! message can show the exact command line and its output.

use std::ffi::OsStr;
use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What a finished command said.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// The exit code; `None` when a signal killed it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The stdout, or a panic that shows the command and everything it printed.
    pub fn expect_success(self) -> String {
        if !self.success() {
            panic!("command failed: {self}");
        }
        self.stdout
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` exited with {:?}", self.command, self.code)?;
        if !self.stdout.trim().is_empty() {
            write!(f, "\n--- stdout ---\n{}", self.stdout.trim_end())?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, "\n--- stderr ---\n{}", self.stderr.trim_end())?;
        }
        Ok(())
    }
}

/// Runs `argv` to completion (stdin closed, or fed `stdin`), capturing its output.
pub fn run_with_input<S: AsRef<OsStr>>(argv: &[S], stdin: Option<&[u8]>) -> Output {
    let line = command_line(argv);
    assert!(!argv.is_empty(), "empty command");
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).unwrap_or_else(|e| panic!("cannot write to `{line}`: {e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("cannot wait for `{line}`: {e}"));
    Output {
        command: line,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `argv` to completion, capturing its output.
pub fn run<S: AsRef<OsStr>>(argv: &[S]) -> Output {
    run_with_input(argv, None)
}

/// Runs `argv` and panics (with the output) unless it succeeds; returns its stdout.
pub fn run_ok<S: AsRef<OsStr>>(argv: &[S]) -> String {
    run(argv).expect_success()
}

pub fn command_line<S: AsRef<OsStr>>(argv: &[S]) -> String {
    argv.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
}

/// Where `PATH` finds `program`, if anywhere.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}
