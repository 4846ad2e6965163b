//! The shared handshake rate limiter: above 100 handshake messages a second (valid MAC1, which
//! anyone who knows the bastion's public key can make) the bastion answers with cookie replies
//! instead of doing the Diffie-Hellman; an initiator that proves its address with the cookie
//! (MAC2) still gets through, and so does a real wireguard-go client (which handles cookies).
//! Initiations from keys that are not peers are counted and never answered with a handshake
//! response.
//!
//! The initiations are made with boringtun's `noise::Tunn` ([`Initiator`]); the flood comes
//! from client 1's namespace, the real client is client 0 (wireguard-go).
//!
//! Needs root and `BASTION_BIN`; without `BASTION_BIN` each test says it is skipped.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bastion_tests::bastion::{dropped_counter, peer_counter, peer_toml, Bastion, BastionSetup};
use bastion_tests::handshake::{encode_key, message_kind, public_key_of, random_key, Initiator, MessageKind};
use bastion_tests::topology::Topology;
use bastion_tests::{http, wait_until, HttpResponse, HttpServer, Netns};

/// Bound of one step (a handshake and a page, a health transition...).
const STEP: Duration = Duration::from_secs(10);
/// Bound of the service's start, up to health 200.
const START: Duration = Duration::from_secs(20);
/// The service's limit (`tunnel::HANDSHAKES_PER_SECOND`).
const HANDSHAKES_PER_SECOND: u64 = 100;
/// Distinct initiations the flood cycles through: the limiter checks only the MACs, so a
/// replayed initiation costs the bastion as much as a new one, and the flood stays cheap to make.
const FLOOD_VARIETY: usize = 64;
/// The flood sends this many initiations, then sleeps 5 ms: a few thousand a second, tens of
/// times the limit.
const FLOOD_BURST: usize = 20;
/// A flood that is never told to stop ends by itself after this long (longer than every wait
/// the test makes while it runs).
const FLOOD_MAX: Duration = Duration::from_secs(90);

/// The topology (two clients: alice and bob are peers) with a healthy bastion.
fn start(binary: &std::path::Path) -> (Bastion, Topology) {
    let topo = Topology::with(2, 1);
    let bastion = Bastion::start(&topo, binary, BastionSetup::default());
    bastion.wait_healthy(START).unwrap_or_else(|e| panic!("the service did not become healthy: {e}"));
    (bastion, topo)
}

fn status(bastion: &Bastion) -> String {
    bastion.status().unwrap_or_else(|e| panic!("bastion status: {e}"))
}

fn counter(status: &str, label: &str) -> u64 {
    dropped_counter(status, label).unwrap_or_else(|| panic!("no {label:?} counter in bastion status:\n{status}"))
}

/// Sets the flag when dropped: the threads of a scope stop also when the test panics in it.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What came back to the flood's socket, by message kind.
type Replies = HashMap<MessageKind, u64>;

/// A flood of `packets`, cycled, from a socket of its own in `ns` to `target` until `stop` (or
/// `FLOOD_MAX`); counts what comes back into `replies`. Returns how many went out and for how
/// long.
fn flood(
    ns: &Netns,
    target: SocketAddr,
    packets: &[Vec<u8>],
    stop: &AtomicBool,
    replies: &Mutex<Replies>,
) -> (u64, Duration) {
    ns.enter(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind the flood's socket");
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut buf = [0u8; 2048];
                while !done.load(Ordering::Relaxed) {
                    if let Ok((n, _)) = socket.recv_from(&mut buf) {
                        *replies.lock().unwrap().entry(message_kind(&buf[..n])).or_default() += 1;
                    }
                }
            });
            let started = Instant::now();
            let mut sent = 0u64;
            'flood: loop {
                for packet in packets.iter().cycle().take(FLOOD_BURST) {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > FLOOD_MAX {
                        break 'flood;
                    }
                    if socket.send_to(packet, target).is_ok() {
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let elapsed = started.elapsed();
            // Answers to the last initiations still count.
            std::thread::sleep(Duration::from_millis(300));
            done.store(true, Ordering::Relaxed);
            (sent, elapsed)
        })
    })
}

/// An initiator with bob's key, while the bastion is under load: its initiation gets a cookie
/// reply, and the next one, carrying MAC2 made with that cookie, gets a handshake response.
/// Retries when an initiation happens to land just after the limiter's once-a-second reset (no
/// load at that instant, so a response rather than a cookie). Returns what happened.
fn cookie_then_handshake(
    ns: &Netns,
    target: SocketAddr,
    bob_private: &str,
    bastion_public: &str,
) -> Result<String, String> {
    ns.enter(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut bob = Initiator::with_key(bob_private, bastion_public);
        let mut buf = [0u8; 2048];
        let mut exchange = |packet: Vec<u8>| -> Result<Vec<u8>, String> {
            socket.send_to(&packet, target).map_err(|e| format!("send: {e}"))?;
            let (n, _) = socket.recv_from(&mut buf).map_err(|e| format!("no answer to an initiation: {e}"))?;
            Ok(buf[..n].to_vec())
        };
        let mut seen = Vec::new();
        for _ in 0..10 {
            let reply = exchange(bob.initiation())?;
            let kind = message_kind(&reply);
            seen.push(kind);
            if kind != MessageKind::CookieReply {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            bob.accept(target.ip(), &reply)?;
            let answer = exchange(bob.initiation())?;
            let answered = message_kind(&answer);
            if answered != MessageKind::Response {
                return Err(format!(
                    "an initiation with the cookie's MAC2 got {answered:?}, not a handshake \
                     response (before: {seen:?})"
                ));
            }
            bob.accept(target.ip(), &answer)?;
            if !bob.has_session() {
                return Err("the handshake response did not make a session".into());
            }
            return Ok(format!("answers before the cookie: {seen:?}; with MAC2: handshake response"));
        }
        Err(format!("no cookie reply in 10 initiations during the flood: {seen:?}"))
    })
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn a_handshake_flood_gets_cookie_replies_and_real_clients_still_connect() {
    let binary = bastion_tests::bastion::binary();
    let (bastion, topo) = start(&binary);
    let report = |tunnel: Option<&bastion_tests::WgInterface>| {
        let mut parts = vec![bastion.log_report()];
        if let Some(t) = tunnel {
            parts.push(format!("{}\n{}", t.show(), t.log_report()));
        }
        parts.push(topo.private_hosts[0].server.log_report());
        parts.join("\n")
    };
    let target = topo.endpoint_v4();
    let bastion_public = topo.bastion_keys.public.clone();
    let mut stranger = Initiator::stranger(&bastion_public);
    let packets: Vec<Vec<u8>> = (0..FLOOD_VARIETY).map(|_| stranger.initiation()).collect();
    let before = status(&bastion);

    let stop = AtomicBool::new(false);
    let replies = Mutex::new(Replies::new());
    let health: Mutex<Vec<Result<HttpResponse, String>>> = Mutex::new(Vec::new());
    let attacker = &topo.clients[1].ns;
    let (flood_result, probe, tunnel, page_after, cookie_seen) = std::thread::scope(|scope| {
        let flooding = scope.spawn(|| flood(attacker, target, &packets, &stop, &replies));
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let answer = bastion.health();
                health.lock().unwrap().push(answer);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let stopping = StopOnDrop(&stop);
        // The rest only makes sense once the bastion is under load: cookies come back.
        wait_until("cookie replies to the flood", STEP, || {
            let seen = replies.lock().unwrap().clone();
            if seen.get(&MessageKind::CookieReply).copied().unwrap_or(0) > 0 {
                Ok(())
            } else {
                Err(format!("replies so far: {seen:?}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", report(None)));
        let probe = cookie_then_handshake(attacker, target, &topo.clients[1].keys.private, &bastion_public);

        // A real client arrives in the middle of the flood.
        let tunnel = topo.start_client_tunnel(0, target);
        let started = Instant::now();
        let host = &topo.private_hosts[0];
        let path = HttpServer::probe_path();
        // wireguard-go retries its handshake every 5 s, the second time with the cookie.
        let page = wait_until("alice's page during the flood", Duration::from_secs(25), || {
            http::get(&topo.clients[0].ns, host.http_v4(), &path, Duration::from_secs(2))
        });
        let took = started.elapsed();
        let still_flooding = !flooding.is_finished();
        drop(stopping);
        let page = page.map(|p| (p, took, still_flooding));
        let cookie_seen = tunnel.log_report().contains("Receiving cookie response");
        (flooding.join().unwrap(), probe, tunnel, page, cookie_seen)
    });
    let (sent, flood_time) = flood_result;
    let replies = replies.into_inner().unwrap();
    let health = health.into_inner().unwrap();
    let after = status(&bastion);

    let (page, took, during) = page_after.unwrap_or_else(|e| panic!("{e}\n{}", report(Some(&tunnel))));
    assert_eq!(page.status, 200, "{page:?}");
    assert!(during, "the flood ended before alice's page came: not a test of load");
    let probe = probe.unwrap_or_else(|e| panic!("cookie round trip with boringtun: {e}\n{}", report(Some(&tunnel))));

    let cookies_received = replies.get(&MessageKind::CookieReply).copied().unwrap_or(0);
    let stray: Vec<(&MessageKind, &u64)> =
        replies.iter().filter(|(kind, _)| **kind != MessageKind::CookieReply).collect();
    assert!(
        stray.is_empty(),
        "a stranger's initiations got more than cookie replies: {replies:?}\n{}",
        report(Some(&tunnel))
    );
    let cookies_counted = counter(&after, "cookie replies") - counter(&before, "cookie replies");
    assert!(
        cookies_received > 0 && cookies_counted >= cookies_received,
        "{sent} initiations sent, {cookies_received} cookie replies received, {cookies_counted} \
         counted by the service\n{after}"
    );
    // The limiter's point: however many initiations arrive, at most 100 a second (the limiter
    // resets at most once a second) reach the Diffie-Hellman that finds (here: fails to find)
    // the peer; the rest cost the bastion a MAC and a cookie reply.
    let unknown = counter(&after, "handshakes from unknown keys") - counter(&before, "handshakes from unknown keys");
    let most = HANDSHAKES_PER_SECOND * (flood_time.as_secs() + 3);
    assert!(
        unknown > 0 && unknown <= most && unknown < cookies_counted,
        "{unknown} initiations from the stranger went through the DH in {:.1} s (at most {most}, \
         and fewer than the {cookies_counted} cookie replies)\n{after}",
        flood_time.as_secs_f64()
    );

    let unanswered: Vec<&String> = health.iter().filter_map(|h| h.as_ref().err()).collect();
    let unhealthy: Vec<&HttpResponse> = health.iter().flatten().filter(|r| r.status != 200).collect();
    assert!(
        unanswered.is_empty() && unhealthy.is_empty(),
        "health during the flood: {unanswered:?} {unhealthy:?}\n{}",
        report(Some(&tunnel))
    );
    assert!(bastion.process.is_running(), "{}", report(Some(&tunnel)));
    assert!(
        peer_counter(&after, "alice", "handshakes").unwrap_or(0) >= 1,
        "alice's handshake is not in the status:\n{after}"
    );
    bastion.wait_healthy(STEP).unwrap_or_else(|e| panic!("after the flood: {e}"));
    let host = &topo.private_hosts[0];
    let again = http::get(&topo.clients[0].ns, host.http_v4(), &HttpServer::probe_path(), STEP)
        .unwrap_or_else(|e| panic!("after the flood: {e}\n{}", report(Some(&tunnel))));
    assert_eq!(again.status, 200);

    eprintln!(
        "handshake flood: {sent} initiations in {:.1} s from an unknown key; {cookies_received} \
         cookie replies received ({cookies_counted} sent by the service), {unknown} went through \
         the DH; {} health answers, all 200; alice's page came {:.1} s into her tunnel \
         (wireguard-go {} a cookie reply); bob via boringtun: {probe}",
        flood_time.as_secs_f64(),
        health.len(),
        took.as_secs_f64(),
        if cookie_seen { "received" } else { "did not need" }
    );
}

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn initiations_from_an_unknown_key_are_counted_not_answered() {
    let binary = bastion_tests::bastion::binary();
    let (bastion, topo) = start(&binary);
    let target = topo.endpoint_v4();
    let bastion_public = topo.bastion_keys.public.clone();
    let before = status(&bastion);
    let count = 5;

    let (stranger_replies, bob_sessions) = topo.clients[1].ns.enter(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 2048];
        // Well under the limit: no cookie replies either, so silence means "not answered".
        let mut stranger = Initiator::stranger(&bastion_public);
        let mut replies = Vec::new();
        for _ in 0..count {
            socket.send_to(&stranger.initiation(), target).unwrap();
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                replies.push(message_kind(&buf[..n]));
            }
        }
        let quiet_until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < quiet_until {
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                replies.push(message_kind(&buf[..n]));
            }
        }
        // The control: the same from a peer's key is answered, on the same socket.
        let mut sessions = 0;
        for _ in 0..count {
            let mut bob = Initiator::with_key(&topo.clients[1].keys.private, &bastion_public);
            socket.send_to(&bob.initiation(), target).unwrap();
            let answer = wait_until("a handshake response for bob", Duration::from_secs(3), || {
                socket.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec()).map_err(|e| e.to_string())
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", bastion.log_report()));
            assert_eq!(message_kind(&answer), MessageKind::Response, "bob's answer");
            bob.accept(IpAddr::from(bastion_tests::topology::BASTION_PUBLIC_V4), &answer)
                .unwrap_or_else(|e| panic!("{e}"));
            if bob.has_session() {
                sessions += 1;
            }
        }
        (replies, sessions)
    });
    let after = status(&bastion);
    assert!(
        stranger_replies.is_empty(),
        "initiations from an unknown key were answered: {stranger_replies:?}\n{}",
        bastion.log_report()
    );
    assert_eq!(bob_sessions, count, "bob's handshakes (the control)");
    let unknown = counter(&after, "handshakes from unknown keys") - counter(&before, "handshakes from unknown keys");
    assert_eq!(unknown, count as u64, "the stranger's initiations counted:\n{after}");
    let cookies = counter(&after, "cookie replies") - counter(&before, "cookie replies");
    assert_eq!(cookies, 0, "no load, no cookies:\n{after}");
    assert_eq!(
        peer_counter(&after, "bob", "handshakes"),
        Some(count as u64),
        "bob's handshakes in the status:\n{after}"
    );
}

/// The figures of the `initiations:` line of `bastion status`: answered by the peer last heard from
/// their source, and those that were another peer's.
fn initiation_counts(status: &str) -> (u64, u64) {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("initiations: "))
        .unwrap_or_else(|| panic!("no initiations line in bastion status:\n{status}"));
    let numbers: Vec<u64> = line.split([' ', ',']).filter_map(|word| word.parse().ok()).collect();
    match numbers[..] {
        [known, missed] => (known, missed),
        _ => panic!("not two figures in {line:?}"),
    }
}

/// Two users behind one address and port (one NAT mapping), each with a peer of their own: an
/// initiation goes first to the peer last heard from its source, which saves the Diffie-Hellman
/// that identifies the sender when it is that peer; when it is the other, that peer's keys
/// refuse it without harm and it is identified as usual. Every initiation is answered with a
/// response the initiator accepts (so it came from the right peer's session), a replayed one is
/// not, and the status counts both kinds.
#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn initiations_try_the_peer_last_heard_from_their_endpoint_first() {
    let binary = bastion_tests::bastion::binary();
    let topo = Topology::with(1, 1);
    let (carol, dave) = (random_key(), random_key());
    let extra = peer_toml("carol", &public_key_of(carol), Ipv4Addr::new(10, 100, 0, 201))
        + &peer_toml("dave", &public_key_of(dave), Ipv4Addr::new(10, 100, 0, 202));
    let bastion = Bastion::start(&topo, &binary, BastionSetup { extra_toml: extra, ..Default::default() });
    bastion.wait_healthy(START).unwrap_or_else(|e| panic!("the service did not become healthy: {e}"));
    let target = topo.endpoint_v4();
    let bastion_public = topo.bastion_keys.public.clone();
    let before = initiation_counts(&status(&bastion));

    // From one socket: carol, carol, dave, carol, carol.
    let order = ["carol", "carol", "dave", "carol", "carol"];
    let replay_answers = topo.clients[0].ns.enter(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 2048];
        let mut last = Vec::new();
        for (step, name) in order.iter().enumerate() {
            let key = if *name == "carol" { carol } else { dave };
            let mut initiator = Initiator::with_key(&encode_key(&key), &bastion_public);
            last = initiator.initiation();
            socket.send_to(&last, target).unwrap();
            let answer = wait_until(&format!("a handshake response for {name} (step {step})"), STEP, || {
                socket.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec()).map_err(|e| e.to_string())
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", bastion.log_report()));
            assert_eq!(message_kind(&answer), MessageKind::Response, "{name}'s answer at step {step}");
            initiator
                .accept(IpAddr::from(bastion_tests::topology::BASTION_PUBLIC_V4), &answer)
                .unwrap_or_else(|e| panic!("{name} at step {step}: {e}"));
            assert!(initiator.has_session(), "{name} has a session after step {step}");
        }
        // Carol's last initiation again (a replay): her peer refuses it, unanswered, uncounted.
        socket.send_to(&last, target).unwrap();
        let mut answers = Vec::new();
        let quiet_until = Instant::now() + Duration::from_millis(1000);
        while Instant::now() < quiet_until {
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                answers.push(message_kind(&buf[..n]));
            }
        }
        answers
    });
    assert!(replay_answers.is_empty(), "a replayed initiation was answered: {replay_answers:?}");
    let after = status(&bastion);
    let (known, missed) = initiation_counts(&after);
    // Steps 2 and 5 were answered by the peer last heard there; steps 3 and 4 were the other
    // peer's; the replay was neither.
    assert_eq!((known - before.0, missed - before.1), (2, 2), "initiation counts:\n{after}");
    for name in ["carol", "dave"] {
        let expected = order.iter().filter(|n| **n == name).count() as u64;
        assert_eq!(peer_counter(&after, name, "handshakes"), Some(expected), "{name}'s handshakes:\n{after}");
    }
}
