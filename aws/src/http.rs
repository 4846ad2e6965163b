//! The one HTTP client: ureq over rustls (ring) with the Mozilla roots built in, bounded in time
//! and in response size. Requests and responses are plain values; this module only moves them.

use std::time::Duration;

/// The largest response body read (an EBS block is 512 KiB; XML pages are far smaller).
const MAX_RESPONSE: u64 = 8 << 20;

#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// The status's canonical reason phrase (`Not Found`), for messages.
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why no response came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// DNS found no address for the host.
    HostNotFound(String),
    /// No connection within the connect timeout.
    ConnectTimeout(String),
    /// No connection at all: refused, no route to the host.
    Unreachable(String),
    /// Connected, but the whole exchange took longer than allowed.
    Timeout(String),
    /// The answer's body is longer than the limit (in bytes).
    BodyTooLarge(u64),
    /// Anything else on the way (refused, reset, TLS, a broken HTTP answer).
    Failed(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            TransportError::HostNotFound(host) => write!(f, "cannot resolve {host}"),
            TransportError::ConnectTimeout(what) => write!(f, "no connection in time: {what}"),
            TransportError::Unreachable(what) => f.write_str(what),
            TransportError::Timeout(what) => write!(f, "timed out: {what}"),
            TransportError::BodyTooLarge(limit) => write!(f, "response body larger than {limit} bytes"),
            TransportError::Failed(what) => f.write_str(what),
        }
    }
}

/// A configured client. Cheap to clone (connections are pooled and shared).
#[derive(Clone)]
pub struct Http {
    agent: ureq::Agent,
    max_body: u64,
}

impl Http {
    /// For AWS APIs: `timeout` for the whole call; proxies from the environment as usual.
    pub fn new(timeout: Duration) -> Http {
        Http::build(timeout, Duration::from_secs(10), true)
    }

    /// For link-local metadata services (IMDS, the ECS agent): short timeouts, never a proxy.
    pub fn link_local(timeout: Duration) -> Http {
        Http::build(timeout, timeout, false)
    }

    /// Like `link_local` with its own connect timeout and body limit (the appliance's IMDS
    /// client: user-data is at most 64 KiB).
    pub fn bounded(total: Duration, connect: Duration, max_body: u64) -> Http {
        Http { max_body, ..Http::build(total, connect, false) }
    }

    fn build(timeout: Duration, connect: Duration, proxy_from_env: bool) -> Http {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(connect))
            .user_agent(concat!("bastion/", env!("CARGO_PKG_VERSION")));
        if !proxy_from_env {
            config = config.proxy(None);
        }
        Http { agent: config.build().into(), max_body: MAX_RESPONSE }
    }

    pub fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut builder = ureq::http::Request::builder().method(request.method.as_str()).uri(request.url.as_str());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let built = builder
            .body(request.body.clone())
            .map_err(|e| TransportError::Failed(format!("{} {}: {e}", request.method, request.url)))?;
        let what = || format!("{} {}", request.method, request.url);
        let response = self.agent.run(built).map_err(|e| match e {
            ureq::Error::HostNotFound => TransportError::HostNotFound(host_of(&request.url)),
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
                TransportError::ConnectTimeout(what())
            }
            ureq::Error::Timeout(t) => TransportError::Timeout(format!("{} ({t})", what())),
            ureq::Error::Io(e) if unreachable(&e) => TransportError::Unreachable(format!("{}: {e}", what())),
            ureq::Error::ConnectionFailed => TransportError::Unreachable(format!("{}: connection failed", what())),
            other => TransportError::Failed(format!("{}: {other}", what())),
        })?;
        let status = response.status().as_u16();
        let reason = response.status().canonical_reason().unwrap_or("").to_string();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = response.into_body().into_with_config().limit(self.max_body).read_to_vec().map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => TransportError::BodyTooLarge(self.max_body),
            ureq::Error::Timeout(t) => TransportError::Timeout(format!("{} ({t})", what())),
            other => TransportError::Failed(format!("{}: reading the answer: {other}", what())),
        })?;
        Ok(HttpResponse { status, reason, headers, body })
    }
}

/// Whether an I/O error means nothing answered at that address.
fn unreachable(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | NetworkUnreachable | HostUnreachable | AddrNotAvailable)
}

/// `host[:port]` of a URL, for messages.
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_for_messages() {
        assert_eq!(host_of("https://ec2.eu-west-1.amazonaws.com/?Action=X"), "ec2.eu-west-1.amazonaws.com");
        assert_eq!(host_of("http://127.0.0.1:5000/snapshots"), "127.0.0.1:5000");
        assert_eq!(host_of("garbage"), "garbage");
    }

    #[test]
    fn a_real_exchange_over_loopback() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // Read until the head and its 5-byte body are in: ureq may
            // write them in separate segments.
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"hello")) {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let request = String::from_utf8_lossy(&got).into_owned();
            s.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nX-A: b\r\nConnection: close\r\n\r\nbusy",
            )
            .unwrap();
            request
        });
        let http = Http::new(Duration::from_secs(5));
        let response = http
            .send(&HttpRequest {
                method: "POST".into(),
                url: format!("http://127.0.0.1:{port}/x"),
                headers: vec![("x-amz-target".into(), "T".into())],
                body: b"hello".to_vec(),
            })
            .unwrap();
        assert_eq!((response.status, response.header("x-a"), response.text().as_str()), (503, Some("b"), "busy"));
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /x HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("x-amz-target: t"), "{request}");
        assert!(request.ends_with("hello"), "{request}");
        // Nobody listening: an error, not a hang.
        drop(response);
        let refused = http.send(&HttpRequest {
            method: "GET".into(),
            url: format!("http://127.0.0.1:{port}/"),
            headers: vec![],
            body: vec![],
        });
        assert!(matches!(refused, Err(TransportError::Unreachable(_))), "{refused:?}");
    }
}
