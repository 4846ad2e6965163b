//! The bastion appliance as a library: everything the `bastion` binary does, in modules a test
//! (or another binary) can call. `ARCHITECTURE.md` at the top of the repository is the map.
//!
//! - `config` — the TOML schema and its validation; `convert` — wg-quick files into it;
//!   `source` — where a config comes from (the file, SSM parameters);
//! - `enroll` — `bastion peer add/remove/list`: a peer into the file, its client config out;
//!   `config_edit` — editing the file in place (lock, symlink, atomic write);
//! - `keys` — WireGuard keys and the masking of key-like text in diagnostics; `log` — lines;
//!   `audit` — the audit trail (sessions, peer changes) and `bastion audit`; `cloudwatch` — every
//!   line and a metric record a minute to CloudWatch Logs;
//! - `tunnel` — the WireGuard data plane; `nat` (+ `netlink`) — forwarding and our nftables table;
//! - `http_port` — the bounded HTTP responder; `health` — the health check on it; `metrics` —
//!   `GET /metrics` on it;
//!   `status` — the status report; `control` — the local control socket (status, reload);
//! - `selftest` — the in-process WireGuard client that proves the data plane works;
//! - `service` — `bastion run`, which puts the above together; `siblings` — taking a dead
//!   sibling out of the load balancer (`[siblings]`);
//! - `init` — PID 1 of the appliance: boot, network, config, supervision, power button;
//! - `watch` — `bastion watch`, on client machines: moves a stalled tunnel to a new flow;
//!   `move_notice` — the in-tunnel notice a draining bastion sends its peers.

pub mod audit;
pub mod cloudwatch;
pub mod config;
pub mod config_edit;
pub mod control;
pub mod convert;
pub mod enroll;
pub mod health;
pub mod http_port;
pub mod init;
pub mod keys;
pub mod log;
pub mod metrics;
pub mod move_notice;
pub mod nat;
pub mod netlink;
pub mod selftest;
pub mod service;
pub mod siblings;
pub mod source;
pub mod status;
pub mod tunnel;
pub mod watch;

#[cfg(test)]
mod fuzz_tests;
