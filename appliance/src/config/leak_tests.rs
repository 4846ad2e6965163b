//! The property that no diagnostic shows a key: generated private and preshared keys are put in
//! every position of both file formats an operator could get wrong (the wrong field, a field
//! name, a path, a section name, split over two lines, a character short or long, without the
//! `=`), and no 16-character piece of either key may appear in any error, warning or note.
//! (`convert`'s TOML on stdout carries the key on purpose and is not a diagnostic.)

use super::{parse, render_warnings};
use crate::convert::wg_quick;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// `{K}` the private key, `{P}` the preshared key, `{K43}` the key without its `=`, `{KX}` with
/// one character too many, `{K1}`/`{K2}` the key cut in two at the generated point.
const TOML_CASES: &[&str] = &[
    "[interface]\nprivate_key = \"{K43}\"\naddress = [\"10.100.0.1/24\"]\n",
    "[interface]\nprivate_key = \"{KX}\"\naddress = [\"10.100.0.1/24\"]\n",
    "[interface]\nprivate_key = \"{K}\"\naddress = [\"10.100.0.1/24\"]\n{K} = 1\n",
    "[interface]\nprivate_key = \"{K}\"\naddress = [\"10.100.0.1/24\"]\n\"{K43}\" = \"x\"\n",
    "[interface]\nprivate_key_file = \"{K}\"\naddress = [\"10.100.0.1/24\"]\n",
    "[interface]\nprivate_key_file = \"/etc/bastion/{K}\"\naddress = [\"10.100.0.1/24\"]\n",
    "[{K43}]\nprivate_key = \"{K}\"\n",
    "[interface]\nprivate_key = \"\"\"{K1}\n{K2}\"\"\"\naddress = [\"10.100.0.1/24\"]\n",
    "[interface]\nprivate_key = \"{K1}\"\n{K2}\naddress = [\"10.100.0.1/24\"]\n",
    "[interface]\nprivate_key = {K}\naddress = [\"10.100.0.1/24\"]\n",
    "[interface]\nprivate_key = \"{K}\"\naddress = [\"{K}\"]\nname = \"{K43}\"\nlisten_port = \"{K}\"\n",
    "[interface]\nprivate_key = \"{K}\"\naddress = [\"10.100.0.1/24\"]\n[[peer]]\nname = \"{K43}\"\n\
     public_key = \"{K43}\"\npreshared_key = \"{P}\"\nallowed_ips = [\"{P}\"]\nendpoint = \"{P}\"\n",
    "[interface]\nprivate_key = \"{K}\"\naddress = [\"10.100.0.1/24\"]\n[[peer]]\nname = \"a\"\n\
     public_key = \"{P}\"\npreshared_key_file = \"{P}\"\nallowed_ips = [\"10.100.0.2/32\"]\nreach = [\"{K}\"]\n",
    "[interface]\nprivate_key = \"{K}\"\naddress = [\"10.100.0.1/24\"]\n[nat]\negress = \"{K}\"\n\
     reach = [\"0.0.0.0/0\"]\n[health]\nlisten = \"{K}\"\n[selftest]\nprobes = [\"{P}\"]\n",
    "[interface]\nprivate_key = \"{K}\"\naddress = [\"10.100.0.1/24\"]\n[[peer]]\npreshared_key = \"{K1}\"\n\
     {K2} = \"{P}\"\n",
];

const WG_QUICK_CASES: &[&str] = &[
    "[Interface]\nPrivateKey {K43}\nAddress = 10.100.0.1/24\n",
    "[Interface]\nPrivateKey: {K}\nAddress = 10.100.0.1/24\n",
    "[Interface]\nPrivateKey = {K1}\n{K2}\nAddress = 10.100.0.1/24\n",
    "[Interface]\nPrivateKey = {K43}\nAddress = {K}\nListenPort = {K}\nMTU = {KX}\n",
    "[{K}]\nPrivateKey = {K}\n",
    "[Interface]\n{K} = 1\n",
    "[Interface]\nPrivateKey = {K}\nAddress = 10.100.0.1/24\n[Peer]\nPublicKey = {P}\nPresharedKey {P}\n",
    "[Interface]\nPrivateKey = {K}\nAddress = 10.100.0.1/24\nPostUp = echo {K} > /tmp/x; \
     iptables -A FORWARD -i %i -j ACCEPT\nPostDown = wg set %i private-key /etc/wireguard/{K}\n",
    "[Interface]\nPrivateKey = {K}\nAddress = 10.100.0.1/24\n[Peer]\nPublicKey = {K43}\n\
     PresharedKey = {P}\nEndpoint = {P}:51820\nAllowedIPs = {P}\nPersistentKeepalive = {K}\n",
    "[Interface]\nPrivateKey = {K}\nAddress = 10.100.0.1/24\n[Peer]\n# {K}\nPublicKey = {P}\n\
     AllowedIPs = 10.100.0.2/32\n",
    "[Interface]\nAddress = 10.100.0.1/24\nPrivateKey = {K}\n[Peer]\nPublicKey = {P}\n\
     PresharedKey = {K1}\n{K2}\nAllowedIPs = 10.100.0.2/32\n",
];

fn fill(template: &str, key: &str, psk: &str, cut: usize) -> String {
    template
        .replace("{K43}", &key[..43])
        .replace("{KX}", &format!("{key}A"))
        .replace("{K1}", &key[..cut])
        .replace("{K2}", &key[cut..])
        .replace("{K}", key)
        .replace("{P}", psk)
}

/// Every diagnostic the two formats produce for `text`, as the commands print them.
fn diagnostics(text: &str, origin: &str, toml: bool) -> Vec<String> {
    if toml {
        match parse(text, origin, None) {
            Err(e) => vec![e.to_string()],
            Ok(config) => render_warnings(&config, origin),
        }
    } else {
        match wg_quick::convert(text, origin, Some("wg0.conf")) {
            Err(e) => vec![e.to_string()],
            Ok(conversion) => conversion
                .notes
                .iter()
                .map(|n| crate::keys::redact_key_like(&format!("{origin}: {n}")).into_owned())
                .collect(),
        }
    }
}

fn leaked_piece(secret: &str, shown: &str) -> Option<String> {
    (0..=secret.len() - 16).map(|i| &secret[i..i + 16]).find(|piece| shown.contains(piece)).map(str::to_string)
}

#[test]
fn no_piece_of_a_key_appears_in_any_diagnostic() {
    // Deterministic, so a failure is repeatable; 256 key pairs × every template × two origins.
    let config = Config { cases: 256, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let strategy = (any::<[u8; 32]>(), any::<[u8; 32]>(), 16usize..=28);
    runner
        .run(&strategy, |(key, psk, cut)| {
            let key = BASE64.encode(key);
            let psk = BASE64.encode(psk);
            for (templates, toml) in [(TOML_CASES, true), (WG_QUICK_CASES, false)] {
                for template in templates {
                    let text = fill(template, &key, &psk, cut);
                    // The file's own path can hold the key too (a key file passed by mistake).
                    for origin in ["bastion.toml".to_string(), format!("/etc/bastion/{key}")] {
                        for shown in diagnostics(&text, &origin, toml) {
                            for secret in [&key, &psk] {
                                if let Some(piece) = leaked_piece(secret, &shown) {
                                    return Err(TestCaseError::fail(format!(
                                        "{piece:?} of a key shown in:\n{shown}\nfor:\n{text}"
                                    )));
                                }
                            }
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_diagnostics_still_say_what_is_wrong() {
    // Masking must not take the message with it: field and line stay, only the key goes.
    let key = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    let shown = diagnostics(&fill(WG_QUICK_CASES[1], key, key, 20), "wg0.conf", false).join("\n");
    assert!(shown.contains("\nwg0.conf:2: PrivateKey: <hidden>: unknown key"), "{shown}");
    assert!(shown.contains("<hidden>"), "{shown}");
    let shown = diagnostics(&fill(TOML_CASES[4], key, key, 20), "bastion.toml", true).join("\n");
    assert!(shown.contains("bastion.toml:2: interface.private_key_file: cannot read <hidden>"), "{shown}");
}
