//! The pseudo file systems PID 1 needs: `/proc`, `/sys`, `/dev` (devtmpfs — the Debian cloud
//! kernel does not mount it by itself), `/run` and `/tmp`.
//!
//! A target that is already a mount point is left alone, so `bastion init` in a test's mount
//! namespace (where `unshare --mount-proc` and the host already provide them) changes nothing.
//! A test never gets the tmpfs on `/run` and `/tmp`: those are the host's, and a test may keep
//! its own files there (a CI checkout under /tmp would vanish behind a fresh tmpfs).
//! There is no `/dev/pts`: nothing on the appliance opens a terminal.

use nix::mount::{mount, MsFlags};
use std::path::Path;

struct PseudoFs {
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: &'static str,
}

fn table() -> [PseudoFs; 5] {
    let hard = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    [
        PseudoFs { fstype: "proc", target: "/proc", flags: hard, data: "" },
        PseudoFs { fstype: "sysfs", target: "/sys", flags: hard, data: "" },
        PseudoFs { fstype: "devtmpfs", target: "/dev", flags: MsFlags::MS_NOSUID, data: "mode=0755" },
        PseudoFs { fstype: "tmpfs", target: "/run", flags: hard, data: "mode=0755" },
        PseudoFs { fstype: "tmpfs", target: "/tmp", flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV, data: "mode=1777" },
    ]
}

/// What `mount_all` did, for one summary log line (written once the console is open).
#[derive(Debug, Default)]
pub struct MountReport {
    pub mounted: Vec<&'static str>,
    pub already: Vec<&'static str>,
    pub failed: Vec<String>,
}

/// Mounts every pseudo file system that is not mounted yet (with `scratch`, also the tmpfs on
/// `/run` and `/tmp`). Never fails: a failure is reported.
pub fn mount_all(scratch: bool) -> MountReport {
    let mut report = MountReport::default();
    for fs in table() {
        if !scratch && fs.fstype == "tmpfs" {
            continue;
        }
        if is_mount_point(fs.target) {
            report.already.push(fs.target);
            continue;
        }
        if let Err(e) = std::fs::create_dir_all(fs.target) {
            report.failed.push(format!("{}: create directory: {e}", fs.target));
            continue;
        }
        let data = if fs.data.is_empty() { None } else { Some(fs.data) };
        match mount(Some(fs.fstype), fs.target, Some(fs.fstype), fs.flags, data) {
            Ok(()) => report.mounted.push(fs.target),
            Err(nix::errno::Errno::EBUSY) => report.already.push(fs.target),
            Err(e) => report.failed.push(format!("{} ({}): {e}", fs.target, fs.fstype)),
        }
    }
    report
}

impl MountReport {
    pub fn log(&self) {
        let list = |v: &[&str]| if v.is_empty() { "none".to_string() } else { v.join(" ") };
        crate::log!("mounts: mounted {}; already mounted {}", list(&self.mounted), list(&self.already));
        for f in &self.failed {
            crate::log!("mounts: ERROR {f}");
        }
    }
}

/// Whether `target` is a mount point, from `/proc/self/mountinfo` (false when /proc is not
/// mounted yet, which is the case at the appliance's first boot step).
fn is_mount_point(target: &str) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    mountinfo_has(&info, Path::new(target))
}

/// `mountinfo` field 5 is the mount point (with spaces escaped as `\040`).
fn mountinfo_has(info: &str, target: &Path) -> bool {
    info.lines().filter_map(|line| line.split(' ').nth(4)).any(|mp| Path::new(&mp.replace("\\040", " ")) == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mount_points_from_mountinfo() {
        let info = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                    23 1 0:5 / /dev rw - devtmpfs udev rw\n\
                    24 1 0:6 / /my\\040dir rw - tmpfs t rw\n";
        assert!(mountinfo_has(info, Path::new("/proc")));
        assert!(mountinfo_has(info, Path::new("/dev")));
        assert!(mountinfo_has(info, Path::new("/my dir")));
        assert!(!mountinfo_has(info, Path::new("/run")));
        assert!(!mountinfo_has("garbage\n\n", Path::new("/run")));
    }
}
