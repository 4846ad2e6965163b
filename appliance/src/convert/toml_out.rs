//! Writing the converted config as our TOML: the operator's own file, comments saying where
//! each part came from. No I/O.

use std::fmt::Write as _;

use super::nat_plan::NatPlan;
use super::wg_file::WgFile;

pub(super) fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

pub(super) fn quoted_list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", items.join(", "))
}

pub(super) fn write_toml(file: &WgFile, name: &str, peer_names: &[String], nat: &NatPlan) -> String {
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
