//! The TUN device: opens `/dev/net/tun` as a multi-queue interface (one queue per worker) and
//! reads/writes IP packets — bare, or each behind a virtio-net header when opened with
//! offloads (`IFF_VNET_HDR`, and `TUNSETOFFLOAD` for TSO and checksum offload; see
//! `super::offload`). Addresses, MTU and link state are set over rtnetlink by the caller; the
//! interface disappears when the last queue is closed.

use std::fs::{File, OpenOptions};
use std::io;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_VNET_HDR: libc::c_short = 0x4000;
// _IOW('T', 202, int)
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
// _IOW('T', 208, unsigned int)
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;

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

    /// One packet to the kernel, gathered from `slices` (a TUN write is always one packet).
    pub fn write_gathered(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.file).write_vectored(slices)
    }
}

/// The offloads of the queues: what to ask for, and what the kernel granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Every read and write carries a virtio-net header.
    pub vnet_header: bool,
    /// The kernel may hand over TCP super-packets and partial checksums (`TUNSETOFFLOAD`).
    pub tso: bool,
}

impl AsFd for TunQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Creates (or attaches to) the TUN interface `name` with `queues` queues, non-blocking, with the
/// offloads `wanted` where the kernel grants them (a kernel that refuses `IFF_VNET_HDR` gets
/// bare queues, one that refuses `TUNSETOFFLOAD` no TSO; the `Features` returned say which).
pub fn open(name: &str, queues: usize, wanted: Features) -> io::Result<(Vec<TunQueue>, Features)> {
    if wanted.vnet_header {
        match open_queues(name, queues, IFF_VNET_HDR) {
            Ok(result) => {
                let tso =
                    wanted.tso && set_offload(&result[0], TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN).is_ok();
                return Ok((result, Features { vnet_header: true, tso }));
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let result = open_queues(name, queues, 0)?;
    Ok((result, Features { vnet_header: false, tso: false }))
}

/// Tells the kernel which offloads our reads take (device-wide).
fn set_offload(queue: &TunQueue, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its unsigned int argument by value; the fd is open.
    let rc = unsafe { libc::ioctl(queue.file.as_raw_fd(), TUNSETOFFLOAD as _, flags as libc::c_ulong) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn open_queues(name: &str, queues: usize, extra_flags: libc::c_short) -> io::Result<Vec<TunQueue>> {
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
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | extra_flags,
            _pad: [0; 22],
        };
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
