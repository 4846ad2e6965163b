//! `bastion run`: starts the data plane, NAT and health responder from a config, then waits for
//! a signal to drain and exit.

use std::path::Path;
use std::process::ExitCode;

pub fn run_from_file(path: &Path) -> ExitCode {
    let _ = path;
    ExitCode::FAILURE
}
