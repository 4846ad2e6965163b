//! The reconnect storm: bastion A serves 200 real WireGuard peers (boringtun `Tunn`s, each its
//! own key, tunnel address and UDP flow) and dies; the load balancer moves every flow to
//! bastion B at once, so B receives data for 200 sessions it never made, all in the same
//! moment, and must start 200 failover handshakes, while a flood of handshake initiations from
//! strangers hits it too (the cookie defence must keep working). All 200 must recover.
//!
//! The FIGURE line gives the time to the last recovery; the target is 5 s from the re-route.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bastion_tests::bastion::{self, Bastion, BastionSetup};
use bastion_tests::cluster::{Cluster, VIP};
use bastion_tests::handshake::{message_kind, Initiator, MessageKind};
use bastion_tests::storm::{drive_until_answered, tunnel_address, StormPeer};
use bastion_tests::topology::{BASTION_TUNNEL_V4, LISTEN_PORT};

const PEERS: usize = 200;

#[test]
#[ignore = "needs root, network namespaces and the binaries under test: `make integration-test` runs it"]
fn two_hundred_peers_of_a_dead_bastion_all_recover_on_the_other_while_a_flood_gets_cookies() {
    let binary = bastion::binary();
    let cluster = Cluster::build(1, 1);
    let endpoint = SocketAddr::from((VIP, LISTEN_PORT));
    let client_ns = &cluster.topo.clients[0].ns;
    let bastion_public = cluster.topo.bastion_keys.public.clone();
    let mut peers: Vec<StormPeer> = (0..PEERS)
        .map(|i| {
            let index = (bastion_tests::random_u64() as u32) >> 8;
            StormPeer::new(client_ns, &format!("storm{i}"), tunnel_address(i), &bastion_public, index)
        })
        .collect();
    let extra: String = peers.iter().map(StormPeer::toml).collect();
    let setup = BastionSetup { extra_toml: extra, ..BastionSetup::default() };
    let bastions: Vec<Bastion> =
        (0..2).map(|i| Bastion::start_in(&cluster.topo, cluster.bastion_ns(i), &binary, setup.clone())).collect();
    for b in &bastions {
        b.wait_healthy(Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
    }

    // Every peer gets a session with A (in batches of 50, under the handshake rate limit).
    for batch in peers.chunks_mut(50) {
        drive_until_answered(batch, BASTION_TUNNEL_V4, endpoint, Duration::from_millis(250), Duration::from_secs(30));
    }
    let on_a = peers.iter().filter(|p| p.answered.is_some()).count();
    assert_eq!(on_a, PEERS, "peers with an answer from bastion A\n{}", bastions[0].log_report());

    // The flood: initiations from strangers, thousands a second, from the same client host.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, cookies) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flood_socket = client_ns.enter(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
    flood_socket.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let flood = {
        let (stop, sent, cookies) = (stop.clone(), sent.clone(), cookies.clone());
        let bastion_public = bastion_public.clone();
        std::thread::spawn(move || {
            let initiations: Vec<Vec<u8>> =
                (0..64).map(|_| Initiator::stranger(&bastion_public).initiation()).collect();
            let mut buf = [0u8; 256];
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..10 {
                    let _ = flood_socket.send_to(&initiations[n % initiations.len()], endpoint);
                    n += 1;
                }
                sent.fetch_add(10, Ordering::Relaxed);
                while let Ok((len, _)) = flood_socket.recv_from(&mut buf) {
                    if message_kind(&buf[..len]) == MessageKind::CookieReply {
                        cookies.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // A dies; the load balancer moves every flow to B.
    bastions[0].process.signal(libc::SIGKILL);
    bastions[0].process.wait_exit(Duration::from_secs(10)).unwrap();
    cluster.move_flows(1);
    let rerouted = Instant::now();
    for p in peers.iter_mut() {
        p.reset_clock();
    }
    drive_until_answered(&mut peers, BASTION_TUNNEL_V4, endpoint, Duration::from_millis(250), Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();

    let mut times: Vec<f64> = peers.iter().filter_map(|p| p.answered.map(|t| (t - rerouted).as_secs_f64())).collect();
    times.sort_by(f64::total_cmp);
    let (sent, cookies) = (sent.load(Ordering::Relaxed), cookies.load(Ordering::Relaxed));
    eprintln!(
        "FIGURE storm: {} of {PEERS} peers recovered on bastion B; median {:.2} s, last {:.2} s after the re-route; \
         flood: {sent} stranger initiations, {cookies} cookie replies",
        times.len(),
        times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        times.last().copied().unwrap_or(f64::NAN)
    );
    assert_eq!(times.len(), PEERS, "peers that recovered on B\n{}", bastions[1].log_report());
    assert!(
        cookies > 0,
        "the flood got no cookie reply: the defence is off under the storm\n{}",
        bastions[1].log_report()
    );
}
