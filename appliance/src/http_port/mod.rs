//! The appliance's bounded HTTP port: one thread serves every connection from one `poll` loop
//! (no thread per connection); each connection gets one request of at most 4 KiB
//! ([`exchange`]) and 2 s to send it and 2 s to take the answer; [`admission`] caps connections
//! per source and in all. Stopping never waits for a client: it closes every connection and the
//! port at once.
//!
//! The health port ([`crate::health`]) and the metrics port ([`crate::metrics`]) are both this
//! responder with another answer: both are reachable from the whole VPC, so nobody on them may
//! freeze or exhaust it.

mod admission;
pub mod exchange;

use admission::{Admission, Admit, ConnectionId, Limits};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long to keep trying when the port is still held (init's placeholder responder closing, or
/// a previous service instance exiting).
const BIND_PATIENCE: Duration = Duration::from_secs(5);
/// A client has this long from connecting to sending its whole request...
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// ...and this long to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest `poll` sleeps with nothing to do, so a lost wake-up costs at most this.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Connections accepted per loop turn, so a connect flood cannot starve the open ones.
const ACCEPTS_PER_TURN: usize = 64;
/// Refused connections are logged at most this often (with the count since the last line).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A running responder; `stop` (or drop) closes the port and every connection at once.
pub struct HttpResponder {
    stopping: Arc<AtomicBool>,
    /// Writing a byte here wakes the loop out of `poll`.
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
}

/// What a responder answers to one whole request (or refusal): the bytes of the response.
pub type Answer = dyn Fn(&exchange::Received) -> Vec<u8> + Send;

impl HttpResponder {
    /// A bounded responder named `name` (its thread and log lines) on `listen`, answering each
    /// request with `answer`.
    pub fn serve(
        name: &'static str,
        listen: SocketAddr,
        answer: impl Fn(&exchange::Received) -> Vec<u8> + Send + 'static,
    ) -> io::Result<HttpResponder> {
        let listener = bind(name, listen)?;
        listener.set_nonblocking(true)?;
        let (wake, woken) = UnixStream::pair()?;
        woken.set_nonblocking(true)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let stopping = stopping.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || Responder::new(name, listener, woken).serve(&stopping, &answer))?
        };
        Ok(HttpResponder { stopping, wake, thread: Some(thread) })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        let _ = (&self.wake).write(&[1]);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpResponder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind(name: &str, listen: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + BIND_PATIENCE;
    loop {
        let socket = Socket::new(Domain::for_address(listen), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        match socket.bind(&listen.into()).and_then(|_| socket.listen(128)) {
            Ok(()) => return Ok(socket.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{name} listener on {listen}: {e}"))),
        }
    }
}

/// One client connection: reading its request, then writing the answer.
struct Connection {
    stream: TcpStream,
    received: Vec<u8>,
    /// The answer and how much of it is written, once the request is in.
    answer: Option<(Vec<u8>, usize)>,
    deadline: Instant,
}

/// What one turn did to a connection.
enum Progress {
    Open,
    Done,
}

/// The loop's state: the port, the connections, the limits.
struct Responder {
    name: &'static str,
    listener: TcpListener,
    woken: UnixStream,
    admission: Admission,
    connections: BTreeMap<ConnectionId, Connection>,
    refused: RefusalLog,
}

impl Responder {
    fn new(name: &'static str, listener: TcpListener, woken: UnixStream) -> Responder {
        Responder {
            name,
            listener,
            woken,
            admission: Admission::new(Limits::PORT),
            connections: BTreeMap::new(),
            refused: RefusalLog { name, ..RefusalLog::default() },
        }
    }

    /// Serves until `stopping`; then returns, dropping (closing) the port and every connection.
    fn serve(mut self, stopping: &AtomicBool, answer: &Answer) {
        let mut readiness = Vec::new();
        while !stopping.load(Ordering::Relaxed) {
            let now = Instant::now();
            let sleep = self
                .connections
                .values()
                .map(|c| c.deadline.saturating_duration_since(now))
                .min()
                .unwrap_or(IDLE_POLL)
                .min(IDLE_POLL);
            let ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
            if let Err(e) = self.wait(&ids, sleep, &mut readiness) {
                crate::log!("{}: poll failed: {e}", self.name);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if readiness[0] {
                let mut sink = [0u8; 64];
                while matches!((&self.woken).read(&mut sink), Ok(n) if n > 0) {}
            }
            if stopping.load(Ordering::Relaxed) {
                break;
            }
            if readiness[1] {
                self.accept();
            }
            for (id, ready) in ids.iter().zip(&readiness[2..]) {
                if *ready {
                    self.advance(*id, answer);
                }
            }
            self.expire(Instant::now());
        }
    }

    /// Polls the wake-up pipe, the port and each connection in `ids`; `readiness` gets one flag
    /// per descriptor in that order.
    fn wait(&self, ids: &[ConnectionId], sleep: Duration, readiness: &mut Vec<bool>) -> nix::Result<()> {
        let mut fds = Vec::with_capacity(ids.len() + 2);
        fds.push(PollFd::new(self.woken.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        for id in ids {
            let c = &self.connections[id];
            let want = if c.answer.is_some() { PollFlags::POLLOUT } else { PollFlags::POLLIN };
            fds.push(PollFd::new(c.stream.as_fd(), want));
        }
        let millis = u16::try_from(sleep.as_millis().max(1)).unwrap_or(u16::MAX);
        readiness.clear();
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {
                readiness.resize(fds.len(), false);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        readiness.extend(fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())));
        Ok(())
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors or memory: make room by dropping the oldest client.
                    crate::log!("{}: accept failed: {e}", self.name);
                    if let Some(oldest) = self.connections.keys().next().copied() {
                        self.close(oldest);
                    }
                    return;
                }
            };
            match self.admission.admit(peer.ip()) {
                Admit::Refuse => {
                    self.refused.count(peer.ip(), Instant::now());
                    continue;
                }
                Admit::Accept(id) => self.open(id, stream),
                Admit::AcceptEvicting { id, evict } => {
                    self.connections.remove(&evict);
                    self.open(id, stream);
                }
            }
        }
    }

    fn open(&mut self, id: ConnectionId, stream: TcpStream) {
        if stream.set_nonblocking(true).is_err() {
            self.admission.close(id);
            return;
        }
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + READ_TIMEOUT;
        self.connections.insert(id, Connection { stream, received: Vec::new(), answer: None, deadline });
    }

    fn close(&mut self, id: ConnectionId) {
        self.connections.remove(&id);
        self.admission.close(id);
    }

    fn advance(&mut self, id: ConnectionId, answer: &Answer) {
        let Some(connection) = self.connections.get_mut(&id) else { return };
        if let Progress::Done = connection.advance(answer) {
            self.close(id);
        }
    }

    fn expire(&mut self, now: Instant) {
        let late: Vec<ConnectionId> =
            self.connections.iter().filter(|(_, c)| c.deadline <= now).map(|(id, _)| *id).collect();
        for id in late {
            self.close(id);
        }
    }
}

impl Connection {
    /// Reads what has arrived or writes what can be written; never blocks.
    fn advance(&mut self, answer: &Answer) -> Progress {
        if self.answer.is_none() {
            let mut chunk = [0u8; exchange::MAX_REQUEST_BYTES];
            // Never more than the limit in all: a long head is refused, not stored.
            let room = exchange::MAX_REQUEST_BYTES - self.received.len();
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => return Progress::Done,
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    return Progress::Open
                }
                Err(_) => return Progress::Done,
            }
            let received = exchange::receive(&self.received);
            if received == exchange::Received::Incomplete {
                return Progress::Open;
            }
            self.answer = Some((answer(&received), 0));
            self.deadline = Instant::now() + WRITE_TIMEOUT;
        }
        let Some((answer, written)) = self.answer.as_mut() else { return Progress::Open };
        while *written < answer.len() {
            match self.stream.write(&answer[*written..]) {
                Ok(0) => return Progress::Done,
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Done,
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        Progress::Done
    }
}

/// Counts connections refused for their source's limit; one log line per interval at most.
#[derive(Default)]
struct RefusalLog {
    name: &'static str,
    last_line: Option<Instant>,
    since_last_line: u64,
}

impl RefusalLog {
    fn count(&mut self, source: IpAddr, now: Instant) {
        self.since_last_line += 1;
        if self.last_line.is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_INTERVAL) {
            return;
        }
        crate::log!(
            "{}: refused {} connection(s) over the limit of {} open per source (latest from {}); \
             logged at most once a minute",
            self.name,
            self.since_last_line,
            Limits::PORT.per_source,
            source.to_canonical()
        );
        self.last_line = Some(now);
        self.since_last_line = 0;
    }
}

/// For the tests of what runs on the port: one request over real TCP, the whole answer.
#[cfg(test)]
pub(crate) fn test_get(address: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;

    use super::test_get as get;

    fn free_address() -> SocketAddr {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    }

    /// A port that answers a request `200 wg0 up`, a head too large 431, anything else 400.
    fn healthy_responder(address: SocketAddr) -> HttpResponder {
        HttpResponder::serve("test", address, |received| {
            let status = match received {
                exchange::Received::Request { .. } => 200,
                exchange::Received::Refused(exchange::Refusal::TooLarge) => 431,
                _ => 400,
            };
            exchange::response(status, "text/plain", b"wg0 up\n", exchange::Body::Sent, false)
        })
        .unwrap()
    }

    /// A connection from `source` (any 127.x address: lo holds all of 127/8).
    fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
        socket.connect(&to.into()).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream
    }

    #[test]
    fn one_answer_per_connection_however_many_requests_are_pipelined() {
        let address = free_address();
        let responder = healthy_responder(address);
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let pipelined = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
        stream.write_all(pipelined.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert_eq!(answer.matches("HTTP/1.1 200").count(), 1, "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
        drop(responder);
    }

    #[test]
    fn a_silent_client_is_dropped_and_one_source_cannot_take_every_slot() {
        let address = free_address();
        let responder = healthy_responder(address);
        // The per-source limit's worth of silent connections from one address...
        let silent: Vec<TcpStream> =
            (0..Limits::PORT.per_source).map(|_| connect_from([127, 0, 0, 2], address)).collect();
        std::thread::sleep(Duration::from_millis(200));
        // ...one more from it is closed at once, unanswered...
        let mut extra = connect_from([127, 0, 0, 2], address);
        let mut buf = [0u8; 64];
        assert_eq!(extra.read(&mut buf).unwrap_or(0), 0, "an extra connection from a full source is closed");
        // ...while another source is answered at once.
        let started = Instant::now();
        let mut other = connect_from([127, 0, 0, 3], address);
        other.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        other.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(started.elapsed() < READ_TIMEOUT, "answered while the silent ones wait");
        // The silent ones are closed when their time is up.
        for mut s in silent {
            let mut buf = [0u8; 16];
            let closed_at = Instant::now();
            let n = s.read(&mut buf).unwrap_or(0);
            assert_eq!(n, 0, "a silent client gets no answer");
            assert!(closed_at.elapsed() <= READ_TIMEOUT + Duration::from_secs(1));
        }
        drop(responder);
    }

    #[test]
    fn a_head_without_end_is_cut_at_the_limit() {
        let address = free_address();
        let responder = healthy_responder(address);
        let mut stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nX-Long: ").unwrap();
        let filler = vec![b'a'; 64 * 1024];
        // The responder stops reading at 4 KiB and answers; our writes may then fail.
        for _ in 0..16 {
            if stream.write_all(&filler).is_err() {
                break;
            }
        }
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
        // And the responder is fine.
        assert!(get(address, "GET / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
        drop(responder);
    }

    #[test]
    fn stopping_does_not_wait_for_clients() {
        let address = free_address();
        let responder = healthy_responder(address);
        let _held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(address).unwrap()).collect();
        let mut half = TcpStream::connect(address).unwrap();
        half.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        responder.stop();
        assert!(started.elapsed() < Duration::from_millis(500), "stop took {:?}", started.elapsed());
        assert!(TcpStream::connect(address).is_err(), "the port is closed");
    }
}
