//! What a new config changes against the running one, decided without I/O: which peers are
//! added, removed, updated in place (same session) or re-created (new session), and which
//! changes the running service cannot take without a restart. The service (`super`) carries the
//! decision out; the NAT table is compared as the plan it renders to, there.
//!
//! A peer is its public key: a new name, new allowed IPs, reach or endpoint keep its session;
//! a new preshared key or keepalive needs a new boringtun `Tunn` (neither can be changed on a
//! live one), so the peer is re-created and its client re-handshakes on its next packet (the
//! fast-failover path answers it at once).

use crate::config::{Config, InterfaceKey, Peer};
use crate::keys::PublicKey;
use std::collections::{HashMap, HashSet};

/// The peers a reload changes, by name (in the new config's order; removed ones in the old).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same key, same session: name, allowed IPs, reach or endpoint changed.
    pub updated: Vec<String>,
    /// Same key, new session: preshared key or keepalive changed.
    pub recreated: Vec<String>,
}

impl PeerChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.updated.is_empty() && self.recreated.is_empty()
    }

    /// `+2 -1 ~1 peers (1 re-created)`, for the log line.
    pub fn summary(&self) -> String {
        let mut text = format!("+{} -{} ~{} peers", self.added.len(), self.removed.len(), self.updated.len());
        if !self.recreated.is_empty() {
            text.push_str(&format!(" ({} re-created: {})", self.recreated.len(), self.recreated.join(", ")));
        }
        text
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Everything the running service can change: peers, `[nat]`, the drain time.
    Live { peers: PeerChanges, drain_seconds: Option<u64> },
    /// Fields the running service cannot change; the new config is not applied at all.
    NeedsRestart(Vec<&'static str>),
}

/// What `new` changes against `running`.
pub fn compare(running: &Config, new: &Config) -> Change {
    let restart = restart_fields(running, new);
    if !restart.is_empty() {
        return Change::NeedsRestart(restart);
    }
    let drain_seconds = (running.health.drain_seconds != new.health.drain_seconds).then_some(new.health.drain_seconds);
    Change::Live { peers: peer_changes(&running.peers, &new.peers), drain_seconds }
}

/// The keys of the peers that need a new `Tunn` (see the module comment).
pub fn recreate(running: &Config, new: &Config) -> HashSet<PublicKey> {
    let old: HashMap<PublicKey, &Peer> = running.peers.iter().map(|p| (p.public_key, p)).collect();
    new.peers
        .iter()
        .filter(|p| old.get(&p.public_key).is_some_and(|o| needs_new_session(o, p)))
        .map(|p| p.public_key)
        .collect()
}

fn needs_new_session(old: &Peer, new: &Peer) -> bool {
    old.preshared_key.as_ref().map(|k| k.bytes()) != new.preshared_key.as_ref().map(|k| k.bytes())
        || old.persistent_keepalive != new.persistent_keepalive
}

fn peer_changes(running: &[Peer], new: &[Peer]) -> PeerChanges {
    let old: HashMap<PublicKey, &Peer> = running.iter().map(|p| (p.public_key, p)).collect();
    let kept: HashSet<PublicKey> = new.iter().map(|p| p.public_key).collect();
    let mut changes = PeerChanges {
        removed: running.iter().filter(|p| !kept.contains(&p.public_key)).map(|p| p.name.clone()).collect(),
        ..PeerChanges::default()
    };
    for peer in new {
        match old.get(&peer.public_key) {
            None => changes.added.push(peer.name.clone()),
            Some(o) if needs_new_session(o, peer) => changes.recreated.push(peer.name.clone()),
            Some(o) => {
                if o.name != peer.name
                    || o.allowed_ips != peer.allowed_ips
                    || o.reach != peer.reach
                    || o.endpoint != peer.endpoint
                {
                    changes.updated.push(peer.name.clone());
                }
            }
        }
    }
    changes
}

/// The fields whose change needs a restart: what the interface, the listeners and the
/// self-test were built from, and where the config comes from.
fn restart_fields(a: &Config, b: &Config) -> Vec<&'static str> {
    let key = |c: &Config| match &c.interface.key {
        InterfaceKey::Given(k) => Ok(k.public_key()),
        InterfaceKey::Ssm { parameter } => Err(parameter.clone()),
    };
    let checks: [(&'static str, bool); 16] = [
        ("interface.private_key", key(a) != key(b)),
        ("interface.address", a.interface.addresses != b.interface.addresses),
        ("interface.listen_port", a.interface.listen_port != b.interface.listen_port),
        ("interface.mtu", a.interface.mtu != b.interface.mtu),
        ("interface.name", a.interface.name != b.interface.name),
        ("health.listen", a.health.listen != b.health.listen),
        ("selftest.interval_seconds", a.selftest.interval_seconds != b.selftest.interval_seconds),
        ("selftest.address", a.selftest.address != b.selftest.address),
        ("selftest.probes", a.selftest.probes != b.selftest.probes),
        ("metrics.listen", a.metrics != b.metrics),
        ("control.socket", a.control != b.control),
        ("source.ssm_path", a.source.ssm_path != b.source.ssm_path),
        ("source.refresh_seconds", a.source.refresh_seconds != b.source.refresh_seconds),
        ("aws", a.aws != b.aws),
        ("siblings", a.siblings != b.siblings),
        ("log", a.log != b.log),
    ];
    checks.into_iter().filter(|(_, changed)| *changed).map(|(field, _)| field).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERFACE: &str =
        "[interface]\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\naddress = [\"10.100.0.1/24\"]\n";
    const ALICE: &str = "\n[[peer]]\nname = \"alice\"\npublic_key = \"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"\nallowed_ips = [\"10.100.0.2/32\"]\n";
    const BOB: &str = "\n[[peer]]\nname = \"bob\"\npublic_key = \"TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=\"\nallowed_ips = [\"10.100.0.3/32\"]\n";
    const CAROL: &str = "\n[[peer]]\nname = \"carol\"\npublic_key = \"gTfIdw9gCZYXOJtSonnkam/5fdd3pbz8xnNy0xTyg18=\"\nallowed_ips = [\"10.100.0.4/32\"]\n";
    const NAT: &str = "\n[nat]\negress = \"eth0\"\n";

    fn base() -> String {
        format!("{INTERFACE}{ALICE}{BOB}{NAT}")
    }

    fn config(text: &str) -> Config {
        crate::config::parse(text, "test.toml", None).unwrap_or_else(|e| panic!("{e}"))
    }

    fn live(peers: PeerChanges) -> Change {
        Change::Live { peers, drain_seconds: None }
    }

    #[test]
    fn each_kind_of_change_is_what_the_table_says() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let base = base();
        let cases: Vec<(&str, String, Change)> = vec![
            ("same text", base.clone(), live(PeerChanges::default())),
            ("a comment", format!("# hello\n{base}"), live(PeerChanges::default())),
            ("peers reordered", format!("{INTERFACE}{BOB}{ALICE}{NAT}"), live(PeerChanges::default())),
            (
                "a peer added",
                format!("{INTERFACE}{ALICE}{BOB}{CAROL}{NAT}"),
                live(PeerChanges { added: names(&["carol"]), ..Default::default() }),
            ),
            (
                "a peer removed",
                format!("{INTERFACE}{ALICE}{NAT}"),
                live(PeerChanges { removed: names(&["bob"]), ..Default::default() }),
            ),
            (
                "renamed and new allowed IPs",
                base.replace("\"bob\"", "\"robert\"").replace("10.100.0.2/32", "10.100.0.2/32\", \"10.100.0.20/32"),
                live(PeerChanges { updated: names(&["alice", "robert"]), ..Default::default() }),
            ),
            (
                "reach",
                base.replace("allowed_ips = [\"10.100.0.3/32\"]", "allowed_ips = [\"10.100.0.3/32\"]\nreach = [\"10.0.9.0/24\"]"),
                live(PeerChanges { updated: names(&["bob"]), ..Default::default() }),
            ),
            (
                "keepalive",
                base.replace("allowed_ips = [\"10.100.0.3/32\"]", "allowed_ips = [\"10.100.0.3/32\"]\npersistent_keepalive = 25"),
                live(PeerChanges { recreated: names(&["bob"]), ..Default::default() }),
            ),
            (
                "preshared key",
                base.replace(
                    "allowed_ips = [\"10.100.0.2/32\"]",
                    "allowed_ips = [\"10.100.0.2/32\"]\npreshared_key = \"FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=\"",
                ),
                live(PeerChanges { recreated: names(&["alice"]), ..Default::default() }),
            ),
            ("nat only", base.replace("egress = \"eth0\"", "egress = \"eth1\"\nreach = [\"10.0.1.0/24\"]"), live(PeerChanges::default())),
            (
                "drain",
                format!("{base}[health]\ndrain_seconds = 5\n"),
                Change::Live { peers: PeerChanges::default(), drain_seconds: Some(5) },
            ),
            ("port", base.replace("address =", "listen_port = 51821\naddress ="), Change::NeedsRestart(vec!["interface.listen_port"])),
            (
                "key and address",
                base.replace("yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=", "DRhFU4fdVR1KicMWv51lbQw4Q8XqA9rcNzF/GK/IoMo=")
                    .replace("10.100.0.1/24", "10.100.0.5/24"),
                Change::NeedsRestart(vec!["interface.private_key", "interface.address"]),
            ),
            (
                "metrics and a peer",
                format!("{INTERFACE}{ALICE}{BOB}{CAROL}{NAT}[metrics]\nlisten = \"127.0.0.1:9586\"\n"),
                Change::NeedsRestart(vec!["metrics.listen"]),
            ),
        ];
        let running = config(&base);
        for (what, text, expected) in cases {
            assert_eq!(compare(&running, &config(&text)), expected, "{what}");
        }
    }

    #[test]
    fn only_peers_with_a_new_preshared_key_or_keepalive_get_a_new_session() {
        let base = base();
        let running = config(&base);
        let new = config(
            &base
                .replace(
                    "allowed_ips = [\"10.100.0.3/32\"]",
                    "allowed_ips = [\"10.100.0.3/32\"]\npersistent_keepalive = 25",
                )
                .replace("\"alice\"", "\"alicia\""),
        );
        let keys = recreate(&running, &new);
        assert_eq!(keys.len(), 1);
        assert!(keys.contains(&new.peers[1].public_key));
        assert_eq!(
            compare(&running, &new),
            live(PeerChanges { updated: vec!["alicia".into()], recreated: vec!["bob".into()], ..Default::default() })
        );
    }

    #[test]
    fn the_summary_reads_like_the_log_line() {
        let changes = PeerChanges {
            added: vec!["carol".into(), "dave".into()],
            removed: vec!["bob".into()],
            updated: vec![],
            recreated: vec!["alice".into()],
        };
        assert_eq!(changes.summary(), "+2 -1 ~0 peers (1 re-created: alice)");
    }
}
