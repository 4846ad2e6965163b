//! The `bastion` binary's config commands, run as an operator runs them: `check-config` on good
//! and bad files (exit status, one `FILE:LINE: FIELD: MESSAGE` line per problem, no key ever
//! printed) and `convert` on the article's wg-quick files, whose output must pass `check-config`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BASTION: &str = env!("CARGO_BIN_EXE_bastion");
const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// A private key used only by these tests (`wg genkey`), so a leak is easy to spot.
const PRIVATE: &str = "gLoz1tzRRcIIb0HSjSEe3AW+c6DdUGJfQQ50arHBV20=";
const PEER_A: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const PEER_B: &str = "CLndk2VC55qYMfcevou7V13nrfd+WBrBBWozMazUKH8=";

/// A scratch folder removed when the test ends, pass or fail.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bastion-cli-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn bastion(args: &[&str]) -> Run {
    let Output { status, stdout, stderr } = Command::new(BASTION).args(args).output().expect("run bastion");
    Run { code: status.code(), stdout: String::from_utf8(stdout).unwrap(), stderr: String::from_utf8(stderr).unwrap() }
}

fn check_config(path: &Path) -> Run {
    bastion(&["check-config", path.to_str().unwrap()])
}

fn good_config() -> String {
    format!(
        "[interface]\nprivate_key = \"{PRIVATE}\"\naddress = [\"10.100.0.1/24\"]\n\n\
         [[peer]]\nname = \"alice\"\npublic_key = \"{PEER_A}\"\nallowed_ips = [\"10.100.0.2/32\"]\n\n\
         [[peer]]\nname = \"bob\"\npublic_key = \"{PEER_B}\"\nallowed_ips = [\"10.100.0.3/32\"]\n\n\
         [nat]\nreach = [\"10.0.1.0/24\"]\n"
    )
}

/// Runs check-config on `text`; asserts exit 2, no key in the output, and one well-formed line
/// naming `field` at `line`. Returns that line's message.
fn rejected(scratch: &Scratch, text: &str, line: usize, field: &str) -> String {
    let path = scratch.file("bastion.toml", text);
    let run = check_config(&path);
    assert_eq!(run.code, Some(2), "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(!run.stderr.contains(PRIVATE), "the private key leaked:\n{}", run.stderr);
    let prefix = format!("{}:{line}: {field}: ", path.display());
    let lines: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(lines.len(), 1, "expected one line starting {prefix:?} in:\n{}", run.stderr);
    lines[0][prefix.len()..].to_string()
}

#[test]
fn check_config_accepts_the_annotated_example() {
    let example = Path::new(MANIFEST).join("../rootfs/etc/bastion/bastion.toml.example");
    let run = check_config(&example);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    assert!(
        run.stdout.contains(": ok: wg0 10.100.0.1/24 fd00:100::1/64 port 51820, 1 peer, self-test from 10.100.0.254"),
        "{}",
        run.stdout
    );
    let text = std::fs::read_to_string(&example).unwrap();
    let key = text.lines().find_map(|l| l.strip_prefix("private_key = \"")).unwrap();
    assert!(!run.stdout.contains(&key[..44]));
}

#[test]
fn check_config_accepts_a_good_file_without_printing_keys() {
    let scratch = Scratch::new("good");
    let run = check_config(&scratch.file("bastion.toml", &good_config()));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("2 peers"), "{}", run.stdout);
    assert!(!run.stdout.contains(PRIVATE) && !run.stderr.contains(PRIVATE));
}

#[test]
fn an_unknown_field_is_named_with_the_known_ones() {
    let scratch = Scratch::new("unknown");
    let text = good_config().replace("[nat]\n", "[nat]\nmasquarade = true\n");
    let message = rejected(&scratch, &text, 16, "nat.masquarade");
    assert!(message.contains("known fields: masquerade, egress, reach"), "{message}");
}

#[test]
fn a_bad_key_is_named_and_never_echoed() {
    let scratch = Scratch::new("badkey");
    let mangled = PRIVATE.replace('=', "");
    let text = good_config().replace(PRIVATE, &mangled);
    let message = rejected(&scratch, &text, 2, "interface.private_key");
    assert!(message.contains("expected 44 characters of base64"), "{message}");
    assert!(!message.contains(&mangled));
    let text = good_config().replace(PEER_B, "hunter2");
    rejected(&scratch, &text, 12, "peer[1].public_key");
}

#[test]
fn overlapping_allowed_ips_name_both_peers() {
    let scratch = Scratch::new("overlap");
    let text = good_config().replace("10.100.0.3/32", "10.100.0.0/28");
    let message = rejected(&scratch, &text, 13, "peer[1].allowed_ips[0]");
    assert!(message.contains("\"bob\"") && message.contains("\"alice\""), "{message}");
    assert!(message.contains("10.100.0.2/32"), "{message}");
}

#[test]
fn a_bad_address_is_named() {
    let scratch = Scratch::new("address");
    let text = good_config().replace("[\"10.100.0.1/24\"]", "[\"10.100.0.1/24\", \"10.100.0.256/24\"]");
    let message = rejected(&scratch, &text, 3, "interface.address[1]");
    assert!(message.contains("found \"10.100.0.256/24\", expected an IPv4 or IPv6 address"), "{message}");
    let text = good_config().replace("[\"10.0.1.0/24\"]", "[\"10.0.1.1/24\"]");
    let message = rejected(&scratch, &text, 16, "nat.reach[0]");
    assert!(message.contains("host bits set"), "{message}");
}

#[test]
fn a_syntax_error_gives_the_line() {
    let scratch = Scratch::new("syntax");
    // The key pasted without quotes, as a wg-quick habit would have it.
    let text = good_config().replace(&format!("\"{PRIVATE}\""), PRIVATE);
    let message = rejected(&scratch, &text, 2, "file");
    assert!(message.starts_with("TOML syntax: "), "{message}");
}

#[test]
fn a_missing_key_file_gives_the_path_and_the_os_error() {
    let scratch = Scratch::new("keyfile");
    let text =
        good_config().replace(&format!("private_key = \"{PRIVATE}\""), "private_key_file = \"keys/bastion.key\"");
    let message = rejected(&scratch, &text, 2, "interface.private_key_file");
    let expected = format!("cannot read {}: No such file or directory", scratch.0.join("keys/bastion.key").display());
    assert!(message.starts_with(&expected), "{message}");

    // And once it exists, relative to the config file, it is read.
    std::fs::create_dir_all(scratch.0.join("keys")).unwrap();
    scratch.file("keys/bastion.key", &format!("{PRIVATE}\n"));
    let run = check_config(&scratch.file("bastion.toml", &text));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn every_problem_is_listed_one_per_line() {
    let scratch = Scratch::new("every");
    let text = good_config()
        .replace("10.100.0.1/24", "10.100.0.1")
        .replace(PEER_B, PEER_A)
        .replace("name = \"bob\"", "name = \"alice\"")
        .replace("[nat]\n", "[nat]\negress = \"\"\n[telemetry]\n");
    let path = scratch.file("bastion.toml", &text);
    let run = check_config(&path);
    assert_eq!(run.code, Some(2));
    let file = path.display().to_string();
    let heads: Vec<String> = run
        .stderr
        .lines()
        .map(|l| {
            let rest = l.strip_prefix(&format!("{file}:")).unwrap_or_else(|| panic!("not FILE:LINE: {l}"));
            let mut parts = rest.splitn(3, ": ");
            format!("{}: {}", parts.next().unwrap(), parts.next().unwrap())
        })
        .collect();
    assert_eq!(
        heads,
        ["3: interface.address[0]", "11: peer[1].name", "12: peer[1].public_key", "16: nat.egress", "17: telemetry"],
        "{}",
        run.stderr
    );
}

#[test]
fn check_config_reports_an_unreadable_file_and_a_wg_quick_file() {
    let run = bastion(&["check-config", "/nonexistent/bastion.toml"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("/nonexistent/bastion.toml: file: cannot read: No such file"), "{}", run.stderr);

    let server = fixture("article-server");
    let run = check_config(&server);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("`bastion convert FILE`"), "{}", run.stderr);
    assert!(!run.stderr.contains(&fixture_private_key(&server)), "{}", run.stderr);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(MANIFEST).join("tests/fixtures").join(name).join("wg0.conf")
}

fn fixture_private_key(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text.lines().find(|l| l.starts_with("PrivateKey")).unwrap();
    line.split_once('=').unwrap().1.trim().to_string()
}

/// Converts a fixture; checks the key appears exactly once on stdout (the operator's own
/// config) and never on stderr or in the notes.
fn convert(path: &Path) -> Run {
    let run = bastion(&["convert", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let key = fixture_private_key(path);
    assert!(!run.stderr.contains(&key), "the private key leaked into the notes:\n{}", run.stderr);
    assert_eq!(run.stdout.matches(&key).count(), 1, "{}", run.stdout);
    assert!(run.stdout.contains(&format!("private_key = \"{key}\"")), "{}", run.stdout);
    run
}

#[test]
fn the_article_server_file_converts_and_passes_check_config() {
    let scratch = Scratch::new("server");
    let source = fixture("article-server");
    let run = convert(&source);
    let file = source.display().to_string();
    for expected in [
        format!("{file}:7: PostUp `iptables -A FORWARD -i wg0 -j ACCEPT` lets peers reach every IPv4 destination"),
        format!("{file}:7: PostUp `iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE`: replaced by [nat] masquerade = true, egress = \"eth0\""),
        format!("{file}:8: PostDown `iptables -D FORWARD -i wg0 -j ACCEPT`: not needed"),
        format!("{file}:8: PostDown `iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE`: not needed"),
    ] {
        assert!(run.stderr.contains(&expected), "missing {expected:?} in:\n{}", run.stderr);
    }
    assert!(!run.stderr.contains("does not pass check-config"), "{}", run.stderr);

    let converted = scratch.file("bastion.toml", &run.stdout);
    let check = check_config(&converted);
    assert_eq!(check.code, Some(0), "{}\n{}", check.stderr, run.stdout);
    assert!(
        check.stdout.contains("ok: wg0 10.100.0.1/24 port 51820, 1 peer, self-test from 10.100.0.254"),
        "{}",
        check.stdout
    );

    // Lossless: the peer's key and address, the NAT rules.
    let source_text = std::fs::read_to_string(&source).unwrap();
    let peer_key = source_text.lines().find_map(|l| l.strip_prefix("PublicKey = ")).unwrap();
    assert!(
        run.stdout.contains(&format!("public_key = \"{peer_key}\"\nallowed_ips = [\"10.100.0.2/32\"]")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("[nat]\nmasquerade = true\negress = \"eth0\"\nreach = [\"0.0.0.0/0\"]"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_article_client_file_converts_with_notes_on_what_a_bastion_does_not_use() {
    let scratch = Scratch::new("client");
    let source = fixture("article-client");
    let run = convert(&source);
    for expected in [
        "this looks like a client's file",
        "DNS = 10.0.0.2 not carried",
        "no MASQUERADE rule",
        "the converted file does not pass check-config yet: selftest.address",
    ] {
        assert!(run.stderr.contains(expected), "missing {expected:?} in:\n{}", run.stderr);
    }
    for carried in [
        "address = [\"10.100.0.2/32\"]",
        "allowed_ips = [\"10.0.0.0/16\", \"10.100.0.0/24\"]",
        "endpoint = \"192.0.2.10:51820\"",
        "persistent_keepalive = 25",
    ] {
        assert!(run.stdout.contains(carried), "missing {carried:?} in:\n{}", run.stdout);
    }

    // What convert predicted is exactly what check-config says: a client's /32 tunnel address
    // leaves no room for the self-test client, and the message says how a bastion writes it.
    let converted = scratch.file("client.toml", &run.stdout);
    let check = check_config(&converted);
    assert_eq!(check.code, Some(2));
    assert_eq!(check.stderr.lines().count(), 1, "{}", check.stderr);
    assert!(check.stderr.contains(": selftest.address: no free address"), "{}", check.stderr);
    assert!(check.stderr.contains("e.g. 10.100.0.1/24"), "{}", check.stderr);
}

#[test]
fn convert_refuses_garbage_with_lines() {
    let scratch = Scratch::new("garbage");
    let path = scratch.file(
        "wg0.conf",
        &format!("[Interface]\nPrivateKey = {}\nPostUp\n[Peer]\nAllowedIPs = 10.0.0.0/8\n", &PRIVATE[..30]),
    );
    let run = bastion(&["convert", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(2));
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:2: Interface.PrivateKey: expected 44 characters"),
        format!("{file}:3: file: found a line without '='"),
        format!("{file}:4: Peer[0].PublicKey: missing"),
    ] {
        assert!(run.stderr.contains(&expected), "missing {expected:?} in:\n{}", run.stderr);
    }
    assert!(!run.stderr.contains(&PRIVATE[..30]));
}
