//! `bastion status`: a running service answers on its control socket (`crate::control`) with
//! its [`StatusReport`] as JSON — peers, last handshake, bytes, the last self-test, drain
//! state, the config's source and version. Never keys. The client renders it as text
//! (`report::render_text`) or prints the JSON (`--json`).

mod report;

#[cfg(test)]
pub(crate) use report::example;
pub use report::{render_text, StatusReport, SCHEMA_VERSION};
pub use report::{ConfigSource, Dropped, Failover, Health, Initiations, Offloads, PeerReport, SelfTest, Siblings};

use std::io;
use std::path::Path;
use std::time::Duration;

/// The report of the service whose control socket is `socket`.
pub fn fetch(socket: &Path) -> io::Result<StatusReport> {
    parse(&crate::control::ask(socket, crate::control::Request::Status, Duration::from_secs(5))?)
}

/// The server's answer, checked: JSON of a report of our schema version.
pub fn parse(bytes: &[u8]) -> io::Result<StatusReport> {
    let bad =
        |why: String| io::Error::new(io::ErrorKind::InvalidData, format!("the status answer is not a report: {why}"));
    let report: StatusReport = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if report.schema != SCHEMA_VERSION {
        return Err(bad(format!("schema {} (this bastion reads {SCHEMA_VERSION})", report.schema)));
    }
    Ok(report)
}

/// Human units for byte counters.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_reads_the_servers_report() {
        let path = std::env::temp_dir().join(format!("bastion-status-{}.sock", std::process::id()));
        let server =
            crate::control::ControlServer::start(&path, |_| serde_json::to_vec(&report::example()).unwrap()).unwrap();
        assert_eq!(fetch(&path).unwrap(), report::example());
        server.stop();
        assert!(fetch(&path).is_err());
    }

    #[test]
    fn garbage_answers_are_errors() {
        for bad in [&b""[..], b"{", b"[]", b"null", b"{\"schema\":1}", &[0xff, 0xfe]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let mut other = report::example();
        other.schema = 99;
        assert!(parse(&serde_json::to_vec(&other).unwrap()).is_err());
    }

    #[test]
    fn byte_counts_read_like_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
