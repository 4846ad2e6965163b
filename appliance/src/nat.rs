//! NAT forwarding: turns the config into our own nftables table (masquerade + per-peer forward
//! ACL), installs it idempotently over netlink, reads it back, removes it; and the forwarding
//! sysctls.
