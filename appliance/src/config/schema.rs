//! The schema: each section's fields, their types, ranges and defaults, read from the document
//! into drafts that keep where every value was written. Rules that span several fields or
//! peers live in `consistency`; the finished `Config` is assembled in `build`.

use super::document::{self, Item, Report, Table};
use super::values;
use super::ProblemKind;
use super::{Egress, InterfaceAddress};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use ip_network::IpNetwork;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::DeTable;

pub const SECTIONS: &[&str] =
    &["interface", "peer", "nat", "health", "selftest", "metrics", "control", "source", "aws", "siblings", "log"];
pub const INTERFACE_FIELDS: &[&str] =
    &["private_key", "private_key_file", "private_key_ssm", "address", "listen_port", "mtu", "name"];
/// The three ways to give the bastion's key; exactly one is used.
const KEY_FIELDS: [&str; 3] = ["private_key", "private_key_file", "private_key_ssm"];
pub const PEER_FIELDS: &[&str] = &[
    "name",
    "public_key",
    "preshared_key",
    "preshared_key_file",
    "allowed_ips",
    "endpoint",
    "persistent_keepalive",
    "reach",
];
pub const NAT_FIELDS: &[&str] = &["masquerade", "egress", "reach"];
pub const HEALTH_FIELDS: &[&str] = &["listen", "drain_seconds"];
pub const SELFTEST_FIELDS: &[&str] = &["interval_seconds", "probes", "address"];
pub const METRICS_FIELDS: &[&str] = &["listen"];
pub const CONTROL_FIELDS: &[&str] = &["socket"];
pub const SOURCE_FIELDS: &[&str] = &["ssm_path", "refresh_seconds"];
pub const AWS_FIELDS: &[&str] = &["region", "endpoint_url"];
pub const SIBLINGS_FIELDS: &[&str] =
    &["target_group_arn", "poll_seconds", "mark_unhealthy", "take_over_addresses", "register_self"];
pub const DEFAULT_SIBLINGS_POLL_SECONDS: u64 = 2;
pub const LOG_FIELDS: &[&str] = &["format", "cloudwatch_group"];

pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// 1500 (an internet path) less 80 bytes of WireGuard over IPv6, as wg-quick computes it.
pub const DEFAULT_MTU: u16 = 1420;
/// IPv6 needs every link to carry 1280 bytes (RFC 8200 §5); Linux removes IPv6 from an
/// interface below that.
pub const MIN_MTU: u16 = 1280;
/// A 9001-byte VPC jumbo frame less 80 bytes of WireGuard over IPv6: any larger tunnel packet
/// would be fragmented on its way out.
pub const MAX_MTU: u16 = 8921;
pub const DEFAULT_INTERFACE_NAME: &str = "wg0";
pub const DEFAULT_HEALTH_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_DRAIN_SECONDS: u64 = 30;
/// The NLB's own deregistration delay tops out at an hour; a longer drain is a typo.
pub const MAX_DRAIN_SECONDS: u64 = 3600;
pub const DEFAULT_SELFTEST_INTERVAL: u64 = 30;
pub const MAX_SELFTEST_INTERVAL: u64 = 86_400;
/// The control socket's directory; the socket is `DIR/<interface>.sock`.
pub const DEFAULT_CONTROL_DIR: &str = "/run/bastion";
pub const DEFAULT_REFRESH_SECONDS: u64 = 60;
/// Below this, a fleet of bastions would spend SSM's shared 40 requests/s on polling.
pub const MIN_REFRESH_SECONDS: u64 = 10;
pub const MAX_REFRESH_SECONDS: u64 = 86_400;
/// A key file holds one line; anything longer is the wrong file.
const KEY_FILE_LIMIT: u64 = 4096;

const KEY_EXPECTED: &str = "a string: the base64 key (44 characters, as `wg genkey` prints)";
const NETWORK_EXPECTED: &str = "networks like 10.0.1.0/24 or fd00::/64";

pub struct InterfaceDraft {
    pub line: Option<usize>,
    pub private_key: Option<PrivateKey>,
    /// `private_key_ssm`: the parameter that holds the key (fetched by `bastion run`).
    pub key_ssm: Option<String>,
    /// Where the key was written (`interface.private_key`, `…_file` or `…_ssm`).
    pub key_field: Option<String>,
    pub addresses: Vec<Item<InterfaceAddress>>,
    pub listen_port: u16,
    pub mtu: u16,
    pub name: String,
}

pub struct PeerDraft {
    pub line: Option<usize>,
    pub name: String,
    /// Where the name was written; `None` when it is the default `peer-N`.
    pub name_span: Option<Range<usize>>,
    pub public_key: Option<(PublicKey, Range<usize>)>,
    pub preshared_key: Option<PresharedKey>,
    pub allowed_ips: Vec<Item<IpNetwork>>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    pub reach: Vec<Item<IpNetwork>>,
}

pub struct NatDraft {
    pub masquerade: bool,
    pub egress: Egress,
    pub reach: Vec<Item<IpNetwork>>,
}

pub struct HealthDraft {
    pub listen: Option<SocketAddr>,
    pub drain_seconds: u64,
}

pub struct SelfTestDraft {
    pub line: Option<usize>,
    pub interval_seconds: u64,
    pub probes: Vec<SocketAddr>,
    /// The explicit address and where it was written.
    pub address: Option<(IpAddr, Range<usize>)>,
}

pub struct MetricsDraft {
    /// Where it was written, for the clash with the health port.
    pub listen: Option<(SocketAddr, Range<usize>)>,
}

pub struct ControlDraft {
    pub socket: Option<PathBuf>,
}

pub struct SourceDraft {
    pub ssm_path: Option<String>,
    pub refresh_seconds: u64,
}

pub struct AwsDraft {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

pub struct SiblingsDraft {
    pub target_group_arn: Option<String>,
    pub poll_seconds: u64,
    pub mark_unhealthy: bool,
    pub take_over_addresses: bool,
    pub register_self: bool,
}

pub struct LogDraft {
    pub json: bool,
    pub cloudwatch_group: Option<String>,
}

pub struct Drafts {
    pub interface: Option<InterfaceDraft>,
    pub peers: Vec<PeerDraft>,
    pub nat: NatDraft,
    pub health: HealthDraft,
    pub selftest: SelfTestDraft,
    pub metrics: MetricsDraft,
    pub control: ControlDraft,
    pub source: SourceDraft,
    pub aws: AwsDraft,
    pub siblings: SiblingsDraft,
    pub log: LogDraft,
}

/// Reads every section; problems go to `report`, and every field that could be read is kept so
/// the cross-field checks can still run.
pub fn read(root: &DeTable, base_dir: Option<&Path>, report: &mut Report) -> Drafts {
    let top = Table::new(root, "", "the file", None, SECTIONS);
    top.finish_with_hint(report, root_hint);

    let interface = match top.get("interface") {
        None => {
            report.at_line(ProblemKind::Missing, None, "interface", "missing; expected an [interface] section");
            None
        }
        Some(value) => match value.get_ref().as_table() {
            Some(t) => {
                let line = Some(report.line_of(value.span().start));
                Some(read_interface(
                    &Table::new(t, "interface", "[interface]", line, INTERFACE_FIELDS),
                    base_dir,
                    report,
                ))
            }
            None => {
                report.at(
                    ProblemKind::WrongType,
                    value.span(),
                    "interface",
                    "expected an [interface] section (a table)",
                );
                None
            }
        },
    };

    let mut peers = Vec::new();
    if let Some(value) = top.get("peer") {
        for (index, (table, span)) in document::tables(report, "peer", value, "[[peer]]").into_iter().enumerate() {
            let line = Some(report.line_of(span.start));
            let t = Table::new(table, format!("peer[{index}]"), "[[peer]]", line, PEER_FIELDS);
            peers.push(read_peer(&t, index, base_dir, report));
        }
    }

    let nat = section(&top, "nat", "[nat]", NAT_FIELDS, report, read_nat);
    let health = section(&top, "health", "[health]", HEALTH_FIELDS, report, read_health);
    let selftest = section(&top, "selftest", "[selftest]", SELFTEST_FIELDS, report, read_selftest);
    let metrics = section(&top, "metrics", "[metrics]", METRICS_FIELDS, report, read_metrics);
    let control = section(&top, "control", "[control]", CONTROL_FIELDS, report, read_control);
    let source = section(&top, "source", "[source]", SOURCE_FIELDS, report, read_source);
    let aws = section(&top, "aws", "[aws]", AWS_FIELDS, report, read_aws);
    let siblings = section(&top, "siblings", "[siblings]", SIBLINGS_FIELDS, report, read_siblings);
    let log = section(&top, "log", "[log]", LOG_FIELDS, report, read_log);
    Drafts { interface, peers, nat, health, selftest, metrics, control, source, aws, siblings, log }
}

/// An optional section: read it when present, else read an empty table (all defaults).
fn section<T>(
    top: &Table,
    key: &str,
    header: &str,
    known: &'static [&'static str],
    report: &mut Report,
    read: impl Fn(&Table, &mut Report) -> T,
) -> T {
    let empty = DeTable::new();
    match top.get(key) {
        Some(value) => match value.get_ref().as_table() {
            Some(t) => {
                let line = Some(report.line_of(value.span().start));
                read(&Table::new(t, key, header, line, known), report)
            }
            None => {
                report.at(ProblemKind::WrongType, value.span(), key, format!("expected a {header} section (a table)"));
                read(&Table::new(&empty, key, header, None, known), report)
            }
        },
        None => read(&Table::new(&empty, key, header, None, known), report),
    }
}

/// For a top-level key that is really a field of a section (`listen_port = 51820` written
/// before any header), or a section name in the wrong case (`[Interface]`).
fn root_hint(name: &str) -> Option<String> {
    let folded = name.to_ascii_lowercase();
    if let Some(section) = SECTIONS.iter().find(|s| **s == folded) {
        let header = if *section == "peer" { "[[peer]]".to_string() } else { format!("[{section}]") };
        return Some(header);
    }
    let owners: [(&str, &[&str]); 11] = [
        ("[interface]", INTERFACE_FIELDS),
        ("[[peer]]", PEER_FIELDS),
        ("[nat]", NAT_FIELDS),
        ("[health]", HEALTH_FIELDS),
        ("[selftest]", SELFTEST_FIELDS),
        ("[metrics]", METRICS_FIELDS),
        ("[control]", CONTROL_FIELDS),
        ("[source]", SOURCE_FIELDS),
        ("[aws]", AWS_FIELDS),
        ("[siblings]", SIBLINGS_FIELDS),
        ("[log]", LOG_FIELDS),
    ];
    owners.iter().find_map(|(header, fields)| document::suggestion(name, fields).map(|f| format!("{f} under {header}")))
}

fn read_interface(t: &Table, base_dir: Option<&Path>, report: &mut Report) -> InterfaceDraft {
    let given: Vec<&str> = KEY_FIELDS.iter().copied().filter(|f| t.get(f).is_some()).collect();
    let (mut private_key, mut key_ssm, mut key_field) = (None, None, None);
    match given.as_slice() {
        [] => t.missing(
            report,
            "private_key",
            "private_key (base64, from `bastion genkey`), private_key_file (a path) or private_key_ssm \
             (an SSM SecureString parameter)",
        ),
        [one] => {
            let field = t.field(one);
            let value = t.get(one).expect("listed as given");
            key_field = Some(field.clone());
            match *one {
                "private_key" => {
                    private_key = document::string(report, &field, value, KEY_EXPECTED).and_then(|text| {
                        PrivateKey::parse(text)
                            .map_err(|e| report.at(ProblemKind::Invalid, value.span(), &field, e.to_string()))
                            .ok()
                    })
                }
                "private_key_file" => {
                    private_key = document::string(report, &field, value, "a string: the path of the key file")
                        .and_then(|path| read_key_file(path, base_dir, value.span(), &field, report, PrivateKey::parse))
                }
                _ => {
                    key_ssm = document::string(report, &field, value, "a string: an SSM parameter name or ARN")
                        .and_then(|name| {
                            values::ssm_parameter_name(name)
                                .map_err(|e| report.at(ProblemKind::Invalid, value.span(), &field, e))
                                .ok()
                                .map(|()| name.to_string())
                        })
                }
            }
        }
        [_, later @ ..] => {
            let last = later.last().expect("two or more");
            report.at(
                ProblemKind::Conflict,
                t.get(last).expect("listed as given").span(),
                t.field(last),
                format!(
                    "found {}; expected exactly one of private_key, private_key_file and private_key_ssm",
                    given.join(" and ")
                ),
            );
        }
    }

    let mut addresses = Vec::new();
    match t.get("address") {
        None => t.missing(report, "address", "a list of tunnel addresses, e.g. [\"10.100.0.1/24\"]"),
        Some(value) => {
            let field = t.field("address");
            addresses = document::string_list(
                report,
                &field,
                value,
                "addresses with prefix like 10.100.0.1/24",
                values::interface_address,
            );
            if value.get_ref().as_array().is_some_and(|a| a.is_empty()) {
                report.at(
                    ProblemKind::Missing,
                    value.span(),
                    &field,
                    "found an empty list, expected at least one address like 10.100.0.1/24",
                );
            }
            let mut seen = std::collections::HashMap::new();
            for a in &addresses {
                if let Some(first) = seen.insert(a.value.address, a) {
                    report.at(
                        ProblemKind::Duplicate,
                        a.span.clone(),
                        format!("{field}[{}]", a.index),
                        format!("{} is listed twice (also {field}[{}])", a.value.address, first.index),
                    );
                }
            }
        }
    }

    let listen_port =
        t.integer(report, "listen_port", 1..=65535, "a UDP port 1–65535").map_or(DEFAULT_LISTEN_PORT, |n| n as u16);
    let mtu = t
        .integer(
            report,
            "mtu",
            MIN_MTU as i128..=MAX_MTU as i128,
            "an MTU from 1280 (IPv6's minimum) to 8921 (a 9001-byte VPC jumbo frame less 80 \
                 bytes of WireGuard over IPv6)",
        )
        .map_or(DEFAULT_MTU, |n| n as u16);
    let name = t
        .get("name")
        .and_then(|v| {
            let field = t.field("name");
            let text = document::string(report, &field, v, "a string: an interface name like wg0")?;
            values::interface_name(text).map_err(|e| report.at(ProblemKind::Invalid, v.span(), &field, e)).ok()?;
            Some(text.to_string())
        })
        .unwrap_or_else(|| DEFAULT_INTERFACE_NAME.to_string());

    t.finish(report);
    InterfaceDraft { line: t.line(), private_key, key_ssm, key_field, addresses, listen_port, mtu, name }
}

/// Reads a key file (bounded: one line is expected) and parses it with `parse`. The key text
/// never reaches a message; the path and the OS error do.
fn read_key_file<K>(
    path: &str,
    base_dir: Option<&Path>,
    span: Range<usize>,
    field: &str,
    report: &mut Report,
    parse: impl Fn(&str) -> Result<K, crate::keys::KeyError>,
) -> Option<K> {
    let mut full = PathBuf::from(path);
    if full.is_relative() {
        if let Some(dir) = base_dir {
            full = dir.join(full);
        }
    }
    match super::read_bounded(&full, KEY_FILE_LIMIT) {
        Ok(text) => match parse(&text) {
            Ok(key) => Some(key),
            Err(e) => {
                report.at(ProblemKind::Invalid, span, field, format!("{}: {e}", full.display()));
                None
            }
        },
        Err(e) => {
            report.at(ProblemKind::Unreadable, span, field, format!("cannot read {}: {e}", full.display()));
            None
        }
    }
}

fn read_peer(t: &Table, index: usize, base_dir: Option<&Path>, report: &mut Report) -> PeerDraft {
    let (name, name_span) = match t.get("name") {
        Some(v) => {
            let field = t.field("name");
            match document::string(report, &field, v, "a string: the peer's name") {
                Some(text) => {
                    if let Err(e) = values::peer_name(text) {
                        report.at(ProblemKind::Invalid, v.span(), &field, e);
                    }
                    (text.to_string(), Some(v.span()))
                }
                None => (format!("peer-{}", index + 1), Some(v.span())),
            }
        }
        None => (format!("peer-{}", index + 1), None),
    };

    let public_key = match t.get("public_key") {
        None => {
            t.missing(report, "public_key", "the peer's public key (base64, from `wg pubkey`)");
            None
        }
        Some(v) => {
            let field = t.field("public_key");
            document::string(report, &field, v, KEY_EXPECTED)
                .and_then(|text| {
                    PublicKey::parse(text)
                        .map_err(|e| report.at(ProblemKind::Invalid, v.span(), &field, e.to_string()))
                        .ok()
                })
                .map(|k| (k, v.span()))
        }
    };

    let preshared_key = match (t.get("preshared_key"), t.get("preshared_key_file")) {
        (Some(_), Some(file)) => {
            report.at(
                ProblemKind::Conflict,
                file.span(),
                t.field("preshared_key_file"),
                "found both preshared_key and preshared_key_file; expected at most one of them",
            );
            None
        }
        (Some(v), None) => {
            let field = t.field("preshared_key");
            document::string(report, &field, v, KEY_EXPECTED).and_then(|text| {
                PresharedKey::parse(text)
                    .map_err(|e| report.at(ProblemKind::Invalid, v.span(), &field, e.to_string()))
                    .ok()
            })
        }
        (None, Some(v)) => {
            let field = t.field("preshared_key_file");
            document::string(report, &field, v, "a string: the path of the key file")
                .and_then(|path| read_key_file(path, base_dir, v.span(), &field, report, PresharedKey::parse))
        }
        (None, None) => None,
    };

    let mut allowed_ips = Vec::new();
    match t.get("allowed_ips") {
        None => t.missing(report, "allowed_ips", "the peer's tunnel addresses, e.g. [\"10.100.0.2/32\"]"),
        Some(v) => {
            let field = t.field("allowed_ips");
            allowed_ips = document::string_list(report, &field, v, NETWORK_EXPECTED, values::network);
            if v.get_ref().as_array().is_some_and(|a| a.is_empty()) {
                report.at(
                    ProblemKind::Missing,
                    v.span(),
                    &field,
                    "found an empty list, expected at least one network (a peer without one can \
                     send nothing)",
                );
            }
        }
    }

    let endpoint = t.get("endpoint").and_then(|v| {
        let field = t.field("endpoint");
        let text = document::string(report, &field, v, "a string: IP:port")?;
        values::endpoint(text).map_err(|e| report.at(ProblemKind::Invalid, v.span(), &field, e)).ok()
    });
    let persistent_keepalive = t
        .integer(
            report,
            "persistent_keepalive",
            1..=65535,
            "seconds between keepalives, 1–65535 (leave the field out for none)",
        )
        .map(|n| n as u16);
    let reach = network_list(t, "reach", report);

    t.finish(report);
    PeerDraft {
        line: t.line(),
        name,
        name_span,
        public_key,
        preshared_key,
        allowed_ips,
        endpoint,
        persistent_keepalive,
        reach,
    }
}

fn network_list(t: &Table, key: &str, report: &mut Report) -> Vec<Item<IpNetwork>> {
    match t.get(key) {
        None => Vec::new(),
        Some(v) => {
            let field = t.field(key);
            let items = document::string_list(report, &field, v, NETWORK_EXPECTED, values::network);
            if key == "reach" {
                for item in &items {
                    if let Some(warning) = values::link_local_reach_warning(&item.value) {
                        report.warn_at(item.span.clone(), format!("{field}[{}]", item.index), warning);
                    }
                }
            }
            items
        }
    }
}

fn read_nat(t: &Table, report: &mut Report) -> NatDraft {
    let masquerade =
        t.get("masquerade").and_then(|v| document::boolean(report, &t.field("masquerade"), v)).unwrap_or(true);
    let egress = t
        .get("egress")
        .and_then(|v| {
            let field = t.field("egress");
            let text = document::string(report, &field, v, "a string: \"auto\" or an interface name")?;
            if text == "auto" {
                return Some(Egress::Auto);
            }
            match values::interface_name(text) {
                Ok(()) => Some(Egress::Interface(text.to_string())),
                Err(e) => {
                    report.at(ProblemKind::Invalid, v.span(), &field, format!("{e}, or \"auto\""));
                    None
                }
            }
        })
        .unwrap_or(Egress::Auto);
    let reach = network_list(t, "reach", report);
    t.finish(report);
    NatDraft { masquerade, egress, reach }
}

fn read_health(t: &Table, report: &mut Report) -> HealthDraft {
    let listen = match t.get("listen") {
        None => Some(DEFAULT_HEALTH_LISTEN.parse().expect("default health address")),
        Some(v) => {
            let field = t.field("listen");
            document::string(report, &field, v, "a string: IP:port").and_then(|text| {
                values::socket_addr(text, "the health listen address")
                    .map_err(|e| report.at(ProblemKind::Invalid, v.span(), &field, e))
                    .ok()
            })
        }
    };
    let drain_seconds = t
        .integer(
            report,
            "drain_seconds",
            0..=MAX_DRAIN_SECONDS as i128,
            "seconds, 0–3600 (the NLB's longest deregistration delay)",
        )
        .map_or(DEFAULT_DRAIN_SECONDS, |n| n as u64);
    t.finish(report);
    HealthDraft { listen, drain_seconds }
}

fn read_selftest(t: &Table, report: &mut Report) -> SelfTestDraft {
    let interval_seconds = t
        .integer(report, "interval_seconds", 1..=MAX_SELFTEST_INTERVAL as i128, "seconds, 1–86400")
        .map_or(DEFAULT_SELFTEST_INTERVAL, |n| n as u64);
    let probes = match t.get("probes") {
        None => Vec::new(),
        Some(v) => document::string_list(report, &t.field("probes"), v, "TCP targets like 10.0.1.5:443", |s| {
            values::socket_addr(s, "a TCP target")
        })
        .into_iter()
        .map(|item| item.value)
        .collect(),
    };
    let address = t.get("address").and_then(|v| {
        let field = t.field("address");
        let text = document::string(report, &field, v, "a string: an IP address like 10.100.0.254")?;
        match text.trim().parse::<IpAddr>() {
            Ok(ip) => Some((ip, v.span())),
            Err(_) => {
                report.at(
                    ProblemKind::Invalid,
                    v.span(),
                    &field,
                    format!("found {}, expected one IP address (no prefix) like 10.100.0.254", values::shown(text)),
                );
                None
            }
        }
    });
    t.finish(report);
    SelfTestDraft { line: t.line(), interval_seconds, probes, address }
}

/// A string field checked by `check`; `None` when absent or wrong (the problem is reported).
fn checked_string(
    t: &Table,
    key: &str,
    expected: &str,
    report: &mut Report,
    check: impl Fn(&str) -> Result<(), String>,
) -> Option<String> {
    let v = t.get(key)?;
    let field = t.field(key);
    let text = document::string(report, &field, v, expected)?;
    check(text).map_err(|e| report.at(ProblemKind::Invalid, v.span(), &field, e)).ok()?;
    Some(text.to_string())
}

fn read_metrics(t: &Table, report: &mut Report) -> MetricsDraft {
    let listen = t.get("listen").and_then(|v| {
        let field = t.field("listen");
        let text = document::string(report, &field, v, "a string: IP:port (9586 is the exporter's usual port)")?;
        values::socket_addr(text, "the metrics listen address")
            .map_err(|e| report.at(ProblemKind::Invalid, v.span(), &field, e))
            .ok()
            .map(|a| (a, v.span()))
    });
    t.finish(report);
    MetricsDraft { listen }
}

fn read_control(t: &Table, report: &mut Report) -> ControlDraft {
    let socket = checked_string(t, "socket", "a string: the socket's path", report, values::socket_path);
    t.finish(report);
    ControlDraft { socket: socket.map(PathBuf::from) }
}

fn read_source(t: &Table, report: &mut Report) -> SourceDraft {
    let ssm_path =
        checked_string(t, "ssm_path", "a string: an SSM parameter path like /bastion/prod", report, values::ssm_path);
    let refresh_seconds = t
        .integer(
            report,
            "refresh_seconds",
            MIN_REFRESH_SECONDS as i128..=MAX_REFRESH_SECONDS as i128,
            "seconds, 10–86400 (every bastion of a fleet polls SSM this often)",
        )
        .map_or(DEFAULT_REFRESH_SECONDS, |n| n as u64);
    t.finish(report);
    SourceDraft { ssm_path: ssm_path.map(|p| p.trim_end_matches('/').to_string()), refresh_seconds }
}

fn read_aws(t: &Table, report: &mut Report) -> AwsDraft {
    let region = checked_string(t, "region", "a string: a region like eu-west-1", report, values::region);
    let endpoint_url = checked_string(
        t,
        "endpoint_url",
        "a string: a URL like https://ssm.eu-west-1.amazonaws.com",
        report,
        values::endpoint_url,
    );
    t.finish(report);
    AwsDraft { region, endpoint_url: endpoint_url.map(|u| u.trim_end_matches('/').to_string()) }
}

fn read_log(t: &Table, report: &mut Report) -> LogDraft {
    let format = checked_string(t, "format", "a string: \"text\" or \"json\"", report, |f| match f {
        "text" | "json" => Ok(()),
        other => Err(format!("{other:?}: expected \"text\" or \"json\"")),
    });
    let cloudwatch_group = checked_string(
        t,
        "cloudwatch_group",
        "a string: the CloudWatch Logs group's name (the stack creates it)",
        report,
        values::log_group_name,
    );
    t.finish(report);
    LogDraft { json: format.as_deref() == Some("json"), cloudwatch_group }
}

fn read_siblings(t: &Table, report: &mut Report) -> SiblingsDraft {
    let target_group_arn = checked_string(
        t,
        "target_group_arn",
        "a string: the target group's ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)",
        report,
        values::target_group_arn,
    );
    let poll_seconds = t
        .integer(report, "poll_seconds", 2..=60, "seconds, 2–60 (one DescribeTargetHealth call per bastion this often)")
        .map_or(DEFAULT_SIBLINGS_POLL_SECONDS, |n| n as u64);
    let mut flag = |name: &str, default: bool| {
        t.get(name).and_then(|v| document::boolean(report, &t.field(name), v)).unwrap_or(default)
    };
    let mark_unhealthy = flag("mark_unhealthy", true);
    let take_over_addresses = flag("take_over_addresses", false);
    let register_self = flag("register_self", false);
    let options = ["poll_seconds", "mark_unhealthy", "take_over_addresses", "register_self"];
    if target_group_arn.is_none() && options.iter().any(|name| t.get(name).is_some()) {
        report.at_line(
            ProblemKind::Missing,
            t.line(),
            "siblings.target_group_arn",
            "missing; [siblings] acts on the target group it names",
        );
    }
    t.finish(report);
    SiblingsDraft { target_group_arn, poll_seconds, mark_unhealthy, take_over_addresses, register_self }
}
