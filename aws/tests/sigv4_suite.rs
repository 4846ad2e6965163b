//! Our SigV4 against AWS's published signing test suite (`sigv4-suite/`, see its README): for
//! every case, the canonical request, the string to sign and the signature must be the
//! suite's, byte for byte.

use bastion_aws::credentials::Credentials;
use bastion_aws::sigv4::{self, Request, Scope};
use bastion_aws::time::UtcTime;
use std::path::Path;

/// Cases our signer does not take on, and why (none of them is a request we make).
const NOT_OURS: &[(&str, &str)] = &[];

type Pairs = Vec<(String, String)>;

/// `request.txt` as method, path, decoded query, headers (folded lines joined), body.
fn parse_request(text: &str) -> (String, String, Pairs, Pairs, Vec<u8>) {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    let method = request_line.split(' ').next().unwrap().to_string();
    let target = request_line[method.len() + 1..].rsplit_once(" HTTP/").unwrap().0;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            let last = headers.last_mut().unwrap();
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_string(), value.to_string()));
        }
    }
    (method, percent_decode(path), query, headers, body.as_bytes().to_vec())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn every_case_of_the_signing_test_suite() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigv4-suite");
    let mut checked = 0;
    let mut cases: Vec<_> = std::fs::read_dir(&suite).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
    cases.sort_by_key(|e| e.file_name());
    for case in cases {
        let name = case.file_name().to_string_lossy().into_owned();
        if NOT_OURS.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let dir = case.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{name}/{f}: {e}"));
        let context: serde_json::Value = serde_json::from_str(&read("context.json")).unwrap();
        let (method, path, query, mut headers, body) = parse_request(&read("request.txt"));
        let omit_token = context["omit_session_token"].as_bool().unwrap_or(false);
        let credentials = Credentials {
            access_key_id: context["credentials"]["access_key_id"].as_str().unwrap().into(),
            secret_access_key: context["credentials"]["secret_access_key"].as_str().unwrap().into(),
            session_token: context["credentials"]["token"].as_str().filter(|_| !omit_token).map(String::from),
            expires: None,
            origin: "the test suite".into(),
        };
        // A request that already carries X-Amz-Date keeps it (and it is signed once).
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("x-amz-date"));
        let payload = sigv4::sha256_hex(&body);
        let signed = sigv4::sign(
            &Request { method: &method, path: &path, query: &query, headers: &headers, payload_sha256: &payload },
            &Scope {
                region: context["region"].as_str().unwrap(),
                service: context["service"].as_str().unwrap(),
                time: UtcTime::parse_rfc3339(context["timestamp"].as_str().unwrap()).unwrap(),
                normalize_path: context["normalize"].as_bool().unwrap(),
                sign_content_sha256: context["sign_body"].as_bool().unwrap_or(false),
            },
            &credentials,
        );
        assert_eq!(signed.canonical_request, read("header-canonical-request.txt"), "{name}: canonical request");
        assert_eq!(signed.string_to_sign, read("header-string-to-sign.txt"), "{name}: string to sign");
        assert_eq!(signed.signature, read("header-signature.txt").trim(), "{name}: signature");
        checked += 1;
    }
    assert!(checked >= 35, "only {checked} cases checked");
}
