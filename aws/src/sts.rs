//! The two STS calls the credential chain needs: AssumeRoleWithWebIdentity (unsigned: the web
//! identity token is the proof) and AssumeRole (signed with a source profile's credentials).

use crate::client::{Call, Client};
use crate::credentials::{self, Credentials};
use crate::env::Environment;
use crate::error::AwsError;
use crate::http::{Http, HttpRequest};

const VERSION: &str = "2011-06-15";

fn region(env: &Environment) -> String {
    env.region().unwrap_or_else(|| "us-east-1".into())
}

pub fn assume_role_with_web_identity(
    env: &Environment,
    http: &Http,
    role: &str,
    token: &str,
    session: &str,
    origin: &str,
) -> Result<Credentials, AwsError> {
    let action = "sts:AssumeRoleWithWebIdentity";
    let params = [
        ("RoleArn".to_string(), role.to_string()),
        ("RoleSessionName".to_string(), session.to_string()),
        ("WebIdentityToken".to_string(), token.to_string()),
    ];
    let call = Call::query("sts", "AssumeRoleWithWebIdentity", VERSION, &params);
    let url = format!("{}/", env.endpoint("sts", &region(env)));
    let answer = http
        .send(&HttpRequest { method: "POST".into(), url, headers: call.headers.clone(), body: call.body.clone() })
        .map_err(|error| AwsError::Transport { action: action.into(), error })?;
    if answer.status != 200 {
        let (code, message, request_id) = crate::xml::error(&answer.text())
            .unwrap_or_else(|| (format!("HTTP{}", answer.status), answer.text(), None));
        return Err(crate::error::classify(action, &region(env), answer.status, code, message, request_id));
    }
    credentials::from_sts_xml(&answer.text(), &format!("{origin}, role {role}"))
}

pub fn assume_role(
    env: &Environment,
    _http: &Http,
    source: &Credentials,
    role: &str,
    session: &str,
    origin: &str,
) -> Result<Credentials, AwsError> {
    let client = Client::new(env.clone(), region(env)).with_credentials(source.clone());
    let params = [("RoleArn".to_string(), role.to_string()), ("RoleSessionName".to_string(), session.to_string())];
    let answer = client.call(&Call::query("sts", "AssumeRole", VERSION, &params))?;
    credentials::from_sts_xml(&answer.text(), &format!("{origin}, role {role}"))
}
