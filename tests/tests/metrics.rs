//! `GET /metrics` of `bastion run` with `[metrics] listen`: a wireguard-go client's bytes and
//! handshake in prometheus_wireguard_exporter's series, the bastion's own series, never a key,
//! never on the health port; OpenMetrics for a scraper that asks for it (Prometheus's own
//! `Accept`), the text format 0.0.4 otherwise, which `promtool check metrics` (Prometheus 2.42,
//! from Debian's package) finds clean; and the scrape time with 1,000 peers (`FIGURE ...`, no
//! timed assertion).
//!
//! Needs root and `BASTION_BIN` (`make integration-test` sets it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use bastion_tests::bastion::{Bastion, BastionSetup};
use bastion_tests::topology::BASTION_TUNNEL_V4;
use bastion_tests::{Netns, Topology};

const START: Duration = Duration::from_secs(30);
const METRICS_PORT: u16 = 9586;

/// What Prometheus 2.42 sends as `Accept`.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One raw `GET /metrics` from inside `ns` as Prometheus asks (no size limit: 1,000 peers make
/// ~1.5 MB): the head, the body and how long the whole exchange took.
fn scrape(ns: &Netns, port: u16) -> (String, String, Duration) {
    scrape_accepting(ns, port, Some(PROMETHEUS_ACCEPT))
}

/// The same with this `Accept` header (`None`: none, as curl sends).
fn scrape_accepting(ns: &Netns, port: u16, accept: Option<&str>) -> (String, String, Duration) {
    let request = match accept {
        Some(a) => format!("GET /metrics HTTP/1.1\r\nHost: bastion\r\nAccept: {a}\r\n\r\n"),
        None => "GET /metrics HTTP/1.1\r\nHost: bastion\r\n\r\n".to_string(),
    };
    ns.enter(move || {
        let started = Instant::now();
        let mut stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect to metrics");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read the metrics");
        let took = started.elapsed();
        let text = String::from_utf8(raw).expect("metrics are UTF-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        (head.to_string(), body.to_string(), took)
    })
}

/// The value of the one sample whose line starts with `series{` and contains every `labels`.
fn sample(body: &str, series: &str, labels: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{series}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `BASTION_PROMTOOL`, else `out/prometheus/usr/bin/promtool` (`make test-deps` unpacks it).
fn promtool() -> String {
    let path = std::env::var("BASTION_PROMTOOL")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../out/prometheus/usr/bin/promtool").to_string());
    assert!(std::path::Path::new(&path).is_file(), "no promtool at {path}: run `make test-deps`");
    path
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_clients_traffic_and_the_bastions_state_are_scraped() {
    let binary = bastion_tests::bastion::binary();
    let topo = Topology::with(1, 1);
    let setup = BastionSetup {
        extra_toml: format!("\n[metrics]\nlisten = \"0.0.0.0:{METRICS_PORT}\"\n"),
        ..Default::default()
    };
    let bastion = Bastion::start(&topo, &binary, setup);
    bastion.wait_healthy(START).unwrap_or_else(|e| panic!("not healthy: {e}"));
    let tunnel = topo.start_client_tunnel(0, topo.endpoint_v4());
    let client = &topo.clients[0];
    let target = topo.private_hosts[0].v4.to_string();
    client.ns.ping(&target, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}\n{}", tunnel.log_report()));

    let (head, body, _) = scrape(&topo.bastion, METRICS_PORT);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: application/openmetrics-text; version=1.0.0"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    let peer = [
        &format!("public_key=\"{}\"", client.keys.public) as &str,
        &format!("friendly_name=\"{}\"", client.name),
        &format!("allowed_ips=\"{}/32,{}/128\"", client.tunnel_v4, client.tunnel_v6),
        "interface=\"wg0\"",
    ];
    let received = sample(&body, "wireguard_received_bytes_total", &peer).unwrap_or_else(|| panic!("{body}"));
    let sent = sample(&body, "wireguard_sent_bytes_total", &peer).unwrap();
    let handshake = sample(&body, "wireguard_latest_handshake_seconds", &peer).unwrap();
    assert!(received > 0.0 && sent > 0.0, "bytes counted: {received} {sent}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - handshake).abs() < 120.0, "handshake at {handshake}, now {now}");
    // The same numbers as status says.
    let status = bastion.status_json().unwrap();
    let status_peer = &status["peers"][0];
    assert_eq!(status_peer["name"], client.name);
    assert!(status_peer["rx_bytes"].as_f64().unwrap() >= received);
    for (series, labels, value) in [
        ("bastion_healthy", vec!["interface=\"wg0\""], 1.0),
        ("bastion_peers", vec![], 1.0),
        ("bastion_selftest_passed", vec![], 1.0),
        ("bastion_health_condition_failing", vec!["condition=\"selftest\""], 0.0),
        ("bastion_peer_handshakes_total", peer.to_vec(), 1.0),
        ("bastion_config_reload_failures_total", vec![], 0.0),
    ] {
        assert_eq!(sample(&body, series, &labels), Some(value), "{series} {labels:?}\n{body}");
    }
    let version = status["config"]["version"].as_str().unwrap();
    assert!(body.contains(&format!("version=\"{version}\"")), "{body}");
    // No key but public ones.
    assert!(!body.contains(&topo.bastion_keys.private) && !body.contains(&client.keys.private));
    // Not on the health port, and not from the tunnel (the input policy drops it).
    let on_health = bastion.health_path("/metrics").unwrap();
    assert_eq!(on_health.status, 404, "{on_health:?}");
    let through_tunnel = bastion_tests::http::get(
        &client.ns,
        SocketAddr::from((BASTION_TUNNEL_V4, METRICS_PORT)),
        "/metrics",
        Duration::from_secs(2),
    );
    assert!(through_tunnel.is_err(), "a peer scraped the metrics: {through_tunnel:?}");
    // A scraper that does not ask for OpenMetrics gets the text format 0.0.4, and promtool
    // finds it clean; fed the OpenMetrics answer, promtool 2.42 reads it as 0.0.4 and stops at
    // the first counter (`_total` samples of a family announced without it).
    let (plain_head, plain, _) = scrape_accepting(&topo.bastion, METRICS_PORT, None);
    assert!(plain_head.contains("Content-Type: text/plain; version=0.0.4"), "{plain_head}");
    assert!(plain.contains("# TYPE wireguard_sent_bytes_total counter\n") && !plain.contains("# EOF"), "{plain}");
    assert!(sample(&plain, "wireguard_sent_bytes_total", &peer).is_some_and(|v| v >= sent), "{plain}");
    let promtool = promtool();
    let checked =
        bastion_tests::command::run_with_input(&[promtool.as_str(), "check", "metrics"], Some(plain.as_bytes()));
    assert!(checked.success(), "promtool check metrics on the 0.0.4 answer: {checked}\n{plain}");
    let checked =
        bastion_tests::command::run_with_input(&[promtool.as_str(), "check", "metrics"], Some(body.as_bytes()));
    eprintln!(
        "FIGURE promtool on the OpenMetrics answer (read as 0.0.4): exit {:?}, {}",
        checked.code,
        checked.stderr.lines().chain(checked.stdout.lines()).find(|l| !l.trim().is_empty()).unwrap_or("")
    );
    // A drain shows in the metrics too.
    bastion.process.signal(libc::SIGTERM);
    bastion.wait_health("the drain", Duration::from_secs(3), |r| r.status == 503).unwrap();
    let (_, body, _) = scrape(&topo.bastion, METRICS_PORT);
    assert_eq!(sample(&body, "bastion_draining", &[]), Some(1.0), "{body}");
    assert_eq!(sample(&body, "bastion_health_condition_failing", &["condition=\"draining\""]), Some(1.0));
    drop(tunnel);
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn scrape_time_with_a_thousand_peers() {
    const PEERS: usize = 1000;
    const SCRAPES: u32 = 20;
    let binary = bastion_tests::bastion::binary();
    let topo = Topology::with(1, 1);
    let mut extra = format!("\n[metrics]\nlisten = \"0.0.0.0:{METRICS_PORT}\"\n");
    for i in 0..PEERS {
        // Any 32 bytes are a public key; these peers never send anything.
        let mut key = [7u8; 32];
        key[..2].copy_from_slice(&(i as u16).to_be_bytes());
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        extra.push_str(&format!(
            "\n[[peer]]\nname = \"user-{i:04}\"\npublic_key = \"{key}\"\nallowed_ips = [\"fd00:100::1:{i:x}/128\"]\n"
        ));
    }
    let setup = BastionSetup { extra_toml: extra, ..Default::default() };
    let bastion = Bastion::start(&topo, &binary, setup);
    bastion.wait_healthy(Duration::from_secs(60)).unwrap_or_else(|e| panic!("not healthy: {e}"));
    let (head, body, _) = scrape(&topo.bastion, METRICS_PORT);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let series = body.lines().filter(|l| l.starts_with("wireguard_sent_bytes_total{")).count();
    assert_eq!(series, PEERS + 1, "one series per peer (and the client)");
    let mut total = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    for _ in 0..SCRAPES {
        let (_, _, took) = scrape(&topo.bastion, METRICS_PORT);
        total += took;
        slowest = slowest.max(took);
    }
    println!(
        "FIGURE metrics_scrape_ms={:.1} (mean of {SCRAPES}, slowest {:.1}; {} peers, {} bytes)",
        total.as_secs_f64() * 1000.0 / f64::from(SCRAPES),
        slowest.as_secs_f64() * 1000.0,
        PEERS + 1,
        body.len()
    );
    assert!(bastion.health().map(|r| r.status) == Ok(200));
}
