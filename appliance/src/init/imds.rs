//! IMDSv2: fetches the instance's user-data (the service's TOML config) from the EC2 instance
//! metadata service — `PUT /latest/api/token` with a TTL header, then `GET /latest/user-data`
//! with that token.
//!
//! Owns the endpoint address (default `http://169.254.169.254`, overridden by the kernel command
//! line `bastion.imds=http://IP:PORT` or `bastion init --imds URL`) and the meaning of IMDS answers.
//! HTTP is the project's one client (`bastion_aws::http`, ureq), bounded in time and size;
//! retrying and falling back is `super::config_source`'s.

use bastion_aws::http::{Http, HttpRequest, HttpResponse, TransportError};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub const DEFAULT_URL: &str = "http://169.254.169.254";
/// The token lives as long as IMDS allows (6 hours); one boot needs it for seconds.
const TOKEN_TTL_SECONDS: &str = "21600";
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImdsError {
    /// IMDS answered, and the instance has no user-data (404).
    #[error("GET {url}: 404, the instance has no user-data")]
    NoUserData { url: String },
    /// IMDS did not answer (connect or read failed): it may be disabled, or not reachable yet.
    #[error("{url}: {why}")]
    Unreachable { url: String, why: String },
    /// IMDS answered something we cannot use.
    #[error("{url}: {why}")]
    BadAnswer { url: String, why: String },
}

/// Gets a session token, then the user-data text.
pub fn fetch_user_data(endpoint: &Endpoint) -> Result<String, ImdsError> {
    let token = fetch_token(endpoint)?;
    let url = format!("{}/latest/user-data", endpoint.url());
    let headers = vec![("X-aws-ec2-metadata-token".to_string(), token)];
    let response = exchange(&format!("GET {url}"), "GET", &url, headers, MAX_USER_DATA)?;
    user_data_from_response(&url, response.status, &response.reason, response.body)
}

fn fetch_token(endpoint: &Endpoint) -> Result<String, ImdsError> {
    let url = format!("{}/latest/api/token", endpoint.url());
    let headers = vec![("X-aws-ec2-metadata-token-ttl-seconds".to_string(), TOKEN_TTL_SECONDS.to_string())];
    let response = exchange(&format!("PUT {url}"), "PUT", &url, headers, 4096)?;
    token_from_response(&url, response.status, &response.reason, &response.body)
}

/// One bounded request: connect within `CONNECT_TIMEOUT`, the whole answer within
/// `REQUEST_DEADLINE`, at most `max_body` bytes of body.
fn exchange(
    what: &str,
    method: &str,
    url: &str,
    headers: Vec<(String, String)>,
    max_body: usize,
) -> Result<HttpResponse, ImdsError> {
    let http = Http::bounded(REQUEST_DEADLINE, CONNECT_TIMEOUT, max_body as u64);
    let request = HttpRequest { method: method.into(), url: url.into(), headers, body: Vec::new() };
    http.send(&request).map_err(|e| classify(what, e))
}

/// Not answering at all (refused, no route, no connection in time) is "unreachable": IMDS may
/// be off, or not there yet. An answer we cannot use is a bad answer.
fn classify(what: &str, e: TransportError) -> ImdsError {
    let url = what.to_string();
    match e {
        TransportError::ConnectTimeout(_) => {
            ImdsError::Unreachable { url, why: format!("no connection within {:.1} s", CONNECT_TIMEOUT.as_secs_f64()) }
        }
        TransportError::Timeout(_) => ImdsError::BadAnswer {
            url,
            why: format!("response not complete after {:.1} s", REQUEST_DEADLINE.as_secs_f64()),
        },
        TransportError::BodyTooLarge(limit) => {
            ImdsError::BadAnswer { url, why: format!("response body larger than {limit} bytes") }
        }
        TransportError::HostNotFound(h) => ImdsError::Unreachable { url, why: format!("cannot resolve {h}") },
        TransportError::Unreachable(why) => ImdsError::Unreachable { url, why },
        TransportError::Failed(why) => ImdsError::BadAnswer { url, why },
    }
}

/// Interprets the token answer: 200 with a printable token, else why not.
pub fn token_from_response(url: &str, status: u16, reason: &str, body: &[u8]) -> Result<String, ImdsError> {
    let what = format!("PUT {url}");
    if status != 200 {
        return Err(ImdsError::BadAnswer {
            url: what,
            why: format!("status {status} {reason} (IMDSv2 token refused; is IMDS enabled for this instance?)"),
        });
    }
    let token = std::str::from_utf8(body).unwrap_or("").trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ImdsError::BadAnswer { url: what, why: "the token is empty or not printable".into() });
    }
    Ok(token.to_string())
}

/// Interprets the user-data answer.
pub fn user_data_from_response(url: &str, status: u16, reason: &str, body: Vec<u8>) -> Result<String, ImdsError> {
    match status {
        200 => {}
        404 => return Err(ImdsError::NoUserData { url: url.to_string() }),
        401 => {
            return Err(ImdsError::BadAnswer {
                url: format!("GET {url}"),
                why: "status 401 Unauthorized: the token was refused".into(),
            })
        }
        _ => return Err(ImdsError::BadAnswer { url: format!("GET {url}"), why: format!("status {status} {reason}") }),
    }
    if body.starts_with(&[0x1f, 0x8b]) {
        return Err(ImdsError::BadAnswer {
            url: format!("GET {url}"),
            why: "user-data is gzip-compressed; give the TOML config as plain text".into(),
        });
    }
    String::from_utf8(body).map_err(|e| ImdsError::BadAnswer {
        url: format!("GET {url}"),
        why: format!("user-data is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
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
    fn token_answers() {
        assert_eq!(token_from_response("u", 200, "OK", b"AQAEA-abc==\n").unwrap(), "AQAEA-abc==");
        assert!(token_from_response("u", 200, "OK", b"").is_err());
        assert!(token_from_response("u", 200, "OK", b"a b").is_err());
        assert!(token_from_response("u", 200, "OK", b"a\r\nX-Evil: 1").is_err());
        let e = token_from_response("u", 403, "Forbidden", b"x").unwrap_err();
        assert!(e.to_string().contains("403 Forbidden"), "{e}");
    }

    #[test]
    fn user_data_answers() {
        assert_eq!(user_data_from_response("u", 200, "OK", b"[interface]\n".to_vec()).unwrap(), "[interface]\n");
        assert_eq!(
            user_data_from_response("u", 404, "Not Found", vec![]),
            Err(ImdsError::NoUserData { url: "u".into() })
        );
        assert!(user_data_from_response("u", 401, "Unauthorized", vec![])
            .unwrap_err()
            .to_string()
            .contains("token was refused"));
        assert!(user_data_from_response("u", 200, "OK", vec![0x1f, 0x8b, 8]).unwrap_err().to_string().contains("gzip"));
        assert!(user_data_from_response("u", 200, "OK", vec![b'a', 0xff])
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        assert!(user_data_from_response("u", 500, "Internal", vec![])
            .unwrap_err()
            .to_string()
            .contains("500 Internal"));
    }
}
