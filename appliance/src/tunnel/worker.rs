//! One data-plane worker: a thread that owns one TUN queue and one UDP socket of the listen
//! port and moves packets between them until told to stop. Workers share only the peer table.

use super::inbound::handle_datagram;
use super::outbound::handle_tun_packet;
use super::tun::TunQueue;
use super::DataPlaneShared;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Packets taken from one source before looking at the other, so neither direction starves.
const BATCH: usize = 64;
/// The loop wakes at least this often to beat its heartbeat and see a stop request.
const WAKE_MS: u16 = 250;
/// Big enough for any datagram or TUN packet (the TUN MTU is at most 9001; GSO is off).
const BUFFER_BYTES: usize = 65_536;

pub fn run(shared: Arc<DataPlaneShared>, worker: usize, tun: TunQueue) {
    let socket = &shared.sockets[worker];
    let mut input = vec![0u8; BUFFER_BYTES];
    let mut output = vec![0u8; BUFFER_BYTES];
    while !shared.stop.load(Ordering::Relaxed) {
        shared.beat(worker);
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN), PollFd::new(tun.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(WAKE_MS)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                crate::log!("tunnel worker {worker}: poll failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(WAKE_MS as u64));
                continue;
            }
        }
        let ready = |fd: &PollFd| {
            fd.revents().is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP))
        };
        let (udp_ready, tun_ready) = (ready(&fds[0]), ready(&fds[1]));
        if udp_ready {
            for _ in 0..BATCH {
                match socket.recv_from(&mut input) {
                    Ok((n, source)) => handle_datagram(&shared, socket, &tun, source, &input[..n], &mut output),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    // ICMP errors from earlier sends surface here (ECONNREFUSED): not ours to fix.
                    Err(_) => break,
                }
            }
        }
        if tun_ready {
            for _ in 0..BATCH {
                match tun.read(&mut input) {
                    Ok(n) => handle_tun_packet(&shared, socket, &input[..n], &mut output),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // The link is down or gone: wait for it rather than spinning.
                        shared.counters.tun_error(&shared.name, "read from", &e);
                        std::thread::sleep(std::time::Duration::from_millis(WAKE_MS as u64));
                        break;
                    }
                }
            }
        }
    }
}
