//! The DHCP client's link to the wire: an AF_PACKET socket bound to the primary interface,
//! presented to smoltcp as a `phy::Device`.
//!
//! A classic BPF filter in the kernel passes only what a DHCP client needs — IPv4 UDP to port 68
//! (unfragmented) and ARP replies (to find the server's MAC for unicast renewals) — so the
//! data plane's traffic on the same interface is never copied to user space, and smoltcp never
//! answers ARP requests the kernel already answers. Frames we send ourselves are not looped back
//! (PACKET_IGNORE_OUTGOING). Unlike smoltcp's own `RawSocket`, I/O errors (the link going down)
//! are reported, never a panic.

use smoltcp::phy::{self, Checksum, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Frames we accept (jumbo-sized: a VPC's MTU is 9001).
const MAX_FRAME: usize = 9216;
const ETH_P_ALL: u16 = 0x0003;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

pub struct PacketSocket {
    fd: OwnedFd,
    /// The last send/receive error, for the DHCP loop to log (taken when read).
    last_error: Option<io::Error>,
}

/// `ldh [12]; jeq ARP → ldh [20]; opcode 2?` / `jeq IPv4 → ldb [23]; udp? ; not a fragment ;
/// ldxb 4*([14]&0xf); ldh [x+16]; port 68?` — accept, else drop.
fn dhcp_filter() -> [libc::sock_filter; 14] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    const LDH_ABS: u16 = 0x28;
    const LDB_ABS: u16 = 0x30;
    const LDXB_MSH: u16 = 0xb1;
    const LDH_IND: u16 = 0x48;
    const JEQ: u16 = 0x15;
    const JSET: u16 = 0x45;
    const RET: u16 = 0x06;
    [
        op(LDH_ABS, 0, 0, 12),           // 0: ethertype
        op(JEQ, 0, 2, 0x0806),           // 1: ARP? else 4
        op(LDH_ABS, 0, 0, 20),           // 2: ARP opcode
        op(JEQ, 8, 9, 2),                // 3: reply → 12 accept, else 13 drop
        op(JEQ, 0, 8, 0x0800),           // 4: IPv4? else 13
        op(LDB_ABS, 0, 0, 23),           // 5: IP protocol
        op(JEQ, 0, 6, 17),               // 6: UDP? else 13
        op(LDH_ABS, 0, 0, 20),           // 7: flags + fragment offset
        op(JSET, 4, 0, 0x1fff),          // 8: a later fragment → 13
        op(LDXB_MSH, 0, 0, 14),          // 9: x = IP header length
        op(LDH_IND, 0, 0, 16),           // 10: UDP destination port
        op(JEQ, 0, 1, 68),               // 11: port 68? else 13
        op(RET, 0, 0, MAX_FRAME as u32), // 12: accept
        op(RET, 0, 0, 0),                // 13: drop
    ]
}

impl PacketSocket {
    /// Opens the socket on interface `ifindex`, with the filter attached before any frame can
    /// be queued.
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        // Protocol 0 receives nothing until bind, so no unfiltered frame is queued meanwhile.
        // SAFETY: plain socket(2) call; the result is checked and owned right away.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(ctx("packet socket", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let filter = dhcp_filter();
        let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog).map_err(|e| ctx("attach DHCP filter", e))?;
        let one: libc::c_int = 1;
        // Older kernels lack it; then our own frames come back and smoltcp ignores them.
        let _ = setsockopt(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &one);
        // SAFETY: zeroed sockaddr_ll is valid; the fields we need are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size we pass.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(ctx("bind packet socket", io::Error::last_os_error()));
        }
        Ok(PacketSocket { fd, last_error: None })
    }

    /// The error of the last failed send or receive, once.
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.last_error.take()
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn ctx(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub struct RxToken {
    frame: Vec<u8>,
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.frame)
    }
}

pub struct TxToken<'a> {
    fd: &'a OwnedFd,
    error: &'a mut Option<io::Error>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let result = f(&mut frame);
        // SAFETY: sending from a live buffer of `len` bytes.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr() as *const libc::c_void, frame.len(), 0) };
        if rc < 0 {
            *self.error = Some(ctx("send", io::Error::last_os_error()));
        }
        result
    }
}

impl Device for PacketSocket {
    type RxToken<'a>
        = RxToken
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let mut frame = vec![0u8; MAX_FRAME];
        // SAFETY: receiving into a live buffer of MAX_FRAME bytes.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), frame.as_mut_ptr() as *mut libc::c_void, frame.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                self.last_error = Some(ctx("receive", e));
            }
            return None;
        }
        frame.truncate(n as usize);
        Some((RxToken { frame }, TxToken { fd: &self.fd, error: &mut self.last_error }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<TxToken<'_>> {
        Some(TxToken { fd: &self.fd, error: &mut self.last_error })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // DHCP messages are small; 1500 keeps what we send valid on any Ethernet.
        caps.max_transmission_unit = 1514;
        // A frame from a local sender (veth, bridge) reaches a packet socket before its UDP
        // checksum is filled in (CHECKSUM_PARTIAL, TP_STATUS_CSUMNOTREADY), so verifying it would
        // drop good offers; dhclient skips it for the same reason. The Ethernet FCS and the IP
        // header checksum (still verified) cover the wire.
        caps.checksum.udp = Checksum::Tx;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the classic BPF program the way the kernel does, for the opcodes it uses.
    fn run_filter(frame: &[u8]) -> u32 {
        let prog = dhcp_filter();
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |i: usize| frame.get(i).copied();
        let half = |i: usize| Some(u16::from_be_bytes([byte(i)?, byte(i + 1)?]) as u32);
        loop {
            let op = prog[pc];
            pc += 1;
            let loaded = match op.code {
                0x28 => half(op.k as usize),
                0x30 => byte(op.k as usize).map(u32::from),
                0x48 => half((x + op.k) as usize),
                0xb1 => {
                    x = byte(op.k as usize).map(|b| 4 * (b as u32 & 0xf)).unwrap_or(0);
                    continue;
                }
                0x15 | 0x45 => {
                    let taken = if op.code == 0x15 { a == op.k } else { a & op.k != 0 };
                    pc += if taken { op.jt } else { op.jf } as usize;
                    continue;
                }
                0x06 => return op.k,
                other => panic!("opcode {other:#x} not modelled"),
            };
            // A load past the end of the frame drops it, as in the kernel.
            match loaded {
                Some(v) => a = v,
                None => return 0,
            }
        }
    }

    fn ipv4_udp(dst_port: u16, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        f[23] = 17;
        f[36..38].copy_from_slice(&dst_port.to_be_bytes());
        f
    }

    fn arp(op: u16) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f[20..22].copy_from_slice(&op.to_be_bytes());
        f
    }

    #[test]
    fn filter_passes_dhcp_to_the_client_and_arp_replies_only() {
        assert_eq!(run_filter(&ipv4_udp(68, 0)), MAX_FRAME as u32, "DHCP to the client");
        assert_eq!(run_filter(&ipv4_udp(68, 0x4000)), MAX_FRAME as u32, "don't-fragment set");
        assert_eq!(run_filter(&arp(2)), MAX_FRAME as u32, "ARP reply");
        assert_eq!(run_filter(&arp(1)), 0, "ARP request: the kernel answers those");
        assert_eq!(run_filter(&ipv4_udp(67, 0)), 0, "DHCP to a server");
        assert_eq!(run_filter(&ipv4_udp(51820, 0)), 0, "WireGuard");
        assert_eq!(run_filter(&ipv4_udp(68, 0x0010)), 0, "a later fragment");
        let mut tcp = ipv4_udp(68, 0);
        tcp[23] = 6;
        assert_eq!(run_filter(&tcp), 0, "TCP");
        let mut options = ipv4_udp(0, 0);
        options[14] = 0x46; // 24-byte IP header: the port moves by 4
        options.extend_from_slice(&[0; 4]);
        options[40..42].copy_from_slice(&68u16.to_be_bytes());
        assert_eq!(run_filter(&options), MAX_FRAME as u32, "IP options");
        let mut ipv6 = ipv4_udp(68, 0);
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(run_filter(&ipv6), 0, "IPv6");
        assert_eq!(run_filter(&[0x08, 0x00]), 0, "runt frame");
    }
}
