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
pub mod crypto_floor;
pub mod dhcp;
pub mod ha;
pub mod handshake;
pub mod http;
pub mod imds;
pub mod link;
pub mod netns;
pub mod nlb;
pub mod ping;
pub mod process;
pub mod rundir;
pub mod scratch;
pub mod storm;
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

/// The prefix of every name this test process creates: `b` + the pid in base 26 + two random
/// letters (at most 8 characters, so interface names built on it stay within the kernel's 15).
/// Letters only: a path such as `/tmp/bastion-tests/b6pl155/…` has runs of digits that the
/// appliance's key redaction (`keys::redact_key_like`) may take for part of a key and hide,
/// which made a test that looks for the path in a diagnostic fail at random.
pub fn run_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let random = random_u64() % (26 * 26);
        format!("b{}{}", letters(std::process::id() as u64), pad2(letters(random)))
    })
}

/// A name no other run and no other call in this run has: run prefix + a counter + `role`.
/// Keep `role` short: interface names (such as a wireguard-go interface) must fit 15 characters.
pub fn unique_name(role: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}{}{}", run_prefix(), letters(n as u64), role);
    name
}

/// A random number from the kernel (no crate needed for a test prefix or a flood's seed).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the live local array.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(filled, 8, "getrandom failed");
    u64::from_ne_bytes(bytes)
}

/// Panics with a clear message unless the tests can run here: root, and the tools installed
/// (`make test-deps` installs them on Debian).
pub fn require_root_and_tools() {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
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

/// `n` in base 26 written with the letters a–z (`a` is 0).
fn letters(mut n: u64) -> String {
    const DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "a".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 26) as usize]);
        n /= 26;
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

fn pad2(s: String) -> String {
    format!("{s:a>2}")
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
    fn letter_digits() {
        assert_eq!(letters(0), "a");
        assert_eq!(letters(25), "z");
        assert_eq!(letters(26), "ba");
        assert_eq!(pad2(letters(5)), "af");
        // The largest Linux pid (2^22) still fits the 8-character prefix.
        assert_eq!(letters(1 << 22).len(), 5);
        assert!(run_prefix().bytes().all(|b| b.is_ascii_lowercase()), "{}", run_prefix());
    }
}
