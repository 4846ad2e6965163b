//! `deploy/bastion.yaml`: cfn-lint passes it, and our own check (`tests/deploy/check_template.py`)
//! finds it consistent with what the appliance really listens on (asked of the binary under
//! test with `check-config`). The own check is shown to catch what cfn-lint lets through: a
//! misspelt target-group attribute, an HTTPS health check on a UDP target group, the wrong ports,
//! a long deregistration delay, `[siblings]` without the permissions it needs.
//!
//! Needs the virtualenv from `make test-deps` and `BASTION_BIN`.

use std::path::{Path, PathBuf};

use bastion_tests::aws::venv;
use bastion_tests::command::run;
use bastion_tests::{unique_name, RunDir};

fn template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/bastion.yaml")
}

/// (listen port, health port, drain seconds) of a config that sets none of them.
fn appliance_defaults(dir: &RunDir) -> (u16, u16, u64) {
    let binary = bastion_tests::bastion::binary();
    let config = dir.write(
        "minimal.toml",
        "[interface]\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\naddress = [\"10.100.0.1/24\"]\n",
    );
    let out = run(&[binary.to_str().unwrap(), "check-config", config.to_str().unwrap()]);
    assert!(out.success(), "{out}");
    let after = |label: &str| -> String {
        out.stdout
            .split(label)
            .nth(1)
            .and_then(|t| t.split([',', ' ', '\n']).next())
            .unwrap_or_else(|| panic!("no {label:?} in {}", out.stdout))
            .to_string()
    };
    let port = after(" port ").parse().unwrap();
    let health = after("health on ").rsplit(':').next().unwrap().parse().unwrap();
    let drain = after("drain ").parse().unwrap();
    (port, health, drain)
}

fn own_check(template: &Path, defaults: (u16, u16, u64)) -> (bool, serde_json::Value) {
    let out = run(&[
        venv().join("bin/python").to_str().unwrap(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/check_template.py").to_str().unwrap(),
        template.to_str().unwrap(),
        "--listen-port",
        &defaults.0.to_string(),
        "--health-port",
        &defaults.1.to_string(),
        "--drain-seconds",
        &defaults.2.to_string(),
    ]);
    let report = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    (out.success(), report)
}

fn cfn_lint(template: &Path) -> bastion_tests::Output {
    run(&[venv().join("bin/cfn-lint").to_str().unwrap(), template.to_str().unwrap()])
}

#[test]
#[ignore = "needs the virtualenv and BASTION_BIN: `make integration-test` runs it"]
fn the_template_passes_cfn_lint_and_matches_the_appliance() {
    let dir = RunDir::new(&unique_name("deploy"));
    let lint = cfn_lint(&template());
    assert!(lint.success(), "cfn-lint: {lint}");
    let defaults = appliance_defaults(&dir);
    assert_eq!(defaults, (51820, 8080, 30), "the appliance's defaults moved: update deploy/bastion.yaml");
    let (ok, report) = own_check(&template(), defaults);
    assert!(ok, "{report:#}");
}

#[test]
#[ignore = "needs the virtualenv and BASTION_BIN: `make integration-test` runs it"]
fn the_own_check_catches_what_cfn_lint_lets_through() {
    let dir = RunDir::new(&unique_name("deploy"));
    let defaults = appliance_defaults(&dir);
    let original = std::fs::read_to_string(template()).unwrap();
    // (what to change, into what, the problem the own check must report, whether cfn-lint
    // catches it too)
    let mutants: &[(&str, &str, &str, bool)] = &[
        ("Key: deregistration_delay.timeout_seconds", "Key: deregistration_delay.timeout_second", "does not exist for a Network Load Balancer", false),
        ("HealthCheckProtocol: HTTP", "HealthCheckProtocol: HTTPS", "expected HTTP", false),
        ("HealthCheckPort: \"8080\"", "HealthCheckPort: \"8081\"", "expected 8080", false),
        (
            "        - Key: deregistration_delay.connection_termination.enabled\n          Value: \"true\"",
            "        - Key: deregistration_delay.connection_termination.enabled\n          Value: \"true\"\n        - Key: target_health_state.unhealthy.connection_termination.enabled\n          Value: \"true\"",
            "refused for a UDP target group",
            false,
        ),
        ("HealthCheckIntervalSeconds: 5", "HealthCheckIntervalSeconds: 30", "the fastest an NLB allows", false),
        ("          HttpTokens: required", "          HttpTokens: optional", "IMDSv2 only", false),
        ("      HeartbeatTimeout: 30", "      HeartbeatTimeout: 300", "a leaving bastion asks its peers to move that long", false),
        ("    Default: 3\n    MinValue: 0", "    Default: 300\n    MinValue: 0", "expected at most 10 s", false),
        ("            Action: elasticloadbalancing:DeregisterTargets", "            Action: elasticloadbalancing:RegisterTargets", "may not call elasticloadbalancing:DeregisterTargets", false),
        ("            Resource: !Ref TargetGroup", "            Resource: \"*\"", "expected this stack's target group only", false),
        ("LifecycleTransition: autoscaling:EC2_INSTANCE_TERMINATING", "LifecycleTransition: autoscaling:EC2_INSTANCE_LAUNCHING", "expected one termination lifecycle hook", false),
        // ip targets: no movable address, address moves anywhere, the group never of type ip,
        // no self-registration.
        ("SecondaryPrivateIpAddressCount: 1", "SecondaryPrivateIpAddressCount: 0", "no SecondaryPrivateIpAddressCount >= 1", false),
        ("                ArnEquals:", "                ArnNotEquals:", "without an ec2:Subnet condition", false),
        ("      TargetType: !Ref TargetType", "      TargetType: instance", "never ip", false),
        ("Action: ec2:DescribeNetworkInterfaces", "Action: ec2:DescribeSubnets", "may not call ec2:DescribeNetworkInterfaces", false),
        // The sibling relay: the bastions' own group does not admit them on the WireGuard port.
        (
            "      SourceSecurityGroupId: !Ref InstanceSecurityGroup",
            "      SourceSecurityGroupId: !Ref LoadBalancerSecurityGroup",
            "cannot reach each other on the WireGuard port",
            false,
        ),
        (
            "              Action: elasticloadbalancing:RegisterTargets",
            "              Action: elasticloadbalancing:DescribeTags",
            "may not call elasticloadbalancing:RegisterTargets",
            false,
        ),
        // CloudWatch: the user-data without [log] when ActOnDeadSiblings is false, the logs
        // permissions widened to every group, the unhealthy alarm on the highest value.
        (
            r#"[!Ref BastionConfig, "\n\n[log]\nformat = \"", !Ref LogFormat, "\"\ncloudwatch_group = \"", !Ref LogGroup, "\"\n"]]"#,
            r#"[!Ref BastionConfig, "\n"]]"#,
            "no [log] cloudwatch_group naming the stack's log group",
            false,
        ),
        ("log-group:${LogGroup}:log-stream:*\"", "log-group:*\"", "expected only on the stack's log group", false),
        (
            "          Value: !Ref LogGroup\n      Statistic: Minimum",
            "          Value: !Ref LogGroup\n      Statistic: Maximum",
            "Statistic 'Maximum', expected 'Minimum'",
            false,
        ),
    ];
    let mut missed_by_lint = 0;
    for (i, (from, to, problem, _)) in mutants.iter().enumerate() {
        assert!(original.contains(from), "mutant {i}: {from:?} is not in the template any more");
        let path = dir.write(&format!("mutant-{i}.yaml"), &original.replacen(from, to, 1));
        let (ok, report) = own_check(&path, defaults);
        assert!(!ok, "mutant {i} ({to:?}) passed the own check: {report:#}");
        assert!(report["problems"].to_string().contains(problem), "mutant {i}: expected {problem:?} in {report:#}");
        if cfn_lint(&path).success() {
            missed_by_lint += 1;
        }
    }
    assert!(
        missed_by_lint >= 2,
        "cfn-lint is expected to miss the misspelt key and the HTTPS check (missed {missed_by_lint})"
    );
}
