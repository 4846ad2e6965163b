//! Test harness for the integration tests: network namespaces, veth links and processes that
//! clean themselves up (guard objects), with per-run names so parallel runs never collide.
//!
//! Everything here is a guard: a namespace, a process, a WireGuard interface or a scratch folder
//! is undone in `Drop`, also when the test panics. Names come from [`unique_name`], which starts
//! with a per-run prefix (pid + random), so two test runs on one machine never share a namespace
//! or a `/var/run/wireguard/NAME.sock` socket.
//!
//! All traffic stays inside the namespaces the harness creates: the only addresses used are the
//! documentation ranges (192.0.2.0/24, 2001:db8::/64) and private ranges that exist only inside
//! those namespaces (see [`topology`]).

pub mod aws;
pub mod baseline;
pub mod bastion;
pub mod cluster;
pub mod command;
pub mod dhcp;
pub mod handshake;
pub mod http;
pub mod imds;
pub mod link;
pub mod netns;
pub mod process;
pub mod rundir;
pub mod scratch;
pub mod topology;
pub mod traffic;
pub mod wait;
pub mod wireguard;

pub use bastion::{Bastion, BastionSetup};
pub use command::Output;
pub use dhcp::{DhcpPool, DhcpServer};
pub use http::{HttpResponse, HttpServer};
pub use imds::{ImdsEmulator, ImdsMode, ImdsRequest};
pub use netns::Netns;
pub use process::Process;
pub use rundir::RunDir;
pub use topology::Topology;
pub use wait::wait_until;
pub use wireguard::{Keypair, WgConf, WgInterface, WgPeer};

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The prefix of every name this test process creates: `b` + the pid in base 36 + two random
/// base-36 characters (at most 8 characters, so interface names built on it stay within the
/// kernel's 15).
pub fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let random = random_u64() % (36 * 36);
        format!("b{}{}", base36(std::process::id() as u64), pad2(base36(random)))
    })
}

/// A name no other run and no other call in this run has: run prefix + a counter + `role`.
/// Keep `role` short: interface names (such as a wireguard-go interface) must fit 15 characters.
pub fn unique_name(role: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}{}{}", run_prefix(), base36(n as u64), role);
    name
}

/// A random number from the kernel (no crate needed for a test prefix or a flood's seed).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(filled, 8, "getrandom failed");
    u64::from_ne_bytes(bytes)
}

/// Panics with a clear message unless the tests can run here: root, and the tools installed
/// (`make test-deps` installs them on Debian).
pub fn require_root_and_tools() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "the integration tests create network namespaces: run them as root");
    require_tools(&["ip", "wg", "wireguard-go", "nft", "ping", "sysctl"]);
    assert!(
        std::path::Path::new(http::PYTHON).exists() || command::find_in_path("python3").is_some(),
        "python3 is not installed: run `make test-deps`"
    );
}

/// Panics with a clear message unless every program in `tools` is on `PATH`: for what a test
/// needs beyond [`require_root_and_tools`] (`unshare`, `dnsmasq`...).
pub fn require_tools(tools: &[&str]) {
    for tool in tools {
        assert!(
            command::find_in_path(tool).is_some(),
            "`{tool}` is not installed: run `make test-deps` (Debian packages in the Makefile's TEST_PACKAGES)"
        );
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

fn pad2(s: String) -> String {
    format!("{s:0>2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_distinct() {
        let a = unique_name("wc0");
        let b = unique_name("wc0");
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a} is too long for an interface name");
        assert!(run_prefix().len() <= 8);
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(pad2(base36(5)), "05");
    }
}
