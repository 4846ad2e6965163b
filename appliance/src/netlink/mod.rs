//! Netlink from the binary itself: rtnetlink for links, addresses and routes; nfnetlink for
//! nftables. No `ip`, `nft` or `iptables` binaries are used at run time.
