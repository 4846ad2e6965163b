//! A small HTTP/1.1 client for the instance metadata service: one request per connection
//! (`Connection: close`), with a connect timeout, an overall deadline, and caps on the header
//! section and the body.
//!
//! `parse_response` only turns bytes into a `Response` (or says it needs more, or why the bytes
//! are not a response we accept); `exchange` is the thin shell that owns the socket. Nothing a
//! server sends can make this module panic, allocate without bound or wait forever.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Caps on what one response may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Status line plus headers, including the blank line.
    pub max_head: usize,
    /// The decoded body.
    pub max_body: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Header names as sent; look them up with [`Response::header`].
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[cfg(test)]
impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The bytes are not an HTTP/1.x response we accept; says which part and why.
    Malformed(String),
    HeadTooLarge(usize),
    BodyTooLarge(usize),
    /// The server closed the connection before the response was complete.
    Truncated(String),
    /// The whole exchange did not finish before the deadline.
    Timeout {
        after: Duration,
        received: usize,
    },
    Io(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            HttpError::Malformed(why) => write!(f, "malformed response: {why}"),
            HttpError::HeadTooLarge(max) => write!(f, "response headers larger than {max} bytes"),
            HttpError::BodyTooLarge(max) => write!(f, "response body larger than {max} bytes"),
            HttpError::Truncated(what) => write!(f, "connection closed in the middle of the {what}"),
            HttpError::Timeout { after, received } => {
                write!(f, "response not complete after {:.1} s ({received} bytes received)", after.as_secs_f64())
            }
            HttpError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HttpError {}

const MAX_HEADERS: usize = 100;
const MAX_CHUNK_LINE: usize = 1024;

/// Parses `buf`, the bytes received so far. `eof`: the server has closed its side.
/// `Ok(None)`: the response is incomplete, read more.
pub fn parse_response(buf: &[u8], eof: bool, limits: &Limits) -> Result<Option<Response>, HttpError> {
    let mut start = 0;
    // Interim 1xx responses (a server answering an Expect we never send) are skipped, a few at most.
    for _ in 0..4 {
        let rest = &buf[start..];
        let Some(head_len) = find(rest, b"\r\n\r\n") else {
            if rest.len() > limits.max_head {
                return Err(HttpError::HeadTooLarge(limits.max_head));
            }
            if eof {
                return Err(HttpError::Truncated("header section".into()));
            }
            return Ok(None);
        };
        if head_len + 4 > limits.max_head {
            return Err(HttpError::HeadTooLarge(limits.max_head));
        }
        let (status, reason, headers) = parse_head(&rest[..head_len])?;
        let body_start = start + head_len + 4;
        if (100..200).contains(&status) {
            start = body_start;
            continue;
        }
        let body = if status == 204 || status == 304 {
            Some(Vec::new())
        } else {
            parse_body(&buf[body_start..], eof, &headers, limits)?
        };
        return Ok(body.map(|body| Response { status, reason, headers, body }));
    }
    Err(HttpError::Malformed("too many interim (1xx) responses".into()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Status code, reason phrase, header fields.
type Head = (u16, String, Vec<(String, String)>);

fn parse_head(head: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| HttpError::Malformed("header section is not text".into()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || version.len() != 8 {
        return Err(HttpError::Malformed(format!(
            "status line {:?} does not start with HTTP/1.x",
            truncate(status_line)
        )));
    }
    let code = parts.next().unwrap_or("");
    let status = match code.parse::<u16>() {
        Ok(s) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) && (100..600).contains(&s) => s,
        _ => {
            return Err(HttpError::Malformed(format!(
                "status line {:?} has no 3-digit status code",
                truncate(status_line)
            )))
        }
    };
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() >= MAX_HEADERS {
            return Err(HttpError::Malformed(format!("more than {MAX_HEADERS} headers")));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed(format!("header line {:?} has no colon", truncate(line))));
        };
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(HttpError::Malformed(format!("bad header name {:?}", truncate(name))));
        }
        headers.push((name.to_string(), value.trim_matches(|c| c == ' ' || c == '\t').to_string()));
    }
    Ok((status, reason, headers))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn parse_body(
    data: &[u8],
    eof: bool,
    headers: &[(String, String)],
    limits: &Limits,
) -> Result<Option<Vec<u8>>, HttpError> {
    fn lookup<'h>(headers: &'h [(String, String)], name: &'static str) -> impl Iterator<Item = &'h (String, String)> {
        headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name))
    }
    if let Some((_, te)) = lookup(headers, "transfer-encoding").last() {
        if !te.eq_ignore_ascii_case("chunked") || lookup(headers, "transfer-encoding").count() > 1 {
            return Err(HttpError::Malformed(format!("unsupported Transfer-Encoding {:?}", truncate(te))));
        }
        return parse_chunked(data, eof, limits);
    }
    let mut length: Option<usize> = None;
    for (_, value) in lookup(headers, "content-length") {
        if value.is_empty() || value.len() > 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HttpError::Malformed(format!("bad Content-Length {:?}", truncate(value))));
        }
        let n: usize = value.parse().map_err(|_| HttpError::Malformed("bad Content-Length".into()))?;
        if length.is_some_and(|l| l != n) {
            return Err(HttpError::Malformed("conflicting Content-Length headers".into()));
        }
        length = Some(n);
    }
    match length {
        Some(n) if n > limits.max_body => Err(HttpError::BodyTooLarge(limits.max_body)),
        Some(n) if data.len() >= n => Ok(Some(data[..n].to_vec())),
        Some(n) if eof => Err(HttpError::Truncated(format!("body ({} of {n} bytes)", data.len()))),
        Some(_) => Ok(None),
        // No length: the body ends when the server closes the connection.
        None if data.len() > limits.max_body => Err(HttpError::BodyTooLarge(limits.max_body)),
        None if eof => Ok(Some(data.to_vec())),
        None => Ok(None),
    }
}

fn parse_chunked(data: &[u8], eof: bool, limits: &Limits) -> Result<Option<Vec<u8>>, HttpError> {
    let incomplete = |what: &str| {
        if eof {
            Err(HttpError::Truncated(what.into()))
        } else {
            Ok(None)
        }
    };
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_len) = find(&data[pos..], b"\r\n") else {
            if data.len() - pos > MAX_CHUNK_LINE {
                return Err(HttpError::Malformed("chunk size line too long".into()));
            }
            return incomplete("chunked body");
        };
        if line_len > MAX_CHUNK_LINE {
            return Err(HttpError::Malformed("chunk size line too long".into()));
        }
        let line = &data[pos..pos + line_len];
        let size_text = line.split(|&b| b == b';').next().unwrap_or(&[]);
        let size_text = std::str::from_utf8(size_text).unwrap_or("").trim_matches(|c| c == ' ' || c == '\t');
        if size_text.is_empty() || size_text.len() > 8 || !size_text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HttpError::Malformed(format!("bad chunk size {:?}", truncate(&String::from_utf8_lossy(line)))));
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|_| HttpError::Malformed("bad chunk size".into()))?;
        pos += line_len + 2;
        if size == 0 {
            // Trailer fields, then the final blank line.
            loop {
                let Some(len) = find(&data[pos..], b"\r\n") else {
                    if data.len() - pos > limits.max_head {
                        return Err(HttpError::HeadTooLarge(limits.max_head));
                    }
                    return incomplete("chunked trailer");
                };
                pos += len + 2;
                if len == 0 {
                    return Ok(Some(body));
                }
            }
        }
        if body.len() + size > limits.max_body {
            return Err(HttpError::BodyTooLarge(limits.max_body));
        }
        if data.len() - pos < size + 2 {
            return incomplete("chunked body");
        }
        body.extend_from_slice(&data[pos..pos + size]);
        if &data[pos + size..pos + size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk data not followed by CRLF".into()));
        }
        pos += size + 2;
    }
}

/// A request to send: the caller has checked that no value contains CR or LF.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The Host header (the authority of the URL).
    pub host: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

impl Request<'_> {
    pub fn to_bytes(&self) -> Result<Vec<u8>, HttpError> {
        let mut fields = vec![self.method, self.path, self.host];
        for (n, v) in self.headers {
            fields.push(n);
            fields.push(v);
        }
        if fields.iter().any(|f| f.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)) {
            return Err(HttpError::Io("request field contains a line break".into()));
        }
        let mut text = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", self.method, self.path, self.host);
        for (n, v) in self.headers {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        if self.method == "PUT" || self.method == "POST" {
            text.push_str("Content-Length: 0\r\n");
        }
        text.push_str("Connection: close\r\n\r\n");
        Ok(text.into_bytes())
    }
}

/// Connects to `addr`, sends `request`, and reads one response, all within `deadline`.
pub fn exchange(
    addr: SocketAddr,
    request: &Request,
    limits: &Limits,
    connect_timeout: Duration,
    deadline: Duration,
) -> Result<Response, HttpError> {
    let started = Instant::now();
    let bytes = request.to_bytes()?;
    let mut stream = TcpStream::connect_timeout(&addr, connect_timeout.min(deadline))
        .map_err(|e| HttpError::Io(format!("connect to {addr}: {e}")))?;
    let remaining = |started: Instant| deadline.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
    let _ = stream.set_nodelay(true);
    stream
        .set_write_timeout(Some(remaining(started)))
        .and_then(|_| stream.write_all(&bytes))
        .map_err(|e| HttpError::Io(format!("send to {addr}: {e}")))?;
    // Bounds the bytes on the wire, not only the decoded body: chunk framing adds overhead.
    let max_raw = limits.max_head + limits.max_body * 2 + 4096;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if started.elapsed() >= deadline {
            return Err(HttpError::Timeout { after: deadline, received: buf.len() });
        }
        stream.set_read_timeout(Some(remaining(started))).map_err(|e| HttpError::Io(e.to_string()))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(HttpError::Timeout { after: deadline, received: buf.len() });
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HttpError::Io(format!("receive from {addr}: {e}"))),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(response) = parse_response(&buf, n == 0, limits)? {
            return Ok(response);
        }
        if buf.len() > max_raw {
            return Err(HttpError::BodyTooLarge(limits.max_body));
        }
        if n == 0 {
            // At end of stream parse_response has already returned a response or an error;
            // this only guards against ever spinning on a closed socket.
            return Err(HttpError::Truncated("response".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_head: 1024, max_body: 64 };

    fn parse(bytes: &[u8], eof: bool) -> Result<Option<Response>, HttpError> {
        parse_response(bytes, eof, &LIMITS)
    }

    #[test]
    fn content_length_response() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  b \r\n\r\nhelloEXTRA", false).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.header("content-LENGTH"), Some("5"));
    }

    #[test]
    fn every_prefix_of_a_good_response_is_incomplete_not_an_error() {
        let full =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nwiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n";
        for i in 0..full.len() {
            assert_eq!(parse(&full[..i], false), Ok(None), "prefix {i}");
            assert!(matches!(parse(&full[..i], true), Err(HttpError::Truncated(_))), "prefix {i} at eof");
        }
        let r = parse(full, false).unwrap().unwrap();
        assert_eq!(r.body, b"wikipedia");
    }

    #[test]
    fn truncated_body_at_eof() {
        let e = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true).unwrap_err();
        assert_eq!(e, HttpError::Truncated("body (3 of 10 bytes)".into()));
    }

    #[test]
    fn close_delimited_body() {
        let bytes = b"HTTP/1.0 200 OK\r\n\r\nuntil close";
        assert_eq!(parse(bytes, false), Ok(None));
        assert_eq!(parse(bytes, true).unwrap().unwrap().body, b"until close");
    }

    #[test]
    fn oversize_bodies_are_refused() {
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n", false), Err(HttpError::BodyTooLarge(64)));
        let mut close_delimited = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        close_delimited.extend_from_slice(&[b'a'; 65]);
        assert_eq!(parse(&close_delimited, false), Err(HttpError::BodyTooLarge(64)));
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..5 {
            chunked.extend_from_slice(b"10\r\n0123456789abcdef\r\n");
        }
        assert_eq!(parse(&chunked, false), Err(HttpError::BodyTooLarge(64)));
        // A chunk size that would overflow arithmetic is just a bad size.
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", false),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn oversize_head_is_refused() {
        let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
        while bytes.len() <= 1024 {
            bytes.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(parse(&bytes, false), Err(HttpError::HeadTooLarge(1024)));
    }

    #[test]
    fn garbage_is_malformed() {
        let cases: &[&[u8]] = &[
            b"\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
            b"HTTP/1.1 200 \xff\xfe\r\n\r\n",
        ];
        for case in cases {
            let r = parse(case, true);
            assert!(matches!(r, Err(HttpError::Malformed(_))), "{:?} gave {r:?}", String::from_utf8_lossy(case));
        }
        // Random bytes never panic.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let len = (x % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                    b"HTTP/1.1 200\r\n:ContentLength0123456789abcdefchunked; \xff"[(x >> 24) as usize % 50]
                })
                .collect();
            let _ = parse(&bytes, false);
            let _ = parse(&bytes, true);
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_204_has_no_body() {
        let r = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", false).unwrap().unwrap();
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
    }

    #[test]
    fn requests_refuse_header_injection() {
        let req = Request { method: "GET", path: "/x", host: "h", headers: &[("T", "a\r\nEvil: 1")] };
        assert!(req.to_bytes().is_err());
        let req =
            Request { method: "PUT", path: "/latest/api/token", host: "169.254.169.254", headers: &[("X-T", "5")] };
        assert_eq!(
            String::from_utf8(req.to_bytes().unwrap()).unwrap(),
            "PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-T: 5\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
}
