//! AWS Signature Version 4 for one request: the canonical request, the string to sign, the
//! signature and the headers that carry it. Plain functions of the request, the credentials and
//! the time; no I/O. Checked step by step against AWS's published signing test suite
//! (`aws/tests/sigv4_suite.rs`).
//!
//! The rules of every service but S3: the path is normalized (dot segments and repeated
//! slashes removed) and URI-encoded, the query sorted by encoded name and value, header values
//! trimmed with inner runs of spaces collapsed. Paths are given decoded and encoded once here,
//! as the test suite has it; the paths this project signs (`/snapshots/snap-0a1b/blocks/7`)
//! hold only unreserved characters, for which AWS's "encode twice" rule changes nothing.

use crate::credentials::Credentials;
use crate::time::UtcTime;
use ring::{digest, hmac};

/// What is signed: the request as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, decoded (it is encoded here), e.g. `/snapshots/snap-1/blocks/7`.
    pub path: &'a str,
    /// Query parameters, decoded (they are encoded here).
    pub query: &'a [(String, String)],
    /// Headers to sign (names in any case), `host` among them. Repeated names are joined.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body.
    pub payload_sha256: &'a str,
}

/// Where and when it is signed.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
    pub time: UtcTime,
    /// Remove `.`/`..` segments and repeated slashes from the path first (every service but S3).
    pub normalize_path: bool,
    /// Also sign an `x-amz-content-sha256` header (S3 wants it; others accept it).
    pub sign_content_sha256: bool,
}

/// The result: the headers to add to the request, and the intermediate steps (for tests and
/// for explaining a `SignatureDoesNotMatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `x-amz-date`, `x-amz-security-token` (with temporary credentials),
    /// `x-amz-content-sha256` (when asked), `authorization`.
    pub headers: Vec<(String, String)>,
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signature: String,
}

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// The SHA-256 of an empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs `request`. The session token, when the credentials have one, is signed as a header.
pub fn sign(request: &Request, scope: &Scope, credentials: &Credentials) -> Signed {
    let amz_date = scope.time.amz_date();
    let mut extra = vec![("x-amz-date".to_string(), amz_date.clone())];
    if let Some(token) = &credentials.session_token {
        extra.push(("x-amz-security-token".to_string(), token.clone()));
    }
    if scope.sign_content_sha256 {
        extra.push(("x-amz-content-sha256".to_string(), request.payload_sha256.to_string()));
    }
    let mut all: Vec<(String, String)> = request.headers.to_vec();
    all.extend(extra.iter().cloned());
    let (canonical_headers, signed_headers) = canonical_headers(&all);
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        canonical_path(request.path, scope.normalize_path),
        canonical_query(request.query),
        canonical_headers,
        signed_headers,
        request.payload_sha256
    );
    let date = scope.time.date();
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign =
        format!("{ALGORITHM}\n{amz_date}\n{credential_scope}\n{}", sha256_hex(canonical_request.as_bytes()));
    let key = signing_key(&credentials.secret_access_key, &date, scope.region, scope.service);
    let signature = hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    let authorization = format!(
        "{ALGORITHM} Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    );
    let mut headers = extra;
    headers.push(("authorization".to_string(), authorization));
    Signed { headers, canonical_request, string_to_sign, signature }
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

/// RFC 3986 unreserved characters stay, everything else is `%XX` (upper-case hex).
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn canonical_path(path: &str, normalize: bool) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let path = if normalize { normalized(path) } else { path.to_string() };
    uri_encode(&path, true)
}

/// RFC 3986 dot-segment removal, and empty segments dropped (`//a//` is `/a/`).
fn normalized(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    let mut out = format!("/{}", segments.join("/"));
    if trailing && !segments.is_empty() {
        out.push('/');
    }
    out
}

fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> =
        query.iter().map(|(k, v)| (uri_encode(k, false), uri_encode(v, false))).collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// The canonical header block (each `name:value\n`) and the signed-headers list.
fn canonical_headers(headers: &[(String, String)]) -> (String, String) {
    let mut merged: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for (name, value) in headers {
        merged.entry(name.to_ascii_lowercase()).or_default().push(trim_all(value));
    }
    let block: String = merged.iter().map(|(n, v)| format!("{n}:{}\n", v.join(","))).collect();
    let names = merged.keys().cloned().collect::<Vec<_>>().join(";");
    (block, names)
}

/// Trims the value and collapses runs of whitespace (also folded lines) to one space.
fn trim_all(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_encoded_as_for_every_service_but_s3() {
        let cases = [
            ("/", "/"),
            ("", "/"),
            ("//example//", "/example/"),
            ("/example/..", "/"),
            ("/./a/./b/../c", "/a/c"),
            ("/snapshots/snap-0123/blocks/17", "/snapshots/snap-0123/blocks/17"),
            ("/example space/", "/example%20space/"),
            ("/ሴ", "/%E1%88%B4"),
        ];
        for (path, canonical) in cases {
            assert_eq!(canonical_path(path, true), canonical, "{path}");
        }
        assert_eq!(canonical_path("//example//", false), "//example//");
    }

    #[test]
    fn the_query_is_sorted_after_encoding() {
        let q = |pairs: &[(&str, &str)]| {
            canonical_query(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>())
        };
        assert_eq!(q(&[("Param2", "value2"), ("Param1", "value1")]), "Param1=value1&Param2=value2");
        assert_eq!(q(&[("Filter.1.Value.1", "bastion 1/2")]), "Filter.1.Value.1=bastion%201%2F2");
        assert_eq!(q(&[("b", ""), ("a", "x")]), "a=x&b=");
    }
}
