//! Converts wg-quick files (`[Interface]`/`[Peer]`) into our TOML schema, and reports to the
//! operator every line our schema replaces or does not carry — nothing is dropped silently.
//!
//! The file is read the way wg-quick and wg(8) read it: `#` starts a comment anywhere on a line,
//! keys and section names are case-insensitive, `Address`/`AllowedIPs`/`DNS` take comma lists
//! and may repeat. Every key and peer value our schema has is carried over. `PostUp`/`PostDown`
//! iptables rules of the usual NAT setup (FORWARD ACCEPT from the tunnel, nat POSTROUTING
//! MASQUERADE) become `[nat]`; any other command is reported, not carried. The private key is
//! written inline, as in the wg-quick file it came from (the output is the operator's own
//! config, usually headed for EC2 user-data, which carries the key inline too); the notes never
//! contain a key.

use crate::config::document::Report;
use crate::config::values;
use crate::config::{ConfigError, InterfaceAddress, ProblemKind};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use ip_network::IpNetwork;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The largest wg-quick file read; real ones are a few KiB.
const FILE_LIMIT: u64 = 4 << 20;

/// The result of a conversion: the TOML text, and notes for the operator about what our schema
/// replaces or does not carry (also written as comments at the top of the TOML).
pub struct Conversion {
    pub toml: String,
    pub notes: Vec<Note>,
}

/// One remark about the input: its line (when it is about one) and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

pub fn convert_file(path: &Path) -> Result<Conversion, ConfigError> {
    let origin = path.display().to_string();
    let text = crate::config::read_bounded(path, FILE_LIMIT).map_err(|e| ConfigError {
        origin: origin.clone(),
        problems: vec![crate::config::ConfigProblem {
            kind: ProblemKind::Unreadable,
            line: None,
            field: "file".into(),
            message: format!("cannot read: {e}"),
        }],
        parts: Vec::new(),
    })?;
    convert(&text, &origin, path.file_name().and_then(|n| n.to_str()))
}

/// Converts wg-quick text. `file_name` (e.g. `wg0.conf`) gives the interface its name, as
/// wg-quick does.
pub fn convert(text: &str, origin: &str, file_name: Option<&str>) -> Result<Conversion, ConfigError> {
    let mut report = Report::new(text);
    let mut notes = Vec::new();
    let name = interface_name(file_name, &mut notes);
    let file = read(text, &name, &mut report, &mut notes);
    let (Some(file), true) = (file, report.is_clean()) else {
        return Err(ConfigError { origin: origin.into(), problems: report.finish(), parts: Vec::new() });
    };
    let nat = nat_from_hooks(&file, &name, &mut notes);
    describe_shape(&file, &mut notes);
    let peer_names = peer_names(&file, &mut notes);
    let body = write_toml(&file, &name, &peer_names, &nat);

    // The output must stand on its own: whatever check-config would say about it, say now.
    if let Err(e) = crate::config::parse(&body, "converted", None) {
        for p in e.problems {
            notes.push(Note {
                line: None,
                message: format!("the converted file does not pass check-config yet: {}: {}", p.field, p.message),
            });
        }
    }
    notes.sort_by_key(|n| n.line.unwrap_or(usize::MAX));
    for note in &mut notes {
        note.message = comment_safe(&crate::keys::redact_key_like(&note.message));
    }

    let mut toml = format!(
        "# Converted from {} by `bastion convert`.\n",
        comment_safe(&crate::keys::redact_key_like(file_name.unwrap_or(origin)))
    );
    if !notes.is_empty() {
        toml.push_str("# Notes (also printed on stderr):\n");
        for note in &notes {
            let _ = writeln!(toml, "#   {note}");
        }
    }
    toml.push('\n');
    toml.push_str(&body);
    Ok(Conversion { toml, notes })
}

/// TOML comments may not hold control characters (other than tab): a stray byte copied from
/// the input into a note must not make the output unparsable, nor reach a terminal raw.
fn comment_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\t' { '\u{fffd}' } else { c }).collect()
}

/// What the file says, with the lines things came from.
#[derive(Default)]
struct WgFile {
    interface_line: Option<usize>,
    /// Whether a PrivateKey line was seen (a bad one is reported once, not also as missing).
    private_key_given: bool,
    private_key: Option<PrivateKey>,
    /// From `PostUp = wg set %i private-key FILE`.
    private_key_file: Option<String>,
    addresses: Vec<InterfaceAddress>,
    listen_port: Option<u16>,
    mtu: Option<u16>,
    dns: Vec<usize>,
    hooks: Vec<Hook>,
    peers: Vec<WgPeer>,
}

struct Hook {
    line: usize,
    /// `PreUp`, `PostUp`, `PreDown` or `PostDown`.
    kind: &'static str,
    command: String,
}

#[derive(Default)]
struct WgPeer {
    line: usize,
    name: Option<String>,
    public_key_given: bool,
    public_key: Option<PublicKey>,
    preshared_key: Option<PresharedKey>,
    allowed_ips: Vec<IpNetwork>,
    endpoint: Option<SocketAddr>,
    persistent_keepalive: Option<u16>,
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    None,
    Interface,
    Peer,
}

const INTERFACE_KEYS: &[&str] = &[
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
const PEER_KEYS: &[&str] = &["PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive"];

fn read(text: &str, name: &str, report: &mut Report, notes: &mut Vec<Note>) -> Option<WgFile> {
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
fn name_comment(raw: &str) -> Option<String> {
    let rest = raw.trim().strip_prefix('#')?.trim_start_matches('#').trim();
    let (key, value) = rest.split_once('=')?;
    if !key.trim().eq_ignore_ascii_case("name") {
        return None;
    }
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

fn integer<T: std::str::FromStr>(value: &str, expected: &str, fail: &mut impl FnMut(String)) -> Option<T> {
    match value.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            fail(format!("found {}, expected {expected}", values::shown(value)));
            None
        }
    }
}

/// Comma (and space) separated list items, as wg-quick splits them.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty())
}

fn interface_key(
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

fn peer_key(
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

/// wg-quick names the interface after the file (`wg0.conf` → `wg0`).
fn interface_name(file_name: Option<&str>, notes: &mut Vec<Note>) -> String {
    let stem = file_name.and_then(|n| n.strip_suffix(".conf"));
    match stem {
        Some(stem)
            if !stem.is_empty()
                && stem.len() <= 15
                && stem.chars().all(|c| c.is_ascii_alphanumeric() || "_=+.-".contains(c))
                && values::interface_name(stem).is_ok() =>
        {
            stem.to_string()
        }
        _ => {
            if let Some(name) = file_name {
                notes.push(Note {
                    line: None,
                    message: format!(
                        "the file name {} is not INTERFACE.conf as wg-quick wants it: name = \"wg0\" (the default)",
                        values::shown(name)
                    ),
                });
            }
            crate::config::schema::DEFAULT_INTERFACE_NAME.to_string()
        }
    }
}

/// What the hooks amount to in our `[nat]` section.
struct NatPlan {
    masquerade: bool,
    egress: Option<String>,
    reach: Vec<IpNetwork>,
}

fn nat_from_hooks(file: &WgFile, name: &str, notes: &mut Vec<Note>) -> NatPlan {
    let mut plan = NatPlan { masquerade: false, egress: None, reach: Vec::new() };
    let mut note = |line: usize, message: String| notes.push(Note { line: Some(line), message });
    for hook in &file.hooks {
        let shown = format!("`{}`", crate::keys::redact_key_like(&hook.command));
        let said = format!("{} {shown}", hook.kind);
        let undo = matches!(hook.kind, "PreDown" | "PostDown");
        match recognise(&hook.command, name) {
            Some(Rule::Forward { add: true, v6, destination }) if !undo => {
                let net = destination.unwrap_or_else(|| {
                    let any: IpNetwork = if v6 { "::/0" } else { "0.0.0.0/0" }.parse().expect("literal network");
                    any
                });
                if !plan.reach.contains(&net) {
                    plan.reach.push(net);
                }
                let scope = if destination.is_some() {
                    format!("lets peers reach {net}")
                } else {
                    format!("lets peers reach every IPv{} destination", if v6 { 6 } else { 4 })
                };
                note(
                    hook.line,
                    format!(
                        "{said} {scope}: replaced by [nat] reach = \"{net}\" (the bastion's own forward chain){}",
                        if destination.is_none() { "; narrow it to your private subnets" } else { "" }
                    ),
                );
            }
            Some(Rule::ForwardReplies { add: true }) if !undo => note(
                hook.line,
                format!("{said} lets traffic back to the peers: replaced by the bastion's forward chain, which admits replies"),
            ),
            Some(Rule::Masquerade { add: true, egress }) if !undo => {
                if plan.masquerade && plan.egress != egress {
                    note(
                        hook.line,
                        format!("{said} masquerades on another interface too: not carried, [nat] has one egress"),
                    );
                    continue;
                }
                plan.masquerade = true;
                plan.egress = egress.clone();
                let egress = match &egress {
                    Some(e) => format!("egress = \"{e}\" (from -o; \"auto\" follows the default route)"),
                    None => "egress = \"auto\"".to_string(),
                };
                note(hook.line, format!("{said}: replaced by [nat] masquerade = true, {egress}"));
            }
            Some(Rule::Forwarding) => note(hook.line, format!("{said}: not needed, the bastion turns forwarding on itself")),
            Some(Rule::KeyFile(path)) => note(
                hook.line,
                format!("{said}: carried as private_key_file = \"{path}\""),
            ),
            Some(rule) if undo && !rule.adds() => note(
                hook.line,
                format!("{said}: not needed, the bastion removes its own rules when it stops"),
            ),
            _ => note(hook.line, format!("{said} not carried: not a rule the bastion knows how to replace")),
        }
    }
    if !plan.masquerade {
        notes.push(Note {
            line: None,
            message: "no MASQUERADE rule in PostUp: [nat] masquerade = false, so tunnel addresses leave \
                      unchanged and the VPC needs routes back to them"
                .into(),
        });
    }
    if plan.reach.is_empty() {
        notes.push(Note {
            line: None,
            message: "no FORWARD rule from the tunnel in PostUp: [nat] reach is empty, so peers reach \
                      nothing until you list their destinations there"
                .into(),
        });
    }
    plan
}

/// An iptables rule (or other hook command) our `[nat]` section replaces.
#[derive(Debug, PartialEq)]
enum Rule {
    /// `-A FORWARD -i TUN [-d NET] -j ACCEPT`
    Forward { add: bool, v6: bool, destination: Option<IpNetwork> },
    /// `-A FORWARD -o TUN [-m conntrack --ctstate …] -j ACCEPT`
    ForwardReplies { add: bool },
    /// `-t nat -A POSTROUTING [-o IF] [-s NET] -j MASQUERADE`
    Masquerade { add: bool, egress: Option<String> },
    /// `sysctl -w net.ipv4.ip_forward=1` and the like.
    Forwarding,
    /// `wg set %i private-key FILE`
    KeyFile(String),
}

impl Rule {
    fn adds(&self) -> bool {
        match self {
            Rule::Forward { add, .. } | Rule::ForwardReplies { add } | Rule::Masquerade { add, .. } => *add,
            Rule::Forwarding | Rule::KeyFile(_) => true,
        }
    }
}

fn recognise(command: &str, name: &str) -> Option<Rule> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let program = words.first()?.rsplit('/').next()?;
    let is_tunnel = |w: &str| w == "%i" || w == name;
    match program {
        "sysctl" => {
            let setting = words.iter().skip(1).find(|w| !w.starts_with('-'))?.replace('/', ".");
            let forwarding = matches!(
                setting.as_str(),
                "net.ipv4.ip_forward=1" | "net.ipv4.conf.all.forwarding=1" | "net.ipv6.conf.all.forwarding=1"
            );
            forwarding.then_some(Rule::Forwarding)
        }
        "echo"
            if words.len() == 4
                && words[1] == "1"
                && words[2] == ">"
                && matches!(words[3], "/proc/sys/net/ipv4/ip_forward" | "/proc/sys/net/ipv6/conf/all/forwarding") =>
        {
            Some(Rule::Forwarding)
        }
        "wg" if words.len() == 5 && words[1] == "set" && is_tunnel(words[2]) && words[3] == "private-key" => {
            Some(Rule::KeyFile(words[4].to_string()))
        }
        "iptables" | "ip6tables" | "iptables-legacy" | "iptables-nft" | "ip6tables-legacy" | "ip6tables-nft" => {
            iptables_rule(program.starts_with("ip6"), &words[1..], &is_tunnel)
        }
        _ => None,
    }
}

fn iptables_rule(v6: bool, args: &[&str], is_tunnel: &dyn Fn(&str) -> bool) -> Option<Rule> {
    let (mut table, mut add, mut chain) = ("filter", None, None);
    let (mut input, mut output, mut destination, mut jump, mut state) = (None, None, None, None, false);
    let mut source = false;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i];
        let value = args.get(i + 1).copied();
        match arg {
            "-w" | "--wait" => {
                // An optional number of seconds.
                i += if value.is_some_and(|v| v.parse::<u32>().is_ok()) { 2 } else { 1 };
                continue;
            }
            "-t" | "--table" => table = value?,
            "-A" | "--append" | "-I" | "--insert" | "-D" | "--delete" => {
                add = Some(!matches!(arg, "-D" | "--delete"));
                chain = Some(value?);
                // `-I CHAIN N`: an optional position.
                if args.get(i + 2).is_some_and(|v| v.parse::<u32>().is_ok()) {
                    i += 1;
                }
            }
            "-i" | "--in-interface" => input = Some(value?),
            "-o" | "--out-interface" => output = Some(value?),
            "-d" | "--destination" => destination = Some(value?),
            "-s" | "--source" => {
                value?;
                source = true;
            }
            "-j" | "--jump" => jump = Some(value?),
            "-m" if matches!(value, Some("state" | "conntrack")) => {}
            "--state" | "--ctstate"
                if value.is_some_and(|v| v.split(',').all(|s| s == "RELATED" || s == "ESTABLISHED")) =>
            {
                state = true;
            }
            _ => return None,
        }
        i += 2;
    }
    let add = add?;
    match (table, chain?, jump?) {
        ("filter", "FORWARD", "ACCEPT") if input.is_some_and(is_tunnel) && !state && !source => {
            let destination = match destination {
                None => None,
                Some(d) => Some(values::network_truncating(d).ok()?.0),
            };
            if output.is_some_and(is_tunnel) {
                return None;
            }
            Some(Rule::Forward { add, v6, destination })
        }
        ("filter", "FORWARD", "ACCEPT")
            if output.is_some_and(is_tunnel) && input.is_none() && destination.is_none() && !source =>
        {
            Some(Rule::ForwardReplies { add })
        }
        ("nat", "POSTROUTING", "MASQUERADE") if !output.is_some_and(is_tunnel) && input.is_none() && !state => {
            Some(Rule::Masquerade { add, egress: output.map(str::to_string) })
        }
        _ => None,
    }
}

/// One note when the file is a client's view of the tunnel rather than a server's.
fn describe_shape(file: &WgFile, notes: &mut Vec<Note>) {
    let with_endpoint = file.peers.iter().filter(|p| p.endpoint.is_some()).count();
    if file.listen_port.is_none() && (with_endpoint > 0 || !file.dns.is_empty()) {
        notes.push(Note {
            line: file.interface_line,
            message: "this looks like a client's file (no ListenPort; a DNS line or a peer with an Endpoint): a \
                      bastion is the server end, so use the server's file for a bastion; converted as written"
                .into(),
        });
    } else if file.listen_port.is_none() {
        notes.push(Note {
            line: file.interface_line,
            message: "no ListenPort (wg picks a random port): the bastion listens on 51820, the default".into(),
        });
    }
    let unnamed = file.peers.iter().filter(|p| p.name.is_none()).count();
    if unnamed > 0 {
        notes.push(Note {
            line: None,
            message: format!(
                "{unnamed} peer(s) named peer-N after their position: wg-quick has no names (a `# Name = alice` \
                 line in a [Peer] section names it); edit name = to tell them apart in logs"
            ),
        });
    }
}

/// Each peer's name: its `# Name =` comment or `peer-N`, made unique (our schema requires it,
/// wg-quick comments do not) by a `-2`, `-3`… suffix, with a note.
fn peer_names(file: &WgFile, notes: &mut Vec<Note>) -> Vec<String> {
    let mut used: HashSet<String> = HashSet::new();
    let mut next_suffix: HashMap<String, usize> = HashMap::new();
    let mut names = Vec::with_capacity(file.peers.len());
    for (i, peer) in file.peers.iter().enumerate() {
        let base = peer.name.clone().unwrap_or_else(|| format!("peer-{}", i + 1));
        let mut name = base.clone();
        while used.contains(&name) {
            let n = next_suffix.entry(base.clone()).or_insert(2);
            name = format!("{base}-{n}");
            *n += 1;
        }
        if name != base {
            notes.push(Note {
                line: Some(peer.line),
                message: format!("another peer is already named {base:?}: this one is named {name:?}"),
            });
        }
        used.insert(name.clone());
        names.push(name);
    }
    names
}

fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn quoted_list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", items.join(", "))
}

fn write_toml(file: &WgFile, name: &str, peer_names: &[String], nat: &NatPlan) -> String {
    let mut out = String::new();
    out.push_str("[interface]\n");
    if let Some(key) = &file.private_key {
        let _ = writeln!(out, "private_key = {}", quote(&key.expose_base64()));
    } else if let Some(path) = &file.private_key_file {
        let _ = writeln!(out, "private_key_file = {}", quote(path));
    }
    let _ = writeln!(out, "address = {}", quoted_list(&file.addresses));
    let _ = writeln!(out, "listen_port = {}", file.listen_port.unwrap_or(crate::config::schema::DEFAULT_LISTEN_PORT));
    if let Some(mtu) = file.mtu {
        let _ = writeln!(out, "mtu = {mtu}");
    }
    let _ = writeln!(out, "name = {}", quote(name));

    for (peer, peer_name) in file.peers.iter().zip(peer_names) {
        out.push_str("\n[[peer]]\n");
        let _ = writeln!(out, "name = {}", quote(peer_name));
        if let Some(key) = &peer.public_key {
            let _ = writeln!(out, "public_key = {}", quote(&key.to_base64()));
        }
        if let Some(psk) = &peer.preshared_key {
            let _ = writeln!(out, "preshared_key = {}", quote(&psk.expose_base64()));
        }
        let _ = writeln!(out, "allowed_ips = {}", quoted_list(&peer.allowed_ips));
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(out, "endpoint = {}", quote(&endpoint.to_string()));
        }
        if let Some(keepalive) = peer.persistent_keepalive {
            let _ = writeln!(out, "persistent_keepalive = {keepalive}");
        }
    }

    out.push_str("\n[nat]\n");
    let _ = writeln!(out, "masquerade = {}", nat.masquerade);
    let _ = writeln!(out, "egress = {}", quote(nat.egress.as_deref().unwrap_or("auto")));
    let _ = writeln!(out, "reach = {}", quoted_list(&nat.reach));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const PEER: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const PEER2: &str = "CLndk2VC55qYMfcevou7V13nrfd+WBrBBWozMazUKH8=";

    fn server() -> String {
        format!(
            "[Interface]\nAddress = 10.100.0.1/24\nListenPort = 51820\nPrivateKey = {KEY}\n\
             PostUp = iptables -A FORWARD -i wg0 -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE\n\
             PostDown = iptables -D FORWARD -i wg0 -j ACCEPT; iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE\n\n\
             [Peer]\nPublicKey = {PEER}\nAllowedIPs = 10.100.0.2/32\n"
        )
    }

    fn notes_text(c: &Conversion) -> String {
        c.notes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn the_article_server_converts_to_a_valid_config() {
        let c = convert(&server(), "wg0.conf", Some("wg0.conf")).unwrap();
        let config = crate::config::parse(&c.toml, "out", None).unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        assert_eq!(config.interface.private_key().unwrap().expose_base64(), KEY);
        assert_eq!(config.interface.addresses[0].to_string(), "10.100.0.1/24");
        assert_eq!(config.interface.listen_port, 51820);
        assert_eq!(config.interface.name, "wg0");
        assert_eq!(config.peers[0].public_key.to_base64(), PEER);
        assert_eq!(config.peers[0].allowed_ips[0].to_string(), "10.100.0.2/32");
        assert!(config.nat.masquerade);
        assert_eq!(config.nat.egress, crate::config::Egress::Interface("eth0".into()));
        assert_eq!(config.nat.reach[0].to_string(), "0.0.0.0/0");
        let notes = notes_text(&c);
        assert!(
            notes.contains("line 5: PostUp `iptables -A FORWARD -i wg0 -j ACCEPT` lets peers reach every IPv4"),
            "{notes}"
        );
        assert!(notes.contains("line 5: PostUp `iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE`: replaced by [nat] masquerade = true, egress = \"eth0\""), "{notes}");
        assert_eq!(notes.matches("line 6: PostDown").count(), 2, "{notes}");
        assert!(!notes.contains(KEY));
        assert!(!notes.contains("does not pass check-config"), "{notes}");
    }

    #[test]
    fn keys_are_case_insensitive_and_lists_repeat() {
        let text = format!(
            "[interface]\nprivatekey={KEY}\naddress = 10.100.0.1/24, fd00::1/64\nADDRESS = 10.200.0.1/24 # second\n\
             listenport = 443\nmtu = 1380\n[PEER]\n# Name = alice laptop\npublickey = {PEER}\n\
             allowedips = 10.100.0.2/32\nAllowedIPs = fd00::2/128, 10.100.0.3/32\npersistentkeepalive = 25\n\
             presharedkey = {PEER2}\nendpoint = [2001:db8::1]:51820\n"
        );
        let c = convert(&text, "x", Some("tun0.conf")).unwrap();
        let config = crate::config::parse(&c.toml, "out", None).unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        assert_eq!(config.interface.addresses.len(), 3);
        assert_eq!((config.interface.listen_port, config.interface.mtu), (443, 1380));
        assert_eq!(config.interface.name, "tun0");
        let p = &config.peers[0];
        assert_eq!(p.name, "alice laptop");
        assert_eq!(p.allowed_ips.len(), 3);
        assert_eq!(p.persistent_keepalive, Some(25));
        assert_eq!(p.preshared_key.as_ref().unwrap().expose_base64(), PEER2);
        assert_eq!(p.endpoint.unwrap().to_string(), "[2001:db8::1]:51820");
        assert!(!notes_text(&c).contains(PEER2));
    }

    #[test]
    fn a_name_comment_above_a_peer_header_names_that_peer() {
        let text = format!(
            "[Interface]\nPrivateKey = {KEY}\nAddress = 10.100.0.1/24\nListenPort = 51820\n\n\
             # Name = alice\n[Peer]\nPublicKey = {PEER}\nAllowedIPs = 10.100.0.2/32\n\n\
             #Name=bob\n[Peer]\nPublicKey = {PEER2}\nAllowedIPs = 10.100.0.3/32\n"
        );
        let c = convert(&text, "x", Some("wg0.conf")).unwrap();
        let config = crate::config::parse(&c.toml, "out", None).unwrap();
        let names: Vec<&str> = config.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
    }

    #[test]
    fn unrecognised_hooks_and_client_settings_are_reported() {
        let text = format!(
            "[Interface]\nPrivateKey = {KEY}\nAddress = 10.100.0.1/24\nListenPort = 51820\nDNS = 10.0.0.2\n\
             Table = off\nSaveConfig = true\nFwMark = 0x10\n\
             PostUp = iptables -A INPUT -p udp --dport 51820 -j ACCEPT && sysctl -w net.ipv4.ip_forward=1\n\
             PreUp = logger up\n[Peer]\nPublicKey = {PEER}\nAllowedIPs = 10.100.0.2/24\nEndpoint = vpn.example.com:51820\n"
        );
        let c = convert(&text, "x", Some("wg0.conf")).unwrap();
        let notes = notes_text(&c);
        for expected in [
            "line 5: DNS = 10.0.0.2 not carried",
            "line 6: Table = off not carried",
            "line 7: SaveConfig = true not carried",
            "line 8: FwMark = 0x10 not carried",
            "line 9: PostUp `iptables -A INPUT -p udp --dport 51820 -j ACCEPT` not carried",
            "line 9: PostUp `sysctl -w net.ipv4.ip_forward=1`: not needed",
            "line 10: PreUp `logger up` not carried",
            "line 13: AllowedIPs 10.100.0.2/24 has host bits set: carried as 10.100.0.0/24",
            "line 14: Endpoint = vpn.example.com:51820 not carried",
            "no MASQUERADE rule",
            "no FORWARD rule",
        ] {
            assert!(notes.contains(expected), "missing {expected:?} in:\n{notes}");
        }
        // The same notes head the TOML as comments.
        assert!(c.toml.contains("#   line 5: DNS = 10.0.0.2 not carried"), "{}", c.toml);
    }

    #[test]
    fn forward_rules_with_a_destination_become_that_reach() {
        let text = server().replace(
            "iptables -A FORWARD -i wg0 -j ACCEPT;",
            "iptables -A FORWARD -i %i -d 10.0.1.0/24 -j ACCEPT; ip6tables -I FORWARD 1 -i wg0 -j ACCEPT; \
             iptables -A FORWARD -o %i -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT;",
        );
        let c = convert(&text, "x", Some("wg0.conf")).unwrap();
        let config = crate::config::parse(&c.toml, "out", None).unwrap_or_else(|e| panic!("{e}"));
        let reach: Vec<String> = config.nat.reach.iter().map(|n| n.to_string()).collect();
        assert_eq!(reach, ["10.0.1.0/24", "::/0"]);
        assert!(notes_text(&c).contains("lets traffic back to the peers"), "{}", notes_text(&c));
    }

    #[test]
    fn a_key_file_hook_becomes_private_key_file() {
        let text = server()
            .replace(&format!("PrivateKey = {KEY}\n"), "PostUp = wg set %i private-key /etc/wireguard/wg0.key\n");
        let c = convert(&text, "x", Some("wg0.conf")).unwrap();
        assert!(c.toml.contains("private_key_file = \"/etc/wireguard/wg0.key\""), "{}", c.toml);
    }

    #[test]
    fn garbage_is_rejected_with_lines_and_never_echoes_keys() {
        let text = format!(
            "Address = 1.2.3.4/24\n[Interface]\nPrivateKey = {}\nAddress = 10.100.0.300/24\nBogus = 1\nno equals sign\n\
             [Server]\n[Peer]\nAllowedIPs = nope\n",
            &KEY[..43]
        );
        let e = convert(&text, "bad.conf", Some("bad.conf")).err().expect("garbage must be refused");
        let got: Vec<(Option<usize>, &str)> = e.problems.iter().map(|p| (p.line, p.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(1), "Address"),
                (Some(3), "Interface.PrivateKey"),
                (Some(4), "Interface.Address"),
                (Some(5), "Bogus"),
                (Some(6), "file"),
                (Some(7), "file"),
                (Some(8), "Peer[0].PublicKey"),
                (Some(9), "Peer[0].AllowedIPs"),
            ]
        );
        assert!(!e.to_string().contains(&KEY[..43]));
        assert!(convert("", "x", None).is_err());
        assert!(convert("\u{0}\u{1}binary", "x", None).is_err());
    }

    #[test]
    fn a_name_comment_in_the_interface_section_names_no_peer() {
        let text = server().replace("[Interface]\n", "[Interface]\n# Name = the-bastion\n");
        let c = convert(&text, "x", Some("wg0.conf")).unwrap();
        assert!(c.toml.contains("name = \"peer-1\""), "{}", c.toml);
        assert!(!c.toml.contains("name = \"the-bastion\""), "{}", c.toml);
    }

    #[test]
    fn control_characters_in_notes_keep_the_output_valid_toml() {
        let text = server().replace("ListenPort", "DNS = 10.0.0.2\u{1}x\rTable = off\nListenPort");
        let c = convert(&text, "x", Some("wg0.conf")).unwrap();
        assert!(c.notes.iter().any(|n| n.message.contains("10.0.0.2\u{fffd}x")));
        crate::config::parse(&c.toml, "out", None).unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
    }

    #[test]
    fn duplicate_name_comments_are_made_unique() {
        let text = format!(
            "[Interface]\nPrivateKey = {KEY}\nAddress = 10.100.0.1/24\nListenPort = 51820\n\
             [Peer]\n# Name = alice\nPublicKey = {PEER}\nAllowedIPs = 10.100.0.2/32\n\
             [Peer]\n# Name = alice\nPublicKey = {PEER2}\nAllowedIPs = 10.100.0.3/32\n"
        );
        let c = convert(&text, "x", Some("wg0.conf")).unwrap();
        let config = crate::config::parse(&c.toml, "out", None).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = config.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alice", "alice-2"]);
        assert!(notes_text(&c).contains("line 9: another peer is already named \"alice\""), "{}", notes_text(&c));
    }

    #[test]
    fn repeated_single_keys_are_noted() {
        let text = server().replace("ListenPort = 51820", "ListenPort = 1000\nListenPort = 51820");
        let c = convert(&text, "x", Some("wg0.conf")).unwrap();
        assert!(notes_text(&c).contains("line 4: ListenPort is set again (first at line 3)"), "{}", notes_text(&c));
        assert!(c.toml.contains("listen_port = 51820"));
    }
}
