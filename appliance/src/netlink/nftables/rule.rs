//! The vocabulary of the rules: verdicts, base chains, the expressions our rules are made of,
//! and how each is encoded into nf_tables attributes (byte for byte as `nft` encodes it).

use super::wire::*;
use crate::netlink::message::MessageBuilder;
use ip_network::IpNetwork;
use std::fmt::Write as _;

/// What a rule (or a chain's policy) does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

impl Verdict {
    pub(super) fn code(self) -> u32 {
        match self {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
        }
    }

    pub(super) fn word(self) -> &'static str {
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

    pub(super) fn word(&mut self, word: impl std::fmt::Display) {
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

    pub(super) fn interface(mut self, key: u32, word: &str, name: &str) -> Rule {
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

    pub(super) fn address(mut self, net: IpNetwork, direction: Direction) -> Rule {
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
    pub(super) fn require_family(&mut self, family: u8) -> bool {
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
pub(super) enum Direction {
    Source,
    Destination,
}

/// The name as the kernel compares it: NUL-padded to IFNAMSIZ. (A longer name is passed
/// through unpadded, and the kernel refuses the rule.)
pub(super) fn interface_name(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    if bytes.len() < IFNAMSIZ {
        bytes.resize(IFNAMSIZ, 0);
    }
    bytes
}

/// Encodes one expression as a list element of NFTA_RULE_EXPRESSIONS.
pub(super) fn encode_expr(m: &mut MessageBuilder, expr: &Expr) {
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
