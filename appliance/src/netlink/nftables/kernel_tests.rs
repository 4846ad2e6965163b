//! The root-only tests of the nf_tables encoding and batches: against the kernel, with `nft`
//! as the oracle, each in a scratch network namespace of its own.

use super::*;
use bastion_tests::scratch::run;
use ip_network::IpNetwork;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// A forward filter chain `c` that accepts by default.
fn forward_chain() -> BaseChain {
    BaseChain { name: "c".into(), kind: ChainType::Filter, hook: Hook::Forward, priority: 0, policy: Verdict::Accept }
}

/// nft colours the numbers of its dump with ANSI escapes.
fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Rebuilds the payload of each NEWRULE message from `nft --debug=mnl` output.
fn mnl_rule_payloads(dump: &str) -> Vec<Vec<u8>> {
    let mut rules = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut is_rule = false;
    for line in dump.lines() {
        let line = strip_colours(line);
        let line = line.trim_end();
        if line.starts_with("----------------") {
            continue;
        }
        if line.contains("|  type | flags  |") {
            if let Some(done) = current.take() {
                if is_rule {
                    rules.push(done);
                }
            }
            let kind: u16 = line.trim_start_matches('|').split('|').next().unwrap().trim().parse().unwrap();
            is_rule = kind == message_type(NFT_MSG_NEWRULE);
            current = Some(Vec::new());
            continue;
        }
        let Some(bytes) = current.as_mut() else { continue };
        if line.contains("|len |flags| type|") {
            let fields: Vec<&str> = line.split('|').collect();
            let len: u16 = fields[1].parse().unwrap();
            let mut kind: u16 = fields[3].parse().unwrap();
            if fields[2].contains('N') {
                kind |= message::NLA_F_NESTED;
            }
            bytes.extend(len.to_ne_bytes());
            bytes.extend(kind.to_ne_bytes());
        } else if line.contains("|      data      |") || line.contains("|  extra header  |") {
            let field = line.split('|').nth(1).unwrap();
            bytes.extend(field.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()));
        }
    }
    if let Some(done) = current {
        if is_rule {
            rules.push(done);
        }
    }
    rules
}

/// The oracle at byte level: our encoding of each rule equals what `nft` sends for the
/// same rule.
#[test]
fn kernel_rule_bytes_equal_what_nft_sends() {
    run(|netns| {
        netns.command_ok("nft", &["add table inet t; add chain inet t c"]);
        let cases = [
            Rule::new().established_or_related().verdict(Verdict::Accept),
            Rule::new().iifname("wg0").saddr(net("10.9.0.2/32")).daddr(net("10.0.1.0/24")).verdict(Verdict::Accept),
            Rule::new().iifname("wg0").daddr(net("10.0.16.0/20")).verdict(Verdict::Accept),
            Rule::new().iifname("wg0").saddr(net("fd00::2/128")).daddr(net("2001:db8::/33")).verdict(Verdict::Accept),
            Rule::new().iifname("wg0").daddr(net("0.0.0.0/0")).verdict(Verdict::Accept),
            Rule::new().iifname("wg0").verdict(Verdict::Drop),
            Rule::new().oifname("wg0").verdict(Verdict::Drop),
            Rule::new().iifname("wg0").oifname("eth0").masquerade(),
            Rule::new().iifname("wg0").echo_request(IpVersion::V4).verdict(Verdict::Accept),
            Rule::new().iifname("wg0").echo_request(IpVersion::V6).verdict(Verdict::Accept),
            Rule::new().iifname("wg0").daddr(net("169.254.169.254/32")).verdict(Verdict::Drop),
        ];
        for rule in &cases {
            let out = netns.command("nft", &["--debug=mnl", &format!("add rule inet t c {}", rule.text())]);
            assert!(out.status.success(), "nft add rule {}: {}", rule.text(), String::from_utf8_lossy(&out.stderr));
            // nft prints the dump on stdout (recent versions) or stderr (older ones).
            let dump = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let payloads = mnl_rule_payloads(&dump);
            assert_eq!(payloads.len(), 1, "one NEWRULE in nft's dump for {}", rule.text());
            let mut ours = Batch::new();
            ours.add_rule(FAMILY_INET, "t", "c", rule);
            let ours = &ours.messages[0].0[message::HEADER_LEN..];
            assert_eq!(ours, &payloads[0][..], "rule bytes differ for: {}", rule.text());
        }
    });
}

#[test]
fn kernel_batch_commit_reports_the_failing_message() {
    run(|netns| {
        assert!(!table_exists(FAMILY_INET, "bnl").unwrap());
        let chain = forward_chain();
        let mut batch = Batch::new();
        batch.add_table(FAMILY_INET, "bnl");
        batch.add_chain(FAMILY_INET, "bnl", &chain);
        batch.add_rule(FAMILY_INET, "bnl", "c", &Rule::new().iifname("x").verdict(Verdict::Drop));
        batch.commit().unwrap();
        assert!(table_exists(FAMILY_INET, "bnl").unwrap());
        let listed = netns.command_output("nft", &["list", "table", "inet", "bnl"]);
        assert!(listed.contains("iifname \"x\" drop"), "{listed}");

        // A rule for a chain that does not exist, in the middle of a batch: the whole
        // batch is refused, and the error names that message.
        let mut batch = Batch::new();
        batch.add_table(FAMILY_INET, "bnl2");
        batch.add_rule(FAMILY_INET, "bnl2", "missing", &Rule::new().verdict(Verdict::Accept));
        batch.add_table(FAMILY_INET, "bnl3");
        let err = batch.commit().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("message 2 of 3 (add rule inet bnl2 missing accept) failed"), "{text}");
        assert_eq!(errno(&err), Some(libc::ENOENT), "{text}");
        assert!(!table_exists(FAMILY_INET, "bnl2").unwrap(), "nothing of a failed batch is applied");
        assert!(!table_exists(FAMILY_INET, "bnl3").unwrap(), "nothing of a failed batch is applied");

        // Deleting a table that is not there fails; the other table stays.
        let mut batch = Batch::new();
        batch.delete_table(FAMILY_INET, "absent");
        let err = batch.commit().unwrap_err();
        assert!(err.to_string().contains("message 1 of 1 (delete table inet absent) failed"), "{err}");
        assert!(table_exists(FAMILY_INET, "bnl").unwrap());
    });
}

#[test]
fn kernel_large_batches_are_fully_acknowledged() {
    run(|netns| {
        let chain = forward_chain();
        let mut batch = Batch::new();
        batch.add_table(FAMILY_INET, "big");
        batch.add_chain(FAMILY_INET, "big", &chain);
        for i in 0..3000u32 {
            let destination = IpNetwork::V4(
                ip_network::Ipv4Network::new(std::net::Ipv4Addr::from(0x0a00_0000 | (i << 8)), 24).unwrap(),
            );
            batch.add_rule(
                FAMILY_INET,
                "big",
                "c",
                &Rule::new().iifname("wg0").daddr(destination).verdict(Verdict::Accept),
            );
        }
        batch.commit().unwrap();
        let listed = netns.command_output("nft", &["list", "chain", "inet", "big", "c"]);
        assert_eq!(listed.lines().filter(|l| l.ends_with(" accept")).count(), 3000);
        assert!(listed.contains("ip daddr 10.11.183.0/24"), "last rule present");
    });
}
