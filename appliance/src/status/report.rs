//! What `bastion status` reports, as one typed, versioned structure: the service fills it in,
//! the status socket carries it as JSON, and [`render_text`] is the one place that turns it into
//! the human report. `bastion status --json` prints the JSON itself. Never a private or
//! preshared key: the structure has no field that could hold one.

use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning or goes away (adding fields keeps the version).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// [`SCHEMA_VERSION`] of the service that wrote it.
    pub schema: u32,
    /// The tunnel interface (`wg0`).
    pub interface: String,
    /// The bastion's public key (base64).
    pub public_key: String,
    pub listen_port: u16,
    pub health: Health,
    pub draining: bool,
    pub selftest: Option<SelfTest>,
    /// Where the running config came from, and its version when the source has one.
    pub config: ConfigSource,
    pub peers: Vec<PeerReport>,
    pub dropped: Dropped,
    pub failover: Failover,
    /// Our nftables table as `nft list` prints it (what the service installs).
    pub nat_rules: String,
    /// What `[siblings]` has done; `None` when it is off (or the service predates it).
    #[serde(default)]
    pub siblings: Option<Siblings>,
    /// The data path's offloads and what they did; `None` from a service that predates them.
    #[serde(default)]
    pub offloads: Option<Offloads>,
    /// How handshake initiations found their peer; `None` from a service that predates it.
    #[serde(default)]
    pub initiations: Option<Initiations>,
}

/// Initiations answered by the peer last heard from their source, without the Diffie-Hellman
/// that identifies the sender, and those that turned out to be another peer's (then identified).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Initiations {
    pub known_by_endpoint: u64,
    pub guesses_missed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offloads {
    pub udp_gso: bool,
    pub udp_gro: bool,
    pub tun_tso: bool,
    pub tun_coalescing: bool,
    /// TCP super-packets read from the TUN (TSO) and the segments cut from them.
    pub tun_super_packets_read: u64,
    pub tun_segments_read: u64,
    /// Super-packets written to the TUN and the decrypted segments merged into them.
    pub tun_super_packets_written: u64,
    pub tun_segments_written: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Siblings {
    pub deregistered: u64,
    pub marked_unhealthy: u64,
    /// Dead siblings' addresses this bastion took over, and gave back.
    #[serde(default)]
    pub taken_over: u64,
    #[serde(default)]
    pub given_back: u64,
    /// Rounds whose AWS calls failed.
    pub failures: u64,
    /// Datagrams passed to or from a sibling while a moved flow's client re-keys
    /// (`tunnel::relay`), and relay messages refused (forged, stale, not from the sibling).
    #[serde(default)]
    pub relayed: u64,
    #[serde(default)]
    pub relay_refused: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// 200 or 503.
    pub status: u16,
    /// One line per failing condition (empty when 200).
    pub failing: Vec<String>,
    /// The failing conditions by label (`nat`, `event_loop`...), one per line of `failing`
    /// (a service before this field sends none).
    #[serde(default)]
    pub conditions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTest {
    pub passed: bool,
    /// The console line (`selftest: PASS handshake 1.0 ms, ...`).
    pub line: String,
    pub age_seconds: u64,
    /// How long the run took, in milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSource {
    /// A file path, or the file and the SSM parameters it names.
    pub origin: String,
    /// 12 hex digits of the SHA-256 of the config's text (the same on every bastion that read
    /// the same text).
    pub version: Option<String>,
    /// Fields a newer config changes that only a restart can apply (empty: none).
    #[serde(default)]
    pub restart_pending: Vec<String>,
    /// Reloads applied (or found unchanged) since the start.
    #[serde(default)]
    pub reloads: u64,
    /// Reloads that could not be applied (unreadable, invalid, failed).
    #[serde(default)]
    pub reload_failures: u64,
    /// Of those, the ones where the source could not be read (SSM unreachable, denied, missing).
    #[serde(default)]
    pub source_failures: u64,
    /// Why the last reload failed, while it is the latest news.
    #[serde(default)]
    pub last_failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    pub name: String,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Unix seconds of the last handshake, or none yet.
    pub latest_handshake: Option<u64>,
    /// Seconds since then (what the text report shows).
    pub latest_handshake_age_seconds: Option<u64>,
    pub handshakes: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub failover_handshakes: u64,
    /// Decrypted packets whose source was outside the peer's allowed IPs.
    pub rejected_sources: u64,
    /// The 24-bit session index base, hex: the same on every bastion of a cluster.
    pub session_index: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub not_ours: u64,
    pub rejected: u64,
    pub unknown_keys: u64,
    pub cookie_replies: u64,
    pub tun_no_peer: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failover {
    pub refused_heard_recently: u64,
    pub held_back_by_budget: u64,
}

/// The human report (what `bastion status` prints).
pub fn render_text(r: &StatusReport) -> String {
    use std::fmt::Write;
    let mut text = String::new();
    let _ = writeln!(text, "interface: {}  UDP port {}  health {}", r.interface, r.listen_port, r.health.status);
    for reason in &r.health.failing {
        let _ = writeln!(text, "  {reason}");
    }
    let _ = writeln!(text, "draining: {}", if r.draining { "yes" } else { "no" });
    match &r.selftest {
        Some(last) => {
            let _ = writeln!(text, "{} ({} s ago)", last.line, last.age_seconds);
        }
        None => {
            let _ = writeln!(text, "selftest: not run yet");
        }
    }
    let _ = writeln!(
        text,
        "config: {}{}",
        r.config.origin,
        r.config.version.as_ref().map(|v| format!(" (version {v})")).unwrap_or_default()
    );
    if !r.config.restart_pending.is_empty() {
        let _ = writeln!(text, "  restart pending: a newer config changes {}", r.config.restart_pending.join(", "));
    }
    if let Some(failure) = &r.config.last_failure {
        let _ = writeln!(text, "  last reload failed: {failure}");
    }
    let _ = writeln!(text, "peers: {}", r.peers.len());
    for peer in &r.peers {
        let handshake =
            peer.latest_handshake_age_seconds.map(|s| format!("{s} s ago")).unwrap_or_else(|| "never".into());
        let _ = writeln!(
            text,
            "  {}  endpoint {}  last handshake {handshake}  handshakes {}  received {}  sent {}  \
             failover handshakes {}  rejected sources {}  session index {}",
            peer.name,
            peer.endpoint.as_deref().unwrap_or("-"),
            peer.handshakes,
            super::bytes(peer.rx_bytes),
            super::bytes(peer.tx_bytes),
            peer.failover_handshakes,
            peer.rejected_sources,
            peer.session_index
        );
    }
    let d = &r.dropped;
    let _ = writeln!(
        text,
        "dropped: {} datagrams not ours, {} rejected, {} handshakes from unknown keys, \
         {} cookie replies, {} TUN packets with no peer",
        d.not_ours, d.rejected, d.unknown_keys, d.cookie_replies, d.tun_no_peer
    );
    let _ = writeln!(
        text,
        "failover: {} refused (the peer was heard here moments before: forged or replayed), {} held back by the global budget",
        r.failover.refused_heard_recently, r.failover.held_back_by_budget
    );
    if let Some(o) = &r.offloads {
        let on = |b: bool| if b { "on" } else { "off" };
        let _ = writeln!(
            text,
            "offloads: UDP GSO {}, UDP GRO {}, TUN TSO {}, TUN coalescing {}; TUN super-packets read {} ({} segments), \
             written {} ({} segments)",
            on(o.udp_gso),
            on(o.udp_gro),
            on(o.tun_tso),
            on(o.tun_coalescing),
            o.tun_super_packets_read,
            o.tun_segments_read,
            o.tun_super_packets_written,
            o.tun_segments_written
        );
    }
    if let Some(i) = &r.initiations {
        let _ = writeln!(
            text,
            "initiations: {} answered by the peer last heard from their source (one Diffie-Hellman saved each), \
             {} were another peer's",
            i.known_by_endpoint, i.guesses_missed
        );
    }
    if let Some(s) = &r.siblings {
        let _ = writeln!(
            text,
            "siblings: deregistered {} dead target(s), marked {} instance(s) unhealthy, took over {} address(es) \
             (gave back {}), {} failed round(s); relayed {} datagram(s) for a moved flow ({} refused)",
            s.deregistered, s.marked_unhealthy, s.taken_over, s.given_back, s.failures, s.relayed, s.relay_refused
        );
    }
    let _ = writeln!(
        text,
        "nat: what the service installs (`nft list table inet {}` shows what is there):",
        crate::nat::table_name(&r.interface)
    );
    for line in r.nat_rules.lines() {
        let _ = writeln!(text, "{}", if line.is_empty() { String::new() } else { format!("  {line}") });
    }
    text
}

#[cfg(test)]
pub(crate) fn example() -> StatusReport {
    StatusReport {
        schema: SCHEMA_VERSION,
        interface: "wg0".into(),
        public_key: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=".into(),
        listen_port: 51820,
        health: Health {
            status: 503,
            failing: vec!["draining: shutting down, 3 s left".into()],
            conditions: vec!["draining".into()],
        },
        draining: true,
        selftest: Some(SelfTest {
            passed: true,
            line: "selftest: PASS handshake 1.0 ms, ping 0.2 ms".into(),
            age_seconds: 4,
            duration_ms: Some(2),
        }),
        config: ConfigSource {
            origin: "/etc/bastion/bastion.toml".into(),
            version: Some("0123456789ab".into()),
            restart_pending: vec!["interface.listen_port".into()],
            reloads: 2,
            reload_failures: 1,
            source_failures: 0,
            last_failure: None,
        },
        peers: vec![PeerReport {
            name: "alice".into(),
            public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into(),
            endpoint: Some("192.0.2.101:4000".into()),
            allowed_ips: vec!["10.100.0.2/32".into()],
            latest_handshake: Some(1_790_000_000),
            latest_handshake_age_seconds: Some(1),
            handshakes: 2,
            rx_bytes: 1024,
            tx_bytes: 3,
            failover_handshakes: 1,
            rejected_sources: 0,
            session_index: "eba7e0".into(),
        }],
        dropped: Dropped { not_ours: 7, rejected: 1, unknown_keys: 5, cookie_replies: 300, tun_no_peer: 2 },
        failover: Failover { refused_heard_recently: 9, held_back_by_budget: 0 },
        nat_rules: "table inet bastion-wg0 {\n}\n".into(),
        siblings: None,
        offloads: Some(Offloads {
            udp_gso: true,
            udp_gro: true,
            tun_tso: true,
            tun_coalescing: false,
            tun_super_packets_read: 10,
            tun_segments_read: 420,
            tun_super_packets_written: 0,
            tun_segments_written: 0,
        }),
        initiations: Some(Initiations { known_by_endpoint: 4, guesses_missed: 1 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_report_has_every_line_the_operators_and_tests_read() {
        let text = render_text(&example());
        let expected = "interface: wg0  UDP port 51820  health 503\n  draining: shutting down, 3 s left\ndraining: yes\n\
            selftest: PASS handshake 1.0 ms, ping 0.2 ms (4 s ago)\nconfig: /etc/bastion/bastion.toml (version 0123456789ab)\n  \
            restart pending: a newer config changes interface.listen_port\npeers: 1\n  \
            alice  endpoint 192.0.2.101:4000  last handshake 1 s ago  handshakes 2  received 1.0 KiB  sent 3 B  \
            failover handshakes 1  rejected sources 0  session index eba7e0\n\
            dropped: 7 datagrams not ours, 1 rejected, 5 handshakes from unknown keys, 300 cookie replies, 2 TUN packets with no peer\n\
            failover: 9 refused (the peer was heard here moments before: forged or replayed), 0 held back by the global budget\n\
            offloads: UDP GSO on, UDP GRO on, TUN TSO on, TUN coalescing off; TUN super-packets read 10 (420 segments), \
            written 0 (0 segments)\n\
            initiations: 4 answered by the peer last heard from their source (one Diffie-Hellman saved each), \
            1 were another peer's\n\
            nat: what the service installs (`nft list table inet bastion-wg0` shows what is there):\n  table inet bastion-wg0 {\n  }\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn json_round_trips_and_holds_no_private_key() {
        let report = example();
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), report);
        for key in [
            "schema",
            "interface",
            "public_key",
            "listen_port",
            "health",
            "config",
            "peers",
            "latest_handshake",
            "rx_bytes",
            "tx_bytes",
            "failover_handshakes",
        ] {
            assert!(json.contains(&format!("\"{key}\"")), "{key} missing: {json}");
        }
        assert!(!json.contains("private") && !json.contains("preshared"), "{json}");
    }
}
