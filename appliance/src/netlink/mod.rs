//! Netlink from the binary itself: rtnetlink for links, addresses and routes; nfnetlink for
//! nftables. No `ip`, `nft` or `iptables` binaries are used at run time.
//!
//! `route` speaks rtnetlink (NETLINK_ROUTE); `nftables` encodes nf_tables batches
//! (NETLINK_NETFILTER). Both report errors as `io::Error` whose message says what was being
//! done ("set mtu of link 7 (wg0) to 1420: Operation not permitted"). `message` is the wire
//! format they share and `socket` the conversation with the kernel; neither is public.
//!
//! Everything acts on the network namespace of the calling thread.

pub(crate) mod message;
pub mod nftables;
pub mod route;
mod socket;
