//! TUN offloads, the way wireguard-go and virtio-net use them: with `IFF_VNET_HDR` every TUN
//! read and write carries a virtio-net header ([`vnet`]); with `TUNSETOFFLOAD` the kernel may
//! hand us TCP super-packets and partial checksums, which [`segment`] makes whole before they
//! are sealed, and decrypted TCP segments of one flow are written back as one super-packet
//! ([`coalesce`]). [`checksum`] is the arithmetic both need. All of it is decisions on bytes;
//! the TUN module does the I/O.

pub mod checksum;
pub mod coalesce;
pub mod segment;
pub mod vnet;
