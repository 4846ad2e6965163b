//! `bastion`: the whole appliance in one binary.
//!
//! This file only parses the command line and dispatches; each command's work lives in its own
//! module (`service` runs the bastion, `config` validates, `keys` makes keys).

mod config;
mod health;
mod init;
mod keys;
mod log;
mod nat;
mod netlink;
mod selftest;
mod service;
mod status;
mod tunnel;

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
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0, or 2 with every problem listed.
    CheckConfig { file: PathBuf },
    /// Print a new private key (base64) on stdout.
    Genkey,
    /// Read a private key on stdin, print its public key.
    Pubkey,
    /// Print the TOML equivalent of a wg-quick configuration file.
    Convert { file: PathBuf },
    /// Show the running service of this network namespace: peers, handshakes, bytes, drain.
    Status {
        /// The service's tunnel interface.
        #[arg(long, default_value = "wg0")]
        interface: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => service::run_from_file(&config),
        Command::CheckConfig { file } => check_config(&file),
        Command::Genkey => {
            println!("{}", keys::PrivateKey::generate().expose_base64());
            ExitCode::SUCCESS
        }
        Command::Pubkey => pubkey(),
        Command::Convert { file } => convert(&file),
        Command::Status { interface } => match status::fetch(&interface) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("status: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match config::load(file) {
        Ok(cfg) => {
            let addresses: Vec<String> = cfg.interface.addresses.iter().map(|a| a.to_string()).collect();
            println!(
                "{}: ok: {} {} port {}, {} peer{}, self-test from {}",
                file.display(),
                cfg.interface.name,
                addresses.join(" "),
                cfg.interface.listen_port,
                cfg.peers.len(),
                if cfg.peers.len() == 1 { "" } else { "s" },
                cfg.selftest.address,
            );
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
    match config::wg_quick::convert_file(file) {
        Ok(conversion) => {
            print!("{}", conversion.toml);
            for note in &conversion.notes {
                match note.line {
                    Some(line) => eprintln!("{}:{line}: {}", file.display(), note.message),
                    None => eprintln!("{}: {}", file.display(), note.message),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
