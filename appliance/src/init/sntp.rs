//! The clock at boot, from the Amazon Time Sync Service (169.254.169.123, SNTP, RFC 4330): an EC2
//! instance may start with a clock far enough off for SigV4 to fail (AWS refuses requests more
//! than 5 minutes off). One query after the first DHCP lease; the AWS client also corrects by
//! the `Date` header of an answer that says the time is skewed.
//!
//! [`request`] and [`read_reply`] are bytes in, bytes out (the time is passed in); [`query`]
//! sends one datagram and waits; [`set_clock`] is the one call that changes the machine.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The Amazon Time Sync Service, reachable from every instance.
pub const AMAZON_TIME_SYNC: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 169, 123)), 123);
/// Seconds from 1900 (NTP's era 0) to 1970.
const NTP_TO_UNIX: u64 = 2_208_988_800;
const PACKET: usize = 48;

/// An NTP timestamp: seconds since 1900 and a binary fraction.
fn to_ntp(t: Duration) -> [u8; 8] {
    let seconds = (t.as_secs() + NTP_TO_UNIX) as u32;
    let fraction = ((u64::from(t.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&seconds.to_be_bytes());
    out[4..].copy_from_slice(&fraction.to_be_bytes());
    out
}

fn from_ntp(bytes: &[u8]) -> Option<Duration> {
    let seconds = u64::from(u32::from_be_bytes(bytes[..4].try_into().ok()?));
    let fraction = u64::from(u32::from_be_bytes(bytes[4..8].try_into().ok()?));
    // Era 0 ends in 2036; a server answering in era 1 wraps to small numbers.
    let seconds = if seconds < NTP_TO_UNIX { seconds + (1 << 32) } else { seconds };
    Some(Duration::new(seconds - NTP_TO_UNIX, ((fraction * 1_000_000_000) >> 32) as u32))
}

/// A client request (version 4, mode 3) stamped with `now` (time since 1970), which the
/// server echoes as the origin timestamp.
pub fn request(now: Duration) -> [u8; PACKET] {
    let mut packet = [0u8; PACKET];
    packet[0] = (4 << 3) | 3;
    packet[40..48].copy_from_slice(&to_ntp(now));
    packet
}

/// What a reply says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// How far the local clock is behind (positive) or ahead (negative), in seconds.
    pub offset_seconds: f64,
    /// The round trip less the server's own time, in seconds.
    pub delay_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SntpError {
    #[error("the answer is {0} bytes, expected at least 48")]
    Short(usize),
    #[error("not a server's answer (mode {0})")]
    NotServer(u8),
    #[error("the server is not synchronised (stratum {0}, leap indicator {1})")]
    Unsynchronised(u8, u8),
    #[error("the answer does not echo our request")]
    NotOurs,
    #[error("no answer: {0}")]
    NoAnswer(String),
}

/// Reads a reply to the request sent at `sent` that arrived at `received` (both local times).
pub fn read_reply(reply: &[u8], sent: Duration, received: Duration) -> Result<Reading, SntpError> {
    if reply.len() < PACKET {
        return Err(SntpError::Short(reply.len()));
    }
    let (leap, mode, stratum) = (reply[0] >> 6, reply[0] & 7, reply[1]);
    if mode != 4 {
        return Err(SntpError::NotServer(mode));
    }
    if leap == 3 || stratum == 0 || stratum > 15 {
        return Err(SntpError::Unsynchronised(stratum, leap));
    }
    if reply[24..32] != to_ntp(sent) {
        return Err(SntpError::NotOurs);
    }
    let server_received = from_ntp(&reply[32..40]).ok_or(SntpError::Short(reply.len()))?;
    let server_sent = from_ntp(&reply[40..48]).ok_or(SntpError::Short(reply.len()))?;
    let secs = |d: Duration| d.as_secs_f64();
    let offset = ((secs(server_received) - secs(sent)) + (secs(server_sent) - secs(received))) / 2.0;
    let delay = (secs(received) - secs(sent)) - (secs(server_sent) - secs(server_received));
    Ok(Reading { offset_seconds: offset, delay_seconds: delay.max(0.0) })
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// One query to `server`, waiting at most `timeout`.
pub fn query(server: SocketAddr, timeout: Duration) -> Result<Reading, SntpError> {
    let no_answer = |e: std::io::Error| SntpError::NoAnswer(e.to_string());
    let socket = UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).map_err(no_answer)?;
    socket.set_read_timeout(Some(timeout)).map_err(no_answer)?;
    socket.connect(server).map_err(no_answer)?;
    let sent = now();
    socket.send(&request(sent)).map_err(no_answer)?;
    let mut reply = [0u8; 128];
    let n = socket.recv(&mut reply).map_err(no_answer)?;
    read_reply(&reply[..n], sent, now())
}

/// Moves the system clock by `offset_seconds`.
pub fn set_clock(offset_seconds: f64) -> nix::Result<()> {
    use nix::sys::time::TimeSpec;
    use nix::time::{clock_settime, ClockId};
    let target = now().as_secs_f64() + offset_seconds;
    let d = Duration::from_secs_f64(target.max(0.0));
    clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::from_duration(d))
}

/// At boot: query the Amazon Time Sync Service (three tries) and set the clock when it is off by
/// more than half a second. One log line either way.
pub fn set_at_boot() {
    let mut last = String::new();
    for _ in 0..3 {
        match query(AMAZON_TIME_SYNC, Duration::from_secs(1)) {
            Ok(r) if r.offset_seconds.abs() <= 0.5 => {
                crate::log!("time: clock within {:+.3} s of {AMAZON_TIME_SYNC}", r.offset_seconds);
                return;
            }
            Ok(r) => {
                match set_clock(r.offset_seconds) {
                    Ok(()) => {
                        crate::log!("time: clock set from {AMAZON_TIME_SYNC} (was {:+.3} s off)", r.offset_seconds)
                    }
                    Err(e) => crate::log!("time: ERROR cannot set the clock ({:+.3} s off): {e}", r.offset_seconds),
                }
                return;
            }
            Err(e) => last = e.to_string(),
        }
    }
    crate::log!("time: {AMAZON_TIME_SYNC} did not answer ({last}); clock unchanged (off EC2, or no route)");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_to(request: &[u8], server_received: Duration, server_sent: Duration) -> [u8; PACKET] {
        let mut r = [0u8; PACKET];
        r[0] = (4 << 3) | 4;
        r[1] = 1;
        r[24..32].copy_from_slice(&request[40..48]);
        r[32..40].copy_from_slice(&to_ntp(server_received));
        r[40..48].copy_from_slice(&to_ntp(server_sent));
        r
    }

    #[test]
    fn offset_and_delay_from_the_four_times() {
        // Local clock 100 s behind; 20 ms each way; 2 ms in the server.
        let sent = Duration::from_secs(1_700_000_000);
        let req = request(sent);
        assert_eq!(req[0], 0x23);
        let reply = reply_to(&req, sent + Duration::from_millis(100_020), sent + Duration::from_millis(100_022));
        let r = read_reply(&reply, sent, sent + Duration::from_millis(42)).unwrap();
        assert!((r.offset_seconds - 100.0).abs() < 1e-3, "{r:?}");
        assert!((r.delay_seconds - 0.040).abs() < 1e-3, "{r:?}");
    }

    #[test]
    fn garbage_and_strangers_are_errors() {
        let sent = Duration::from_secs(1_700_000_000);
        let good = reply_to(&request(sent), sent, sent);
        assert_eq!(read_reply(&good[..40], sent, sent), Err(SntpError::Short(40)));
        let mut client = good;
        client[0] = (4 << 3) | 3;
        assert_eq!(read_reply(&client, sent, sent), Err(SntpError::NotServer(3)));
        let mut unsynced = good;
        unsynced[1] = 0;
        assert!(matches!(read_reply(&unsynced, sent, sent), Err(SntpError::Unsynchronised(0, _))));
        assert_eq!(read_reply(&good, sent + Duration::from_secs(1), sent), Err(SntpError::NotOurs));
        for bytes in [vec![], vec![0xff; 48], vec![0; 200]] {
            let _ = read_reply(&bytes, sent, sent);
        }
    }

    #[test]
    fn a_real_exchange_over_loopback() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let answering = std::thread::spawn(move || {
            let mut buf = [0u8; 128];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let t = now() + Duration::from_secs(30);
            server.send_to(&reply_to(&buf[..n], t, t), from).unwrap();
        });
        let r = query(address, Duration::from_secs(2)).unwrap();
        answering.join().unwrap();
        assert!((r.offset_seconds - 30.0).abs() < 0.5, "{r:?}");
        // Nobody answering: an error after the timeout, not a hang.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(matches!(query(silent.local_addr().unwrap(), Duration::from_millis(200)), Err(SntpError::NoAnswer(_))));
    }
}
