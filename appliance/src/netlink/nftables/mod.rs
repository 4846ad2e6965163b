//! nf_tables over nfnetlink: the expressions our rules are made of, encoded the way `nft`
//! encodes them, sent as one atomic batch whose every message is acknowledged; and reading a
//! table back.
//!
//! This module knows nf_tables' vocabulary (tables, base chains, rules, expressions), not what
//! the bastion's table contains: that is `crate::nat`. Only the objects named in a batch are
//! touched. Numbers inside nf_tables attributes are big-endian; register contents are in the
//! byte order the packet or the kernel keeps them in (addresses as on the wire, `ct state` in
//! host order), exactly as `nft --debug=netlink` shows them.
//!
//! `wire` holds the protocol's numbers, `rule` the vocabulary and its encoding; this file the
//! batch, its acknowledgements and the read-back.

use super::message::{self, MessageBuilder, NLMSG_ERROR, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST};
use super::socket::{context, errno, KernelError, Socket};
use std::collections::BTreeMap;
use std::io;

#[cfg(test)]
mod kernel_tests;
mod rule;
mod wire;

pub use rule::*;
use wire::*;

/// Family of a table (`table inet NAME`): the `inet` family sees IPv4 and IPv6.
pub const FAMILY_INET: u8 = 1; // NFPROTO_INET

fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let id = res_id.to_be_bytes();
    [family, 0, id[0], id[1]]
}

fn message_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// Table and chain names as the kernel accepts them (NFT_NAME_MAXLEN is 256 with the NUL).
fn check_name(what: &str, name: &str) -> io::Result<()> {
    if name.is_empty() || name.len() > 255 || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("nftables {what} name {name:?}: expected 1 to 255 bytes without NUL"),
        ));
    }
    Ok(())
}

/// A list of changes that the kernel applies all together or not at all.
#[derive(Default)]
pub struct Batch {
    /// Each message (with sequence number 0 until sent) and what it does, for errors.
    messages: Vec<(Vec<u8>, String)>,
    /// The first message that could not be encoded; reported by `commit`.
    error: Option<io::Error>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    fn push(
        &mut self,
        what: String,
        build: impl FnOnce(&mut MessageBuilder) -> io::Result<()>,
        kind: u16,
        flags: u16,
        family: u8,
    ) {
        if self.error.is_some() {
            return;
        }
        let mut m = MessageBuilder::new(message_type(kind), NLM_F_REQUEST | NLM_F_ACK | flags, 0);
        m.fixed(&nfgenmsg(family, 0));
        match build(&mut m).and_then(|()| m.finish()) {
            Ok(bytes) => self.messages.push((bytes, what)),
            Err(e) => self.error = Some(context(e, what)),
        }
    }

    /// Creates the table; an existing table of that name is left as it is.
    pub fn add_table(&mut self, family: u8, table: &str) {
        let what = format!("add table {} {table}", family_name(family));
        self.push(
            what.clone(),
            |m| {
                check_name("table", table)?;
                m.attr_str(NFTA_TABLE_NAME, table).attr_u32_be(NFTA_TABLE_FLAGS, 0);
                Ok(())
            },
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            family,
        );
    }

    /// Deletes the table with everything in it; the batch fails if it does not exist.
    pub fn delete_table(&mut self, family: u8, table: &str) {
        let what = format!("delete table {} {table}", family_name(family));
        self.push(
            what,
            |m| {
                check_name("table", table)?;
                m.attr_str(NFTA_TABLE_NAME, table);
                Ok(())
            },
            NFT_MSG_DELTABLE,
            0,
            family,
        );
    }

    pub fn add_chain(&mut self, family: u8, table: &str, chain: &BaseChain) {
        let (kind, hook) = match (chain.kind, chain.hook) {
            (ChainType::Filter, h) => ("filter", h),
            (ChainType::Nat, h) => ("nat", h),
        };
        let (hook_num, hook_word) = match hook {
            Hook::Input => (NF_INET_LOCAL_IN, "input"),
            Hook::Forward => (NF_INET_FORWARD, "forward"),
            Hook::Postrouting => (NF_INET_POST_ROUTING, "postrouting"),
        };
        let what = format!(
            "add chain {} {table} {} {{ type {kind} hook {hook_word} priority {}; policy {}; }}",
            family_name(family),
            chain.name,
            chain.priority,
            chain.policy.word()
        );
        self.push(
            what,
            |m| {
                check_name("table", table)?;
                check_name("chain", &chain.name)?;
                m.attr_str(NFTA_CHAIN_TABLE, table).attr_str(NFTA_CHAIN_NAME, &chain.name);
                m.begin_nest(NFTA_CHAIN_HOOK)
                    .attr_u32_be(NFTA_HOOK_HOOKNUM, hook_num)
                    .attr_u32_be(NFTA_HOOK_PRIORITY, chain.priority as u32)
                    .end_nest();
                m.attr_u32_be(NFTA_CHAIN_POLICY, chain.policy.code());
                m.attr_str(NFTA_CHAIN_TYPE, kind);
                Ok(())
            },
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            family,
        );
    }

    /// Appends `rule` to the end of `chain`.
    pub fn add_rule(&mut self, family: u8, table: &str, chain: &str, rule: &Rule) {
        let what = format!("add rule {} {table} {chain} {}", family_name(family), rule.text());
        self.push(
            what,
            |m| {
                check_name("table", table)?;
                check_name("chain", chain)?;
                m.attr_str(NFTA_RULE_TABLE, table).attr_str(NFTA_RULE_CHAIN, chain);
                m.begin_nest(NFTA_RULE_EXPRESSIONS);
                for expr in rule.exprs() {
                    encode_expr(m, expr);
                }
                m.end_nest();
                Ok(())
            },
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            family,
        );
    }

    /// The bytes sent for the batch: begin marker, messages with sequence numbers from
    /// `first_seq`, end marker. Returns them with each message's sequence number.
    fn encode(&self, first_seq: u32) -> io::Result<(Vec<u8>, Vec<u32>)> {
        let mut bytes = Vec::new();
        let mut seqs = Vec::with_capacity(self.messages.len() + 2);
        let mut seq = first_seq;
        let marker = |kind: u16, seq: u32| {
            let mut m = MessageBuilder::new(kind, NLM_F_REQUEST, seq);
            m.fixed(&nfgenmsg(0, NFNL_SUBSYS_NFTABLES));
            m.finish()
        };
        bytes.extend(marker(NFNL_MSG_BATCH_BEGIN, seq)?);
        seqs.push(seq);
        for (message, _) in &self.messages {
            seq = seq.wrapping_add(1);
            let start = bytes.len();
            bytes.extend_from_slice(message);
            bytes[start + 8..start + 12].copy_from_slice(&seq.to_ne_bytes());
            seqs.push(seq);
        }
        seq = seq.wrapping_add(1);
        bytes.extend(marker(NFNL_MSG_BATCH_END, seq)?);
        seqs.push(seq);
        Ok((bytes, seqs))
    }

    /// Sends the batch and checks the kernel's answer to every message. On failure nothing
    /// of the batch is applied, and the error names the first message that failed.
    pub fn commit(self) -> io::Result<()> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut socket = Socket::open(libc::NETLINK_NETFILTER)?;
        let first_seq = socket.next_seq();
        let (bytes, seqs) = self.encode(first_seq)?;
        for _ in 1..seqs.len() {
            socket.next_seq();
        }
        // One acknowledgement per message is queued before send returns: make room for them,
        // and for a large batch on the way in.
        let room = 64 * 1024 + self.messages.len() * 1024;
        grow_buffer(&socket, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, room);
        grow_buffer(&socket, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes.len() + 64 * 1024);
        socket.send(&bytes)?;

        let total = self.messages.len();
        let describe = |position: usize| -> String {
            match position {
                0 => "batch begin".to_string(),
                p if p > total => "batch end".to_string(),
                p => format!("message {p} of {total} ({})", self.messages[p - 1].1),
            }
        };
        // Sequence number -> position in the batch (0 = begin marker, total + 1 = end marker).
        let position: BTreeMap<u32, usize> = seqs.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let mut waiting: BTreeMap<u32, usize> = seqs[1..seqs.len() - 1].iter().map(|s| (*s, position[s])).collect();
        let mut failures: BTreeMap<usize, io::Error> = BTreeMap::new();
        let mut datagrams = 0;
        while !waiting.is_empty() && failures.is_empty() {
            datagrams += 1;
            if datagrams > total + 16 {
                break;
            }
            let n = socket.receive(true).map_err(|e| context(e, "nftables batch: wait for acknowledgements"))?;
            let n = n.unwrap_or(0);
            read_acks(socket.received(n), &position, &mut waiting, &mut failures)?;
        }
        // After a failure the kernel has already queued everything it will say: read it all
        // so the error we report is the batch's first, not merely the first to arrive.
        if !failures.is_empty() {
            while let Some(n) = socket.receive(false)? {
                read_acks(socket.received(n), &position, &mut waiting, &mut failures)?;
            }
        }
        if let Some((position, error)) = failures.into_iter().next() {
            return Err(context(error, format!("nftables batch: {} failed", describe(position))));
        }
        if let Some(position) = waiting.values().next() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("nftables batch: no acknowledgement for {}", describe(*position)),
            ));
        }
        Ok(())
    }
}

fn read_acks(
    datagram: &[u8],
    position: &BTreeMap<u32, usize>,
    waiting: &mut BTreeMap<u32, usize>,
    failures: &mut BTreeMap<usize, io::Error>,
) -> io::Result<()> {
    for msg in message::messages(datagram) {
        let msg = msg?;
        if msg.kind != NLMSG_ERROR {
            continue;
        }
        let Some(&at) = position.get(&msg.seq) else { continue };
        waiting.remove(&msg.seq);
        let ack = message::parse_ack(msg.flags, msg.payload)?;
        if ack.errno != 0 {
            failures.entry(at).or_insert_with(|| KernelError::from_ack(ack));
        }
    }
    Ok(())
}

fn grow_buffer(socket: &Socket, forced: libc::c_int, plain: libc::c_int, size: usize) {
    let size = size.min(64 * 1024 * 1024) as libc::c_int;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&size`, a live c_int; the fd is open.
    let set = |name| unsafe {
        libc::setsockopt(
            socket.raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    // The forced variant needs CAP_NET_ADMIN, which programming nf_tables needs anyway; the
    // plain one is capped by net.core.*mem_max.
    if set(forced) != 0 {
        set(plain);
    }
}

fn family_name(family: u8) -> &'static str {
    match family {
        FAMILY_INET => "inet",
        NFPROTO_IPV4 => "ip",
        NFPROTO_IPV6 => "ip6",
        _ => "(family?)",
    }
}

/// Whether table `name` of `family` exists, read back from the kernel.
pub fn table_exists(family: u8, name: &str) -> io::Result<bool> {
    let doing = format!("read back table {} {name}", family_name(family));
    check_name("table", name).map_err(|e| context(e, &doing))?;
    let mut socket = Socket::open(libc::NETLINK_NETFILTER).map_err(|e| context(e, &doing))?;
    let answers = socket.request(|seq| {
        let mut m = MessageBuilder::new(message_type(NFT_MSG_GETTABLE), NLM_F_REQUEST | NLM_F_ACK, seq);
        m.fixed(&nfgenmsg(family, 0));
        m.attr_str(NFTA_TABLE_NAME, name);
        m.finish()
    });
    let answers = match answers {
        Ok(answers) => answers,
        Err(e) if errno(&e) == Some(libc::ENOENT) => return Ok(false),
        Err(e) => return Err(context(e, &doing)),
    };
    for answer in answers.iter().filter(|a| a.kind == message_type(NFT_MSG_NEWTABLE)) {
        let (header, attrs) =
            message::fixed_header(&answer.payload, 4, "table message").map_err(|e| context(e, &doing))?;
        if header[0] != family {
            continue;
        }
        for attr in message::attributes(attrs) {
            let attr = attr.map_err(|e| context(e, &doing))?;
            if attr.kind == NFTA_TABLE_NAME && attr.string().map_err(|e| context(e, &doing))? == name {
                return Ok(true);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{doing}: the kernel acknowledged without describing the table"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ip_network::IpNetwork;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    /// The bytes of one rule's NFTA_RULE_EXPRESSIONS content, for comparisons.
    fn encoded(rule: &Rule) -> Vec<u8> {
        let mut m = MessageBuilder::new(0, 0, 0);
        for expr in rule.exprs() {
            encode_expr(&mut m, expr);
        }
        m.finish().unwrap()[message::HEADER_LEN..].to_vec()
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
    }

    #[test]
    fn iifname_match_is_padded_and_big_endian() {
        // As `nft --debug=mnl` shows `iifname "wg0"` on a little-endian machine: meta
        // (key 6, dreg 1), then cmp (sreg 1, op eq, 16 bytes "wg0" NUL-padded).
        let expected = hex("24 00 01 80  09 00 01 00 6d 65 74 61 00 00 00 00  14 00 02 80
             08 00 02 00 00 00 00 06  08 00 01 00 00 00 00 01
             38 00 01 80  08 00 01 00 63 6d 70 00  2c 00 02 80
             08 00 01 00 00 00 00 01  08 00 02 00 00 00 00 00
             18 00 03 80 14 00 01 00 77 67 30 00 00 00 00 00 00 00 00 00 00 00 00 00");
        if cfg!(target_endian = "little") {
            assert_eq!(encoded(&Rule::new().iifname("wg0")), expected);
        }
        assert_eq!(Rule::new().iifname("wg0").text(), "iifname \"wg0\"");
    }

    #[test]
    fn prefixes_are_encoded_like_nft() {
        // Full length: 4-byte load, compare the address as on the wire.
        let r = Rule::new().saddr(net("10.9.0.2/32"));
        assert_eq!(
            r.exprs(),
            &[
                Expr::Meta { key: NFT_META_NFPROTO },
                Expr::Cmp { op: NFT_CMP_EQ, data: vec![NFPROTO_IPV4] },
                Expr::Payload { base: PayloadBase::Network, offset: 12, len: 4 },
                Expr::Cmp { op: NFT_CMP_EQ, data: vec![10, 9, 0, 2] },
            ]
        );
        assert_eq!(r.text(), "ip saddr 10.9.0.2");
        // Byte-aligned: load and compare only the leading bytes.
        let r = Rule::new().daddr(net("10.0.1.0/24"));
        assert_eq!(
            r.exprs()[2..],
            [
                Expr::Payload { base: PayloadBase::Network, offset: 16, len: 3 },
                Expr::Cmp { op: NFT_CMP_EQ, data: vec![10, 0, 1] }
            ]
        );
        assert_eq!(r.text(), "ip daddr 10.0.1.0/24");
        // Not aligned: full load, mask, compare.
        let r = Rule::new().daddr(net("10.0.16.0/20"));
        assert_eq!(
            r.exprs()[2..],
            [
                Expr::Payload { base: PayloadBase::Network, offset: 16, len: 4 },
                Expr::Bitwise { mask: vec![255, 255, 240, 0], xor: vec![0; 4] },
                Expr::Cmp { op: NFT_CMP_EQ, data: vec![10, 0, 16, 0] },
            ]
        );
        let r = Rule::new().daddr(net("2001:db8::/33"));
        let mut mask = vec![0u8; 16];
        mask[..4].copy_from_slice(&[255, 255, 255, 255]);
        mask[4] = 0x80;
        assert_eq!(r.exprs()[1], Expr::Cmp { op: NFT_CMP_EQ, data: vec![NFPROTO_IPV6] });
        assert_eq!(r.exprs()[2], Expr::Payload { base: PayloadBase::Network, offset: 24, len: 16 });
        assert_eq!(r.exprs()[3], Expr::Bitwise { mask, xor: vec![0; 16] });
        // /0: the family check alone.
        let r = Rule::new().daddr(net("0.0.0.0/0"));
        assert_eq!(r.exprs().len(), 2);
        assert_eq!(r.text(), "meta nfproto ipv4");
        // Source and destination of one family: one family check.
        let r = Rule::new().saddr(net("fd00::2/128")).daddr(net("fd10::/64"));
        assert_eq!(r.exprs().iter().filter(|e| **e == Expr::Meta { key: NFT_META_NFPROTO }).count(), 1);
        assert_eq!(r.exprs()[2], Expr::Payload { base: PayloadBase::Network, offset: 8, len: 16 });
        assert_eq!(r.exprs()[4], Expr::Payload { base: PayloadBase::Network, offset: 24, len: 8 });
        assert_eq!(r.text(), "ip6 saddr fd00::2 ip6 daddr fd10::/64");
    }

    #[test]
    fn ct_state_uses_host_order_and_verdicts_big_endian() {
        let r = Rule::new().established_or_related().verdict(Verdict::Accept);
        assert_eq!(r.text(), "ct state established,related accept");
        let bytes = encoded(&r);
        // The mask 6 is a host-order u32 in the register ("0x00000006" in nft's listing).
        let mask = 6u32.to_ne_bytes();
        assert!(bytes.windows(4).any(|w| w == mask));
        // The verdict code is a big-endian u32: accept = 1.
        assert!(bytes.ends_with(&[8, 0, 1, 0, 0, 0, 0, 1]));
        let drop = encoded(&Rule::new().verdict(Verdict::Drop));
        assert!(drop.ends_with(&[8, 0, 1, 0, 0, 0, 0, 0]));
        // masq carries an empty data nest, as nft sends it.
        let masq = encoded(&Rule::new().masquerade());
        assert_eq!(masq, hex("14 00 01 80 09 00 01 00 6d 61 73 71 00 00 00 00 04 00 02 80"));
    }

    #[test]
    fn batch_is_framed_by_markers_with_increasing_sequence_numbers() {
        let mut batch = Batch::new();
        batch.add_table(FAMILY_INET, "t");
        batch.delete_table(FAMILY_INET, "t");
        let (bytes, seqs) = batch.encode(100).unwrap();
        assert_eq!(seqs, vec![100, 101, 102, 103]);
        let msgs: Vec<_> = message::messages(&bytes).collect::<io::Result<_>>().unwrap();
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[0].kind, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs[0].payload, &[0, 0, 0, 10]); // res_id = NFNL_SUBSYS_NFTABLES, big-endian
        assert_eq!(msgs[1].kind, 0x0a00);
        assert_eq!(msgs[1].flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(msgs[1].payload[..4], [FAMILY_INET, 0, 0, 0]);
        assert_eq!(msgs[2].kind, 0x0a02);
        assert_eq!(msgs[3].kind, NFNL_MSG_BATCH_END);
        assert_eq!(msgs.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs);
    }

    #[test]
    fn bad_names_fail_the_commit_before_anything_is_sent() {
        let mut batch = Batch::new();
        batch.add_table(FAMILY_INET, "");
        batch.add_table(FAMILY_INET, "fine");
        let err = batch.commit().unwrap_err();
        assert!(err.to_string().contains("add table inet : nftables table name"), "{err}");
    }
}
