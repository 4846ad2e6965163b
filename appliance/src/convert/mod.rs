//! `bastion convert`: existing wg-quick files (`[Interface]`/`[Peer]`, PostUp iptables lines)
//! into the bastion's TOML, with notes on what changed. Used by the command only; the PID 1
//! path and the service never load it.

pub mod wg_quick;
