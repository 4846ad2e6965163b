//! A real DHCP server for a machine under test: dnsmasq (DHCP only, its DNS off) on one
//! interface of a namespace, with its lease file and its log (`--log-dhcp`) in the run folder,
//! so a test checks what the server really handed out and acknowledged.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::netns::Netns;
use crate::process::Process;
use crate::rundir::RunDir;

/// What the server hands out.
#[derive(Clone, Debug)]
pub struct DhcpPool {
    /// The addresses leased, from `first` to `last`.
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub netmask: Ipv4Addr,
    /// In seconds; dnsmasq raises anything shorter to 120.
    pub lease_seconds: u32,
    /// Option 3.
    pub router: Ipv4Addr,
    /// Option 26, the interface MTU.
    pub mtu: Option<u32>,
    /// Options 58 and 59 (T1, T2) in seconds: renewals a test can wait for, sooner than the
    /// lease's half-life.
    pub renew_rebind_seconds: Option<(u32, u32)>,
}

/// dnsmasq serving `pool` on one interface; stopped on drop.
pub struct DhcpServer {
    process: Process,
    leases: PathBuf,
}

impl DhcpServer {
    /// Starts dnsmasq on `interface` of `ns` (which must already hold an address in the pool's
    /// subnet) and waits until it serves.
    pub fn start(ns: &Netns, interface: &str, pool: &DhcpPool, dir: &RunDir) -> DhcpServer {
        crate::require_tools(&["dnsmasq"]);
        let file = |what: &str| dir.path().join(format!("dnsmasq-{interface}.{what}"));
        let leases = file("leases");
        let mut argv = vec![
            "dnsmasq".to_string(),
            "--keep-in-foreground".into(),
            "--no-daemon".into(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            format!("--interface={interface}"),
            "--bind-interfaces".into(),
            format!("--dhcp-range={},{},{},{}", pool.first, pool.last, pool.netmask, pool.lease_seconds),
            format!("--dhcp-option=option:router,{}", pool.router),
            format!("--dhcp-leasefile={}", leases.display()),
            format!("--pid-file={}", file("pid").display()),
            // Answer at once: no ping of an address before offering it.
            "--no-ping".into(),
            "--log-dhcp".into(),
            "--log-facility=-".into(),
        ];
        if let Some(mtu) = pool.mtu {
            argv.push(format!("--dhcp-option=option:mtu,{mtu}"));
        }
        if let Some((t1, t2)) = pool.renew_rebind_seconds {
            argv.push(format!("--dhcp-option=option:T1,{t1}"));
            argv.push(format!("--dhcp-option=option:T2,{t2}"));
        }
        let process = ns.spawn(&format!("dnsmasq on {interface}"), &argv, &[], &file("log"));
        process.wait_for_log("DHCP, IP range", Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
        DhcpServer { process, leases }
    }

    /// The address of the first lease in dnsmasq's lease file (`expiry mac ip host clientid`).
    pub fn leased_address(&self) -> Option<Ipv4Addr> {
        let leases = std::fs::read_to_string(&self.leases).ok()?;
        leases.lines().next()?.split_whitespace().nth(2)?.parse().ok()
    }

    /// How many DHCPACKs the server has sent (the first one and every renewal's).
    pub fn acks(&self) -> usize {
        self.process.log().matches("DHCPACK").count()
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The server's log without `--log-dhcp`'s per-option detail (the file keeps it), and its
    /// lease file, framed for a failure message.
    pub fn log_report(&self) -> String {
        const DETAIL: [&str; 6] = [
            " sent size:",
            " requested options:",
            " tags:",
            " next server:",
            " available DHCP range:",
            " vendor class:",
        ];
        let log = self.process.log();
        let messages: Vec<&str> =
            log.lines().filter(|line| !DETAIL.iter().any(|detail| line.contains(detail))).collect();
        let leases = std::fs::read_to_string(&self.leases).unwrap_or_default();
        format!(
            "--- log of {} ({}, without option detail) ---\n{}\n--- {} ---\n{}",
            self.process.label(),
            self.process.log_path().display(),
            messages.join("\n"),
            self.leases.display(),
            leases.trim_end()
        )
    }
}
