//! The TUN device: opens `/dev/net/tun` as a multi-queue interface (one queue per worker) and
//! reads/writes raw IP packets. Addresses, MTU and link state are set over rtnetlink by the
//! caller; the interface disappears when the last queue is closed.

use std::fs::{File, OpenOptions};
use std::io;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
// _IOW('T', 202, int)
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// One queue of the TUN interface.
pub struct TunQueue {
    file: File,
}

impl TunQueue {
    /// One packet from the kernel (a TUN read never returns part of one).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// One packet to the kernel.
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }
}

impl AsFd for TunQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Creates (or attaches to) the TUN interface `name` with `queues` queues, non-blocking.
pub fn open(name: &str, queues: usize) -> io::Result<Vec<TunQueue>> {
    crate::netlink::route::check_interface_name(name)
        .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, format!("interface name {name:?}: {why}")))?;
    let mut result = Vec::with_capacity(queues);
    for _ in 0..queues.max(1) {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("open /dev/net/tun: {e}")))?;
        let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE, _pad: [0; 22] };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; IfReq has its layout (name, flags,
        //   padding to 40 bytes) and lives across the call; the fd is open.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("create TUN interface {name}: {e}")));
        }
        result.push(TunQueue { file });
    }
    Ok(result)
}
