//! HTTP on both sides of the tunnel: a real `python3 -m http.server` in a private namespace
//! (its access log names each client's source address), and a client (ureq) that runs inside
//! any namespace (for pages through the tunnel and for the bastion's health responder).

use std::net::SocketAddr;
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

    pub fn process(&self) -> &Process {
        &self.process
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

/// One HTTP request from inside `ns` with ureq (no proxy, no redirects, any status is an
/// answer). `timeout` bounds the connect and the whole exchange. Errors say which step failed.
pub fn request(
    ns: &Netns,
    method: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let what = format!("{method} http://{addr}{path} from namespace {}", ns.name());
    ns.enter(|| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_connect(Some(timeout))
            .timeout_global(Some(timeout))
            .build()
            .into();
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("Connection", "close")
            .body(())
            .map_err(|e| format!("{what}: {e}"))?;
        let response = agent.run(request).map_err(|e| format!("{what}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .into_with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(|e| format!("{what}: reading the answer: {e}"))?;
        Ok(HttpResponse { status, body: String::from_utf8_lossy(&body).into_owned() })
    })
}
