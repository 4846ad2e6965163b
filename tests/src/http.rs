//! HTTP on both sides of the tunnel: a real `python3 -m http.server` in a private namespace
//! (its access log names each client's source address), and a small HTTP/1.0 client that runs
//! inside any namespace (for pages through the tunnel and for the bastion's health responder).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::netns::Netns;
use crate::process::Process;
use crate::rundir::RunDir;

/// Debian's interpreter, so a pyenv or venv on the machine does not change what runs.
pub const PYTHON: &str = "/usr/bin/python3";

pub(crate) fn python() -> &'static str {
    if std::path::Path::new(PYTHON).exists() {
        PYTHON
    } else {
        "python3"
    }
}

/// `python3 -m http.server` serving one page. It binds `::` with IPv4 mapped in (http.server's
/// dual-stack default), so one server answers v4 and v6; the access log is its stderr.
pub struct HttpServer {
    process: Process,
    /// Text the served page contains, unique per server.
    pub marker: String,
    pub port: u16,
}

impl HttpServer {
    pub fn start(ns: &Netns, dir: &RunDir, label: &str, port: u16) -> HttpServer {
        let marker = format!("page-of-{label}-{:016x}", crate::random_u64());
        let root = dir.path().join(format!("www-{label}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), format!("<p>{marker}</p>\n")).unwrap();
        let process = ns.spawn(
            &format!("http.server {label}"),
            &[
                python(),
                "-u",
                "-m",
                "http.server",
                "--bind",
                "::",
                "--directory",
                root.to_str().unwrap(),
                &port.to_string(),
            ],
            &[],
            &dir.path().join(format!("http-{label}.log")),
        );
        let server = HttpServer { process, marker, port };
        server.process.wait_for_log("Serving HTTP", Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
        server
    }

    /// The access log (and anything else the server printed).
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn log_report(&self) -> String {
        self.process.log_report()
    }

    /// A request path no other request uses, so its access-log line can be found.
    pub fn probe_path() -> String {
        format!("/index.html?probe={:016x}", crate::random_u64())
    }

    /// The source address the server saw for the request whose path is `path` (IPv4-mapped
    /// addresses are given as plain IPv4).
    pub fn client_of(&self, path: &str, timeout: Duration) -> Result<String, String> {
        let line = self.process.wait_for_log(&format!("\"GET {path} "), timeout)?;
        let address = line.split_whitespace().next().unwrap_or("");
        Ok(address.strip_prefix("::ffff:").unwrap_or(address).to_string())
    }
}

/// A parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// The most of a response the client reads: a health body or a test page is far smaller.
const MAX_RESPONSE: u64 = 1 << 20;

/// `GET path` from inside `ns` to `addr`, one attempt; `timeout` bounds connect and each read.
pub fn get(ns: &Netns, addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse, String> {
    request(ns, "GET", addr, path, timeout)
}

/// One HTTP/1.0 request from inside `ns`. Errors say which step failed.
pub fn request(
    ns: &Netns,
    method: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let what = format!("{method} http://{addr}{path} from namespace {}", ns.name());
    ns.enter(|| {
        let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{what}: connect: {e}"))?;
        stream.set_read_timeout(Some(timeout)).unwrap();
        stream.set_write_timeout(Some(timeout)).unwrap();
        let host = addr.to_string();
        write!(stream, "{method} {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("{what}: send: {e}"))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(|e| format!("{what}: read: {e} (after {} bytes)", raw.len()))?;
        parse_response(&raw).map_err(|e| format!("{what}: {e}"))
    })
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| format!("no end of headers in {} bytes: {text:?}", raw.len()))?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/"))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    Ok(HttpResponse { status, body: body.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\nwg0 down\nx\n").unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "wg0 down\nx\n");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_response(b"hello").is_err());
        assert!(parse_response(b"FTP 200\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.0 abc\r\n\r\n").is_err());
    }
}
