//! WireGuard messages made and read by the tests themselves: handshake initiations with a
//! valid MAC1 (boringtun's `noise::Tunn` as the initiator, from a peer's key or from a key the
//! bastion does not know), the cookie replies and handshake responses that come back, and the
//! message kind of any datagram a test receives.
//!
//! Building MAC1 needs only the bastion's public key: that is what lets anyone on the internet
//! make a bastion do a Diffie-Hellman, and what the handshake rate limiter is for.

use std::net::IpAddr;

use base64::Engine as _;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

/// WireGuard message sizes (the whitepaper's, section 5.4).
pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// A data message without payload: header (16) + authentication tag (16).
pub const KEEPALIVE_LEN: usize = 32;

/// What a datagram is, from its type byte, reserved bytes and length alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Initiation,
    Response,
    CookieReply,
    Data,
    /// Not a well-formed WireGuard message.
    Other,
}

pub fn message_kind(datagram: &[u8]) -> MessageKind {
    if datagram.len() < 4 || datagram[1..4] != [0, 0, 0] {
        return MessageKind::Other;
    }
    match (datagram[0], datagram.len()) {
        (1, INITIATION_LEN) => MessageKind::Initiation,
        (2, RESPONSE_LEN) => MessageKind::Response,
        (3, COOKIE_REPLY_LEN) => MessageKind::CookieReply,
        (4, n) if n >= KEEPALIVE_LEN && n % 16 == 0 => MessageKind::Data,
        _ => MessageKind::Other,
    }
}

/// The receiver index of a response, cookie reply or data message (the session index the
/// receiving side chose), if the datagram is one.
pub fn receiver_index(datagram: &[u8]) -> Option<u32> {
    match message_kind(datagram) {
        MessageKind::Response | MessageKind::CookieReply | MessageKind::Data => {
            Some(u32::from_le_bytes(datagram[4..8].try_into().unwrap()))
        }
        _ => None,
    }
}

/// 32 random bytes: a private key for a peer the test makes up.
pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(8) {
        chunk.copy_from_slice(&crate::random_u64().to_ne_bytes());
    }
    key
}

/// A key in WireGuard's base64 (what `wg genkey`/`wg pubkey` print).
pub fn encode_key(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The base64 public key of the private key `private`.
pub fn public_key_of(private: [u8; 32]) -> String {
    encode_key(PublicKey::from(&StaticSecret::from(private)).as_bytes())
}

/// A 32-byte key from WireGuard's base64 (what `wg genkey`/`wg pubkey` print).
pub fn decode_key(base64_key: &str) -> [u8; 32] {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_key.trim())
        .unwrap_or_else(|e| panic!("not a base64 key: {e}"));
    bytes.try_into().unwrap_or_else(|b: Vec<u8>| panic!("a key has 32 bytes, not {}", b.len()))
}

/// The initiating side of a handshake toward a bastion, built on boringtun's `Tunn`.
pub struct Initiator {
    tunn: Tunn,
    buf: Vec<u8>,
}

impl Initiator {
    /// An initiator with the private key `private` (base64, e.g. a topology client's, so the
    /// bastion knows it as a peer) toward the bastion whose public key is `bastion_public`.
    pub fn with_key(private: &str, bastion_public: &str) -> Initiator {
        Initiator::from_bytes(decode_key(private), bastion_public)
    }

    /// An initiator with a fresh random key no bastion has as a peer.
    pub fn stranger(bastion_public: &str) -> Initiator {
        Initiator::from_bytes(random_key(), bastion_public)
    }

    fn from_bytes(private: [u8; 32], bastion_public: &str) -> Initiator {
        let index = (crate::random_u64() as u32) >> 8;
        let tunn = Tunn::new(
            StaticSecret::from(private),
            PublicKey::from(decode_key(bastion_public)),
            None,
            None,
            index,
            None,
        );
        Initiator { tunn, buf: vec![0u8; 2048] }
    }

    /// A new handshake initiation (new ephemeral key, new timestamp, valid MAC1; MAC2 too once
    /// a cookie was accepted).
    pub fn initiation(&mut self) -> Vec<u8> {
        match self.tunn.format_handshake_initiation(&mut self.buf, true) {
            TunnResult::WriteToNetwork(packet) => packet.to_vec(),
            TunnResult::Err(e) => panic!("boringtun could not make an initiation: {e:?}"),
            _ => panic!("boringtun made no initiation"),
        }
    }

    /// Takes a reply to the last initiation: a cookie reply (remembered, so the next initiation
    /// carries MAC2) or a handshake response (completes the handshake). `Err` when the reply is
    /// not valid for this initiator.
    pub fn accept(&mut self, from: IpAddr, datagram: &[u8]) -> Result<(), String> {
        match self.tunn.decapsulate(Some(from), datagram, &mut self.buf) {
            // A response completes the handshake; boringtun then offers a keepalive to send.
            TunnResult::WriteToNetwork(_) | TunnResult::Done => Ok(()),
            TunnResult::Err(e) => Err(format!("{:?} message rejected by the initiator: {e:?}", message_kind(datagram))),
            _ => Err("unexpected tunnel packet".into()),
        }
    }

    /// Whether a session exists (a handshake response was accepted).
    pub fn has_session(&self) -> bool {
        self.tunn.stats().0.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_type_and_length() {
        let mut init = vec![0u8; INITIATION_LEN];
        init[0] = 1;
        assert_eq!(message_kind(&init), MessageKind::Initiation);
        init.pop();
        assert_eq!(message_kind(&init), MessageKind::Other);
        let mut cookie = vec![0u8; COOKIE_REPLY_LEN];
        cookie[0] = 3;
        assert_eq!(message_kind(&cookie), MessageKind::CookieReply);
        cookie[2] = 1;
        assert_eq!(message_kind(&cookie), MessageKind::Other);
        let mut data = vec![0u8; 48];
        data[0] = 4;
        data[4..8].copy_from_slice(&0x0012_3456u32.to_le_bytes());
        assert_eq!(message_kind(&data), MessageKind::Data);
        assert_eq!(receiver_index(&data), Some(0x0012_3456));
        assert_eq!(message_kind(&[]), MessageKind::Other);
    }

    #[test]
    fn initiations_are_well_formed_and_fresh() {
        let bastion = base64::engine::general_purpose::STANDARD
            .encode(PublicKey::from(&StaticSecret::from([7u8; 32])).as_bytes());
        let mut initiator = Initiator::stranger(&bastion);
        let a = initiator.initiation();
        let b = initiator.initiation();
        assert_eq!(message_kind(&a), MessageKind::Initiation);
        assert_ne!(a, b, "each initiation has its own ephemeral key");
    }
}
