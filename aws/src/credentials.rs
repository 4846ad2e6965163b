//! AWS credentials: the type (its secret never shown) and the parsers of the answers that
//! carry them (IMDS and ECS JSON, STS XML), each a plain function of its text. Where they come
//! from is [`crate::chain`].

use crate::error::AwsError;
use crate::time::UtcTime;
use std::fmt;
use std::time::Duration;

/// A set of credentials and where they came from. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// When temporary credentials stop working.
    pub expires: Option<UtcTime>,
    /// `environment`, `profile "default"`, `EC2 instance role NAME`...
    pub origin: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<hidden>"))
            .field("expires", &self.expires)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Credentials {
    /// Whether they expire within `margin` of `now` (so they are refreshed before they fail).
    pub fn expire_within(&self, now: UtcTime, margin: Duration) -> bool {
        self.expires.is_some_and(|at| now.plus(margin.as_secs() as i64) >= at)
    }
}

/// The JSON of IMDS's `iam/security-credentials/ROLE` and of the ECS agent.
pub fn from_metadata_json(text: &str, origin: &str) -> Result<Credentials, AwsError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        code: Option<String>,
        message: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        token: Option<String>,
        expiration: Option<String>,
    }
    let bad = |why: String| AwsError::BadCredentials { origin: origin.into(), why };
    let answer: Answer = serde_json::from_str(text).map_err(|e| bad(format!("not the expected JSON: {e}")))?;
    if let Some(code) = answer.code.as_deref().filter(|c| *c != "Success") {
        return Err(bad(format!("{code}: {}", answer.message.unwrap_or_default())));
    }
    let access_key_id = answer.access_key_id.filter(|k| !k.is_empty()).ok_or_else(|| bad("no AccessKeyId".into()))?;
    let secret_access_key =
        answer.secret_access_key.filter(|k| !k.is_empty()).ok_or_else(|| bad("no SecretAccessKey".into()))?;
    let expires = match answer.expiration {
        None => None,
        Some(text) => {
            Some(UtcTime::parse_rfc3339(&text).ok_or_else(|| bad(format!("Expiration {text:?} is not a time")))?)
        }
    };
    Ok(Credentials { access_key_id, secret_access_key, session_token: answer.token, expires, origin: origin.into() })
}

/// The `Credentials` element of an STS AssumeRole or AssumeRoleWithWebIdentity answer.
pub fn from_sts_xml(text: &str, origin: &str) -> Result<Credentials, AwsError> {
    let bad = |why: String| AwsError::BadCredentials { origin: origin.into(), why };
    let doc = roxmltree::Document::parse(text).map_err(|e| bad(format!("not XML: {e}")))?;
    let credentials = doc
        .descendants()
        .find(|n| n.has_tag_name("Credentials"))
        .ok_or_else(|| bad("no Credentials in the answer".into()))?;
    let field = |name: &str| crate::xml::child_text(credentials, name).ok_or_else(|| bad(format!("no {name}")));
    let expires = field("Expiration")?;
    Ok(Credentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
        expires: Some(
            UtcTime::parse_rfc3339(&expires).ok_or_else(|| bad(format!("Expiration {expires:?} is not a time")))?,
        ),
        origin: origin.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_json_is_read_and_checked() {
        let ok = r#"{"Code":"Success","LastUpdated":"2026-12-03T10:00:00Z","Type":"AWS-HMAC",
            "AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s3cr3tvalue","Token":"t0kenvalue","Expiration":"2026-12-03T16:00:00Z"}"#;
        let c = from_metadata_json(ok, "EC2 instance role r").unwrap();
        assert_eq!((c.access_key_id.as_str(), c.session_token.as_deref()), ("ASIAEXAMPLE", Some("t0kenvalue")));
        assert_eq!(c.expires.unwrap().rfc3339(), "2026-12-03T16:00:00Z");
        assert!(!format!("{c:?}").contains("s3cr3tvalue") && !format!("{c:?}").contains("t0kenvalue"));
        assert!(c.expire_within(UtcTime::parse_rfc3339("2026-12-03T15:56:00Z").unwrap(), Duration::from_secs(300)));
        assert!(!c.expire_within(UtcTime::parse_rfc3339("2026-12-03T15:50:00Z").unwrap(), Duration::from_secs(300)));
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"Code":"Failure","Message":"no"}"#,
            r#"{"AccessKeyId":"a","SecretAccessKey":"b","Expiration":"soon"}"#,
        ] {
            assert!(matches!(from_metadata_json(bad, "x"), Err(AwsError::BadCredentials { .. })), "{bad}");
        }
    }

    #[test]
    fn sts_xml_is_read_and_checked() {
        let ok = "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
            <AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA1</AccessKeyId>\
            <SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken>\
            <Expiration>2026-12-03T11:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult>\
            </AssumeRoleWithWebIdentityResponse>";
        let c = from_sts_xml(ok, "web identity").unwrap();
        assert_eq!((c.access_key_id.as_str(), c.session_token.as_deref()), ("ASIA1", Some("t")));
        for bad in ["", "<a>", "<Response/>", "<Credentials><AccessKeyId>a</AccessKeyId></Credentials>"] {
            assert!(from_sts_xml(bad, "x").is_err(), "{bad}");
        }
    }
}
