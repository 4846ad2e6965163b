//! The header a TUN opened with `IFF_VNET_HDR` puts before every packet in both directions
//! (Linux's `struct virtio_net_hdr`, 10 bytes, in the host's byte order — little-endian on
//! x86_64 and aarch64): whether the checksum still has to be completed, and whether the packet
//! is a TCP super-packet the kernel cuts into segments of `gso_size` payload bytes.

/// Bytes of the header.
pub const LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` holds only the
/// pseudo-header sum; whoever sends the packet on completes it.
pub const NEEDS_CSUM: u8 = 1;

/// `gso_type` values.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN`, or-ed into the type: the segments carry ECN (CWR).
pub const GSO_ECN: u8 = 0x80;

/// One header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHeader {
    pub flags: u8,
    pub gso_type: u8,
    /// Bytes of the IP and TCP headers of a super-packet.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHeader {
    pub fn encode(&self) -> [u8; LEN] {
        let mut bytes = [0u8; LEN];
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        bytes[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        bytes[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        bytes[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        bytes[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        bytes
    }

    /// The header at the start of `bytes`; `None` when they are shorter than one.
    pub fn decode(bytes: &[u8]) -> Option<VnetHeader> {
        let b = bytes.get(..LEN)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHeader {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_little_endian() {
        let header = VnetHeader {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1368,
            csum_start: 20,
            csum_offset: 16,
        };
        let bytes = header.encode();
        assert_eq!(bytes, [1, 1, 52, 0, 0x58, 0x05, 20, 0, 16, 0]);
        assert_eq!(VnetHeader::decode(&bytes), Some(header));
        assert_eq!(VnetHeader::decode(&bytes[..9]), None);
    }
}
