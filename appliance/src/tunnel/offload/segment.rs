//! Packets read from the TUN with their virtio-net header, made whole (the read half of TUN
//! offloads): with TSO offered, the kernel hands over a TCP super-packet of up to 64 KiB instead
//! of its segments, and with checksum offload a packet whose checksum holds only the
//! pseudo-header sum. Here a super-packet is cut into the segments it stands for, as the
//! kernel's own TCP segmentation does (sequence numbers advanced, IPv4 identifiers counted up
//! from the first, PSH and FIN on the last segment only, CWR on the first only, every checksum
//! complete), and a partial checksum is completed.
//!
//! Segments are cut in place, as wireguard-go does: segment i's headers are written over the last
//! bytes of segment i-1's payload, which the caller's closure has sealed by then, so nothing is
//! copied. Decisions only (sans-I/O): each packet goes to the caller's closure, in order.

use super::checksum;
use super::vnet::{self, VnetHeader};

const TCP_PROTOCOL: u8 = 6;
const FLAG_FIN: u8 = 0x01;
const FLAG_PSH: u8 = 0x08;
const FLAG_CWR: u8 = 0x80;

/// Why a packet read from the TUN could not be made whole (the kernel's own packets always
/// can: these mean a bug, counted as dropped TUN packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// The checksum offsets point outside the packet.
    ChecksumOutside,
    /// A super-packet that is not TCP over IPv4 or IPv6 without extension headers or options
    /// we can read.
    NotTcp,
    /// A super-packet type we did not offer (UDP segmentation).
    UnknownGsoType(u8),
    /// A segment size of zero.
    NoSegmentSize,
}

/// Makes `packet` (as read, after its virtio header `header`) whole and hands each resulting
/// IP packet to `each`; returns how many (more than one: it was a super-packet). The bytes of
/// `packet` are overwritten on the way (see the module comment).
pub fn make_whole(
    header: VnetHeader,
    packet: &mut [u8],
    each: &mut (impl FnMut(&[u8]) + ?Sized),
) -> Result<usize, Unfit> {
    match header.gso_type & !vnet::GSO_ECN {
        vnet::GSO_NONE => {
            if header.flags & vnet::NEEDS_CSUM != 0 {
                complete_checksum(header, packet)?;
            }
            each(packet);
            Ok(1)
        }
        vnet::GSO_TCPV4 | vnet::GSO_TCPV6 => segment_in_place(header, packet, each),
        other => Err(Unfit::UnknownGsoType(other)),
    }
}

/// Fills in the checksum the kernel left for us: the field holds the pseudo-header sum, so the
/// sum from `csum_start` on, field included, is the whole sum.
fn complete_checksum(header: VnetHeader, packet: &mut [u8]) -> Result<(), Unfit> {
    let start = header.csum_start as usize;
    let at = start + header.csum_offset as usize;
    if at + 2 > packet.len() {
        return Err(Unfit::ChecksumOutside);
    }
    let value = checksum::checksum(&packet[start..], 0);
    packet[at..at + 2].copy_from_slice(&value.to_be_bytes());
    Ok(())
}

/// Cuts a TCP super-packet into its segments (see the module comment), leaving `packet` as it
/// is; for tests.
#[cfg(test)]
pub fn segment_super_packet(header: VnetHeader, packet: &[u8], each: &mut impl FnMut(&[u8])) -> Result<usize, Unfit> {
    segment_in_place(header, &mut packet.to_vec(), each)
}

/// IP and TCP headers: 60 + 60 bytes at most.
const MAX_HEADERS: usize = 120;

fn segment_in_place(
    header: VnetHeader,
    packet: &mut [u8],
    each: &mut (impl FnMut(&[u8]) + ?Sized),
) -> Result<usize, Unfit> {
    let mss = header.gso_size as usize;
    if mss == 0 {
        return Err(Unfit::NoSegmentSize);
    }
    let (v6, ip_len) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 && packet[9] == TCP_PROTOCOL => (false, ((packet[0] & 0x0f) as usize) * 4),
        Some(6) if packet.len() >= 40 && packet[6] == TCP_PROTOCOL => (true, 40),
        _ => return Err(Unfit::NotTcp),
    };
    let tcp_len = match packet.get(ip_len + 12) {
        Some(offset) if ip_len >= 20 => ((offset >> 4) as usize) * 4,
        _ => return Err(Unfit::NotTcp),
    };
    let headers = ip_len + tcp_len;
    if tcp_len < 20 || headers > packet.len() || headers > MAX_HEADERS {
        return Err(Unfit::NotTcp);
    }
    let mut original = [0u8; MAX_HEADERS];
    original[..headers].copy_from_slice(&packet[..headers]);
    let original = &original[..headers];
    let payload_len = packet.len() - headers;
    let first_seq = u32::from_be_bytes(original[ip_len + 4..ip_len + 8].try_into().expect("4 bytes"));
    let first_id = u16::from_be_bytes([original[4], original[5]]);
    let flags = original[ip_len + 13];
    let count = payload_len.div_ceil(mss).max(1);
    for i in 0..count {
        let chunk_len = payload_len.saturating_sub(i * mss).min(mss);
        // Segment i starts `i * mss` in: its payload stays where it is, its headers go just
        // before it (over the end of segment i-1's payload, sealed by now).
        let start = i * mss;
        let segment = &mut packet[start..start + headers + chunk_len];
        segment[..headers].copy_from_slice(original);
        if v6 {
            segment[4..6].copy_from_slice(&((tcp_len + chunk_len) as u16).to_be_bytes());
        } else {
            segment[2..4].copy_from_slice(&((headers + chunk_len) as u16).to_be_bytes());
            segment[4..6].copy_from_slice(&first_id.wrapping_add(i as u16).to_be_bytes());
            segment[10..12].fill(0);
            let ip_checksum = checksum::checksum(&segment[..ip_len], 0);
            segment[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
        }
        let tcp = &mut segment[ip_len..];
        tcp[4..8].copy_from_slice(&first_seq.wrapping_add((i * mss) as u32).to_be_bytes());
        let mut segment_flags = flags;
        if i + 1 < count {
            segment_flags &= !(FLAG_FIN | FLAG_PSH);
        }
        if i > 0 {
            segment_flags &= !FLAG_CWR;
        }
        tcp[13] = segment_flags;
        tcp[16..18].fill(0);
        let (source, destination) =
            if v6 { (&original[8..24], &original[24..40]) } else { (&original[12..16], &original[16..20]) };
        let pseudo = checksum::pseudo_header(source, destination, TCP_PROTOCOL, tcp_len + chunk_len);
        let tcp_checksum = checksum::checksum(&segment[ip_len..], pseudo);
        segment[ip_len + 16..ip_len + 18].copy_from_slice(&tcp_checksum.to_be_bytes());
        each(segment);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::super::coalesce::tests::{tcp_v4, tcp_v6};
    use super::*;

    fn super_packet(v6: bool, mss: u16) -> (VnetHeader, Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut packet =
            if v6 { tcp_v6(77, 0x18 | FLAG_CWR, &data) } else { tcp_v4(77, 0x18 | FLAG_CWR, &data, 40000) };
        // As the kernel hands it over: lengths of the whole, the checksum only partial.
        let ip_len = if v6 { 40 } else { 20 };
        packet[ip_len + 16..ip_len + 18].fill(0xaa);
        let header = VnetHeader {
            flags: vnet::NEEDS_CSUM,
            gso_type: if v6 { vnet::GSO_TCPV6 } else { vnet::GSO_TCPV4 },
            hdr_len: (ip_len + 20) as u16,
            gso_size: mss,
            csum_start: ip_len as u16,
            csum_offset: 16,
        };
        (header, packet, data)
    }

    #[test]
    fn a_super_packet_becomes_segments_the_receiver_accepts() {
        for v6 in [false, true] {
            let (header, packet, data) = super_packet(v6, 1_380);
            let mut segments = Vec::new();
            let count = segment_super_packet(header, &packet, &mut |s: &[u8]| segments.push(s.to_vec())).unwrap();
            assert_eq!((segments.len(), count), (8, 8), "10,000 bytes in 1,380-byte segments");
            let ip_len = if v6 { 40 } else { 20 };
            let mut joined = Vec::new();
            for (i, s) in segments.iter().enumerate() {
                let pseudo = checksum::pseudo_header(
                    if v6 { &s[8..24] } else { &s[12..16] },
                    if v6 { &s[24..40] } else { &s[16..20] },
                    TCP_PROTOCOL,
                    s.len() - ip_len,
                );
                assert!(checksum::verifies(&s[ip_len..], pseudo), "segment {i}'s TCP checksum");
                if !v6 {
                    assert!(checksum::verifies(&s[..20], 0), "segment {i}'s IP checksum");
                    assert_eq!(u16::from_be_bytes([s[2], s[3]]) as usize, s.len());
                    assert_eq!(u16::from_be_bytes([s[4], s[5]]), u16::from_be_bytes([packet[4], packet[5]]) + i as u16);
                } else {
                    assert_eq!(u16::from_be_bytes([s[4], s[5]]) as usize, s.len() - 40);
                }
                let seq = u32::from_be_bytes(s[ip_len + 4..ip_len + 8].try_into().unwrap());
                assert_eq!(seq, 77 + (i * 1_380) as u32);
                let flags = s[ip_len + 13];
                assert_eq!(flags & FLAG_PSH != 0, i == 7, "PSH on the last only");
                assert_eq!(flags & FLAG_CWR != 0, i == 0, "CWR on the first only");
                joined.extend_from_slice(&s[ip_len + 20..]);
            }
            assert_eq!(joined, data);
        }
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut packet = tcp_v4(1, 0x10, b"hello", 40000);
        let right = packet[36..38].to_vec();
        // The kernel leaves the pseudo-header sum in the field.
        let pseudo = checksum::fold(checksum::pseudo_header(&packet[12..16], &packet[16..20], TCP_PROTOCOL, 25));
        packet[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let header = VnetHeader { flags: vnet::NEEDS_CSUM, csum_start: 20, csum_offset: 16, ..VnetHeader::default() };
        let mut seen = Vec::new();
        make_whole(header, &mut packet, &mut |p: &[u8]| seen.push(p.to_vec())).unwrap();
        assert_eq!(seen[0][36..38], right[..]);
    }

    #[test]
    fn nonsense_from_the_kernel_is_refused_not_a_panic() {
        let (header, mut packet, _) = super_packet(false, 1_380);
        let mut none = |_: &[u8]| panic!("nothing should come out");
        let outside = VnetHeader { gso_type: vnet::GSO_NONE, csum_start: 60_000, ..header };
        assert_eq!(make_whole(outside, &mut packet, &mut none), Err(Unfit::ChecksumOutside));
        let udp = VnetHeader { gso_type: 5, ..header };
        assert_eq!(make_whole(udp, &mut packet, &mut none), Err(Unfit::UnknownGsoType(5)));
        let zero = VnetHeader { gso_size: 0, ..header };
        assert_eq!(make_whole(zero, &mut packet, &mut none), Err(Unfit::NoSegmentSize));
        for len in 0..60 {
            let _ = make_whole(header, &mut packet[..len].to_vec(), &mut |_| {});
        }
    }
}
