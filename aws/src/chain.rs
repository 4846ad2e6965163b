//! The standard AWS credential chain, in the order the SDKs use: environment variables, the
//! shared config and credentials files (a profile's keys, or a role it assumes from another
//! profile), web identity (`AWS_WEB_IDENTITY_TOKEN_FILE`, as on EKS and CI systems), the ECS
//! container agent, and the EC2 instance role over IMDSv2. The first source that is configured
//! is used; when none is, the error lists where it looked.

use crate::credentials::{from_metadata_json, Credentials};
use crate::env::Environment;
use crate::error::AwsError;
use crate::http::{Http, HttpRequest};
use crate::imds::Imds;
use crate::profile;
use std::time::Duration;

/// Where the chain looks, for the "not found" error: each source says why it had nothing.
struct Looked(Vec<String>);

/// Resolves credentials through the standard chain.
pub fn resolve(env: &Environment, http: &Http) -> Result<Credentials, AwsError> {
    let mut looked = Looked(Vec::new());
    if let Some(found) = from_environment(env, &mut looked)? {
        return Ok(found);
    }
    if let Some(found) = from_profile(env, http, &mut looked)? {
        return Ok(found);
    }
    if let Some(found) = from_web_identity(env, http, &mut looked)? {
        return Ok(found);
    }
    if let Some(found) = from_container(env, &mut looked)? {
        return Ok(found);
    }
    if let Some(found) = from_instance_metadata(env, &mut looked)? {
        return Ok(found);
    }
    Err(AwsError::NoCredentials { looked: looked.0 })
}

fn from_environment(env: &Environment, looked: &mut Looked) -> Result<Option<Credentials>, AwsError> {
    match (env.var("AWS_ACCESS_KEY_ID"), env.var("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Ok(Some(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env.var("AWS_SESSION_TOKEN"),
            expires: None,
            origin: "environment (AWS_ACCESS_KEY_ID)".into(),
        })),
        (Some(_), None) => Err(AwsError::BadCredentials {
            origin: "environment".into(),
            why: "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
        }),
        (None, Some(_)) => Err(AwsError::BadCredentials {
            origin: "environment".into(),
            why: "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
        }),
        (None, None) => {
            looked.0.push("environment (AWS_ACCESS_KEY_ID unset)".into());
            Ok(None)
        }
    }
}

fn from_profile(env: &Environment, http: &Http, looked: &mut Looked) -> Result<Option<Credentials>, AwsError> {
    let files = env.profile_files();
    let name = env.profile_name();
    let Some(profile) = files.profile(&name) else {
        if env.var("AWS_PROFILE").is_some() {
            return Err(AwsError::BadCredentials {
                origin: format!("profile {name:?}"),
                why: format!("AWS_PROFILE names it, but {} has no such profile", files.describe()),
            });
        }
        looked.0.push(format!("profile {name:?} ({})", files.describe()));
        return Ok(None);
    };
    static_or_assumed(env, http, &files, &name, &profile, 0).map(Some)
}

fn static_or_assumed(
    env: &Environment,
    http: &Http,
    files: &crate::env::ProfileFiles,
    name: &str,
    profile: &profile::Profile,
    depth: usize,
) -> Result<Credentials, AwsError> {
    let origin = format!("profile {name:?}");
    let bad = |why: String| AwsError::BadCredentials { origin: origin.clone(), why };
    if depth > 4 {
        return Err(bad("source_profile chain longer than 4 (a loop?)".into()));
    }
    if let Some(role) = profile.get("role_arn") {
        if let Some(token_file) = profile.get("web_identity_token_file") {
            let session = profile.get("role_session_name").cloned().unwrap_or_else(|| "bastion".into());
            return web_identity(env, http, role, token_file, &session, &origin);
        }
        let source = profile
            .get("source_profile")
            .ok_or_else(|| bad(format!("role_arn {role} without source_profile or web_identity_token_file")))?;
        let source_profile =
            files.profile(source).ok_or_else(|| bad(format!("source_profile {source:?} not found")))?;
        let source_credentials = static_or_assumed(env, http, files, source, &source_profile, depth + 1)?;
        let session = profile.get("role_session_name").cloned().unwrap_or_else(|| "bastion".into());
        return crate::sts::assume_role(env, http, &source_credentials, role, &session, &origin);
    }
    if profile.contains_key("sso_start_url")
        || profile.contains_key("sso_session")
        || profile.contains_key("credential_process")
    {
        return Err(bad("AWS SSO and credential_process profiles are not supported; export the credentials \
             (`aws configure export-credentials --format env`) and try again"
            .into()));
    }
    match (profile.get("aws_access_key_id"), profile.get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: profile.get("aws_session_token").cloned(),
            expires: None,
            origin,
        }),
        _ => Err(bad(format!("no aws_access_key_id and aws_secret_access_key in it ({})", files.describe()))),
    }
}

fn from_web_identity(env: &Environment, http: &Http, looked: &mut Looked) -> Result<Option<Credentials>, AwsError> {
    let Some(token_file) = env.var("AWS_WEB_IDENTITY_TOKEN_FILE") else {
        looked.0.push("web identity (AWS_WEB_IDENTITY_TOKEN_FILE unset)".into());
        return Ok(None);
    };
    let role = env.var("AWS_ROLE_ARN").ok_or_else(|| AwsError::BadCredentials {
        origin: "web identity".into(),
        why: "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not".into(),
    })?;
    let session = env.var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "bastion".into());
    web_identity(env, http, &role, &token_file, &session, "web identity").map(Some)
}

fn web_identity(
    env: &Environment,
    http: &Http,
    role: &str,
    token_file: &str,
    session: &str,
    origin: &str,
) -> Result<Credentials, AwsError> {
    let token = std::fs::read_to_string(token_file).map_err(|e| AwsError::BadCredentials {
        origin: origin.into(),
        why: format!("cannot read the token file {token_file}: {e}"),
    })?;
    crate::sts::assume_role_with_web_identity(env, http, role, token.trim(), session, origin)
}

/// The ECS container agent (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`).
fn from_container(env: &Environment, looked: &mut Looked) -> Result<Option<Credentials>, AwsError> {
    let url = match (env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"), env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI")) {
        (Some(relative), _) => format!("http://169.254.170.2{relative}"),
        (None, Some(full)) => full,
        (None, None) => {
            looked.0.push("container (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI unset)".into());
            return Ok(None);
        }
    };
    let origin = "the ECS container agent";
    let mut headers = Vec::new();
    let token = match (env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN"), env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"))
    {
        (Some(token), _) => Some(token),
        (None, Some(file)) => Some(std::fs::read_to_string(&file).map_err(|e| AwsError::BadCredentials {
            origin: origin.into(),
            why: format!("cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {file}: {e}"),
        })?),
        (None, None) => None,
    };
    if let Some(token) = token {
        headers.push(("authorization".to_string(), token.trim().to_string()));
    }
    let http = Http::link_local(Duration::from_secs(2));
    let answer = http
        .send(&HttpRequest { method: "GET".into(), url: url.clone(), headers, body: Vec::new() })
        .map_err(|e| AwsError::BadCredentials { origin: origin.into(), why: format!("GET {url}: {e}") })?;
    if answer.status != 200 {
        return Err(AwsError::BadCredentials {
            origin: origin.into(),
            why: format!("GET {url}: HTTP {}", answer.status),
        });
    }
    from_metadata_json(&answer.text(), origin).map(Some)
}

fn from_instance_metadata(env: &Environment, looked: &mut Looked) -> Result<Option<Credentials>, AwsError> {
    if env.var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        looked.0.push("EC2 instance metadata (AWS_EC2_METADATA_DISABLED=true)".into());
        return Ok(None);
    }
    let imds = Imds::new(&env.imds_endpoint());
    match imds.role_credentials() {
        Ok(found) => Ok(Some(found)),
        Err(crate::imds::ImdsError::Unreachable(why) | crate::imds::ImdsError::TokenRefused(why)) => {
            looked.0.push(format!("EC2 instance metadata ({}: {why})", imds.endpoint()));
            Ok(None)
        }
        Err(crate::imds::ImdsError::NoRole) => {
            looked.0.push(format!("EC2 instance metadata ({}: the instance has no role)", imds.endpoint()));
            Ok(None)
        }
        Err(e) => Err(AwsError::BadCredentials { origin: "EC2 instance metadata".into(), why: e.to_string() }),
    }
}
