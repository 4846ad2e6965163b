//! `boot-probe`: a stand-in `/init` for the boot tests, independent of the real init.
//!
//! Proves, in the real kernel under QEMU, what the image promises the init: the module list at
//! `/etc/bastion/modules` loads line by line with `finit_module` (dependencies first), the NIC
//! driver binds, and the power button (QEMU `system_powerdown`, EC2 stop) arrives as an input
//! event `KEY_POWER` on `/dev/input/event*`. Every finding is one `probe: ...` console line; on
//! KEY_POWER it powers the machine off. Not part of the appliance.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;

const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;

fn say(msg: &str) {
    // The kernel gave us /dev/console as stdout; one line per finding.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "probe: {msg}");
    let _ = out.flush();
}

fn mount(source: &str, target: &str, fstype: &str) {
    let (s, t, f) = (CString::new(source).unwrap(), CString::new(target).unwrap(), CString::new(fstype).unwrap());
    let _ = fs::create_dir_all(target);
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        say(&format!("mount {fstype} on {target}: {}", std::io::Error::last_os_error()));
    }
}

fn load_modules() {
    let list = match fs::read_to_string("/etc/bastion/modules") {
        Ok(l) => l,
        Err(e) => return say(&format!("/etc/bastion/modules: {e}")),
    };
    let (mut ok, mut total) = (0, 0);
    for path in list.lines().filter(|l| !l.is_empty()) {
        total += 1;
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                say(&format!("module {path}: {e}"));
                continue;
            }
        };
        let params = CString::new("").unwrap();
        // SAFETY: a valid fd and an empty parameter string.
        let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        if rc == 0 {
            ok += 1;
        } else {
            say(&format!("module {path}: {}", std::io::Error::last_os_error()));
        }
    }
    say(&format!("modules loaded {ok}/{total}"));
}

fn report_devices() {
    let mut nets: Vec<String> = fs::read_dir("/sys/class/net")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    nets.sort();
    for name in &nets {
        let driver = fs::read_link(format!("/sys/class/net/{name}/device/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "-".into());
        say(&format!("net {name} driver {driver}"));
    }
    let devices = fs::read_to_string("/proc/bus/input/devices").unwrap_or_default();
    let mut name = String::new();
    for line in devices.lines() {
        if let Some(n) = line.strip_prefix("N: Name=") {
            name = n.trim_matches('"').to_string();
        } else if let Some(h) = line.strip_prefix("H: Handlers=") {
            say(&format!("input \"{name}\" handlers {}", h.trim()));
        }
    }
    for fsname in ["/sys/module/nf_tables", "/sys/module/tun", "/sys/module/nft_masq", "/sys/module/evdev"] {
        if !std::path::Path::new(fsname).exists() {
            say(&format!("missing {fsname}"));
        }
    }
}

/// Waits for KEY_POWER on any event device; returns the device name.
fn wait_for_power_button() -> Option<String> {
    let mut devices = Vec::new();
    for entry in fs::read_dir("/dev/input").ok()?.filter_map(|e| e.ok()) {
        let path = entry.path();
        if !path.file_name()?.to_string_lossy().starts_with("event") {
            continue;
        }
        let name = fs::read_to_string(format!("/sys/class/input/{}/device/name", path.file_name()?.to_string_lossy()))
            .unwrap_or_default()
            .trim()
            .to_string();
        if let Ok(f) = fs::File::open(&path) {
            devices.push((f, format!("{} ({name})", path.display())));
        }
    }
    if devices.is_empty() {
        say("no /dev/input/event* devices");
        return None;
    }
    say("ready for the power button");
    loop {
        let mut fds: Vec<libc::pollfd> =
            devices.iter().map(|(f, _)| libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        // SAFETY: fds is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue;
        }
        for (i, p) in fds.iter().enumerate() {
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            let mut ev = [0u8; std::mem::size_of::<libc::input_event>()];
            // SAFETY: reading into a buffer of the struct's size.
            let r = unsafe { libc::read(p.fd, ev.as_mut_ptr().cast(), ev.len()) };
            if r as usize != ev.len() {
                continue;
            }
            // SAFETY: the kernel wrote one whole input_event.
            let ev: libc::input_event = unsafe { std::ptr::read_unaligned(ev.as_ptr().cast()) };
            say(&format!("event type {} code {} value {} from {}", ev.type_, ev.code, ev.value, devices[i].1));
            if ev.type_ == EV_KEY && ev.code == KEY_POWER && ev.value == 1 {
                return Some(devices[i].1.clone());
            }
        }
    }
}

fn main() {
    say("started as pid 1");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    load_modules();
    report_devices();
    if let Some(device) = wait_for_power_button() {
        say(&format!("KEY_POWER from {device}; powering off"));
    }
    // SAFETY: plain syscalls; as PID 1 we are allowed to power off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}
