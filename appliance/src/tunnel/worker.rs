//! One data-plane worker: a thread that owns one TUN queue and one UDP socket of the listen
//! port and moves packets between them until told to stop. Workers share only the peer table.
//! What one TUN batch encrypts leaves in runs ([`super::send_runs`], UDP GSO); what UDP GRO
//! coalesced arrives as one buffer and is cut into its datagrams here. With TUN offloads a
//! super-packet read from the TUN is cut into segments before sealing, and what one UDP batch
//! decrypts is written to the TUN as few super-packets as the flows allow (`super::offload`).

use super::inbound::handle_datagram;
use super::offload::coalesce::TunWrites;
use super::offload::segment;
use super::offload::vnet::{self, VnetHeader};
use super::outbound::handle_tun_read;
use super::send_runs::{Run, SendRuns};
use super::tun::TunQueue;
use super::{udp, Counters, DataPlaneShared};
use boringtun::noise::Tunn;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Packets taken from one source before looking at the other, so neither direction starves.
const BATCH: usize = 64;
/// The loop wakes at least this often to beat its heartbeat and see a stop request.
const WAKE_MS: u16 = 250;
/// Big enough for any datagram, a GRO buffer (64 KiB at most), a TUN packet (MTU ≤ 9001) or a
/// TUN super-packet (IPv6's 40 header bytes + 65,535) behind its virtio header.
const BUFFER_BYTES: usize = 65_536 + 40 + vnet::LEN;

/// Sends one run: one `sendmsg` with UDP GSO when it has several datagrams and GSO is on, else
/// one `send_to` each. A run the route cannot take as one goes one by one; a kernel or device
/// without GSO turns it off for good (logged once).
fn send_run(shared: &DataPlaneShared, socket: &std::net::UdpSocket, run: Run) {
    if run.path.via.is_some() {
        // Relayed through a sibling (`super::relay`): one message per datagram.
        for datagram in run.bytes.chunks(run.segment) {
            super::inbound::send(shared, socket, datagram, run.path);
        }
        return;
    }
    if run.count > 1 && shared.udp_gso.load(Ordering::Relaxed) {
        match udp::send_segments(socket, run.bytes, run.segment, run.path) {
            Ok(()) => return,
            Err(e) => match udp::gso_failure(&e) {
                udp::GsoFailure::Unsupported => {
                    if shared.udp_gso.swap(false, Ordering::Relaxed) {
                        crate::log!("tunnel: UDP GSO not available ({e}); sending datagrams one by one from now on");
                    }
                }
                udp::GsoFailure::ThisRun => {}
                udp::GsoFailure::Other => {
                    for _ in 0..run.count {
                        Counters::count(&shared.counters.send_errors);
                    }
                    return;
                }
            },
        }
    }
    for datagram in run.bytes.chunks(run.segment) {
        if udp::send_one(socket, datagram, run.path).is_err() {
            Counters::count(&shared.counters.send_errors);
        }
    }
}

/// Writes what one UDP batch decrypted (a failed write is the link's state, counted).
fn write_to_tun(shared: &DataPlaneShared, tun: &TunQueue, tun_writes: &mut TunWrites) {
    if tun_writes.is_empty() {
        return;
    }
    let flushed = tun_writes.flush(&mut |slices| {
        if let Err(e) = tun.write_gathered(slices) {
            shared.counters.tun_error(&shared.name, "write to", &e);
        }
    });
    if flushed.super_packets > 0 {
        let counters = &shared.counters;
        counters.tun_super_packets_written.fetch_add(flushed.super_packets as u64, Ordering::Relaxed);
        counters.tun_segments_written.fetch_add(flushed.merged_segments as u64, Ordering::Relaxed);
    }
}

pub fn run(shared: Arc<DataPlaneShared>, worker: usize, tun: TunQueue) {
    let socket = &shared.sockets[worker];
    let mut input = vec![0u8; BUFFER_BYTES];
    let mut output = vec![0u8; BUFFER_BYTES];
    let mut control = udp::ControlSpace::new();
    let mut runs = SendRuns::new();
    let opened = shared.tun_opened;
    let mut tun_writes = TunWrites::new(opened.vnet_header, shared.tun_coalesce);
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
            // Datagrams, not receives: a GRO buffer holds up to 64 of them.
            let mut handled = 0;
            while handled < BATCH {
                match udp::receive(socket, &mut input, &mut control) {
                    Ok(received) => {
                        let bytes = &input[..received.len];
                        match received.segment {
                            Some(segment) => {
                                for datagram in bytes.chunks(segment) {
                                    handle_datagram(
                                        &shared,
                                        socket,
                                        &mut tun_writes,
                                        received.path,
                                        datagram,
                                        &mut output,
                                    );
                                    handled += 1;
                                }
                            }
                            None => {
                                handle_datagram(&shared, socket, &mut tun_writes, received.path, bytes, &mut output);
                                handled += 1;
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => handled += 1,
                    // ICMP errors from earlier sends surface here (ECONNREFUSED): not ours to fix.
                    Err(_) => break,
                }
            }
            write_to_tun(&shared, &tun, &mut tun_writes);
        }
        if tun_ready {
            let mut send = |run: Run| send_run(&shared, socket, run);
            for _ in 0..BATCH {
                match tun.read(&mut input) {
                    Ok(n) if opened.vnet_header => {
                        let Some(header) = VnetHeader::decode(&input[..n]) else {
                            Counters::count(&shared.counters.dropped_tun_packets);
                            continue;
                        };
                        let packet = &mut input[vnet::LEN..n];
                        let destination = Tunn::dst_address(packet);
                        let made_whole =
                            handle_tun_read(&shared, destination, &mut output, &mut runs, &mut send, |seal| {
                                segment::make_whole(header, packet, seal)
                            });
                        match made_whole {
                            None | Some(Ok(1)) => {}
                            Some(Ok(segments)) => {
                                Counters::count(&shared.counters.tun_super_packets_read);
                                shared.counters.tun_segments_read.fetch_add(segments as u64, Ordering::Relaxed);
                            }
                            Some(Err(_)) => Counters::count(&shared.counters.dropped_tun_packets),
                        }
                    }
                    Ok(n) => {
                        let packet = &input[..n];
                        handle_tun_read(
                            &shared,
                            Tunn::dst_address(packet),
                            &mut output,
                            &mut runs,
                            &mut send,
                            |seal| seal(packet),
                        );
                    }
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
            runs.flush(&mut send);
        }
    }
}
