//! Which move notices `bastion watch` obeys, and how often it says so (no I/O).
//!
//! A notice makes the client drop its flow, so it must come from the bastion: through the
//! tunnel, from a peer's allowed address, never from this machine itself (a local user can
//! send to the client's own tunnel address, and that datagram is seen on the tunnel
//! interface too), and from the bastion's own tunnel address when the operator names it
//! (`--bastion-address`). Another peer cannot send one through a bastion of ours: its
//! forward chain drops peer-to-peer datagrams to the notice port.
//!
//! Refusals are logged at most once per [`LOG_EVERY`], with how many were not logged, so a
//! flood of notices cannot flood the log.

use std::net::IpAddr;
use std::time::Duration;

use ip_network::IpNetwork;

pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// What to do with a well-formed notice from `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeVerdict {
    /// Move the tunnel of the peer with this index (in the list passed in).
    Obey {
        peer: usize,
    },
    Refuse(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source is an address of this machine.
    Local,
    /// `--bastion-address` was given, and this is not one of them.
    NotTheBastion,
    /// No peer may send from that address.
    NoPeer,
}

impl Refusal {
    pub fn why(self) -> &'static str {
        match self {
            Refusal::Local => "it came from this machine itself",
            Refusal::NotTheBastion => "it did not come from a --bastion-address",
            Refusal::NoPeer => "no peer may send from that address",
        }
    }
}

/// Decides about a notice from `source`, given this machine's addresses, the bastion
/// addresses the operator named (empty: any address a peer may send from) and each peer's
/// allowed IPs.
pub fn judge(source: IpAddr, local: &[IpAddr], bastions: &[IpAddr], peers: &[&[IpNetwork]]) -> NoticeVerdict {
    if source.is_loopback() || source.is_unspecified() || local.contains(&source) {
        return NoticeVerdict::Refuse(Refusal::Local);
    }
    if !bastions.is_empty() && !bastions.contains(&source) {
        return NoticeVerdict::Refuse(Refusal::NotTheBastion);
    }
    match peers.iter().position(|allowed| allowed.iter().any(|net| net.contains(source))) {
        Some(peer) => NoticeVerdict::Obey { peer },
        None => NoticeVerdict::Refuse(Refusal::NoPeer),
    }
}

/// At most one line per [`LOG_EVERY`]; `now` is the time since any fixed start.
#[derive(Debug, Default)]
pub struct LogLimiter {
    last: Option<Duration>,
    /// Refusals since the last line.
    unlogged: u64,
}

impl LogLimiter {
    /// Whether to log this one; when so, how many before it were not logged.
    pub fn admit(&mut self, now: Duration) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + LOG_EVERY) {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_peer_address_that_is_not_ours_and_is_the_bastion_when_named() {
        let tunnel: Vec<IpNetwork> = vec!["10.100.0.0/24".parse().unwrap(), "10.0.0.0/16".parse().unwrap()];
        let peers: &[&[IpNetwork]] = &[&tunnel];
        let local = [ip("10.100.0.2"), ip("192.168.1.5")];
        assert_eq!(judge(ip("10.100.0.1"), &local, &[], peers), NoticeVerdict::Obey { peer: 0 });
        // The client's own tunnel address (a local user sent it), loopback, another host.
        assert_eq!(judge(ip("10.100.0.2"), &local, &[], peers), NoticeVerdict::Refuse(Refusal::Local));
        assert_eq!(judge(ip("127.0.0.1"), &local, &[], peers), NoticeVerdict::Refuse(Refusal::Local));
        assert_eq!(judge(ip("::1"), &local, &[], peers), NoticeVerdict::Refuse(Refusal::Local));
        assert_eq!(judge(ip("172.16.0.1"), &local, &[], peers), NoticeVerdict::Refuse(Refusal::NoPeer));
        // With the bastion named, another peer's address is refused even inside the tunnel net.
        let named = [ip("10.100.0.1")];
        assert_eq!(judge(ip("10.100.0.1"), &local, &named, peers), NoticeVerdict::Obey { peer: 0 });
        assert_eq!(judge(ip("10.100.0.3"), &local, &named, peers), NoticeVerdict::Refuse(Refusal::NotTheBastion));
        assert_eq!(judge(ip("10.100.0.2"), &local, &[ip("10.100.0.2")], peers), NoticeVerdict::Refuse(Refusal::Local));
    }

    #[test]
    fn a_flood_is_one_line_per_ten_seconds_with_a_count() {
        let mut limiter = LogLimiter::default();
        let logged: Vec<(u64, u64)> = (0..500u64)
            .filter_map(|i| {
                let now = Duration::from_millis(i * 52); // 500 in 26 s
                limiter.admit(now).map(|skipped| (i, skipped))
            })
            .collect();
        assert_eq!(logged.len(), 3, "{logged:?}");
        assert_eq!(logged[0], (0, 0));
        assert_eq!(logged[1].1, logged[1].0 - 1);
    }
}
