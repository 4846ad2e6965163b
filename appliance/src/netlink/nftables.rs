//! nf_tables over nfnetlink: the expressions our rules are made of, encoded the way `nft`
//! encodes them, sent as one atomic batch whose every message is acknowledged; and reading a
//! table back.
//!
//! This module knows nf_tables' vocabulary (tables, base chains, rules, expressions), not what
//! the bastion's table contains: that is `crate::nat`. Only the objects named in a batch are
//! touched. Numbers inside nf_tables attributes are big-endian; register contents are in the
//! byte order the packet or the kernel keeps them in (addresses as on the wire, `ct state` in
//! host order), exactly as `nft --debug=netlink` shows them.

use super::message::{self, MessageBuilder, NLMSG_ERROR, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST};
use super::socket::{context, errno, KernelError, Socket};
use ip_network::IpNetwork;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;

/// Family of a table (`table inet NAME`): the `inet` family sees IPv4 and IPv6.
pub const FAMILY_INET: u8 = 1; // NFPROTO_INET

// linux/netfilter/nfnetlink.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
// linux/netfilter/nf_tables.h: message types within the subsystem
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
// attributes
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
// values
const NFT_REG_VERDICT: u32 = 0;
/// The first 16-byte register, as `nft` uses it ("reg 1").
const NFT_REG_1: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_POST_ROUTING: u32 = 4;
/// linux/netfilter/nf_conntrack_common.h: NF_CT_STATE_BIT(IP_CT_ESTABLISHED), (IP_CT_RELATED)
const CT_STATE_ESTABLISHED: u32 = 1 << 1;
const CT_STATE_RELATED: u32 = 1 << 2;
const IFNAMSIZ: usize = 16;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_UDP: u8 = 17;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;

/// What a rule (or a chain's policy) does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

impl Verdict {
    fn code(self) -> u32 {
        match self {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Packets addressed to this host.
    Input,
    Forward,
    Postrouting,
}

/// A chain attached to a netfilter hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    pub name: String,
    pub kind: ChainType,
    pub hook: Hook,
    /// 0 is `filter`, 100 is `srcnat`.
    pub priority: i32,
    pub policy: Verdict,
}

/// One expression of a rule. Loads always go to register 1, as `nft` does for rules this
/// simple; each match reads what the load before it put there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: u32,
    },
    /// Bytes of the network header (IPv4 or IPv6), or of the transport header.
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
    },
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Cmp {
        op: u32,
        data: Vec<u8>,
    },
    CtState,
    Verdict(Verdict),
    Masquerade,
}

/// Where a payload load counts its offset from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Network,
    Transport,
}

/// An IP version, for matches that exist in both (`icmp` and `icmpv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

/// A rule: its expressions, and the same rule in `nft` syntax for messages and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    exprs: Vec<Expr>,
    text: String,
    /// The family a `meta nfproto` check already restricted this rule to.
    family: Option<u8>,
}

impl Default for Rule {
    fn default() -> Self {
        Self::new()
    }
}

impl Rule {
    pub fn new() -> Rule {
        Rule { exprs: Vec::new(), text: String::new(), family: None }
    }

    pub fn exprs(&self) -> &[Expr] {
        &self.exprs
    }

    /// The rule as `nft list` prints it.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn word(&mut self, word: impl std::fmt::Display) {
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        let _ = write!(self.text, "{word}");
    }

    /// `iifname "NAME"`: the packet came in through interface NAME (exact name).
    pub fn iifname(self, name: &str) -> Rule {
        self.interface(NFT_META_IIFNAME, "iifname", name)
    }

    /// `oifname "NAME"`: the packet leaves through interface NAME (exact name).
    pub fn oifname(self, name: &str) -> Rule {
        self.interface(NFT_META_OIFNAME, "oifname", name)
    }

    fn interface(mut self, key: u32, word: &str, name: &str) -> Rule {
        self.exprs.push(Expr::Meta { key });
        self.exprs.push(Expr::Cmp { op: NFT_CMP_EQ, data: interface_name(name) });
        self.word(format_args!("{word} \"{name}\""));
        self
    }

    /// `ip saddr NET` or `ip6 saddr NET`.
    pub fn saddr(self, net: IpNetwork) -> Rule {
        self.address(net, Direction::Source)
    }

    /// `ip daddr NET` or `ip6 daddr NET`.
    pub fn daddr(self, net: IpNetwork) -> Rule {
        self.address(net, Direction::Destination)
    }

    fn address(mut self, net: IpNetwork, direction: Direction) -> Rule {
        let (family, bytes, prefix, proto_word) = match net {
            IpNetwork::V4(n) => (NFPROTO_IPV4, n.network_address().octets().to_vec(), n.netmask(), "ipv4"),
            IpNetwork::V6(n) => (NFPROTO_IPV6, n.network_address().octets().to_vec(), n.netmask(), "ipv6"),
        };
        let checked = self.require_family(family);
        if prefix == 0 {
            // Every address of the family: the family check is the whole match (and when the
            // rule already had it, there is nothing to add, as nft lists it).
            if !checked {
                self.word(format_args!("meta nfproto {proto_word}"));
            }
            return self;
        }
        let full = bytes.len() as u32;
        let offset = match (family, direction) {
            (NFPROTO_IPV4, Direction::Source) => 12,
            (NFPROTO_IPV4, Direction::Destination) => 16,
            (_, Direction::Source) => 8,
            (_, Direction::Destination) => 24,
        };
        let prefix_bytes = prefix as usize / 8;
        if prefix as u32 == full * 8 {
            self.exprs.push(Expr::Payload { base: PayloadBase::Network, offset, len: full });
            self.exprs.push(Expr::Cmp { op: NFT_CMP_EQ, data: bytes });
        } else if prefix % 8 == 0 {
            // Byte-aligned prefix: compare only the leading bytes (what nft does).
            self.exprs.push(Expr::Payload { base: PayloadBase::Network, offset, len: prefix_bytes as u32 });
            self.exprs.push(Expr::Cmp { op: NFT_CMP_EQ, data: bytes[..prefix_bytes].to_vec() });
        } else {
            let mut mask = vec![0u8; bytes.len()];
            for (i, byte) in mask.iter_mut().enumerate() {
                let bits = (prefix as usize).saturating_sub(i * 8).min(8);
                *byte = (0xff00u16 >> bits) as u8;
            }
            self.exprs.push(Expr::Payload { base: PayloadBase::Network, offset, len: full });
            self.exprs.push(Expr::Bitwise { xor: vec![0; mask.len()], mask });
            self.exprs.push(Expr::Cmp { op: NFT_CMP_EQ, data: bytes });
        }
        let proto = if family == NFPROTO_IPV4 { "ip" } else { "ip6" };
        let field = match direction {
            Direction::Source => "saddr",
            Direction::Destination => "daddr",
        };
        if prefix as u32 == full * 8 {
            let address = match net {
                IpNetwork::V4(n) => n.network_address().to_string(),
                IpNetwork::V6(n) => n.network_address().to_string(),
            };
            self.word(format_args!("{proto} {field} {address}"));
        } else {
            self.word(format_args!("{proto} {field} {net}"));
        }
        self
    }

    /// An inet table sees both families: a header field is only read after checking which one
    /// the packet is, once per rule (as `nft` adds it). Returns whether the check was there.
    fn require_family(&mut self, family: u8) -> bool {
        let checked = self.family == Some(family);
        if !checked {
            self.exprs.push(Expr::Meta { key: NFT_META_NFPROTO });
            self.exprs.push(Expr::Cmp { op: NFT_CMP_EQ, data: vec![family] });
            self.family = Some(family);
        }
        checked
    }

    /// `icmp type echo-request` or `icmpv6 type echo-request`: a ping.
    pub fn echo_request(mut self, version: IpVersion) -> Rule {
        let (family, protocol, kind, word) = match version {
            IpVersion::V4 => (NFPROTO_IPV4, IPPROTO_ICMP, ICMP_ECHO_REQUEST, "icmp"),
            IpVersion::V6 => (NFPROTO_IPV6, IPPROTO_ICMPV6, ICMPV6_ECHO_REQUEST, "icmpv6"),
        };
        self.require_family(family);
        self.exprs.push(Expr::Meta { key: NFT_META_L4PROTO });
        self.exprs.push(Expr::Cmp { op: NFT_CMP_EQ, data: vec![protocol] });
        self.exprs.push(Expr::Payload { base: PayloadBase::Transport, offset: 0, len: 1 });
        self.exprs.push(Expr::Cmp { op: NFT_CMP_EQ, data: vec![kind] });
        self.word(format_args!("{word} type echo-request"));
        self
    }

    /// `udp dport PORT`: a UDP datagram to PORT (either IP version).
    pub fn udp_dport(mut self, port: u16) -> Rule {
        self.exprs.push(Expr::Meta { key: NFT_META_L4PROTO });
        self.exprs.push(Expr::Cmp { op: NFT_CMP_EQ, data: vec![IPPROTO_UDP] });
        self.exprs.push(Expr::Payload { base: PayloadBase::Transport, offset: 2, len: 2 });
        self.exprs.push(Expr::Cmp { op: NFT_CMP_EQ, data: port.to_be_bytes().to_vec() });
        self.word(format_args!("udp dport {port}"));
        self
    }

    /// `ct state established,related`: the packet belongs to (or is related to) a connection
    /// conntrack has already seen both ways or allowed.
    pub fn established_or_related(mut self) -> Rule {
        self.exprs.push(Expr::CtState);
        self.exprs.push(Expr::Bitwise {
            mask: (CT_STATE_ESTABLISHED | CT_STATE_RELATED).to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        });
        self.exprs.push(Expr::Cmp { op: NFT_CMP_NEQ, data: vec![0; 4] });
        self.word("ct state established,related");
        self
    }

    pub fn verdict(mut self, verdict: Verdict) -> Rule {
        self.exprs.push(Expr::Verdict(verdict));
        self.word(verdict.word());
        self
    }

    pub fn masquerade(mut self) -> Rule {
        self.exprs.push(Expr::Masquerade);
        self.word("masquerade");
        self
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Source,
    Destination,
}

/// The name as the kernel compares it: NUL-padded to IFNAMSIZ. (A longer name is passed
/// through unpadded, and the kernel refuses the rule.)
fn interface_name(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    if bytes.len() < IFNAMSIZ {
        bytes.resize(IFNAMSIZ, 0);
    }
    bytes
}

/// Encodes one expression as a list element of NFTA_RULE_EXPRESSIONS.
fn encode_expr(m: &mut MessageBuilder, expr: &Expr) {
    m.begin_nest(NFTA_LIST_ELEM);
    let name = match expr {
        Expr::Meta { .. } => "meta",
        Expr::Payload { .. } => "payload",
        Expr::Bitwise { .. } => "bitwise",
        Expr::Cmp { .. } => "cmp",
        Expr::CtState => "ct",
        Expr::Verdict(_) => "immediate",
        Expr::Masquerade => "masq",
    };
    m.attr_str(NFTA_EXPR_NAME, name);
    m.begin_nest(NFTA_EXPR_DATA);
    match expr {
        Expr::Meta { key } => {
            m.attr_u32_be(NFTA_META_KEY, *key).attr_u32_be(NFTA_META_DREG, NFT_REG_1);
        }
        Expr::Payload { base, offset, len } => {
            let base = match base {
                PayloadBase::Network => NFT_PAYLOAD_NETWORK_HEADER,
                PayloadBase::Transport => NFT_PAYLOAD_TRANSPORT_HEADER,
            };
            m.attr_u32_be(NFTA_PAYLOAD_DREG, NFT_REG_1)
                .attr_u32_be(NFTA_PAYLOAD_BASE, base)
                .attr_u32_be(NFTA_PAYLOAD_OFFSET, *offset)
                .attr_u32_be(NFTA_PAYLOAD_LEN, *len);
        }
        Expr::Bitwise { mask, xor } => {
            m.attr_u32_be(NFTA_BITWISE_SREG, NFT_REG_1)
                .attr_u32_be(NFTA_BITWISE_DREG, NFT_REG_1)
                .attr_u32_be(NFTA_BITWISE_LEN, mask.len() as u32);
            m.begin_nest(NFTA_BITWISE_MASK).attr(NFTA_DATA_VALUE, mask).end_nest();
            m.begin_nest(NFTA_BITWISE_XOR).attr(NFTA_DATA_VALUE, xor).end_nest();
        }
        Expr::Cmp { op, data } => {
            m.attr_u32_be(NFTA_CMP_SREG, NFT_REG_1).attr_u32_be(NFTA_CMP_OP, *op);
            m.begin_nest(NFTA_CMP_DATA).attr(NFTA_DATA_VALUE, data).end_nest();
        }
        Expr::CtState => {
            m.attr_u32_be(NFTA_CT_KEY, NFT_CT_STATE).attr_u32_be(NFTA_CT_DREG, NFT_REG_1);
        }
        Expr::Verdict(verdict) => {
            m.attr_u32_be(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            m.begin_nest(NFTA_IMMEDIATE_DATA).begin_nest(NFTA_DATA_VERDICT);
            m.attr_u32_be(NFTA_VERDICT_CODE, verdict.code());
            m.end_nest().end_nest();
        }
        Expr::Masquerade => {}
    }
    m.end_nest();
    m.end_nest();
}

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
    use bastion_tests::scratch::run;

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

    /// nft colours the numbers of its dump with ANSI escapes.
    fn strip_colours(line: &str) -> String {
        let mut out = String::with_capacity(line.len());
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Rebuilds the payload of each NEWRULE message from `nft --debug=mnl` output.
    fn mnl_rule_payloads(dump: &str) -> Vec<Vec<u8>> {
        let mut rules = Vec::new();
        let mut current: Option<Vec<u8>> = None;
        let mut is_rule = false;
        for line in dump.lines() {
            let line = strip_colours(line);
            let line = line.trim_end();
            if line.starts_with("----------------") {
                continue;
            }
            if line.contains("|  type | flags  |") {
                if let Some(done) = current.take() {
                    if is_rule {
                        rules.push(done);
                    }
                }
                let kind: u16 = line.trim_start_matches('|').split('|').next().unwrap().trim().parse().unwrap();
                is_rule = kind == message_type(NFT_MSG_NEWRULE);
                current = Some(Vec::new());
                continue;
            }
            let Some(bytes) = current.as_mut() else { continue };
            if line.contains("|len |flags| type|") {
                let fields: Vec<&str> = line.split('|').collect();
                let len: u16 = fields[1].parse().unwrap();
                let mut kind: u16 = fields[3].parse().unwrap();
                if fields[2].contains('N') {
                    kind |= message::NLA_F_NESTED;
                }
                bytes.extend(len.to_ne_bytes());
                bytes.extend(kind.to_ne_bytes());
            } else if line.contains("|      data      |") || line.contains("|  extra header  |") {
                let field = line.split('|').nth(1).unwrap();
                bytes.extend(field.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()));
            }
        }
        if let Some(done) = current {
            if is_rule {
                rules.push(done);
            }
        }
        rules
    }

    /// The oracle at byte level: our encoding of each rule equals what `nft` sends for the
    /// same rule.
    #[test]
    fn kernel_rule_bytes_equal_what_nft_sends() {
        run(|netns| {
            netns.command_ok("nft", &["add table inet t; add chain inet t c"]);
            let cases = [
                Rule::new().established_or_related().verdict(Verdict::Accept),
                Rule::new().iifname("wg0").saddr(net("10.9.0.2/32")).daddr(net("10.0.1.0/24")).verdict(Verdict::Accept),
                Rule::new().iifname("wg0").daddr(net("10.0.16.0/20")).verdict(Verdict::Accept),
                Rule::new()
                    .iifname("wg0")
                    .saddr(net("fd00::2/128"))
                    .daddr(net("2001:db8::/33"))
                    .verdict(Verdict::Accept),
                Rule::new().iifname("wg0").daddr(net("0.0.0.0/0")).verdict(Verdict::Accept),
                Rule::new().iifname("wg0").verdict(Verdict::Drop),
                Rule::new().oifname("wg0").verdict(Verdict::Drop),
                Rule::new().iifname("wg0").oifname("eth0").masquerade(),
                Rule::new().iifname("wg0").echo_request(IpVersion::V4).verdict(Verdict::Accept),
                Rule::new().iifname("wg0").echo_request(IpVersion::V6).verdict(Verdict::Accept),
                Rule::new().iifname("wg0").daddr(net("169.254.169.254/32")).verdict(Verdict::Drop),
            ];
            for rule in &cases {
                let out = netns.command("nft", &["--debug=mnl", &format!("add rule inet t c {}", rule.text())]);
                assert!(out.status.success(), "nft add rule {}: {}", rule.text(), String::from_utf8_lossy(&out.stderr));
                // nft prints the dump on stdout (recent versions) or stderr (older ones).
                let dump = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                let payloads = mnl_rule_payloads(&dump);
                assert_eq!(payloads.len(), 1, "one NEWRULE in nft's dump for {}", rule.text());
                let mut ours = Batch::new();
                ours.add_rule(FAMILY_INET, "t", "c", rule);
                let ours = &ours.messages[0].0[message::HEADER_LEN..];
                assert_eq!(ours, &payloads[0][..], "rule bytes differ for: {}", rule.text());
            }
        });
    }

    #[test]
    fn kernel_batch_commit_reports_the_failing_message() {
        run(|netns| {
            assert!(!table_exists(FAMILY_INET, "bnl").unwrap());
            let chain = BaseChain {
                name: "c".into(),
                kind: ChainType::Filter,
                hook: Hook::Forward,
                priority: 0,
                policy: Verdict::Accept,
            };
            let mut batch = Batch::new();
            batch.add_table(FAMILY_INET, "bnl");
            batch.add_chain(FAMILY_INET, "bnl", &chain);
            batch.add_rule(FAMILY_INET, "bnl", "c", &Rule::new().iifname("x").verdict(Verdict::Drop));
            batch.commit().unwrap();
            assert!(table_exists(FAMILY_INET, "bnl").unwrap());
            let listed = netns.command_output("nft", &["list", "table", "inet", "bnl"]);
            assert!(listed.contains("iifname \"x\" drop"), "{listed}");

            // A rule for a chain that does not exist, in the middle of a batch: the whole
            // batch is refused, and the error names that message.
            let mut batch = Batch::new();
            batch.add_table(FAMILY_INET, "bnl2");
            batch.add_rule(FAMILY_INET, "bnl2", "missing", &Rule::new().verdict(Verdict::Accept));
            batch.add_table(FAMILY_INET, "bnl3");
            let err = batch.commit().unwrap_err();
            let text = err.to_string();
            assert!(text.contains("message 2 of 3 (add rule inet bnl2 missing accept) failed"), "{text}");
            assert_eq!(errno(&err), Some(libc::ENOENT), "{text}");
            assert!(!table_exists(FAMILY_INET, "bnl2").unwrap(), "nothing of a failed batch is applied");
            assert!(!table_exists(FAMILY_INET, "bnl3").unwrap(), "nothing of a failed batch is applied");

            // Deleting a table that is not there fails; the other table stays.
            let mut batch = Batch::new();
            batch.delete_table(FAMILY_INET, "absent");
            let err = batch.commit().unwrap_err();
            assert!(err.to_string().contains("message 1 of 1 (delete table inet absent) failed"), "{err}");
            assert!(table_exists(FAMILY_INET, "bnl").unwrap());
        });
    }

    #[test]
    fn kernel_large_batches_are_fully_acknowledged() {
        run(|netns| {
            let chain = BaseChain {
                name: "c".into(),
                kind: ChainType::Filter,
                hook: Hook::Forward,
                priority: 0,
                policy: Verdict::Accept,
            };
            let mut batch = Batch::new();
            batch.add_table(FAMILY_INET, "big");
            batch.add_chain(FAMILY_INET, "big", &chain);
            for i in 0..3000u32 {
                let destination = IpNetwork::V4(
                    ip_network::Ipv4Network::new(std::net::Ipv4Addr::from(0x0a00_0000 | (i << 8)), 24).unwrap(),
                );
                batch.add_rule(
                    FAMILY_INET,
                    "big",
                    "c",
                    &Rule::new().iifname("wg0").daddr(destination).verdict(Verdict::Accept),
                );
            }
            batch.commit().unwrap();
            let listed = netns.command_output("nft", &["list", "chain", "inet", "big", "c"]);
            assert_eq!(listed.lines().filter(|l| l.ends_with(" accept")).count(), 3000);
            assert!(listed.contains("ip daddr 10.11.183.0/24"), "last rule present");
        });
    }
}
