//! `bastion`: the whole appliance in one binary.
//!
//! This file only parses the command line and dispatches; each command's work lives in the
//! library (`bastion::service` runs the bastion, `config` validates, `keys` makes keys...).

use bastion::{audit, config, config_edit, control, convert, enroll, init, keys, service, status, watch};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
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
    /// Add, remove or list the peers of a configuration file.
    #[command(subcommand)]
    Peer(PeerCommand),
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
        /// Where an accepted user-data config is written (default: /run/bastion).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// The config used when there is no user-data (default: /etc/bastion/bastion.toml).
        #[arg(long)]
        baked_config: Option<PathBuf>,
        /// The kernel module list (default: /etc/bastion/modules).
        #[arg(long)]
        modules_list: Option<PathBuf>,
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
    /// On a client machine, next to a stock WireGuard client (wireguard-go): move the tunnel to a
    /// new flow (new listen port, fresh handshake) when it stalls or when a draining bastion asks.
    Watch {
        /// The client's WireGuard interface.
        #[arg(long, default_value = "wg0")]
        interface: String,
        /// Its userspace API socket (default /var/run/wireguard/<interface>.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Data sent and nothing received this long is a stall (seconds, 0.1–3600).
        #[arg(long, default_value = "2", value_parser = seconds_arg)]
        stall_seconds: std::time::Duration,
        /// While a stall lasts, move again every 2 s for 30 s, then doubling up to this (seconds, 0.1–3600).
        #[arg(long, default_value = "30", value_parser = seconds_arg)]
        max_backoff_seconds: std::time::Duration,
        /// How often the peers' counters are read, in milliseconds (10–10000).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=10_000))]
        poll_ms: u64,
        /// Do not listen for the bastions' move notices (UDP 821 on the interface).
        #[arg(long)]
        no_notices: bool,
        /// auto (the API socket if there is one, else the wg tool), uapi, or wg (kernel WireGuard).
        #[arg(long, default_value = "auto", value_parser = watch::Backend::parse)]
        backend: watch::Backend,
        /// Obey move notices only from this address, the bastions' tunnel address (repeatable;
        /// default: any address of a peer's allowed IPs that is not this machine's).
        #[arg(long = "bastion-address")]
        bastion_addresses: Vec<std::net::IpAddr>,
    },
    /// Read the audit trail back: who was connected, from which addresses, when, with how many
    /// bytes (sessions), or the events themselves; from a log file or a CloudWatch Logs group.
    Audit {
        /// A log file with the service's lines (the serial console capture, `bastion run`'s
        /// standard error); `-` for standard input.
        #[arg(long, required_unless_present = "cloudwatch_group", conflicts_with = "cloudwatch_group")]
        file: Option<PathBuf>,
        /// The CloudWatch Logs group the bastions ship to (`[log] cloudwatch_group`); needs
        /// logs:FilterLogEvents and a region (AWS_REGION).
        #[arg(long)]
        cloudwatch_group: Option<String>,
        /// Only this peer (its name).
        #[arg(long)]
        peer: Option<String>,
        /// Only this bastion (its instance id, or host name off EC2).
        #[arg(long)]
        bastion: Option<String>,
        /// Sessions still going at or after this time (UTC, 2026-12-05T02:00:00Z, or Unix seconds).
        #[arg(long, value_parser = audit::query::parse_time)]
        since: Option<i64>,
        /// Sessions that began at or before this time.
        #[arg(long, value_parser = audit::query::parse_time)]
        until: Option<i64>,
        /// List the events instead of the sessions.
        #[arg(long)]
        events: bool,
        /// Print JSON (one object per line) instead of a table.
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

#[derive(Subcommand)]
enum PeerCommand {
    /// Add a peer: a new key pair and the next free tunnel addresses; append its [[peer]] to the
    /// file and print the client's wg-quick config (its private key is shown once, stored nowhere).
    Add {
        /// The TOML configuration file to add the peer to (edited in place, atomically).
        #[arg(long, short)]
        config: PathBuf,
        /// HOST:PORT the client connects to (the load balancer's DNS name or address).
        #[arg(long)]
        endpoint: String,
        /// The bastion's public key, when its private key is in SSM (private_key_ssm).
        #[arg(long)]
        server_public_key: Option<String>,
        /// A network this peer may reach beyond [nat] reach (repeatable).
        #[arg(long)]
        reach: Vec<String>,
        /// Also print the client config as a QR code (for the WireGuard phone apps).
        #[arg(long)]
        qr: bool,
        /// Also write the new [[peer]] table alone (no secrets) to this file, for SSM Parameter Store.
        #[arg(long)]
        fragment: Option<PathBuf>,
        /// The peer's name (unique; one printable line, at most 64 characters).
        name: String,
    },
    /// Remove the peer NAME from the file (edited in place, atomically).
    Remove {
        #[arg(long, short)]
        config: PathBuf,
        name: String,
    },
    /// List the file's peers: name, public key, allowed_ips, reach.
    List {
        #[arg(long, short)]
        config: PathBuf,
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
    show_named_paths(&cli.command);
    match cli.command {
        Command::Init { imds, interface, run_dir, baked_config, modules_list } => {
            // The machine's own defaults (`init::Options::default`), where the command line is silent.
            let machine = init::Options::default();
            init::run(
                init::Mode::Command,
                init::Options {
                    imds,
                    interface,
                    modules_list: modules_list.unwrap_or(machine.modules_list),
                    baked_config: baked_config.unwrap_or(machine.baked_config),
                    run_dir: run_dir.unwrap_or(machine.run_dir),
                },
            )
        }
        Command::Run { config, socket } => service::run(service::Options { config, socket }),
        Command::CheckConfig { file } => check_config(&file),
        Command::Genkey => {
            println!("{}", keys::PrivateKey::generate().expose_base64());
            ExitCode::SUCCESS
        }
        Command::Pubkey => pubkey(),
        Command::Convert { file } => convert(&file),
        Command::Peer(command) => peer(command),
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
        Command::Watch {
            interface,
            socket,
            stall_seconds,
            max_backoff_seconds,
            poll_ms,
            no_notices,
            backend,
            bastion_addresses,
        } => watch::run(watch::Options {
            interface,
            socket,
            poll: std::time::Duration::from_millis(poll_ms),
            stall: watch::stall::StallParams::with(stall_seconds, max_backoff_seconds),
            notices: !no_notices,
            bastion_addresses,
            backend,
        }),
        Command::Reload { interface, socket } => reload(&socket.unwrap_or_else(|| control::default_socket(&interface))),
        Command::Audit { file, cloudwatch_group, peer, bastion, since, until, events, json } => {
            let selection = audit::query::Selection { peer, bastion, since_ms: since, until_ms: until };
            audit_command(file.as_deref(), cloudwatch_group.as_deref(), &selection, events, json)
        }
    }
}

/// `bastion audit`: exit 0 with the table (or JSON), 1 when the records cannot be read.
fn audit_command(
    file: Option<&Path>,
    group: Option<&str>,
    selection: &audit::query::Selection,
    events: bool,
    json: bool,
) -> ExitCode {
    let records = match (file, group) {
        (Some(file), _) => audit::read::from_file(file),
        (None, Some(group)) => {
            audit::read::from_cloudwatch(group, selection.bastion.as_deref(), selection.since_ms, selection.until_ms)
        }
        (None, None) => Err("give --file or --cloudwatch-group".into()),
    };
    let records = match records {
        Ok(records) => records,
        Err(e) => {
            eprintln!("audit: {e}");
            return ExitCode::FAILURE;
        }
    };
    if events {
        for record in selection.events(&records) {
            if json {
                println!("{}", record.to_json());
            } else {
                let time = bastion_aws::time::UtcTime(record.time_ms.div_euclid(1000)).rfc3339();
                let event = serde_json::to_value(&record.event).unwrap_or_default();
                println!("{time} {} {} {event}", record.bastion, record.interface);
            }
        }
    } else {
        let rows = audit::query::sessions(&records, selection);
        if json {
            for row in &rows {
                println!("{}", serde_json::to_string(row).unwrap_or_default());
            }
        } else {
            print!("{}", audit::query::render_table(&rows));
        }
    }
    ExitCode::SUCCESS
}

/// Seconds on the command line: 0.1 to 3600.
fn seconds_arg(text: &str) -> Result<std::time::Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.1..=3600.0).contains(&s) => Ok(std::time::Duration::from_secs_f64(s)),
        _ => Err(format!("expected seconds between 0.1 and 3600, found {text:?}")),
    }
}

/// `bastion reload`: exit 0 when the source's config runs now, 1 when it was not applied.
fn reload(socket: &std::path::Path) -> ExitCode {
    // The service answers within its own timeout (a reload not done by then is an answer too).
    let wait = control::RELOAD_ANSWER_TIMEOUT + std::time::Duration::from_secs(5);
    let answer = control::ask(socket, control::Request::Reload, wait).and_then(|bytes| {
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
            for line in &answer.refused {
                println!("  {line}");
            }
            // A refused fragment is news too: its peers are not served.
            if answer.outcome.succeeded() && answer.refused.is_empty() {
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

/// The files and sockets named on the command line are the operator's own words: diagnostics
/// show them whole, even where a piece looks like a key (`keys::show_in_diagnostics`).
fn show_named_paths(command: &Command) {
    let paths: Vec<&Path> = match command {
        Command::Run { config, socket } => [Some(config.as_path()), socket.as_deref()].into_iter().flatten().collect(),
        Command::CheckConfig { file } | Command::Convert { file } => vec![file],
        Command::Peer(PeerCommand::Add { config, fragment, .. }) => {
            [Some(config.as_path()), fragment.as_deref()].into_iter().flatten().collect()
        }
        Command::Peer(PeerCommand::Remove { config, .. } | PeerCommand::List { config }) => vec![config],
        Command::Status { socket, .. } | Command::Reload { socket, .. } | Command::Watch { socket, .. } => {
            socket.as_deref().into_iter().collect()
        }
        Command::Audit { file, .. } => file.as_deref().into_iter().collect(),
        Command::Init { .. } | Command::Genkey | Command::Pubkey => Vec::new(),
    };
    for path in paths {
        keys::show_in_diagnostics(&path.display().to_string());
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

/// `bastion peer ...`: `config_edit` does the work under its lock; this prints. Exit 2 for bad
/// input (as check-config), 1 when the file could not be locked, read or written.
fn peer(command: PeerCommand) -> ExitCode {
    match command {
        PeerCommand::Add { config: given, endpoint, server_public_key, reach, qr, fragment, name } => {
            let request = enroll::AddRequest {
                name: &name,
                endpoint: &endpoint,
                server_public_key: server_public_key.as_deref(),
                reach: &reach,
            };
            let added = match config_edit::add_peer(&given, &request, fragment.as_deref()) {
                Ok(added) => added,
                Err(e) => return edit_failed(&e),
            };
            let origin = given.display();
            let addresses: Vec<String> = added.allowed_ips.iter().map(|n| n.to_string()).collect();
            eprintln!(
                "{origin}: added peer {name:?} ({}, public key {}){}",
                addresses.join(", "),
                added.public_key,
                fragment.as_ref().map(|f| format!("; its [[peer]] fragment is in {}", f.display())).unwrap_or_default()
            );
            eprintln!(
                "The client config below holds the peer's private key: it is shown this once and stored \
                 nowhere. Hand it to the user over a safe channel."
            );
            let mut out = std::io::stdout().lock();
            let mut printed = out.write_all(added.client.expose_text().as_bytes());
            if qr {
                match enroll::render_qr(&added.client) {
                    Some(code) => {
                        printed = printed.and_then(|()| writeln!(out).and_then(|()| writeln!(out, "{}", code.as_str())))
                    }
                    None => eprintln!("the client config does not fit a QR code; use the text"),
                }
            }
            if printed.and_then(|()| out.flush()).is_err() {
                eprintln!("{origin}: peer {name:?} was added, but its client config could not be printed; remove it and add it again");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        PeerCommand::Remove { config: given, name } => match config_edit::remove_peer(&given, &name) {
            Ok(()) => {
                eprintln!("{}: removed peer {name:?}", given.display());
                ExitCode::SUCCESS
            }
            Err(e) => edit_failed(&e),
        },
        PeerCommand::List { config } => match config::load(&config) {
            Ok(cfg) => {
                print!("{}", enroll::render_list(&enroll::list(&cfg)));
                ExitCode::SUCCESS
            }
            Err(e) => invalid(&e),
        },
    }
}

fn edit_failed(e: &config_edit::EditError) -> ExitCode {
    eprintln!("{e}");
    match e {
        config_edit::EditError::Invalid(_) => ExitCode::from(2),
        config_edit::EditError::Io(_) => ExitCode::FAILURE,
    }
}

fn invalid(e: &config::ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(2)
}
