//! The boot's config from IMDSv2: the instance's user-data (the service's TOML config).
//!
//! Owns the endpoint address (default `http://169.254.169.254`, overridden by the kernel command
//! line `bastion.imds=http://IP:PORT` or `bastion init --imds URL`) and what a user-data answer
//! means for the boot (none, not yet reachable, unusable). The IMDSv2 protocol (token, bounded
//! read) is the project's one client, [`bastion_aws::imds::Imds`]; retrying and falling back is
//! `super::config_source`'s.

use bastion_aws::imds::{Imds, ImdsError};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub const DEFAULT_URL: &str = "http://169.254.169.254";
/// EC2 caps user-data at 16 KiB; anything past 64 KiB is not a config.
pub const MAX_USER_DATA: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// IMDS is link-local and answers in milliseconds; a response still coming after this is broken.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Where IMDS is: an IP literal and port (there is no DNS on the appliance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
}

impl Endpoint {
    /// Parses `http://IP[:PORT]` (IPv6 in brackets), with an optional trailing `/`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| format!("IMDS address {url:?}: {why} (expected http://IP[:PORT])");
        let rest = url.strip_prefix("http://").ok_or_else(|| bad("not an http:// URL"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') || authority.contains('@') || authority.is_empty() {
            return Err(bad("only an address and port may follow http://"));
        }
        if let Ok(addr) = authority.parse::<SocketAddr>() {
            return Ok(Endpoint { addr });
        }
        let host = authority.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(authority);
        match host.parse::<IpAddr>() {
            Ok(ip) => Ok(Endpoint { addr: SocketAddr::new(ip, 80) }),
            Err(_) => Err(bad("the host must be an IP address, there is no DNS at boot")),
        }
    }

    pub fn url(&self) -> String {
        if self.addr.port() == 80 {
            match self.addr.ip() {
                IpAddr::V4(ip) => format!("http://{ip}"),
                IpAddr::V6(ip) => format!("http://[{ip}]"),
            }
        } else {
            format!("http://{}", self.addr)
        }
    }
}

/// The `bastion.imds=` value of a kernel command line, if present.
pub fn url_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|word| word.strip_prefix("bastion.imds="))
        .map(|v| v.trim_matches('"').to_string())
}

/// Why the boot has no user-data to validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    /// IMDS answered, and the instance has no user-data (404).
    #[error("GET {url}: 404, the instance has no user-data")]
    NoUserData { url: String },
    /// IMDS did not answer (connect or read failed): it may be disabled, or not reachable yet.
    #[error("{0}")]
    Unreachable(String),
    /// IMDS answered something we cannot use.
    #[error("{0}")]
    BadAnswer(String),
}

/// Gets a session token, then the user-data text.
pub fn fetch_user_data(endpoint: &Endpoint) -> Result<String, UserDataError> {
    let imds = Imds::bounded(&endpoint.url(), REQUEST_DEADLINE, CONNECT_TIMEOUT, MAX_USER_DATA as u64);
    let url = format!("{}/latest/user-data", endpoint.url());
    user_data_from(&url, imds.get_bytes("user-data"))
}

/// What a user-data read means for the boot: text, none, or why not.
pub fn user_data_from(url: &str, read: Result<Vec<u8>, ImdsError>) -> Result<String, UserDataError> {
    let body = match read {
        Ok(body) => body,
        Err(ImdsError::NotFound(_)) => return Err(UserDataError::NoUserData { url: url.to_string() }),
        Err(ImdsError::Unreachable(why)) => return Err(UserDataError::Unreachable(why)),
        // A refused token is not "unreachable": the baked config must not replace user-data
        // because IMDS is turned off for a moment.
        Err(e @ (ImdsError::TokenRefused(_) | ImdsError::BadAnswer(_) | ImdsError::NoRole)) => {
            return Err(UserDataError::BadAnswer(e.to_string()))
        }
    };
    if body.starts_with(&[0x1f, 0x8b]) {
        return Err(UserDataError::BadAnswer(format!(
            "GET {url}: user-data is gzip-compressed; give the TOML config as plain text"
        )));
    }
    String::from_utf8(body).map_err(|e| {
        UserDataError::BadAnswer(format!(
            "GET {url}: user-data is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(Endpoint::parse("http://169.254.169.254").unwrap().addr, "169.254.169.254:80".parse().unwrap());
        assert_eq!(Endpoint::parse("http://10.1.2.3:8775/").unwrap().addr, "10.1.2.3:8775".parse().unwrap());
        assert_eq!(Endpoint::parse("http://[fd00:ec2::254]").unwrap().addr, "[fd00:ec2::254]:80".parse().unwrap());
        assert_eq!(Endpoint::parse("http://[fd00:ec2::254]:81").unwrap().url(), "http://[fd00:ec2::254]:81");
        assert_eq!(Endpoint::parse(DEFAULT_URL).unwrap().url(), DEFAULT_URL);
        for bad in [
            "https://169.254.169.254",
            "http://metadata.internal",
            "http://1.2.3.4/latest",
            "http://",
            "169.254.169.254",
            "http://u@1.2.3.4",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cmdline_override() {
        let c = "console=ttyS0 bastion.imds=http://10.0.2.2:8775 quiet\n";
        assert_eq!(url_from_cmdline(c).as_deref(), Some("http://10.0.2.2:8775"));
        assert_eq!(url_from_cmdline("console=ttyS0 bastion.imdsx=1"), None);
    }

    #[test]
    fn user_data_answers() {
        assert_eq!(user_data_from("u", Ok(b"[interface]\n".to_vec())).unwrap(), "[interface]\n");
        assert_eq!(
            user_data_from("u", Err(ImdsError::NotFound("GET u".into()))),
            Err(UserDataError::NoUserData { url: "u".into() })
        );
        assert_eq!(
            user_data_from("u", Err(ImdsError::Unreachable("PUT u: refused".into()))),
            Err(UserDataError::Unreachable("PUT u: refused".into()))
        );
        assert!(matches!(
            user_data_from("u", Err(ImdsError::TokenRefused("PUT u: 403".into()))),
            Err(UserDataError::BadAnswer(_))
        ));
        assert!(user_data_from("u", Ok(vec![0x1f, 0x8b, 8])).unwrap_err().to_string().contains("gzip"));
        assert!(user_data_from("u", Ok(vec![b'a', 0xff])).unwrap_err().to_string().contains("not UTF-8"));
    }
}
