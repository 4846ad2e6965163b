//! The power button: EC2 stop/terminate reaches an arm64 instance as an ACPI power-button press,
//! and QEMU's `system_powerdown` the same way (ACPI, under UEFI); both show up as `KEY_POWER` on some
//! `/dev/input/event*` device. Which one is not fixed, so every event device is asked for its
//! key capabilities (`EVIOCGBIT(EV_KEY)`) and those that have `KEY_POWER` are watched —
//! including devices that appear later (their driver may load after init starts).

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;
/// KEY_MAX is 0x2ff: the key bitmap is 96 bytes.
const KEY_BITMAP_BYTES: usize = 0x300 / 8;

nix::ioctl_read_buf!(eviocgbit_key, b'E', 0x20 + EV_KEY as u8, u8);
nix::ioctl_read_buf!(eviocgname, b'E', 0x06, u8);

/// Whether key `code` is set in an `EVIOCGBIT(EV_KEY)` bitmap (little-endian bit order).
pub fn has_key(bitmap: &[u8], code: u16) -> bool {
    bitmap.get(code as usize / 8).is_some_and(|byte| byte & (1 << (code % 8)) != 0)
}

/// Whether a block of `input_event`s read from a device holds a KEY_POWER press.
pub fn power_pressed(events: &[libc::input_event]) -> bool {
    events.iter().any(|e| e.type_ == EV_KEY && e.code == KEY_POWER && e.value == 1)
}

struct Button {
    path: PathBuf,
    name: String,
    fd: OwnedFd,
}

/// Watches for power-button presses for as long as the process runs; calls `pressed` with the
/// device's description for each press.
pub fn watch(pressed: impl Fn(String) + Send + 'static) {
    let spawned = std::thread::Builder::new().name("power-button".into()).spawn(move || {
        let mut buttons: Vec<Button> = Vec::new();
        let mut seen: HashSet<PathBuf> = HashSet::new();
        let mut said_none = false;
        loop {
            for button in scan(&mut seen) {
                crate::log!("power: watching {} ({}) for KEY_POWER", button.path.display(), button.name);
                buttons.push(button);
            }
            if buttons.is_empty() && !said_none {
                crate::log!("power: no input device reports KEY_POWER yet; looking again every 5 s");
                said_none = true;
            }
            wait_for_press(&mut buttons, &pressed);
        }
    });
    if let Err(e) = spawned {
        crate::log!("power: ERROR cannot start the power-button watcher: {e}");
    }
}

/// Opens the event devices not looked at before and keeps those with KEY_POWER.
fn scan(seen: &mut HashSet<PathBuf>) -> Vec<Button> {
    let Ok(dir) = std::fs::read_dir("/dev/input") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut paths: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("event")))
        .collect();
    paths.sort();
    for path in paths {
        if !seen.insert(path.clone()) {
            continue;
        }
        let Ok(file) =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(&path)
        else {
            continue;
        };
        let fd: OwnedFd = file.into();
        let mut bits = [0u8; KEY_BITMAP_BYTES];
        // SAFETY: EVIOCGBIT writes at most bits.len() bytes into the buffer.
        if unsafe { eviocgbit_key(fd.as_raw_fd(), &mut bits) }.is_err() || !has_key(&bits, KEY_POWER) {
            continue;
        }
        let mut name = [0u8; 128];
        // SAFETY: EVIOCGNAME writes at most name.len() bytes.
        let name = match unsafe { eviocgname(fd.as_raw_fd(), &mut name) } {
            Ok(_) => String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or(&[])).into_owned(),
            Err(_) => "unnamed".into(),
        };
        found.push(Button { path, name, fd });
    }
    found
}

/// Polls the buttons for up to 5 s (then the caller rescans for new devices).
fn wait_for_press(buttons: &mut Vec<Button>, pressed: &impl Fn(String)) {
    if buttons.is_empty() {
        std::thread::sleep(Duration::from_secs(5));
        return;
    }
    let mut fds: Vec<libc::pollfd> =
        buttons.iter().map(|b| libc::pollfd { fd: b.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: polling a live pollfd array of the length we pass.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 5000) };
    if n <= 0 {
        return;
    }
    let mut gone = Vec::new();
    for (i, pfd) in fds.iter().enumerate() {
        if pfd.revents == 0 {
            continue;
        }
        // SAFETY: input_event is plain data; zeroed is a valid value.
        let mut events: [libc::input_event; 16] = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of_val(&events);
        // SAFETY: reading at most `size` bytes into the array.
        let r = unsafe { libc::read(pfd.fd, events.as_mut_ptr() as *mut libc::c_void, size) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::Interrupted {
                gone.push(i);
            }
            continue;
        }
        if r == 0 || pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            gone.push(i);
        }
        let count = r as usize / std::mem::size_of::<libc::input_event>();
        if power_pressed(&events[..count]) {
            let b = &buttons[i];
            pressed(format!("power button ({} {})", b.path.display(), b.name));
        }
    }
    for i in gone.into_iter().rev() {
        let b = buttons.remove(i);
        crate::log!("power: {} ({}) went away", b.path.display(), b.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_power_bit() {
        let mut bits = [0u8; KEY_BITMAP_BYTES];
        assert!(!has_key(&bits, KEY_POWER));
        bits[14] = 0b0001_0000; // 116 = 14 * 8 + 4
        assert!(has_key(&bits, KEY_POWER));
        assert!(!has_key(&bits, 115));
        assert!(!has_key(&bits[..10], KEY_POWER));
    }

    #[test]
    fn only_a_press_of_key_power_counts() {
        // SAFETY: input_event is plain data.
        let mut e: libc::input_event = unsafe { std::mem::zeroed() };
        e.type_ = EV_KEY;
        e.code = KEY_POWER;
        e.value = 0; // release
        assert!(!power_pressed(&[e]));
        let mut press = e;
        press.value = 1;
        let mut other = press;
        other.code = 115;
        assert!(!power_pressed(&[other]));
        assert!(power_pressed(&[other, press]));
        assert_eq!(std::mem::size_of::<libc::input_event>(), 24);
    }
}
