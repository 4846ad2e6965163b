//! Reading a wg-quick file as wg-quick and wg(8) read it: `#` starts a comment anywhere on a
//! line, keys and section names are case-insensitive, `Address`/`AllowedIPs`/`DNS` take comma
//! lists and may repeat. Every problem goes to the config's `Report` with its line; what our
//! schema does not carry becomes a `Note`. No I/O.

use crate::config::document::Report;
use crate::config::values;
use crate::config::{InterfaceAddress, ProblemKind};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use ip_network::IpNetwork;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::hooks::{recognise, Rule};
use super::note::Note;

/// What the file says, with the lines things came from.
#[derive(Default)]
pub(super) struct WgFile {
    pub(super) interface_line: Option<usize>,
    /// Whether a PrivateKey line was seen (a bad one is reported once, not also as missing).
    pub(super) private_key_given: bool,
    pub(super) private_key: Option<PrivateKey>,
    /// From `PostUp = wg set %i private-key FILE`.
    pub(super) private_key_file: Option<String>,
    pub(super) addresses: Vec<InterfaceAddress>,
    pub(super) listen_port: Option<u16>,
    pub(super) mtu: Option<u16>,
    pub(super) dns: Vec<usize>,
    pub(super) hooks: Vec<Hook>,
    pub(super) peers: Vec<WgPeer>,
}

pub(super) struct Hook {
    pub(super) line: usize,
    /// `PreUp`, `PostUp`, `PreDown` or `PostDown`.
    pub(super) kind: &'static str,
    pub(super) command: String,
}

#[derive(Default)]
pub(super) struct WgPeer {
    pub(super) line: usize,
    pub(super) name: Option<String>,
    pub(super) public_key_given: bool,
    pub(super) public_key: Option<PublicKey>,
    pub(super) preshared_key: Option<PresharedKey>,
    pub(super) allowed_ips: Vec<IpNetwork>,
    pub(super) endpoint: Option<SocketAddr>,
    pub(super) persistent_keepalive: Option<u16>,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Section {
    None,
    Interface,
    Peer,
}

pub(super) const INTERFACE_KEYS: &[&str] = &[
    "PrivateKey",
    "ListenPort",
    "FwMark",
    "Address",
    "DNS",
    "MTU",
    "Table",
    "PreUp",
    "PostUp",
    "PreDown",
    "PostDown",
    "SaveConfig",
];
pub(super) const PEER_KEYS: &[&str] = &["PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive"];

pub(super) fn read(text: &str, name: &str, report: &mut Report, notes: &mut Vec<Note>) -> Option<WgFile> {
    let mut file = WgFile::default();
    let mut section = Section::None;
    // A `# Name = x` comment waits for the key or header after it: just above a [Peer] header
    // it names that peer, inside a peer's lines it names that peer.
    let mut pending_name: Option<String> = None;
    let mut seen_once: HashMap<String, usize> = HashMap::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if let Some(name) = name_comment(raw) {
            pending_name = Some(name);
            continue;
        }
        let stripped = raw.split('#').next().unwrap_or("").trim();
        if stripped.is_empty() {
            continue;
        }
        if stripped.starts_with('[') {
            section = match stripped.to_ascii_lowercase().as_str() {
                "[interface]" => {
                    if file.interface_line.is_some() {
                        report.at_line(
                            ProblemKind::Duplicate,
                            Some(line),
                            "Interface",
                            "a second [Interface] section; expected one",
                        );
                    }
                    file.interface_line = Some(line);
                    pending_name = None;
                    Section::Interface
                }
                "[peer]" => {
                    file.peers.push(WgPeer { line, name: pending_name.take(), ..WgPeer::default() });
                    Section::Peer
                }
                _ => {
                    report.at_line(
                        ProblemKind::UnknownField,
                        Some(line),
                        "file",
                        format!("found the section {}, expected [Interface] or [Peer]", values::shown(stripped)),
                    );
                    Section::None
                }
            };
            continue;
        }
        let Some((key, value)) = stripped.split_once('=') else {
            report.at_line(
                ProblemKind::Syntax,
                Some(line),
                "file",
                "found a line without '=', expected Key = Value or a [Section]",
            );
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        // A name comment followed by a key belongs to the section it is in: a peer's, or none.
        if let Some(name) = pending_name.take() {
            if let (Section::Peer, Some(peer)) = (section, file.peers.last_mut()) {
                peer.name.get_or_insert(name);
            }
        }
        let known = match section {
            Section::Interface => INTERFACE_KEYS,
            Section::Peer => PEER_KEYS,
            Section::None => {
                report.at_line(
                    ProblemKind::Syntax,
                    Some(line),
                    key,
                    "found a key before any section, expected [Interface] first",
                );
                continue;
            }
        };
        let Some(key) = known.iter().copied().find(|k| k.eq_ignore_ascii_case(key)) else {
            let header = if section == Section::Peer { "[Peer]" } else { "[Interface]" };
            report.at_line(
                ProblemKind::UnknownField,
                Some(line),
                key,
                format!("unknown key {} in {header}; known: {}", values::shown(key), known.join(", ")),
            );
            continue;
        };
        let field = match section {
            Section::Peer => format!("Peer[{}].{key}", file.peers.len() - 1),
            _ => format!("Interface.{key}"),
        };
        if !matches!(key, "Address" | "DNS" | "AllowedIPs" | "PreUp" | "PostUp" | "PreDown" | "PostDown") {
            if let Some(first) = seen_once.get(&field) {
                notes.push(Note {
                    line: Some(line),
                    message: format!("{key} is set again (first at line {first}); the last one wins, as in wg"),
                });
            } else {
                seen_once.insert(field.clone(), line);
            }
        }
        let mut fail = |message: String| report.at_line(ProblemKind::Invalid, Some(line), field.clone(), message);
        match section {
            Section::Interface => interface_key(&mut file, key, value, line, &mut fail, notes),
            Section::Peer => {
                let peer = file.peers.last_mut().expect("a [Peer] header was seen");
                peer_key(peer, key, value, line, &mut fail, notes)
            }
            Section::None => {}
        }
    }

    if file.interface_line.is_none() {
        report.at_line(ProblemKind::Missing, None, "Interface", "missing; expected an [Interface] section");
        return None;
    }
    for hook in file.hooks.iter().filter(|h| matches!(h.kind, "PreUp" | "PostUp")) {
        if let Some(Rule::KeyFile(path)) = recognise(&hook.command, name) {
            file.private_key_file = Some(path);
        }
    }
    if !file.private_key_given && file.private_key_file.is_none() {
        report.at_line(
            ProblemKind::Missing,
            file.interface_line,
            "Interface.PrivateKey",
            "missing; expected PrivateKey = the base64 key (or PostUp = wg set %i private-key FILE)",
        );
    }
    for (i, peer) in file.peers.iter().enumerate() {
        if !peer.public_key_given {
            report.at_line(
                ProblemKind::Missing,
                Some(peer.line),
                format!("Peer[{i}].PublicKey"),
                "missing; expected the peer's public key",
            );
        }
    }
    Some(file)
}

/// `# Name = alice` (any case, any spacing): the common convention for naming wg-quick peers.
pub(super) fn name_comment(raw: &str) -> Option<String> {
    let rest = raw.trim().strip_prefix('#')?.trim_start_matches('#').trim();
    let (key, value) = rest.split_once('=')?;
    if !key.trim().eq_ignore_ascii_case("name") {
        return None;
    }
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

pub(super) fn integer<T: std::str::FromStr>(value: &str, expected: &str, fail: &mut impl FnMut(String)) -> Option<T> {
    match value.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            fail(format!("found {}, expected {expected}", values::shown(value)));
            None
        }
    }
}

/// Comma (and space) separated list items, as wg-quick splits them.
pub(super) fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty())
}

pub(super) fn interface_key(
    file: &mut WgFile,
    key: &'static str,
    value: &str,
    line: usize,
    fail: &mut impl FnMut(String),
    notes: &mut Vec<Note>,
) {
    let mut note = |message: String| notes.push(Note { line: Some(line), message });
    match key {
        "PrivateKey" => {
            file.private_key_given = true;
            match PrivateKey::parse(value) {
                Ok(k) => file.private_key = Some(k),
                Err(e) => fail(e.to_string()),
            }
        }
        "ListenPort" => match integer::<u16>(value, "a UDP port 0–65535", fail) {
            Some(0) => note("ListenPort = 0 (a random port) not carried: a bastion listens on a fixed port, 51820 unless listen_port says otherwise".into()),
            Some(port) => file.listen_port = Some(port),
            None => {}
        },
        "MTU" => file.mtu = integer(value, "an MTU", fail),
        "Address" => {
            for item in list(value) {
                let (ip, prefix) = match item.split_once('/') {
                    Some((ip, p)) => (ip, Some(p)),
                    None => (item, None),
                };
                let Ok(address) = ip.parse::<IpAddr>() else {
                    fail(format!("found {}, expected an IPv4 or IPv6 address", values::shown(item)));
                    continue;
                };
                let max = values::max_prefix(&address);
                let prefix_len = match prefix.map(|p| p.parse::<u8>()) {
                    None => {
                        note(format!("Address {address} has no prefix: carried as {address}/{max}, as ip(8) reads it"));
                        max
                    }
                    Some(Ok(p)) if p <= max => p,
                    Some(_) => {
                        fail(format!("found {}, expected a prefix length 0–{max}", values::shown(item)));
                        continue;
                    }
                };
                file.addresses.push(InterfaceAddress { address, prefix_len });
            }
        }
        "DNS" => {
            file.dns.push(line);
            note(format!(
                "DNS = {} not carried: it sets a client's resolver, and a bastion resolves nothing for its peers",
                value
            ));
        }
        "Table" => note(format!(
            "Table = {value} not carried: the bastion routes its tunnel networks itself and adds no other routes"
        )),
        "FwMark" => note(format!("FwMark = {value} not carried: the bastion does no policy routing")),
        "SaveConfig" => note(format!(
            "SaveConfig = {value} not carried: the appliance's configuration is read-only (it comes from user-data)"
        )),
        "PreUp" | "PostUp" | "PreDown" | "PostDown" => {
            for command in value.split(';').flat_map(|c| c.split("&&")).map(str::trim).filter(|c| !c.is_empty()) {
                file.hooks.push(Hook { line, kind: key, command: command.to_string() });
            }
        }
        _ => unreachable!("{key} is in INTERFACE_KEYS"),
    }
}

pub(super) fn peer_key(
    peer: &mut WgPeer,
    key: &'static str,
    value: &str,
    line: usize,
    fail: &mut impl FnMut(String),
    notes: &mut Vec<Note>,
) {
    match key {
        "PublicKey" => {
            peer.public_key_given = true;
            match PublicKey::parse(value) {
                Ok(k) => peer.public_key = Some(k),
                Err(e) => fail(e.to_string()),
            }
        }
        "PresharedKey" => match PresharedKey::parse(value) {
            Ok(k) => peer.preshared_key = Some(k),
            Err(e) => fail(e.to_string()),
        },
        "AllowedIPs" => {
            for item in list(value) {
                match values::network_truncating(item) {
                    Ok((net, truncated)) => {
                        if truncated {
                            notes.push(Note {
                                line: Some(line),
                                message: format!(
                                    "AllowedIPs {item} has host bits set: carried as {net}, the network wg uses for it"
                                ),
                            });
                        }
                        peer.allowed_ips.push(net);
                    }
                    Err(e) => fail(e),
                }
            }
        }
        "Endpoint" => match values::endpoint(value) {
            Ok(addr) => peer.endpoint = Some(addr),
            Err(e) if e.contains("host name") => notes.push(Note {
                line: Some(line),
                message: format!(
                    "Endpoint = {value} not carried: the bastion does not resolve host names (put an IP:port, or \
                     leave it out: the peer's address is learned from its packets)"
                ),
            }),
            Err(e) => fail(e),
        },
        "PersistentKeepalive" => {
            if !value.eq_ignore_ascii_case("off") {
                match integer::<u16>(value, "seconds 0–65535 or off", fail) {
                    Some(0) | None => {}
                    Some(n) => peer.persistent_keepalive = Some(n),
                }
            }
        }
        _ => unreachable!("{key} is in PEER_KEYS"),
    }
}
