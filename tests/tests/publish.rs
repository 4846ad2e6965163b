//! `bastion-image publish` against a real AWS API emulator (moto in server mode), with the real
//! image `make image` built: every block read back with boto3 and compared with the file, the
//! attributes RegisterImage was given (from moto's recorder: moto itself drops them), a second
//! run that changes nothing, a dry run that writes nothing, faults (throttling and 503s from a
//! proxy) retried to a byte-identical result, copies and sharing, an interrupted run's leftover
//! cleaned up, and the errors an operator can act on.
//!
//! Needs root (namespaces), the virtualenv from `make test-deps`, and from the Makefile
//! `BASTION_IMAGE_BIN` (the publisher) and `BASTION_DISK` (out/aarch64/disk.img).

use std::path::PathBuf;

use bastion_tests::aws::{AwsEmulator, FaultProxy};
use bastion_tests::{unique_name, Netns, Output, RunDir};

const REGION: &str = "eu-west-1";

fn required(var: &str, what: &str) -> PathBuf {
    let path = PathBuf::from(
        std::env::var_os(var).unwrap_or_else(|| panic!("{var} is not set: run `make integration-test` ({what})")),
    );
    assert!(path.is_file(), "{var}={} is not a file ({what})", path.display());
    path
}

/// A namespace with only `lo` (no route anywhere: the real IMDS and AWS are unreachable), moto
/// in it, and the paths of the publisher and the image.
struct Bed {
    moto: AwsEmulator,
    ns: Netns,
    dir: RunDir,
    publisher: PathBuf,
    disk: PathBuf,
}

impl Bed {
    fn new() -> Bed {
        bastion_tests::require_root_and_tools();
        let publisher = required("BASTION_IMAGE_BIN", "the bastion-image binary");
        let disk = required("BASTION_DISK", "the disk image `make image` builds");
        let name = unique_name("aws");
        let dir = RunDir::new(&name);
        let ns = Netns::new(&name);
        let moto = AwsEmulator::start(&ns, &dir, 5000, &[]);
        Bed { moto, ns, dir, publisher, disk }
    }

    /// `bastion-image publish ARGS` in the namespace with test credentials and `endpoint`.
    fn publish_via(&self, endpoint: &str, args: &[&str]) -> Output {
        let mut argv: Vec<String> = vec![
            "env".into(),
            "-i".into(),
            "PATH=/usr/bin:/bin".into(),
            format!("HOME={}", self.dir.path().display()),
            format!("AWS_ENDPOINT_URL={endpoint}"),
            "AWS_ACCESS_KEY_ID=AKIDTESTPUBLISH".into(),
            "AWS_SECRET_ACCESS_KEY=test-secret".into(),
            self.publisher.display().to_string(),
            "publish".into(),
            "--region".into(),
            REGION.into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        self.ns.exec(&argv)
    }

    fn publish(&self, args: &[&str]) -> Output {
        self.publish_via(&self.moto.url(), args)
    }

    fn disk(&self) -> &str {
        self.disk.to_str().unwrap()
    }

    /// The one snapshot carrying our tag for `name` (DescribeImages in moto shows a snapshot
    /// of its own making, not ours).
    fn snapshot_of(&self, name: &str) -> String {
        let tagged = self.moto.verify(REGION, &["snapshots-tagged", name]);
        let list = tagged.as_array().unwrap();
        assert_eq!(list.len(), 1, "snapshots tagged {name}: {tagged}");
        list[0]["id"].as_str().unwrap().to_string()
    }

    /// Reads every block of `name`'s snapshot back and checks it against the image.
    fn assert_identical(&self, name: &str) -> usize {
        let snapshot = self.snapshot_of(name);
        let back = self.moto.verify(REGION, &["readback", &snapshot, self.disk()]);
        assert_eq!(back["blocks"], back["expected"], "the snapshot's blocks are the image's non-zero blocks: {back}");
        assert_eq!(back["mismatched"], serde_json::json!([]), "blocks that differ from the image: {back}");
        back["blocks"].as_array().unwrap().len()
    }

    fn recording(&self, label: &str) -> serde_json::Value {
        let file = self.dir.path().join(format!("recording-{label}.jsonl"));
        self.moto.save_recording(&file);
        self.moto.verify(REGION, &["recording", file.to_str().unwrap(), self.disk()])
    }
}

/// `REGION AMI` lines of stdout.
fn amis(out: &Output) -> Vec<(String, String)> {
    out.stdout.lines().filter_map(|l| l.split_once(' ')).map(|(r, a)| (r.to_string(), a.to_string())).collect()
}

fn actions(recording: &serde_json::Value) -> Vec<String> {
    recording["actions"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

const WRITING: &[&str] = &[
    "ebs:StartSnapshot",
    "ebs:PutSnapshotBlock",
    "ebs:CompleteSnapshot",
    "ec2:RegisterImage",
    "ec2:DeregisterImage",
    "ec2:DeleteSnapshot",
    "ec2:CopyImage",
    "ec2:ModifyImageAttribute",
    "ec2:ModifySnapshotAttribute",
    "ec2:CreateTags",
];

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn publishes_every_block_registers_the_image_and_a_second_run_changes_nothing() {
    let bed = Bed::new();
    bed.moto.start_recording();
    let started = std::time::Instant::now();
    let first = bed.publish(&[bed.disk()]);
    let took = started.elapsed();
    assert!(first.success(), "{first}");
    let lines = amis(&first);
    assert_eq!(lines.len(), 1, "{first}");
    assert_eq!(lines[0].0, REGION);
    assert!(lines[0].1.starts_with("ami-"), "{first}");
    let recorded = bed.recording("first");

    // The image: named from its version and architecture, with the attributes the issue lists.
    let register = &recorded["register"];
    let name = register["Name"].as_str().unwrap().to_string();
    assert!(name.starts_with("bastion-") && name.ends_with("-arm64"), "{name}");
    for (key, value) in [
        ("Architecture", "arm64"),
        ("BootMode", "uefi"),
        ("VirtualizationType", "hvm"),
        ("EnaSupport", "true"),
        ("ImdsSupport", "v2.0"),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
    ] {
        assert_eq!(register[key], value, "RegisterImage {key}: {register}");
    }
    assert!(register["Description"]
        .as_str()
        .unwrap()
        .contains(name.trim_start_matches("bastion-").trim_end_matches("-arm64")));
    let snapshot = bed.snapshot_of(&name);
    assert_eq!(register["BlockDeviceMapping.1.Ebs.SnapshotId"], snapshot.as_str(), "the root device is our snapshot");
    // The snapshot: 1 GiB, tagged, a client token; every block checksummed right, and the
    // whole snapshot's linear checksum and block count.
    let start = &recorded["start"];
    assert_eq!(start["VolumeSize"], 1, "{start}");
    assert!(start["ClientToken"].as_str().is_some_and(|t| !t.is_empty()), "{start}");
    assert!(start["Tags"].to_string().contains(&format!("\"Value\":\"{name}\"")), "{start}");
    let blocks = bed.assert_identical(&name);
    assert_eq!(recorded["puts"], blocks, "one PutSnapshotBlock per data block, no more");
    assert_eq!(recorded["bad_checksums"], serde_json::json!([]), "{recorded}");
    assert_eq!(recorded["complete"]["changed_blocks"], blocks.to_string().as_str());
    assert_eq!(recorded["complete"]["checksum_ok"], true, "{recorded}");
    assert_eq!(
        (recorded["complete"]["algorithm"].as_str(), recorded["complete"]["aggregation"].as_str()),
        (Some("SHA256"), Some("LINEAR"))
    );
    eprintln!(
        "FIGURE publish: {blocks} blocks ({:.1} MiB) in {:.2} s wall, {} requests; stderr:\n{}",
        blocks as f64 / 2.0,
        took.as_secs_f64(),
        recorded["actions"].as_array().unwrap().len(),
        first.stderr
    );

    // Again: the same AMI, nothing written.
    bed.moto.start_recording();
    let second = bed.publish(&[bed.disk()]);
    assert!(second.success(), "{second}");
    assert_eq!(amis(&second), lines, "{second}");
    assert!(second.stderr.contains("is already there; nothing uploaded"), "{second}");
    let again = actions(&bed.recording("second"));
    assert!(again.iter().all(|a| !WRITING.contains(&a.as_str())), "a second run wrote: {again:?}");

    // A dry run of another name: the plan on stdout, read calls only.
    bed.moto.start_recording();
    let dry = bed.publish(&["--dry-run", "--name", "bastion-dry-run", "--copy-to-region", "us-east-1", bed.disk()]);
    assert!(dry.success(), "{dry}");
    assert!(
        dry.stdout.contains("name         bastion-dry-run") && dry.stdout.contains("copy to      us-east-1"),
        "{dry}"
    );
    assert!(dry.stdout.contains("it would be uploaded"), "{dry}");
    let dry_actions = actions(&bed.recording("dry"));
    assert!(dry_actions.iter().all(|a| !WRITING.contains(&a.as_str())), "a dry run wrote: {dry_actions:?}");
    assert!(bed.moto.verify(REGION, &["image", "bastion-dry-run"]).as_array().unwrap().is_empty());
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn throttling_and_server_errors_are_retried_to_an_identical_snapshot() {
    let bed = Bed::new();
    // Every 4th request fails: throttling (EBS's 400 RequestThrottledException and EC2's
    // RequestLimitExceeded) and plain 503s.
    let proxy = FaultProxy::start(&bed.ns, &bed.dir, 5100, &bed.moto, 4);
    let out = bed.publish_via(&proxy.url(), &["--name", "bastion-faults", bed.disk()]);
    assert!(out.success(), "{out}");
    let faults = proxy.faults();
    let throttled_ebs = faults.iter().filter(|(k, s)| k == "throttle" && s == "ebs").count();
    let unavailable = faults.iter().filter(|(k, _)| k == "unavailable").count();
    assert!(throttled_ebs >= 3 && unavailable >= 3, "faults injected: {faults:?}");
    let blocks = bed.assert_identical("bastion-faults");
    assert!(blocks > 0);
    let summary = out.stderr.lines().find(|l| l.contains("publish: done:")).unwrap_or("");
    let retried: usize = summary.split(", ").nth(1).and_then(|p| p.split(' ').next()?.parse().ok()).unwrap_or(0);
    assert_eq!(retried, faults.len(), "every injected fault was retried once: {summary}\n{faults:?}");
    eprintln!(
        "FIGURE publish-faults: {} faults injected ({throttled_ebs} EBS throttling, {unavailable} 503); {summary}",
        faults.len()
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn copies_to_another_region_and_shares_with_an_account() {
    let bed = Bed::new();
    let out = bed.publish(&[
        "--name",
        "bastion-shared",
        "--copy-to-region",
        "us-east-1",
        "--share-with",
        "111122223333",
        bed.disk(),
    ]);
    assert!(out.success(), "{out}");
    let lines = amis(&out);
    assert_eq!(
        lines.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
        [REGION, "us-east-1"],
        "home region first: {out}"
    );
    let copy = bed.moto.verify("us-east-1", &["image", "bastion-shared"]);
    assert_eq!(copy[0]["id"], lines[1].1.as_str(), "{copy}");
    for (region, ami) in &lines {
        let permissions = bed.moto.verify(region, &["permissions", ami]);
        assert_eq!(permissions["launch"], serde_json::json!(["111122223333"]), "{region}: {permissions}");
        let volumes = permissions["create_volume"].as_object().unwrap();
        assert!(
            !volumes.is_empty() && volumes.values().all(|v| v == &serde_json::json!(["111122223333"])),
            "{region}: {permissions}"
        );
    }
    // Idempotent for the copy too.
    let again = bed.publish(&["--name", "bastion-shared", "--copy-to-region", "us-east-1", bed.disk()]);
    assert!(again.success(), "{again}");
    assert_eq!(amis(&again), lines, "{again}");
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn an_interrupted_runs_snapshot_is_removed_and_force_replaces_the_image() {
    let bed = Bed::new();
    let left = bed.moto.verify(REGION, &["leftover", "bastion-resumed"]);
    let out = bed.publish(&["--name", "bastion-resumed", bed.disk()]);
    assert!(out.success(), "{out}");
    let left_id = left["id"].as_str().unwrap();
    assert!(out.stderr.contains(&format!("deleted {left_id}")), "{out}");
    bed.assert_identical("bastion-resumed");
    let first = amis(&out);
    let forced = bed.publish(&["--name", "bastion-resumed", "--force", bed.disk()]);
    assert!(forced.success(), "{forced}");
    assert!(forced.stderr.contains(&format!("--force: deregistered {}", first[0].1)), "{forced}");
    assert_ne!(amis(&forced), first, "a new AMI");
    bed.assert_identical("bastion-resumed");
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn errors_say_what_to_do() {
    let bed = Bed::new();
    // No credentials anywhere (and no IMDS: the namespace has no route to it).
    let out = bed.ns.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        &format!("HOME={}", bed.dir.path().display()),
        bed.publisher.to_str().unwrap(),
        "publish",
        "--region",
        REGION,
        bed.disk(),
    ]);
    assert!(!out.success());
    for looked in [
        "no AWS credentials found",
        "environment (AWS_ACCESS_KEY_ID unset)",
        "profile \"default\"",
        "web identity",
        "container",
        "EC2 instance metadata",
    ] {
        assert!(out.stderr.contains(looked), "{looked:?} missing:\n{out}");
    }
    // No region.
    let out = bed.ns.exec(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        "HOME=/nonexistent",
        bed.publisher.to_str().unwrap(),
        "publish",
        bed.disk(),
    ]);
    assert!(!out.success() && out.stderr.contains("no AWS region: pass --region"), "{out}");
    // Not a bastion image.
    let junk = bed.dir.write("junk.img", &"x".repeat(8 << 20));
    let out = bed.publish(&[junk.to_str().unwrap()]);
    assert!(
        !out.success() && out.stderr.contains("no GPT header") && out.stderr.contains("bastion-image build"),
        "{out}"
    );
    // Access denied, with moto checking signatures and IAM policies: a user that may only
    // look. Its Describe calls pass moto's SigV4 check; StartSnapshot is refused.
    let strict = AwsEmulator::start(&bed.ns, &bed.dir, 5001, &[("INITIAL_NO_AUTH_ACTION_COUNT", "3")]);
    let user = strict.verify(REGION, &["iam-user", "ec2:Describe*", "ec2:DeleteSnapshot"]);
    let with_key = |secret: &str| {
        bed.ns.exec(&[
            "env".to_string(),
            "-i".into(),
            "PATH=/usr/bin:/bin".into(),
            "HOME=/nonexistent".into(),
            format!("AWS_ENDPOINT_URL={}", strict.url()),
            format!("AWS_ACCESS_KEY_ID={}", user["id"].as_str().unwrap()),
            format!("AWS_SECRET_ACCESS_KEY={secret}"),
            bed.publisher.display().to_string(),
            "publish".into(),
            "--region".into(),
            REGION.into(),
            bed.disk().into(),
        ])
    };
    let denied = with_key(user["secret"].as_str().unwrap());
    assert!(!denied.success(), "{denied}");
    assert!(denied.stderr.contains("no AMI named"), "the signed Describe calls were accepted: {denied}");
    assert!(
        denied.stderr.contains("ebs:StartSnapshot was denied")
            && denied.stderr.contains("need the IAM permission ebs:StartSnapshot"),
        "{denied}"
    );
    let wrong = with_key("not-the-secret");
    assert!(!wrong.success() && wrong.stderr.contains("AuthFailure"), "{wrong}");
    eprintln!("FIGURE publish-errors: {}", denied.stderr.lines().last().unwrap_or(""));
}
