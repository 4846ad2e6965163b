//! `bastion`: the whole appliance in one binary.
//!
//! This file only parses the command line and dispatches; each command's work lives in the
//! library (`bastion::service` runs the bastion, `config` validates, `keys` makes keys...).

use bastion::{config, control, convert, init, keys, service, status};
use clap::{Parser, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "bastion", version, about = "HA WireGuard bastion appliance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bastion service: WireGuard, NAT forwarding, health responder.
    Run {
        /// The TOML configuration file (re-read on SIGHUP and `bastion reload`).
        #[arg(long, short)]
        config: PathBuf,
        /// The control socket (default: [control] socket, else /run/bastion/<interface>.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Validate a configuration file: exit 0, or 2 with every problem listed.
    CheckConfig { file: PathBuf },
    /// Print a new private key (base64) on stdout.
    Genkey,
    /// Read a private key on stdin, print its public key.
    Pubkey,
    /// Print the TOML equivalent of a wg-quick configuration file.
    Convert { file: PathBuf },
    /// Boot as the appliance's init (what `/init` does as PID 1), but exit 0 where the machine
    /// would power off. For tests in their own PID, mount and network namespaces.
    Init {
        /// IMDS base URL, http://IP[:PORT] (default: kernel command line bastion.imds=, else
        /// http://169.254.169.254).
        #[arg(long)]
        imds: Option<String>,
        /// The interface to run DHCP on (default: the first Ethernet interface).
        #[arg(long)]
        interface: Option<String>,
        /// Where an accepted user-data config is written.
        #[arg(long, default_value = "/run/bastion")]
        run_dir: PathBuf,
        /// The config used when there is no user-data.
        #[arg(long, default_value = "/etc/bastion/bastion.toml")]
        baked_config: PathBuf,
        /// The kernel module list.
        #[arg(long, default_value = "/etc/bastion/modules")]
        modules_list: PathBuf,
    },
    /// Show the running service of this network namespace: peers, handshakes, bytes, drain.
    Status {
        /// The service's tunnel interface (its socket is /run/bastion/<interface>.sock).
        #[arg(long, default_value = "wg0")]
        interface: String,
        /// The service's control socket, when its config moved it.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the report as JSON (schema in docs/operations.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make the running service read its config source again now and apply what changed.
    Reload {
        /// The service's tunnel interface (its socket is /run/bastion/<interface>.sock).
        #[arg(long, default_value = "wg0")]
        interface: String,
        /// The service's control socket, when its config moved it.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    protect_process_memory();
    // The kernel starts `/init` as PID 1 with whatever words of its command line it did not
    // understand as arguments: as PID 1, anything but an explicit `init` means "be the machine".
    if std::process::id() == 1 && std::env::args().nth(1).as_deref() != Some("init") {
        return init::run(init::Mode::Machine, init::Options::default());
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Init { imds, interface, run_dir, baked_config, modules_list } => {
            init::run(init::Mode::Command, init::Options { imds, interface, modules_list, baked_config, run_dir })
        }
        Command::Run { config, socket } => service::run(service::Options { config, socket }),
        Command::CheckConfig { file } => check_config(&file),
        Command::Genkey => {
            println!("{}", keys::PrivateKey::generate().expose_base64());
            ExitCode::SUCCESS
        }
        Command::Pubkey => pubkey(),
        Command::Convert { file } => convert(&file),
        Command::Status { interface, socket, json } => {
            match status::fetch(&socket.unwrap_or_else(|| control::default_socket(&interface))) {
                Ok(report) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
                    } else {
                        print!("{}", status::render_text(&report));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("status: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Reload { interface, socket } => reload(&socket.unwrap_or_else(|| control::default_socket(&interface))),
    }
}

/// `bastion reload`: exit 0 when the source's config runs now, 1 when it was not applied.
fn reload(socket: &std::path::Path) -> ExitCode {
    let answer = control::ask(socket, control::Request::Reload, std::time::Duration::from_secs(90)).and_then(|bytes| {
        serde_json::from_slice::<control::ReloadAnswer>(&bytes).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("the answer is not a reload answer: {e}"))
        })
    });
    match answer {
        Ok(answer) => {
            let read = answer.read_version.as_deref().map(|v| format!(", read version {v}")).unwrap_or_default();
            println!("reload: {:?} (running version {}{read})", answer.outcome, answer.running_version);
            for line in &answer.lines {
                println!("  {line}");
            }
            if answer.outcome.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("reload: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Keys live in this process's memory: no core dump may write them to disk, and no process
/// without CAP_SYS_PTRACE may read them (`/proc/PID/mem`, ptrace), even one of the same user.
/// Both hold for every command, and are set again after each exec (init starts the service
/// that way).
fn protect_process_memory() {
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls with valid arguments; failure leaves the defaults.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match config::load(file) {
        Ok(cfg) => {
            let addresses: Vec<String> = cfg.interface.addresses.iter().map(|a| a.to_string()).collect();
            println!(
                "{}: ok: {} {} port {}, {} peer{}, self-test from {}, health on {}, drain {} s",
                file.display(),
                cfg.interface.name,
                addresses.join(" "),
                cfg.interface.listen_port,
                cfg.peers.len(),
                if cfg.peers.len() == 1 { "" } else { "s" },
                cfg.selftest.address,
                cfg.health.listen,
                cfg.health.drain_seconds,
            );
            for warning in config::render_warnings(&cfg, &file.display().to_string()) {
                eprintln!("{warning}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn pubkey() -> ExitCode {
    let mut text = String::new();
    if std::io::stdin().read_to_string(&mut text).is_err() {
        eprintln!("pubkey: cannot read a private key from standard input");
        return ExitCode::from(2);
    }
    match keys::PrivateKey::parse(&text) {
        Ok(key) => {
            println!("{}", key.public_key());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pubkey: standard input: {e}");
            ExitCode::from(2)
        }
    }
}

fn convert(file: &std::path::Path) -> ExitCode {
    match convert::wg_quick::convert_file(file) {
        Ok(conversion) => {
            print!("{}", conversion.toml);
            for note in &conversion.notes {
                let line = match note.line {
                    Some(line) => format!("{}:{line}: {}", file.display(), note.message),
                    None => format!("{}: {}", file.display(), note.message),
                };
                eprintln!("{}", keys::redact_key_like(&line));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
