//! Decrypted packets on their way to the TUN, gathered for one batch and written as few times
//! as possible (the write half of TUN offloads, what the kernel's GRO does for a NIC): the
//! consecutive TCP segments of one flow become one super-packet with a virtio-net header that
//! tells the kernel to treat it as the segments it was (`GSO_TCPV4`/`GSO_TCPV6`, checksum to be
//! completed). A bulk upload then costs one TUN write per batch instead of one per packet.
//!
//! Decisions only (sans-I/O): [`TunWrites::flush`] hands each write to the caller as I/O slices
//! (the virtio header and first packet, then the payloads of the segments that joined it), in
//! the order the groups began, so a flow's packets keep their order.
//!
//! A segment joins its flow's open group only when the kernel would have merged it too: plain
//! ACK data (PSH only on the last), no IP options or fragments, the same addresses, ports, TOS
//! or traffic class, TTL, ACK number, window and TCP options, the next sequence number, no
//! bigger than the first, and a right checksum (a wrong one is passed on alone for the kernel to
//! drop). Everything else goes out as it came, one write each.

use super::checksum;
use super::vnet::{self, VnetHeader};
use std::io::IoSlice;

/// IP packet bytes of one super-packet at most (IPv4's total length field).
const MAX_SUPER_PACKET: usize = 65_535;
/// Segments per super-packet at most.
const MAX_SEGMENTS: usize = 64;

const TCP_PROTOCOL: u8 = 6;
const FLAG_PSH: u8 = 0x08;
const FLAG_ACK: u8 = 0x10;
/// The TCP checksum's offset in the TCP header.
const TCP_CHECKSUM_AT: usize = 16;

/// What a TCP packet is, read from its headers.
#[derive(Debug, Clone, Copy)]
struct Segment {
    v6: bool,
    ip_len: usize,
    tcp_len: usize,
    seq: u32,
    flags: u8,
    payload_len: usize,
    /// Whether it may be merged with others at all (see the module comment).
    mergeable: bool,
}

impl Segment {
    fn read(packet: &[u8]) -> Option<Segment> {
        let (v6, ip_len, mergeable_ip) = match packet.first()? >> 4 {
            4 => {
                let ip_len = ((packet[0] & 0x0f) as usize) * 4;
                if packet.len() < 20 || packet[9] != TCP_PROTOCOL || ip_len < 20 {
                    return None;
                }
                let total = u16::from_be_bytes([packet[2], packet[3]]) as usize;
                // Don't-fragment and nothing else: no fragment, no more-fragments.
                let fragment_field = u16::from_be_bytes([packet[6], packet[7]]);
                (false, ip_len, ip_len == 20 && total == packet.len() && fragment_field == 0x4000)
            }
            6 => {
                if packet.len() < 40 || packet[6] != TCP_PROTOCOL {
                    return None;
                }
                let payload = u16::from_be_bytes([packet[4], packet[5]]) as usize;
                (true, 40, payload + 40 == packet.len())
            }
            _ => return None,
        };
        let tcp = packet.get(ip_len..ip_len + 20)?;
        let tcp_len = ((tcp[12] >> 4) as usize) * 4;
        if tcp_len < 20 || ip_len + tcp_len > packet.len() {
            return None;
        }
        let flags = tcp[13];
        let payload_len = packet.len() - ip_len - tcp_len;
        let plain_data = flags & !(FLAG_ACK | FLAG_PSH) == 0 && flags & FLAG_ACK != 0 && payload_len > 0;
        let mut segment = Segment {
            v6,
            ip_len,
            tcp_len,
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            flags,
            payload_len,
            mergeable: mergeable_ip && plain_data,
        };
        segment.mergeable = segment.mergeable && checksum::verifies(&packet[ip_len..], segment.pseudo_header(packet));
        Some(segment)
    }

    fn addresses<'a>(&self, packet: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        if self.v6 {
            (&packet[8..24], &packet[24..40])
        } else {
            (&packet[12..16], &packet[16..20])
        }
    }

    /// The pseudo-header sum for a TCP segment of `packet`'s addresses and its own length.
    fn pseudo_header(&self, packet: &[u8]) -> u64 {
        let (source, destination) = self.addresses(packet);
        checksum::pseudo_header(source, destination, TCP_PROTOCOL, packet.len() - self.ip_len)
    }

    /// Same addresses and ports: one TCP connection's packets, whose order must be kept.
    fn same_flow(&self, packet: &[u8], other: &Segment, other_packet: &[u8]) -> bool {
        self.v6 == other.v6
            && self.addresses(packet) == other.addresses(other_packet)
            && packet[self.ip_len..self.ip_len + 4] == other_packet[other.ip_len..other.ip_len + 4]
    }

    /// Whether `other` (of the same flow) carries headers the kernel would merge with ours.
    fn same_headers(&self, packet: &[u8], other: &Segment, other_packet: &[u8]) -> bool {
        let ip_alike = if self.v6 {
            packet[0..4] == other_packet[0..4] && packet[7] == other_packet[7]
        } else {
            packet[1] == other_packet[1] && packet[8] == other_packet[8]
        };
        let (tcp, other_tcp) = (&packet[self.ip_len..], &other_packet[other.ip_len..]);
        ip_alike
            && self.tcp_len == other.tcp_len
            // ACK number, data offset, window.
            && tcp[8..13] == other_tcp[8..13]
            && tcp[14..16] == other_tcp[14..16]
            && tcp[20..self.tcp_len] == other_tcp[20..other.tcp_len]
    }
}

/// One packet in the arena: `LEN` bytes of room for a virtio header, then the packet.
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: usize,
    len: usize,
    /// Where the TCP payload begins in the packet (0 when not TCP).
    payload_at: usize,
    /// The next slot of the same group.
    next: Option<usize>,
}

/// A TCP group's state: the segments that joined the first one.
#[derive(Debug, Clone, Copy)]
struct TcpGroup {
    first: Segment,
    /// Another segment may still join.
    open: bool,
    next_seq: u32,
    count: usize,
    payload_bytes: usize,
    /// The last segment had PSH: the super-packet carries it.
    push: bool,
}

/// One write: a packet alone, or a TCP group.
#[derive(Debug, Clone, Copy)]
struct Group {
    head: usize,
    tail: usize,
    tcp: Option<TcpGroup>,
}

/// What one flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    pub packets: usize,
    pub writes: usize,
    /// Writes that stood for more than one segment, and how many segments they held.
    pub super_packets: usize,
    pub merged_segments: usize,
}

/// The packets of one batch bound for the TUN.
pub struct TunWrites {
    /// Every write starts with a virtio header (the TUN was opened with `IFF_VNET_HDR`).
    header: bool,
    /// TCP segments of a flow are merged (needs `header`).
    coalesce: bool,
    /// Packets behind room for their virtio headers; only `used` bytes hold this batch. It is
    /// not cleared between batches, so a packet can be decrypted straight into it ([`Self::room`]).
    arena: Vec<u8>,
    used: usize,
    slots: Vec<Slot>,
    groups: Vec<Group>,
}

impl TunWrites {
    /// `coalesce` counts only with `header`.
    pub fn new(header: bool, coalesce: bool) -> TunWrites {
        TunWrites {
            header,
            coalesce: coalesce && header,
            arena: vec![0; 128 * 1024],
            used: 0,
            slots: Vec::new(),
            groups: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn packet(&self, slot: usize) -> &[u8] {
        let s = &self.slots[slot];
        &self.arena[s.start + vnet::LEN..s.start + vnet::LEN + s.len]
    }

    /// Takes one packet (copied): the tests' way in; the data plane decrypts into
    /// [`Self::room`].
    #[cfg(test)]
    pub fn push(&mut self, packet: &[u8]) {
        self.room(packet.len())[..packet.len()].copy_from_slice(packet);
        self.take_room(0, packet.len());
    }

    /// Room for the next packet, `len` bytes at least, to decrypt into: [`Self::take_room`]
    /// takes what was written there, saving the copy [`Self::push`] makes; what is not taken is
    /// forgotten.
    pub fn room(&mut self, len: usize) -> &mut [u8] {
        let start = self.used + vnet::LEN;
        if self.arena.len() < start + len {
            self.arena.resize(start + len, 0);
        }
        &mut self.arena[start..start + len]
    }

    /// Takes the packet written into [`Self::room`] at `offset`, `len` bytes.
    pub fn take_room(&mut self, offset: usize, len: usize) {
        let start = self.used;
        let at = start + vnet::LEN;
        assert!(at + offset + len <= self.arena.len(), "a packet outside the room");
        if offset > 0 {
            self.arena.copy_within(at + offset..at + offset + len, at);
        }
        self.arena[start..at].fill(0);
        self.used = at + len;
        let packet = &self.arena[at..at + len];
        let slot = self.slots.len();
        let segment = if self.coalesce { Segment::read(packet) } else { None };
        self.slots.push(Slot {
            start,
            len: packet.len(),
            payload_at: segment.map_or(0, |s| s.ip_len + s.tcp_len),
            next: None,
        });
        let Some(segment) = segment else {
            self.groups.push(Group { head: slot, tail: slot, tcp: None });
            return;
        };
        // The flow's latest group, if still open, is the only one a segment may join.
        let latest = self
            .groups
            .iter()
            .rposition(|g| g.tcp.is_some_and(|t| t.open && t.first.same_flow(self.packet(g.head), &segment, packet)));
        if let Some(index) = latest {
            if self.joins(index, &segment, packet) {
                let group = &mut self.groups[index];
                self.slots[group.tail].next = Some(slot);
                group.tail = slot;
                let tcp = group.tcp.as_mut().expect("a TCP group");
                tcp.next_seq = tcp.next_seq.wrapping_add(segment.payload_len as u32);
                tcp.count += 1;
                tcp.payload_bytes += segment.payload_len;
                tcp.push = segment.flags & FLAG_PSH != 0;
                tcp.open = !tcp.push && segment.payload_len == tcp.first.payload_len;
                return;
            }
            if let Some(tcp) = self.groups[index].tcp.as_mut() {
                tcp.open = false;
            }
        }
        let open = segment.mergeable && segment.flags & FLAG_PSH == 0;
        self.groups.push(Group {
            head: slot,
            tail: slot,
            tcp: Some(TcpGroup {
                first: segment,
                open,
                next_seq: segment.seq.wrapping_add(segment.payload_len as u32),
                count: 1,
                payload_bytes: segment.payload_len,
                push: false,
            }),
        });
    }

    fn joins(&self, index: usize, segment: &Segment, packet: &[u8]) -> bool {
        let group = &self.groups[index];
        let Some(tcp) = group.tcp else { return false };
        let first = tcp.first;
        segment.mergeable
            && segment.seq == tcp.next_seq
            && segment.payload_len <= first.payload_len
            && tcp.count < MAX_SEGMENTS
            && first.ip_len + first.tcp_len + tcp.payload_bytes + segment.payload_len <= MAX_SUPER_PACKET
            && first.same_headers(self.packet(group.head), segment, packet)
    }

    /// Rewrites a group's first packet into the super-packet's headers and its virtio header.
    fn finish_super_packet(&mut self, group: Group, tcp: TcpGroup) {
        let first = tcp.first;
        let slot = self.slots[group.head];
        let tcp_bytes = first.tcp_len + tcp.payload_bytes;
        let packet = &mut self.arena[slot.start + vnet::LEN..slot.start + vnet::LEN + slot.len];
        if first.v6 {
            packet[4..6].copy_from_slice(&(tcp_bytes as u16).to_be_bytes());
        } else {
            packet[2..4].copy_from_slice(&((first.ip_len + tcp_bytes) as u16).to_be_bytes());
            packet[10..12].copy_from_slice(&[0, 0]);
            let ip_checksum = checksum::checksum(&packet[..first.ip_len], 0);
            packet[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
        }
        if tcp.push {
            packet[first.ip_len + 13] |= FLAG_PSH;
        }
        let (source, destination) = first.addresses(packet);
        let pseudo = checksum::fold(checksum::pseudo_header(source, destination, TCP_PROTOCOL, tcp_bytes));
        let at = first.ip_len + TCP_CHECKSUM_AT;
        packet[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
        let header = VnetHeader {
            flags: vnet::NEEDS_CSUM,
            gso_type: if first.v6 { vnet::GSO_TCPV6 } else { vnet::GSO_TCPV4 },
            hdr_len: (first.ip_len + first.tcp_len) as u16,
            gso_size: first.payload_len as u16,
            csum_start: first.ip_len as u16,
            csum_offset: TCP_CHECKSUM_AT as u16,
        };
        self.arena[slot.start..slot.start + vnet::LEN].copy_from_slice(&header.encode());
    }

    /// Hands every write to `write`, in order, and empties the batch.
    pub fn flush(&mut self, write: &mut impl FnMut(&[IoSlice<'_>])) -> Flushed {
        for index in 0..self.groups.len() {
            let group = self.groups[index];
            if let Some(tcp) = group.tcp.filter(|t| t.count > 1) {
                self.finish_super_packet(group, tcp);
            }
        }
        let mut flushed = Flushed::default();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_SEGMENTS + 1);
        for group in &self.groups {
            slices.clear();
            let head = self.slots[group.head];
            let from = if self.header { head.start } else { head.start + vnet::LEN };
            slices.push(IoSlice::new(&self.arena[from..head.start + vnet::LEN + head.len]));
            flushed.packets += 1;
            let mut next = head.next;
            while let Some(slot) = next {
                let s = self.slots[slot];
                slices.push(IoSlice::new(&self.arena[s.start + vnet::LEN + s.payload_at..s.start + vnet::LEN + s.len]));
                flushed.packets += 1;
                next = s.next;
            }
            write(&slices);
            flushed.writes += 1;
            if slices.len() > 1 {
                flushed.super_packets += 1;
                flushed.merged_segments += slices.len();
            }
        }
        self.used = 0;
        self.slots.clear();
        self.groups.clear();
        flushed
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::segment::segment_super_packet;
    use super::*;

    /// A TCP/IPv4 packet with a right checksum (DF set, no options unless given).
    pub(crate) fn tcp_v4(seq: u32, flags: u8, payload: &[u8], sport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = TCP_PROTOCOL;
        p[12..16].copy_from_slice(&[10, 44, 0, 2]);
        p[16..20].copy_from_slice(&[192, 0, 2, 80]);
        let ip_checksum = checksum::checksum(&p[..20], 0);
        p[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&5201u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&7u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p[34..36].copy_from_slice(&502u16.to_be_bytes());
        p.extend_from_slice(payload);
        set_tcp_checksum(&mut p, 20);
        p
    }

    pub(crate) fn tcp_v6(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p[6] = TCP_PROTOCOL;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0xfd, 0x44, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p[24..40].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x50]);
        p[40..42].copy_from_slice(&40000u16.to_be_bytes());
        p[42..44].copy_from_slice(&5201u16.to_be_bytes());
        p[44..48].copy_from_slice(&seq.to_be_bytes());
        p[48..52].copy_from_slice(&9u32.to_be_bytes());
        p[52] = 5 << 4;
        p[53] = flags;
        p[54..56].copy_from_slice(&300u16.to_be_bytes());
        p.extend_from_slice(payload);
        set_tcp_checksum(&mut p, 40);
        p
    }

    fn set_tcp_checksum(p: &mut [u8], ip_len: usize) {
        p[ip_len + 16..ip_len + 18].copy_from_slice(&[0, 0]);
        let segment =
            Segment { v6: ip_len == 40, ip_len, tcp_len: 20, seq: 0, flags: 0, payload_len: 0, mergeable: false };
        let sum = checksum::checksum(&p[ip_len..], segment.pseudo_header(p));
        p[ip_len + 16..ip_len + 18].copy_from_slice(&sum.to_be_bytes());
    }

    fn payload(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Every write of a flush, as bytes.
    fn written(writes: &mut TunWrites) -> (Vec<Vec<u8>>, Flushed) {
        let mut out = Vec::new();
        let flushed = writes
            .flush(&mut |slices: &[IoSlice<'_>]| out.push(slices.iter().flat_map(|s| s.iter().copied()).collect()));
        (out, flushed)
    }

    /// What the kernel makes of one write: the packets it stands for.
    fn as_kernel_sees(write: &[u8]) -> Vec<Vec<u8>> {
        let header = VnetHeader::decode(write).unwrap();
        let packet = &write[vnet::LEN..];
        if header.gso_type == vnet::GSO_NONE {
            assert_eq!(header, VnetHeader::default());
            return vec![packet.to_vec()];
        }
        let mut out = Vec::new();
        segment_super_packet(header, packet, &mut |segment: &[u8]| out.push(segment.to_vec())).unwrap();
        out
    }

    #[test]
    fn a_bulk_run_becomes_one_write_that_stands_for_the_same_segments() {
        for v6 in [false, true] {
            let make =
                |seq, flags, data: &[u8]| if v6 { tcp_v6(seq, flags, data) } else { tcp_v4(seq, flags, data, 40000) };
            let mut packets = Vec::new();
            let mut seq = 1_000u32.wrapping_sub(3_000); // crosses the 32-bit wrap
            for i in 0..5 {
                let data = payload(1_368, i);
                let flags = if i == 4 { FLAG_ACK | FLAG_PSH } else { FLAG_ACK };
                packets.push(make(seq, flags, &data[..if i == 4 { 500 } else { 1_368 }]));
                seq = seq.wrapping_add(if i == 4 { 500 } else { 1_368 });
            }
            let mut writes = TunWrites::new(true, true);
            for p in &packets {
                writes.push(p);
            }
            let (out, flushed) = written(&mut writes);
            assert_eq!(flushed, Flushed { packets: 5, writes: 1, super_packets: 1, merged_segments: 5 });
            let header = VnetHeader::decode(&out[0]).unwrap();
            assert_eq!(header.gso_type, if v6 { vnet::GSO_TCPV6 } else { vnet::GSO_TCPV4 });
            assert_eq!((header.flags, header.gso_size), (vnet::NEEDS_CSUM, 1_368));
            assert_eq!(out[0].len(), vnet::LEN + packets[0].len() + 3 * 1_368 + 500);
            // Cut as the kernel cuts it, the super-packet gives back the segments byte for byte
            // (IPv4 identifiers aside: the kernel numbers them from the first).
            let mut again = as_kernel_sees(&out[0]);
            let mut expected = packets.clone();
            if !v6 {
                for (i, (a, b)) in again.iter_mut().zip(expected.iter_mut()).enumerate() {
                    assert_eq!(
                        u16::from_be_bytes([a[4], a[5]]),
                        u16::from_be_bytes([packets[0][4], packets[0][5]]) + i as u16
                    );
                    a[4..6].fill(0);
                    a[10..12].fill(0);
                    b[4..6].fill(0);
                    b[10..12].fill(0);
                }
            }
            assert_eq!(again, expected, "v6: {v6}");
        }
    }

    #[test]
    fn what_the_kernel_would_not_merge_goes_alone_and_in_order() {
        let a = payload(1_000, 1);
        let p0 = tcp_v4(100, FLAG_ACK, &a, 40000);
        // Another flow in between is fine; its packets form their own group.
        let other = tcp_v4(5, FLAG_ACK, &a, 40001);
        let p1 = tcp_v4(1_100, FLAG_ACK, &a, 40000);
        // A gap in sequence starts a new group.
        let gap = tcp_v4(9_000, FLAG_ACK, &a, 40000);
        // A FIN ends the flow's group and goes alone; what follows it never joins an earlier one.
        let fin = tcp_v4(10_000, FLAG_ACK | 0x01, &a, 40000);
        let after = tcp_v4(11_000, FLAG_ACK, &a, 40000);
        // A wrong checksum is never merged.
        let mut bad = tcp_v4(12_000, FLAG_ACK, &a, 40000);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        // Not TCP at all.
        let mut udp = tcp_v4(0, 0, &a, 1);
        udp[9] = 17;
        let larger = tcp_v4(13_000, FLAG_ACK, &payload(1_200, 2), 40000);
        let mut writes = TunWrites::new(true, true);
        for p in [&p0, &other, &p1, &gap, &fin, &after, &bad, &udp, &larger] {
            writes.push(p);
        }
        let (out, flushed) = written(&mut writes);
        assert_eq!(flushed, Flushed { packets: 9, writes: 8, super_packets: 1, merged_segments: 2 });
        let seen: Vec<Vec<u8>> = out.iter().flat_map(|w| as_kernel_sees(w)).collect();
        let lengths: Vec<usize> = out.iter().map(|w| w.len() - vnet::LEN).collect();
        assert_eq!(lengths[0], 40 + 2_000, "p0 and p1 merged");
        let order = |p: &Vec<u8>| seen.iter().position(|s| s[24..28] == p[24..28] && s[20..22] == p[20..22]).unwrap();
        let positions: Vec<usize> = [&p0, &p1, &gap, &fin, &after, &bad, &larger].iter().map(|p| order(p)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "one flow's order kept: {positions:?}");
        assert!(seen.contains(&bad), "the bad packet goes on unchanged for the kernel to drop");
        assert!(seen.contains(&udp));
    }

    #[test]
    fn without_coalescing_every_packet_goes_alone_with_or_without_a_header() {
        let a = payload(1_000, 1);
        let packets = [tcp_v4(100, FLAG_ACK, &a, 40000), tcp_v4(1_100, FLAG_ACK, &a, 40000)];
        for header in [false, true] {
            let mut writes = TunWrites::new(header, false);
            for p in &packets {
                writes.push(p);
            }
            let (out, flushed) = written(&mut writes);
            assert_eq!(flushed, Flushed { packets: 2, writes: 2, ..Flushed::default() });
            let room = if header { vnet::LEN } else { 0 };
            let bare: Vec<Vec<u8>> = out.iter().map(|w| w[room..].to_vec()).collect();
            assert_eq!(bare, packets.to_vec());
            assert!(out.iter().all(|w| w[..room].iter().all(|&b| b == 0)), "a zero header: nothing to do");
            assert!(writes.is_empty());
        }
    }

    #[test]
    fn packets_decrypted_into_the_room_are_written_as_if_pushed() {
        let a = payload(1_000, 1);
        let packets = [tcp_v4(100, FLAG_ACK, &a, 40000), tcp_v4(1_100, FLAG_ACK, &a, 40000), tcp_v4(7, 0, &a, 1)];
        let mut pushed = TunWrites::new(true, true);
        let mut roomed = TunWrites::new(true, true);
        // The arena is reused: a first batch leaves a super-packet's header where the next
        // batch's lone packet goes, and room that is never taken holds garbage.
        for writes in [&mut pushed, &mut roomed] {
            writes.push(&packets[0]);
            writes.push(&packets[1]);
            assert_eq!(written(writes).1.super_packets, 1);
        }
        roomed.room(2_000).fill(0xee);
        for (i, p) in packets.iter().enumerate() {
            pushed.push(p);
            let offset = i * 16;
            roomed.room(offset + p.len())[offset..offset + p.len()].copy_from_slice(p);
            roomed.take_room(offset, p.len());
        }
        roomed.room(70_000).fill(0xee);
        let (from_room, flushed) = written(&mut roomed);
        assert_eq!(from_room, written(&mut pushed).0);
        assert_eq!(flushed, Flushed { packets: 3, writes: 2, super_packets: 1, merged_segments: 2 });
        assert_eq!(from_room.iter().flat_map(|w| as_kernel_sees(w)).count(), 3);
    }

    #[test]
    fn garbage_never_panics() {
        let mut writes = TunWrites::new(true, true);
        let base = tcp_v4(1, FLAG_ACK, &payload(64, 3), 40000);
        for len in 0..base.len() {
            writes.push(&base[..len]);
        }
        for i in 0..base.len() {
            let mut p = base.clone();
            p[i] = 0xff;
            writes.push(&p);
            p[i] = 0x00;
            writes.push(&p);
        }
        let (out, _) = written(&mut writes);
        assert!(!out.is_empty());
    }
}
