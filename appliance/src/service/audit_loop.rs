//! The service's audit and CloudWatch thread: every second it reads the peers' counters and
//! writes the session events [`crate::audit::sessions`] decides; every minute it queues a metric
//! record ([`crate::cloudwatch::emf`]) when `[log] cloudwatch_group` ships lines, and a last
//! one when the service stops. It starts the
//! shipper and tees the log into it; [`AuditLoop::stop`] ends the open sessions ("drained"),
//! then sends what is queued.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bastion_aws::{Client, Environment};

use super::reload::PeerChanges;
use super::ServiceState;
use crate::audit::event::{fingerprint, Ended};
use crate::audit::sessions::{PeerSample, SessionTracker};
use crate::audit::{AuditEvent, Recorder};
use crate::cloudwatch::{emf, queue, Destination, Shipper};
use crate::config::{Config, Peer};
use crate::log;
use crate::log::unix_ms;
use crate::tunnel::DataPlane;

const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const METRICS_EVERY: Duration = Duration::from_secs(60);

pub struct AuditLoop {
    recorder: Recorder,
    tracker: Arc<Mutex<SessionTracker>>,
    shipper: Option<Arc<Shipper>>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// This bastion's name in audit records and its CloudWatch stream: the instance id when IMDS
/// is asked (on the appliance, or with CloudWatch on), else the host name.
fn bastion_name(env: &Environment, ask_imds: bool) -> String {
    if ask_imds {
        match bastion_aws::imds::Imds::new(&env.imds_endpoint()).get("meta-data/instance-id") {
            Ok(id) if crate::siblings::is_instance_id(id.trim()) => {
                // No secret: the log shows it whole (its 17 hex digits look like a key fragment).
                crate::keys::show_in_diagnostics(id.trim());
                return id.trim().to_string();
            }
            Ok(_) => log!("audit: IMDS meta-data/instance-id is not an instance id; using the host name"),
            Err(e) => log!("audit: no instance id from IMDS ({e}); using the host name"),
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bastion".into())
}

/// A CloudWatch Logs client for the config's `[aws]` settings (as the SSM source builds its).
fn logs_client(config: &Config, env: Environment) -> Result<Client, String> {
    let env = env.with_endpoint(config.aws.endpoint_url.as_deref(), &["logs"]);
    let region =
        bastion_aws::imds::resolve_region(config.aws.region.as_deref(), &env).map_err(|e| format!("no region: {e}"))?;
    Ok(Client::with_timeout(env, region, crate::cloudwatch::REQUEST_TIMEOUT))
}

impl AuditLoop {
    pub fn start(config: &Config, state: Arc<ServiceState>, data_plane: &Arc<DataPlane>) -> AuditLoop {
        let env = Environment::from_process();
        let on_appliance = std::env::var(super::lifecycle::ENABLE_VAR).is_ok_and(|v| v == "1");
        let group = config.log.cloudwatch_group.clone();
        let bastion = bastion_name(&env, on_appliance || group.is_some());
        let recorder = Recorder { bastion: bastion.clone(), interface: config.interface.name.clone() };
        let shipper = group.and_then(|group| match logs_client(config, env.clone()) {
            Ok(client) => {
                let shipper = Arc::new(Shipper::start(
                    client,
                    Destination { group, stream: bastion.clone() },
                    queue::DEFAULT_MAX_BYTES,
                    queue::DEFAULT_BATCH_BYTES,
                ));
                let tee = Arc::downgrade(&shipper);
                log::set_tee(Some(Arc::new(move |ms, line| {
                    if let Some(shipper) = tee.upgrade() {
                        shipper.push(ms, line);
                    }
                })));
                Some(shipper)
            }
            Err(e) => {
                log!("cloudwatch: ERROR not shipping: {e}");
                None
            }
        });
        let tracker = Arc::new(Mutex::new(SessionTracker::default()));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let sampler = Sampler {
                recorder: recorder.clone(),
                tracker: tracker.clone(),
                shipper: shipper.as_ref().map(Arc::downgrade),
                group: config.log.cloudwatch_group.clone().unwrap_or_default(),
                state,
                data_plane: Arc::downgrade(data_plane),
                totals: Totals::default(),
            };
            let stopping = stopping.clone();
            std::thread::Builder::new().name("audit".into()).spawn(move || sampler.run(&stopping)).ok()
        };
        AuditLoop { recorder, tracker, shipper, stopping, thread }
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Ends the sampling, records the open sessions as drained, and sends what is queued.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        let now_ms = unix_ms();
        for event in self.tracker.lock().unwrap_or_else(|e| e.into_inner()).end_all(now_ms, Ended::Drained) {
            self.recorder.record(event);
        }
        if let Some(shipper) = self.shipper.take() {
            log::set_tee(None);
            shipper.stop();
        }
    }
}

/// The running totals the metric record takes differences of.
#[derive(Default)]
struct Totals {
    handshakes: u64,
    failover_handshakes: u64,
    dropped: u64,
    source_failures: u64,
}

struct Sampler {
    recorder: Recorder,
    tracker: Arc<Mutex<SessionTracker>>,
    shipper: Option<Weak<Shipper>>,
    group: String,
    state: Arc<ServiceState>,
    data_plane: Weak<DataPlane>,
    totals: Totals,
}

impl Sampler {
    fn run(mut self, stopping: &AtomicBool) {
        let mut next_metrics = Instant::now() + METRICS_EVERY;
        if let Some(data_plane) = self.data_plane.upgrade() {
            // The first record's counts start here.
            self.figures(&data_plane);
        }
        while !stopping.load(Ordering::Relaxed) {
            std::thread::park_timeout(SAMPLE_EVERY);
            if stopping.load(Ordering::Relaxed) {
                break;
            }
            let Some(data_plane) = self.data_plane.upgrade() else { break };
            self.sample(&data_plane);
            if Instant::now() >= next_metrics {
                next_metrics += METRICS_EVERY;
                self.ship_metrics(&data_plane);
            }
        }
        // A last record with the figures of the period cut short by the stop.
        if let Some(data_plane) = self.data_plane.upgrade() {
            self.sample(&data_plane);
            self.ship_metrics(&data_plane);
        }
    }

    fn sample(&mut self, data_plane: &DataPlane) {
        let samples: Vec<PeerSample> = data_plane
            .peers()
            .into_iter()
            .filter(|p| !p.internal)
            .map(|p| PeerSample {
                name: p.name,
                key: fingerprint(&p.public_key.0),
                endpoint: p.endpoint.map(|e| e.to_string()),
                since_handshake: p.last_handshake,
                handshakes: p.handshakes,
                failover_handshakes: p.failover_handshakes,
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
            })
            .collect();
        let unknown = data_plane.counters().unknown_peer_handshakes.load(Ordering::Relaxed);
        let now_ms = unix_ms();
        let (events, rejected) = {
            let mut tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            (tracker.observe(now_ms, &samples), tracker.observe_rejected(now_ms, unknown))
        };
        for event in events.into_iter().chain(rejected) {
            self.recorder.record(event);
        }
    }

    /// This period's figures (and the totals moved on).
    fn figures(&mut self, data_plane: &DataPlane) -> emf::Figures {
        let peers = data_plane.peers();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = data_plane.counters();
        let handshakes: u64 = peers.iter().filter(|p| !p.internal).map(|p| p.handshakes).sum();
        let failovers: u64 = peers.iter().map(|p| p.failover_handshakes).sum();
        let dropped = load(&c.dropped_datagrams) + load(&c.rejected_datagrams) + load(&c.dropped_tun_packets);
        let config = self.state.config_state();
        let delta = |now: u64, before: &mut u64| now.saturating_sub(std::mem::replace(before, now));
        emf::Figures {
            healthy: u64::from(super::judge::verdict(&self.state, data_plane).status() == 200),
            live_sessions: self.tracker.lock().unwrap_or_else(|e| e.into_inner()).live() as u64,
            handshakes: delta(handshakes, &mut self.totals.handshakes),
            failover_handshakes: delta(failovers, &mut self.totals.failover_handshakes),
            dropped_datagrams: delta(dropped, &mut self.totals.dropped),
            config_source_failing: u64::from(delta(config.source_failures, &mut self.totals.source_failures) > 0),
            restart_pending: u64::from(!config.restart_pending.is_empty()),
            audit_events_dropped: 0,
        }
    }

    fn ship_metrics(&mut self, data_plane: &DataPlane) {
        let mut figures = self.figures(data_plane);
        let Some(shipper) = self.shipper.as_ref().and_then(Weak::upgrade) else { return };
        figures.audit_events_dropped = shipper.take_dropped();
        if figures.audit_events_dropped > 0 {
            log!("cloudwatch: {} line(s) dropped in the last minute (queue full)", figures.audit_events_dropped);
        }
        let now_ms = unix_ms();
        shipper.push(now_ms, &emf::record(now_ms, &self.group, &self.recorder.bastion, &figures));
    }
}

/// The audit events of a reload that applied: peers added, removed, changed (by key).
pub fn peer_events(changes: &PeerChanges, old: &[Peer], new: &[Peer], version: &str) -> Vec<AuditEvent> {
    let key_of = |peers: &[Peer], name: &str| {
        peers.iter().find(|p| p.name == name).map(|p| fingerprint(&p.public_key.0)).unwrap_or_default()
    };
    let version = version.to_string();
    let mut events = Vec::new();
    for name in &changes.added {
        events.push(AuditEvent::PeerAdded {
            peer: name.clone(),
            key: key_of(new, name),
            config_version: version.clone(),
        });
    }
    for name in &changes.removed {
        events.push(AuditEvent::PeerRemoved {
            peer: name.clone(),
            key: key_of(old, name),
            config_version: version.clone(),
        });
    }
    for name in changes.updated.iter().chain(&changes.recreated) {
        events.push(AuditEvent::PeerChanged {
            peer: name.clone(),
            key: key_of(new, name),
            config_version: version.clone(),
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloads_peer_events_name_each_peer_by_its_own_key() {
        let text = |peers: &str| {
            format!("[interface]\nprivate_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\naddress = [\"10.100.0.1/24\"]\n{peers}")
        };
        let alice = "[[peer]]\nname = \"alice\"\npublic_key = \"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\"\nallowed_ips = [\"10.100.0.2/32\"]\n";
        let bob = "[[peer]]\nname = \"bob\"\npublic_key = \"TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=\"\nallowed_ips = [\"10.100.0.3/32\"]\n";
        let old = crate::config::parse(&text(alice), "a.toml", None).unwrap();
        let new = crate::config::parse(&text(bob), "b.toml", None).unwrap();
        let changes =
            PeerChanges { added: vec!["bob".into()], removed: vec!["alice".into()], ..PeerChanges::default() };
        let events = peer_events(&changes, &old.peers, &new.peers, "v2");
        assert_eq!(
            events,
            [
                AuditEvent::PeerAdded {
                    peer: "bob".into(),
                    key: fingerprint(&new.peers[0].public_key.0),
                    config_version: "v2".into()
                },
                AuditEvent::PeerRemoved {
                    peer: "alice".into(),
                    key: fingerprint(&old.peers[0].public_key.0),
                    config_version: "v2".into()
                },
            ]
        );
    }
}
