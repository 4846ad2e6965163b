//! NAT forwarding: turns the config into our own nftables table (masquerade + per-peer forward
//! ACL), installs it idempotently over netlink, reads it back, removes it; and the forwarding
//! sysctls. Only the table named [`TABLE`] in family `inet` is ever touched.

use ip_network::IpNetwork;
use std::fmt;

/// Our table: `table inet bastion`.
pub const TABLE: &str = "bastion";

/// One forward-chain permission: tunnel traffic from `source` (any tunnel source when None) to
/// `destination` is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub source: Option<IpNetwork>,
    pub destination: IpNetwork,
}

/// The whole table, computed from the config before anything touches the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPlan {
    /// The TUN interface (`wg0`).
    pub tunnel: String,
    /// The interface tunnel traffic leaves through toward the private subnets.
    pub egress: String,
    pub masquerade: bool,
    pub allow: Vec<Allow>,
}

#[derive(Debug)]
pub struct NatError(pub String);

impl fmt::Display for NatError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NatError {}

/// Installs the plan as one atomic batch, replacing our table if it exists (a restart after a
/// crash replaces it). Never touches another table.
pub fn install(plan: &NatPlan) -> Result<(), NatError> {
    let _ = plan;
    todo!()
}

/// Removes our table; a missing table is not an error.
pub fn remove() -> Result<(), NatError> {
    todo!()
}

/// Whether our table is in the kernel now (read back over netlink, not remembered).
pub fn table_present() -> Result<bool, NatError> {
    todo!()
}

/// Turns on IPv4 forwarding (and IPv6 when `ipv6`).
pub fn enable_forwarding(ipv6: bool) -> Result<(), NatError> {
    let _ = ipv6;
    todo!()
}

/// Whether IPv4 forwarding (and IPv6 when `ipv6`) is on now.
pub fn forwarding_enabled(ipv6: bool) -> bool {
    let _ = ipv6;
    todo!()
}
