//! The value formats the config shares with wg-quick files: interface addresses, networks,
//! endpoints, socket addresses, interface names — each a small parser whose error says what was
//! found and what was expected. Nothing here knows about TOML, lines or fields.

use super::InterfaceAddress;
use ip_network::IpNetwork;
use std::net::{IpAddr, SocketAddr};

/// Longest value echoed back in a message; longer ones are cut (the field and line still say
/// where it is).
const SHOWN_MAX: usize = 64;

/// Quotes a value for a message. Anything that looks like a WireGuard key is never echoed: a
/// private key pasted into the wrong field must not end up on a console.
pub fn shown(value: &str) -> String {
    if looks_like_key(value) {
        return "a WireGuard key (not shown)".into();
    }
    let mut text: String = value.chars().take(SHOWN_MAX).collect();
    if value.chars().count() > SHOWN_MAX {
        text.push('…');
    }
    format!("{:?}", text)
}

/// Whether `text` holds a run of 40 or more base64 characters: a key (44 characters), or a key
/// with a character lost or added by a bad paste.
pub fn looks_like_key(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '=')).any(|word| word.len() >= 40)
}

fn split_prefix(text: &str) -> Result<(IpAddr, Option<u8>), String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let ip: IpAddr =
        addr.trim().parse().map_err(|_| format!("found {}, expected an IPv4 or IPv6 address", shown(text)))?;
    let prefix = match prefix {
        None => None,
        Some(p) => {
            let max = max_prefix(&ip);
            match p.trim().parse::<u8>() {
                Ok(n) if n <= max => Some(n),
                _ => return Err(format!("found {}, expected a prefix length 0–{max} after the '/'", shown(text))),
            }
        }
    };
    Ok((ip, prefix))
}

pub fn max_prefix(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// A tunnel address with its network's prefix, as `address = ["10.100.0.1/24"]` writes it.
pub fn interface_address(text: &str) -> Result<InterfaceAddress, String> {
    let (address, prefix) = split_prefix(text)?;
    let Some(prefix_len) = prefix else {
        return Err(format!(
            "found {} without a prefix, expected the address with its tunnel network's prefix, \
             e.g. 10.100.0.1/24",
            shown(text)
        ));
    };
    if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
        return Err(format!(
            "found {}, expected a unicast address (not unspecified, loopback or multicast)",
            shown(text)
        ));
    }
    if let IpAddr::V4(v4) = address {
        // /31 and /32 have no network or broadcast address (RFC 3021).
        if prefix_len <= 30 {
            let host_mask = u32::MAX >> prefix_len;
            let host = u32::from(v4) & host_mask;
            if host == 0 || host == host_mask {
                let net = InterfaceAddress { address, prefix_len }.network();
                return Err(format!(
                    "found {}, which is the network or broadcast address of {net}; expected a host \
                     address in it, e.g. {}/{prefix_len}",
                    shown(text),
                    first_host(&net)
                ));
            }
        }
    }
    Ok(InterfaceAddress { address, prefix_len })
}

fn first_host(net: &IpNetwork) -> IpAddr {
    match net.network_address() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) + 1).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) + 1).into()),
    }
}

/// A network in CIDR form. Host bits must be clear: `10.0.0.1/24` is almost always a typo for
/// `10.0.0.1/32` or `10.0.0.0/24`, and silently widening it to a whole /24 would hand a peer
/// addresses the operator did not mean to give. A bare address means the single host.
pub fn network(text: &str) -> Result<IpNetwork, String> {
    match network_truncating(text)? {
        (net, false) => Ok(net),
        (net, true) => {
            let (ip, _) = split_prefix(text)?;
            Err(format!(
                "found {}, which has host bits set; expected a network: {net} (the whole network) \
                 or {ip}/{} (one host)",
                shown(text),
                max_prefix(&ip)
            ))
        }
    }
}

/// The instance's own link-local services: 169.254.0.0/16 (IPv4) and fd00:ec2::/32 (the
/// IPv6 addresses Nitro instances give them).
const INSTANCE_LINK_LOCAL: [(&str, &str, &str); 2] = [
    ("169.254.0.0/16", "169.254.169.253/32", "169.254.169.254/32"),
    ("fd00:ec2::/32", "fd00:ec2::253/128", "fd00:ec2::254/128"),
];

/// A warning for a `reach` network that covers the instance's link-local services (the Amazon
/// Time Sync Service, the instance metadata service...) beyond the VPC DNS resolver, which is
/// a target peers legitimately use. `0.0.0.0/0` covers them too. The metadata service itself is
/// never forwarded to (the NAT table drops it before any reach rule).
pub fn link_local_reach_warning(net: &IpNetwork) -> Option<String> {
    for (range, resolver, metadata) in INSTANCE_LINK_LOCAL {
        let range: IpNetwork = range.parse().expect("constant network");
        let resolver: IpNetwork = resolver.parse().expect("constant network");
        let metadata: IpNetwork = metadata.parse().expect("constant network");
        let overlaps = range.contains(net.network_address()) || net.contains(range.network_address());
        if !overlaps || *net == resolver {
            continue;
        }
        if *net == metadata {
            return Some(format!(
                "{net} is the instance metadata service: it is never forwarded to, whatever reach \
                 says (it hands out the instance role's credentials); remove it"
            ));
        }
        return Some(format!(
            "{net} covers the instance's own link-local services in {range} (such as the time \
             service), not only the VPC DNS resolver {}; the metadata service {} is always \
             dropped, the others would be reachable by peers: list only what peers need",
            resolver.network_address(),
            metadata.network_address()
        ));
    }
    None
}

#[cfg(test)]
mod link_local_tests {
    use super::*;

    fn warns(net: &str) -> bool {
        link_local_reach_warning(&net.parse().unwrap()).is_some()
    }

    #[test]
    fn reach_over_the_instance_link_local_services_is_warned_about() {
        for net in [
            "0.0.0.0/0",
            "169.254.0.0/16",
            "169.254.169.123/32",
            "169.0.0.0/8",
            "169.254.169.254/32",
            "::/0",
            "fd00::/8",
            "fd00:ec2::123/128",
        ] {
            assert!(warns(net), "{net}");
        }
        for net in
            ["169.254.169.253/32", "fd00:ec2::253/128", "10.0.0.0/8", "172.16.0.0/12", "fd00:1::/64", "2001:db8::/32"]
        {
            assert!(!warns(net), "{net}");
        }
    }
}

/// Like `network`, but clears host bits the way `wg` does, and says whether it had to.
pub fn network_truncating(text: &str) -> Result<(IpNetwork, bool), String> {
    let (ip, prefix) = split_prefix(text)?;
    let prefix = prefix.unwrap_or_else(|| max_prefix(&ip));
    let net = IpNetwork::new_truncate(ip, prefix)
        .map_err(|_| format!("found {}, expected a network like 10.0.1.0/24 or fd00::/64", shown(text)))?;
    Ok((net, net.network_address() != ip))
}

/// `IP:port` or `[IPv6]:port`, port 1–65535. `what` names the thing in the message.
pub fn socket_addr(text: &str, what: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr =
        text.trim().parse().map_err(|_| format!("found {}, expected {what} as IP:port or [IPv6]:port", shown(text)))?;
    if addr.port() == 0 {
        return Err(format!("found {}, expected a port 1–65535, not 0", shown(text)));
    }
    Ok(addr)
}

/// A peer's endpoint. Host names are refused rather than resolved: the appliance has no resolver
/// at boot, a name resolved once would silently go stale, and a bastion's peers are roaming
/// clients whose endpoint is learned from their packets anyway.
pub fn endpoint(text: &str) -> Result<SocketAddr, String> {
    match socket_addr(text, "an endpoint") {
        Ok(addr) if addr.ip().is_unspecified() || addr.ip().is_multicast() => {
            Err(format!("found {}, expected a unicast address (not unspecified or multicast)", shown(text)))
        }
        Ok(addr) => Ok(addr),
        Err(e) => {
            let host = text.rsplit_once(':').map(|(h, _)| h).unwrap_or(text);
            let is_name = !host.is_empty()
                && host.parse::<IpAddr>().is_err()
                && host.chars().any(|c| c.is_ascii_alphabetic())
                && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            if is_name {
                Err(format!(
                    "found the host name {}; expected IP:port or [IPv6]:port (the bastion does not \
                     resolve names: put the address, or leave endpoint out for a roaming peer)",
                    shown(host)
                ))
            } else {
                Err(e)
            }
        }
    }
}

/// A Linux interface name, by the kernel's rule (`netlink::route::check_interface_name`).
pub fn interface_name(text: &str) -> Result<(), String> {
    crate::netlink::route::check_interface_name(text)
        .map_err(|why| format!("found {} ({} bytes), {why}", shown(text), text.len()))
}

/// A peer's display name: used in logs and `bastion status`, so one printable line.
pub fn peer_name(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("found an empty name, expected a name like \"alice-laptop\"".into());
    }
    if text.chars().count() > 64 {
        return Err(format!("found {}, expected at most 64 characters", shown(text)));
    }
    if text.chars().any(|c| c.is_control()) {
        return Err(format!("found {}, expected one printable line (no control characters)", shown(text)));
    }
    if text.chars().any(invisible_format_character) {
        return Err(format!(
            "found {}, which holds an invisible formatting character (bidirectional override, \
             zero-width or byte-order mark) that would make logs and `bastion status` show something else",
            shown(text)
        ));
    }
    Ok(())
}

/// Unicode format characters that change how the text around them is shown (Trojan Source,
/// CVE-2021-42574) or are invisible: bidi embeddings, overrides, isolates and marks,
/// zero-width characters, the byte-order mark, and the tag characters.
fn invisible_format_character(c: char) -> bool {
    matches!(c,
        '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}'
        | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}')
}

/// An SSM parameter name (`/bastion/prod/key`, `bastion-key`) or ARN
/// (`arn:aws:ssm:REGION:ACCOUNT:parameter/NAME`), by SSM's rules: at most 2048 characters of
/// `a-zA-Z0-9_.-/`, at most 15 levels, and not starting with `aws` or `ssm`.
pub fn ssm_parameter_name(text: &str) -> Result<(), String> {
    let name = match text.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            match parts.as_slice() {
                [partition, "ssm", region, account, resource]
                    if partition.starts_with("aws")
                        && !region.is_empty()
                        && account.len() == 12
                        && account.chars().all(|c| c.is_ascii_digit()) =>
                {
                    match resource.strip_prefix("parameter") {
                        Some(name) if name.starts_with('/') => name,
                        _ => return Err(format!("found {}, expected an ARN ending in :parameter/NAME", shown(text))),
                    }
                }
                _ => {
                    return Err(format!(
                    "found {}, expected an SSM parameter ARN like arn:aws:ssm:eu-west-1:123456789012:parameter/NAME",
                    shown(text)
                ))
                }
            }
        }
        None => text,
    };
    ssm_path_chars(name, text)?;
    let bare = name.trim_start_matches('/');
    if bare.is_empty() || name.ends_with('/') {
        return Err(format!("found {}, expected a parameter name like /bastion/prod/private-key", shown(text)));
    }
    Ok(())
}

/// An SSM parameter path, the root of a hierarchy (`/bastion/prod`): starts with `/`, SSM's
/// characters, no trailing `/` needed.
/// A target group's ARN: `arn:PARTITION:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID`.
/// A CloudWatch Logs group name: 1–512 of `A-Za-z0-9` and `._-/#`.
pub fn log_group_name(text: &str) -> Result<(), String> {
    let ok =
        !text.is_empty() && text.len() <= 512 && text.chars().all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!("{text:?}: expected a log group name, 1–512 of A-Z a-z 0-9 . _ - / #"))
    }
}

pub fn target_group_arn(text: &str) -> Result<(), String> {
    let expected = "expected arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID";
    let parts: Vec<&str> = text.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "elasticloadbalancing"
        && region(parts[3]).is_ok()
        && !parts[4].is_empty()
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5].starts_with("targetgroup/")
        && parts[5].split('/').count() == 3
        && parts[5].split('/').all(|p| !p.is_empty())
        && text.len() <= 2048
        && text.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(format!("found {}, {expected}", shown(text)))
    }
}

/// The region named in a (validated) target group ARN.
pub fn region_of_arn(arn: &str) -> Option<&str> {
    arn.split(':').nth(3)
}

pub fn ssm_path(text: &str) -> Result<(), String> {
    if !text.starts_with('/') || text.trim_matches('/').is_empty() {
        return Err(format!("found {}, expected a parameter path like /bastion/prod (starting with /)", shown(text)));
    }
    ssm_path_chars(text, text)
}

fn ssm_path_chars(name: &str, text: &str) -> Result<(), String> {
    if name.len() > 2048 {
        return Err(format!("found {} characters, expected at most 2048 (SSM's limit)", name.len()));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.-/".contains(*c))) {
        return Err(format!(
            "found {}, which holds {bad:?}; SSM parameter names hold only letters, digits and _ . - /",
            shown(text)
        ));
    }
    if name.contains("//") {
        return Err(format!("found {}, expected no empty level (//)", shown(text)));
    }
    if name.split('/').filter(|level| !level.is_empty()).count() > 15 {
        return Err(format!("found {}, expected at most 15 levels (SSM's limit)", shown(text)));
    }
    let first = name.trim_start_matches('/').to_ascii_lowercase();
    if first.starts_with("aws") || first.starts_with("ssm") {
        return Err(format!("found {}: names starting with aws or ssm are reserved by AWS", shown(text)));
    }
    Ok(())
}

/// An AWS region name (`eu-west-1`, `us-gov-west-1`, `cn-north-1`).
pub fn region(text: &str) -> Result<(), String> {
    let ok = (4..=32).contains(&text.len())
        && text.split('-').count() >= 3
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("found {}, expected a region name like eu-west-1", shown(text)))
    }
}

/// An endpoint URL override: `https://HOST[:PORT][/PATH]` (or `http://` for a test emulator).
pub fn endpoint_url(text: &str) -> Result<(), String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("found {}, expected a URL starting with https:// (or http://)", shown(text)))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '@') {
        return Err(format!("found {}, expected https://HOST[:PORT] (no user, no spaces)", shown(text)));
    }
    if text.contains('?') || text.contains('#') {
        return Err(format!("found {}, expected no query or fragment", shown(text)));
    }
    Ok(())
}

/// The control socket's path: absolute, and short enough for a Unix socket address (107 bytes).
pub fn socket_path(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("found {}, expected an absolute path like /run/bastion/wg0.sock", shown(text)));
    }
    if text.len() > 107 {
        return Err(format!("found a path of {} bytes, expected at most 107 (a Unix socket's limit)", text.len()));
    }
    if text.ends_with('/') || text.contains('\0') {
        return Err(format!("found {}, expected the path of a file", shown(text)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names_are_one_line_that_shows_what_it_says() {
        assert!(peer_name("alice-laptop").is_ok());
        assert!(peer_name("Zoë's phone").is_ok());
        for bad in ["", "  ", "a\nb", "\u{202E}potaL ecila", "alice\u{200B}", "\u{2066}bob\u{2069}", "\u{FEFF}x"] {
            let e = peer_name(bad).unwrap_err();
            assert!(!e.contains('\u{202E}') && !e.contains('\u{200B}'), "the error shows it escaped: {e}");
        }
        assert!(peer_name("\u{202E}potaL ecila").unwrap_err().contains("\\u{202e}"));
    }

    #[test]
    fn interface_addresses_need_a_prefix_and_a_host() {
        let a = interface_address("10.100.0.1/24").unwrap();
        assert_eq!(a.to_string(), "10.100.0.1/24");
        assert_eq!(a.network().to_string(), "10.100.0.0/24");
        assert!(interface_address("fd00:100::1/64").is_ok());
        assert!(interface_address("10.100.0.1").unwrap_err().contains("without a prefix"));
        assert!(interface_address("10.100.0.0/24").unwrap_err().contains("network or broadcast"));
        assert!(interface_address("10.100.0.255/24").unwrap_err().contains("broadcast"));
        assert!(interface_address("10.100.0.0/31").is_ok(), "RFC 3021 point-to-point");
        assert!(interface_address("10.100.0.1/33").unwrap_err().contains("0–32"));
        assert!(interface_address("10.100.0.300/24").unwrap_err().contains("expected an IPv4"));
    }

    #[test]
    fn networks_refuse_host_bits_and_suggest_both_readings() {
        assert_eq!(network("10.0.1.0/24").unwrap().to_string(), "10.0.1.0/24");
        assert_eq!(network("10.0.1.7").unwrap().to_string(), "10.0.1.7/32");
        let e = network("10.0.0.1/24").unwrap_err();
        assert!(e.contains("10.0.0.0/24") && e.contains("10.0.0.1/32"), "{e}");
        let (net, truncated) = network_truncating("10.0.0.1/24").unwrap();
        assert_eq!((net.to_string().as_str(), truncated), ("10.0.0.0/24", true));
        assert!(network("fd00::1/200").is_err());
        assert!(network("eth0").is_err());
    }

    #[test]
    fn endpoints_are_addresses_not_names() {
        assert_eq!(endpoint("198.51.100.7:51820").unwrap().port(), 51820);
        assert!(endpoint("[2001:db8::1]:51820").is_ok());
        assert!(endpoint("vpn.example.com:51820").unwrap_err().contains("does not resolve"));
        assert!(endpoint("198.51.100.7").is_err());
        assert!(endpoint("198.51.100.7:0").unwrap_err().contains("not 0"));
        assert!(endpoint("0.0.0.0:51820").is_err());
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        assert!(interface_name("wg0").is_ok());
        assert!(interface_name("a23456789012345").is_ok());
        assert!(interface_name("a234567890123456").unwrap_err().contains("15 bytes"));
        for bad in ["", ".", "..", "wg/0", "wg 0", "wg:0"] {
            assert!(interface_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ssm_names_follow_ssms_rules() {
        for good in ["/bastion/prod/key", "bastion-key", "arn:aws:ssm:eu-west-1:123456789012:parameter/bastion/key"] {
            assert!(ssm_parameter_name(good).is_ok(), "{good}");
        }
        for bad in ["", "/", "/a b", "/aws/x", "ssm-key", "/a//b", "arn:aws:ssm:eu-west-1:1:parameter/x", "/a/"] {
            assert!(ssm_parameter_name(bad).is_err(), "{bad:?}");
        }
        assert!(ssm_path("/bastion/prod").is_ok());
        assert!(ssm_path("bastion/prod").unwrap_err().contains("starting with /"));
        assert!(ssm_path("/").is_err());
        assert!(ssm_path(&"/a".repeat(16)).unwrap_err().contains("15 levels"));
    }

    #[test]
    fn regions_urls_and_socket_paths() {
        assert!(region("eu-west-1").is_ok() && region("us-gov-west-1").is_ok());
        assert!(region("EU-WEST-1").is_err() && region("eu").is_err());
        assert!(endpoint_url("https://ssm.eu-west-1.amazonaws.com").is_ok());
        let arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/bastion/50dc6c495c0c9188";
        assert!(target_group_arn(arn).is_ok());
        assert_eq!(region_of_arn(arn), Some("eu-west-1"));
        for bad in [
            "",
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/x/1",
            "arn:aws:ec2:eu-west-1:123456789012:targetgroup/bastion/1",
            "arn:aws:elasticloadbalancing:EU:123456789012:targetgroup/bastion/1",
            "arn:aws:elasticloadbalancing:eu-west-1:12a:targetgroup/bastion/1",
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/bastion",
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup//1",
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/b s/1",
        ] {
            assert!(target_group_arn(bad).is_err(), "{bad}");
        }
        assert!(endpoint_url("http://127.0.0.1:5000").is_ok());
        assert!(endpoint_url("ssm.amazonaws.com").is_err());
        assert!(endpoint_url("https://user@host").is_err());
        assert!(socket_path("/run/bastion/wg0.sock").is_ok());
        assert!(socket_path("run/wg0.sock").is_err());
        assert!(socket_path(&format!("/{}", "a".repeat(120))).is_err());
    }

    #[test]
    fn keys_are_never_shown() {
        let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        assert!(!shown(key).contains(key));
        assert!(!network(key).unwrap_err().contains(key));
        assert!(!shown(&format!("x{key}")).contains(key));
    }
}
