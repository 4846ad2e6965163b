//! Which connections the HTTP port keeps: at most [`Limits::per_source`] open from one
//! address and [`Limits::total`] in all. No sockets here, only the decision.
//!
//! The per-source cap keeps one host from taking the slots the load balancer's health checkers
//! need. When every slot is taken (many hosts at once), a new connection pushes out the oldest
//! one: a real health check is answered within milliseconds, so the oldest connection is the one
//! most likely to be a client that sends nothing, and a flood can never lock new checks out.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_source: usize,
}

impl Limits {
    /// The responder's limits: far above what an NLB's checkers use (one connection every few
    /// seconds from each of a few addresses), far below a thread or file-descriptor problem.
    pub const PORT: Limits = Limits { total: 128, per_source: 8 };
}

/// A connection's number, in the order they were accepted (lower is older).
pub type ConnectionId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Keep it.
    Accept(ConnectionId),
    /// Keep it, and close `evict` (the oldest) to make room.
    AcceptEvicting { id: ConnectionId, evict: ConnectionId },
    /// Close it at once: its source already has `per_source` open.
    Refuse,
}

/// The open connections, by id and by source.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    next_id: ConnectionId,
    open: BTreeMap<ConnectionId, IpAddr>,
    per_source: HashMap<IpAddr, usize>,
}

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        assert!(limits.total >= 1 && limits.per_source >= 1, "limits of at least one connection");
        Admission { limits, next_id: 0, open: BTreeMap::new(), per_source: HashMap::new() }
    }

    /// Decides about a new connection from `source`; an accepted one counts as open until
    /// [`Admission::close`] (an evicted one is closed here already).
    pub fn admit(&mut self, source: IpAddr) -> Admit {
        let source = source.to_canonical();
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.limits.per_source {
            return Admit::Refuse;
        }
        let evict = if self.open.len() >= self.limits.total {
            let oldest = *self.open.keys().next().expect("total >= 1, so a full table has a connection");
            self.close(oldest);
            Some(oldest)
        } else {
            None
        };
        let id = self.next_id;
        self.next_id += 1;
        self.open.insert(id, source);
        *self.per_source.entry(source).or_insert(0) += 1;
        match evict {
            Some(evict) => Admit::AcceptEvicting { id, evict },
            None => Admit::Accept(id),
        }
    }

    /// A connection ended (answered, timed out, or the client left). Unknown ids are ignored.
    pub fn close(&mut self, id: ConnectionId) {
        let Some(source) = self.open.remove(&id) else { return };
        if let Some(count) = self.per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_gets_at_most_its_share() {
        let mut a = Admission::new(Limits { total: 10, per_source: 2 });
        let first = a.admit(ip("10.0.0.5"));
        assert_eq!(first, Admit::Accept(0));
        assert_eq!(a.admit(ip("10.0.0.5")), Admit::Accept(1));
        assert_eq!(a.admit(ip("10.0.0.5")), Admit::Refuse);
        // The same address seen as IPv4-mapped IPv6 (a dual-stack listener) is the same source.
        assert_eq!(a.admit(ip("::ffff:10.0.0.5")), Admit::Refuse);
        // Another host still gets in: the checker is not locked out by the first one.
        assert_eq!(a.admit(ip("10.0.0.6")), Admit::Accept(2));
        a.close(0);
        assert_eq!(a.admit(ip("10.0.0.5")), Admit::Accept(3));
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn a_full_table_pushes_out_the_oldest() {
        let mut a = Admission::new(Limits { total: 3, per_source: 3 });
        for (n, host) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
            assert_eq!(a.admit(ip(host)), Admit::Accept(n as u64));
        }
        assert_eq!(a.admit(ip("10.0.0.4")), Admit::AcceptEvicting { id: 3, evict: 0 });
        assert_eq!(a.admit(ip("10.0.0.4")), Admit::AcceptEvicting { id: 4, evict: 1 });
        assert_eq!(a.open(), 3);
        // The evicted source's count went down with it.
        assert_eq!(a.admit(ip("10.0.0.1")), Admit::AcceptEvicting { id: 5, evict: 2 });
    }

    #[test]
    fn closing_twice_or_an_unknown_id_changes_nothing() {
        let mut a = Admission::new(Limits { total: 2, per_source: 1 });
        assert_eq!(a.admit(ip("10.0.0.1")), Admit::Accept(0));
        a.close(0);
        a.close(0);
        a.close(42);
        assert_eq!(a.open(), 0);
        assert_eq!(a.admit(ip("10.0.0.1")), Admit::Accept(1));
        assert_eq!(a.admit(ip("10.0.0.1")), Admit::Refuse);
    }
}
