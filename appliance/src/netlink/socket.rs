//! A netlink socket and the three conversations we have with the kernel over it: a request
//! that is acknowledged, a request answered by objects then an acknowledgement, and a dump.
//! (The nf_tables batch, whose acknowledgements come one per message, lives in `nftables`.)
//!
//! The socket lives in the network namespace of the thread that opens it. Answers are only
//! accepted from the kernel (port 0), a datagram larger than the buffer is an error rather than
//! silently cut, and a kernel that stops answering is a timeout, not a hang.

use super::message::{
    self, Ack, Message, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_MULTI,
};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const RECEIVE_BUFFER: usize = 64 * 1024;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers of one request or dump we read at most, so a kernel (or a bug) that never says
/// "done" cannot keep us reading forever.
const MAX_DATAGRAMS: usize = 4096;
const DUMP_ATTEMPTS: usize = 3;

// linux/netlink.h socket options
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

/// A kernel refusal: the errno and, when the kernel gave one, its explanation.
#[derive(Debug)]
pub struct KernelError {
    pub errno: i32,
    pub explanation: Option<String>,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        if let Some(text) = &self.explanation {
            write!(f, " ({text})")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

impl KernelError {
    pub fn from_ack(ack: Ack) -> io::Error {
        let kind = io::Error::from_raw_os_error(ack.errno).kind();
        io::Error::new(kind, KernelError { errno: ack.errno, explanation: ack.explanation })
    }
}

/// The errno behind an error: a system call's, or the kernel's netlink refusal, also after
/// [`context`] wrapped it.
pub fn errno(error: &io::Error) -> Option<i32> {
    error.raw_os_error().or_else(|| {
        let inner = error.get_ref()?;
        inner
            .downcast_ref::<KernelError>()
            .map(|k| k.errno)
            .or_else(|| inner.downcast_ref::<Contextual>().map(|c| c.errno))
    })
}

/// Prefixes an error with what was being done, keeping its kind (and its errno, reachable
/// through [`errno`]).
pub fn context(error: io::Error, doing: impl fmt::Display) -> io::Error {
    let errno = errno(&error);
    let text = format!("{doing}: {error}");
    match errno {
        Some(errno) => io::Error::new(error.kind(), Contextual { errno, text }),
        None => io::Error::new(error.kind(), text),
    }
}

#[derive(Debug)]
struct Contextual {
    errno: i32,
    text: String,
}

impl fmt::Display for Contextual {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Contextual {}

/// An owned message copied out of the receive buffer.
#[derive(Debug, Clone)]
pub struct Owned {
    pub kind: u16,
    pub payload: Vec<u8>,
}

pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// Opens a netlink socket of `protocol` (NETLINK_ROUTE, NETLINK_NETFILTER).
    pub fn open(protocol: libc::c_int) -> io::Result<Socket> {
        // SAFETY: socket(2) takes plain integers and returns a new fd or -1.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(context(io::Error::last_os_error(), "open netlink socket"));
        }
        // SAFETY: `fd` was just returned by socket(2) (checked >= 0) and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain old data: all zeroes is a valid value (pid 0 = the kernel).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: bind reads `size_of::<sockaddr_nl>()` bytes from `&addr`, which lives across the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(context(io::Error::last_os_error(), "bind netlink socket"));
        }
        // Best effort: older kernels lack these, and answers are still parsed without them.
        set_int_option(&fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
        set_int_option(&fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
        let timeout = libc::timeval { tv_sec: ANSWER_TIMEOUT.as_secs() as _, tv_usec: 0 };
        // SAFETY: setsockopt reads `size_of::<timeval>()` bytes from `&timeout`, a live timeval.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(context(io::Error::last_os_error(), "set netlink receive timeout"));
        }
        // Sequence numbers only need to differ between requests on this socket; starting
        // from the clock makes stale answers from an earlier socket easy to tell apart.
        let seq =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1);
        Ok(Socket { fd, seq, buf: vec![0; RECEIVE_BUFFER] })
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data: all zeroes is a valid value (pid 0 = the kernel).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: sendto reads `bytes.len()` bytes from the live slice and the address from `&addr`.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(context(io::Error::last_os_error(), "send to netlink"));
        }
        if n as usize != bytes.len() {
            return Err(io::Error::other(format!("netlink took {n} of {} bytes", bytes.len())));
        }
        Ok(())
    }

    /// Receives one datagram from the kernel into the internal buffer; returns its length.
    /// `wait` false returns Ok(None) when nothing is queued.
    pub fn receive(&mut self, wait: bool) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: sockaddr_nl is plain old data: all zeroes is a valid value.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            let flags = libc::MSG_TRUNC | if wait { 0 } else { libc::MSG_DONTWAIT };
            // SAFETY: recvfrom writes at most `self.buf.len()` bytes into `self.buf` and at most `from_len`
            //   bytes into `from`; both are live, exclusively borrowed buffers.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    flags,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock if !wait => Ok(None),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel within {} s", ANSWER_TIMEOUT.as_secs()),
                    )),
                    _ => Err(context(e, "receive from netlink")),
                };
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("netlink answer of {n} bytes exceeds our {} byte buffer", self.buf.len()),
                ));
            }
            if from.nl_pid != 0 {
                // Not from the kernel: another process cannot speak for it. Ignore.
                continue;
            }
            return Ok(Some(n));
        }
    }

    /// Sends one request that asks for an acknowledgement and waits for it; messages the
    /// kernel sends before the acknowledgement (the answer to a GET) are returned.
    pub fn request(&mut self, build: impl FnOnce(u32) -> io::Result<Vec<u8>>) -> io::Result<Vec<Owned>> {
        let seq = self.next_seq();
        let bytes = build(seq)?;
        check_flag(&bytes, NLM_F_ACK)?;
        self.send(&bytes)?;
        let mut answers = Vec::new();
        for _ in 0..MAX_DATAGRAMS {
            let n = self.receive(true)?.unwrap_or(0);
            for msg in message::messages(&self.buf[..n]) {
                let msg = msg?;
                if msg.seq != seq {
                    continue;
                }
                if msg.kind == NLMSG_ERROR {
                    let ack = message::parse_ack(msg.flags, msg.payload)?;
                    return if ack.errno == 0 { Ok(answers) } else { Err(KernelError::from_ack(ack)) };
                }
                answers.push(owned(&msg));
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "netlink answer never acknowledged"))
    }

    /// Sends a dump request and collects every object until NLMSG_DONE. A dump the kernel
    /// marks as interrupted (the table changed meanwhile) is started again.
    pub fn dump(&mut self, build: impl Fn(u32) -> io::Result<Vec<u8>>) -> io::Result<Vec<Owned>> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.next_seq();
            let bytes = build(seq)?;
            check_flag(&bytes, NLM_F_DUMP)?;
            self.send(&bytes)?;
            if let Some(objects) = self.collect_dump(seq)? {
                return Ok(objects);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            format!("netlink dump interrupted {DUMP_ATTEMPTS} times in a row"),
        ))
    }

    /// Ok(None) when the dump was interrupted.
    fn collect_dump(&mut self, seq: u32) -> io::Result<Option<Vec<Owned>>> {
        let mut objects = Vec::new();
        let mut interrupted = false;
        for _ in 0..MAX_DATAGRAMS {
            let n = self.receive(true)?.unwrap_or(0);
            for msg in message::messages(&self.buf[..n]) {
                let msg = msg?;
                if msg.seq != seq {
                    continue;
                }
                interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                match msg.kind {
                    NLMSG_DONE => return Ok(if interrupted { None } else { Some(objects) }),
                    NLMSG_ERROR => {
                        let ack = message::parse_ack(msg.flags, msg.payload)?;
                        if ack.errno != 0 {
                            return Err(KernelError::from_ack(ack));
                        }
                    }
                    _ => {
                        if msg.flags & NLM_F_MULTI == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "netlink dump answer without the multipart flag",
                            ));
                        }
                        objects.push(owned(&msg));
                    }
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "netlink dump never finished"))
    }

    /// The received bytes of the last [`Socket::receive`].
    pub fn received(&self, len: usize) -> &[u8] {
        &self.buf[..len.min(self.buf.len())]
    }
}

fn owned(msg: &Message) -> Owned {
    Owned { kind: msg.kind, payload: msg.payload.to_vec() }
}

fn check_flag(bytes: &[u8], flag: u16) -> io::Result<()> {
    let flags = bytes.get(6..8).map(|b| u16::from_ne_bytes([b[0], b[1]])).unwrap_or(0);
    if flags & flag != flag {
        return Err(io::Error::other(format!("netlink request built without flag {flag:#x}")));
    }
    Ok(())
}

fn set_int_option(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&value`, a live c_int; the fd is
    // borrowed, so open.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
