//! What can go wrong talking to AWS, as values an operator can act on. Every call names its API
//! action as IAM does (`ec2:RegisterImage`), so "access denied" can say which permission is
//! missing; and `retryable` decides, in one place, what is worth another attempt.

use crate::http::TransportError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    #[error("no AWS credentials found; looked at: {}", .looked.join("; "))]
    NoCredentials { looked: Vec<String> },

    #[error("AWS credentials from {origin}: {why}")]
    BadCredentials { origin: String, why: String },

    #[error("no AWS region: {hint}")]
    NoRegion { hint: String },

    #[error("{action} was denied ({code}: {message}): the credentials need the IAM permission {action}")]
    AccessDenied { action: String, code: String, message: String },

    #[error("{action}: region {region} is not enabled for this account ({code}: {message}); enable it in the account settings, or choose another region")]
    RegionNotEnabled { action: String, region: String, code: String, message: String },

    #[error("{action}: {code}: {message} (HTTP {status}{})", request_id.as_ref().map(|r| format!(", request {r}")).unwrap_or_default())]
    Service { action: String, status: u16, code: String, message: String, request_id: Option<String> },

    #[error("{action}: {error}")]
    Transport { action: String, error: TransportError },

    #[error("{action}: unexpected answer: {why}")]
    BadAnswer { action: String, why: String },
}

/// Error codes that mean "slow down" (EC2's, EBS's, SSM's and STS's spellings).
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ConcurrentLimitExceededException",
    "SlowDown",
    "ProvisionedThroughputExceededException",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Codes of eventual consistency or of a service that is briefly unavailable.
const TRANSIENT: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
];

impl AwsError {
    /// Worth trying again with the same request: throttling, a 5xx, a timeout or a broken
    /// connection. Never access denied, validation errors or missing resources.
    pub fn retryable(&self) -> bool {
        match self {
            AwsError::Transport { error, .. } => {
                !matches!(error, TransportError::HostNotFound(_) | TransportError::BodyTooLarge(_))
            }
            AwsError::Service { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || THROTTLING.contains(&code.as_str())
                    || TRANSIENT.contains(&code.as_str())
            }
            _ => false,
        }
    }

    /// Whether this is a throttling answer (for counting retries by kind).
    pub fn is_throttling(&self) -> bool {
        matches!(self, AwsError::Service { code, status, .. } if THROTTLING.contains(&code.as_str()) || *status == 429)
    }

    /// The service's error code, when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Service { code, .. }
            | AwsError::AccessDenied { code, .. }
            | AwsError::RegionNotEnabled { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Turns an error answer (`code`, `message`) of `action` into the right kind.
pub fn classify(
    action: &str,
    region: &str,
    status: u16,
    code: String,
    message: String,
    request_id: Option<String>,
) -> AwsError {
    match code.as_str() {
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" | "UnauthorizedException" => {
            AwsError::AccessDenied { action: action.into(), code, message }
        }
        "OptInRequired" | "InvalidClientTokenId"
            if message.to_ascii_lowercase().contains("region") || code == "OptInRequired" =>
        {
            AwsError::RegionNotEnabled { action: action.into(), region: region.into(), code, message }
        }
        _ => AwsError::Service { action: action.into(), status, code, message, request_id },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_retried() {
        let service =
            |status, code: &str| classify("ec2:DescribeImages", "eu-west-1", status, code.into(), "m".into(), None);
        assert!(service(400, "RequestThrottledException").retryable());
        assert!(service(503, "RequestLimitExceeded").retryable());
        assert!(service(500, "Anything").retryable());
        assert!(service(503, "").retryable());
        assert!(!service(400, "ValidationException").retryable());
        assert!(!service(400, "InvalidAMIID.NotFound").retryable());
        let denied = service(403, "UnauthorizedOperation");
        assert!(!denied.retryable());
        assert!(denied.to_string().contains("need the IAM permission ec2:DescribeImages"), "{denied}");
        assert!(matches!(service(401, "OptInRequired"), AwsError::RegionNotEnabled { .. }));
        let timeout = AwsError::Transport { action: "a".into(), error: TransportError::Timeout("x".into()) };
        assert!(timeout.retryable());
        let dns = AwsError::Transport { action: "a".into(), error: TransportError::HostNotFound("x".into()) };
        assert!(!dns.retryable());
    }
}
