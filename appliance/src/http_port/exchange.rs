//! One request to the HTTP port and the shape of its answer, as bytes: no sockets, no clock.
//!
//! A connection carries exactly one request (the answer says `Connection: close`), so a client
//! cannot pipeline thousands of requests behind one another or hold the responder with one
//! connection. The request head may be at most [`MAX_REQUEST_BYTES`]; a longer one is answered
//! 431 and closed, before the rest of it is read. Bytes are parsed by `httparse` (the parser
//! hyper uses): garbage is a 400, never a panic.

/// The largest request head read (request line + headers + the blank line). A load balancer's
/// health check is about 100 bytes.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Headers parsed at most; a request with more is a 431 like one that is too long.
const MAX_HEADERS: usize = 32;

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Not a whole request head yet, and still within the limit: read more.
    Incomplete,
    /// A whole request head: what was asked for, and whether its `Accept` names the
    /// OpenMetrics text format (what Prometheus sends; curl and older agents do not).
    Request { method: Method, path: String, openmetrics: bool },
    /// Not HTTP, or over the limits: answer with this status and close.
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// Anything else: 405.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not an HTTP request.
    Malformed,
    /// 431: the head is longer than [`MAX_REQUEST_BYTES`] or has too many headers.
    TooLarge,
}

/// Looks at the bytes received on a connection so far.
pub fn receive(bytes: &[u8]) -> Received {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {
            let method = match request.method {
                Some("GET") => Method::Get,
                Some("HEAD") => Method::Head,
                _ => Method::Other,
            };
            let target = request.path.unwrap_or("");
            let path = target.split('?').next().unwrap_or("").to_string();
            let openmetrics = request.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("accept")
                    && String::from_utf8_lossy(h.value).to_ascii_lowercase().contains("application/openmetrics-text")
            });
            Received::Request { method, path, openmetrics }
        }
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_REQUEST_BYTES => Received::Refused(Refusal::TooLarge),
        Ok(httparse::Status::Partial) => Received::Incomplete,
        Err(httparse::Error::TooManyHeaders) => Received::Refused(Refusal::TooLarge),
        Err(_) => Received::Refused(Refusal::Malformed),
    }
}

/// Whether the body goes on the wire (not for `HEAD`; `Content-Length` is the same either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Sent,
    Omitted,
}

/// A whole one-request response: status line, `Content-Type`, `Content-Length`, `no-store`,
/// `Connection: close`, `Allow: GET, HEAD` when `allow`, then the body.
pub fn response(status: u16, content_type: &str, body: &[u8], omitted: Body, allow: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        reason_phrase(status),
        body.len()
    )
    .into_bytes();
    if allow {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if omitted == Body::Sent {
        out.extend_from_slice(body);
    }
    out
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str, openmetrics: bool) -> Received {
        Received::Request { method, path: path.into(), openmetrics }
    }

    #[test]
    fn requests_are_told_apart_by_method_and_path() {
        let cases: &[(&[u8], Received)] = &[
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", request(Method::Get, "/", false)),
            (b"HEAD /?probe=1 HTTP/1.0\r\n\r\n", request(Method::Head, "/", false)),
            (b"POST / HTTP/1.1\r\n\r\n", request(Method::Other, "/", false)),
            (b"GET /metrics HTTP/1.1\r\n\r\n", request(Method::Get, "/metrics", false)),
            // What Prometheus 2.x sends, and a bare one.
            (
                b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n\r\n",
                request(Method::Get, "/metrics", true),
            ),
            (b"GET /metrics HTTP/1.1\r\naccept: Application/OpenMetrics-Text\r\n\r\n", request(Method::Get, "/metrics", true)),
            (b"GET /metrics HTTP/1.1\r\nAccept: text/plain\r\n\r\n", request(Method::Get, "/metrics", false)),
            (b"GET / HTTP/1.1\r\nHost: x\r\n", Received::Incomplete),
            (b"", Received::Incomplete),
            (b"\x00\x01garbage\r\n\r\n", Received::Refused(Refusal::Malformed)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(&receive(bytes), expected, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn a_head_over_the_limit_is_refused_before_it_ends() {
        let mut long = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
        long.resize(MAX_REQUEST_BYTES - 1, b'a');
        assert_eq!(receive(&long), Received::Incomplete);
        long.push(b'a');
        assert_eq!(receive(&long), Received::Refused(Refusal::TooLarge));
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: y\r\n")).collect();
        let request = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(receive(request.as_bytes()), Received::Refused(Refusal::TooLarge));
    }
}
