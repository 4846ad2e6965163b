//! iperf3 as the traffic: servers in the private host, clients in the client namespaces (so
//! every byte crosses a client's wireguard-go, the bastion and the masquerade), and what a
//! client's `-J` report says about the run.

use std::net::Ipv4Addr;
use std::path::Path;

use bastion_tests::{Netns, Process};
use serde_json::Value;

/// The first iperf3 server port; client `i` talks to `BASE_PORT + i` (one iperf3 server runs
/// one test at a time).
pub const BASE_PORT: u16 = 5201;
/// UDP payload per datagram: 1350 + 8 + 20 bytes fit the tunnel MTU (1420) unfragmented.
pub const UDP_PAYLOAD: u32 = 1350;

/// `iperf3 -s` for `clients` clients in `ns`, logging to `dir`.
pub fn start_servers(ns: &Netns, dir: &Path, clients: usize) -> Vec<Process> {
    (0..clients)
        .map(|i| {
            let port = (BASE_PORT + i as u16).to_string();
            ns.spawn(
                &format!("iperf3 server :{port}"),
                &["iperf3", "-s", "-p", &port],
                &[],
                &dir.join(format!("iperf3-server-{port}.log")),
            )
        })
        .collect()
}

/// What traffic one client sends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Traffic {
    /// `streams` TCP streams (`-P`); `reverse` = the private host sends (`-R`).
    Tcp { reverse: bool, streams: u32 },
    /// UDP at a fixed offered rate (Mbit/s), client to private host.
    Udp { mbit: u32 },
}

/// One client's argv (run inside its namespace).
pub fn client_argv(server: Ipv4Addr, client: usize, traffic: Traffic, seconds: u32) -> Vec<String> {
    let mut argv: Vec<String> = [
        "iperf3",
        "-c",
        &server.to_string(),
        "-p",
        &(BASE_PORT + client as u16).to_string(),
        "-t",
        &seconds.to_string(),
        "-J",
        "--connect-timeout",
        "5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match traffic {
        Traffic::Tcp { reverse, streams } => {
            if reverse {
                argv.push("-R".into());
            }
            if streams > 1 {
                argv.extend(["-P".into(), streams.to_string()]);
            }
        }
        Traffic::Udp { mbit } => {
            argv.extend(["-u".into(), "-b".into(), format!("{mbit}M")]);
            argv.extend(["-l".into(), UDP_PAYLOAD.to_string()]);
        }
    }
    argv
}

/// What one client's report says.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Bytes the receiving side got.
    pub bytes: f64,
    /// Received bits per second.
    pub bits_per_second: f64,
    /// TCP retransmits of the sending side (0 for UDP).
    pub retransmits: f64,
    /// UDP: datagrams lost, in percent of those sent.
    pub lost_percent: f64,
}

/// Reads a `-J` report; `Err` says what was missing (or iperf3's own error message).
pub fn parse(json: &str) -> Result<Report, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("not iperf3 JSON: {e}"))?;
    if let Some(error) = v.get("error").and_then(Value::as_str) {
        return Err(format!("iperf3: {error}"));
    }
    let end = v.get("end").ok_or("no `end` section")?;
    let number = |section: &str, field: &str| -> Result<f64, String> {
        end.get(section)
            .and_then(|s| s.get(field))
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("no end.{section}.{field}"))
    };
    Ok(Report {
        bytes: number("sum_received", "bytes")?,
        bits_per_second: number("sum_received", "bits_per_second")?,
        retransmits: number("sum_sent", "retransmits").unwrap_or(0.0),
        lost_percent: number("sum_received", "lost_percent").unwrap_or(0.0),
    })
}
