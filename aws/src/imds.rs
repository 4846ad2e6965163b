//! The EC2 instance metadata service, version 2 only: a session token (`PUT
//! /latest/api/token`), then reads with it. The one IMDS client of the project: the instance
//! role's credentials and the region (here), the lifecycle state and the instance id (the
//! appliance's service), the user-data at boot (the appliance's init, with [`Imds::bounded`]).
//! Short timeouts: off EC2 it is simply not there.
//!
//! The meaning of each answer is decided by pure functions ([`token_from_answer`],
//! [`body_from_answer`]) that the fuzz tests feed garbage.

use crate::credentials::{self, Credentials};
use crate::http::{Http, HttpRequest, TransportError};
use std::time::Duration;

/// The token lives as long as IMDS allows (6 hours); every read takes a fresh one anyway.
const TOKEN_TTL_SECONDS: &str = "21600";
/// A token longer than this is not a token.
const MAX_TOKEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImdsError {
    /// IMDS did not answer (refused, no route, no connection in time), or answered that IMDSv2
    /// is off for this instance: off EC2, or not there yet.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The token request was refused with 403–405 (IMDS turned off, or the request not
    /// allowed). Credential lookups treat it as "not here"; the boot config retries it.
    #[error("{0}")]
    TokenRefused(String),
    #[error("the instance has no IAM role")]
    NoRole,
    #[error("{0}: not found (404)")]
    NotFound(String),
    /// IMDS answered something we cannot use (a bad status, too big, too slow, not a token).
    #[error("{0}")]
    BadAnswer(String),
}

pub struct Imds {
    endpoint: String,
    http: Http,
    /// The whole exchange's and the connection's time limits, for messages.
    total: Duration,
    connect: Duration,
    /// Whether a slow, oversized or broken answer is a bad answer (the boot's user-data) or,
    /// like no answer at all, "not here" (credentials and region: off EC2, look elsewhere).
    strict: bool,
}

impl Imds {
    /// For small reads: 2 s for the whole exchange.
    pub fn new(endpoint: &str) -> Imds {
        let total = Duration::from_secs(2);
        Imds::with_http(endpoint, Http::link_local(total), total, total, false)
    }

    /// For one bounded read (the boot's user-data): connect within `connect`, the whole answer
    /// within `total`, at most `max_body` bytes.
    pub fn bounded(endpoint: &str, total: Duration, connect: Duration, max_body: u64) -> Imds {
        Imds::with_http(endpoint, Http::bounded(total, connect, max_body), total, connect, true)
    }

    fn with_http(endpoint: &str, http: Http, total: Duration, connect: Duration, strict: bool) -> Imds {
        Imds { endpoint: endpoint.trim_end_matches('/').to_string(), http, total, connect, strict }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn exchange(
        &self,
        method: &str,
        url: &str,
        header: (&str, String),
    ) -> Result<crate::http::HttpResponse, ImdsError> {
        let request = HttpRequest {
            method: method.into(),
            url: url.into(),
            headers: vec![(header.0.into(), header.1)],
            body: Vec::new(),
        };
        self.http.send(&request).map_err(|e| {
            let limits = Limits { total: self.total, connect: self.connect };
            match classify(&format!("{method} {url}"), e, limits) {
                ImdsError::BadAnswer(why) if !self.strict => ImdsError::Unreachable(why),
                other => other,
            }
        })
    }

    fn token(&self) -> Result<String, ImdsError> {
        let url = format!("{}/latest/api/token", self.endpoint);
        let answer = self.exchange("PUT", &url, ("x-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS.into()))?;
        token_from_answer(&url, answer.status, &answer.reason, &answer.body)
    }

    /// `GET /latest/PATH` with a fresh token: the body as bytes.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ImdsError> {
        let token = self.token()?;
        let url = format!("{}/latest/{}", self.endpoint, path.trim_start_matches('/'));
        let answer = self.exchange("GET", &url, ("x-aws-ec2-metadata-token", token))?;
        body_from_answer(&url, answer.status, &answer.reason, answer.body)
    }

    /// `GET /latest/PATH` with a fresh token: the body as text (invalid UTF-8 replaced).
    pub fn get(&self, path: &str) -> Result<String, ImdsError> {
        self.get_bytes(path).map(|body| String::from_utf8_lossy(&body).into_owned())
    }

    /// The credentials of the instance's role.
    pub fn role_credentials(&self) -> Result<Credentials, ImdsError> {
        let roles = match self.get("meta-data/iam/security-credentials/") {
            Err(ImdsError::NotFound(_)) => return Err(ImdsError::NoRole),
            other => other?,
        };
        let role = roles.lines().map(str::trim).find(|l| !l.is_empty()).ok_or(ImdsError::NoRole)?;
        if !role.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)) {
            return Err(ImdsError::BadAnswer(format!("the role name {role:?} is not an IAM name")));
        }
        let json = self.get(&format!("meta-data/iam/security-credentials/{role}"))?;
        credentials::from_metadata_json(&json, &format!("EC2 instance role {role}"))
            .map_err(|e| ImdsError::BadAnswer(e.to_string()))
    }

    /// The region the instance runs in.
    pub fn region(&self) -> Result<String, ImdsError> {
        let region = self.get("meta-data/placement/region")?.trim().to_string();
        if region.is_empty()
            || region.len() > 32
            || !region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ImdsError::BadAnswer(format!("the region {region:?} is not a region name")));
        }
        Ok(region)
    }
}

/// The region to call: `explicit` (a config's), else the environment's (`AWS_REGION`, the
/// profile), else the instance's from IMDS — as the SDKs find it.
pub fn resolve_region(explicit: Option<&str>, env: &crate::env::Environment) -> Result<String, ImdsError> {
    match explicit.map(str::to_string).or_else(|| env.region()) {
        Some(region) => Ok(region),
        None => Imds::new(&env.imds_endpoint()).region(),
    }
}

/// A client's time limits, for messages.
#[derive(Debug, Clone, Copy)]
struct Limits {
    total: Duration,
    connect: Duration,
}

/// Not answering at all (refused, no route, no connection in time) is "unreachable": IMDS may
/// be off, or not there yet. An answer we cannot use is a bad answer.
fn classify(what: &str, e: TransportError, limits: Limits) -> ImdsError {
    match e {
        TransportError::ConnectTimeout(_) => {
            ImdsError::Unreachable(format!("{what}: no connection within {:.1} s", limits.connect.as_secs_f64()))
        }
        TransportError::HostNotFound(host) => ImdsError::Unreachable(format!("{what}: cannot resolve {host}")),
        TransportError::Unreachable(why) => ImdsError::Unreachable(format!("{what}: {why}")),
        TransportError::Timeout(_) => {
            ImdsError::BadAnswer(format!("{what}: response not complete after {:.1} s", limits.total.as_secs_f64()))
        }
        TransportError::BodyTooLarge(limit) => {
            ImdsError::BadAnswer(format!("{what}: response body larger than {limit} bytes"))
        }
        TransportError::Failed(why) => ImdsError::BadAnswer(format!("{what}: {why}")),
    }
}

/// The token answer: 200 with a printable token, else why not.
pub fn token_from_answer(url: &str, status: u16, reason: &str, body: &[u8]) -> Result<String, ImdsError> {
    match status {
        200 => {}
        // What the SDKs take as "IMDS is off for this instance (or this is not one)".
        403..=405 => {
            return Err(ImdsError::TokenRefused(format!(
                "PUT {url}: status {status} {reason} (IMDSv2 token refused; is IMDS enabled for this instance?)"
            )))
        }
        _ => return Err(ImdsError::BadAnswer(format!("PUT {url}: status {status} {reason} (IMDSv2 token)"))),
    }
    let token = std::str::from_utf8(body).unwrap_or("").trim();
    if token.is_empty() || token.len() > MAX_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ImdsError::BadAnswer(format!("PUT {url}: the token is empty, too long or not printable")));
    }
    Ok(token.to_string())
}

/// A read's answer: the body of a 200, else why not.
pub fn body_from_answer(url: &str, status: u16, reason: &str, body: Vec<u8>) -> Result<Vec<u8>, ImdsError> {
    match status {
        200 => Ok(body),
        404 => Err(ImdsError::NotFound(format!("GET {url}"))),
        401 => Err(ImdsError::BadAnswer(format!("GET {url}: status 401 {reason}: the token was refused"))),
        _ => Err(ImdsError::BadAnswer(format!("GET {url}: status {status} {reason}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers() {
        assert_eq!(token_from_answer("u", 200, "OK", b"AQAEA-abc==\n").unwrap(), "AQAEA-abc==");
        assert!(token_from_answer("u", 200, "OK", b"").is_err());
        assert!(token_from_answer("u", 200, "OK", b"a b").is_err());
        assert!(token_from_answer("u", 200, "OK", b"a\r\nX-Evil: 1").is_err());
        assert!(token_from_answer("u", 200, "OK", &[b'a'; MAX_TOKEN + 1]).is_err());
        let e = token_from_answer("u", 403, "Forbidden", b"x").unwrap_err();
        assert!(matches!(e, ImdsError::TokenRefused(_)) && e.to_string().contains("403 Forbidden"), "{e}");
        assert!(matches!(token_from_answer("u", 500, "Internal", b"x"), Err(ImdsError::BadAnswer(_))));
    }

    #[test]
    fn read_answers() {
        assert_eq!(body_from_answer("u", 200, "OK", b"x".to_vec()).unwrap(), b"x");
        assert_eq!(body_from_answer("u", 404, "Not Found", vec![]), Err(ImdsError::NotFound("GET u".into())));
        assert!(body_from_answer("u", 401, "Unauthorized", vec![])
            .unwrap_err()
            .to_string()
            .contains("token was refused"));
        assert!(body_from_answer("u", 500, "Internal", vec![]).unwrap_err().to_string().contains("500 Internal"));
    }

    #[test]
    fn transport_failures_are_unreachable_or_bad_answers() {
        const T: Limits = Limits { total: Duration::from_secs(5), connect: Duration::from_secs(2) };
        assert!(matches!(
            classify("PUT u", TransportError::Unreachable("refused".into()), T),
            ImdsError::Unreachable(_)
        ));
        assert_eq!(
            classify("PUT u", TransportError::ConnectTimeout("u".into()), T),
            ImdsError::Unreachable("PUT u: no connection within 2.0 s".into())
        );
        assert!(matches!(classify("GET u", TransportError::BodyTooLarge(65536), T), ImdsError::BadAnswer(_)));
        let slow = classify("GET u", TransportError::Timeout("u".into()), T);
        assert_eq!(slow, ImdsError::BadAnswer("GET u: response not complete after 5.0 s".into()));
    }
}
