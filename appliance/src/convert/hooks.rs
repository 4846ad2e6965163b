//! The commands of a wg-quick file's `PostUp`/`PostDown` hooks that we recognise: the usual NAT
//! setup (FORWARD ACCEPT from the tunnel, nat POSTROUTING MASQUERADE, by iptables or
//! ip6tables) and a private key read from a file. Anything else is not ours. No I/O.

use crate::config::values;
use ip_network::IpNetwork;

/// An iptables rule (or other hook command) our `[nat]` section replaces.
#[derive(Debug, PartialEq)]
pub(super) enum Rule {
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
    pub(super) fn adds(&self) -> bool {
        match self {
            Rule::Forward { add, .. } | Rule::ForwardReplies { add } | Rule::Masquerade { add, .. } => *add,
            Rule::Forwarding | Rule::KeyFile(_) => true,
        }
    }
}

pub(super) fn recognise(command: &str, name: &str) -> Option<Rule> {
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

pub(super) fn iptables_rule(v6: bool, args: &[&str], is_tunnel: &dyn Fn(&str) -> bool) -> Option<Rule> {
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
