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
