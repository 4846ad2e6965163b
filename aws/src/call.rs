//! One AWS call: the request ([`Call`]), its endpoint, SigV4 (unless the call is unsigned), the
//! send, the error answer read in the service's protocol, backoff with jitter on what is worth
//! retrying, and a clock correction from the `Date` header when AWS says the request time is
//! skewed. Whose credentials sign it is the caller's business ([`Signing`]): [`crate::Client`]
//! passes the chain's, STS's AssumeRole a source profile's.

use crate::credentials::Credentials;
use crate::env::Environment;
use crate::error::{self, AwsError};
use crate::http::{Http, HttpRequest, HttpResponse};
use crate::retry::{self, RetryPolicy};
use crate::sigv4;
use crate::time::UtcTime;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// How a service writes its error answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// EC2, STS: form-encoded request, XML answer.
    Query,
    /// EBS: REST paths, JSON bodies, the error type in `x-amzn-ErrorType`.
    RestJson,
    /// SSM: JSON 1.1 with `x-amz-target`, the error type in `__type`.
    Json,
}

/// One request to one service.
#[derive(Debug, Clone)]
pub struct Call {
    /// The signing name and endpoint prefix (`ec2`, `ebs`, `ssm`, `sts`).
    pub service: &'static str,
    /// The IAM action (`ec2:RegisterImage`): errors name it.
    pub action: String,
    pub method: &'static str,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub protocol: Protocol,
    /// Hex SHA-256 of the body, when the caller has it already (EBS blocks).
    pub payload_sha256: Option<String>,
    /// Error codes this call may also retry (eventual consistency, "not ready yet").
    pub retry_codes: &'static [&'static str],
    pub retry: RetryPolicy,
}

impl Call {
    pub fn new(
        service: &'static str,
        action: impl Into<String>,
        method: &'static str,
        path: impl Into<String>,
        protocol: Protocol,
    ) -> Call {
        Call {
            service,
            action: action.into(),
            method,
            path: path.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            protocol,
            payload_sha256: None,
            retry_codes: &[],
            retry: RetryPolicy::STANDARD,
        }
    }

    /// An AWS JSON 1.1 call: `POST /` with `X-Amz-Target: TARGET_PREFIX.OPERATION` and `body`
    /// (SSM's prefix is `AmazonSSM`, CloudWatch Logs' `Logs_20140328`).
    pub fn json(service: &'static str, target_prefix: &str, operation: &str, body: Vec<u8>) -> Call {
        let mut call = Call::new(service, format!("{service}:{operation}"), "POST", "/", Protocol::Json);
        call.headers.push(("content-type".into(), "application/x-amz-json-1.1".into()));
        call.headers.push(("x-amz-target".into(), format!("{target_prefix}.{operation}")));
        call.body = body;
        call
    }

    /// A Query-protocol call (`Action=...&Version=...` in a form body).
    pub fn query(service: &'static str, operation: &str, version: &str, params: &[(String, String)]) -> Call {
        let mut form =
            vec![("Action".to_string(), operation.to_string()), ("Version".to_string(), version.to_string())];
        form.extend(params.iter().cloned());
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", sigv4::uri_encode(k, false), sigv4::uri_encode(v, false)))
            .collect::<Vec<_>>()
            .join("&");
        let mut call = Call::new(service, format!("{service}:{operation}"), "POST", "/", Protocol::Query);
        call.headers.push(("content-type".into(), "application/x-www-form-urlencoded; charset=utf-8".into()));
        call.body = body.into_bytes();
        call
    }
}

/// What a client has done, for the closing summary of a long job.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retried_throttling: AtomicU64,
    pub retried_server: AtomicU64,
    pub retried_transport: AtomicU64,
    pub retried_other: AtomicU64,
}

impl Stats {
    pub fn retries(&self) -> u64 {
        [&self.retried_throttling, &self.retried_server, &self.retried_transport, &self.retried_other]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// How a call is signed.
#[derive(Clone, Copy)]
pub enum Signing<'a> {
    /// Not at all (STS AssumeRoleWithWebIdentity: the token is the proof).
    Unsigned,
    /// With the credentials this returns (asked at each attempt, so a refresh is seen).
    With(&'a dyn Fn() -> Result<Credentials, AwsError>),
}

/// Sends calls to one region's endpoints. Clones share the clock correction and the stats.
#[derive(Clone)]
pub struct Caller {
    env: Arc<Environment>,
    http: Http,
    region: String,
    /// Seconds to add to the local clock (learned from AWS's `Date` header).
    skew: Arc<AtomicI64>,
    pub stats: Arc<Stats>,
}

impl Caller {
    pub fn new(env: Arc<Environment>, http: Http, region: String) -> Caller {
        Caller { env, http, region, skew: Arc::new(AtomicI64::new(0)), stats: Arc::new(Stats::default()) }
    }

    /// The same caller for another region.
    pub fn in_region(&self, region: &str) -> Caller {
        Caller { region: region.to_string(), ..self.clone() }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn env(&self) -> &Environment {
        &self.env
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    /// The time to sign with: the local clock, corrected by what AWS told us.
    pub fn now(&self) -> UtcTime {
        UtcTime::now().plus(self.skew.load(Ordering::Relaxed))
    }

    /// Sends `call`, retrying what is worth retrying; the answer of the first success.
    pub fn call(&self, call: &Call, signer: Signing) -> Result<HttpResponse, AwsError> {
        let mut attempt = 0;
        let mut skew_fixed = false;
        loop {
            attempt += 1;
            let error = match self.attempt(call, signer) {
                Ok(response) => return Ok(response),
                Err((error, date)) => {
                    if !skew_fixed && is_skew(&error) {
                        if let Some(server) = date {
                            self.skew.store(UtcTime::now().seconds_until(server), Ordering::Relaxed);
                            skew_fixed = true;
                            continue;
                        }
                    }
                    error
                }
            };
            let also = error.code().is_some_and(|c| call.retry_codes.contains(&c));
            if attempt >= call.retry.attempts || !(error.retryable() || also) {
                return Err(error);
            }
            let counter = match &error {
                e if e.is_throttling() => &self.stats.retried_throttling,
                AwsError::Transport { .. } => &self.stats.retried_transport,
                AwsError::Service { status, .. } if *status >= 500 => &self.stats.retried_server,
                _ => &self.stats.retried_other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(call.retry.delay(attempt, retry::unit_random()));
        }
    }

    /// One try. On failure also the server's `Date`, when it sent one.
    fn attempt(&self, call: &Call, signer: Signing) -> Result<HttpResponse, (AwsError, Option<UtcTime>)> {
        let base = self.env.endpoint(call.service, &self.region);
        let host = crate::http::host_of(&base);
        let base_path =
            base.split_once("://").map(|(_, r)| r).unwrap_or(&base).split_once('/').map(|(_, p)| p).unwrap_or("");
        let path = if base_path.is_empty() {
            call.path.clone()
        } else {
            format!("/{}{}", base_path.trim_end_matches('/'), call.path)
        };
        let payload = call.payload_sha256.clone().unwrap_or_else(|| sigv4::sha256_hex(&call.body));
        let mut headers = call.headers.clone();
        headers.push(("host".into(), host));
        let credentials = match signer {
            Signing::Unsigned => None,
            Signing::With(credentials) => Some(credentials().map_err(|e| (e, None))?),
        };
        if let Some(credentials) = credentials {
            let signed = sigv4::sign(
                &sigv4::Request {
                    method: call.method,
                    path: &path,
                    query: &call.query,
                    headers: &headers,
                    payload_sha256: &payload,
                },
                &sigv4::Scope {
                    region: &self.region,
                    service: call.service,
                    time: self.now(),
                    normalize_path: true,
                    sign_content_sha256: false,
                },
                &credentials,
            );
            headers.extend(signed.headers);
        }
        headers.retain(|(n, _)| n != "host");
        let scheme_and_host = match base.find("://") {
            Some(i) => {
                let after = &base[i + 3..];
                let end = after.find('/').map(|j| i + 3 + j).unwrap_or(base.len());
                base[..end].to_string()
            }
            None => base.clone(),
        };
        let query = if call.query.is_empty() {
            String::new()
        } else {
            let pairs: Vec<String> = call
                .query
                .iter()
                .map(|(k, v)| format!("{}={}", sigv4::uri_encode(k, false), sigv4::uri_encode(v, false)))
                .collect();
            format!("?{}", pairs.join("&"))
        };
        let url = format!("{scheme_and_host}{}{query}", sigv4::uri_encode(&path, true));
        let request = HttpRequest { method: call.method.into(), url, headers, body: call.body.clone() };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .send(&request)
            .map_err(|error| (AwsError::Transport { action: call.action.clone(), error }, None))?;
        if (200..300).contains(&response.status) {
            return Ok(response);
        }
        let date = response.header("date").and_then(UtcTime::parse_http_date);
        Err((self.error_of(call, &response), date))
    }

    fn error_of(&self, call: &Call, response: &HttpResponse) -> AwsError {
        let text = response.text();
        let request_id =
            response.header("x-amzn-requestid").or_else(|| response.header("x-amz-request-id")).map(str::to_string);
        let (code, message, request_id) = match call.protocol {
            Protocol::Query => crate::xml::error(&text).unwrap_or_else(|| (String::new(), snippet(&text), request_id)),
            Protocol::RestJson | Protocol::Json => {
                let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
                let field = |names: &[&str]| {
                    json.as_ref().and_then(|j| names.iter().find_map(|n| j.get(*n)?.as_str().map(str::to_string)))
                };
                let code = response
                    .header("x-amzn-errortype")
                    .map(str::to_string)
                    .or_else(|| field(&["__type", "code", "Code"]))
                    .unwrap_or_default();
                // `x-amzn-ErrorType: RequestThrottledException:http://...`, `__type: com.amazon...#Code`.
                let code = code.split(':').next().unwrap_or("").rsplit('#').next().unwrap_or("").to_string();
                match (code.is_empty(), crate::xml::error(&text)) {
                    // Not JSON but an XML error document (proxies, emulators, IAM in front).
                    (true, Some(xml)) => xml,
                    _ => (code, field(&["message", "Message"]).unwrap_or_else(|| snippet(&text)), request_id),
                }
            }
        };
        let code = if code.is_empty() { format!("HTTP{}", response.status) } else { code };
        error::classify(&call.action, &self.region, response.status, code, message, request_id)
    }
}

fn is_skew(error: &AwsError) -> bool {
    match error {
        AwsError::Service { code, message, .. } => {
            matches!(code.as_str(), "RequestTimeTooSkewed" | "RequestExpired" | "RequestInTheFuture")
                || (matches!(code.as_str(), "InvalidSignatureException" | "SignatureDoesNotMatch" | "AuthFailure")
                    && message.to_ascii_lowercase().contains("expired"))
        }
        _ => false,
    }
}

/// The start of an answer body, for an error without a parsable message.
fn snippet(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(200).collect()
}
