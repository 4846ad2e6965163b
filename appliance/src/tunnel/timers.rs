//! The timer thread: drives every peer's boringtun timers (retransmitted handshakes, rekeys,
//! keepalives, session expiry) and resets the shared handshake rate limiter once a second.

use super::inbound::send;
use super::DataPlaneShared;
use boringtun::noise::TunnResult;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// boringtun's timers have one-second resolution; four ticks a second keeps them punctual.
const TICK: Duration = Duration::from_millis(250);

pub fn run(shared: Arc<DataPlaneShared>) {
    let socket = &shared.sockets[0];
    let mut out = vec![0u8; 65_536];
    let mut last_reset = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        if last_reset.elapsed() >= Duration::from_secs(1) {
            shared.handshake_limiter.reset_count();
            shared.failover_response_limiter.reset_count();
            last_reset = Instant::now();
        }
        let peers = shared.peers.load_full();
        for peer in peers.iter() {
            // A peer that never needed a Tunn has no timers running.
            let Some(mut tunn) = peer.existing_tunn() else { continue };
            if let TunnResult::WriteToNetwork(packet) = tunn.update_timers(&mut out) {
                if let Some(path) = peer.path() {
                    send(&shared, socket, packet, path);
                }
            }
        }
    }
}
