//! The health verdict of a running service, in two steps: `observe` reads every condition from
//! the kernel and the threads at the moment of the request (nothing remembered), and `judge`
//! decides from those facts alone, one line per failing condition. `judge` does no I/O, so the
//! rules are tested with plain values.

use super::ServiceState;
use crate::config::InterfaceAddress;
use crate::health::{Condition, Failing, HealthVerdict};
use crate::nat;
use crate::netlink::route;
use crate::tunnel::DataPlane;
use std::time::Duration;

/// The event loop counts as alive while every worker turned within this long.
pub const HEARTBEAT_LIMIT: Duration = Duration::from_secs(2);

/// The TUN interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunState {
    /// Up, and these of its tunnel addresses are gone.
    Up {
        missing: Vec<InterfaceAddress>,
    },
    Down,
    Missing,
    /// Reading it failed (the reason, from rtnetlink).
    Unreadable(String),
}

/// Everything health depends on, as observed at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The TUN's name (`wg0`).
    pub interface: String,
    /// While draining: the time left.
    pub drain_left: Option<Duration>,
    pub tun: TunState,
    pub udp_bound: bool,
    /// Whether our nftables table is in the kernel, or why that could not be read.
    pub nat_table: Result<bool, String>,
    pub forwarding_on: bool,
    /// Whether the tunnel carries IPv6 (then IPv6 forwarding counts too).
    pub ipv6: bool,
    pub heartbeat_age: Duration,
    /// The last self-test: passed, and its console line.
    pub selftest: Option<(bool, String)>,
}

/// Every condition that fails, with its line (empty: healthy).
pub fn failing(facts: &Facts) -> Vec<Failing> {
    let name = &facts.interface;
    let mut failing = Vec::new();
    let mut fail = |condition, line: String| failing.push(Failing { condition, line });
    if let Some(left) = facts.drain_left {
        fail(Condition::Draining, format!("draining: shutting down, {} s left", left.as_secs()));
    }
    match &facts.tun {
        TunState::Up { missing } => {
            for want in missing {
                fail(Condition::Tun, format!("tun: {name} has lost its address {want}"));
            }
        }
        TunState::Down => fail(Condition::Tun, format!("tun: {name} is down")),
        TunState::Missing => fail(Condition::Tun, format!("tun: {name} does not exist")),
        TunState::Unreadable(e) => fail(Condition::Tun, format!("tun: cannot read the state of {name}: {e}")),
    }
    if !facts.udp_bound {
        fail(Condition::Udp, "udp: the WireGuard socket is not bound".into());
    }
    let table = nat::table_name(&facts.interface);
    match &facts.nat_table {
        Ok(true) => {}
        Ok(false) => fail(Condition::Nat, format!("nat: table inet {table} is missing")),
        Err(e) => fail(Condition::Nat, format!("nat: cannot read table inet {table}: {e}")),
    }
    if !facts.forwarding_on {
        fail(
            Condition::Forwarding,
            if facts.ipv6 {
                "forwarding: net.ipv4.ip_forward or net.ipv6.conf.all.forwarding is off".into()
            } else {
                "forwarding: net.ipv4.ip_forward is off".into()
            },
        );
    }
    if facts.heartbeat_age > HEARTBEAT_LIMIT {
        fail(Condition::EventLoop, format!("event loop: no heartbeat for {:.1} s", facts.heartbeat_age.as_secs_f64()));
    }
    match &facts.selftest {
        Some((true, _)) => {}
        Some((false, line)) => fail(Condition::Selftest, line.clone()),
        None => fail(Condition::Selftest, "selftest: not run yet".into()),
    }
    failing
}

/// 200 when every condition holds, else 503 with one line per failing condition.
pub fn judge(facts: &Facts) -> HealthVerdict {
    verdict_of(&facts.interface, &failing(facts))
}

/// The verdict for these failing conditions of `interface`.
pub fn verdict_of(interface: &str, failing: &[Failing]) -> HealthVerdict {
    if failing.is_empty() {
        HealthVerdict::Healthy(format!("{interface} up"))
    } else {
        HealthVerdict::Unhealthy(failing.iter().map(|f| f.line.clone()).collect())
    }
}

/// Reads the facts now: rtnetlink for the TUN and its addresses, the sockets, nf_tables, the
/// sysctls, the workers' heartbeats, the last self-test.
pub fn observe(state: &ServiceState, data_plane: &DataPlane) -> Facts {
    let name = data_plane.name();
    let tun = match route::link_by_name(name) {
        Ok(Some(link)) if link.up => match route::addresses(link.index) {
            Ok(present) => TunState::Up {
                missing: data_plane
                    .addresses()
                    .iter()
                    .filter(|want| {
                        !present.iter().any(|a| a.address == want.address && a.prefix_len == want.prefix_len)
                    })
                    .copied()
                    .collect(),
            },
            Err(e) => TunState::Unreadable(format!("its addresses: {e}")),
        },
        Ok(Some(_)) => TunState::Down,
        Ok(None) => TunState::Missing,
        Err(e) => TunState::Unreadable(e.to_string()),
    };
    Facts {
        interface: name.to_string(),
        drain_left: state.drain_left(),
        tun,
        udp_bound: data_plane.udp_bound(),
        nat_table: nat::table_present(name).map_err(|e| e.to_string()),
        forwarding_on: nat::forwarding_enabled(state.ipv6),
        ipv6: state.ipv6,
        heartbeat_age: data_plane.heartbeat_age(),
        selftest: state.last_selftest().map(|last| (last.passed, last.line)),
    }
}

/// The verdict now.
pub fn verdict(state: &ServiceState, data_plane: &DataPlane) -> HealthVerdict {
    judge(&observe(state, data_plane))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Facts {
        Facts {
            interface: "wg0".into(),
            drain_left: None,
            tun: TunState::Up { missing: vec![] },
            udp_bound: true,
            nat_table: Ok(true),
            forwarding_on: true,
            ipv6: true,
            heartbeat_age: Duration::from_millis(300),
            selftest: Some((true, "selftest: PASS handshake 1.0 ms".into())),
        }
    }

    #[test]
    fn each_failing_line_is_typed_by_the_condition_it_starts_with() {
        let all_failing = Facts {
            drain_left: Some(Duration::from_secs(3)),
            tun: TunState::Down,
            udp_bound: false,
            nat_table: Ok(false),
            forwarding_on: false,
            heartbeat_age: Duration::from_secs(5),
            selftest: Some((false, "selftest: FAIL no handshake".into())),
            ..healthy()
        };
        let failing = failing(&all_failing);
        let conditions: Vec<Condition> = failing.iter().map(|f| f.condition).collect();
        assert_eq!(conditions, Condition::ALL.to_vec(), "every condition, once, in order");
        for f in &failing {
            assert!(f.line.starts_with(&format!("{}: ", f.condition.name())), "{f:?}");
        }
        assert!(super::failing(&healthy()).is_empty());
    }

    #[test]
    fn every_condition_has_its_line() {
        let address = InterfaceAddress { address: "fd00:100::1".parse().unwrap(), prefix_len: 64 };
        let cases: Vec<(Facts, Vec<&str>)> = vec![
            (
                Facts { drain_left: Some(Duration::from_secs(12)), ..healthy() },
                vec!["draining: shutting down, 12 s left"],
            ),
            (Facts { tun: TunState::Down, ..healthy() }, vec!["tun: wg0 is down"]),
            (Facts { tun: TunState::Missing, ..healthy() }, vec!["tun: wg0 does not exist"]),
            (
                Facts { tun: TunState::Up { missing: vec![address] }, ..healthy() },
                vec!["tun: wg0 has lost its address fd00:100::1/64"],
            ),
            (
                Facts { tun: TunState::Unreadable("EPERM".into()), ..healthy() },
                vec!["tun: cannot read the state of wg0: EPERM"],
            ),
            (Facts { udp_bound: false, ..healthy() }, vec!["udp: the WireGuard socket is not bound"]),
            (Facts { nat_table: Ok(false), ..healthy() }, vec!["nat: table inet bastion-wg0 is missing"]),
            (
                Facts { nat_table: Err("EPERM".into()), ..healthy() },
                vec!["nat: cannot read table inet bastion-wg0: EPERM"],
            ),
            (Facts { forwarding_on: false, ipv6: false, ..healthy() }, vec!["forwarding: net.ipv4.ip_forward is off"]),
            (
                Facts { forwarding_on: false, ..healthy() },
                vec!["forwarding: net.ipv4.ip_forward or net.ipv6.conf.all.forwarding is off"],
            ),
            (
                Facts { heartbeat_age: Duration::from_millis(3100), ..healthy() },
                vec!["event loop: no heartbeat for 3.1 s"],
            ),
            (Facts { selftest: None, ..healthy() }, vec!["selftest: not run yet"]),
            (
                Facts { selftest: Some((false, "selftest: FAIL probe".into())), ..healthy() },
                vec!["selftest: FAIL probe"],
            ),
            // Several at once, in a fixed order.
            (
                Facts { drain_left: Some(Duration::ZERO), udp_bound: false, selftest: None, ..healthy() },
                vec![
                    "draining: shutting down, 0 s left",
                    "udp: the WireGuard socket is not bound",
                    "selftest: not run yet",
                ],
            ),
        ];
        for (facts, lines) in cases {
            let expected = HealthVerdict::Unhealthy(lines.iter().map(|l| l.to_string()).collect());
            assert_eq!(judge(&facts), expected, "{facts:?}");
        }
        assert_eq!(judge(&healthy()), HealthVerdict::Healthy("wg0 up".into()));
        // The limit itself is still alive.
        assert_eq!(judge(&Facts { heartbeat_age: HEARTBEAT_LIMIT, ..healthy() }).status(), 200);
    }
}
