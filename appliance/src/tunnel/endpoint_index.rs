//! Which peer last authenticated from each UDP endpoint: the guess that lets a handshake
//! initiation skip the Diffie-Hellman that only identifies its sender.
//!
//! An initiation names its sender only inside its encrypted static key, so finding the peer
//! costs one X25519 operation, and the peer's `Tunn` then repeats it while checking the
//! initiation. A peer hands in its next initiation (every two minutes) from the endpoint it was
//! last heard from, so the shell first gives the initiation to the peer last authenticated from
//! its source: boringtun checks the decrypted static key against that peer's and refuses it with
//! `WrongKey` before touching any state when the guess was wrong (another peer behind the same
//! address and port), and the shell then identifies the sender as before. A right guess costs
//! three X25519 operations instead of four; a wrong one five. Only authenticated packets write
//! the index, so a forged source can make the bastion try a wrong peer only as often as a real
//! peer moves, and the shared handshake rate limit bounds both.
//!
//! No I/O: the shell (`inbound`) notes endpoints and asks for guesses.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Beyond this many endpoints the index starts over: it only saves work, and one entry per
/// peer that ever authenticated is what it normally holds.
const MAX_ENDPOINTS: usize = 65_536;

/// A peer's public key, as the peer table looks peers up.
pub type PeerKey = [u8; 32];

#[derive(Debug, Default)]
pub struct EndpointIndex {
    last_peer: HashMap<SocketAddr, PeerKey>,
}

impl EndpointIndex {
    /// The peer `key` authenticated from `endpoint`; `previous` is where it was heard before
    /// (its entry goes, unless another peer was heard there since).
    pub fn note(&mut self, key: PeerKey, endpoint: SocketAddr, previous: Option<SocketAddr>) {
        if let Some(old) = previous.filter(|old| *old != endpoint) {
            if self.last_peer.get(&old) == Some(&key) {
                self.last_peer.remove(&old);
            }
        }
        if self.last_peer.len() >= MAX_ENDPOINTS && !self.last_peer.contains_key(&endpoint) {
            self.last_peer.clear();
        }
        self.last_peer.insert(endpoint, key);
    }

    /// The peer last authenticated from `endpoint`, the one to try an initiation on first.
    pub fn guess(&self, endpoint: &SocketAddr) -> Option<PeerKey> {
        self.last_peer.get(endpoint).copied()
    }

    /// Drops what the index says about `endpoint` (the peer it names is no longer configured).
    pub fn forget(&mut self, endpoint: &SocketAddr) {
        self.last_peer.remove(endpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn the_last_peer_heard_from_an_endpoint_is_the_guess() {
        let mut index = EndpointIndex::default();
        assert_eq!(index.guess(&at(1)), None);
        index.note([1; 32], at(1), None);
        assert_eq!(index.guess(&at(1)), Some([1; 32]));
        // Another peer behind the same address and port: the newest wins.
        index.note([2; 32], at(1), None);
        assert_eq!(index.guess(&at(1)), Some([2; 32]));
        index.forget(&at(1));
        assert_eq!(index.guess(&at(1)), None);
    }

    #[test]
    fn a_peer_that_moves_leaves_its_old_endpoint_unless_another_took_it() {
        let mut index = EndpointIndex::default();
        index.note([1; 32], at(1), None);
        index.note([1; 32], at(2), Some(at(1)));
        assert_eq!(index.guess(&at(1)), None);
        assert_eq!(index.guess(&at(2)), Some([1; 32]));
        // Peer 2 was heard at port 2 after peer 1; peer 1 moving away keeps peer 2's entry.
        index.note([2; 32], at(2), None);
        index.note([1; 32], at(3), Some(at(2)));
        assert_eq!(index.guess(&at(2)), Some([2; 32]));
        assert_eq!(index.last_peer.len(), 2);
    }

    #[test]
    fn the_index_stays_bounded() {
        let mut index = EndpointIndex::default();
        for i in 0..MAX_ENDPOINTS + 10 {
            let endpoint = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 51820));
            index.note([7; 32], endpoint, None);
            assert!(index.last_peer.len() <= MAX_ENDPOINTS);
        }
        // What was noted last is there after a restart of the index.
        let last = MAX_ENDPOINTS + 9;
        let endpoint = SocketAddr::from(([10, (last >> 16) as u8, (last >> 8) as u8, last as u8], 51820));
        assert_eq!(index.guess(&endpoint), Some([7; 32]));
    }
}
