//! PID 1: the boot sequence of the appliance (mounts, modules, network, config, supervision,
//! shutdown). Runs when the binary is `/init`, or as `bastion init` for tests.
//!
//! The order, each step one module:
//! 1. `mounts` — /proc, /sys, /dev, /run, /tmp; `console` — fds 0-2 on /dev/console;
//! 2. `modules` — the image's module list, with finit_module;
//! 3. `network` — lo up, then the primary interface, and `dhcp` on it for the life of the instance;
//! 4. `config_source` — user-data over IMDSv2 (`imds`), else the baked file;
//! 5. `supervise` — what to do about the service (start, restart with backoff, drain, kill), as
//!    a state machine without I/O; `supervisor_loop` carries it out: spawning, reaping, the
//!    standby 503 (`standby_health`) while no service runs;
//! 6. `power` and `shutdown` — power button and signals → drain → sync → power off.
//!
//! The machine's PID 1 never exits and never powers off on its own; `bastion init` (a test in
//! its own PID, mount and network namespaces) ends with exit 0 where the machine would power off.

pub(crate) mod backoff;
mod config_source;
mod console;
pub(crate) mod dhcp;
pub(crate) mod imds;
mod modules;
mod mounts;
mod network;
mod packet_socket;
mod power;
mod resolv;
mod shutdown;
mod sntp;
mod standby_health;
mod supervise;
mod supervisor_loop;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use supervise::Ending;
use supervisor_loop::Event;

/// Where things are; the defaults are the appliance's, tests point them elsewhere.
#[derive(Debug, Clone)]
pub struct Options {
    /// IMDS base URL (`http://IP[:PORT]`); else the kernel command line's `bastion.imds=`, else
    /// `http://169.254.169.254`.
    pub imds: Option<String>,
    /// The primary interface's name; else the first Ethernet interface.
    pub interface: Option<String>,
    pub modules_list: PathBuf,
    pub baked_config: PathBuf,
    /// Where an accepted user-data config is written for the service.
    pub run_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            imds: None,
            interface: None,
            modules_list: PathBuf::from(modules::LIST_FILE),
            baked_config: PathBuf::from("/etc/bastion/bastion.toml"),
            run_dir: PathBuf::from("/run/bastion"),
        }
    }
}

/// Who started us, which decides how init ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The kernel ran us as PID 1 of the machine: console, Ctrl-Alt-Del, power off at the end.
    Machine,
    /// `bastion init`: same sequence, logs on stderr, exit 0 at the end.
    Command,
}

pub fn run(mode: Mode, options: Options) -> ExitCode {
    // Before any thread exists, so every thread inherits the mask (see `shutdown`).
    shutdown::block_signals();
    let mounts = mounts::mount_all(mode == Mode::Machine);
    let console = if mode == Mode::Machine { Some(console::attach()) } else { None };
    install_panic_log();
    let pid = std::process::id();
    match mode {
        Mode::Machine => crate::log!("init: bastion {} starting as PID 1 of the machine", env!("CARGO_PKG_VERSION")),
        Mode::Command => crate::log!(
            "init: bastion {} starting as `bastion init` (pid {pid}; exits where the machine would power off)",
            env!("CARGO_PKG_VERSION")
        ),
    }
    if let Some(Err(e)) = console {
        crate::log!("init: ERROR {e}");
    }
    if mode == Mode::Machine {
        shutdown::ctrl_alt_del_to_sigint();
    } else if pid != 1 {
        // Outside a PID namespace, still adopt orphans of the service, as PID 1 would.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    mounts.log();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    crate::log!("init: kernel {} cmdline: {}", modules::kernel_release(), cmdline.trim());

    modules::load_from_list(&options.modules_list);
    network::bring_up_loopback();

    let (events, inbox) = mpsc::channel::<Event>();
    let tx = events.clone();
    shutdown::forward_signals(move |s| {
        let _ = tx.send(Event::Signal(s));
    });
    let tx = events.clone();
    power::watch(move |what| {
        let _ = tx.send(Event::PowerButton(what));
    });

    let imds = imds_endpoint(options.imds.as_deref(), &cmdline);
    let tx = events.clone();
    let interface = options.interface.clone();
    // Only the machine's own /etc: under test, init shares the host's.
    let machine = mode == Mode::Machine;
    let spawned = std::thread::Builder::new().name("network".into()).spawn(move || {
        let link = network::wait_for_primary(interface.as_deref());
        let mac: [u8; 6] = link.mac.as_slice().try_into().unwrap_or([0; 6]);
        let mut told = false;
        let mut resolvers: Option<Vec<std::net::Ipv4Addr>> = None;
        dhcp::run(link.index, &link.name, mac, |lease, _applied| {
            let servers = resolv::servers(&lease.dns_servers);
            if machine && resolvers.as_ref() != Some(&servers) {
                let shown: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
                match resolv::write(Path::new("/etc/resolv.conf"), &resolv::resolv_conf(&servers)) {
                    Ok(()) => crate::log!("dns: /etc/resolv.conf: nameserver {}", shown.join(", ")),
                    Err(e) => crate::log!("dns: ERROR cannot write /etc/resolv.conf: {e}"),
                }
                resolvers = Some(servers);
            }
            if !told {
                told = true;
                if machine {
                    // In the background: up to 3 s without an answer off EC2.
                    let _ = std::thread::Builder::new().name("sntp".into()).spawn(sntp::set_at_boot);
                }
                let _ = tx.send(Event::NetworkUp);
            }
        })
    });
    if let Err(e) = spawned {
        crate::log!("network: ERROR cannot start the network thread: {e}");
    }

    let tx = events.clone();
    let sources =
        config_source::Sources { imds, baked: options.baked_config.clone(), run_dir: options.run_dir.clone() };
    let start_config = Box::new(move || {
        let spawned = std::thread::Builder::new().name("config".into()).spawn(move || {
            let rejected_tx = tx.clone();
            let accepted = config_source::wait_for_config(&sources, |r| {
                let _ = rejected_tx.send(Event::ConfigRejected(r.clone()));
            });
            let _ = tx.send(Event::ConfigAccepted(accepted));
        });
        if let Err(e) = spawned {
            crate::log!("config: ERROR cannot start the config thread: {e}");
        }
    });

    let listen = config_source::DEFAULT_HEALTH_LISTEN.parse().expect("constant address");
    let ending = if mode == Mode::Machine { Ending::PowerOff } else { Ending::Exit };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        supervisor_loop::run(ending, listen, "network: waiting for a DHCP lease", start_config, inbox)
    }));
    if result.is_err() {
        if mode == Mode::Command {
            return ExitCode::FAILURE;
        }
        // PID 1 must not exit: keep reaping so the service, still running, leaves no zombies.
        crate::log!("init: ERROR the supervisor stopped; the service runs on unsupervised");
        loop {
            if nix::sys::wait::wait().is_err() {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
    ExitCode::SUCCESS
}

/// The IMDS endpoint: the flag, else the kernel command line, else the EC2 address.
fn imds_endpoint(flag: Option<&str>, cmdline: &str) -> imds::Endpoint {
    let from_cmdline = imds::url_from_cmdline(cmdline);
    let (url, origin) = match (flag, &from_cmdline) {
        (Some(url), _) => (url.to_string(), "--imds"),
        (None, Some(url)) => (url.clone(), "kernel command line bastion.imds="),
        (None, None) => (imds::DEFAULT_URL.to_string(), "default"),
    };
    match imds::Endpoint::parse(&url) {
        Ok(e) => e,
        Err(e) => {
            crate::log!("config: ERROR {e} (from {origin}); using {}", imds::DEFAULT_URL);
            imds::Endpoint::parse(imds::DEFAULT_URL).expect("constant URL")
        }
    }
}

/// A panic anywhere in init is one log line on the console, not a silent thread death.
fn install_panic_log() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        crate::log!("init: PANIC in thread {}{location}: {message}", thread.name().unwrap_or("?"));
    }));
}
