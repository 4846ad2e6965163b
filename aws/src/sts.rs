//! The two STS calls the credential chain needs: AssumeRoleWithWebIdentity (unsigned: the web
//! identity token is the proof) and AssumeRole (signed with a source profile's credentials).
//! Both go through [`Caller`], so their errors are read (and retried) as every other call's.

use std::sync::Arc;

use crate::call::{Call, Caller, Signing};
use crate::credentials::{self, Credentials};
use crate::env::Environment;
use crate::error::AwsError;
use crate::http::Http;

const VERSION: &str = "2011-06-15";

fn caller(env: &Environment, http: &Http) -> Caller {
    Caller::new(Arc::new(env.clone()), http.clone(), env.region().unwrap_or_else(|| "us-east-1".into()))
}

pub fn assume_role_with_web_identity(
    env: &Environment,
    http: &Http,
    role: &str,
    token: &str,
    session: &str,
    origin: &str,
) -> Result<Credentials, AwsError> {
    let params = [
        ("RoleArn".to_string(), role.to_string()),
        ("RoleSessionName".to_string(), session.to_string()),
        ("WebIdentityToken".to_string(), token.to_string()),
    ];
    let call = Call::query("sts", "AssumeRoleWithWebIdentity", VERSION, &params);
    let answer = caller(env, http).call(&call, Signing::Unsigned)?;
    credentials::from_sts_xml(&answer.text(), &format!("{origin}, role {role}"))
}

pub fn assume_role(
    env: &Environment,
    http: &Http,
    source: &Credentials,
    role: &str,
    session: &str,
    origin: &str,
) -> Result<Credentials, AwsError> {
    let params = [("RoleArn".to_string(), role.to_string()), ("RoleSessionName".to_string(), session.to_string())];
    let call = Call::query("sts", "AssumeRole", VERSION, &params);
    let answer = caller(env, http).call(&call, Signing::With(&|| Ok(source.clone())))?;
    credentials::from_sts_xml(&answer.text(), &format!("{origin}, role {role}"))
}
