//! The client's side of a new peer: its wg-quick config (`[Interface]` with its private key and
//! addresses, `[Peer]` = the bastion), the endpoint it is given, and the config as a QR code for
//! the WireGuard phone apps. The text holds a private key: it has no `Debug` that shows it and is
//! wiped when dropped.

use crate::config::values::shown;
use crate::keys::{PrivateKey, PublicKey};
use ip_network::IpNetwork;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};
use zeroize::Zeroizing;

/// The keepalive the client sends: it sits behind NAT, and the bastion never dials out to it.
pub const PERSISTENT_KEEPALIVE: u16 = 25;

/// A wg-quick config for the user's device.
pub struct ClientConfig {
    text: Zeroizing<String>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("ClientConfig(<holds a private key>)")
    }
}

impl ClientConfig {
    /// `addresses`: the peer's own (its allowed_ips on the bastion); `allowed`: what it sends
    /// through the tunnel (the tunnel networks and what it may reach).
    pub fn render(
        key: &PrivateKey,
        addresses: &[IpNetwork],
        server: &PublicKey,
        endpoint: &str,
        allowed: &[IpNetwork],
    ) -> ClientConfig {
        let join = |nets: &[IpNetwork]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
        let mut text = Zeroizing::new(String::with_capacity(512));
        let _ = write!(
            text,
            "[Interface]\nPrivateKey = {}\nAddress = {}\n\n[Peer]\nPublicKey = {server}\nEndpoint = {endpoint}\n\
             AllowedIPs = {}\nPersistentKeepalive = {PERSISTENT_KEEPALIVE}\n",
            Zeroizing::new(key.expose_base64()).as_str(),
            join(addresses),
            join(allowed),
        );
        ClientConfig { text }
    }

    /// The wg-quick text, private key included: for the operator who asked for it, nowhere else.
    pub fn expose_text(&self) -> &str {
        &self.text
    }
}

/// The config as a QR code of Unicode half blocks (two rows per line), light on dark, as the
/// WireGuard apps scan it from a terminal; `None` if it does not fit a QR code (it always does:
/// a client config is a few hundred bytes).
pub fn render_qr(client: &ClientConfig) -> Option<Zeroizing<String>> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(client.expose_text().as_bytes(), qrcode::EcLevel::L).ok()?;
    let image =
        code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).quiet_zone(true).build();
    Some(Zeroizing::new(image))
}

/// The endpoint a client is given: `HOST:PORT` where HOST is an IPv4 address, `[IPv6]` or a DNS
/// name (the client resolves it: usually the load balancer's name). Returns it as written.
pub fn valid_client_endpoint(text: &str) -> Result<String, String> {
    let expected = "expected HOST:PORT, e.g. vpn.example.com:51820, 198.51.100.7:51820 or [2001:db8::1]:51820";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("found {} without a port; {expected}", shown(text)));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 && !port.starts_with('+') => {}
        _ => return Err(format!("found the port {}; expected 1–65535 ({expected})", shown(port))),
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok())
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        // A bare IPv6 address is ambiguous with its port: wg-quick wants brackets.
        ip.is_ipv4() && !ip.is_unspecified() && !ip.is_multicast()
    } else {
        dns_name(host)
    };
    if !host_ok {
        return Err(format!("found the host {}; {expected}", shown(host)));
    }
    Ok(text.to_string())
}

/// A DNS name by RFC 1123: labels of letters, digits and `-` (not at either end), at most 63
/// bytes each and 253 in all; not all digits (that would be a malformed address).
fn dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}
