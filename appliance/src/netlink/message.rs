//! The netlink wire format shared by rtnetlink and nfnetlink: building a message (header, fixed
//! family header, attributes, nests) and reading the kernel's answers through checked views.
//!
//! It knows nothing about links, routes or nf_tables; it only turns bytes into messages and
//! attributes and back. Every read is bounds-checked: a truncated or inconsistent answer is an
//! `InvalidData` error, never a panic.

use std::io;

pub const HEADER_LEN: usize = 16;
const ATTR_HEADER_LEN: usize = 4;

// linux/netlink.h
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_ROOT: u16 = 0x100;
pub const NLM_F_MATCH: u16 = 0x200;
pub const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
/// In an NLMSG_ERROR: the echoed request was cut to its header (we ask for that).
const NLM_F_CAPPED: u16 = 0x100;
/// In an NLMSG_ERROR: extended-ack attributes follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Rounds up to the 4-byte alignment netlink uses for messages and attributes.
pub fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// One request being built: header, then a fixed family header, then attributes.
///
/// Lengths that do not fit netlink's 16-bit attribute length (or 32-bit message length) are
/// remembered and reported by [`MessageBuilder::finish`] rather than silently wrapped.
pub struct MessageBuilder {
    buf: Vec<u8>,
    nests: Vec<usize>,
    oversized: Option<u16>,
}

impl MessageBuilder {
    pub fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills in ours
        MessageBuilder { buf, nests: Vec::new(), oversized: None }
    }

    /// The fixed family header (ifinfomsg, rtmsg, nfgenmsg…), padded to alignment.
    pub fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    pub fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = ATTR_HEADER_LEN + payload.len();
        let len16 = match u16::try_from(len) {
            Ok(l) => l,
            Err(_) => {
                self.oversized.get_or_insert(kind);
                return self;
            }
        };
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    /// A u32 in host byte order (rtnetlink's convention).
    pub fn attr_u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    /// A u32 in network byte order (nf_tables' convention for every number it carries).
    pub fn attr_u32_be(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    /// A NUL-terminated string.
    pub fn attr_str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    /// Opens a nested attribute; every `begin_nest` needs its `end_nest`.
    pub fn begin_nest(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub fn end_nest(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = self.buf.len() - start;
            match u16::try_from(len) {
                Ok(l) => self.buf[start..start + 2].copy_from_slice(&l.to_ne_bytes()),
                Err(_) => {
                    let kind = u16::from_ne_bytes([self.buf[start + 2], self.buf[start + 3]]);
                    self.oversized.get_or_insert(kind & NLA_TYPE_MASK);
                }
            }
        }
        self
    }

    fn pad(&mut self) {
        let padded = align(self.buf.len());
        self.buf.resize(padded, 0);
    }

    /// The finished message, its length field set.
    pub fn finish(mut self) -> io::Result<Vec<u8>> {
        if !self.nests.is_empty() {
            return Err(io::Error::other("netlink message built with an unclosed nested attribute"));
        }
        if let Some(kind) = self.oversized {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("netlink attribute {kind} is longer than 65535 bytes"),
            ));
        }
        let len = u32::try_from(self.buf.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "netlink message too long"))?;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        Ok(self.buf)
    }
}

/// One message of an answer, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the 16-byte header.
    pub payload: &'a [u8],
}

/// Splits a datagram into messages; each item is checked against the bytes really there.
pub struct Messages<'a> {
    rest: &'a [u8],
}

pub fn messages(datagram: &[u8]) -> Messages<'_> {
    Messages { rest: datagram }
}

impl<'a> Iterator for Messages<'a> {
    type Item = io::Result<Message<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = self.rest;
        if rest.len() < HEADER_LEN {
            self.rest = &[];
            return Some(Err(invalid(format!(
                "netlink answer: {} trailing bytes, shorter than a message header",
                rest.len()
            ))));
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < HEADER_LEN || len > rest.len() {
            self.rest = &[];
            return Some(Err(invalid(format!(
                "netlink answer: message length {len} with {} bytes available",
                rest.len()
            ))));
        }
        let message = Message {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            payload: &rest[HEADER_LEN..len],
        };
        self.rest = &rest[align(len).min(rest.len())..];
        Some(Ok(message))
    }
}

/// What an NLMSG_ERROR says: 0 is an acknowledgement, otherwise a negative errno, with the
/// kernel's own explanation when it gave one (extended ack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub errno: i32,
    pub explanation: Option<String>,
}

/// Parses the payload of an NLMSG_ERROR message (flags are the outer message's).
pub fn parse_ack(flags: u16, payload: &[u8]) -> io::Result<Ack> {
    if payload.len() < 4 {
        return Err(invalid(format!("netlink error message: {} bytes, expected at least 4", payload.len())));
    }
    let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let errno = code
        .checked_neg()
        .filter(|e| *e >= 0)
        .ok_or_else(|| invalid(format!("netlink error message: error code {code} is not a negative errno")))?;
    let mut explanation = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // After the code comes the echoed request: its header only when capped, else whole.
        let echoed = &payload[4..];
        if echoed.len() < HEADER_LEN {
            return Err(invalid("netlink error message: echoed request shorter than a header"));
        }
        let echoed_len = if flags & NLM_F_CAPPED != 0 {
            HEADER_LEN
        } else {
            u32::from_ne_bytes([echoed[0], echoed[1], echoed[2], echoed[3]]) as usize
        };
        if echoed_len < HEADER_LEN || align(echoed_len) > echoed.len() {
            return Err(invalid(format!(
                "netlink error message: echoed request of {echoed_len} bytes with {} available",
                echoed.len()
            )));
        }
        for attr in attributes(&echoed[align(echoed_len)..]) {
            let attr = attr?;
            if attr.kind == NLMSGERR_ATTR_MSG {
                let text = attr.string()?;
                if !text.is_empty() {
                    explanation = Some(text.to_string());
                }
            }
        }
    }
    Ok(Ack { errno, explanation })
}

/// One attribute, borrowed from its message.
#[derive(Debug, Clone, Copy)]
pub struct Attr<'a> {
    /// The type without the NESTED and BYTEORDER flag bits.
    pub kind: u16,
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    pub fn u32(&self) -> io::Result<u32> {
        <[u8; 4]>::try_from(self.payload).map(u32::from_ne_bytes).map_err(|_| self.wrong_size("4"))
    }

    /// A string attribute: UTF-8, up to the first NUL (the kernel NUL-terminates most).
    pub fn string(&self) -> io::Result<&'a str> {
        let bytes = match self.payload.iter().position(|b| *b == 0) {
            Some(end) => &self.payload[..end],
            None => self.payload,
        };
        std::str::from_utf8(bytes).map_err(|_| invalid(format!("netlink attribute {}: string is not UTF-8", self.kind)))
    }

    fn wrong_size(&self, expected: &str) -> io::Error {
        invalid(format!("netlink attribute {}: {} bytes, expected {expected}", self.kind, self.payload.len()))
    }
}

/// Walks a run of attributes; each item is checked against the bytes really there.
#[derive(Clone)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

pub fn attributes(bytes: &[u8]) -> Attributes<'_> {
    Attributes { rest: bytes }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = io::Result<Attr<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = self.rest;
        if rest.len() < ATTR_HEADER_LEN {
            self.rest = &[];
            return Some(Err(invalid(format!(
                "netlink attributes: {} trailing bytes, shorter than an attribute header",
                rest.len()
            ))));
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < ATTR_HEADER_LEN || len > rest.len() {
            self.rest = &[];
            return Some(Err(invalid(format!(
                "netlink attribute {kind}: length {len} with {} bytes available",
                rest.len()
            ))));
        }
        self.rest = &rest[align(len).min(rest.len())..];
        Some(Ok(Attr { kind, payload: &rest[ATTR_HEADER_LEN..len] }))
    }
}

/// The fixed header at the start of a payload, or an error naming what was too short.
pub fn fixed_header<'a>(payload: &'a [u8], len: usize, what: &str) -> io::Result<(&'a [u8], &'a [u8])> {
    if payload.len() < len {
        return Err(invalid(format!("{what}: {} bytes, expected at least {len}", payload.len())));
    }
    let attrs_start = align(len).min(payload.len());
    Ok((&payload[..len], &payload[attrs_start..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_length() {
        let mut m = MessageBuilder::new(0x1234, NLM_F_REQUEST | NLM_F_ACK, 7);
        m.fixed(&[1, 2, 3, 4]);
        let bytes = m.finish().unwrap();
        assert_eq!(bytes.len(), 20);
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(bytes[4..6].try_into().unwrap()), 0x1234);
        assert_eq!(u16::from_ne_bytes(bytes[6..8].try_into().unwrap()), 5);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
        assert_eq!(&bytes[16..], &[1, 2, 3, 4]);
    }

    #[test]
    fn attribute_padding_keeps_unpadded_length() {
        let mut m = MessageBuilder::new(1, 0, 0);
        m.attr_str(1, "wg0").attr(2, &[9]).attr_u32_be(3, 1);
        let bytes = m.finish().unwrap();
        let attrs = &bytes[HEADER_LEN..];
        // "wg0\0": length 8, no padding needed.
        assert_eq!(&attrs[0..8], &[8, 0, 1, 0, b'w', b'g', b'0', 0]);
        // one byte: length 5, padded with three zeros to 8.
        assert_eq!(&attrs[8..16], &[5, 0, 2, 0, 9, 0, 0, 0]);
        // big-endian u32.
        assert_eq!(&attrs[16..24], &[8, 0, 3, 0, 0, 0, 0, 1]);
        assert_eq!(attrs.len(), 24);
    }

    #[test]
    fn nesting_sets_flag_and_total_length() {
        let mut m = MessageBuilder::new(1, 0, 0);
        m.begin_nest(4).begin_nest(1).attr_u32(1, 0xdead_beef).end_nest().attr(2, &[1, 2]).end_nest();
        let bytes = m.finish().unwrap();
        let outer = &bytes[HEADER_LEN..];
        assert_eq!(u16::from_ne_bytes([outer[0], outer[1]]), 4 + 12 + 8);
        assert_eq!(u16::from_ne_bytes([outer[2], outer[3]]), 4 | NLA_F_NESTED);
        assert_eq!(u16::from_ne_bytes([outer[4], outer[5]]), 12);
        assert_eq!(u16::from_ne_bytes([outer[6], outer[7]]), 1 | NLA_F_NESTED);
        // Reading back strips the flag and walks the nest.
        let top: Vec<_> = attributes(outer).collect::<io::Result<_>>().unwrap();
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].kind, 4);
        let inner: Vec<_> = attributes(top[0].payload).collect::<io::Result<_>>().unwrap();
        assert_eq!(inner[0].kind, 1);
        assert_eq!(attributes(inner[0].payload).next().unwrap().unwrap().u32().unwrap(), 0xdead_beef);
        assert_eq!(inner[1].payload, &[1, 2]);
    }

    #[test]
    fn unclosed_nest_and_oversized_attribute_are_errors() {
        let mut m = MessageBuilder::new(1, 0, 0);
        m.begin_nest(1);
        assert!(m.finish().is_err());
        let mut m = MessageBuilder::new(1, 0, 0);
        m.attr(5, &vec![0u8; 70_000]);
        let err = m.finish().unwrap_err();
        assert!(err.to_string().contains("attribute 5"), "{err}");
    }

    #[test]
    fn truncated_and_garbage_answers_are_errors_not_panics() {
        // Shorter than a header.
        assert!(messages(&[1, 2, 3]).next().unwrap().is_err());
        // Length field larger than the datagram.
        let mut m = MessageBuilder::new(1, 0, 0).finish().unwrap();
        m[0] = 200;
        assert!(messages(&m).next().unwrap().is_err());
        // Length field smaller than a header.
        m[0] = 3;
        assert!(messages(&m).next().unwrap().is_err());
        // Attribute claiming more than there is, or less than its own header.
        assert!(attributes(&[9, 0, 1, 0, 0]).next().unwrap().is_err());
        assert!(attributes(&[2, 0, 1, 0]).next().unwrap().is_err());
        assert!(attributes(&[1, 0]).next().unwrap().is_err());
        // Wrong sizes for typed reads.
        let a = Attr { kind: 3, payload: &[1, 2, 3] };
        assert!(a.u32().is_err());
        assert!(Attr { kind: 3, payload: &[0xff, 0xfe] }.string().is_err());
        // Every prefix of a valid two-message datagram parses or errors, never panics.
        let mut two = MessageBuilder::new(1, 0, 1);
        two.attr_str(1, "eth0");
        let mut datagram = two.finish().unwrap();
        datagram.extend(MessageBuilder::new(2, 0, 2).finish().unwrap());
        for cut in 0..datagram.len() {
            for msg in messages(&datagram[..cut]).flatten() {
                for attr in attributes(msg.payload).flatten() {
                    let _ = (attr.string(), attr.u32());
                }
            }
        }
    }

    #[test]
    fn unaligned_last_message_is_accepted() {
        // The kernel may omit padding after the last message of a datagram.
        let mut m = MessageBuilder::new(7, 0, 1);
        m.attr(1, &[1]);
        let mut bytes = m.finish().unwrap();
        let len = HEADER_LEN + 5;
        bytes.truncate(len);
        bytes[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        let all: Vec<_> = messages(&bytes).collect::<io::Result<_>>().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].kind, 7);
    }

    #[test]
    fn acks_and_errors() {
        let ok = parse_ack(0, &[0, 0, 0, 0]).unwrap();
        assert_eq!(ok, Ack { errno: 0, explanation: None });
        let enoent = parse_ack(0, &(-2i32).to_ne_bytes()).unwrap();
        assert_eq!(enoent.errno, 2);
        assert!(parse_ack(0, &[0, 0]).is_err());
        assert!(parse_ack(0, &5i32.to_ne_bytes()).is_err());
        assert!(parse_ack(0, &i32::MIN.to_ne_bytes()).is_err());

        // Extended ack: code, capped echoed header, then NLMSGERR_ATTR_MSG.
        let mut payload = (-22i32).to_ne_bytes().to_vec();
        payload.extend(MessageBuilder::new(16, 0, 3).finish().unwrap());
        let mut attrs = MessageBuilder::new(0, 0, 0);
        attrs.attr_str(NLMSGERR_ATTR_MSG, "MTU too large");
        payload.extend(&attrs.finish().unwrap()[HEADER_LEN..]);
        let ack = parse_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload).unwrap();
        assert_eq!(ack.errno, 22);
        assert_eq!(ack.explanation.as_deref(), Some("MTU too large"));
        // The same, cut short anywhere: never a panic.
        for cut in 0..payload.len() {
            let _ = parse_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload[..cut]);
            let _ = parse_ack(NLM_F_ACK_TLVS, &payload[..cut]);
        }
    }
}
