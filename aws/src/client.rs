//! A client for one region: [`crate::call`]'s signed, retried calls with the credentials of
//! the standard chain ([`crate::chain`]), resolved on first use and refreshed five minutes
//! before they expire.

pub use crate::call::{Call, Protocol, Stats};
use crate::call::{Caller, Signing};
use crate::chain;
use crate::credentials::Credentials;
use crate::env::Environment;
use crate::error::AwsError;
use crate::http::{Http, HttpResponse};
use crate::time::UtcTime;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A client for one region. Clones share the credentials, the clock correction and the stats.
#[derive(Clone)]
pub struct Client {
    caller: Caller,
    credentials: Arc<Mutex<Option<Credentials>>>,
}

/// Refresh credentials this long before they expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl Client {
    pub fn new(env: Environment, region: String) -> Client {
        Client::with_timeout(env, region, Duration::from_secs(60))
    }

    /// Like `new`, with every request bounded by `timeout` (the CloudWatch shipper's: a batch
    /// must not wait a minute for an endpoint that does not answer).
    pub fn with_timeout(env: Environment, region: String, timeout: Duration) -> Client {
        let caller = Caller::new(Arc::new(env), Http::new(timeout), region);
        Client { caller, credentials: Arc::new(Mutex::new(None)) }
    }

    /// Uses these credentials instead of the chain (tests, or credentials found elsewhere).
    pub fn with_credentials(self, credentials: Credentials) -> Client {
        *self.credentials.lock().unwrap_or_else(|e| e.into_inner()) = Some(credentials);
        self
    }

    /// The same client for another region.
    pub fn in_region(&self, region: &str) -> Client {
        Client { caller: self.caller.in_region(region), ..self.clone() }
    }

    /// What this client (and its clones) has done.
    pub fn stats(&self) -> &Stats {
        &self.caller.stats
    }

    pub fn region(&self) -> &str {
        self.caller.region()
    }

    pub fn env(&self) -> &Environment {
        self.caller.env()
    }

    pub fn http(&self) -> &Http {
        self.caller.http()
    }

    /// The credentials, resolved through the chain on first use (and again before they expire).
    pub fn credentials(&self) -> Result<Credentials, AwsError> {
        let mut slot = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        let now = UtcTime::now();
        match slot.as_ref() {
            Some(c) if !c.expire_within(now, REFRESH_MARGIN) => Ok(c.clone()),
            _ => {
                let fresh = chain::resolve(self.caller.env(), self.caller.http())?;
                *slot = Some(fresh.clone());
                Ok(fresh)
            }
        }
    }

    /// The time to sign with: the local clock, corrected by what AWS told us.
    pub fn now(&self) -> UtcTime {
        self.caller.now()
    }

    /// Sends `call` signed with the chain's credentials, retrying what is worth retrying; the
    /// answer of the first success.
    pub fn call(&self, call: &Call) -> Result<HttpResponse, AwsError> {
        self.caller.call(call, Signing::With(&|| self.credentials()))
    }
}
