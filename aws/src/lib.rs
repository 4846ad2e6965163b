//! The project's one AWS client, shared by `bastion-image publish` and (for SSM) the appliance:
//! HTTP over rustls with ring and built-in roots (`http`), SigV4 (`sigv4`, checked against
//! AWS's signing test suite), the standard credential chain (`credentials`, `profile`, `imds`,
//! `sts`), endpoints and region from the environment as the SDKs read them (`env`), retries
//! with backoff and jitter (`retry`, `client`), typed errors naming the IAM action (`error`),
//! and the calls themselves (`ec2`, `ebs`, `ssm`; `elbv2` and `autoscaling` for the bastions'
//! action on a dead sibling).
//!
//! Sans-I/O where it matters: signing, the retry policy, and every parser of an answer are
//! plain functions of their inputs; `http` and `client` are the thin shell that sends.

pub mod autoscaling;
pub mod client;
pub mod credentials;
pub mod ebs;
pub mod ec2;
pub mod elbv2;
pub mod env;
pub mod error;
pub mod http;
pub mod imds;
pub mod profile;
pub mod retry;
pub mod sigv4;
pub mod ssm;
pub mod sts;
pub mod time;
mod xml;

pub use client::{Call, Client, Protocol};
pub use credentials::Credentials;
pub use env::Environment;
pub use error::AwsError;
