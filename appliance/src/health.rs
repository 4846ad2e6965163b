//! The health responder: `GET`/`HEAD /` answers 200 with a one-line body (`wg0 up`) only when
//! the judge says every condition holds, else 503 with one line per failing condition. The
//! judge (the service's, or init's while no service runs) decides; this module only speaks HTTP,
//! on its own thread so it stays responsive while the data plane is busy.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the health check says right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 200, with this one-line body (`wg0 up`).
    Healthy(String),
    /// 503, one line per failing condition.
    Unhealthy(Vec<String>),
}

impl Verdict {
    pub fn status(&self) -> u16 {
        match self {
            Verdict::Healthy(_) => 200,
            Verdict::Unhealthy(_) => 503,
        }
    }

    pub fn body(&self) -> String {
        match self {
            Verdict::Healthy(line) => format!("{line}\n"),
            Verdict::Unhealthy(reasons) => reasons.iter().map(|r| format!("{r}\n")).collect(),
        }
    }
}

/// How long to keep trying when the port is still held (init's placeholder responder closing, or
/// a previous service instance exiting).
const BIND_PATIENCE: Duration = Duration::from_secs(5);

/// A running responder; `stop` (or drop) closes the port.
pub struct HealthResponder {
    server: Arc<tiny_http::Server>,
    /// Our own handle on the listening socket: shutting it down stops the listening at once
    /// (tiny_http would otherwise close it only after its accept thread notices).
    listener: Option<std::os::fd::OwnedFd>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HealthResponder {
    pub fn start(
        listen: SocketAddr,
        judge: impl Fn() -> Verdict + Send + 'static,
    ) -> io::Result<HealthResponder> {
        let listener = bind(listen)?;
        let own_handle = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| io::Error::other(format!("health listener on {listen}: {e}")))?;
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let server = server.clone();
            let stopping = stopping.clone();
            std::thread::Builder::new()
                .name("health".into())
                .spawn(move || serve(&server, &stopping, &judge))?
        };
        Ok(HealthResponder { server, listener: Some(own_handle), stopping, thread: Some(thread) })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(listener) = self.listener.take() {
            let _ = nix::sys::socket::shutdown(std::os::fd::AsRawFd::as_raw_fd(&listener), nix::sys::socket::Shutdown::Both);
        }
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HealthResponder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind(listen: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + BIND_PATIENCE;
    loop {
        let socket = Socket::new(Domain::for_address(listen), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        match socket.bind(&listen.into()).and_then(|_| socket.listen(64)) {
            Ok(()) => return Ok(socket.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("health listener on {listen}: {e}"))),
        }
    }
}

fn serve(server: &tiny_http::Server, stopping: &AtomicBool, judge: &dyn Fn() -> Verdict) {
    while !stopping.load(Ordering::Relaxed) {
        let request = match server.recv_timeout(Duration::from_millis(500)) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(_) => break,
        };
        let (status, body, head) = answer(request.method(), request.url(), judge);
        let length = body.len();
        let mut headers = vec![header("Content-Type", "text/plain; charset=utf-8")];
        if status == 405 {
            headers.push(header("Allow", "GET, HEAD"));
        }
        // HEAD: the same status and length as GET, no body.
        let data: Box<dyn io::Read + Send> =
            if head { Box::new(io::empty()) } else { Box::new(io::Cursor::new(body.into_bytes())) };
        let response = tiny_http::Response::new(status.into(), headers, data, Some(length), None);
        let _ = request.respond(response);
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header {
        field: name.parse().unwrap_or_else(|_| unreachable!("static header names are ASCII")),
        value: value.parse().unwrap_or_else(|_| unreachable!("static header values are ASCII")),
    }
}

/// Status, body and whether the request was HEAD, for one request.
fn answer(method: &tiny_http::Method, url: &str, judge: &dyn Fn() -> Verdict) -> (u16, String, bool) {
    let path = url.split('?').next().unwrap_or("");
    let head = *method == tiny_http::Method::Head;
    if path != "/" {
        return (404, "not found: the health check is at /\n".into(), head);
    }
    if !head && *method != tiny_http::Method::Get {
        return (405, "method not allowed: use GET or HEAD\n".into(), false);
    }
    let verdict = judge();
    (verdict.status(), verdict.body(), head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn get(address: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }

    #[test]
    fn answers_200_and_503_with_reasons_over_real_http() {
        let flag = Arc::new(AtomicBool::new(true));
        let judge_flag = flag.clone();
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        let responder = HealthResponder::start(address, move || {
            if judge_flag.load(Ordering::Relaxed) {
                Verdict::Healthy("wg0 up".into())
            } else {
                Verdict::Unhealthy(vec!["tun: wg0 is down".into(), "draining".into()])
            }
        })
        .unwrap();
        let ok = get(address, "GET / HTTP/1.0\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.0 200") || ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("wg0 up\n"), "{ok}");
        flag.store(false, Ordering::Relaxed);
        let bad = get(address, "GET / HTTP/1.0\r\n\r\n");
        assert!(bad.contains(" 503 "), "{bad}");
        assert!(bad.ends_with("tun: wg0 is down\ndraining\n"), "{bad}");
        let head = get(address, "HEAD / HTTP/1.0\r\n\r\n");
        assert!(head.contains(" 503 "), "{head}");
        assert!(!head.contains("draining"), "{head}");
        assert!(get(address, "GET /x HTTP/1.0\r\n\r\n").contains(" 404 "));
        assert!(get(address, "POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n").contains(" 405 "));
        // Garbage is answered (or closed), never a crash: the next request still works.
        let _ = get(address, "\x00\x01garbage\r\n\r\n");
        assert!(get(address, "GET / HTTP/1.0\r\n\r\n").contains(" 503 "));
        responder.stop();
        assert!(TcpStream::connect(address).is_err());
    }
}
