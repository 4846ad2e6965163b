//! The IMDSv2 emulator (`tests/imds/imds_emulator.py`) as a guard: it serves a config as
//! user-data at an address inside a namespace, misbehaves on request (a mode, which a test can
//! change while it runs), and logs every request it answered; [`ImdsEmulator::requests`] reads
//! that log back, so a test proves what the machine under test really sent (a token, its TTL).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::netns::Netns;
use crate::process::Process;
use crate::rundir::RunDir;

/// How the emulator answers `GET /latest/user-data` (with a valid token; without one it is
/// always 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImdsMode {
    /// The user-data given at start, or 404 without any.
    Normal,
    NotFound,
    /// 200 with text that is not TOML.
    InvalidToml,
    /// 200, chunked, a chunk every 0.2 s, never finished.
    NeverEnding,
    /// 200 with a Content-Length of 1 MiB and that many bytes.
    Huge,
    /// 200 without a Content-Length, 1 MiB, then close.
    HugeUnlabelled,
}

impl ImdsMode {
    /// The emulator's name for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            ImdsMode::Normal => "normal",
            ImdsMode::NotFound => "404",
            ImdsMode::InvalidToml => "invalid-toml",
            ImdsMode::NeverEnding => "never-ending",
            ImdsMode::Huge => "huge",
            ImdsMode::HugeUnlabelled => "huge-unlabelled",
        }
    }
}

/// One request as the emulator logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsRequest {
    pub method: String,
    pub path: String,
    /// Whether the request carried `X-aws-ec2-metadata-token`...
    pub token_sent: bool,
    /// ...and whether that token was one the emulator issued and still live.
    pub token_valid: bool,
    /// The status the emulator answered.
    pub status: u16,
    /// The TTL a token request asked for (`X-aws-ec2-metadata-token-ttl-seconds`), when valid.
    pub ttl: Option<u32>,
}

/// The emulator running in a namespace; stopped on drop.
pub struct ImdsEmulator {
    process: Process,
    address: SocketAddr,
    mode_file: PathBuf,
    request_log: PathBuf,
}

impl ImdsEmulator {
    /// Starts the emulator on `address` inside `ns`, serving `user_data` (if any) in `mode`,
    /// and waits until it listens. Its files go to `dir`, named after the port.
    pub fn start(
        ns: &Netns,
        address: SocketAddr,
        user_data: Option<&str>,
        mode: ImdsMode,
        dir: &RunDir,
    ) -> ImdsEmulator {
        ImdsEmulator::start_with(ns, address, user_data, mode, dir, &[])
    }

    /// Like [`ImdsEmulator::start`], with more of the emulator's options (`--role NAME`,
    /// `--credentials-seconds N`, `--region R`).
    pub fn start_with(
        ns: &Netns,
        address: SocketAddr,
        user_data: Option<&str>,
        mode: ImdsMode,
        dir: &RunDir,
        options: &[&str],
    ) -> ImdsEmulator {
        let file = |what: &str| dir.path().join(format!("imds-{}.{what}", address.port()));
        let mode_file = file("mode");
        let request_log = file("requests.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("imds/imds_emulator.py");
        let mut argv = vec![
            crate::http::python().to_string(),
            script.display().to_string(),
            "--bind".into(),
            address.ip().to_string(),
            "--port".into(),
            address.port().to_string(),
            "--log".into(),
            request_log.display().to_string(),
            "--mode-file".into(),
            mode_file.display().to_string(),
        ];
        if let Some(text) = user_data {
            // It may hold keys: RunDir writes it 0600.
            let path = dir.write(&format!("imds-{}.user-data", address.port()), text);
            argv.push("--user-data".into());
            argv.push(path.display().to_string());
        }
        argv.extend(options.iter().map(|o| o.to_string()));
        // Before the start: the emulator reads the file on every request.
        write_mode(&mode_file, mode);
        let process = ns.spawn("imds emulator", &argv, &[], &file("log"));
        process.wait_for_log("listening on", Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
        ImdsEmulator { process, address, mode_file, request_log }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The base URL to give the machine under test (`--imds`).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Changes how user-data is answered from the next request on.
    pub fn set_mode(&self, mode: ImdsMode) {
        write_mode(&self.mode_file, mode);
    }

    /// Every request answered so far, oldest first. A line the emulator is still writing is
    /// left for the next call; a line that is not the emulator's JSON is a panic naming it.
    pub fn requests(&self) -> Vec<ImdsRequest> {
        let log = self.request_log();
        let complete = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
        complete
            .lines()
            .map(|line| {
                parse_request(line).unwrap_or_else(|e| panic!("{}: {e} in line {line:?}", self.request_log.display()))
            })
            .collect()
    }

    /// The requests for `/latest/user-data`.
    pub fn user_data_requests(&self) -> Vec<ImdsRequest> {
        let mut requests = self.requests();
        requests.retain(|r| r.path == "/latest/user-data");
        requests
    }

    /// The raw request log, for failure messages.
    pub fn request_log(&self) -> String {
        std::fs::read_to_string(&self.request_log).unwrap_or_default()
    }

    /// The emulator's own output and its request log, framed for a failure message.
    pub fn log_report(&self) -> String {
        format!(
            "{}\n--- {} ---\n{}",
            self.process.log_report(),
            self.request_log.display(),
            self.request_log().trim_end()
        )
    }
}

fn write_mode(mode_file: &Path, mode: ImdsMode) {
    std::fs::write(mode_file, mode.as_str()).unwrap_or_else(|e| panic!("cannot write {}: {e}", mode_file.display()));
}

/// One line of the request log: a flat JSON object as Python's `json.dumps` writes it.
fn parse_request(line: &str) -> Result<ImdsRequest, String> {
    let fields = flat_json_fields(line)?;
    let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let need = |key: &str| get(key).ok_or_else(|| format!("no \"{key}\""));
    let string = |key: &str| -> Result<String, String> {
        let v = need(key)?;
        v.strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .map(str::to_string)
            .ok_or_else(|| format!("\"{key}\" is not a string: {v}"))
    };
    let boolean = |key: &str| match need(key)? {
        "true" => Ok(true),
        "false" => Ok(false),
        v => Err(format!("\"{key}\" is not a boolean: {v}")),
    };
    let status = need("status")?;
    Ok(ImdsRequest {
        method: string("method")?,
        path: string("path")?,
        token_sent: boolean("token_sent")?,
        token_valid: boolean("token_valid")?,
        status: status.parse().map_err(|_| format!("\"status\" is not a status: {status}"))?,
        // An invalid TTL is logged as the string the request sent: not a TTL.
        ttl: get("ttl").and_then(|v| v.parse().ok()),
    })
}

/// The `"key": value` pairs of a one-level JSON object whose strings hold no quote, comma or
/// backslash (true of what the emulator logs: methods, paths, modes, numbers).
fn flat_json_fields(line: &str) -> Result<Vec<(String, String)>, String> {
    let inner = line.trim().strip_prefix('{').and_then(|l| l.strip_suffix('}')).ok_or("not a JSON object")?;
    if inner.contains('\\') {
        return Err("an escaped character".into());
    }
    inner
        .split(", ")
        .map(|pair| {
            let (key, value) = pair.split_once(": ").ok_or("a field without a value")?;
            let key = key.strip_prefix('"').and_then(|k| k.strip_suffix('"')).ok_or("a key that is not a string")?;
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_emulators_lines() {
        let token = parse_request(
            r#"{"method": "PUT", "path": "/latest/api/token", "token_sent": false, "token_valid": false, "status": 200, "ttl": 21600}"#,
        )
        .unwrap();
        assert_eq!(
            token,
            ImdsRequest {
                method: "PUT".into(),
                path: "/latest/api/token".into(),
                token_sent: false,
                token_valid: false,
                status: 200,
                ttl: Some(21600),
            }
        );
        let refused = parse_request(
            r#"{"method": "GET", "path": "/latest/user-data", "token_sent": true, "token_valid": false, "status": 401}"#,
        )
        .unwrap();
        assert_eq!((refused.token_sent, refused.status, refused.ttl), (true, 401, None));
        let bad_ttl = parse_request(
            r#"{"method": "PUT", "path": "/latest/api/token", "token_sent": false, "token_valid": false, "status": 400, "ttl": "abc"}"#,
        )
        .unwrap();
        assert_eq!(bad_ttl.ttl, None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_request("").is_err());
        assert!(parse_request("{\"method\": \"GET\"").is_err());
        assert!(parse_request("{\"method\": \"GET\"}").is_err());
        assert!(parse_request(
            r#"{"method": GET, "path": "/", "token_sent": true, "token_valid": true, "status": 200}"#
        )
        .is_err());
        assert!(parse_request(
            r#"{"method": "GET", "path": "/", "token_sent": yes, "token_valid": true, "status": 200}"#
        )
        .is_err());
        assert!(parse_request(
            r#"{"method": "GET", "path": "/a\"b", "token_sent": true, "token_valid": true, "status": 200}"#
        )
        .is_err());
    }
}
