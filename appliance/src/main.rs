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
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match config::load(file) {
        Ok(cfg) => {
            println!(
                "{}: ok ({} peer{}, interface {}, listen port {})",
                file.display(),
                cfg.peers.len(),
                if cfg.peers.len() == 1 { "" } else { "s" },
                cfg.interface.name,
                cfg.interface.listen_port
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
                eprintln!("{}: {note}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
