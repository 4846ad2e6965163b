use super::document::is_one_deletion;
use super::*;
use crate::keys::PrivateKey;

const SERVER_KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const ALICE_KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

fn config_text() -> String {
    format!(
        "# The bastion of the prod VPC.\n\
         [interface]\n\
         private_key = \"{SERVER_KEY}\"   # from `bastion genkey`\n\
         address = [\"10.100.0.1/24\", \"fd00:100::1/64\"]\n\
         \n\
         # Alice's laptop.\n\
         [[peer]]\n\
         name = \"alice\"\n\
         public_key = \"{ALICE_KEY}\"\n\
         allowed_ips = [\"10.100.0.2/32\", \"fd00:100::2/128\"]  # her first address\n\
         reach = [\"10.0.2.0/24\"]\n\
         \n\
         # Everyone reaches the app subnet.\n\
         [nat]\n\
         reach    = [\"10.0.1.0/24\"]\n"
    )
}

fn client_key() -> PrivateKey {
    PrivateKey::from_bytes([7; 32])
}

fn request<'a>(name: &'a str) -> AddRequest<'a> {
    AddRequest { name, endpoint: "vpn.example.com:51820", server_public_key: None, reach: &[] }
}

fn add_to(text: &str, name: &str) -> Result<Added, ConfigError> {
    add(text, "bastion.toml", None, &request(name), &client_key())
}

#[test]
fn add_takes_the_lowest_free_addresses_and_keeps_every_other_byte() {
    let text = config_text();
    let added = add_to(&text, "bob").unwrap();
    assert_eq!(
        added.allowed_ips.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        ["10.100.0.3/32", "fd00:100::3/128"]
    );
    let new = "\n[[peer]]\nname = \"bob\"\npublic_key = \"".to_string()
        + &client_key().public_key().to_base64()
        + "\"\nallowed_ips = [\"10.100.0.3/32\", \"fd00:100::3/128\"]\n";
    // Right after alice's table, before the comment that heads [nat].
    let at = text.find("\n# Everyone").unwrap();
    assert_eq!(added.text, format!("{}{new}{}", &text[..at], &text[at..]));
    let config = crate::config::parse(&added.text, "t", None).unwrap();
    assert_eq!(config.peers[1].name, "bob");
    assert_eq!(config.peers[1].public_key, client_key().public_key());
}

#[test]
fn add_appends_at_the_end_when_the_file_has_no_peer() {
    let text = format!("[interface]\nprivate_key = \"{SERVER_KEY}\"\naddress = [\"10.100.0.1/24\"]\n# the end\n");
    let added = add_to(&text, "bob").unwrap();
    // After the last table, before the file's closing comment; nothing else moves.
    assert!(is_one_deletion(&added.text, &text), "{}", added.text);
    assert!(added.text.ends_with("allowed_ips = [\"10.100.0.2/32\"]\n# the end\n"), "{}", added.text);
    assert_eq!(added.allowed_ips[0].to_string(), "10.100.0.2/32");
    assert_eq!(added.allowed_ips.len(), 1, "no IPv6 network, no IPv6 address");
    // And without a final newline.
    let text = text.replace("# the end\n", "").trim_end().to_string();
    let added = add_to(&text, "bob").unwrap();
    assert!(added.text.starts_with(&text), "{}", added.text);
    assert!(crate::config::parse(&added.text, "t", None).is_ok());
}

#[test]
fn the_fragment_is_the_new_table_alone() {
    let added = add_to(&config_text(), "bob").unwrap();
    assert!(added.fragment.starts_with("[[peer]]\nname = \"bob\"\n"), "{}", added.fragment);
    assert!(added.text.contains(&added.fragment));
    assert!(!added.fragment.contains(&client_key().expose_base64()));
    let t: toml::Table = added.fragment.parse().unwrap();
    assert_eq!(t.len(), 1);
}

#[test]
fn addresses_skip_the_bastion_the_selftest_and_network_addresses() {
    let text = format!(
        "[interface]\nprivate_key = \"{SERVER_KEY}\"\naddress = [\"10.100.0.2/24\", \"fd00:100::1/64\"]\n\
         [selftest]\naddress = \"10.100.0.1\"\n\
         [[peer]]\nname = \"a\"\npublic_key = \"{ALICE_KEY}\"\nallowed_ips = [\"10.100.0.3/32\", \"fd00:100::2/127\"]\n"
    );
    let added = add_to(&text, "bob").unwrap();
    let got: Vec<String> = added.allowed_ips.iter().map(|n| n.to_string()).collect();
    assert_eq!(got, ["10.100.0.4/32", "fd00:100::4/128"]);
}

#[test]
fn a_full_network_is_refused_naming_it() {
    // /30: .1 is the bastion, .2 the default self-test address; nothing left for a peer.
    let text = format!("[interface]\nprivate_key = \"{SERVER_KEY}\"\naddress = [\"10.100.0.1/30\"]\n");
    let err = add_to(&text, "bob").unwrap_err();
    assert_eq!(err.problems[0].field, "interface.address");
    assert!(err.to_string().contains("no free address in the tunnel network 10.100.0.0/30"), "{err}");
    // A full IPv6 network: every address but the bastion's belongs to one peer.
    let text = format!(
        "[interface]\nprivate_key = \"{SERVER_KEY}\"\naddress = [\"10.100.0.1/24\", \"fd00:100::1/127\"]\n\
         [[peer]]\nname = \"a\"\npublic_key = \"{ALICE_KEY}\"\nallowed_ips = [\"fd00:100::/128\"]\n"
    );
    let err = add_to(&text, "bob").unwrap_err();
    assert!(err.to_string().contains("fd00:100::/127"), "{err}");
}

#[test]
fn names_must_be_new_and_valid() {
    let err = add_to(&config_text(), "alice").unwrap_err();
    assert_eq!(err.problems[0].kind, ProblemKind::Duplicate);
    assert_eq!(err.problems[0].field, "peer[0].name");
    assert_eq!(err.problems[0].line, Some(8));
    assert!(err.to_string().starts_with("bastion.toml:8: peer[0].name: \"alice\" is already a peer"), "{err}");
    for bad in ["", "   ", "a\nb", &"x".repeat(65)] {
        let err = add_to(&config_text(), bad).unwrap_err();
        assert_eq!(err.problems[0].field, "NAME", "{bad:?}");
        assert!(err.to_string().starts_with("bastion peer add: NAME: found"), "{err}");
    }
    // Names TOML must quote are written quoted and read back the same.
    let added = add_to(&config_text(), "bob \"the\" builder's phone ü").unwrap();
    let config = crate::config::parse(&added.text, "t", None).unwrap();
    assert_eq!(config.peers[1].name, "bob \"the\" builder's phone ü");
}

#[test]
fn endpoints_are_host_and_port() {
    for good in
        ["vpn.example.com:51820", "198.51.100.7:51820", "[2001:db8::1]:51820", "nlb-1.elb.eu-west-1.amazonaws.com.:443"]
    {
        assert!(valid_client_endpoint(good).is_ok(), "{good}");
    }
    for bad in [
        "vpn.example.com",
        "vpn.example.com:0",
        "vpn.example.com:65536",
        "2001:db8::1:51820",
        ":51820",
        "a b:1",
        "x\n:1",
        "-a.com:1",
        "0.0.0.0:1",
        "1.2.3:1",
    ] {
        assert!(valid_client_endpoint(bad).is_err(), "{bad:?}");
    }
    let req = AddRequest { endpoint: "vpn.example.com", ..request("bob") };
    let err = add(&config_text(), "bastion.toml", None, &req, &client_key()).unwrap_err();
    assert!(
        err.to_string().starts_with("bastion peer add: --endpoint: found \"vpn.example.com\" without a port"),
        "{err}"
    );
}

#[test]
fn the_client_config_holds_the_key_whose_public_key_was_written() {
    let added = add_to(&config_text(), "bob").unwrap();
    let text = added.client.expose_text();
    let server = PrivateKey::parse(SERVER_KEY).unwrap().public_key();
    let expected = format!(
        "[Interface]\nPrivateKey = {}\nAddress = 10.100.0.3/32, fd00:100::3/128\n\n[Peer]\nPublicKey = {server}\n\
         Endpoint = vpn.example.com:51820\nAllowedIPs = 10.100.0.0/24, fd00:100::/64, 10.0.1.0/24\nPersistentKeepalive = 25\n",
        client_key().expose_base64()
    );
    assert_eq!(text, expected);
    // The printed private key derives the public key in the file, and is in the file nowhere.
    let printed = text.lines().find_map(|l| l.strip_prefix("PrivateKey = ")).unwrap();
    let derived = PrivateKey::parse(printed).unwrap().public_key();
    let config = crate::config::parse(&added.text, "t", None).unwrap();
    assert_eq!(config.peers[1].public_key, derived);
    assert!(!added.text.contains(printed) && !added.fragment.contains(printed));
    assert!(!format!("{:?}", added.client).contains(printed));
    // The same text, through wg-quick's reader: the client's own view converts.
    let conversion = crate::convert::wg_quick::convert(text, "client.conf", Some("client.conf")).unwrap();
    assert!(conversion.toml.contains(&server.to_base64()));
}

#[test]
fn own_reach_goes_into_the_file_and_the_client_allowed_ips() {
    let reach = vec!["10.0.3.0/24".to_string(), "10.0.1.0/24".to_string()];
    let req = AddRequest { reach: &reach, ..request("bob") };
    let added = add(&config_text(), "bastion.toml", None, &req, &client_key()).unwrap();
    assert!(added.fragment.contains("reach = [\"10.0.3.0/24\", \"10.0.1.0/24\"]"), "{}", added.fragment);
    let allowed = added.client.expose_text().lines().find(|l| l.starts_with("AllowedIPs")).unwrap().to_string();
    assert_eq!(allowed, "AllowedIPs = 10.100.0.0/24, fd00:100::/64, 10.0.1.0/24, 10.0.3.0/24");
    let bad = vec!["10.0.3.1/24".to_string()];
    let req = AddRequest { reach: &bad, ..request("bob") };
    let err = add(&config_text(), "bastion.toml", None, &req, &client_key()).unwrap_err();
    assert!(err.to_string().starts_with("bastion peer add: --reach:"), "{err}");
}

#[test]
fn a_key_in_ssm_requires_the_server_public_key() {
    let text = config_text()
        .replace(&format!("private_key = \"{SERVER_KEY}\""), "private_key_ssm = \"/bastion/prod/private-key\"");
    let err = add_to(&text, "bob").unwrap_err();
    assert_eq!(err.problems[0].field, "interface.private_key_ssm");
    let shown = err.to_string();
    assert!(shown.contains("/bastion/prod/private-key") && shown.contains("--server-public-key"), "{shown}");

    let server = PrivateKey::generate().public_key().to_base64();
    let req = AddRequest { server_public_key: Some(&server), ..request("bob") };
    let added = add(&text, "bastion.toml", None, &req, &client_key()).unwrap();
    assert!(added.client.expose_text().contains(&format!("PublicKey = {server}\n")));

    let req = AddRequest { server_public_key: Some("not a key"), ..request("bob") };
    let err = add(&text, "bastion.toml", None, &req, &client_key()).unwrap_err();
    assert!(err.to_string().starts_with("bastion peer add: --server-public-key: expected 44"), "{err}");
    // With the key in the file, a different --server-public-key is a mistake worth stopping at.
    let req = AddRequest { server_public_key: Some(&server), ..request("bob") };
    let err = add(&config_text(), "bastion.toml", None, &req, &client_key()).unwrap_err();
    assert_eq!(err.problems[0].kind, ProblemKind::Conflict);
}

#[test]
fn an_invalid_file_is_refused_with_check_configs_problems() {
    let text = config_text().replace("10.100.0.1/24", "10.100.0.1");
    let err = add_to(&text, "bob").unwrap_err();
    assert!(err.to_string().starts_with("bastion.toml:4: interface.address[0]:"), "{err}");
    assert!(add_to("garbage [[[", "bob").is_err());
    assert!(add_to("", "bob").is_err());
}

#[test]
fn remove_gives_back_the_file_before_add() {
    let text = config_text();
    let added = add_to(&text, "bob").unwrap();
    assert_eq!(remove(&added.text, "bastion.toml", None, "bob").unwrap(), text);
    // Removing alice takes her table and the comment above it, and nothing else.
    let removed = remove(&text, "bastion.toml", None, "alice").unwrap();
    assert!(is_one_deletion(&text, &removed), "{removed}");
    assert!(!removed.contains("alice") && !removed.contains("Alice"), "{removed}");
    assert!(removed.contains("# Everyone reaches the app subnet.\n[nat]\nreach    = [\"10.0.1.0/24\"]\n"));
    assert_eq!(crate::config::parse(&removed, "t", None).unwrap().peers.len(), 0);
    let err = remove(&text, "bastion.toml", None, "mallory").unwrap_err();
    assert_eq!(err.to_string(), "bastion.toml: peer: no peer named \"mallory\"; it has \"alice\"");
}

#[test]
fn remove_finds_unnamed_peers_by_their_default_name() {
    let text = format!(
        "[interface]\nprivate_key = \"{SERVER_KEY}\"\naddress = [\"10.100.0.1/24\"]\n\n\
         [[peer]]\npublic_key = \"{ALICE_KEY}\"\nallowed_ips = [\"10.100.0.2/32\"]\n"
    );
    let removed = remove(&text, "bastion.toml", None, "peer-1").unwrap();
    assert_eq!(removed, format!("[interface]\nprivate_key = \"{SERVER_KEY}\"\naddress = [\"10.100.0.1/24\"]\n"));
}

#[test]
fn list_shows_names_keys_addresses_and_reach_only() {
    let added = add_to(&config_text(), "bob").unwrap();
    let config = crate::config::parse(&added.text, "t", None).unwrap();
    let shown = render_list(&list(&config));
    let bob = client_key().public_key().to_base64();
    assert_eq!(
        shown,
        format!(
            "alice  {ALICE_KEY}  10.100.0.2/32,fd00:100::2/128  reach 10.0.2.0/24\n\
             bob    {bob}  10.100.0.3/32,fd00:100::3/128  reach -\n"
        )
    );
}

#[test]
fn the_qr_code_is_half_blocks() {
    let added = add_to(&config_text(), "bob").unwrap();
    let qr = render_qr(&added.client).unwrap();
    assert!(qr.lines().count() > 20);
    assert!(qr.chars().all(|c| matches!(c, ' ' | '\n' | '\u{2580}' | '\u{2584}' | '\u{2588}')));
}
