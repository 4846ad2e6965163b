//! Property tests of every parser of outside input: arbitrary bytes (and mutations of valid
//! input) never panic, and what is written and read back is the same. Each property runs
//! `PROPTEST_CASES` cases (256 by default, in `make test`; `make fuzz` runs many more).
//!
//! The inputs: WireGuard datagrams (routing and a real `Tunn`'s verdict), health HTTP requests,
//! IMDS answers, DHCP packets and leases, netlink answers, config and wg-quick files, and the
//! status protocol, the drain's move notice, WireGuard API answers (`bastion watch`), the load
//! balancer's target health (`[siblings]`), the siblings' relay messages;
//! `bastion peer add/remove` on mutated configs.

use proptest::prelude::*;

/// Bytes that look like a WireGuard message often enough to get past the first checks: a type
/// 1–4, three zero bytes, then anything, at the lengths the types have.
fn wireguard_like() -> impl Strategy<Value = Vec<u8>> {
    (1u8..=4, prop::collection::vec(any::<u8>(), 0..200), prop::sample::select(vec![32usize, 64, 92, 148, 180, 1500]))
        .prop_map(|(kind, tail, len)| {
            let mut bytes = vec![kind, 0, 0, 0];
            bytes.extend(tail.iter().cycle().take(len.saturating_sub(4)));
            bytes.truncate(len);
            bytes
        })
}

/// A valid config with one byte replaced, inserted or removed somewhere.
fn mutated(valid: &'static str) -> impl Strategy<Value = String> {
    (0..valid.len(), any::<u8>(), 0u8..3).prop_map(move |(at, byte, how)| {
        let mut bytes = valid.as_bytes().to_vec();
        match how {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => {
                bytes.remove(at);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

const CONFIG: &str = "[interface]\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\n\
    address = [\"10.100.0.1/24\", \"fd00:100::1/64\"]\nlisten_port = 51820\n\n[[peer]]\nname = \"alice\"\n\
    public_key = \"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"\nallowed_ips = [\"10.100.0.2/32\"]\n\
    reach = [\"10.0.1.0/24\"]\n\n[nat]\nreach = [\"10.0.0.0/16\"]\n[health]\nlisten = \"0.0.0.0:8080\"\n\
    drain_seconds = 5\n[selftest]\nprobes = [\"10.0.1.5:443\"]\n";

const WG_QUICK: &str = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
    Address = 10.100.0.1/24\nListenPort = 51820\nPostUp = iptables -A FORWARD -i %i -j ACCEPT; \
    iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE\n\n# Name = alice\n[Peer]\n\
    PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nAllowedIPs = 10.100.0.2/32\n";

proptest! {
    #[test]
    fn datagrams_are_routed_or_dropped_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..1600)) {
        let _ = crate::tunnel::decision::route(&bytes, |i| (i >> 8 == 7).then_some(0));
    }

    #[test]
    fn a_tunn_fed_garbage_gives_a_verdict(bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..1600), wireguard_like()]) {
        use boringtun::noise::Tunn;
        let ours = crate::keys::PrivateKey::from_bytes([7; 32]);
        let peer = crate::keys::PrivateKey::from_bytes([9; 32]).public_key();
        let mut tunn = Tunn::new(ours.to_x25519(), peer.to_x25519(), None, None, 7 << 8, None);
        let mut out = vec![0u8; 2048];
        let kind = match crate::tunnel::decision::route(&bytes, |_| Some(0)) {
            crate::tunnel::decision::Route::Peer(_, kind) => kind,
            _ => crate::tunnel::decision::MessageKind::Initiation,
        };
        let _ = crate::tunnel::decision::verdict(kind, tunn.decapsulate(Some("192.0.2.1".parse().unwrap()), &bytes, &mut out));
    }

    #[test]
    fn health_requests_are_answered_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
        use crate::http_port::exchange;
        let received = exchange::receive(&bytes);
        if received != exchange::Received::Incomplete {
            let answer = crate::health::answer(&received, || crate::health::HealthVerdict::Healthy("wg0 up".into()));
            prop_assert!(answer.starts_with(b"HTTP/1.1 "));
        }
    }

    #[test]
    fn health_request_paths_round_trip(path in "/[a-z0-9/_.-]{0,40}", head in any::<bool>()) {
        use crate::http_port::exchange::{receive, Method, Received};
        let method = if head { "HEAD" } else { "GET" };
        let got = receive(format!("{method} {path}?x=1 HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let want = if head { Method::Head } else { Method::Get };
        prop_assert_eq!(got, Received::Request { method: want, path, openmetrics: false });
    }

    #[test]
    fn target_health_answers_are_read_or_refused_never_a_panic(
        text in "(<[A-Za-z]{0,12}>|</[A-Za-z]{0,12}>|[a-z0-9.:-]{0,8}){0,40}",
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let wrapped = format!("<TargetHealthDescriptions><member><Target>{text}</Target></member></TargetHealthDescriptions>");
        let _ = bastion_aws::elbv2::parse_target_health(&wrapped);
        let _ = bastion_aws::elbv2::parse_target_health(&text);
        let _ = bastion_aws::elbv2::parse_target_health(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn imds_answers_are_taken_or_refused_never_a_panic(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..300)) {
        use bastion_aws::imds;
        let _ = imds::token_from_answer("u", status, "reason", &body);
        let _ = crate::init::imds::user_data_from("u", imds::body_from_answer("u", status, "reason", body));
    }

    #[test]
    fn dhcp_packets_and_leases_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), options in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..6)), 0..8), prefix in 0u8..=32) {
        use smoltcp::wire::{DhcpOption, DhcpPacket, DhcpRepr, Ipv4Address, Ipv4Cidr};
        if let Ok(packet) = DhcpPacket::new_checked(&bytes[..]) {
            let _ = DhcpRepr::parse(&packet);
        }
        let opts: Vec<DhcpOption> = options.iter().map(|(kind, data)| DhcpOption { kind: *kind, data }).collect();
        let lease = crate::init::dhcp::lease_from_packet(
            Ipv4Cidr::new(Ipv4Address::new(10, 0, 1, 5), prefix),
            Some(Ipv4Address::new(10, 0, 1, 1)),
            Ipv4Address::new(10, 0, 1, 1),
            opts.into_iter(),
        );
        let _ = crate::init::dhcp::plan(&lease);
    }

    #[test]
    fn netlink_answers_are_parsed_or_refused_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        use crate::netlink::{message, route};
        for m in message::messages(&bytes).take(50).flatten() {
            let _ = message::parse_ack(m.flags, m.payload);
            let _ = route::parse_link(m.payload);
            let _ = route::parse_address(m.payload);
            let _ = route::parse_default_route(m.payload);
        }
        for a in message::attributes(&bytes).take(50).flatten() {
            let _ = a.u32();
            let _ = a.string();
        }
    }

    #[test]
    fn netlink_attributes_round_trip(attrs in prop::collection::vec((1u16..0x3fff, prop::collection::vec(any::<u8>(), 0..40)), 0..10)) {
        use crate::netlink::message::{self, MessageBuilder};
        let mut m = MessageBuilder::new(16, 0, 1);
        for (kind, payload) in &attrs {
            m.attr(*kind, payload);
        }
        let bytes = m.finish().unwrap();
        let parsed: Vec<_> = message::messages(&bytes).collect::<std::io::Result<Vec<_>>>().unwrap();
        prop_assert_eq!(parsed.len(), 1);
        let back: Vec<(u16, Vec<u8>)> =
            message::attributes(parsed[0].payload).map(|a| a.map(|a| (a.kind, a.payload.to_vec()))).collect::<std::io::Result<_>>().unwrap();
        prop_assert_eq!(back, attrs);
    }

    #[test]
    fn config_text_is_accepted_or_explained_never_a_panic(text in "(?s).{0,400}") {
        let _ = crate::config::parse(&text, "fuzz.toml", None);
    }

    #[test]
    fn mutated_configs_are_accepted_or_explained(text in mutated(CONFIG)) {
        if let Err(e) = crate::config::parse(&text, "fuzz.toml", None) {
            prop_assert!(!e.problems.is_empty());
            let _ = e.to_string();
        }
    }

    #[test]
    fn peer_add_and_remove_edit_or_explain_never_a_panic(text in mutated(CONFIG), name in "(?s).{0,12}", endpoint in "(?s).{0,24}") {
        let key = crate::keys::PrivateKey::from_bytes([9; 32]);
        let request = crate::enroll::AddRequest { name: &name, endpoint: &endpoint, server_public_key: None, reach: &[] };
        if let Ok(added) = crate::enroll::add(&text, "fuzz", None, &request, &key) {
            prop_assert!(crate::config::parse(&added.text, "fuzz", None).is_ok());
            prop_assert!(!added.text.contains(&key.expose_base64()));
        }
        let _ = crate::enroll::remove(&text, "fuzz", None, &name);
        let _ = crate::enroll::remove(&text, "fuzz", None, "alice");
    }

    #[test]
    fn wg_quick_files_convert_or_are_explained_never_a_panic(text in prop_oneof!["(?s).{0,400}".boxed(), mutated(WG_QUICK).boxed()]) {
        let _ = crate::convert::wg_quick::convert(&text, "fuzz.conf", Some("wg0.conf"));
    }

    #[test]
    fn status_answers_are_reports_or_errors(bytes in prop::collection::vec(any::<u8>(), 0..500)) {
        let _ = crate::status::parse(&bytes);
    }

    #[test]
    fn relay_messages_not_sealed_with_the_key_are_refused_never_a_panic(tail in prop::collection::vec(any::<u8>(), 0..300), now in any::<u64>()) {
        use crate::tunnel::relay;
        let mut bytes = vec![relay::MARK];
        bytes.extend(tail);
        prop_assert!(relay::open(&relay::RelayKey::derive(&[7; 32]), &bytes, now).is_err());
    }

    #[test]
    fn move_notices_are_parsed_or_refused_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = crate::move_notice::parse(&bytes);
    }

    #[test]
    fn uapi_answers_are_read_or_refused_never_a_panic(text in prop_oneof!["(?s).{0,300}".boxed(), mutated(UAPI_ANSWER).boxed()]) {
        if let Ok(device) = crate::watch::uapi::parse_get(&text) {
            for peer in &device.peers {
                // What a move would send back is made of lines the answer had.
                let _ = peer.recreate();
            }
        }
    }
}

const UAPI_ANSWER: &str = "listen_port=12912\npublic_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33\n\
    endpoint=192.0.2.1:51820\nallowed_ip=10.100.0.0/24\ntx_bytes=38333\nrx_bytes=2224\npersistent_keepalive_interval=25\nerrno=0\n";

#[test]
fn the_valid_inputs_of_the_mutations_are_valid() {
    crate::config::parse(CONFIG, "fuzz.toml", None).unwrap();
    let converted = crate::convert::wg_quick::convert(WG_QUICK, "wg0.conf", Some("wg0.conf")).unwrap();
    let config = crate::config::parse(&converted.toml, "converted", None).unwrap();
    assert_eq!(config.peers[0].name, "alice");
    assert_eq!(config.nat.reach[0].to_string(), "0.0.0.0/0");
}
