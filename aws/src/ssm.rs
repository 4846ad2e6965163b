//! SSM Parameter Store (JSON 1.1: `POST /` with `X-Amz-Target: AmazonSSM.<Operation>`): read one
//! parameter or every parameter under a path, decrypted, as the bastion's config source does;
//! and write one (for tests and tools). A parameter's value may be a secret: [`Parameter`]'s
//! `Debug` never shows it, and no error carries it.

use crate::client::{Call, Client};
use crate::error::AwsError;
use std::fmt;

/// `GetParametersByPath` returns at most this many per page.
pub const PAGE_SIZE: u32 = 10;
/// Pages read at most for one path (10,000 parameters): a bound, not a limit anyone meets.
const MAX_PAGES: usize = 1000;

/// One parameter as read: its full name, version and (decrypted) value.
#[derive(Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    pub version: u64,
    /// `String`, `StringList` or `SecureString`.
    pub kind: String,
    pub value: String,
}

impl fmt::Debug for Parameter {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Parameter")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .finish()
    }
}

/// One page of `GetParametersByPath`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub parameters: Vec<Parameter>,
    pub next_token: Option<String>,
}

fn call(operation: &str, body: serde_json::Value) -> Call {
    Call::json("ssm", "AmazonSSM", operation, body.to_string().into_bytes())
}

fn bad(action: &str, why: impl Into<String>) -> AwsError {
    AwsError::BadAnswer { action: action.into(), why: why.into() }
}

/// Reads one parameter object of an answer (`{"Name": .., "Version": .., "Type": .., "Value": ..}`).
fn parameter_of(action: &str, json: &serde_json::Value) -> Result<Parameter, AwsError> {
    let text = |field: &str| {
        json.get(field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| bad(action, format!("a parameter without {field}")))
    };
    Ok(Parameter {
        name: text("Name")?,
        version: json
            .get("Version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| bad(action, "a parameter without Version"))?,
        kind: text("Type")?,
        value: text("Value")?,
    })
}

/// The answer of `GetParameter`.
pub fn parse_parameter(text: &str) -> Result<Parameter, AwsError> {
    let action = "ssm:GetParameter";
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(action, format!("not JSON: {e}")))?;
    parameter_of(action, json.get("Parameter").ok_or_else(|| bad(action, "no Parameter"))?)
}

/// The answer of `GetParametersByPath`.
pub fn parse_page(text: &str) -> Result<Page, AwsError> {
    let action = "ssm:GetParametersByPath";
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(action, format!("not JSON: {e}")))?;
    let list = json.get("Parameters").and_then(|p| p.as_array()).ok_or_else(|| bad(action, "no Parameters list"))?;
    let parameters = list.iter().map(|p| parameter_of(action, p)).collect::<Result<Vec<_>, _>>()?;
    let next_token = json.get("NextToken").and_then(|t| t.as_str()).filter(|t| !t.is_empty()).map(str::to_string);
    Ok(Page { parameters, next_token })
}

impl Client {
    /// `GetParameter` with decryption.
    pub fn get_parameter(&self, name: &str) -> Result<Parameter, AwsError> {
        let answer = self.call(&call("GetParameter", serde_json::json!({"Name": name, "WithDecryption": true})))?;
        parse_parameter(&answer.text())
    }

    /// Every parameter under `path` (recursively), decrypted, sorted by name; and the number of
    /// calls it took.
    pub fn get_parameters_by_path(&self, path: &str) -> Result<(Vec<Parameter>, usize), AwsError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for page_number in 1..=MAX_PAGES {
            let mut body = serde_json::json!({
                "Path": path,
                "Recursive": true,
                "WithDecryption": true,
                "MaxResults": PAGE_SIZE,
            });
            if let Some(t) = &token {
                body["NextToken"] = serde_json::Value::String(t.clone());
            }
            let page = parse_page(&self.call(&call("GetParametersByPath", body))?.text())?;
            all.extend(page.parameters);
            match page.next_token {
                Some(next) if Some(&next) != token.as_ref() => token = Some(next),
                Some(_) => return Err(bad("ssm:GetParametersByPath", "the same NextToken twice")),
                None => {
                    all.sort_by(|a: &Parameter, b: &Parameter| a.name.cmp(&b.name));
                    return Ok((all, page_number));
                }
            }
        }
        Err(bad("ssm:GetParametersByPath", format!("more than {MAX_PAGES} pages under {path}")))
    }

    /// `PutParameter` (overwriting); the new version.
    pub fn put_parameter(&self, name: &str, value: &str, secure: bool) -> Result<u64, AwsError> {
        let kind = if secure { "SecureString" } else { "String" };
        let body = serde_json::json!({"Name": name, "Value": value, "Type": kind, "Overwrite": true});
        let answer = self.call(&call("PutParameter", body))?.text();
        let json: serde_json::Value =
            serde_json::from_str(&answer).map_err(|e| bad("ssm:PutParameter", format!("not JSON: {e}")))?;
        json.get("Version").and_then(|v| v.as_u64()).ok_or_else(|| bad("ssm:PutParameter", "no Version"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read() {
        let one = parse_parameter(
            r#"{"Parameter":{"Name":"/b/key","Type":"SecureString","Value":"s3cret","Version":3,"ARN":"x"}}"#,
        )
        .unwrap();
        assert_eq!(
            (one.name.as_str(), one.version, one.kind.as_str(), one.value.as_str()),
            ("/b/key", 3, "SecureString", "s3cret")
        );
        let page = parse_page(
            r#"{"Parameters":[{"Name":"/b/p/2","Type":"String","Value":"[[peer]]","Version":1}],"NextToken":"t"}"#,
        )
        .unwrap();
        assert_eq!(page.parameters.len(), 1);
        assert_eq!(page.next_token.as_deref(), Some("t"));
        assert_eq!(parse_page(r#"{"Parameters":[]}"#).unwrap().next_token, None);
    }

    #[test]
    fn garbage_is_an_error_and_never_shows_a_value() {
        for text in [
            "",
            "null",
            "{}",
            r#"{"Parameter":{}}"#,
            r#"{"Parameter":{"Name":"/a","Value":"s3cret","Type":"String"}}"#,
            "[1,2]",
        ] {
            let e = parse_parameter(text).unwrap_err();
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        assert!(parse_page(r#"{"Parameters":[{"Name":1}]}"#).is_err());
        let p = Parameter { name: "/a".into(), version: 1, kind: "SecureString".into(), value: "s3cret".into() };
        assert!(!format!("{p:?}").contains("s3cret"));
    }

    #[test]
    fn calls_are_json_1_1() {
        let c = call("GetParameter", serde_json::json!({"Name": "/a"}));
        assert_eq!(c.action, "ssm:GetParameter");
        assert!(c.headers.contains(&("x-amz-target".into(), "AmazonSSM.GetParameter".into())));
        assert!(c.headers.contains(&("content-type".into(), "application/x-amz-json-1.1".into())));
    }
}
