//! Kernel modules: reads the list the image builder writes and loads each one with
//! `finit_module`, in the listed order.
//!
//! The list file (`/etc/bastion/modules` in the initramfs) has one module per line:
//!
//! ```text
//! # comments and blank lines are ignored
//! kernel/drivers/net/ethernet/amazon/ena/ena.ko      # relative to /lib/modules/<uname -r>/
//! !kernel/drivers/net/tun.ko                          # "!" = required
//! /lib/modules/extra/foo.ko  param=1 other=2          # absolute path, with module parameters
//! ```
//!
//! Order is the image builder's job (dependencies first, as `modules.dep` gives them); this module
//! does not resolve dependencies. A module that is already loaded (EEXIST) is fine; a missing one
//! is logged; a missing or failing *required* module is logged loudly, and boot goes on anyway
//! (PID 1 must never stop: the console and health say what is wrong). A `#` starts a comment
//! anywhere on a line. Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) are handed to the
//! kernel to decompress.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where the image builder puts the list.
pub const LIST_FILE: &str = "/etc/bastion/modules";

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleEntry {
    /// As written: relative to `/lib/modules/<release>/`, or absolute.
    pub path: String,
    pub required: bool,
    /// Module parameters (`name=value ...`), empty for none.
    pub params: String,
    /// 1-based line in the list file.
    pub line: usize,
}

impl ModuleEntry {
    /// The file to open for kernel release `release`.
    pub fn file(&self, release: &str) -> PathBuf {
        if self.path.starts_with('/') {
            PathBuf::from(&self.path)
        } else {
            Path::new("/lib/modules").join(release).join(&self.path)
        }
    }

    /// The module's short name for log lines (`ena` for `.../ena.ko`).
    pub fn name(&self) -> &str {
        let base = self.path.rsplit('/').next().unwrap_or(&self.path);
        base.split(".ko").next().unwrap_or(base)
    }
}

/// Parses the list text. `origin` names the file in errors. Lines that cannot be understood are
/// returned as problems (the rest still loads).
pub fn parse_list(text: &str, origin: &str) -> (Vec<ModuleEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (required, rest) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, line),
        };
        let mut words = rest.splitn(2, char::is_whitespace);
        let path = words.next().unwrap_or("");
        let params = words.next().unwrap_or("").trim().to_string();
        if path.is_empty() {
            problems.push(format!("{origin}:{line_no}: expected a module path after \"!\""));
            continue;
        }
        let base = path.rsplit('/').next().unwrap_or(path);
        if !base.contains(".ko") {
            problems
                .push(format!("{origin}:{line_no}: \"{path}\" is not a module file (expected a path ending in .ko)"));
            continue;
        }
        if path.split('/').any(|part| part == "..") {
            problems.push(format!("{origin}:{line_no}: \"{path}\" must not contain \"..\""));
            continue;
        }
        entries.push(ModuleEntry { path: path.to_string(), required, params, line: line_no });
    }
    (entries, problems)
}

/// What happened to one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    Loaded,
    AlreadyLoaded,
    Missing,
    Failed(String),
}

/// Loads every module of the list file, logging a summary and every failure.
pub fn load_from_list(list_file: &Path) {
    let text = match std::fs::read_to_string(list_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::log!("modules: no list at {}, loading none", list_file.display());
            return;
        }
        Err(e) => {
            crate::log!("modules: ERROR cannot read {}: {e}; loading none", list_file.display());
            return;
        }
    };
    let origin = list_file.display().to_string();
    let (entries, problems) = parse_list(&text, &origin);
    for p in &problems {
        crate::log!("modules: ERROR {p}");
    }
    let release = kernel_release();
    let started = std::time::Instant::now();
    let mut loaded = Vec::new();
    let mut already = 0;
    let mut missing = 0;
    for entry in &entries {
        let file = entry.file(&release);
        match load(&file, &entry.params) {
            LoadOutcome::Loaded => loaded.push(entry.name().to_string()),
            LoadOutcome::AlreadyLoaded => already += 1,
            LoadOutcome::Missing => {
                missing += 1;
                if entry.required {
                    crate::log!(
                        "modules: ERROR required module {} is missing: {} ({origin}:{}); the appliance will not work without it",
                        entry.name(),
                        file.display(),
                        entry.line
                    );
                } else {
                    crate::log!("modules: {} not found at {}, skipped", entry.name(), file.display());
                }
            }
            LoadOutcome::Failed(why) => {
                missing += 1;
                if entry.required {
                    crate::log!(
                        "modules: ERROR required module {} failed to load from {}: {why}; the appliance will not work without it",
                        entry.name(),
                        file.display()
                    );
                } else {
                    crate::log!("modules: {} failed to load from {}: {why}", entry.name(), file.display());
                }
            }
        }
    }
    crate::log!(
        "modules: loaded {} in {} ms ({}){}{}",
        loaded.len(),
        started.elapsed().as_millis(),
        if loaded.is_empty() { "none".to_string() } else { loaded.join(" ") },
        if already > 0 { format!(", {already} already loaded") } else { String::new() },
        if missing > 0 { format!(", {missing} not loaded") } else { String::new() },
    );
}

/// `uname -r`.
pub fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct; every field is a NUL-terminated array.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr()).to_string_lossy().into_owned()
    }
}

const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Loads one module file with `finit_module`.
pub fn load(file: &Path, params: &str) -> LoadOutcome {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return LoadOutcome::Missing,
        Err(e) => return LoadOutcome::Failed(format!("open: {e}")),
    };
    let name = file.to_string_lossy();
    let flags = if name.ends_with(".xz") || name.ends_with(".zst") || name.ends_with(".gz") {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let Ok(params) = std::ffi::CString::new(params) else {
        return LoadOutcome::Failed("parameters contain a NUL byte".into());
    };
    // SAFETY: a valid open fd, a NUL-terminated parameter string, and integer flags.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), flags) };
    if rc == 0 {
        return LoadOutcome::Loaded;
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) => LoadOutcome::AlreadyLoaded,
        _ => LoadOutcome::Failed(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relative_absolute_required_and_params() {
        let text = "# modules for the appliance\n\
                    kernel/drivers/net/ethernet/amazon/ena/ena.ko\n\
                    \n\
                    !kernel/drivers/net/tun.ko   # the tunnel\n\
                    ! /opt/m/nf_tables.ko.xz  debug=1 x=2\n";
        let (entries, problems) = parse_list(text, "modules");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].name(), "ena");
        assert!(!entries[0].required);
        assert_eq!(entries[0].line, 2);
        assert_eq!(
            entries[0].file("6.1.0-9-cloud-arm64"),
            PathBuf::from("/lib/modules/6.1.0-9-cloud-arm64/kernel/drivers/net/ethernet/amazon/ena/ena.ko")
        );
        assert!(entries[1].required);
        assert_eq!(entries[1].name(), "tun");
        assert_eq!(entries[1].params, "");
        assert!(entries[2].required);
        assert_eq!(entries[2].file("x"), PathBuf::from("/opt/m/nf_tables.ko.xz"));
        assert_eq!(entries[2].name(), "nf_tables");
        assert_eq!(entries[2].params, "debug=1 x=2");
    }

    #[test]
    fn garbage_lines_are_problems_not_panics() {
        let text = "!\nnot-a-module\n../../etc/passwd.ko\nkernel/ok.ko\n\u{0}\u{1}garbage\n";
        let (entries, problems) = parse_list(text, "/etc/bastion/modules");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].path, "kernel/ok.ko");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("/etc/bastion/modules:1: "), "{}", problems[0]);
        assert!(problems[1].contains("not-a-module"));
        assert!(problems[2].contains(".."));
    }

    #[test]
    fn missing_module_file_is_reported_as_missing() {
        assert_eq!(load(Path::new("/nonexistent/dir/x.ko"), ""), LoadOutcome::Missing);
    }
}
