//! The serial console: on the appliance, standard input, output and error of PID 1 (and so of
//! the service it starts) become `/dev/console`, which the kernel points at the firmware's SPCR
//! serial port (ttyS0 on EC2, ttyAMA0 under QEMU) — what `aws ec2 get-console-output` shows.
//! Log lines themselves are `crate::log`'s.

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// Reopens fds 0, 1 and 2 on `/dev/console`. Returns why not, when it cannot (the kernel may
/// already have given us the console, in which case logging still works).
pub fn attach() -> Result<(), String> {
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/console")
        .map_err(|e| format!("open /dev/console: {e}"))?;
    for fd in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors of our own process.
        if unsafe { libc::dup2(console.as_raw_fd(), fd) } < 0 {
            return Err(format!("dup2 /dev/console to fd {fd}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
