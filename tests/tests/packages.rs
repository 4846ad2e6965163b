//! `image/fetch-packages.sh fetch` when a pinned package is gone from the Debian archive (as
//! happens to every kernel ABI): the build goes on with the newest version Debian serves, says
//! so loudly, and records it as a fallback in resolved.lock (which the image carries); with
//! BASTION_PACKAGES_STRICT=1 it stops instead. Uses the real Debian archive (apt).
//!
//! Needs root (apt-get) and the network to Debian's mirrors. The cache under
//! out/cache/fallback-test/ is kept, so the current kernel is downloaded once per machine.

use std::path::Path;

use bastion_tests::command::run;
use bastion_tests::{unique_name, RunDir};

#[test]
#[ignore = "needs root and the Debian archive: `make integration-test` runs it"]
fn a_pin_gone_from_the_archive_falls_back_to_the_newest_and_says_so() {
    bastion_tests::require_tools(&["apt-get", "apt-cache", "dpkg", "sha256sum"]);
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "apt-get needs root");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = workspace.join("image/fetch-packages.sh");
    let lock = std::fs::read_to_string(workspace.join("image/packages.lock")).unwrap();
    let dir = RunDir::new(&unique_name("pkgs"));
    // The pinned stub stays; the kernel is a version no archive has.
    let bogus = lock
        .lines()
        .filter(|l| l.starts_with("aarch64"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f[1].starts_with("linux-image-") {
                format!("aarch64 linux-image-6.1.0-1-cloud-arm64 6.1.4-1 {}", f[3])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let lock_file = dir.write("packages.lock", &format!("{bogus}\n"));
    let cache = workspace.join("out/cache/fallback-test/aarch64");
    std::fs::create_dir_all(&cache).unwrap();
    let fetch = |strict: bool| {
        let mut argv = vec!["env".to_string(), format!("LOCK_FILE={}", lock_file.display())];
        if strict {
            argv.push("BASTION_PACKAGES_STRICT=1".into());
        }
        argv.extend([
            "bash".into(),
            script.display().to_string(),
            "fetch".into(),
            "aarch64".into(),
            cache.display().to_string(),
        ]);
        run(&argv)
    };
    let out = fetch(false);
    assert!(out.success(), "{out}");
    assert!(
        out.stderr.contains(
            "WARNING: linux-image-6.1.0-1-cloud-arm64 6.1.4-1, pinned in image/packages.lock, is no longer in"
        ),
        "{out}"
    );
    let resolved = std::fs::read_to_string(cache.join("resolved.lock")).unwrap();
    let lines: Vec<Vec<&str>> =
        resolved.lines().filter(|l| !l.starts_with('#')).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 2, "{resolved}");
    let kernel = lines.iter().find(|f| f[1].starts_with("linux-image-")).unwrap();
    assert_eq!(kernel[4], "fallback", "{resolved}");
    assert!(kernel[1].ends_with("-cloud-arm64") && kernel[1] != "linux-image-6.1.0-1-cloud-arm64", "{resolved}");
    let deb = cache.join(format!("{}_{}_arm64.deb", kernel[1], kernel[2].replace(':', "%3a")));
    let sum = run(&["sha256sum", deb.to_str().unwrap()]);
    assert_eq!(sum.stdout.split_whitespace().next(), Some(kernel[3]), "the recorded sha256 is the file's: {resolved}");
    let stub = lines.iter().find(|f| f[1] == "systemd-boot-efi").unwrap();
    assert_eq!(stub[4], "pinned", "{resolved}");
    eprintln!("FIGURE packages: fallback to {} {}", kernel[1], kernel[2]);

    let strict = fetch(true);
    assert!(!strict.success() && strict.stderr.contains("BASTION_PACKAGES_STRICT=1 refuses the fallback"), "{strict}");
}
