//! What one datagram from the network means, in two plain decisions with no I/O:
//! 1. [`route`]: from its bytes and our session indices alone, which peer it names (or that
//!    it is an initiation, whose peer only a DH reveals, or garbage to drop);
//! 2. [`verdict`]: from what the peer's boringtun `Tunn` made of it, what to do: answer,
//!    deliver to the TUN, note an authenticated keepalive, treat it as a session this bastion
//!    does not hold (a moved flow, or a forgery: `failover` decides), or count it rejected.
//!
//! `inbound` is the shell that carries the decisions out (sockets, the TUN, the counters).

use super::peers::PeerId;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{HandshakeInit, Packet, Tunn, TunnResult};
use std::net::IpAddr;

/// The WireGuard message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Initiation,
    Response,
    CookieReply,
    Data,
}

/// Why a datagram goes no further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a WireGuard message (type, length).
    NotWireGuard,
    /// A receiver index that is none of our peers'.
    UnknownIndex,
}

/// Where a datagram goes, decided from its bytes and the peer table alone (parsed once, here).
#[derive(Debug)]
pub enum Route<'a> {
    /// A handshake initiation: the peer is known only after the DH in `parse_handshake_anon`.
    Initiation(HandshakeInit<'a>),
    /// A message that names one of our peers by our receiver index.
    Peer(PeerId, MessageKind),
    Drop(DropReason),
}

/// Classifies a datagram without any cryptography; `peer_of` maps a receiver index to a peer.
pub fn route<'a>(datagram: &'a [u8], peer_of: impl Fn(u32) -> Option<PeerId>) -> Route<'a> {
    let (receiver_index, kind) = match Tunn::parse_incoming_packet(datagram) {
        Ok(Packet::HandshakeInit(init)) => return Route::Initiation(init),
        Ok(Packet::HandshakeResponse(p)) => (p.receiver_idx, MessageKind::Response),
        Ok(Packet::PacketCookieReply(p)) => (p.receiver_idx, MessageKind::CookieReply),
        Ok(Packet::PacketData(p)) => (p.receiver_idx, MessageKind::Data),
        Err(_) => return Route::Drop(DropReason::NotWireGuard),
    };
    match peer_of(receiver_index) {
        Some(id) => Route::Peer(id, kind),
        None => Route::Drop(DropReason::UnknownIndex),
    }
}

/// Which side of a handshake that just completed we were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Responder,
    Initiator,
}

/// What to do with what the `Tunn` made of a datagram of `kind`.
#[derive(Debug, PartialEq, Eq)]
pub enum DatagramVerdict<'a> {
    /// Send `reply` back to the source (then the packets the `Tunn` queued); the source is the
    /// peer's endpoint now. `handshake`: a handshake completed, in this role.
    Answer { reply: &'a [u8], handshake: Option<Role> },
    /// A decrypted packet: to the TUN if `source` routes back to the same peer.
    Deliver { packet: &'a [u8], source: IpAddr },
    /// An authenticated keepalive: nothing to deliver, but the source is the peer's endpoint.
    Authenticated,
    /// Nothing to do (a cookie reply was taken in).
    Nothing,
    /// A data packet for a session this bastion does not hold: a flow moved here, or a forgery.
    /// `rejected`: boringtun refused it against an old session (counted as rejected too).
    UnknownSession { rejected: bool },
    /// Refused by the `Tunn` (authentication, replay, state): counted, nothing sent.
    Rejected,
}

pub fn verdict<'a>(kind: MessageKind, result: TunnResult<'a>) -> DatagramVerdict<'a> {
    match result {
        TunnResult::WriteToNetwork(reply) => {
            let handshake = match kind {
                MessageKind::Initiation => Some(Role::Responder),
                MessageKind::Response => Some(Role::Initiator),
                MessageKind::CookieReply | MessageKind::Data => None,
            };
            DatagramVerdict::Answer { reply, handshake }
        }
        TunnResult::WriteToTunnelV4(packet, from) => DatagramVerdict::Deliver { packet, source: from.into() },
        TunnResult::WriteToTunnelV6(packet, from) => DatagramVerdict::Deliver { packet, source: from.into() },
        TunnResult::Done if kind == MessageKind::Data => DatagramVerdict::Authenticated,
        TunnResult::Done => DatagramVerdict::Nothing,
        TunnResult::Err(WireGuardError::NoCurrentSession) => DatagramVerdict::UnknownSession { rejected: false },
        TunnResult::Err(e) if kind == MessageKind::Data && from_another_session(&e) => {
            DatagramVerdict::UnknownSession { rejected: true }
        }
        TunnResult::Err(_) => DatagramVerdict::Rejected,
    }
}

/// Whether an initiation given to the peer last heard from its source (`endpoint_index`) was
/// another peer's: boringtun refuses it with `WrongKey` after decrypting the sender's static key,
/// before it changes any state, so the sender can still be identified and the initiation taken.
pub fn another_peers_initiation(result: &TunnResult) -> bool {
    matches!(result, TunnResult::Err(WireGuardError::WrongKey))
}

/// Whether boringtun refused a data packet because the session we hold at its index is not the
/// one the packet was sent on: another index in that slot, counters of an older session, or keys
/// that do not open it. That is how a flow arrives when it comes back to a bastion that still
/// holds an old session with the peer (a health check that flapped): as far as this bastion can
/// tell, the packet's session is one it does not have, exactly as with `NoCurrentSession`.
fn from_another_session(error: &WireGuardError) -> bool {
    matches!(
        error,
        WireGuardError::WrongIndex
            | WireGuardError::InvalidCounter
            | WireGuardError::DuplicateCounter
            | WireGuardError::InvalidAeadTag
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A `TunnResult` of one kind, made in the test's own buffer (it borrows mutably).
    #[derive(Debug, Clone, Copy)]
    enum Made {
        Network,
        TunnelV4(Ipv4Addr),
        TunnelV6(Ipv6Addr),
        Done,
        Err(fn() -> WireGuardError),
    }

    #[test]
    fn what_the_tunn_made_of_it_decides_what_to_do() {
        let v4 = Ipv4Addr::new(10, 100, 0, 2);
        let v6: Ipv6Addr = "fd00:100::2".parse().unwrap();
        let bytes = [1u8, 2, 3];
        use MessageKind::*;
        let cases: Vec<(MessageKind, Made, DatagramVerdict)> = vec![
            (Initiation, Made::Network, DatagramVerdict::Answer { reply: &bytes, handshake: Some(Role::Responder) }),
            (Response, Made::Network, DatagramVerdict::Answer { reply: &bytes, handshake: Some(Role::Initiator) }),
            (Data, Made::Network, DatagramVerdict::Answer { reply: &bytes, handshake: None }),
            (Data, Made::TunnelV4(v4), DatagramVerdict::Deliver { packet: &bytes, source: v4.into() }),
            (Data, Made::TunnelV6(v6), DatagramVerdict::Deliver { packet: &bytes, source: v6.into() }),
            (Data, Made::Done, DatagramVerdict::Authenticated),
            (CookieReply, Made::Done, DatagramVerdict::Nothing),
            (Data, Made::Err(|| WireGuardError::NoCurrentSession), DatagramVerdict::UnknownSession { rejected: false }),
            // A flow back on an old session: refused by that session, yet a session we lack.
            (Data, Made::Err(|| WireGuardError::InvalidAeadTag), DatagramVerdict::UnknownSession { rejected: true }),
            (Data, Made::Err(|| WireGuardError::DuplicateCounter), DatagramVerdict::UnknownSession { rejected: true }),
            (Data, Made::Err(|| WireGuardError::InvalidCounter), DatagramVerdict::UnknownSession { rejected: true }),
            (Data, Made::Err(|| WireGuardError::WrongIndex), DatagramVerdict::UnknownSession { rejected: true }),
            // Anything else is refused, and a bad handshake message never starts a failover.
            (Data, Made::Err(|| WireGuardError::InvalidPacket), DatagramVerdict::Rejected),
            (Response, Made::Err(|| WireGuardError::InvalidAeadTag), DatagramVerdict::Rejected),
            (Initiation, Made::Err(|| WireGuardError::InvalidMac), DatagramVerdict::Rejected),
            (Data, Made::Err(|| WireGuardError::ConnectionExpired), DatagramVerdict::Rejected),
        ];
        for (kind, made, expected) in cases {
            let mut buffer = bytes;
            let result = match made {
                Made::Network => TunnResult::WriteToNetwork(&mut buffer),
                Made::TunnelV4(a) => TunnResult::WriteToTunnelV4(&mut buffer, a),
                Made::TunnelV6(a) => TunnResult::WriteToTunnelV6(&mut buffer, a),
                Made::Done => TunnResult::Done,
                Made::Err(e) => TunnResult::Err(e()),
            };
            assert_eq!(verdict(kind, result), expected, "{kind:?} {made:?}");
        }
    }

    /// What `endpoint_index` relies on: a peer's `Tunn` refuses another peer's initiation with
    /// `WrongKey`, and is unchanged by it (its own peer's next initiation still completes).
    #[test]
    fn another_peers_initiation_is_refused_by_key_and_changes_nothing() {
        use boringtun::x25519::{PublicKey, StaticSecret};
        let ours = StaticSecret::from([9u8; 32]);
        let our_public = PublicKey::from(&ours);
        let (alice, bob) = (StaticSecret::from([1u8; 32]), StaticSecret::from([2u8; 32]));
        let (alice_public, bob_public) = (PublicKey::from(&alice), PublicKey::from(&bob));
        let mut for_alice = Tunn::new(ours.clone(), alice_public, None, None, 1, None);
        let mut for_bob = Tunn::new(ours, bob_public, None, None, 2, None);
        let mut alice_side = Tunn::new(alice, our_public, None, None, 3, None);
        let mut bob_side = Tunn::new(bob, our_public, None, None, 4, None);
        let (mut a, mut b, mut out) = (vec![0u8; 256], vec![0u8; 256], vec![0u8; 256]);
        let TunnResult::WriteToNetwork(bobs) = bob_side.format_handshake_initiation(&mut b, false) else {
            panic!("no initiation")
        };
        let refused = for_alice.decapsulate(None, bobs, &mut out);
        assert!(another_peers_initiation(&refused), "{refused:?}");
        let taken = for_bob.decapsulate(None, bobs, &mut out);
        assert!(matches!(taken, TunnResult::WriteToNetwork(_)) && !another_peers_initiation(&taken));
        let TunnResult::WriteToNetwork(alices) = alice_side.format_handshake_initiation(&mut a, false) else {
            panic!("no initiation")
        };
        let response = for_alice.decapsulate(None, alices, &mut out);
        assert!(matches!(response, TunnResult::WriteToNetwork(_)), "{response:?}");
        // A replayed initiation from the right peer is refused, but not as another peer's.
        let mut replayed = vec![0u8; 256];
        let TunnResult::WriteToNetwork(again) = alice_side.format_handshake_initiation(&mut replayed, true) else {
            panic!("no initiation")
        };
        let again = again.to_vec();
        assert!(matches!(for_alice.decapsulate(None, &again, &mut out), TunnResult::WriteToNetwork(_)));
        let twice = for_alice.decapsulate(None, &again, &mut out);
        assert!(matches!(twice, TunnResult::Err(_)) && !another_peers_initiation(&twice), "{twice:?}");
    }

    #[test]
    fn routes_come_from_the_bytes_and_the_index_alone() {
        let ours = |index: u32| (index >> 8 == 0x00ab_cdef).then_some(3);
        // A data message: type 4, three zero bytes, the receiver index, a counter, at least
        // the 16-byte tag.
        let mut data = vec![4u8, 0, 0, 0];
        data.extend_from_slice(&((0x00ab_cdefu32 << 8) | 7).to_le_bytes());
        data.extend_from_slice(&[0u8; 8 + 16]);
        assert!(matches!(route(&data, ours), Route::Peer(3, MessageKind::Data)));
        let mut other = data.clone();
        other[4..8].copy_from_slice(&0x1234_5600u32.to_le_bytes());
        assert!(matches!(route(&other, ours), Route::Drop(DropReason::UnknownIndex)));
        let mut cookie = vec![3u8, 0, 0, 0];
        cookie.extend_from_slice(&((0x00ab_cdefu32 << 8) | 1).to_le_bytes());
        cookie.extend_from_slice(&[0u8; 56]);
        assert!(matches!(route(&cookie, ours), Route::Peer(3, MessageKind::CookieReply)));
        let initiation = [[1u8, 0, 0, 0].as_slice(), &[0u8; 144]].concat();
        assert!(matches!(route(&initiation, ours), Route::Initiation(_)));
        for garbage in [&b""[..], b"\x04\0\0\0short", &[9u8; 148], &[1u8, 0, 0, 0, 1]] {
            assert!(matches!(route(garbage, ours), Route::Drop(DropReason::NotWireGuard)), "{garbage:?}");
        }
    }
}
