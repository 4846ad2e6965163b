//! Netlink from the binary itself: rtnetlink for links, addresses and routes; nfnetlink for
//! nftables. No `ip`, `nft` or `iptables` binaries are used at run time.
//!
//! `route` speaks rtnetlink (NETLINK_ROUTE); `nftables` encodes nf_tables batches
//! (NETLINK_NETFILTER). Both report errors as `io::Error` whose message says what was being
//! done ("set mtu of wg0 to 1420: Operation not permitted").

pub mod route;
