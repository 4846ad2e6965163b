//! The EC2 instance metadata service, version 2 only: a session token (`PUT
//! /latest/api/token`), then reads with it. Used for the instance role's credentials and the
//! region. Short timeouts: off EC2 it is simply not there.

use crate::credentials::{self, Credentials};
use crate::http::{Http, HttpRequest};
use std::time::Duration;

const TOKEN_TTL_SECONDS: &str = "21600";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImdsError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("the instance has no IAM role")]
    NoRole,
    #[error("{0}: not found (404)")]
    NotFound(String),
    #[error("{0}")]
    BadAnswer(String),
}

pub struct Imds {
    endpoint: String,
    http: Http,
}

impl Imds {
    pub fn new(endpoint: &str) -> Imds {
        Imds { endpoint: endpoint.trim_end_matches('/').to_string(), http: Http::link_local(Duration::from_secs(2)) }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn token(&self) -> Result<String, ImdsError> {
        let url = format!("{}/latest/api/token", self.endpoint);
        let answer = self
            .http
            .send(&HttpRequest {
                method: "PUT".into(),
                url: url.clone(),
                headers: vec![("x-aws-ec2-metadata-token-ttl-seconds".into(), TOKEN_TTL_SECONDS.into())],
                body: Vec::new(),
            })
            .map_err(|e| ImdsError::Unreachable(e.to_string()))?;
        match answer.status {
            200 if !answer.body.is_empty() && answer.body.len() < 4096 => Ok(answer.text().trim().to_string()),
            // What the SDKs take as "IMDS is off for this instance (or this is not one)".
            403..=405 => Err(ImdsError::Unreachable(format!("PUT {url}: HTTP {} (no IMDSv2 here)", answer.status))),
            status => Err(ImdsError::BadAnswer(format!("PUT {url}: HTTP {status} (IMDSv2 token)"))),
        }
    }

    /// `GET /latest/PATH` with a fresh token.
    pub fn get(&self, path: &str) -> Result<String, ImdsError> {
        let token = self.token()?;
        let url = format!("{}/latest/{}", self.endpoint, path.trim_start_matches('/'));
        let answer = self
            .http
            .send(&HttpRequest {
                method: "GET".into(),
                url: url.clone(),
                headers: vec![("x-aws-ec2-metadata-token".into(), token)],
                body: Vec::new(),
            })
            .map_err(|e| ImdsError::Unreachable(e.to_string()))?;
        match answer.status {
            200 => Ok(answer.text()),
            404 => Err(ImdsError::NotFound(format!("GET {url}"))),
            status => Err(ImdsError::BadAnswer(format!("GET {url}: HTTP {status}"))),
        }
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
