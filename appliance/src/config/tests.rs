//! Unit tests of the schema: the defaults, and one test per class of rejection, each asserting
//! the line, the dotted field and the kind of problem. Words are checked only where they are the
//! point (a suggestion for a typo, both readings of a network, a key never echoed) and in the
//! tests of the rendered `FILE:LINE: FIELD: MESSAGE` format.

use super::*;
use crate::keys::PrivateKey;

/// The wg(8) reference vector: this private key's public key is `HIgo9x…ykw=`.
const OUR_KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const OUR_PUBLIC: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
const ALICE: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const BOB: &str = "CLndk2VC55qYMfcevou7V13nrfd+WBrBBWozMazUKH8=";
const CAROL: &str = "/h77dvv/UBhEN2NRG8wdUdC4+W4bCDO5HHgmtsXcXwA=";

fn ok(text: &str) -> Config {
    match parse(text, "test.toml", None) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn problems(text: &str) -> Vec<ConfigProblem> {
    match parse(text, "test.toml", None) {
        Ok(_) => panic!("expected problems, the config was accepted:\n{text}"),
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.contains(OUR_KEY), "a private key leaked into:\n{shown}");
            e.problems
        }
    }
}

/// The one problem about `field`, of `kind`; fails listing all problems when there is not
/// exactly one.
fn problem(text: &str, field: &str, kind: ProblemKind) -> ConfigProblem {
    let all = problems(text);
    let matching: Vec<_> = all.iter().filter(|p| p.field == field).cloned().collect();
    assert_eq!(matching.len(), 1, "expected one problem on {field}, got {all:#?}");
    assert_eq!(matching[0].kind, kind, "{:#?}", matching[0]);
    matching[0].clone()
}

fn minimal() -> String {
    format!(
        "[interface]\nprivate_key = \"{OUR_KEY}\"\naddress = [\"10.100.0.1/24\"]\n\n\
         [[peer]]\npublic_key = \"{ALICE}\"\nallowed_ips = [\"10.100.0.2/32\"]\n"
    )
}

#[test]
fn the_annotated_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs/etc/bastion/bastion.toml.example");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.peers[0].name, "alice-laptop");
    assert_eq!(config.peers[0].reach[0].to_string(), "10.0.2.0/24");
    assert_eq!(config.interface.addresses.len(), 2);
    assert_eq!(config.nat.reach[0].to_string(), "10.0.1.0/24");
}

#[test]
fn defaults_fill_everything_but_keys_addresses_and_peers() {
    let c = ok(&minimal());
    assert_eq!(c.interface.private_key().unwrap().public_key().to_base64(), OUR_PUBLIC);
    assert_eq!(c.interface.addresses[0].to_string(), "10.100.0.1/24");
    assert_eq!(c.interface.listen_port, 51820);
    assert_eq!(c.interface.mtu, 1420);
    assert_eq!(c.interface.name, "wg0");
    let peer = &c.peers[0];
    assert_eq!(peer.name, "peer-1");
    assert_eq!(peer.public_key.to_base64(), ALICE);
    assert!(peer.preshared_key.is_none() && peer.endpoint.is_none());
    assert!(peer.persistent_keepalive.is_none() && peer.reach.is_empty());
    assert!(c.nat.masquerade);
    assert_eq!(c.nat.egress, Egress::Auto);
    assert!(c.nat.reach.is_empty());
    assert_eq!(c.health.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.health.drain_seconds, 30);
    assert_eq!(c.selftest.interval_seconds, 30);
    assert!(c.selftest.probes.is_empty());
    assert_eq!(c.selftest.address.to_string(), "10.100.0.254");
}

#[test]
fn every_field_is_read_when_given() {
    let c = ok(&format!(
        "[interface]\nprivate_key = \"{OUR_KEY}\"\naddress = [\"10.100.0.1/24\", \"fd00:100::1/64\"]\n\
         listen_port = 443\nmtu = 1380\nname = \"tun-vpn\"\n\
         [[peer]]\nname = \"alice\"\npublic_key = \"{ALICE}\"\npreshared_key = \"{BOB}\"\n\
         allowed_ips = [\"10.100.0.2/32\", \"fd00:100::2/128\"]\nendpoint = \"[2001:db8::7]:51820\"\n\
         persistent_keepalive = 25\nreach = [\"10.0.2.0/24\"]\n\
         [nat]\nmasquerade = false\negress = \"ens5\"\nreach = [\"10.0.0.0/16\", \"fd00:1::/64\"]\n\
         [health]\nlisten = \"[::]:9000\"\ndrain_seconds = 0\n\
         [selftest]\ninterval_seconds = 5\nprobes = [\"10.0.1.5:443\"]\naddress = \"10.100.0.200\"\n"
    ));
    assert_eq!((c.interface.listen_port, c.interface.mtu, c.interface.name.as_str()), (443, 1380, "tun-vpn"));
    let p = &c.peers[0];
    assert_eq!(p.preshared_key.as_ref().unwrap().expose_base64(), BOB);
    assert_eq!(p.endpoint.unwrap().to_string(), "[2001:db8::7]:51820");
    assert_eq!(p.persistent_keepalive, Some(25));
    assert!(!c.nat.masquerade);
    assert_eq!(c.nat.egress, Egress::Interface("ens5".into()));
    assert_eq!(c.nat.reach.len(), 2);
    assert_eq!(c.health.listen.to_string(), "[::]:9000");
    assert_eq!(c.health.drain_seconds, 0);
    assert_eq!(c.selftest.interval_seconds, 5);
    assert_eq!(c.selftest.probes[0].to_string(), "10.0.1.5:443");
    assert_eq!(c.selftest.address.to_string(), "10.100.0.200");
}

#[test]
fn unknown_fields_and_sections_name_the_known_ones() {
    let text = minimal().replace("[[peer]]", "ListenPort = 1\n[[peer]]\nallowedips = 1") + "[monitoring]\nlisten = 1\n";
    let p = problem(&text, "interface.ListenPort", ProblemKind::UnknownField);
    assert_eq!(p.line, Some(5));
    assert!(
        p.message.contains("known fields: private_key, private_key_file, private_key_ssm, address"),
        "{}",
        p.message
    );
    assert!(p.message.contains("did you mean listen_port?"), "{}", p.message);
    let p = problem(&text, "peer[0].allowedips", ProblemKind::UnknownField);
    assert!(p.message.contains("did you mean allowed_ips?"), "{}", p.message);
    let p = problem(&text, "monitoring", ProblemKind::UnknownField);
    assert_eq!(p.line, Some(10));
    assert!(p.message.contains("unknown section [monitoring]; known sections: [interface], [[peer]]"), "{}", p.message);
}

#[test]
fn a_top_level_field_says_which_section_it_belongs_to() {
    let p = problem(&format!("listen_port = 1\n{}", minimal()), "listen_port", ProblemKind::UnknownField);
    assert!(p.message.contains("listen_port under [interface]"), "{}", p.message);
}

#[test]
fn bad_keys_are_rejected_without_echoing_them() {
    let short = &OUR_KEY[..43];
    let p = problem(&minimal().replace(OUR_KEY, short), "interface.private_key", ProblemKind::Invalid);
    assert_eq!(p.line, Some(2));
    assert!(!p.message.contains(short));
    let p = problem(&minimal().replace(ALICE, "not a key"), "peer[0].public_key", ProblemKind::Invalid);
    assert_eq!(p.line, Some(6));
    problem(&minimal().replace(&format!("\"{OUR_KEY}\""), "42"), "interface.private_key", ProblemKind::WrongType);
}

#[test]
fn exactly_one_private_key_source() {
    let both = minimal().replace("address", "private_key_file = \"k\"\naddress");
    problem(&both, "interface.private_key_file", ProblemKind::Conflict);
    let with_ssm = minimal().replace("address", "private_key_ssm = \"/bastion/key\"\naddress");
    let p = problem(&with_ssm, "interface.private_key_ssm", ProblemKind::Conflict);
    assert!(p.message.contains("exactly one of private_key, private_key_file and private_key_ssm"), "{}", p.message);
    let neither = minimal().replace(&format!("private_key = \"{OUR_KEY}\"\n"), "");
    let p = problem(&neither, "interface.private_key", ProblemKind::Missing);
    assert_eq!(p.line, Some(1), "reported at the [interface] header");
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bastion-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn key_files_are_read_relative_to_the_config() {
    let dir = TempDir::new("keyfile");
    std::fs::write(dir.0.join("private.key"), format!("{OUR_KEY}\n")).unwrap();
    std::fs::write(dir.0.join("alice.psk"), format!("{BOB}\n")).unwrap();
    let text = minimal()
        .replace(&format!("private_key = \"{OUR_KEY}\""), "private_key_file = \"private.key\"")
        .replace("allowed_ips", "preshared_key_file = \"alice.psk\"\nallowed_ips");
    let c = parse(&text, "x", Some(&dir.0)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.interface.private_key().unwrap().public_key().to_base64(), OUR_PUBLIC);
    assert_eq!(c.peers[0].preshared_key.as_ref().unwrap().expose_base64(), BOB);

    std::fs::write(dir.0.join("bad.key"), format!("{}\n", &OUR_KEY[..40])).unwrap();
    let bad = text.replace("private.key", "bad.key").replace("alice.psk", "missing.psk");
    let e = parse(&bad, "x", Some(&dir.0)).unwrap_err();
    let key = e.problems.iter().find(|p| p.field == "interface.private_key_file").unwrap();
    assert!(key.message.contains("bad.key: expected 44 characters"), "{}", key.message);
    assert!(!key.message.contains(&OUR_KEY[..40]));
    let psk = e.problems.iter().find(|p| p.field == "peer[0].preshared_key_file").unwrap();
    assert!(psk.message.contains("cannot read"), "{}", psk.message);
    assert!(psk.message.contains("missing.psk: No such file or directory"), "{}", psk.message);
}

#[test]
fn addresses_must_parse_and_carry_a_prefix() {
    let text = minimal()
        .replace("[\"10.100.0.1/24\"]", "[\"10.100.0.1/24\", \"10.100.0.300/24\", \"fd00::1\", \"10.100.0.1/24\"]");
    let all = problems(&text);
    let fields: Vec<&str> = all.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["interface.address[1]", "interface.address[2]", "interface.address[3]"]);
    assert!(all[0].message.contains("found \"10.100.0.300/24\", expected an IPv4 or IPv6 address"));
    assert!(all[1].message.contains("without a prefix"));
    assert!(all[2].message.contains("listed twice"));
    assert!(all.iter().all(|p| p.line == Some(3)));
    let p = problem(&minimal().replace("[\"10.100.0.1/24\"]", "[]"), "interface.address", ProblemKind::Missing);
    assert!(p.message.contains("at least one address"), "{}", p.message);
    let p = problem(
        &minimal().replace("[\"10.100.0.1/24\"]", "\"10.100.0.1/24\""),
        "interface.address",
        ProblemKind::WrongType,
    );
    assert!(p.message.contains("found a string, expected a list"), "{}", p.message);
}

#[test]
fn ports_mtu_and_names_are_range_checked() {
    let with = |extra: &str| minimal().replace("[[peer]]", &format!("{extra}\n[[peer]]"));
    for (bad, kind) in [
        ("listen_port = 0", ProblemKind::OutOfRange),
        ("listen_port = 65536", ProblemKind::OutOfRange),
        ("listen_port = \"51820\"", ProblemKind::WrongType),
    ] {
        problem(&with(bad), "interface.listen_port", kind);
    }
    for bad in ["mtu = 1279", "mtu = 9001"] {
        problem(&with(bad), "interface.mtu", ProblemKind::OutOfRange);
    }
    ok(&with("mtu = 1280"));
    ok(&with("mtu = 8921"));
    ok(&with("listen_port = 0xCA6C"));
    for bad in ["name = \"a234567890123456\"", "name = \"wg/0\"", "name = \"wg 0\"", "name = \"\""] {
        problem(&with(bad), "interface.name", ProblemKind::Invalid);
    }
}

#[test]
fn peers_need_a_key_and_allowed_ips() {
    let text = format!("{}[[peer]]\nname = \"bob\"\n", minimal());
    let all = problems(&text);
    let fields: Vec<&str> = all.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["peer[1].public_key", "peer[1].allowed_ips"]);
    assert!(all.iter().all(|p| p.line == Some(8)), "at the [[peer]] header: {all:?}");
    problem(&minimal().replace("[\"10.100.0.2/32\"]", "[]"), "peer[0].allowed_ips", ProblemKind::Missing);
}

#[test]
fn allowed_ips_with_host_bits_are_refused_with_both_readings() {
    let p =
        problem(&minimal().replace("10.100.0.2/32", "10.100.0.2/24"), "peer[0].allowed_ips[0]", ProblemKind::Invalid);
    assert!(p.message.contains("host bits set"), "{}", p.message);
    assert!(p.message.contains("10.100.0.0/24") && p.message.contains("10.100.0.2/32"), "{}", p.message);
}

fn two_peers(second_key: &str, second_ips: &str, second_name: &str) -> String {
    format!(
        "{}name = \"alice\"\n\n[[peer]]\n{second_name}public_key = \"{second_key}\"\nallowed_ips = {second_ips}\n",
        minimal()
    )
}

#[test]
fn overlapping_allowed_ips_name_both_peers() {
    let text = two_peers(BOB, "[\"10.100.0.3/32\", \"10.100.0.0/30\"]", "name = \"bob\"\n");
    // Reported where the later of the two is written, naming the earlier one.
    let p = problem(&text, "peer[1].allowed_ips[1]", ProblemKind::Overlap);
    assert_eq!(p.line, Some(13));
    assert_eq!(
        p.message,
        "10.100.0.0/30 of peer \"bob\" overlaps 10.100.0.2/32 of peer[0] \"alice\" (line 7); each \
         tunnel address must belong to one peer only"
    );
    // The same network twice, and IPv6.
    let text = two_peers(BOB, "[\"10.100.0.2/32\"]", "");
    assert!(problems(&text)[0].message.contains("overlaps"));
    let text =
        two_peers(BOB, "[\"fd00::/64\"]", "").replace("[\"10.100.0.2/32\"]", "[\"10.100.0.2/32\", \"fd00::2/128\"]");
    assert!(problems(&text).iter().any(|p| p.message.contains("fd00::2/128")));
    // Neighbours and IPv4 vs IPv6 are not overlaps.
    ok(&two_peers(BOB, "[\"10.100.0.3/32\", \"fd00::2/128\", \"::/0\"]", ""));
}

#[test]
fn duplicate_public_keys_and_our_own_key_are_refused() {
    let p = problem(&two_peers(ALICE, "[\"10.100.0.3/32\"]", ""), "peer[1].public_key", ProblemKind::Duplicate);
    assert!(p.message.contains("same public key as peer[0] \"alice\" (line 5)"), "{}", p.message);
    assert!(!p.message.contains(ALICE));
    let p = problem(&two_peers(OUR_PUBLIC, "[\"10.100.0.3/32\"]", ""), "peer[1].public_key", ProblemKind::Conflict);
    assert!(p.message.contains("the bastion's own public key (of interface.private_key)"), "{}", p.message);
}

#[test]
fn names_are_unique_including_the_default_ones() {
    let p =
        problem(&two_peers(BOB, "[\"10.100.0.3/32\"]", "name = \"alice\"\n"), "peer[1].name", ProblemKind::Duplicate);
    assert_eq!(p.line, Some(11));
    assert!(p.message.contains("duplicate name \"alice\": peer[0] (line 5)"), "{}", p.message);
    let text = format!(
        "{}\n[[peer]]\nname = \"peer-1\"\npublic_key = \"{BOB}\"\nallowed_ips = [\"10.100.0.3/32\"]\n",
        minimal()
    );
    problem(&text, "peer[1].name", ProblemKind::Duplicate);
    problem(&two_peers(BOB, "[\"10.100.0.3/32\"]", "name = \"a\\nb\"\n"), "peer[1].name", ProblemKind::Invalid);
}

#[test]
fn keepalive_and_endpoint_are_checked() {
    let with = |line: &str| minimal().replace("allowed_ips", &format!("{line}\nallowed_ips"));
    problem(&with("persistent_keepalive = 0"), "peer[0].persistent_keepalive", ProblemKind::OutOfRange);
    problem(&with("persistent_keepalive = 65536"), "peer[0].persistent_keepalive", ProblemKind::OutOfRange);
    let p = problem(&with("endpoint = \"vpn.example.com:51820\""), "peer[0].endpoint", ProblemKind::Invalid);
    assert!(p.message.contains("does not resolve names"), "{}", p.message);
    problem(&with("endpoint = \"198.51.100.7\""), "peer[0].endpoint", ProblemKind::Invalid);
    problem(&with("endpoint = \"198.51.100.7:0\""), "peer[0].endpoint", ProblemKind::Invalid);
    assert_eq!(ok(&with("endpoint = \"198.51.100.7:51820\"")).peers[0].endpoint.unwrap().port(), 51820);
}

#[test]
fn nat_health_and_selftest_values_are_checked() {
    let with = |extra: &str| format!("{}{extra}\n", minimal());
    problem(&with("[nat]\nmasquerade = \"yes\""), "nat.masquerade", ProblemKind::WrongType);
    problem(&with("[nat]\negress = \"eth0/1\""), "nat.egress", ProblemKind::Invalid);
    problem(&with("[nat]\nreach = [\"10.0.1.1/24\"]"), "nat.reach[0]", ProblemKind::Invalid);
    problem(&with("[health]\nlisten = \"0.0.0.0\""), "health.listen", ProblemKind::Invalid);
    problem(&with("[health]\nlisten = \"0.0.0.0:0\""), "health.listen", ProblemKind::Invalid);
    problem(&with("[health]\ndrain_seconds = 3601"), "health.drain_seconds", ProblemKind::OutOfRange);
    problem(&with("[selftest]\ninterval_seconds = 0"), "selftest.interval_seconds", ProblemKind::OutOfRange);
    problem(&with("[selftest]\nprobes = [\"10.0.1.5\"]"), "selftest.probes[0]", ProblemKind::Invalid);
    problem(&with("[selftest]\naddress = \"10.100.0.0/24\""), "selftest.address", ProblemKind::Invalid);
    problem(&format!("nat = 1\n{}", minimal()), "nat", ProblemKind::WrongType);
}

#[test]
fn the_selftest_default_avoids_peers() {
    let c = ok(&minimal().replace("10.100.0.2/32", "10.100.0.128/25"));
    assert_eq!(c.selftest.address.to_string(), "10.100.0.127");
    // IPv6 only: the highest address of the first IPv6 network.
    let v6 = minimal().replace("10.100.0.1/24", "fd00:100::1/64").replace("10.100.0.2/32", "fd00:100::2/128");
    assert_eq!(ok(&v6).selftest.address.to_string(), "fd00:100::ffff:ffff:ffff:ffff");
    // A /32 tunnel address leaves nothing in IPv4; the IPv6 network is used.
    let mixed = minimal().replace("[\"10.100.0.1/24\"]", "[\"10.100.0.1/32\", \"fd00:100::1/64\"]");
    assert_eq!(ok(&mixed).selftest.address.to_string(), "fd00:100::ffff:ffff:ffff:ffff");
}

#[test]
fn no_free_selftest_address_asks_the_operator_for_one() {
    let text = minimal()
        .replace("10.100.0.1/24", "10.100.0.2/32")
        .replace("allowed_ips = [\"10.100.0.2/32\"]", "allowed_ips = [\"10.100.0.0/24\"]");
    let p = problem(&text, "selftest.address", ProblemKind::Conflict);
    assert_eq!(p.line, Some(1));
    assert!(p.message.contains("not /32: that is a client's way"), "{}", p.message);
    // A real tunnel network whose every host belongs to peers: set the address by hand.
    let text = minimal().replace("10.100.0.1/24", "10.100.0.1/30").replace("10.100.0.2/32", "10.100.0.2/31");
    let p = problem(&text, "selftest.address", ProblemKind::Conflict);
    assert!(p.message.contains("expected [selftest] address ="), "{}", p.message);
}

#[test]
fn an_explicit_selftest_address_must_be_free_and_inside_the_tunnel() {
    let with = |a: &str| format!("{}[selftest]\naddress = \"{a}\"\n", minimal());
    let p = problem(&with("10.100.0.2"), "selftest.address", ProblemKind::Overlap);
    assert!(p.message.contains("inside 10.100.0.2/32 of peer[0] \"peer-1\""), "{}", p.message);
    problem(&with("10.100.0.1"), "selftest.address", ProblemKind::Conflict);
    let p = problem(&with("10.200.0.1"), "selftest.address", ProblemKind::Conflict);
    assert!(p.message.contains("outside the tunnel networks (10.100.0.0/24)"), "{}", p.message);
    problem(&with("10.100.0.255"), "selftest.address", ProblemKind::Invalid);
    assert_eq!(ok(&with("10.100.0.9")).selftest.address.to_string(), "10.100.0.9");
}

#[test]
fn a_syntax_error_gives_its_line_and_toml_s_words() {
    let text = minimal().replace("address = [\"10.100.0.1/24\"]", "address = [\"10.100.0.1/24\"]\nname = \"wg0");
    let all = problems(&text);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!((all[0].line, all[0].field.as_str()), (Some(4), "file"));
    assert!(all[0].message.starts_with("TOML syntax: "), "{}", all[0].message);
    // An unclosed array runs on into the next lines: one problem per line, not a cascade.
    let text = minimal().replace("address = [\"10.100.0.1/24\"]", "address = [\"10.100.0.1/24\"");
    let all = problems(&text);
    let mut lines: Vec<_> = all.iter().map(|p| p.line).collect();
    lines.dedup();
    assert_eq!(lines.len(), all.len(), "{all:?}");
    // An unquoted key is a syntax error whose message never quotes the line.
    let text = minimal().replace(&format!("\"{OUR_KEY}\""), OUR_KEY);
    let e = parse(&text, "x", None).unwrap_err();
    assert_eq!(e.problems[0].line, Some(2));
    assert!(!e.to_string().contains(OUR_KEY));
}

#[test]
fn a_wg_quick_file_gets_pointed_at_convert() {
    let text = format!("[Interface]\nPrivateKey = {OUR_KEY}\nAddress = 10.100.0.1/24\n");
    let all = problems(&text);
    assert!(all.last().unwrap().message.contains("`bastion convert FILE`"), "{all:?}");
}

#[test]
fn every_problem_is_listed_in_file_order() {
    let text = format!(
        "[interface]\nprivate_key = \"short\"\naddress = [\"nope\"]\nmtu = 1\n\n\
         [[peer]]\npublic_key = \"{ALICE}\"\nallowed_ips = [\"10.100.0.2/33\"]\nbogus = 1\n\n\
         [[peer]]\npublic_key = \"{ALICE}\"\nallowed_ips = [\"10.100.0.3/32\"]\n\n[health]\ndrain_seconds = -5\n"
    );
    let all = problems(&text);
    let got: Vec<(Option<usize>, &str)> = all.iter().map(|p| (p.line, p.field.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(2), "interface.private_key"),
            (Some(3), "interface.address[0]"),
            (Some(4), "interface.mtu"),
            (Some(8), "peer[0].allowed_ips[0]"),
            (Some(9), "peer[0].bogus"),
            (Some(12), "peer[1].public_key"),
            (Some(16), "health.drain_seconds"),
        ]
    );
    let shown = parse(&text, "bastion.toml", None).unwrap_err().to_string();
    assert!(shown.starts_with("bastion.toml:2: interface.private_key: expected 44 characters"), "{shown}");
    assert_eq!(shown.lines().count(), 7);
}

#[test]
fn generated_keys_round_trip_through_the_config() {
    let key = PrivateKey::generate();
    let c = ok(&minimal().replace(OUR_KEY, &key.expose_base64()));
    assert_eq!(c.interface.private_key().unwrap().public_key(), key.public_key());
    let _ = CAROL;
}

#[test]
fn the_key_may_live_in_ssm() {
    let text = minimal().replace(&format!("private_key = \"{OUR_KEY}\""), "private_key_ssm = \"/bastion/prod/key\"");
    let c = parse(&text, "bastion.toml", None).unwrap();
    assert!(c.interface.private_key().is_none());
    assert!(matches!(&c.interface.key, InterfaceKey::Ssm { parameter } if parameter == "/bastion/prod/key"));
    let bad = text.replace("/bastion/prod/key", "/aws/key");
    let p = problem(&bad, "interface.private_key_ssm", ProblemKind::Invalid);
    assert!(p.message.contains("reserved"), "{}", p.message);
}

#[test]
fn metrics_control_source_and_aws_sections() {
    let c = parse(&minimal(), "bastion.toml", None).unwrap();
    assert_eq!(c.metrics.listen, None, "metrics are off by default");
    assert_eq!(c.control.socket, std::path::PathBuf::from("/run/bastion/wg0.sock"));
    assert_eq!((c.source.ssm_path.as_deref(), c.source.refresh_seconds), (None, 60));
    assert_eq!(c.aws, Aws::default());
    let text = minimal()
        + "[metrics]\nlisten = \"10.0.0.5:9586\"\n[control]\nsocket = \"/tmp/b.sock\"\n\
           [source]\nssm_path = \"/bastion/prod/\"\nrefresh_seconds = 30\n\
           [aws]\nregion = \"eu-west-1\"\nendpoint_url = \"https://vpce.example/\"\n";
    let c = parse(&text, "bastion.toml", None).unwrap();
    assert_eq!(c.metrics.listen, Some("10.0.0.5:9586".parse().unwrap()));
    assert_eq!(c.control.socket, std::path::PathBuf::from("/tmp/b.sock"));
    assert_eq!((c.source.ssm_path.as_deref(), c.source.refresh_seconds), (Some("/bastion/prod"), 30));
    assert_eq!(c.aws.region.as_deref(), Some("eu-west-1"));
    assert_eq!(c.aws.endpoint_url.as_deref(), Some("https://vpce.example"));

    problem(&(minimal() + "[source]\nrefresh_seconds = 1\n"), "source.refresh_seconds", ProblemKind::OutOfRange);
    problem(&(minimal() + "[aws]\nendpoint_url = \"ssm.local\"\n"), "aws.endpoint_url", ProblemKind::Invalid);
    problem(&(minimal() + "[control]\nsocket = \"wg0.sock\"\n"), "control.socket", ProblemKind::Invalid);
    let clash = minimal() + "[health]\nlisten = \"0.0.0.0:8080\"\n[metrics]\nlisten = \"10.0.0.5:8080\"\n";
    let p = problem(&clash, "metrics.listen", ProblemKind::Conflict);
    assert!(p.message.contains("never served on the health port"), "{}", p.message);
}

#[test]
fn a_reach_that_covers_the_tunnel_network_is_a_warning() {
    let text = format!(
        "[interface]\nprivate_key = \"{OUR_KEY}\"\naddress = [\"10.100.0.1/24\"]\n\n[[peer]]\npublic_key = \"{ALICE}\"\n\
         allowed_ips = [\"10.100.0.2/32\"]\nreach = [\"10.100.0.0/16\"]\n\n[nat]\nreach = [\"10.0.0.0/16\", \"0.0.0.0/0\"]\n"
    );
    let config = ok(&text);
    let fields: Vec<(Option<usize>, &str)> = config
        .warnings
        .iter()
        .filter(|w| w.message.contains("covers the tunnel network"))
        .map(|w| (w.line, w.field.as_str()))
        .collect();
    assert_eq!(fields, [(Some(8), "peer[0].reach[0]"), (Some(11), "nat.reach[1]")], "{:?}", config.warnings);
    assert!(config.warnings[0].message.contains("covers the tunnel network 10.100.0.0/24"));
    let quiet = ok(&text.replace("\"10.100.0.0/16\"", "\"10.0.2.0/24\"").replace(", \"0.0.0.0/0\"", ""));
    assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
}

#[test]
fn the_siblings_section() {
    let c = parse(&minimal(), "bastion.toml", None).unwrap();
    assert_eq!(c.siblings.target_group_arn, None, "off by default");
    let arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/bastion/50dc6c495c0c9188";
    let c = parse(&(minimal() + &format!("[siblings]\ntarget_group_arn = \"{arn}\"\n")), "bastion.toml", None).unwrap();
    assert_eq!(
        c.siblings,
        crate::config::Siblings {
            target_group_arn: Some(arn.into()),
            poll_seconds: 2,
            mark_unhealthy: true,
            take_over_addresses: false,
            register_self: false,
        }
    );
    let text = minimal()
        + &format!(
            "[siblings]\ntarget_group_arn = \"{arn}\"\npoll_seconds = 10\nmark_unhealthy = false\n\
             take_over_addresses = true\nregister_self = true\n"
        );
    let c = parse(&text, "bastion.toml", None).unwrap();
    assert_eq!((c.siblings.poll_seconds, c.siblings.mark_unhealthy, c.siblings.take_over_addresses), (10, false, true));
    assert!(c.siblings.register_self);
    problem(
        &(minimal() + "[siblings]\ntake_over_addresses = true\n"),
        "siblings.target_group_arn",
        ProblemKind::Missing,
    );

    let p = problem(
        &(minimal() + "[siblings]\ntarget_group_arn = \"bastion\"\n"),
        "siblings.target_group_arn",
        ProblemKind::Invalid,
    );
    assert!(
        p.message.contains("expected arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID"),
        "{}",
        p.message
    );
    problem(
        &(minimal() + &format!("[siblings]\ntarget_group_arn = \"{arn}\"\npoll_seconds = 1\n")),
        "siblings.poll_seconds",
        ProblemKind::OutOfRange,
    );
    problem(&(minimal() + "[siblings]\npoll_seconds = 5\n"), "siblings.target_group_arn", ProblemKind::Missing);
    problem(&(minimal() + "[siblings]\ntarget_group = \"x\"\n"), "siblings.target_group", ProblemKind::UnknownField);
}

#[test]
fn the_log_section() {
    let c = parse(&minimal(), "bastion.toml", None).unwrap();
    assert_eq!(c.log, crate::config::Log::default(), "text, no CloudWatch by default");
    let c = parse(
        &(minimal() + "[log]\nformat = \"json\"\ncloudwatch_group = \"/bastion/prod-Logs_1#a\"\n"),
        "b.toml",
        None,
    )
    .unwrap();
    assert_eq!(c.log, crate::config::Log { json: true, cloudwatch_group: Some("/bastion/prod-Logs_1#a".into()) });
    let p = problem(&(minimal() + "[log]\nformat = \"yaml\"\n"), "log.format", ProblemKind::Invalid);
    assert!(p.message.contains("expected \"text\" or \"json\""), "{}", p.message);
    problem(&(minimal() + "[log]\ncloudwatch_group = \"a b\"\n"), "log.cloudwatch_group", ProblemKind::Invalid);
    problem(&(minimal() + "[log]\ncloudwatch_group = \"\"\n"), "log.cloudwatch_group", ProblemKind::Invalid);
    problem(&(minimal() + "[log]\ngroup = \"x\"\n"), "log.group", ProblemKind::UnknownField);
}
