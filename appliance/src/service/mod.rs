//! `bastion run`: starts the data plane, NAT, health responder, control socket and periodic
//! self-test from a config, applies new configs while it runs, and drains and exits on a signal.
//!
//! Start order: TUN + UDP (data plane) → forwarding + our nftables table → self-test loop →
//! health responder → control socket. Every component is a guard: when a later step fails, or
//! at exit, the earlier ones undo themselves (the TUN disappears, our table is removed), so
//! nothing is left behind. SIGTERM/SIGINT start the drain: health answers 503 at once,
//! WireGuard keeps serving for `drain_seconds`, then everything stops and the process exits 0.
//! A second signal cuts the drain short (cleanup still happens).
//!
//! SIGHUP, `bastion reload` (the control socket) and, for an SSM source, every
//! `refresh_seconds` read the config source again; `reload` decides what changed and the
//! service applies it without re-creating the interface: peers (sessions of unchanged peers
//! untouched), the NAT table (one atomic replacement), the drain time. A change that needs a
//! restart, or a config that fails validation, is not applied: the old config keeps running.
//! Every other signal that can arrive by accident (SIGUSR1/2, SIGQUIT, a Ctrl-Z...) is logged
//! and ignored: none of them may end the service without its drain and cleanup.

mod audit_loop;
mod events;
mod in_place_drain;
mod instance;
mod judge;
mod lifecycle;
pub use lifecycle::ENABLE_VAR as LIFECYCLE_ENABLE_VAR;
mod move_notices;
mod nat_guard;
pub mod plan;
pub mod reload;
mod selftest_loop;
mod status_report;

use crate::config::{self, Config};
use crate::control::{ControlServer, ReloadAnswer, ReloadOutcome, Request};
use crate::health::{self, HealthResponder};
use crate::http_port::HttpResponder;
use crate::keys::{PrivateKey, PublicKey};
use crate::log;
use crate::nat;
use crate::selftest::SelfTestPlan;
use crate::source::{ConfigSource, LoadError, Loaded};
use crate::tunnel::DataPlane;
use events::Event;
use nat_guard::InstalledNat;
use selftest_loop::SelfTestLoop;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one self-test step (handshake, ping, each probe) may take.
const SELFTEST_STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// What `bastion run` is told on its command line.
pub struct Options {
    pub config: PathBuf,
    /// `--socket`: the control socket, instead of the config's.
    pub socket: Option<PathBuf>,
}

pub fn run(options: Options) -> ExitCode {
    // Block the handled signals before any thread exists, so every thread inherits the mask
    // and only the main thread's `events` ever sees them.
    let signals = events::handled_signals();
    if let Err(e) = signals.thread_block() {
        log!("cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let (reload_requests, reload_inbox) = mpsc::channel();
    let mut source = ConfigSource::file(&options.config);
    let loaded = match first_load(&mut source, &signals, &reload_inbox) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    for warning in config::render_warnings(&loaded.config, &loaded.origin) {
        log!("config: {warning}");
    }
    let mut service = match Service::start(loaded, options.socket, reload_requests) {
        Ok(service) => service,
        Err(e) => {
            log!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut next_refresh = source.refresh_interval().map(|every| Instant::now() + every);
    let first = loop {
        match events::next(&signals, &reload_inbox, next_refresh) {
            Event::Stop(signal) => break signal,
            Event::Reload { reply, why } => {
                let answer = service.reload(source.load(), why);
                if let Some(reply) = reply {
                    let _ = reply.send(answer);
                }
                next_refresh = source.refresh_interval().map(|every| Instant::now() + every);
            }
        }
    };
    service.drain(first, &signals, &reload_inbox);
    service.stop();
    log!("stopped");
    ExitCode::SUCCESS
}

/// The last self-test, as health and status show it.
#[derive(Debug, Clone)]
pub struct LastSelfTest {
    pub passed: bool,
    /// The console line (`selftest: PASS …` or `selftest: FAIL …`).
    pub line: String,
    pub at: Instant,
    /// How long the whole run took (none for a failure found before running).
    pub duration: Option<Duration>,
}

/// What the health check and the status command read, shared by the service's threads.
pub struct ServiceState {
    drain_started: Mutex<Option<Instant>>,
    /// `[health] drain_seconds` (a reload may change it).
    drain_seconds: AtomicU64,
    /// Whether the tunnel has IPv6 addresses (then IPv6 forwarding is a health condition too).
    ipv6: bool,
    selftest: Mutex<Option<LastSelfTest>>,
    /// Our table as `nft list` would print it, for `bastion status`.
    nat_rules: Mutex<String>,
    /// The running config's source and version, and how reloads went.
    config: Mutex<ConfigState>,
    /// What `[siblings]` has done (`None`: off).
    siblings: Option<Arc<crate::siblings::Counters>>,
}

/// What status and metrics say about the config.
#[derive(Debug, Clone, Default)]
pub struct ConfigState {
    pub origin: String,
    pub version: String,
    /// Fields a newer config changes that need a restart (empty: none pending).
    pub restart_pending: Vec<String>,
    pub reloads: u64,
    /// Reloads that did not apply (invalid, unreadable, failed to apply; not "needs restart").
    pub reload_failures: u64,
    /// Of those, the ones where the source could not be read (SSM unreachable, denied, missing).
    pub source_failures: u64,
    /// Why the last reload did not apply, while that is the latest news.
    pub last_failure: Option<String>,
    /// SSM fragments the running config was built without (one line each, naming them).
    pub refused: Vec<String>,
}

impl ServiceState {
    /// What `[siblings]` has done, when it is on.
    pub fn siblings_counters(&self) -> Option<&crate::siblings::Counters> {
        self.siblings.as_deref()
    }
}

/// What `[siblings]` reads from the service: the drain, and where the peers' datagrams arrive.
struct SiblingsView {
    state: Arc<ServiceState>,
    data_plane: Arc<DataPlane>,
}

impl crate::siblings::ServiceView for SiblingsView {
    fn last_heard_on(&self, local: std::net::Ipv4Addr) -> Option<Duration> {
        self.data_plane.last_heard_on(local)
    }

    fn draining(&self) -> bool {
        self.state.drain_started.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn relay_from(&self, address: std::net::Ipv4Addr, previous: Option<std::net::SocketAddrV4>) {
        self.data_plane.relay_from(address, previous);
    }

    fn relay_to_leaving(&self, siblings: Vec<std::net::SocketAddrV4>) {
        self.data_plane.relay_to_leaving(siblings);
    }
}

impl ServiceState {
    /// While draining: how long until the service stops.
    pub fn drain_left(&self) -> Option<Duration> {
        let started = (*self.drain_started.lock().unwrap_or_else(|e| e.into_inner()))?;
        Some(Duration::from_secs(self.drain_seconds.load(Ordering::Relaxed)).saturating_sub(started.elapsed()))
    }

    pub fn config_state(&self) -> ConfigState {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update_config_state(&self, change: impl FnOnce(&mut ConfigState)) {
        change(&mut self.config.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn nat_rules(&self) -> String {
        self.nat_rules.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn last_selftest(&self) -> Option<LastSelfTest> {
        self.selftest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record_selftest(&self, last: LastSelfTest) {
        *self.selftest.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
    }
}

/// The first config. An invalid one ends `bastion run` (exit 2, every problem on stderr); one
/// whose SSM parts cannot be read yet (no network, no role, denied, missing) is tried again with
/// backoff (1 s doubling to 60 s) while the health port answers 503 with the reason, so a
/// fleet whose SSM comes up late converges without a restart loop.
fn first_load(
    source: &mut ConfigSource,
    signals: &nix::sys::signal::SigSet,
    inbox: &mpsc::Receiver<mpsc::Sender<ReloadAnswer>>,
) -> Result<Loaded, ExitCode> {
    let mut backoff = crate::init::backoff::Backoff::first_config_load();
    let mut standby: Option<HealthResponder> = None;
    let reason = Arc::new(Mutex::new(String::new()));
    loop {
        let error = match source.load() {
            Ok(loaded) => {
                if let Some(responder) = standby.take() {
                    responder.stop();
                }
                return Ok(loaded);
            }
            Err(LoadError::Invalid(e)) => {
                eprintln!("{e}");
                return Err(ExitCode::from(2));
            }
            Err(e) => e,
        };
        let summary = error.summary();
        let changed = *reason.lock().unwrap_or_else(|e| e.into_inner()) != summary;
        if changed {
            log!("config: {summary}; trying again with backoff (health answers 503 meanwhile)");
            *reason.lock().unwrap_or_else(|e| e.into_inner()) = summary;
        }
        if standby.is_none() {
            if let Some(listen) = source.health_listen() {
                let reason = reason.clone();
                let verdict = move || {
                    let why = reason.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    crate::health::HealthVerdict::Unhealthy(vec![format!("config: not loaded yet: {why}")])
                };
                match health::start(listen, verdict) {
                    Ok(responder) => standby = Some(responder),
                    Err(e) => log!("health: {e}"),
                }
            }
        }
        let wait = backoff.after_failure(Duration::ZERO);
        match events::next(signals, inbox, Some(Instant::now() + wait)) {
            Event::Stop(signal) => {
                log!("stopped ({}) before a config was loaded", signal.as_str());
                return Err(ExitCode::SUCCESS);
            }
            Event::Reload { reply, .. } => drop(reply),
        }
    }
}

struct Service {
    config: Config,
    state: Arc<ServiceState>,
    // Stopped in this order: health stops answering first, then the control socket and the
    // self-test, then the table goes, then the data plane (and with it the TUN).
    health: Option<HealthResponder>,
    metrics: Option<HttpResponder>,
    control: Option<ControlServer>,
    selftest: SelfTestLoop,
    nat: Arc<InstalledNat>,
    data_plane: Arc<DataPlane>,
    /// The self-test client's key: its peer is part of every peer set a reload applies.
    selftest_public: PublicKey,
    /// The audit trail and the CloudWatch shipper (stopped last: the drained sessions and the
    /// final lines go out).
    audit: Option<audit_loop::AuditLoop>,
    /// This interface is ours in this network namespace until the very end.
    _instance: instance::InstanceLock,
}

/// Why `bastion run` could not start (every step before it is undone).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tunnel(#[from] crate::tunnel::TunnelError),
    #[error(transparent)]
    Nat(#[from] nat::NatError),
    #[error("install nftables table inet {table}: {source}")]
    InstallNat { table: String, source: nat::NatError },
    /// `nat.egress = "auto"` found no interface.
    #[error("nat.egress = \"auto\": {why}")]
    NoEgress { why: String },
    #[error("start the self-test: {0}")]
    SelfTest(std::io::Error),
    #[error("health responder: {0}")]
    Health(std::io::Error),
    #[error("metrics responder: {0}")]
    Metrics(std::io::Error),
    #[error("control socket: {0}")]
    Control(std::io::Error),
    #[error(transparent)]
    Instance(#[from] instance::InstanceError),
    /// `private_key_ssm` names the key, but nobody fetched it (a bug of the caller).
    #[error("the private key lives in SSM and was not fetched")]
    KeyNotFetched,
}

impl Service {
    fn start(
        loaded: Loaded,
        socket: Option<PathBuf>,
        reload_requests: mpsc::Sender<mpsc::Sender<ReloadAnswer>>,
    ) -> Result<Service, StartError> {
        let Loaded { config, version, origin, refused } = loaded;
        crate::log::set_format(if config.log.json { crate::log::LogFormat::Json } else { crate::log::LogFormat::Text });
        for line in &refused {
            log!("config: {line}");
        }
        // Before anything is touched: a second service for the same interface changes nothing.
        let instance = instance::acquire(Path::new(config::schema::DEFAULT_CONTROL_DIR), &config.interface.name)?;
        // The self-test client's key lives only in this process, and the service admits it
        // only from loopback.
        let selftest_key = PrivateKey::generate();
        let selftest_public = selftest_key.public_key();
        let private_key = config.interface.private_key().cloned().ok_or(StartError::KeyNotFetched)?;
        let data_plane = Arc::new(start_tunnel(&config, &private_key, selftest_public)?);
        let ipv6 = config.interface.addresses.iter().any(|a| a.address.is_ipv6());
        let (nat, nat_rules) = install_nat(&config, ipv6)?;
        let state = Arc::new(ServiceState {
            drain_started: Mutex::new(None),
            drain_seconds: AtomicU64::new(config.health.drain_seconds),
            ipv6,
            selftest: Mutex::new(None),
            nat_rules: Mutex::new(nat_rules),
            config: Mutex::new(ConfigState { origin, version, refused, ..ConfigState::default() }),
            siblings: config.siblings.target_group_arn.is_some().then(Arc::default),
        });
        let selftest = SelfTestLoop::start(
            selftest_plan(&config, private_key.public_key(), selftest_key),
            Duration::from_secs(config.selftest.interval_seconds.max(1)),
            nat.clone(),
            state.clone(),
        )
        .map_err(StartError::SelfTest)?;
        let health = {
            let state = state.clone();
            let data_plane = data_plane.clone();
            health::start(config.health.listen, move || judge::verdict(&state, &data_plane))
                .map_err(StartError::Health)?
        };
        log!("health: listening on {}", config.health.listen);
        let identity = status_report::Identity {
            public_key: private_key.public_key().to_base64(),
            listen_port: config.interface.listen_port,
        };
        let metrics = match config.metrics.listen {
            None => None,
            Some(listen) => Some(serve_metrics(listen, &state, &data_plane, identity.clone())?),
        };
        let control_path = socket.unwrap_or_else(|| config.control.socket.clone());
        let control = Some(serve_control(&control_path, &state, &data_plane, identity, reload_requests)?);
        let audit = audit_loop::AuditLoop::start(&config, state.clone(), &data_plane);
        // Detached: it polls until the process ends.
        lifecycle::start(in_place_drain::InPlaceDrain::new(state.clone(), &data_plane));
        // Detached, like the lifecycle poller: it acts only while this bastion is healthy.
        if let Some(counters) = &state.siblings {
            let view = Box::new(SiblingsView { state: state.clone(), data_plane: data_plane.clone() });
            let port = config.interface.listen_port;
            crate::siblings::start(
                &config.siblings,
                &config.aws,
                counters.clone(),
                audit.recorder().clone(),
                port,
                view,
            );
        }
        log!("config: version {} from {}", state.config_state().version, state.config_state().origin);
        Ok(Service {
            config,
            state,
            health: Some(health),
            metrics,
            control,
            selftest,
            nat,
            data_plane,
            selftest_public,
            audit: Some(audit),
            _instance: instance,
        })
    }

    /// Health 503 at once; keep serving for drain_seconds or until a second signal. Reloads
    /// asked for meanwhile are answered "draining".
    fn drain(
        &self,
        first: nix::sys::signal::Signal,
        signals: &nix::sys::signal::SigSet,
        reload_inbox: &mpsc::Receiver<mpsc::Sender<ReloadAnswer>>,
    ) {
        *self.state.drain_started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let seconds = self.state.drain_seconds.load(Ordering::Relaxed);
        log!("drain started ({}): health answers 503, WireGuard keeps serving for {seconds} s", first.as_str());
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut notices_logged = false;
        let mut next_notice = Instant::now();
        loop {
            if Instant::now() >= next_notice && Instant::now() < deadline {
                let (sent, asked) = move_notices::ask_everyone(&self.data_plane);
                if !notices_logged {
                    log!(
                        "drain: asked {sent} of {asked} peer(s) with a live session to move (UDP {}, repeated every {} s)",
                        crate::move_notice::PORT,
                        move_notices::REPEAT.as_secs()
                    );
                    notices_logged = true;
                }
                next_notice = Instant::now() + move_notices::REPEAT;
            }
            let wake = deadline.min(next_notice);
            let event = match events::next_until(signals, reload_inbox, wake) {
                None if Instant::now() < deadline => continue,
                event => event,
            };
            match event {
                Some(Event::Stop(second)) => {
                    log!("drain cut short by a second {}", second.as_str());
                    return;
                }
                Some(Event::Reload { reply, why }) => {
                    log!("reload ({why}) ignored: draining");
                    if let Some(reply) = reply {
                        let _ = reply.send(self.answer(
                            ReloadOutcome::Draining,
                            None,
                            vec!["the service is draining".into()],
                        ));
                    }
                }
                None => {
                    log!("drain finished after {seconds} s");
                    return;
                }
            }
        }
    }

    /// Applies what `loaded` changes (see `reload`), or says why not; the old config keeps
    /// running unless the answer is `Applied`.
    fn reload(&mut self, loaded: Result<Loaded, LoadError>, why: &str) -> ReloadAnswer {
        let started = Instant::now();
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(e) => return self.reload_failed(&e, why),
        };
        let running = self.state.config_state().version;
        if loaded.refused != self.state.config_state().refused || why != "refresh" {
            for line in &loaded.refused {
                log!("config: {line}");
            }
        }
        let refused = loaded.refused.clone();
        self.state.update_config_state(|c| c.refused = refused.clone());
        let change = reload::compare(&self.config, &loaded.config);
        let changes = match change {
            reload::Change::NeedsRestart(fields) => {
                let fields: Vec<String> = fields.into_iter().map(String::from).collect();
                log!(
                    "reload ({why}): version {} changes {}, which needs a restart (on AWS: an instance refresh); \
                     still running version {running}",
                    loaded.version,
                    fields.join(", ")
                );
                self.state.update_config_state(|c| {
                    c.restart_pending = fields.clone();
                    c.last_failure = None;
                });
                let lines = vec![format!("needs a restart: {}", fields.join(", "))];
                return self.answer(ReloadOutcome::NeedsRestart, Some(loaded.version), lines);
            }
            reload::Change::Live { peers, drain_seconds } => (peers, drain_seconds),
        };
        let (peers, drain_seconds) = changes;
        let nat_plan = match plan::nat_plan(&loaded.config) {
            Ok(plan) => plan,
            Err(e) => return self.reload_failed_with(format!("nat: {e}"), &loaded.version, why),
        };
        let nat_rules = nat::ruleset(&nat_plan).unwrap_or_default();
        let nat_replaced = match self.nat.replace(nat_plan) {
            Ok(replaced) => replaced,
            Err(e) => return self.reload_failed_with(format!("nat: {e}"), &loaded.version, why),
        };
        let private_key = self.config.interface.private_key().cloned().expect("a running service has its key");
        let spec = plan::tunnel_spec(&loaded.config, &private_key, 1, self.selftest_public);
        let recreate = reload::recreate(&self.config, &loaded.config);
        self.data_plane.update_peers(spec.peers, &recreate);
        if let Some(seconds) = drain_seconds {
            self.state.drain_seconds.store(seconds, Ordering::Relaxed);
        }
        *self.state.nat_rules.lock().unwrap_or_else(|e| e.into_inner()) = nat_rules;
        let unchanged = peers.is_empty() && !nat_replaced && drain_seconds.is_none();
        let outcome =
            if unchanged && loaded.version == running { ReloadOutcome::Unchanged } else { ReloadOutcome::Applied };
        let mut lines = vec![peers.summary()];
        lines.extend(peer_lines(&peers));
        lines.push(format!("nat rules {}", if nat_replaced { "replaced" } else { "unchanged" }));
        if let Some(seconds) = drain_seconds {
            lines.push(format!("drain {seconds} s"));
        }
        log!(
            "reload ({why}): version {} {} in {:.1} ms: {}",
            loaded.version,
            if outcome == ReloadOutcome::Unchanged { "is what runs already" } else { "applied" },
            started.elapsed().as_secs_f64() * 1000.0,
            lines.join(", ")
        );
        for warning in config::render_warnings(&loaded.config, &loaded.origin) {
            log!("config: {warning}");
        }
        if let Some(audit) = &self.audit {
            for event in audit_loop::peer_events(&peers, &self.config.peers, &loaded.config.peers, &loaded.version) {
                audit.recorder().record(event);
            }
        }
        let version = loaded.version.clone();
        self.state.update_config_state(|c| {
            c.version = version;
            c.origin = loaded.origin.clone();
            c.restart_pending.clear();
            c.last_failure = None;
            c.reloads += 1;
        });
        self.config = loaded.config;
        self.answer(outcome, Some(self.state.config_state().version), lines)
    }

    fn reload_failed(&self, error: &LoadError, why: &str) -> ReloadAnswer {
        let state = self.state.config_state();
        let running = state.version;
        let summary = error.summary();
        // A fault that persists is logged when it starts and when it changes, not every refresh.
        let news = why != "refresh" || state.last_failure.as_deref() != Some(summary.as_str());
        if news {
            log!("reload ({why}): {summary}; still running version {running}");
        }
        let lines: Vec<String> = match error {
            LoadError::Invalid(e) => e.to_string().lines().map(str::to_string).collect(),
            LoadError::Fetch(_) => vec![summary.clone()],
        };
        if news && matches!(error, LoadError::Invalid(_)) {
            for line in &lines {
                log!("{line}");
            }
        }
        self.state.update_config_state(|c| {
            c.reload_failures += 1;
            if matches!(error, LoadError::Fetch(_)) {
                c.source_failures += 1;
            }
            c.last_failure = Some(summary);
        });
        let outcome =
            if matches!(error, LoadError::Invalid(_)) { ReloadOutcome::Rejected } else { ReloadOutcome::Failed };
        self.answer(outcome, None, lines)
    }

    fn reload_failed_with(&self, why_not: String, version: &str, why: &str) -> ReloadAnswer {
        let running = self.state.config_state().version;
        log!("reload ({why}): version {version} not applied: {why_not}; still running version {running}");
        self.state.update_config_state(|c| {
            c.reload_failures += 1;
            c.last_failure = Some(why_not.clone());
        });
        self.answer(ReloadOutcome::Failed, Some(version.to_string()), vec![why_not])
    }

    fn answer(&self, outcome: ReloadOutcome, read_version: Option<String>, lines: Vec<String>) -> ReloadAnswer {
        let state = self.state.config_state();
        ReloadAnswer { outcome, running_version: state.version, read_version, lines, refused: state.refused }
    }

    fn stop(mut self) {
        if let Some(health) = self.health.take() {
            health.stop();
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.stop();
        }
        if let Some(control) = self.control.take() {
            control.stop();
        }
        self.selftest.stop();
        let audit = self.audit.take();
        let Service { nat, data_plane, .. } = self;
        drop(nat);
        // The last counters before the tunnel goes: the drained sessions' bytes are final.
        if let Some(audit) = audit {
            audit.stop();
        }
        data_plane.shutdown();
        log!("tunnel: {} removed", data_plane.name());
    }
}

/// The data plane of `config`: its TUN, its UDP socket, its workers.
fn start_tunnel(
    config: &Config,
    private_key: &PrivateKey,
    selftest_public: PublicKey,
) -> Result<DataPlane, StartError> {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let spec = plan::tunnel_spec(config, private_key, workers, selftest_public);
    let data_plane = DataPlane::start(spec)?;
    log!(
        "tunnel: {} up with {} ({} peers, UDP port {}, {} workers)",
        config.interface.name,
        config.interface.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        config.peers.len(),
        config.interface.listen_port,
        workers
    );
    Ok(data_plane)
}

/// Forwarding on, and this interface's nftables table installed; the rules as text for status.
fn install_nat(config: &Config, ipv6: bool) -> Result<(Arc<InstalledNat>, String), StartError> {
    nat::enable_forwarding(ipv6)?;
    let nat_plan = plan::nat_plan(config)?;
    if ipv6 {
        nat::keep_router_advertisements(&nat_plan.egress)?;
    }
    let nat_rules = nat::ruleset(&nat_plan)?;
    Ok((Arc::new(InstalledNat::install(nat_plan)?), nat_rules))
}

/// `GET /metrics` on `listen`, from the status report.
fn serve_metrics(
    listen: std::net::SocketAddr,
    state: &Arc<ServiceState>,
    data_plane: &Arc<DataPlane>,
    identity: status_report::Identity,
) -> Result<HttpResponder, StartError> {
    let (state, data_plane) = (state.clone(), data_plane.clone());
    let responder = crate::metrics::serve(listen, move || status_report::report(&state, &data_plane, &identity))
        .map_err(StartError::Metrics)?;
    log!("metrics: listening on {listen} (GET /metrics)");
    Ok(responder)
}

/// The control socket at `path`: status from the report, reloads through the main thread. A
/// live socket means another service runs this interface; a folder others may write to could
/// hand root's `reload` to them: either way, no start.
fn serve_control(
    path: &Path,
    state: &Arc<ServiceState>,
    data_plane: &Arc<DataPlane>,
    identity: status_report::Identity,
    reload_requests: mpsc::Sender<mpsc::Sender<ReloadAnswer>>,
) -> Result<ControlServer, StartError> {
    let (state, data_plane) = (state.clone(), data_plane.clone());
    let handle = move |request: Request| match request {
        Request::Status => {
            serde_json::to_vec(&status_report::report(&state, &data_plane, &identity)).unwrap_or_default()
        }
        Request::Reload => serde_json::to_vec(&ask_main_thread(&reload_requests)).unwrap_or_default(),
    };
    let server = ControlServer::start(path, handle).map_err(StartError::Control)?;
    log!("control: listening on {}", path.display());
    Ok(server)
}

/// One line per changed peer, for the reload's answer.
fn peer_lines(peers: &reload::PeerChanges) -> Vec<String> {
    let mut lines = Vec::new();
    for (label, names) in [
        ("added", &peers.added),
        ("removed", &peers.removed),
        ("updated", &peers.updated),
        ("re-created (new session)", &peers.recreated),
    ] {
        if !names.is_empty() {
            lines.push(format!("{label}: {}", names.join(", ")));
        }
    }
    lines
}

/// From the control thread: asks the main thread to reload and waits for its answer.
fn ask_main_thread(requests: &mpsc::Sender<mpsc::Sender<ReloadAnswer>>) -> ReloadAnswer {
    let (reply, answer) = mpsc::channel();
    let failed = |line: &str| ReloadAnswer {
        outcome: ReloadOutcome::Failed,
        running_version: String::new(),
        read_version: None,
        lines: vec![line.to_string()],
        refused: Vec::new(),
    };
    if requests.send(reply).is_err() {
        return failed("the service is stopping");
    }
    answer.recv_timeout(crate::control::RELOAD_ANSWER_TIMEOUT).unwrap_or_else(|_| {
        failed(&format!("no answer from the service within {} s", crate::control::RELOAD_ANSWER_TIMEOUT.as_secs()))
    })
}

fn selftest_plan(config: &Config, server_public: PublicKey, client_private: PrivateKey) -> SelfTestPlan {
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
        server_public,
        client_private,
        client_address,
        ping_target,
        probes: config.selftest.probes.clone(),
        timeout: SELFTEST_STEP_TIMEOUT,
    }
}
