//! The AWS shared config and credentials files (`~/.aws/config`, `~/.aws/credentials`): INI
//! text in, one profile's settings out. No file access here: the caller reads the text.
//!
//! As the AWS CLI reads them: in `config` a profile is `[profile NAME]` (and `[default]`), in
//! `credentials` it is `[NAME]`; keys are case-insensitive; `#` and `;` start comments; a
//! setting in `credentials` wins over the same one in `config`; nested sections (an indented
//! `s3 =` block) are skipped.

use std::collections::BTreeMap;

/// One profile's settings (lower-case keys), from both files.
pub type Profile = BTreeMap<String, String>;

/// Which file a text came from: they name sections differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Config,
    Credentials,
}

/// The settings of `name` in one file's text; `None` when the file has no such section.
pub fn section(text: &str, kind: FileKind, name: &str) -> Option<Profile> {
    let mut found: Option<Profile> = None;
    let mut in_section = false;
    let mut nested = false;
    for raw in text.lines() {
        let line = strip_comment(raw);
        if line.trim().is_empty() {
            continue;
        }
        let indented = raw.starts_with(' ') || raw.starts_with('\t');
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = section_name(header.trim(), kind).is_some_and(|n| n == name);
            nested = false;
            if in_section && found.is_none() {
                found = Some(Profile::new());
            }
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        if indented && nested {
            continue;
        }
        // `s3 =` with nothing after it opens a nested block of indented lines.
        nested = value.is_empty();
        if !nested {
            if let Some(profile) = found.as_mut() {
                profile.insert(key, value.to_string());
            }
        }
    }
    found
}

fn section_name(header: &str, kind: FileKind) -> Option<&str> {
    match kind {
        FileKind::Credentials => Some(header),
        FileKind::Config if header == "default" => Some("default"),
        FileKind::Config => header.strip_prefix("profile").filter(|r| r.starts_with([' ', '\t'])).map(str::trim),
    }
}

fn strip_comment(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.starts_with(';') {
        return "";
    }
    // An inline comment needs whitespace before it (a value may hold '#').
    match line.find(" #").or_else(|| line.find(" ;")).or_else(|| line.find("\t#")) {
        Some(at) => &line[..at],
        None => line,
    }
}

/// The profile `name` from both files' texts (credentials winning); `None` when neither has it.
pub fn merged(config: Option<&str>, credentials: Option<&str>, name: &str) -> Option<Profile> {
    let from_config = config.and_then(|t| section(t, FileKind::Config, name));
    let from_credentials = credentials.and_then(|t| section(t, FileKind::Credentials, name));
    match (from_config, from_credentials) {
        (None, None) => None,
        (a, b) => {
            let mut profile = a.unwrap_or_default();
            profile.extend(b.unwrap_or_default());
            Some(profile)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
[default]
region = eu-west-1

[profile publisher]   # the release pipeline
Region=us-east-1
role_arn = arn:aws:iam::123456789012:role/publish
source_profile = default
s3 =
  max_concurrent_requests = 20
output = json

[profilenot-a-profile]
region = xx
";

    const CREDENTIALS: &str = "\
; comment
[default]
aws_access_key_id = AKIDEXAMPLE
aws_secret_access_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY # inline
[publisher]
region = ap-south-1
";

    #[test]
    fn profiles_from_both_files() {
        let default = merged(Some(CONFIG), Some(CREDENTIALS), "default").unwrap();
        assert_eq!(default["region"], "eu-west-1");
        assert_eq!(default["aws_access_key_id"], "AKIDEXAMPLE");
        assert_eq!(default["aws_secret_access_key"], "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let publisher = merged(Some(CONFIG), Some(CREDENTIALS), "publisher").unwrap();
        assert_eq!(publisher["role_arn"], "arn:aws:iam::123456789012:role/publish");
        assert_eq!(publisher["output"], "json");
        assert!(!publisher.contains_key("max_concurrent_requests"));
        // credentials wins.
        assert_eq!(publisher["region"], "ap-south-1");
        assert_eq!(merged(Some(CONFIG), Some(CREDENTIALS), "missing"), None);
        assert_eq!(merged(Some(CONFIG), None, "not-a-profile"), None);
    }

    #[test]
    fn garbage_is_no_profile_not_a_panic() {
        for text in ["", "[", "]]]", "[profile]\n=\n", "\u{0}\u{1}", "[default\nx=1", "x = 1\n[default]"] {
            let _ = section(text, FileKind::Config, "default");
            let _ = section(text, FileKind::Credentials, "default");
        }
        assert_eq!(section("x = 1\n[default]\n", FileKind::Credentials, "default"), Some(Profile::new()));
    }
}
