//! The "please move" notice a draining bastion sends its peers inside the tunnel, and that
//! `bastion watch` listens for: one UDP datagram from the bastion's tunnel address to the
//! peer's tunnel address, port [`PORT`], payload `bastion-move 1 REASON\n`.
//!
//! Inside the tunnel it is authenticated by WireGuard itself: a datagram that arrives on the
//! client's WireGuard interface came from a peer with a valid session and a source address in
//! that peer's allowed IPs, so nobody outside the tunnel can make a client move. The payload is
//! parsed strictly (anything else is not a notice) and carries no secret.

/// The UDP port `bastion watch` listens on, on the client's WireGuard interface. Below 1024,
/// so on the client only root may bind it (an unprivileged user can neither listen there in
/// watch's place nor hold it before watch starts); the bastion drops it between peers.
pub const PORT: u16 = 821;

const PREFIX: &str = "bastion-move 1 ";

/// Why the bastion asks its peers to move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// It is draining: shutting down, or taken out of its load balancer's target group.
    Drain,
}

impl Reason {
    fn word(self) -> &'static str {
        match self {
            Reason::Drain => "drain",
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    #[error("not a move notice ({0} bytes)")]
    NotANotice(usize),
    #[error("a move notice with an unknown reason")]
    UnknownReason,
}

/// The datagram's payload.
pub fn encode(reason: Reason) -> Vec<u8> {
    format!("{PREFIX}{}\n", reason.word()).into_bytes()
}

/// Reads a datagram's payload; anything but a well-formed notice is an error.
pub fn parse(payload: &[u8]) -> Result<Reason, NoticeError> {
    let text = std::str::from_utf8(payload).map_err(|_| NoticeError::NotANotice(payload.len()))?;
    let rest =
        text.strip_prefix(PREFIX).and_then(|r| r.strip_suffix('\n')).ok_or(NoticeError::NotANotice(payload.len()))?;
    match rest {
        "drain" => Ok(Reason::Drain),
        _ => Err(NoticeError::UnknownReason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_anything_else_is_refused() {
        assert_eq!(parse(&encode(Reason::Drain)), Ok(Reason::Drain));
        assert_eq!(parse(b"bastion-move 1 drain\n"), Ok(Reason::Drain));
        assert_eq!(parse(b"bastion-move 1 reboot\n"), Err(NoticeError::UnknownReason));
        for garbage in
            [&b""[..], b"bastion-move 1 drain", b"bastion-move 2 drain\n", b"\xff\xfe", b"GET / HTTP/1.1\r\n"]
        {
            assert_eq!(parse(garbage), Err(NoticeError::NotANotice(garbage.len())), "{garbage:?}");
        }
    }
}
