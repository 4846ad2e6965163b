//! The control socket: a Unix socket in the file system (`/run/bastion/<interface>.sock`, mode
//! 0600, `[control] socket` or `--socket` to move it) on which a running `bastion run` answers
//! `bastion status` and `bastion reload`. Only root or the service's own user may ask (checked
//! on every connection with SO_PEERCRED, on top of the file mode).
//!
//! The protocol is one request line (`status` or `reload`), then the answer (JSON) until the
//! server closes. Each connection has its own short-lived thread (at most [`MAX_CONNECTIONS`]
//! at once) and a deadline ([`DEADLINE`], however slowly a client drips bytes) for reading the
//! request and another for writing the answer, so a slow client delays nobody else; the time
//! the service takes to answer (a reload that reads SSM) is not the client's and does not
//! count. Stopping never waits for a connection.
//!
//! The socket's folder must be root's (or the service user's) and writable by nobody else
//! (a root-owned sticky folder such as /tmp is fine): anyone who may rename files there could
//! swap the socket and answer root's `reload`.

use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A request line is a word; anything longer is not ours.
const MAX_REQUEST_BYTES: u64 = 64;
/// A report is a few lines per peer; this caps what the client reads from a misbehaving server.
const MAX_ANSWER_BYTES: u64 = 16 << 20;
/// For reading the request, and again for writing the answer, on one connection.
const DEADLINE: Duration = Duration::from_secs(2);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The service's `StatusReport` as JSON.
    Status,
    /// Read the config source again now and apply it (the answer is a `ReloadOutcome`).
    Reload,
}

impl Request {
    fn word(self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Reload => "reload",
        }
    }

    /// The request in `line`; `None` for anything else.
    pub fn parse(line: &[u8]) -> Option<Request> {
        match std::str::from_utf8(line).ok()?.trim() {
            "status" => Some(Request::Status),
            "reload" => Some(Request::Reload),
            _ => None,
        }
    }
}

/// What a reload did: the answer to `reload`, and what `bastion reload` prints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadAnswer {
    pub outcome: ReloadOutcome,
    /// The version now running.
    pub running_version: String,
    /// The version that was read (when one could be read).
    pub read_version: Option<String>,
    /// One line per thing to know (the changes, or every problem, or what needs a restart).
    pub lines: Vec<String>,
    /// SSM fragments the running config was built without, one line each.
    #[serde(default)]
    pub refused: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new config runs now.
    Applied,
    /// The source says what is running already.
    Unchanged,
    /// It changes what only a restart can (the old config keeps running).
    NeedsRestart,
    /// It is not a valid config (the old one keeps running).
    Rejected,
    /// It could not be read or applied (the old one keeps running).
    Failed,
    /// The service is draining and takes no new config.
    Draining,
}

impl ReloadOutcome {
    /// Whether the new config (or the same one) is what runs now.
    pub fn succeeded(self) -> bool {
        matches!(self, ReloadOutcome::Applied | ReloadOutcome::Unchanged)
    }
}

/// The default socket of the service on `interface`.
pub fn default_socket(interface: &str) -> PathBuf {
    Path::new(crate::config::schema::DEFAULT_CONTROL_DIR).join(format!("{interface}.sock"))
}

/// The server side: answers each request with `handle(request)`.
pub struct ControlServer {
    path: PathBuf,
    /// The socket file's inode: at stop, only our own file is removed.
    inode: u64,
    stopping: Arc<AtomicBool>,
    listener: Arc<UnixListener>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    pub fn start(
        path: &Path,
        handle: impl Fn(Request) -> Vec<u8> + Send + Sync + 'static,
    ) -> io::Result<ControlServer> {
        let context = |e: io::Error, doing: &str| io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            prepare_folder(dir)?;
        }
        clear_stale(path)?;
        let listener = UnixListener::bind(path).map_err(|e| context(e, "bind"))?;
        // Until this chmod the socket has the umask's mode; SO_PEERCRED still checks everyone.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| context(e, "chmod"))?;
        let inode = std::fs::metadata(path).map_err(|e| context(e, "stat"))?.ino();
        let listener = Arc::new(listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let thread = {
            let listener = listener.clone();
            let stopping = stopping.clone();
            let serving = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            std::thread::Builder::new().name("control".into()).spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let started = std::time::Instant::now();
                    // A full house: the newcomer waits (a connection ends within DEADLINE).
                    while serving.load(Ordering::Acquire) >= MAX_CONNECTIONS && started.elapsed() < DEADLINE {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    serving.fetch_add(1, Ordering::AcqRel);
                    let (handle, done) = (handle.clone(), serving.clone());
                    let spawned = std::thread::Builder::new().name("control-conn".into()).spawn(move || {
                        serve(stream, &*handle, started + DEADLINE);
                        done.fetch_sub(1, Ordering::AcqRel);
                    });
                    if spawned.is_err() {
                        serving.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            })?
        };
        Ok(ControlServer { path: path.to_path_buf(), inode, stopping, listener, thread: Some(thread) })
    }

    pub fn path(&self) -> &Path {
        &self.path
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
            if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A socket file left by a service that is gone is removed; a live one, or a file that is not
/// a socket, is an error (never deleted).
fn clear_stale(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket; remove it or set [control] socket", path.display()),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another bastion service answers on {}; give this one its own [control] socket", path.display()),
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

/// How long the service takes at most to answer a `reload` (an SSM read may retry); a reload
/// not done by then is answered as failed.
pub const RELOAD_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A folder for the service's local files (the control socket, the instance lock): made
/// (mode 0700) when missing; refused unless it is a real folder, owned by root or by us, and
/// writable by its owner only (or root's and sticky, as /tmp).
pub fn prepare_folder(dir: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        let failed = |e: io::Error, doing: &str| io::Error::new(e.kind(), format!("{doing} {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| failed(e, "create"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| failed(e, "restrict"))?;
    }
    check_folder(dir)
}

fn check_folder(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    let euid = nix::unistd::geteuid().as_raw();
    let why = if !meta.file_type().is_dir() {
        "is not a folder (a symlink?)".to_string()
    } else if meta.uid() != 0 && meta.uid() != euid {
        format!("belongs to uid {}, expected root or this service's user", meta.uid())
    } else if meta.mode() & 0o022 != 0 && !(meta.mode() & 0o1000 != 0 && meta.uid() == 0) {
        // A root-owned sticky folder (/tmp) is fine: there nobody but us may rename or remove
        // our socket, so nobody can swap it.
        format!("is writable by others (mode {:o}), expected at most 0755", meta.mode() & 0o7777)
    } else {
        return Ok(());
    };
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "the service's folder {} {why}: whoever may write there could answer for the service; \
             fix or remove it",
            dir.display()
        ),
    ))
}

fn serve(mut stream: UnixStream, handle: &dyn Fn(Request) -> Vec<u8>, deadline: std::time::Instant) {
    if !may_ask(&stream) {
        return;
    }
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let Some(left) = time_left(deadline) else { return };
        if stream.set_read_timeout(Some(left)).is_err() || line.len() as u64 >= MAX_REQUEST_BYTES {
            break;
        }
        match stream.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
            _ => break,
        }
    }
    let answer = match Request::parse(&line) {
        Some(request) => handle(request),
        None => br#"{"error":"expected a request line: status or reload"}"#.to_vec(),
    };
    // The answer gets its own deadline: a reload may take the service many seconds.
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut rest = &answer[..];
    while !rest.is_empty() {
        let Some(left) = time_left(deadline) else { return };
        if stream.set_write_timeout(Some(left)).is_err() {
            return;
        }
        match stream.write(rest) {
            Ok(0) | Err(_) => return,
            Ok(n) => rest = &rest[n..],
        }
    }
}

/// What is left until `deadline`; `None` once it has passed.
fn time_left(deadline: std::time::Instant) -> Option<Duration> {
    deadline.checked_duration_since(std::time::Instant::now()).filter(|d| !d.is_zero())
}

/// Root, or the user the service runs as.
fn may_ask(stream: &UnixStream) -> bool {
    match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(cred) => cred.uid() == 0 || cred.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}

/// The client side: sends `request` to the service on `socket`, returns its answer.
pub fn ask(socket: &Path, request: Request, timeout: Duration) -> io::Result<Vec<u8>> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                " (is `bastion run` running? with [control] socket set, pass --socket)"
            }
            io::ErrorKind::PermissionDenied => " (run as root or as the service's user)",
            _ => "",
        };
        io::Error::new(e.kind(), format!("cannot reach the bastion service at {}: {e}{hint}", socket.display()))
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(DEADLINE))?;
    stream.write_all(format!("{}\n", request.word()).as_bytes())?;
    let mut bytes = Vec::new();
    stream.take(MAX_ANSWER_BYTES).read_to_end(&mut bytes)?;
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the service at {} closed without an answer (not allowed to ask?)", socket.display()),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_socket(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("bastion-control-{tag}-{}", std::process::id())).join("wg0.sock")
    }

    #[test]
    fn a_client_gets_the_answer_to_its_request_and_the_socket_is_private() {
        let path = scratch_socket("answer");
        let server = ControlServer::start(&path, |r| format!("{r:?}").into_bytes()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ask(&path, Request::Status, DEADLINE).unwrap(), b"Status");
        assert_eq!(ask(&path, Request::Reload, DEADLINE).unwrap(), b"Reload");
        server.stop();
        assert!(!path.exists(), "the socket file is removed at stop");
        assert!(ask(&path, Request::Status, DEADLINE).unwrap_err().to_string().contains("is `bastion run` running?"));
        let _ = std::fs::remove_dir(path.parent().unwrap());
    }

    #[test]
    fn an_answer_that_takes_the_service_longer_than_the_deadline_still_arrives() {
        let path = scratch_socket("slow-answer");
        let server = ControlServer::start(&path, |_| {
            std::thread::sleep(DEADLINE + Duration::from_millis(500));
            b"reloaded".to_vec()
        })
        .unwrap();
        assert_eq!(ask(&path, Request::Reload, RELOAD_ANSWER_TIMEOUT).unwrap(), b"reloaded");
        server.stop();
        let _ = std::fs::remove_dir(path.parent().unwrap());
    }

    #[test]
    fn a_stale_socket_is_replaced_but_a_live_one_or_another_file_is_not() {
        let path = scratch_socket("stale");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(UnixListener::bind(&path).unwrap()); // left behind by a killed service
        let first = ControlServer::start(&path, |_| b"first".to_vec()).unwrap();
        let second = ControlServer::start(&path, |_| b"second".to_vec());
        assert_eq!(second.err().unwrap().kind(), io::ErrorKind::AddrInUse);
        assert_eq!(ask(&path, Request::Status, DEADLINE).unwrap(), b"first", "the live service keeps its socket");
        first.stop();
        std::fs::write(&path, "not a socket").unwrap();
        let err = ControlServer::start(&path, |_| Vec::new()).err().unwrap();
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket", "never deleted");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_slow_client_delays_nobody_and_never_holds_the_stop() {
        let path = scratch_socket("slow");
        let server = ControlServer::start(&path, |_| b"report".to_vec()).unwrap();
        // Clients that drip a byte every 300 ms (each read alone would meet a 2 s timeout).
        let drippers: Vec<_> = (0..3)
            .map(|_| {
                let mut stream = UnixStream::connect(&path).unwrap();
                std::thread::spawn(move || {
                    for _ in 0..40 {
                        if stream.write_all(b"s").is_err() {
                            return true;
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    false
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let asked = std::time::Instant::now();
        assert_eq!(ask(&path, Request::Status, DEADLINE).unwrap(), b"report");
        assert!(asked.elapsed() < Duration::from_millis(500), "answered after {:?}", asked.elapsed());
        // The whole-connection deadline cuts the drippers off after ~2 s, not after 12 s.
        for dripper in drippers {
            assert!(dripper.join().unwrap(), "a dripping client was cut off");
        }
        let _keep = UnixStream::connect(&path).unwrap();
        let stopping = std::time::Instant::now();
        server.stop();
        assert!(stopping.elapsed() < Duration::from_millis(500), "stop took {:?}", stopping.elapsed());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_folder_others_may_write_to_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let path = scratch_socket("folder");
        let dir = path.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ControlServer::start(&path, |_| Vec::new()).err().unwrap();
        assert!(e.to_string().contains("is writable by others (mode 777)"), "{e}");
        assert!(!path.exists());
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if nix::unistd::geteuid().is_root() {
            // Another user's folder (as root, the test can make one): refused too.
            std::os::unix::fs::chown(dir, Some(65534), None).unwrap();
            let e = ControlServer::start(&path, |_| Vec::new()).err().unwrap();
            assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
            std::os::unix::fs::chown(dir, Some(0), None).unwrap();
        }
        ControlServer::start(&path, |_| Vec::new()).unwrap().stop();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn garbage_requests_get_an_error_not_a_report() {
        assert_eq!(Request::parse(b"status"), Some(Request::Status));
        assert_eq!(Request::parse(b" reload\r"), Some(Request::Reload));
        for bad in [&b""[..], b"STATUS", b"status please", &[0xff, 0xfe]] {
            assert_eq!(Request::parse(bad), None, "{bad:?}");
        }
        let path = scratch_socket("garbage");
        let server = ControlServer::start(&path, |_| b"report".to_vec()).unwrap();
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.write_all(b"please\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("expected a request line"), "{answer}");
        // An endless line is cut at 64 bytes; the server goes on serving.
        let mut stream = UnixStream::connect(&path).unwrap();
        let _ = stream.write_all(&[b'x'; 4096]);
        let _ = stream.read_to_string(&mut answer);
        assert_eq!(ask(&path, Request::Status, DEADLINE).unwrap(), b"report");
        server.stop();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
