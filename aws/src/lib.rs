//! The project's one AWS client, shared by `bastion-image publish` and the appliance (SSM,
//! and ELBv2 and Auto Scaling for `[siblings]`): HTTP over rustls with ring and built-in roots
//! (`http`), SigV4 (`sigv4`, checked against AWS's signing test suite), one signed and retried
//! call (`call`, with `retry`: backoff and jitter), the standard credential chain (`chain`,
//! over `credentials`, `profile`, `imds`, `sts`), a client that signs with it (`client`),
//! endpoints and region from the environment as the SDKs read them (`env`), typed errors
//! naming the IAM action (`error`), and the calls themselves (`ec2`, `ebs`, `ssm`, `elbv2`,
//! `autoscaling`).
//!
//! The modules form no cycle: `call` knows nothing of where credentials come from; `sts`
//! sends through `call`; `chain` uses `sts` and `imds`; `client` puts `call` and `chain`
//! together.
//!
//! Sans-I/O where it matters: signing, the retry policy, and every parser of an answer are
//! plain functions of their inputs; `http`, `call` and `client` are the thin shell that sends.

pub mod autoscaling;
pub mod call;
pub mod chain;
pub mod client;
pub mod credentials;
pub mod ebs;
pub mod ec2;
pub mod elbv2;
pub mod env;
pub mod error;
pub mod http;
pub mod imds;
pub mod logs;
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
