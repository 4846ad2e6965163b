//! The self-test client's WireGuard side: one boringtun `Tunn` (the initiator, with the plan's
//! ephemeral key) and one UDP socket from a loopback address, connected to the service.
//!
//! It moves IP packets into and out of the tunnel and says when the handshake is done; it does not
//! look inside the packets (that is `stack`'s job) or decide what a run proves (`mod.rs`).

use crate::keys::{PrivateKey, PublicKey};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Largest UDP payload; the buffers are sized so boringtun never sees one too small.
const DATAGRAM_MAX: usize = 65_535;
/// boringtun's own device calls `update_timers` at this pace.
const TIMER_TICK: Duration = Duration::from_millis(250);

pub(super) struct Tunnel {
    tunn: Tunn,
    socket: UdpSocket,
    server: SocketAddr,
    datagram: Vec<u8>,
    scratch: Vec<u8>,
    last_tick: Instant,
    /// Datagrams boringtun refused (garbage, wrong key, replays): counted for the failure
    /// message, never fatal.
    rejected: usize,
    last_rejection: Option<WireGuardError>,
}

impl Tunnel {
    /// Binds a UDP socket on the loopback address of `server`'s family and connects it there, so
    /// the kernel only hands us datagrams from the service.
    pub(super) fn open(
        server: SocketAddr,
        server_public: &PublicKey,
        client_private: &PrivateKey,
        index: u32,
    ) -> io::Result<Tunnel> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(server)?;
        // boringtun shifts the index left by 8 bits; keep it within 24 bits.
        let tunn =
            Tunn::new(client_private.to_x25519(), server_public.to_x25519(), None, None, index & 0x00ff_ffff, None);
        Ok(Tunnel {
            tunn,
            socket,
            server,
            datagram: vec![0; DATAGRAM_MAX],
            scratch: vec![0; DATAGRAM_MAX + 32],
            last_tick: Instant::now(),
            rejected: 0,
            last_rejection: None,
        })
    }

    /// Sends a handshake initiation now.
    pub(super) fn start_handshake(&mut self) -> io::Result<()> {
        match self.tunn.format_handshake_initiation(&mut self.scratch, true) {
            TunnResult::WriteToNetwork(packet) => {
                self.socket.send(packet)?;
                Ok(())
            }
            TunnResult::Err(e) => Err(io::Error::other(format!("boringtun: {e:?}"))),
            _ => Ok(()),
        }
    }

    /// True once a session with the service exists (handshake response received and verified).
    pub(super) fn is_established(&self) -> bool {
        self.tunn.time_since_last_handshake().is_some()
    }

    /// Encrypts an IP packet and sends it (boringtun queues it if the session is not ready).
    pub(super) fn send_packet(&mut self, packet: &[u8]) -> io::Result<()> {
        if packet.len() > DATAGRAM_MAX - 32 {
            return Ok(());
        }
        if let TunnResult::WriteToNetwork(datagram) = self.tunn.encapsulate(packet, &mut self.scratch) {
            self.socket.send(datagram)?;
        }
        Ok(())
    }

    /// Waits up to `wait` for one datagram from the service and handles it: handshake messages
    /// are answered, decrypted IP packets go to `deliver`, garbage is counted and dropped.
    /// Only socket errors (the service is gone: connection refused) are returned.
    pub(super) fn receive(&mut self, wait: Duration, mut deliver: impl FnMut(Vec<u8>)) -> io::Result<()> {
        // A zero read timeout means "block forever" to the kernel.
        self.socket.set_read_timeout(Some(wait.max(Duration::from_micros(100))))?;
        let len = match self.socket.recv(&mut self.datagram) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let result = self.tunn.decapsulate(Some(self.server.ip()), &self.datagram[..len], &mut self.scratch);
        match result {
            TunnResult::WriteToNetwork(packet) => {
                self.socket.send(packet)?;
                // boringtun may have queued packets waiting for this session: flush them.
                while let TunnResult::WriteToNetwork(packet) = self.tunn.decapsulate(None, &[], &mut self.scratch) {
                    self.socket.send(packet)?;
                }
            }
            TunnResult::WriteToTunnelV4(packet, _) | TunnResult::WriteToTunnelV6(packet, _) => {
                deliver(packet.to_vec());
            }
            TunnResult::Done => {}
            TunnResult::Err(e) => {
                self.rejected += 1;
                self.last_rejection = Some(e);
            }
        }
        Ok(())
    }

    /// Runs boringtun's timers (handshake retransmission) at their usual pace.
    pub(super) fn tick(&mut self) -> io::Result<()> {
        if self.last_tick.elapsed() < TIMER_TICK {
            return Ok(());
        }
        self.last_tick = Instant::now();
        if let TunnResult::WriteToNetwork(packet) = self.tunn.update_timers(&mut self.scratch) {
            self.socket.send(packet)?;
        }
        Ok(())
    }

    /// `; 3 datagrams rejected (last: InvalidMac)` for a failure message, or nothing.
    pub(super) fn rejections(&self) -> String {
        match &self.last_rejection {
            Some(e) if self.rejected == 1 => format!("; 1 datagram rejected ({e:?})"),
            Some(e) => format!("; {} datagrams rejected (last: {e:?})", self.rejected),
            None => String::new(),
        }
    }
}
