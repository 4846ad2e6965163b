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
use crate::config::{ConfigError, ProblemKind};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use super::nat_plan::nat_from_hooks;
pub use super::note::Note;
use super::toml_out::write_toml;
use super::wg_file::{read, WgFile};

/// The largest wg-quick file read; real ones are a few KiB.
const FILE_LIMIT: u64 = 4 << 20;

/// The result of a conversion: the TOML text, and notes for the operator about what our schema
/// replaces or does not carry (also written as comments at the top of the TOML).
pub struct Conversion {
    pub toml: String,
    pub notes: Vec<Note>,
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
