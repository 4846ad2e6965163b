//! The config from SSM Parameter Store: `bastion run` with a file that says only where the key
//! (`private_key_ssm`) and the peers (`[source] ssm_path`) are, against moto (SSM) and the IMDS
//! emulator (the instance role's credentials, renewed as they near their expiry, and the
//! region), all inside the bastion's namespace. wireguard-go clients prove the key and the peers
//! are the ones in SSM; parameters written with boto3 (`tests/aws/verify.py`), not our client.
//! Faults keep the last good config serving; at first start, with nothing good, health is 503
//! until SSM answers. The private key is never in a log or in status.
//!
//! Needs root, `BASTION_BIN` and the virtualenv with moto (`make integration-test`).

use std::net::SocketAddr;
use std::time::Duration;

use bastion_tests::aws::AwsEmulator;
use bastion_tests::bastion::{Bastion, BastionSetup};
use bastion_tests::{ImdsEmulator, ImdsMode, Topology};

const MOTO_PORT: u16 = 5000;
const IMDS: ([u8; 4], u16) = ([127, 0, 0, 1], 8775);
const REGION: &str = "eu-west-1";
const KEY: &str = "/bastion/test/key";
const PEERS: &str = "/bastion/test/peers";
const STEP: Duration = Duration::from_secs(20);

struct Ssm {
    moto: Option<AwsEmulator>,
    imds: ImdsEmulator,
}

/// The IMDS emulator in the bastion's namespace: the instance role (its credentials living
/// `credentials_seconds`) and the region.
fn start_imds(topo: &Topology, credentials_seconds: u32) -> ImdsEmulator {
    ImdsEmulator::start_with(
        &topo.bastion,
        SocketAddr::from(IMDS),
        None,
        ImdsMode::Normal,
        &topo.dir,
        &["--role", "bastion-role", "--credentials-seconds", &credentials_seconds.to_string(), "--region", REGION],
    )
}

fn start_aws(topo: &Topology, credentials_seconds: u32) -> Ssm {
    let imds = start_imds(topo, credentials_seconds);
    Ssm { moto: Some(AwsEmulator::start(&topo.bastion, &topo.dir, MOTO_PORT, &[])), imds }
}

impl Ssm {
    fn moto(&self) -> &AwsEmulator {
        self.moto.as_ref().expect("moto runs")
    }

    /// Writes a parameter with boto3; its new version.
    fn put(&self, topo: &Topology, name: &str, kind: &str, value: &str) -> u64 {
        let file = topo.dir.write(&format!("param-{}", bastion_tests::unique_name("v")), value);
        let answer = self.moto().verify(REGION, &["put-parameter", name, kind, file.to_str().unwrap()]);
        answer["version"].as_u64().unwrap()
    }

    fn delete(&self, name: &str) {
        self.moto().verify(REGION, &["delete-parameter", name]);
    }
}

/// `[[peer]]` of client `i`, as a parameter under the path holds it.
fn peer_fragment(topo: &Topology, i: usize) -> String {
    let c = &topo.clients[i];
    format!(
        "[[peer]]\nname = \"{}\"\npublic_key = \"{}\"\nallowed_ips = [\"{}/32\", \"{}/128\"]\n",
        c.name, c.keys.public, c.tunnel_v4, c.tunnel_v6
    )
}

/// The bastion's file: no key and no peers, only where they are in SSM.
fn setup() -> BastionSetup {
    BastionSetup {
        peers: Some(vec![]),
        key_in_ssm: Some(KEY.into()),
        extra_toml: format!(
            "\n[source]\nssm_path = \"{PEERS}\"\nrefresh_seconds = 10\n\n[aws]\nendpoint_url = \"http://127.0.0.1:{MOTO_PORT}\"\n"
        ),
        env: vec![
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), format!("http://127.0.0.1:{}", IMDS.1)),
            // Nothing of this machine's own AWS set-up may stand in for the instance role.
            ("AWS_CONFIG_FILE".into(), "/nonexistent".into()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent".into()),
        ],
        ..BastionSetup::default()
    }
}

fn start_bastion(topo: &Topology) -> Bastion {
    Bastion::start(topo, &bastion_tests::bastion::binary(), setup())
}

#[test]
#[ignore = "needs root, network namespaces, moto and the binaries under test: `make integration-test` runs it"]
fn key_and_peers_come_from_ssm_and_faults_keep_the_last_good_config() {
    let topo = Topology::with(2, 1);
    let aws = start_aws(&topo, 302);
    let key_version = aws.put(&topo, KEY, "SecureString", &topo.bastion_keys.private);
    aws.put(&topo, &format!("{PEERS}/{}", topo.clients[0].name), "SecureString", &peer_fragment(&topo, 0));
    // Parameters that are no peer fragments: a section the file lacks (it would widen reach
    // for every peer) and a key placed under the path. Before, they were applied, or made every
    // start exit 2; now each is refused by name and the service starts without them.
    let widening = format!("{PEERS}/aa-nat");
    aws.put(&topo, &widening, "String", "[nat]\nreach = [\"0.0.0.0/0\"]\n");
    let stray_key = format!("{PEERS}/ab-key");
    aws.put(&topo, &stray_key, "SecureString", &topo.bastion_keys.private);
    let bastion = start_bastion(&topo);
    bastion
        .wait_healthy(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("not healthy: {e}\n{}", aws.imds.log_report()));
    let log = bastion.process.log();
    assert!(log.contains(&format!("config: ssm:{widening} (version 1): refused: holds \"nat\"")), "{log}");
    assert!(log.contains(&format!("config: ssm:{stray_key} (version 1): refused: holds a WireGuard key")), "{log}");
    let rules = bastion.status().unwrap();
    assert!(!rules.contains("meta nfproto ipv4 accept"), "reach widened by a fragment:\n{rules}");
    aws.delete(&widening);
    aws.delete(&stray_key);
    let target = topo.private_hosts[0].v4.to_string();

    // The key and the first peer are SSM's: a client handshakes and reaches the private host.
    let first = topo.start_client_tunnel(0, topo.endpoint_v4());
    topo.clients[0].ns.ping(&target, STEP).unwrap_or_else(|e| panic!("{e}\n{}", bastion.log_report()));
    let status = bastion.status_json().unwrap();
    let origin = status["config"]["origin"].as_str().unwrap().to_string();
    assert!(origin.contains(&format!("ssm:{PEERS} (1 parameters)")), "{origin}");
    assert!(origin.contains(&format!("key ssm:{KEY} (version {key_version})")), "{origin}");
    assert_eq!(status["public_key"], topo.bastion_keys.public);

    // A second peer written to SSM is served after a reload, on every bastion that reads it.
    let second = topo.start_client_tunnel(1, topo.endpoint_v4());
    aws.put(&topo, &format!("{PEERS}/{}", topo.clients[1].name), "SecureString", &peer_fragment(&topo, 1));
    let (ok, answer) = bastion.reload();
    assert!(ok, "{answer}\n{}", bastion.log_report());
    assert!(answer.contains("+1 -0"), "{answer}");
    topo.clients[1].ns.ping(&target, STEP).unwrap_or_else(|e| panic!("{e}\n{}", bastion.log_report()));

    // An invalid fragment is refused with its parameter, version and line; the old peers serve.
    let bad = format!("{PEERS}/zz-broken");
    let bad_version = aws.put(&topo, &bad, "String", "[[peer]]\nname = \"x\"\npublic_key = \"nope\"\n");
    let (ok, answer) = bastion.reload();
    assert!(!ok && answer.contains(&format!("ssm:{bad} (version {bad_version}):3: peer[2].public_key")), "{answer}");
    assert_eq!(bastion.health().map(|r| r.status), Ok(200));
    aws.delete(&bad);

    // The refresh (every 10 s) notices SSM going away: the last good config keeps serving,
    // health stays 200, status counts the failure; it is logged once, not every refresh.
    let moto_log = aws.moto().log_report();
    let mut aws = aws;
    drop(aws.moto.take());
    let failed = bastion_tests::wait_until("two failed refreshes", Duration::from_secs(60), || {
        let s = bastion.status_json()?;
        match s["config"]["source_failures"].as_u64() {
            Some(n) if n >= 2 => Ok(s),
            other => Err(format!("source failures {other:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{moto_log}", bastion.log_report()));
    let why = failed["config"]["last_failure"].as_str().unwrap_or("");
    assert!(why.contains(&format!("SSM parameter {PEERS}")), "{why}");
    assert_eq!(bastion.health().map(|r| r.status), Ok(200));
    topo.clients[0].ns.ping(&target, STEP).unwrap();
    let log = bastion.process.log();
    assert_eq!(log.matches("reload (refresh): SSM parameter").count(), 1, "logged once per state\n{log}");

    // The role's credentials (302 s, renewed 300 s before expiry) were fetched again and again
    // from IMDSv2 with a token; the key is in no log and no status.
    let credential_reads = aws
        .imds
        .requests()
        .iter()
        .filter(|r| r.path == "/latest/meta-data/iam/security-credentials/bastion-role" && r.token_valid)
        .count();
    assert!(credential_reads >= 2, "credentials renewed: {}", aws.imds.request_log());
    let status_text = bastion.status().unwrap();
    for text in [&log, &status_text, &failed.to_string()] {
        assert!(!text.contains(&topo.bastion_keys.private), "the private key leaked");
    }
    drop((first, second));
}

#[test]
#[ignore = "needs root, network namespaces, moto and the binaries under test: `make integration-test` runs it"]
fn with_nothing_good_yet_health_is_503_until_ssm_answers() {
    let topo = Topology::with(1, 1);
    let imds = start_imds(&topo, 21600);
    // No SSM yet: the bastion waits, and says why on the health port.
    let bastion = start_bastion(&topo);
    let waiting = bastion
        .wait_health("503 while SSM is away", Duration::from_secs(30), |r| r.status == 503)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(waiting.body.starts_with("config: not loaded yet: SSM parameter"), "{:?}", waiting.body);
    assert!(bastion.process.try_exit().is_none(), "bastion run gave up\n{}", bastion.log_report());
    // SSM comes up with the key and a peer: the bastion starts by itself (backoff ≤ 16 s here).
    let aws = Ssm { moto: Some(AwsEmulator::start(&topo.bastion, &topo.dir, MOTO_PORT, &[])), imds };
    aws.put(&topo, KEY, "SecureString", &topo.bastion_keys.private);
    aws.put(&topo, &format!("{PEERS}/{}", topo.clients[0].name), "SecureString", &peer_fragment(&topo, 0));
    bastion.wait_healthy(Duration::from_secs(60)).unwrap_or_else(|e| panic!("not healthy: {e}"));
    let tunnel = topo.start_client_tunnel(0, topo.endpoint_v4());
    topo.clients[0].ns.ping(&topo.private_hosts[0].v4.to_string(), STEP).unwrap();
    let log = bastion.process.log();
    let refused = log.lines().filter(|l| l.contains("Connection refused") && l.contains("trying again")).count();
    assert_eq!(refused, 1, "logged once while the same fault lasted\n{log}");
    assert!(!log.contains(&topo.bastion_keys.private));
    drop(tunnel);
}
