//! `bastion convert`: existing wg-quick files (`[Interface]`/`[Peer]`, PostUp iptables lines)
//! into the bastion's TOML, with notes on what changed. Used by the command only; the PID 1
//! path and the service never load it.
//!
//! `wg_quick` puts a conversion together; `wg_file` reads the file, `hooks` recognises the
//! commands of its hooks, `nat_plan` makes `[nat]` of them, `toml_out` writes our TOML.

mod hooks;
mod nat_plan;
mod note;
mod toml_out;
mod wg_file;
pub mod wg_quick;
