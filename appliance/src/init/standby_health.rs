//! The health endpoint while no service runs (no config yet, a bad config, or between
//! restarts): every request to `[health] listen` gets `503` and the reason, so the load balancer
//! and the operator see why this bastion is out of service.
//!
//! Hand-written on a plain `TcpListener` rather than tiny_http so that `stop` returns only once
//! the listening socket is closed: the service binds the same port right after.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct StandbyHealth {
    listen: SocketAddr,
    reason: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StandbyHealth {
    /// Starts answering 503 on `listen`.
    pub fn start(listen: SocketAddr, reason: &str) -> std::io::Result<StandbyHealth> {
        let listener = bind(listen)?;
        let reason = Arc::new(Mutex::new(reason.to_string()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (reason.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("standby-health".into())
            .spawn(move || serve(listener, r, s))?;
        Ok(StandbyHealth { listen, reason, stop, thread: Some(thread) })
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    pub fn set_reason(&self, reason: &str) {
        if let Ok(mut r) = self.reason.lock() {
            *r = reason.to_string();
        }
    }

    /// Stops answering; the port is free when this returns.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StandbyHealth {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = if listen.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    // The service binds the same address with SO_REUSEADDR once we stop; be symmetric.
    s.set_reuse_address(true)?;
    s.set_cloexec(true)?;
    s.bind(&listen.into()).map_err(|e| std::io::Error::new(e.kind(), format!("bind {listen}: {e}")))?;
    s.listen(64)?;
    let listener: TcpListener = s.into();
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn serve(listener: TcpListener, reason: Arc<Mutex<String>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let text = reason.lock().map(|r| r.clone()).unwrap_or_default();
                answer(stream, &text);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Reads the request head (bounded in size and time) and answers 503 with the reason.
fn answer(mut stream: TcpStream, reason: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!("{reason}\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if head.starts_with(b"HEAD ") { "" } else { body.as_str() }
    );
    let _ = stream.write_all(response.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let r = get(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.ends_with("\r\n\r\nconfig: waiting for user-data\n"), "{r}");
        h.set_reason("service: restarting after exit status 1");
        let r = get(addr, "HEAD / HTTP/1.1\r\n\r\n");
        assert!(r.contains("Content-Length: 40\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "{r}");
        h.stop();
        // The port is free at once for a listener that binds as the service does.
        bind(addr).expect("port released by stop");
    }
}
