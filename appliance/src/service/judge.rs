//! The health verdict of a running service: every condition read from the kernel and the
//! threads at the moment of the request (nothing remembered), one line per failing condition.

use super::ServiceState;
use crate::health::Verdict;
use crate::nat;
use crate::netlink::route;
use crate::tunnel::DataPlane;
use std::time::Duration;

/// The event loop counts as alive while every worker turned within this long.
const HEARTBEAT_LIMIT: Duration = Duration::from_secs(2);

pub fn judge(state: &ServiceState, data_plane: &DataPlane) -> Verdict {
    let name = data_plane.name();
    let mut failing = Vec::new();
    if let Some(left) = state.drain_left() {
        failing.push(format!("draining: shutting down, {} s left", left.as_secs()));
    }
    match route::link_by_name(name) {
        Ok(Some(link)) if link.up => failing.extend(missing_addresses(data_plane, link.index)),
        Ok(Some(_)) => failing.push(format!("tun: {name} is down")),
        Ok(None) => failing.push(format!("tun: {name} does not exist")),
        Err(e) => failing.push(format!("tun: cannot read the state of {name}: {e}")),
    }
    if !data_plane.udp_bound() {
        failing.push("udp: the WireGuard socket is not bound".into());
    }
    match nat::table_present() {
        Ok(true) => {}
        Ok(false) => failing.push(format!("nat: table inet {} is missing", nat::TABLE)),
        Err(e) => failing.push(format!("nat: cannot read table inet {}: {e}", nat::TABLE)),
    }
    if !nat::forwarding_enabled(state.ipv6) {
        failing.push(if state.ipv6 {
            "forwarding: net.ipv4.ip_forward or net.ipv6.conf.all.forwarding is off".into()
        } else {
            "forwarding: net.ipv4.ip_forward is off".into()
        });
    }
    let age = data_plane.heartbeat_age();
    if age > HEARTBEAT_LIMIT {
        failing.push(format!("event loop: no heartbeat for {:.1} s", age.as_secs_f64()));
    }
    match state.last_selftest() {
        Some(last) if last.passed => {}
        Some(last) => failing.push(last.line),
        None => failing.push("selftest: not run yet".into()),
    }
    if failing.is_empty() {
        Verdict::Healthy(format!("{name} up"))
    } else {
        Verdict::Unhealthy(failing)
    }
}

/// One line per tunnel address the interface no longer carries (someone ran `ip addr del`, or
/// the kernel flushed it).
fn missing_addresses(data_plane: &DataPlane, index: u32) -> Vec<String> {
    let name = data_plane.name();
    let present = match route::addresses(index) {
        Ok(present) => present,
        Err(e) => return vec![format!("tun: cannot read the addresses of {name}: {e}")],
    };
    data_plane
        .addresses()
        .iter()
        .filter(|want| !present.iter().any(|a| a.address == want.address && a.prefix_len == want.prefix_len))
        .map(|want| format!("tun: {name} has lost its address {want}"))
        .collect()
}
