//! `bastion status`: a running service answers on an abstract Unix socket
//! (`@bastion-status-<interface>`, scoped to the network namespace, so every bastion in its own
//! namespace has its own) with its [`StatusReport`] as JSON — peers, last handshake, bytes, the
//! last self-test, drain state. Never keys. Only root or the service's own user may ask. The
//! client renders it as text (`report::render_text`) or prints the JSON (`--json`).

mod report;

pub use report::{render_text, StatusReport, SCHEMA_VERSION};
pub use report::{ConfigSource, Dropped, Failover, Health, Peer, SelfTest};

use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A report is a few lines per peer; this caps what the client reads from a misbehaving server.
const MAX_REPORT_BYTES: u64 = 16 << 20;

fn socket_name(interface: &str) -> String {
    format!("bastion-status-{interface}")
}

/// The server side: answers every connection with `report()`.
pub struct StatusServer {
    stopping: Arc<AtomicBool>,
    listener: Arc<UnixListener>,
    thread: Option<JoinHandle<()>>,
}

impl StatusServer {
    pub fn start(interface: &str, report: impl Fn() -> StatusReport + Send + 'static) -> io::Result<StatusServer> {
        let address = SocketAddr::from_abstract_name(socket_name(interface).as_bytes())?;
        let listener = Arc::new(
            UnixListener::bind_addr(&address)
                .map_err(|e| io::Error::new(e.kind(), format!("status socket @{}: {e}", socket_name(interface))))?,
        );
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let listener = listener.clone();
            let stopping = stopping.clone();
            std::thread::Builder::new().name("status".into()).spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(mut stream) = stream {
                        if may_ask(&stream) {
                            let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                            let json = serde_json::to_vec(&report()).unwrap_or_default();
                            let _ = stream.write_all(&json);
                        }
                    }
                }
            })?
        };
        Ok(StatusServer { stopping, listener, thread: Some(thread) })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Wakes the blocked accept; the loop then sees `stopping`.
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&*self.listener),
            nix::sys::socket::Shutdown::Both,
        );
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Root, or the user the service runs as.
fn may_ask(stream: &UnixStream) -> bool {
    match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(cred) => cred.uid() == 0 || cred.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}

/// The client side (`bastion status`): the report of the service on `interface` in this network
/// namespace.
pub fn fetch(interface: &str) -> io::Result<StatusReport> {
    let address = SocketAddr::from_abstract_name(socket_name(interface).as_bytes())?;
    let stream = UnixStream::connect_addr(&address).map_err(|e| {
        io::Error::new(e.kind(), format!("no bastion service for {interface} in this network namespace ({e})"))
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut bytes = Vec::new();
    stream.take(MAX_REPORT_BYTES).read_to_end(&mut bytes)?;
    parse(&bytes)
}

/// The server's answer, checked: JSON of a report of our schema version.
pub fn parse(bytes: &[u8]) -> io::Result<StatusReport> {
    let bad =
        |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("the status answer is not a report: {why}"));
    let report: StatusReport = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if report.schema != SCHEMA_VERSION {
        return Err(bad(format!("schema {} (this bastion reads {SCHEMA_VERSION})", report.schema)));
    }
    Ok(report)
}

/// Human units for byte counters.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_reads_the_servers_report() {
        let name = format!("t{}", std::process::id());
        let server = StatusServer::start(&name, report::example).unwrap();
        assert_eq!(fetch(&name).unwrap(), report::example());
        server.stop();
        assert!(fetch(&name).is_err());
    }

    #[test]
    fn garbage_answers_are_errors() {
        for bad in [&b""[..], b"{", b"[]", b"null", b"{\"schema\":1}", &[0xff, 0xfe]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let mut other = report::example();
        other.schema = 99;
        assert!(parse(&serde_json::to_vec(&other).unwrap()).is_err());
    }

    #[test]
    fn byte_counts_read_like_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
