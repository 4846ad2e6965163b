//! The documentation's links: every relative link in README.md, ARCHITECTURE.md and docs/*.md
//! names a file that exists, and every `#anchor` a heading of the page it points into (GitHub's
//! slugs). Links to the web are not followed (this machine has no internet), but counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn pages() -> Vec<PathBuf> {
    let root = workspace();
    let mut pages = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The text outside fenced code blocks and inline code.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            let mut inline = false;
            for c in line.chars() {
                if c == '`' {
                    inline = !inline;
                } else if !inline {
                    out.push(c);
                }
            }
            out.push('\n');
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#'));
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 { base.clone() } else { format!("{base}-{n}") });
        *n += 1;
    }
    out
}

/// `(target)` of every `[text](target)`.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        match after.find(')') {
            Some(j) => {
                out.push(after[..j].to_string());
                rest = &after[j..];
            }
            None => break,
        }
    }
    out
}

#[test]
fn every_link_of_the_docs_resolves() {
    let mut problems = Vec::new();
    let (mut local, mut web) = (0, 0);
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let name = page.strip_prefix(workspace()).unwrap().display().to_string();
        for target in links(&prose(&text)) {
            if target.starts_with("http://") || target.starts_with("https://") || target.starts_with("mailto:") {
                web += 1;
                continue;
            }
            local += 1;
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file_path = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            if !file_path.exists() {
                problems.push(format!("{name}: ({target}): {} does not exist", file_path.display()));
                continue;
            }
            if !anchor.is_empty() {
                let linked = std::fs::read_to_string(&file_path).unwrap_or_default();
                if !anchors(&linked).iter().any(|a| a == anchor) {
                    problems.push(format!("{name}: ({target}): no heading #{anchor} in {file}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} broken links:\n{}", problems.len(), problems.join("\n"));
    assert!(local > 10, "only {local} local links found: the checker is not reading the pages");
    eprintln!("docs: {local} local links resolve; {web} web links not followed");
}

#[test]
fn the_front_door_stays_short() {
    let readme = std::fs::metadata(workspace().join("README.md")).unwrap().len();
    assert!(readme <= 12 * 1024, "README.md is {readme} bytes; keep it at most 12 KiB and move detail to docs/");
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(slug(" Health, drain, logs and status"), "health-drain-logs-and-status");
    assert_eq!(
        slug("The boot test (`make boot-test`, part of `make test`)"),
        "the-boot-test-make-boot-test-part-of-make-test"
    );
    assert_eq!(anchors("# A\n## A\n```\n# not\n```\n"), vec!["a", "a-1"]);
}

/// The commands of README's "Deploy on AWS" block, continuation lines joined.
fn readme_deploy_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let from = readme.find("Deploy on AWS").expect("README has a \"Deploy on AWS\" paragraph");
    let block = readme[from..].split("```sh\n").nth(1).and_then(|b| b.split("\n```").next()).expect("its sh block");
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        current.push_str(line.trim_end_matches('\\'));
        if !line.ends_with('\\') {
            commands.push(std::mem::take(&mut current));
        }
    }
    commands
}

/// README's deploy path, the steps that need no AWS account and no image build, run as
/// written (in a scratch folder where `target/release/bastion` is the binary under test and
/// `rootfs/` the checkout's): the key made and its public half kept, the config from the
/// example with the key in SSM, check-config, and a user added. The AWS steps are shown, not
/// run; `make build` and `make image` are what `make test` itself did.
#[test]
#[ignore = "needs BASTION_BIN: `make integration-test` runs it"]
fn the_readmes_local_deploy_steps_run_as_written() {
    let binary = bastion_tests::bastion::binary();
    let dir = bastion_tests::RunDir::new(&bastion_tests::unique_name("readme"));
    let scratch = dir.path();
    std::fs::create_dir_all(scratch.join("target/release")).unwrap();
    std::os::unix::fs::symlink(&binary, scratch.join("target/release/bastion")).unwrap();
    std::os::unix::fs::symlink(workspace().join("rootfs"), scratch.join("rootfs")).unwrap();
    let commands = readme_deploy_commands();
    let needs_aws_or_build =
        |c: &str| ["make ", "aws ", "AMI=$(", "ENDPOINT=$("].iter().any(|p| c.trim_start().starts_with(p));
    let (skipped, local): (Vec<&String>, Vec<&String>) = commands.iter().partition(|c| needs_aws_or_build(c));
    assert!(local.len() >= 5, "too few local steps found in README: {local:#?}");
    assert!(skipped.iter().any(|c| c.contains("cloudformation deploy")), "{skipped:#?}");
    // What the skipped `ENDPOINT=$(aws ...)` would have set.
    let script = format!(
        "set -euo pipefail\nENDPOINT=vpn.example.com:51820\n{}\n",
        local.iter().map(|c| c.as_str()).collect::<Vec<_>>().join("\n")
    );
    let out = std::process::Command::new("bash").arg("-c").arg(&script).current_dir(scratch).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "README's local steps failed:\n{script}\n{stderr}");
    assert!(!scratch.join("cluster.key").exists(), "the private key file must be gone");
    let public = std::fs::read_to_string(scratch.join("cluster.pub")).unwrap();
    assert_eq!(public.trim().len(), 44, "{public}");
    let config = std::fs::read_to_string(scratch.join("bastion.toml")).unwrap();
    assert!(
        config.contains("private_key_ssm = \"/bastion/prod/key\"") && !config.contains("\nprivate_key = "),
        "{config}"
    );
    assert!(config.contains("name = \"alice\""), "{config}");
    let client = std::fs::read_to_string(scratch.join("alice.conf")).unwrap();
    assert!(client.contains("Endpoint = vpn.example.com:51820"), "{client}");
    assert!(client.contains(&format!("PublicKey = {}", public.trim())), "{client}");
    eprintln!("README: {} local steps ran as written; {} AWS or build steps shown only", local.len(), skipped.len());
}
