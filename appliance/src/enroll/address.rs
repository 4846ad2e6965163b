//! The new peer's tunnel addresses: in each tunnel network of `[interface] address` (IPv4 and
//! IPv6), the lowest host address that is not the bastion's own, not the self-test client's,
//! and not inside any peer's `allowed_ips`, as a /32 or /128.

use crate::config::{lowest_free, Config};
use ip_network::IpNetwork;

/// One host network per tunnel network, in the order of `[interface] address`; or why there is
/// none (a full network).
pub fn choose(config: &Config) -> Result<Vec<IpNetwork>, String> {
    let mut taken: Vec<IpNetwork> = config.peers.iter().flat_map(|p| p.allowed_ips.iter().copied()).collect();
    taken.extend(config.interface.addresses.iter().map(|a| IpNetwork::from(a.address)));
    taken.push(IpNetwork::from(config.selftest.address));
    let mut chosen = Vec::new();
    for net in config.interface.addresses.iter().map(|a| a.network()) {
        // Two interface addresses on one network (allowed) give the peer one address there.
        if chosen.iter().any(|c: &IpNetwork| net.contains(c.network_address())) {
            continue;
        }
        let Some(ip) = lowest_free(&net, &taken) else {
            return Err(format!(
                "no free address in the tunnel network {net}: every host address is the bastion's, the \
                 self-test's or inside a peer's allowed_ips; expected a wider prefix in interface.address, \
                 or remove a peer first"
            ));
        };
        let host = IpNetwork::from(ip);
        taken.push(host);
        chosen.push(host);
    }
    Ok(chosen)
}
