//! Passing a moved flow's datagrams between two siblings while its client changes sessions
//! (no I/O; time passed in).
//!
//! When a bastion leaves (scale-in), the sibling that takes its address over (`siblings`)
//! receives the flows the load balancer keeps on that address. Their clients still speak the
//! leaving bastion's session, which the new holder does not have: its fast failover starts a
//! handshake at once, but the datagrams that arrive before the client has switched would be
//! lost. So the new holder passes each such datagram to the leaving bastion ([`Direction::Arrived`],
//! to its primary address on the WireGuard port), which still holds the session and opens it as
//! if it had come to the address itself; what the leaving bastion sends back to that client
//! goes to the new holder ([`Direction::Emit`]), which sends it from the taken-over address,
//! the only one the load balancer (and the VPC's source check) accepts it from. Once the client
//! has re-keyed with the new holder nothing is passed any more.
//!
//! With instance targets no address moves: at the end of the leaving target's deregistration
//! delay the load balancer ends its flows, and the client's next datagram is a new flow to
//! another bastion, again under the leaving bastion's session. So a bastion also passes such
//! datagrams, wherever they arrive, to every sibling it knows is leaving ([`Relays::leaving`]),
//! and only the one that holds the session answers.
//!
//! Both ends hold the cluster's private key, so a relay message is authenticated with a key
//! derived from it (HMAC-SHA256, [`RelayKey`]) and carries its time: anyone else's, or one more
//! than [`FRESH_MS`] old or ahead, is refused. A replayed message gives nothing: the datagram
//! inside is WireGuard's, whose counters refuse a replay, and is never bigger than what was
//! relayed. Layout (little-endian), [`HEADER`] bytes, the datagram, then the tag:
//!
//! | bytes | |
//! |---|---|
//! | 0 | [`MARK`] (WireGuard's message types are 1–4) |
//! | 1 | direction: 1 arrived, 2 emit |
//! | 2–3 | zero |
//! | 4–11 | the sender's clock, milliseconds since the Unix epoch |
//! | 12–17 | the client's IPv4 address and port |
//! | 18–21 | the taken-over address the datagram came to (or leaves from) |
//! | 22–23 | zero |
//! | tail | HMAC-SHA256 over everything before it ([`TAG`] bytes) |

use ring::hmac;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// A relay message's first byte.
pub const MARK: u8 = 0xb5;
pub const HEADER: usize = 24;
pub const TAG: usize = 32;
/// What relaying adds to a datagram.
pub const OVERHEAD: usize = HEADER + TAG;
/// How far a relay message's clock may be from ours.
pub const FRESH_MS: u64 = 10_000;

/// Which way a relay message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// New holder → leaving bastion: a client's datagram that came to the taken-over address.
    Arrived = 1,
    /// Leaving bastion → new holder: a datagram for the client, to send from that address.
    Emit = 2,
}

/// The key relay messages are authenticated with, derived from the cluster's private key.
pub struct RelayKey(hmac::Key);

impl RelayKey {
    pub fn derive(static_private: &[u8; 32]) -> RelayKey {
        let base = hmac::Key::new(hmac::HMAC_SHA256, static_private);
        let derived = hmac::sign(&base, b"bastion sibling relay v1");
        RelayKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }
}

/// What a relay message says: sealed by [`seal`], given back by [`open`] when it passes its
/// checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed<'a> {
    pub direction: Direction,
    pub client: SocketAddrV4,
    /// The taken-over address.
    pub local: Ipv4Addr,
    pub datagram: &'a [u8],
}

/// Why a relay message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayError {
    /// Too short, not ours, an unknown direction, or a relay message inside one.
    Malformed,
    /// Its clock is more than [`FRESH_MS`] from ours.
    Stale,
    /// The tag does not match (another key, or altered).
    Forged,
}

/// Whether `bytes` claims to be a relay message (not a WireGuard one).
pub fn is_relay(bytes: &[u8]) -> bool {
    bytes.first() == Some(&MARK)
}

/// Writes `message` as a relay message into `out`; its length, or `None` when `out` is too
/// small.
pub fn seal(key: &RelayKey, message: Relayed, now_ms: u64, out: &mut [u8]) -> Option<usize> {
    let Relayed { direction, client, local, datagram } = message;
    let body = HEADER + datagram.len();
    let out = out.get_mut(..body + TAG)?;
    out[..HEADER].fill(0);
    out[0] = MARK;
    out[1] = direction as u8;
    out[4..12].copy_from_slice(&now_ms.to_le_bytes());
    out[12..16].copy_from_slice(&client.ip().octets());
    out[16..18].copy_from_slice(&client.port().to_le_bytes());
    out[18..22].copy_from_slice(&local.octets());
    out[HEADER..body].copy_from_slice(datagram);
    let tag = hmac::sign(&key.0, &out[..body]);
    out[body..].copy_from_slice(tag.as_ref());
    Some(body + TAG)
}

/// Checks and reads a relay message.
pub fn open<'a>(key: &RelayKey, bytes: &'a [u8], now_ms: u64) -> Result<Relayed<'a>, RelayError> {
    if bytes.len() < OVERHEAD + 1 || !is_relay(bytes) {
        return Err(RelayError::Malformed);
    }
    let body = bytes.len() - TAG;
    hmac::verify(&key.0, &bytes[..body], &bytes[body..]).map_err(|_| RelayError::Forged)?;
    let direction = match bytes[1] {
        1 => Direction::Arrived,
        2 => Direction::Emit,
        _ => return Err(RelayError::Malformed),
    };
    let sent_ms = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
    if sent_ms.abs_diff(now_ms) > FRESH_MS {
        return Err(RelayError::Stale);
    }
    let ip = |at: usize| Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);
    let port = u16::from_le_bytes([bytes[16], bytes[17]]);
    let datagram = &bytes[HEADER..body];
    if is_relay(datagram) {
        return Err(RelayError::Malformed);
    }
    Ok(Relayed { direction, client: SocketAddrV4::new(ip(12), port), local: ip(18), datagram })
}

/// Where the datagrams of sessions this bastion does not hold go, as `siblings` sets it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Relays {
    /// Addresses taken over from a leaving sibling, with that sibling's WireGuard address.
    pub taken: HashMap<Ipv4Addr, SocketAddrV4>,
    /// Leaving siblings whose flows the load balancer moves to new targets (instance targets).
    pub leaving: Vec<SocketAddrV4>,
}

impl Relays {
    /// The siblings a datagram of a session we do not hold, come to `local`, goes to: the one
    /// `local` was taken from, else every leaving one.
    pub fn for_arrival(&self, local: Ipv4Addr) -> Vec<SocketAddrV4> {
        match self.taken.get(&local) {
            Some(&previous) => vec![previous],
            None => self.leaving.clone(),
        }
    }

    /// Whether `sibling` may have us send a datagram from `local`: it is the sibling `local`
    /// was taken from, or (`local` not taken) a leaving one we pass datagrams to.
    pub fn may_emit(&self, sibling: Ipv4Addr, local: Ipv4Addr) -> bool {
        match self.taken.get(&local) {
            Some(previous) => *previous.ip() == sibling,
            None => self.leaving.iter().any(|l| *l.ip() == sibling),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn key(byte: u8) -> RelayKey {
        RelayKey::derive(&[byte; 32])
    }

    fn sealed(direction: Direction, datagram: &[u8], at: u64) -> Vec<u8> {
        let mut out = vec![0u8; datagram.len() + OVERHEAD];
        let client = "192.0.2.7:41000".parse().unwrap();
        let message = Relayed { direction, client, local: Ipv4Addr::new(10, 0, 1, 21), datagram };
        let n = seal(&key(1), message, at, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn a_taken_address_relays_to_its_previous_holder_only_and_elsewhere_to_every_leaving_sibling() {
        let taken_from: SocketAddrV4 = "10.0.1.11:51820".parse().unwrap();
        let leaving: SocketAddrV4 = "10.0.1.12:51820".parse().unwrap();
        let taken = Ipv4Addr::new(10, 0, 1, 21);
        let own = Ipv4Addr::new(10, 0, 1, 10);
        let mut relays = Relays::default();
        assert_eq!(relays.for_arrival(own), vec![]);
        assert!(!relays.may_emit(*leaving.ip(), own));
        relays.taken.insert(taken, taken_from);
        relays.leaving.push(leaving);
        assert_eq!(relays.for_arrival(taken), vec![taken_from]);
        assert_eq!(relays.for_arrival(own), vec![leaving]);
        assert!(relays.may_emit(*taken_from.ip(), taken));
        assert!(!relays.may_emit(*leaving.ip(), taken), "only the previous holder sends from a taken address");
        assert!(relays.may_emit(*leaving.ip(), own));
        assert!(!relays.may_emit(*taken_from.ip(), own));
        assert!(!relays.may_emit(Ipv4Addr::new(10, 0, 1, 99), own));
    }

    #[test]
    fn a_sealed_message_opens_with_the_same_key_and_says_what_was_sealed() {
        let datagram = [4u8, 0, 0, 0, 9, 9, 9];
        for direction in [Direction::Arrived, Direction::Emit] {
            let bytes = sealed(direction, &datagram, NOW);
            assert_eq!(bytes.len(), datagram.len() + OVERHEAD);
            assert!(is_relay(&bytes));
            let opened = open(&key(1), &bytes, NOW + 3_000).unwrap();
            assert_eq!(
                opened,
                Relayed {
                    direction,
                    client: "192.0.2.7:41000".parse().unwrap(),
                    local: Ipv4Addr::new(10, 0, 1, 21),
                    datagram: &datagram
                }
            );
        }
        let mut small = [0u8; 10];
        let client = "192.0.2.7:1".parse().unwrap();
        let message = Relayed { direction: Direction::Emit, client, local: Ipv4Addr::LOCALHOST, datagram: &datagram };
        assert_eq!(seal(&key(1), message, NOW, &mut small), None);
    }

    #[test]
    fn another_key_an_altered_byte_an_old_or_early_clock_or_garbage_are_refused() {
        let bytes = sealed(Direction::Arrived, &[4, 0, 0, 0, 1], NOW);
        assert_eq!(open(&key(2), &bytes, NOW), Err(RelayError::Forged));
        for i in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 0x40;
            assert!(open(&key(1), &altered, NOW).is_err(), "byte {i} altered");
        }
        assert_eq!(open(&key(1), &bytes, NOW + FRESH_MS + 1), Err(RelayError::Stale));
        assert_eq!(open(&key(1), &bytes, NOW - FRESH_MS - 1), Err(RelayError::Stale));
        // A relay message inside one, an unknown direction (even correctly tagged), nothing.
        let nested = sealed(Direction::Arrived, &[MARK, 1, 2, 3], NOW);
        assert_eq!(open(&key(1), &nested, NOW), Err(RelayError::Malformed));
        let mut unknown = vec![0u8; 5 + OVERHEAD];
        let message = Relayed {
            direction: Direction::Emit,
            client: "192.0.2.7:1".parse().unwrap(),
            local: Ipv4Addr::LOCALHOST,
            datagram: &[4; 5],
        };
        let n = seal(&key(1), message, NOW, &mut unknown);
        unknown[1] = 3;
        let body = n.unwrap() - TAG;
        let tag = hmac::sign(&key(1).0, &unknown[..body]);
        unknown[body..].copy_from_slice(tag.as_ref());
        assert_eq!(open(&key(1), &unknown, NOW), Err(RelayError::Malformed));
        for garbage in [&[][..], &[MARK][..], &[MARK; OVERHEAD][..], &[1u8; 200][..]] {
            assert_eq!(open(&key(1), garbage, NOW), Err(RelayError::Malformed));
        }
        // Random bytes behind the mark: `fuzz_tests`.
    }
}
