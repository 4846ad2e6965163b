//! The health endpoint while no service runs (no config yet, a bad config, or between
//! restarts): every request to `[health] listen` gets `503` and the reason, so the load balancer
//! and the operator see why this bastion is out of service. The HTTP side is the service's own
//! responder (`crate::health`), whose `stop` stops listening at once, so the service can bind
//! the same port right after.

use crate::health::{self, HealthResponder, HealthVerdict};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub struct StandbyHealth {
    listen: SocketAddr,
    reason: Arc<Mutex<String>>,
    responder: HealthResponder,
}

impl StandbyHealth {
    /// Starts answering 503 on `listen`.
    pub fn start(listen: SocketAddr, reason: &str) -> std::io::Result<StandbyHealth> {
        let reason = Arc::new(Mutex::new(reason.to_string()));
        let shown = reason.clone();
        let responder = health::start(listen, move || {
            HealthVerdict::Unhealthy(vec![shown.lock().map(|r| r.clone()).unwrap_or_default()])
        })?;
        Ok(StandbyHealth { listen, reason, responder })
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    pub fn set_reason(&self, reason: &str) {
        if let Ok(mut r) = self.reason.lock() {
            *r = reason.to_string();
        }
    }

    /// Stops answering; the port can be bound again when this returns.
    pub fn stop(self) {
        self.responder.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn answers_503_with_the_reason_and_frees_the_port_on_stop() {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let h = StandbyHealth::start(addr, "config: waiting for user-data").unwrap();
        let r = get(addr, "GET / HTTP/1.0\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.0 503 ") || r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.ends_with("\r\n\r\nconfig: waiting for user-data\n"), "{r}");
        h.set_reason("service: restarting after exit status 1");
        let r = get(addr, "HEAD / HTTP/1.0\r\n\r\n");
        assert!(r.contains("Content-Length: 40\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
        h.stop();
        // The port is free at once for a listener that binds as the service does.
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&addr.into()).expect("port released by stop");
        s.listen(1).expect("port released by stop");
    }
}
