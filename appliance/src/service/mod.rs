//! `bastion run`: starts the data plane, NAT, health responder, status socket and periodic
//! self-test from a config, then waits for a signal to drain and exit.
//!
//! Start order: TUN + UDP (data plane) → forwarding + our nftables table → self-test loop →
//! health responder → status socket. Every component is a guard: when a later step fails, or
//! at exit, the earlier ones undo themselves (the TUN disappears, our table is removed), so
//! nothing is left behind. SIGTERM/SIGINT start the drain: health answers 503 at once,
//! WireGuard keeps serving for `drain_seconds`, then everything stops and the process exits 0.
//! A second signal cuts the drain short (cleanup still happens). Every other signal that can
//! arrive by accident (a SIGHUP from a closing terminal or a reload habit, SIGUSR1/2, SIGQUIT,
//! a Ctrl-Z...) is logged and ignored: none of them may end the service without its drain and
//! cleanup.

mod judge;
mod nat_guard;
mod plan;
mod report;
mod selftest_loop;

use crate::config::{self, Config};
use crate::health::HealthResponder;
use crate::keys::PrivateKey;
use crate::log;
use crate::nat;
use crate::selftest::SelfTestPlan;
use crate::status::StatusServer;
use crate::tunnel::DataPlane;
use nat_guard::InstalledNat;
use nix::sys::signal::{SigSet, Signal};
use selftest_loop::SelfTestLoop;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one self-test step (handshake, ping, each probe) may take.
const SELFTEST_STEP_TIMEOUT: Duration = Duration::from_secs(2);

pub fn run_from_file(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    for warning in config::render_warnings(&config, &path.display().to_string()) {
        log!("config: {warning}");
    }
    // Block the drain signals before any thread exists, so every thread inherits the mask and
    // only `wait_for_signal` ever sees them.
    let signals = handled_signals();
    if let Err(e) = signals.thread_block() {
        log!("cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let service = match Service::start(config, &path.display().to_string()) {
        Ok(service) => service,
        Err(e) => {
            log!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let first = wait_for_signal(&signals, None);
    service.drain(first, &signals);
    service.stop();
    log!("stopped");
    ExitCode::SUCCESS
}

/// The signals that drain and stop the service.
const DRAIN_SIGNALS: [Signal; 2] = [Signal::SIGTERM, Signal::SIGINT];
/// Signals that may arrive by accident and would otherwise kill or stop the process: logged and
/// ignored. (SIGHUP becomes "reload" once the service can reload its config.)
const STRAY_SIGNALS: [Signal; 12] = [
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGQUIT,
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in DRAIN_SIGNALS.into_iter().chain(STRAY_SIGNALS) {
        set.add(signal);
    }
    set
}

/// Waits for a drain signal (every handled signal is blocked in every thread), up to
/// `timeout`; stray signals are logged and waited past.
fn wait_for_signal(signals: &SigSet, timeout: Option<Duration>) -> Option<Signal> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let remaining = match deadline {
            Some(d) => d.checked_duration_since(Instant::now())?,
            None => Duration::from_secs(3600),
        };
        let ts = libc::timespec {
            tv_sec: remaining.as_secs() as libc::time_t,
            tv_nsec: remaining.subsec_nanos() as libc::c_long,
        };
        let rc = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &ts) };
        if rc > 0 {
            match Signal::try_from(rc) {
                Ok(signal) if DRAIN_SIGNALS.contains(&signal) => return Some(signal),
                Ok(signal) => {
                    log!("{} ignored: only SIGTERM or SIGINT stop bastion run (with a drain)", signal.as_str())
                }
                Err(_) => {}
            }
        }
        // EAGAIN (this slice of time is over) or EINTR: look at the deadline again.
    }
}

/// The last self-test, as health and status show it.
#[derive(Debug, Clone)]
pub struct LastSelfTest {
    pub passed: bool,
    /// The console line (`selftest: PASS …` or `selftest: FAIL …`).
    pub line: String,
    pub at: Instant,
}

/// What the health check and the status command read, shared by the service's threads.
pub struct ServiceState {
    drain_started: Mutex<Option<Instant>>,
    drain_seconds: u64,
    /// Whether the tunnel has IPv6 addresses (then IPv6 forwarding is a health condition too).
    ipv6: bool,
    selftest: Mutex<Option<LastSelfTest>>,
    /// Our table as `nft list` would print it, for `bastion status`.
    nat_rules: String,
}

impl ServiceState {
    /// While draining: how long until the service stops.
    pub fn drain_left(&self) -> Option<Duration> {
        let started = (*self.drain_started.lock().unwrap_or_else(|e| e.into_inner()))?;
        Some(Duration::from_secs(self.drain_seconds).saturating_sub(started.elapsed()))
    }

    pub fn last_selftest(&self) -> Option<LastSelfTest> {
        self.selftest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record_selftest(&self, last: LastSelfTest) {
        *self.selftest.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
    }
}

struct Service {
    config: Config,
    state: Arc<ServiceState>,
    // Stopped in this order: health stops answering first, then status and the self-test, then
    // the table goes, then the data plane (and with it the TUN).
    health: Option<HealthResponder>,
    status: Option<StatusServer>,
    selftest: SelfTestLoop,
    nat: Arc<InstalledNat>,
    data_plane: Arc<DataPlane>,
}

/// Why `bastion run` could not start (every step before it is undone).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tunnel(#[from] crate::tunnel::TunnelError),
    #[error(transparent)]
    Nat(#[from] nat::NatError),
    #[error("install nftables table inet {table}: {source}", table = nat::TABLE)]
    InstallNat { source: nat::NatError },
    /// `nat.egress = "auto"` found no interface.
    #[error("nat.egress = \"auto\": {why}")]
    NoEgress { why: String },
    #[error("start the self-test: {0}")]
    SelfTest(std::io::Error),
    #[error("health responder: {0}")]
    Health(std::io::Error),
}

impl Service {
    fn start(config: Config, origin: &str) -> Result<Service, StartError> {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        // The self-test client's key lives only in this process, and the service admits it
        // only from loopback.
        let selftest_key = PrivateKey::generate();
        let spec = plan::tunnel_spec(&config, workers, selftest_key.public_key());
        let data_plane = Arc::new(DataPlane::start(spec)?);
        log!(
            "tunnel: {} up with {} ({} peers, UDP port {}, {} workers)",
            config.interface.name,
            config.interface.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
            config.peers.len(),
            config.interface.listen_port,
            workers
        );
        let ipv6 = config.interface.addresses.iter().any(|a| a.address.is_ipv6());
        nat::enable_forwarding(ipv6)?;
        let nat_plan = plan::nat_plan(&config)?;
        if ipv6 {
            nat::keep_router_advertisements(&nat_plan.egress)?;
        }
        let nat_rules = nat::ruleset(&nat_plan)?;
        let nat = Arc::new(InstalledNat::install(nat_plan)?);
        let state = Arc::new(ServiceState {
            drain_started: Mutex::new(None),
            drain_seconds: config.health.drain_seconds,
            ipv6,
            selftest: Mutex::new(None),
            nat_rules,
        });
        let selftest = SelfTestLoop::start(
            selftest_plan(&config, selftest_key),
            Duration::from_secs(config.selftest.interval_seconds.max(1)),
            nat.clone(),
            state.clone(),
        )
        .map_err(StartError::SelfTest)?;
        let health = {
            let state = state.clone();
            let data_plane = data_plane.clone();
            HealthResponder::start(config.health.listen, move || judge::verdict(&state, &data_plane))
                .map_err(StartError::Health)?
        };
        log!("health: listening on {}", config.health.listen);
        let status = {
            let state = state.clone();
            let data_plane = data_plane.clone();
            let identity = report::Identity {
                public_key: config.interface.private_key.public_key().to_base64(),
                listen_port: config.interface.listen_port,
                config_origin: origin.to_string(),
            };
            // Status is a convenience: a second service in the same namespace must not fail on it.
            match StatusServer::start(&config.interface.name, move || report::report(&state, &data_plane, &identity)) {
                Ok(server) => Some(server),
                Err(e) => {
                    log!("status: not available: {e}");
                    None
                }
            }
        };
        Ok(Service { config, state, health: Some(health), status, selftest, nat, data_plane })
    }

    /// Health 503 at once; keep serving for drain_seconds or until a second signal.
    fn drain(&self, first: Option<Signal>, signals: &SigSet) {
        *self.state.drain_started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let seconds = self.config.health.drain_seconds;
        log!(
            "drain started ({}): health answers 503, WireGuard keeps serving for {seconds} s",
            first.map(|s| s.as_str()).unwrap_or("signal")
        );
        if let Some(second) = wait_for_signal(signals, Some(Duration::from_secs(seconds))) {
            log!("drain cut short by a second {}", second.as_str());
        } else {
            log!("drain finished after {seconds} s");
        }
    }

    fn stop(mut self) {
        if let Some(health) = self.health.take() {
            health.stop();
        }
        if let Some(status) = self.status.take() {
            status.stop();
        }
        self.selftest.stop();
        let Service { nat, data_plane, .. } = self;
        drop(nat);
        data_plane.shutdown();
        log!("tunnel: {} removed", data_plane.name());
    }
}

fn selftest_plan(config: &Config, client_private: PrivateKey) -> SelfTestPlan {
    let client_address = config.selftest.address;
    // Ping our own tunnel address of the same IP version as the client's.
    let ping_target = config
        .interface
        .addresses
        .iter()
        .map(|a| a.address)
        .find(|a| a.is_ipv4() == client_address.is_ipv4())
        .unwrap_or(config.interface.addresses[0].address);
    SelfTestPlan {
        server: std::net::SocketAddr::from(([127, 0, 0, 1], config.interface.listen_port)),
        server_public: config.interface.private_key.public_key(),
        client_private,
        client_address,
        ping_target,
        probes: config.selftest.probes.clone(),
        timeout: SELFTEST_STEP_TIMEOUT,
    }
}
