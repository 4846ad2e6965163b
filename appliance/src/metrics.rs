//! `GET /metrics`: the service's [`StatusReport`] as Prometheus metrics, on a port of its own
//! (`[metrics] listen`; off by default), served by the same bounded responder as the health
//! port. Negotiated as client_golang does: the OpenMetrics text format (`prometheus-client`'s
//! encoder) when `Accept` asks for it (Prometheus does), else the text format 0.0.4
//! ([`text_format`]: counters named with their `_total`, no `# EOF`), which curl, `promtool
//! check metrics` and older agents read.
//!
//! The `wireguard_*` series have the names and labels of prometheus_wireguard_exporter
//! (`interface`, `public_key`, `allowed_ips`, `friendly_name`, and `remote_ip`/`remote_port`
//! once a peer has an endpoint), so its dashboards work unchanged; the `bastion_*` series are
//! ours. [`render`] is a pure function of the report: no sockets, no clock. Keys never appear
//! (the report has no field for a private or preshared one).
//!
//! prometheus-client 0.23 writes label values as given (prometheus/client_rust#151, open), and
//! one unescaped `"` in a peer's name would make Prometheus reject the whole scrape: every
//! value from the config goes through [`escaped`] first.

use crate::http_port::exchange::{self, Body, Method, Received, Refusal};
use crate::http_port::HttpResponder;
use crate::status::StatusReport;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

/// The `Content-Type` of an OpenMetrics answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `Content-Type` of a text format 0.0.4 answer.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(String, String)>;

/// Starts the metrics responder on `listen`, answering from `report` at each scrape.
pub fn serve(listen: SocketAddr, report: impl Fn() -> StatusReport + Send + 'static) -> io::Result<HttpResponder> {
    HttpResponder::serve("metrics", listen, move |received| answer(received, &report))
}

/// The whole HTTP answer to one request on the metrics port.
pub fn answer(received: &Received, report: impl FnOnce() -> StatusReport) -> Vec<u8> {
    let text = |status: u16, body: &str, allow: bool| {
        exchange::response(status, "text/plain; charset=utf-8", body.as_bytes(), Body::Sent, allow)
    };
    match received {
        Received::Incomplete | Received::Refused(Refusal::Malformed) => {
            text(400, "bad request: expected GET /metrics HTTP/1.1\n", false)
        }
        Received::Refused(Refusal::TooLarge) => {
            text(431, &format!("request too large: at most {} bytes of head\n", exchange::MAX_REQUEST_BYTES), false)
        }
        Received::Request { path, .. } if path != "/metrics" => {
            text(404, "not found: the metrics are at /metrics\n", false)
        }
        Received::Request { method: Method::Other, .. } => text(405, "method not allowed: use GET or HEAD\n", true),
        Received::Request { method, openmetrics, .. } => {
            let openmetrics_text = render(&report());
            let (content_type, body) = if *openmetrics {
                (CONTENT_TYPE, openmetrics_text)
            } else {
                (TEXT_CONTENT_TYPE, text_format(&openmetrics_text))
            };
            let omitted = if *method == Method::Head { Body::Omitted } else { Body::Sent };
            exchange::response(200, content_type, body.as_bytes(), omitted, false)
        }
    }
}

/// The text format 0.0.4 of OpenMetrics text as [`render`] writes it: a counter family
/// `x` (samples `x_total`) is announced as `x_total`, an info family `x` (samples `x_info`)
/// as the gauge `x_info`; `_created` samples, `# UNIT` and `# EOF` are dropped. Pure.
pub fn text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    let mut created: Option<String> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "counter" | "gauge" | "histogram" | "summary" => (name.to_string(), kind),
                _ => (name.to_string(), "untyped"),
            };
            created = (kind == "counter").then(|| format!("{}_created", name.trim_end_matches("_total")));
            if let Some((help_name, text)) = help.take() {
                if name.starts_with(help_name) {
                    out.push_str(&format!("# HELP {name} {text}\n"));
                }
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if let Some(created) = &created {
            if line.starts_with(created.as_str()) {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The report as OpenMetrics text (ends with `# EOF`).
pub fn render(report: &StatusReport) -> String {
    let mut registry = Registry::default();
    let interface = || ("interface".to_string(), escaped(&report.interface));

    // prometheus_wireguard_exporter's three series.
    let sent = Family::<Labels, Counter>::default();
    let received = Family::<Labels, Counter>::default();
    let latest = Family::<Labels, Gauge>::default();
    // Ours, per peer.
    let handshakes = Family::<Labels, Counter>::default();
    let failover_handshakes = Family::<Labels, Counter>::default();
    let rejected_sources = Family::<Labels, Counter>::default();
    for peer in &report.peers {
        let mut labels = vec![
            interface(),
            ("public_key".to_string(), peer.public_key.clone()),
            ("allowed_ips".to_string(), peer.allowed_ips.join(",")),
            ("friendly_name".to_string(), escaped(&peer.name)),
        ];
        let short = labels.clone();
        if let Some(endpoint) = peer.endpoint.as_deref().and_then(|e| e.parse::<SocketAddr>().ok()) {
            labels.push(("remote_ip".to_string(), endpoint.ip().to_string()));
            labels.push(("remote_port".to_string(), endpoint.port().to_string()));
        }
        sent.get_or_create(&labels).inc_by(peer.tx_bytes);
        received.get_or_create(&labels).inc_by(peer.rx_bytes);
        latest.get_or_create(&labels).set(peer.latest_handshake.map_or(0, |t| t as i64));
        handshakes.get_or_create(&short).inc_by(peer.handshakes);
        failover_handshakes.get_or_create(&short).inc_by(peer.failover_handshakes);
        rejected_sources.get_or_create(&short).inc_by(peer.rejected_sources);
    }
    registry.register("wireguard_sent_bytes", "Bytes sent to the peer", sent);
    registry.register("wireguard_received_bytes", "Bytes received from the peer", received);
    registry.register(
        "wireguard_latest_handshake_seconds",
        "UNIX time of the latest handshake with the peer (0: none yet)",
        latest,
    );
    registry.register("bastion_peer_handshakes", "Handshakes completed with the peer", handshakes);
    registry.register(
        "bastion_peer_failover_handshakes",
        "Handshakes this bastion started because the peer's flow moved to it",
        failover_handshakes,
    );
    registry.register(
        "bastion_peer_rejected_sources",
        "Packets from the peer's key that came from a source not allowed for it",
        rejected_sources,
    );

    let just_interface = vec![interface()];
    let gauge = |value: i64| {
        let family = Family::<Labels, Gauge>::default();
        family.get_or_create(&just_interface).set(value);
        family
    };
    let counter = |value: u64| {
        let family = Family::<Labels, Counter>::default();
        family.get_or_create(&just_interface).inc_by(value);
        family
    };
    registry.register("bastion_peers", "Peers configured", gauge(report.peers.len() as i64));
    registry.register(
        "bastion_healthy",
        "1 while the health check answers 200, else 0",
        gauge(i64::from(report.health.status == 200)),
    );
    registry.register("bastion_draining", "1 while draining before a stop", gauge(i64::from(report.draining)));
    let conditions = Family::<Labels, Gauge>::default();
    // Every condition the judge knows is a series, always present, 0 or 1.
    for condition in crate::health::Condition::ALL {
        let failing = report.health.conditions.iter().any(|c| c == condition.label());
        conditions
            .get_or_create(&vec![interface(), ("condition".to_string(), condition.label().to_string())])
            .set(i64::from(failing));
    }
    registry.register(
        "bastion_health_condition_failing",
        "1 for each health condition that fails now (the health body says why)",
        conditions,
    );

    if let Some(selftest) = &report.selftest {
        registry.register(
            "bastion_selftest_passed",
            "1 if the last self-test passed",
            gauge(i64::from(selftest.passed)),
        );
        registry.register(
            "bastion_selftest_age_seconds",
            "Seconds since the last self-test",
            gauge(selftest.age_seconds as i64),
        );
        if let Some(ms) = selftest.duration_ms {
            let duration = Family::<Labels, Gauge<f64, AtomicU64>>::default();
            duration.get_or_create(&just_interface).set(ms as f64 / 1000.0);
            registry.register("bastion_selftest_duration_seconds", "How long the last self-test took", duration);
        }
    }

    let dropped = Family::<Labels, Counter>::default();
    let d = &report.dropped;
    for (reason, value) in [
        ("not_ours", d.not_ours),
        ("rejected", d.rejected),
        ("unknown_key", d.unknown_keys),
        ("cookie_reply", d.cookie_replies),
        ("tun_no_peer", d.tun_no_peer),
    ] {
        dropped.get_or_create(&vec![interface(), ("reason".to_string(), reason.to_string())]).inc_by(value);
    }
    registry.register("bastion_dropped_packets", "Packets dropped, by reason", dropped);
    let refused = Family::<Labels, Counter>::default();
    for (reason, value) in
        [("heard_recently", report.failover.refused_heard_recently), ("budget", report.failover.held_back_by_budget)]
    {
        refused.get_or_create(&vec![interface(), ("reason".to_string(), reason.to_string())]).inc_by(value);
    }
    registry.register("bastion_failover_handshakes_refused", "Failover handshakes not started, by reason", refused);
    if let Some(o) = &report.offloads {
        let super_packets = Family::<Labels, Counter>::default();
        let segments = Family::<Labels, Counter>::default();
        for (direction, packets, cut_or_merged) in [
            ("read", o.tun_super_packets_read, o.tun_segments_read),
            ("written", o.tun_super_packets_written, o.tun_segments_written),
        ] {
            let labels = vec![interface(), ("direction".to_string(), direction.to_string())];
            super_packets.get_or_create(&labels).inc_by(packets);
            segments.get_or_create(&labels).inc_by(cut_or_merged);
        }
        registry.register(
            "bastion_tun_super_packets",
            "TCP super-packets read from the TUN (TSO) or written to it (coalescing)",
            super_packets,
        );
        registry.register(
            "bastion_tun_super_packet_segments",
            "Segments cut from the super-packets read, or merged into those written",
            segments,
        );
    }
    if let Some(i) = &report.initiations {
        let found = Family::<Labels, Counter>::default();
        for (by, value) in [("endpoint", i.known_by_endpoint), ("guess_missed", i.guesses_missed)] {
            found.get_or_create(&vec![interface(), ("found_by".to_string(), by.to_string())]).inc_by(value);
        }
        registry.register(
            "bastion_handshake_initiations_guessed",
            "Initiations answered by the peer last heard from their source (endpoint), or another peer's (guess_missed)",
            found,
        );
    }

    let config = &report.config;
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![
        interface(),
        ("version".to_string(), config.version.clone().unwrap_or_default()),
        ("public_key".to_string(), report.public_key.clone()),
    ])
    .set(1);
    registry.register("bastion_config_info", "The config version serving (12 hex digits of its SHA-256)", info);
    registry.register("bastion_config_reloads", "Reloads applied or found unchanged", counter(config.reloads));
    registry.register(
        "bastion_config_reload_failures",
        "Reloads not applied: unreadable source, invalid config, failed to apply",
        counter(config.reload_failures),
    );
    registry.register(
        "bastion_config_source_failures",
        "Reloads whose source could not be read (SSM unreachable, denied, missing)",
        counter(config.source_failures),
    );
    registry.register(
        "bastion_config_restart_pending",
        "1 while the source holds a config that only a restart can apply",
        gauge(i64::from(!config.restart_pending.is_empty())),
    );
    if let Some(s) = &report.siblings {
        registry.register(
            "bastion_siblings_deregistered",
            "Dead sibling targets this bastion took out of the target group ([siblings])",
            counter(s.deregistered),
        );
        registry.register(
            "bastion_siblings_marked_unhealthy",
            "Dead sibling instances this bastion marked unhealthy in their Auto Scaling group",
            counter(s.marked_unhealthy),
        );
        registry.register(
            "bastion_siblings_taken_over",
            "Dead siblings' target addresses this bastion took over ([siblings] take_over_addresses)",
            counter(s.taken_over),
        );
        registry.register(
            "bastion_siblings_given_back",
            "Taken-over addresses this bastion gave back to the subnet once nothing came to them",
            counter(s.given_back),
        );
        registry.register(
            "bastion_siblings_relayed_datagrams",
            "Datagrams passed to or from a sibling while a moved flow's client re-keys",
            counter(s.relayed),
        );
        registry.register(
            "bastion_siblings_relay_refused",
            "Relay messages refused (forged, stale, or not from the sibling the address was taken from)",
            counter(s.relay_refused),
        );
        registry.register(
            "bastion_siblings_failures",
            "Rounds whose AWS calls failed (DescribeTargetHealth and the actions)",
            counter(s.failures),
        );
    }

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

/// A label value as the text formats want it: `\`, `"` and line feed escaped.
fn escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::example;

    fn line_of<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn the_exporters_series_with_its_labels() {
        let text = render(&example());
        assert!(text.contains("# TYPE wireguard_sent_bytes counter"), "{text}");
        assert_eq!(
            line_of(&text, "wireguard_sent_bytes_total{"),
            "wireguard_sent_bytes_total{interface=\"wg0\",public_key=\"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\",\
             allowed_ips=\"10.100.0.2/32\",friendly_name=\"alice\",remote_ip=\"192.0.2.101\",remote_port=\"4000\"} 3"
        );
        assert!(line_of(&text, "wireguard_received_bytes_total{").ends_with("} 1024"));
        assert!(line_of(&text, "wireguard_latest_handshake_seconds{").ends_with("} 1790000000"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_bastions_own_series() {
        let text = render(&example());
        for (series, value) in [
            ("bastion_healthy{interface=\"wg0\"}", "0"),
            ("bastion_draining{interface=\"wg0\"}", "1"),
            ("bastion_health_condition_failing{interface=\"wg0\",condition=\"draining\"}", "1"),
            ("bastion_health_condition_failing{interface=\"wg0\",condition=\"event_loop\"}", "0"),
            ("bastion_selftest_passed{interface=\"wg0\"}", "1"),
            ("bastion_selftest_duration_seconds{interface=\"wg0\"}", "0.002"),
            ("bastion_dropped_packets_total{interface=\"wg0\",reason=\"cookie_reply\"}", "300"),
            ("bastion_failover_handshakes_refused_total{interface=\"wg0\",reason=\"heard_recently\"}", "9"),
            ("bastion_tun_super_packets_total{interface=\"wg0\",direction=\"read\"}", "10"),
            ("bastion_tun_super_packet_segments_total{interface=\"wg0\",direction=\"read\"}", "420"),
            ("bastion_tun_super_packets_total{interface=\"wg0\",direction=\"written\"}", "0"),
            ("bastion_handshake_initiations_guessed_total{interface=\"wg0\",found_by=\"endpoint\"}", "4"),
            ("bastion_handshake_initiations_guessed_total{interface=\"wg0\",found_by=\"guess_missed\"}", "1"),
            ("bastion_config_reload_failures_total{interface=\"wg0\"}", "1"),
            ("bastion_config_restart_pending{interface=\"wg0\"}", "1"),
            ("bastion_peers{interface=\"wg0\"}", "1"),
        ] {
            assert_eq!(line_of(&text, series), format!("{series} {value}"), "{text}");
        }
        assert!(line_of(&text, "bastion_config_info{").contains("version=\"0123456789ab\""));
        assert!(line_of(&text, "bastion_peer_failover_handshakes_total{").ends_with("} 1"));
        assert!(!text.contains("bastion_siblings_"), "no siblings series while [siblings] is off");
        let mut report = example();
        report.siblings = Some(crate::status::Siblings {
            deregistered: 2,
            marked_unhealthy: 1,
            taken_over: 3,
            given_back: 1,
            failures: 0,
            relayed: 7,
            relay_refused: 2,
        });
        let text = render(&report);
        for (series, value) in [
            ("bastion_siblings_deregistered_total{interface=\"wg0\"}", "2"),
            ("bastion_siblings_marked_unhealthy_total{interface=\"wg0\"}", "1"),
            ("bastion_siblings_taken_over_total{interface=\"wg0\"}", "3"),
            ("bastion_siblings_given_back_total{interface=\"wg0\"}", "1"),
            ("bastion_siblings_failures_total{interface=\"wg0\"}", "0"),
            ("bastion_siblings_relayed_datagrams_total{interface=\"wg0\"}", "7"),
            ("bastion_siblings_relay_refused_total{interface=\"wg0\"}", "2"),
        ] {
            assert_eq!(line_of(&text, series), format!("{series} {value}"), "{text}");
        }
    }

    #[test]
    fn a_peer_without_endpoint_and_handshake() {
        let mut report = example();
        report.peers[0].endpoint = None;
        report.peers[0].latest_handshake = None;
        let text = render(&report);
        let line = line_of(&text, "wireguard_latest_handshake_seconds{");
        assert!(!line.contains("remote_ip") && line.ends_with("} 0"), "{line}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut report = example();
        report.peers[0].name = "a\"b\\c".into();
        let text = render(&report);
        assert!(text.contains(r#"friendly_name="a\"b\\c""#), "{text}");
        // An interface name may hold `"` or `\` (the kernel allows them): escaped too, on every
        // series, so a scraper never reads a broken label set.
        report.interface = "wg\"0\\".into();
        let text = render(&report);
        assert!(!text.contains(r#"interface="wg"0"#), "{text}");
        assert_eq!(text.matches(r#"interface="wg\"0\\""#).count(), text.matches("interface=").count(), "{text}");
    }

    #[test]
    fn the_text_format_names_counters_with_their_total() {
        let text = text_format(&render(&example()));
        // Every family announced under the name its samples carry.
        let mut announced = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "untyped", "histogram", "summary"].contains(&kind), "{line}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                }
                announced.insert(name.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(announced.contains(name), "sample {name} of no announced family:\n{text}");
                assert!(!name.ends_with("_created"), "{line}");
            }
        }
        assert!(text.contains("# TYPE wireguard_sent_bytes_total counter\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        // A hand-written case: an info family and a counter with `_created`.
        let om = "# HELP build Build.\n# TYPE build info\nbuild_info{v=\"1\"} 1\n# HELP x Things.\n# TYPE x counter\n\
                  x_total 3\nx_created 1.0\n# EOF\n";
        assert_eq!(
            text_format(om),
            "# HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{v=\"1\"} 1\n# HELP x_total Things.\n\
             # TYPE x_total counter\nx_total 3\n"
        );
    }

    #[test]
    fn http_answers() {
        let get = |path: &str, method| {
            let received = Received::Request { method, path: path.into(), openmetrics: true };
            String::from_utf8(answer(&received, example)).unwrap()
        };
        let ok = get("/metrics", Method::Get);
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")));
        assert!(ok.ends_with("# EOF\n"));
        let plain = Received::Request { method: Method::Get, path: "/metrics".into(), openmetrics: false };
        let plain = String::from_utf8(answer(&plain, example)).unwrap();
        assert!(plain.contains(&format!("Content-Type: {TEXT_CONTENT_TYPE}\r\n")), "{plain}");
        assert!(!plain.contains("# EOF"), "{plain}");
        let head = get("/metrics", Method::Head);
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: "), "{head}");
        assert!(get("/", Method::Get).starts_with("HTTP/1.1 404"));
        assert!(get("/metrics", Method::Other).starts_with("HTTP/1.1 405"));
        let garbage = String::from_utf8(answer(&exchange::receive(b"\x00\x01garbage\r\n\r\n"), example)).unwrap();
        assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    }
}
