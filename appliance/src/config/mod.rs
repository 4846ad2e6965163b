//! The service's configuration: the validated model every other module reads.
//!
//! This module owns the TOML schema (`[interface]`, `[[peer]]`, `[nat]`, `[health]`,
//! `[selftest]`, `[metrics]`, `[control]`, `[source]`, `[aws]`, `[siblings]`, `[log]`), its validation, and the error list `check-config` prints (file, line, field,
//! what was expected). It does not open sockets or touch the network; `crate::convert` converts
//! existing wg-quick files into this schema.

mod consistency;
pub(crate) mod document;
pub(crate) mod schema;
pub(crate) mod values;

pub(crate) use consistency::lowest_free;

#[cfg(test)]
mod leak_tests;
#[cfg(test)]
mod tests;

use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use ip_network::IpNetwork;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// An address on the tunnel interface: the host address and its prefix (`10.100.0.1/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl InterfaceAddress {
    /// The network this address is on (`10.100.0.0/24` for `10.100.0.1/24`).
    pub fn network(&self) -> IpNetwork {
        IpNetwork::new_truncate(self.address, self.prefix_len).expect("prefix validated at parse")
    }
}

impl std::fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub interface: Interface,
    pub peers: Vec<Peer>,
    pub nat: Nat,
    pub health: Health,
    pub selftest: SelfTest,
    pub metrics: Metrics,
    pub control: Control,
    pub source: Source,
    pub aws: Aws,
    pub siblings: Siblings,
    pub log: Log,
    /// What validation let pass but the operator probably did not mean (shown by
    /// `check-config` and logged at start, see [`render_warnings`]).
    pub warnings: Vec<ConfigProblem>,
}

#[derive(Debug, Clone)]
pub struct Interface {
    pub key: InterfaceKey,
    pub addresses: Vec<InterfaceAddress>,
    pub listen_port: u16,
    pub mtu: u16,
    /// Name of the TUN interface (`wg0`).
    pub name: String,
}

/// The bastion's private key, or where to fetch it.
#[derive(Debug, Clone)]
pub enum InterfaceKey {
    /// From `private_key` or `private_key_file`.
    Given(PrivateKey),
    /// `private_key_ssm`: an SSM SecureString parameter, fetched by `bastion run` before it
    /// starts (see `crate::source`), which then makes this `Given`.
    Ssm { parameter: String },
}

impl Interface {
    /// The key, once known (always, unless it lives in SSM and was not fetched yet).
    pub fn private_key(&self) -> Option<&PrivateKey> {
        match &self.key {
            InterfaceKey::Given(key) => Some(key),
            InterfaceKey::Ssm { .. } => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub allowed_ips: Vec<IpNetwork>,
    /// Optional known endpoint (most bastion peers are roaming clients and have none).
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    /// Destinations this peer may reach through the bastion, beyond `[nat] reach`.
    pub reach: Vec<IpNetwork>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Egress {
    /// The interface of the default route, looked up at start.
    Auto,
    Interface(String),
}

#[derive(Debug, Clone)]
pub struct Nat {
    pub masquerade: bool,
    pub egress: Egress,
    /// Destinations every peer may reach.
    pub reach: Vec<IpNetwork>,
}

#[derive(Debug, Clone)]
pub struct Health {
    pub listen: SocketAddr,
    pub drain_seconds: u64,
}

#[derive(Debug, Clone)]
pub struct SelfTest {
    pub interval_seconds: u64,
    /// The tunnel address the in-process self-test client uses (`[selftest] address`; default:
    /// the highest host address of the interface's first IPv4 network, e.g. `10.100.0.254` for
    /// `10.100.0.1/24`). Never inside any peer's allowed_ips.
    pub address: IpAddr,
    /// TCP targets in the private subnets the self-test connects to through the tunnel.
    pub probes: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// `[metrics] listen`: where `GET /metrics` is answered; `None` (the default) = off.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// The control socket (`bastion status`, `bastion reload`): `/run/bastion/<interface>.sock`
    /// unless `[control] socket` says otherwise.
    pub socket: std::path::PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `[source] ssm_path`: every parameter under this path is a part of the config (see
    /// `crate::source`); `None` = the config is this file alone.
    pub ssm_path: Option<String>,
    /// How often `bastion run` reads the SSM parameters again.
    pub refresh_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Aws {
    /// The region for SSM; default: the instance's (IMDS), or `AWS_REGION`. (`[siblings]` uses
    /// its target group's region.)
    pub region: Option<String>,
    /// Sent to instead of AWS's own endpoints (`https://ssm.REGION.amazonaws.com`, and those
    /// of ELBv2 and Auto Scaling for `[siblings]`): a VPC endpoint's own DNS name, or an
    /// emulator.
    pub endpoint_url: Option<String>,
}

/// `[log]`: how lines look on the console, and whether they go to CloudWatch Logs too.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Log {
    /// `format = "json"`: every console line one JSON object (default: text).
    pub json: bool,
    /// Ship every line and audit event, and a metric record a minute, to this group (stream =
    /// the instance id); `None` (the default) = off. See `crate::cloudwatch`.
    pub cloudwatch_group: Option<String>,
}

/// `[siblings]`: acting on a dead sibling the load balancer reports (see `crate::siblings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Siblings {
    /// The target group this bastion is a target of; `None` (the default) = off.
    pub target_group_arn: Option<String>,
    /// How often the group's health is read.
    pub poll_seconds: u64,
    /// Also mark a dead instance target unhealthy in its Auto Scaling group (replaced now).
    pub mark_unhealthy: bool,
    /// ip targets: take over a dead sibling's target address in this bastion's subnet.
    pub take_over_addresses: bool,
    /// ip targets: register this bastion's secondary addresses itself, deregister them when it
    /// drains.
    pub register_self: bool,
}

/// What kind of problem a config has: what tests (and tools) look at, rather than the words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// Not TOML (or, for wg-quick files, not `Key = Value`).
    Syntax,
    /// A field or section the schema does not have.
    UnknownField,
    /// A value of the wrong TOML type (a number where a string belongs...).
    WrongType,
    /// A required field or section is absent.
    Missing,
    /// A number outside the allowed range.
    OutOfRange,
    /// A value of the right type that is not what the field takes (a bad address, key, name).
    Invalid,
    /// The same name, key or address given twice.
    Duplicate,
    /// Two peers' tunnel addresses overlap (or the self-test's address lies in a peer's).
    Overlap,
    /// Fields that cannot hold together (both `private_key` and `private_key_file`...).
    Conflict,
    /// A file the config names cannot be read.
    Unreadable,
    /// The whole file is in another format (a wg-quick file given to check-config).
    WrongFormat,
    /// More problems than are listed.
    TooMany,
    /// Not a problem: allowed, but probably not meant (`render_warnings`).
    Warning,
}

/// One problem found in a config file: where it is and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub kind: ProblemKind,
    /// 1-based line, when the problem can be pinned to one.
    pub line: Option<usize>,
    /// Dotted field path, e.g. `peer[2].allowed_ips`.
    pub field: String,
    pub message: String,
}

/// Every problem found in one file (validation does not stop at the first).
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file (or `user-data`, or another origin) the text came from.
    pub origin: String,
    pub problems: Vec<ConfigProblem>,
    /// When the text was put together from several (user-data, then SSM parameters): where
    /// each begins, so a problem is shown at its own origin and line. Empty: one text.
    pub parts: Vec<TextPart>,
}

/// One of the texts a config was put together from: its first line in the whole text and what
/// diagnostics call it (`ssm:/bastion/prod/peers/a (version 3)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPart {
    pub first_line: usize,
    pub origin: String,
}

/// Where line `line` of the whole text is: the part's origin and the line within it.
pub fn locate<'a>(parts: &'a [TextPart], origin: &'a str, line: usize) -> (&'a str, usize) {
    match parts.iter().rev().find(|p| p.first_line <= line) {
        Some(part) => (&part.origin, line - part.first_line + 1),
        None => (origin, line),
    }
}

impl ConfigProblem {
    /// `ORIGIN:LINE: FIELD: MESSAGE` (without `:LINE` when there is none): the one format of
    /// every config diagnostic. `label` goes before the message (`"warning: "`, or nothing).
    /// Origin, field and message may all hold what the operator typed (a key pasted as a field
    /// name, a path): the whole line goes through `keys::redact_key_like`.
    pub fn render(&self, origin: &str, label: &str) -> String {
        let line = match self.line {
            Some(line) => format!("{origin}:{line}: {}: {label}{}", self.field, self.message),
            None => format!("{origin}: {}: {label}{}", self.field, self.message),
        };
        crate::keys::redact_key_like(&line).into_owned()
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) if !self.parts.is_empty() => {
                    let (origin, line) = locate(&self.parts, &self.origin, line);
                    let local = ConfigProblem { line: Some(line), ..p.clone() };
                    f.write_str(&local.render(origin, ""))?;
                }
                _ => f.write_str(&p.render(&self.origin, ""))?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The warnings of a valid config, one line each, in the format of [`ConfigError`].
pub fn render_warnings(config: &Config, origin: &str) -> Vec<String> {
    config.warnings.iter().map(|w| w.render(origin, "warning: ")).collect()
}

/// The largest config file read. EC2 user-data is at most 16 KiB; a file with thousands of
/// peers stays far below this.
const CONFIG_FILE_LIMIT: u64 = 4 << 20;

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_config_file(path)?;
    parse(&text, &path.display().to_string(), path.parent())
}

/// The text of a config file (bounded; wiped when dropped), or the problem of reading it.
pub fn read_config_file(path: &Path) -> Result<zeroize::Zeroizing<String>, ConfigError> {
    read_bounded(path, CONFIG_FILE_LIMIT).map_err(|e| ConfigError {
        origin: path.display().to_string(),
        problems: vec![ConfigProblem {
            kind: ProblemKind::Unreadable,
            line: None,
            field: "file".into(),
            message: format!("cannot read: {e}"),
        }],
        parts: Vec::new(),
    })
}

/// Reads a whole text file of at most `limit` bytes; a longer one is an error, not a truncation.
/// The text may hold a key: it is wiped when dropped (read into one allocation of the file's
/// size, so no copy is left behind by a growing buffer).
pub(crate) fn read_bounded(path: &Path, limit: u64) -> std::io::Result<zeroize::Zeroizing<String>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0).min(limit + 1);
    let mut text = zeroize::Zeroizing::new(String::with_capacity(size as usize + 1));
    file.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes; expected a small text file"),
        ));
    }
    Ok(text)
}

/// Parses and validates config text. `origin` names it in errors; `base_dir` resolves a relative
/// `private_key_file` (without one, such a path is relative to the working directory).
///
/// Every problem is collected: a syntax error stops at the syntax (the tree after it would be
/// guesswork), otherwise every field, every peer and every cross-peer rule is checked.
pub fn parse(text: &str, origin: &str, base_dir: Option<&Path>) -> Result<Config, ConfigError> {
    let mut report = document::Report::new(text);
    let config = document::parse(text, &mut report).and_then(|root| build(&root, base_dir, &mut report));
    if report.is_clean() {
        if let Some(mut config) = config {
            config.warnings = report.take_warnings();
            return Ok(config);
        }
    }
    if looks_like_wg_quick(text) {
        report.at_line(
            ProblemKind::WrongFormat,
            None,
            "file",
            "this looks like a wg-quick file ([Interface]/[Peer]); `bastion convert FILE` prints \
             it in this format",
        );
    }
    Err(ConfigError { origin: origin.into(), problems: report.finish(), parts: Vec::new() })
}

fn looks_like_wg_quick(text: &str) -> bool {
    text.lines().any(|l| matches!(l.trim(), "[Interface]" | "[Peer]"))
}

fn build(root: &toml::de::DeTable, base_dir: Option<&Path>, report: &mut document::Report) -> Option<Config> {
    let drafts = schema::read(root, base_dir, report);
    consistency::check_peers(drafts.interface.as_ref(), &drafts.peers, report);
    let interface = drafts.interface?;
    let selftest_address = consistency::selftest_address(&interface, &drafts.peers, &drafts.selftest, report);
    consistency::check_listeners(&drafts.health, &drafts.metrics, report);
    consistency::check_reach_of_the_tunnel(&interface, &drafts.nat, &drafts.peers, report);
    if !report.is_clean() {
        return None;
    }
    let peers = drafts
        .peers
        .into_iter()
        .map(|p| {
            Some(Peer {
                name: p.name,
                public_key: p.public_key?.0,
                preshared_key: p.preshared_key,
                allowed_ips: p.allowed_ips.into_iter().map(|i| i.value).collect(),
                endpoint: p.endpoint,
                persistent_keepalive: p.persistent_keepalive,
                reach: p.reach.into_iter().map(|item| item.value).collect(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let control_socket = drafts
        .control
        .socket
        .unwrap_or_else(|| Path::new(schema::DEFAULT_CONTROL_DIR).join(format!("{}.sock", interface.name)));
    Some(Config {
        interface: Interface {
            key: match (interface.private_key, interface.key_ssm) {
                (Some(key), _) => InterfaceKey::Given(key),
                (None, Some(parameter)) => InterfaceKey::Ssm { parameter },
                (None, None) => return None,
            },
            addresses: interface.addresses.into_iter().map(|a| a.value).collect(),
            listen_port: interface.listen_port,
            mtu: interface.mtu,
            name: interface.name,
        },
        peers,
        nat: Nat {
            masquerade: drafts.nat.masquerade,
            egress: drafts.nat.egress,
            reach: drafts.nat.reach.into_iter().map(|item| item.value).collect(),
        },
        health: Health { listen: drafts.health.listen?, drain_seconds: drafts.health.drain_seconds },
        selftest: SelfTest {
            interval_seconds: drafts.selftest.interval_seconds,
            address: selftest_address?,
            probes: drafts.selftest.probes,
        },
        metrics: Metrics { listen: drafts.metrics.listen.map(|(a, _)| a) },
        control: Control { socket: control_socket },
        source: Source { ssm_path: drafts.source.ssm_path, refresh_seconds: drafts.source.refresh_seconds },
        aws: Aws { region: drafts.aws.region, endpoint_url: drafts.aws.endpoint_url },
        siblings: Siblings {
            target_group_arn: drafts.siblings.target_group_arn,
            poll_seconds: drafts.siblings.poll_seconds,
            mark_unhealthy: drafts.siblings.mark_unhealthy,
            take_over_addresses: drafts.siblings.take_over_addresses,
            register_self: drafts.siblings.register_self,
        },
        log: Log { json: drafts.log.json, cloudwatch_group: drafts.log.cloudwatch_group },
        warnings: Vec::new(),
    })
}
