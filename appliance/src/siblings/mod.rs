//! `[siblings]`: a bastion that takes a dead sibling out of the load balancer, so that stock
//! WireGuard clients (the official apps, with no helper beside them) recover on their own.
//!
//! Every [`Siblings::poll_seconds`] (2 s by default: one DescribeTargetHealth call per bastion)
//! it reads the target group's health as the load balancer sees it; [`plan::Planner`] decides
//! (no I/O); this shell makes the calls (ELBv2 DeregisterTargets, Auto Scaling
//! SetInstanceHealth), logs each with its reason, and backs off (init's `Backoff`, doubling
//! to 60 s) while AWS
//! answers with errors. Which targets are this bastion comes from IMDS (its instance id and
//! private IPv4 address), so the same config serves every bastion of the group.
//!
//! With `take_over_addresses` (ip targets), the survivor [`plan`] picks in a dead target's
//! subnet also moves the dead target's address to its own network interface (EC2
//! AssignPrivateIpAddresses with AllowReassignment) and adds it to the link that holds its own
//! address, so the flows the load balancer keeps on that address reach a live bastion, whose
//! replies leave from that address (`tunnel::udp::Path`). A leaving sibling's address (its
//! target deregistered, draining) is taken over the same way, so the flows a planned scale-in
//! would strand go on here. It gives the address back to the
//! subnet (UnassignPrivateIpAddresses) once nothing came to it for
//! [`plan::GIVE_BACK_AFTER`]: the dead target is deregistered at the same time, so only its
//! old flows use the address, and the replacement instance comes with its own.
//!
//! With `register_self` (ip targets, which Auto Scaling does not register), the bastion adds
//! its interface's secondary addresses (IMDS `local-ipv4s` beyond the primary) to its link
//! when they are missing, registers them in the target group, and deregisters them as soon as
//! it drains (the lifecycle hook's Terminated, SIGTERM), so that new flows go elsewhere and, as
//! AWS documents, its flows end with the deregistration delay.
//!
//! The endpoints are AWS's own in the target group's region, or `[aws] endpoint_url`;
//! credentials come from the standard chain (on EC2: the instance role).

pub mod plan;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bastion_aws::{Client, Environment};

use crate::config::{Aws, Siblings};
use crate::init::backoff::Backoff;
use crate::log;
use ip_network::Ipv4Network;
use plan::{Action, HolderVerdict, Planner, Rules, Standing, Target};

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What the poller has done, for `bastion status` and the metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Targets this bastion deregistered.
    pub deregistered: AtomicU64,
    /// Instances this bastion marked unhealthy.
    pub marked_unhealthy: AtomicU64,
    /// Dead siblings' addresses this bastion took over (or a leaving one handed it), and gave
    /// back.
    pub taken_over: AtomicU64,
    pub given_back: AtomicU64,
    /// Rounds that failed (AWS unreachable, denied, throttled past its retries).
    pub failures: AtomicU64,
}

/// What the poller reads from the running service.
pub trait ServiceView: Send {
    /// How long ago a peer's datagram last came to the local address `local`; `None` when no
    /// peer's datagrams arrive there.
    fn last_heard_on(&self, local: Ipv4Addr) -> Option<Duration>;
    /// Whether the service is draining (leaving).
    fn draining(&self) -> bool;
    /// Datagrams of sessions this bastion does not hold that come to `address` go to
    /// `previous` (the leaving sibling it took the address from, which may still hold them);
    /// `None` stops it (`tunnel::relay`).
    fn relay_from(&self, address: Ipv4Addr, previous: Option<SocketAddrV4>);
    /// Datagrams of sessions this bastion does not hold, wherever else they come, go to each
    /// of `siblings` (leaving ones); empty stops it (`tunnel::relay`).
    fn relay_to_leaving(&self, siblings: Vec<SocketAddrV4>);
}

/// How often the poller looks at the drain between rounds: a leaving bastion deregisters
/// itself at once.
const DRAIN_LOOK: Duration = Duration::from_millis(200);

/// Starts the poller when `[siblings] target_group_arn` is set (counting into `counters`); it
/// runs until the process ends.
pub fn start(
    siblings: &Siblings,
    aws: &Aws,
    counters: Arc<Counters>,
    recorder: crate::audit::Recorder,
    listen_port: u16,
    service: Box<dyn ServiceView>,
) -> Option<JoinHandle<()>> {
    let arn = siblings.target_group_arn.clone()?;
    let region = crate::config::values::region_of_arn(&arn).unwrap_or_default().to_string();
    let services = ["elasticloadbalancing", "autoscaling", "ec2"];
    let env = Environment::from_process().with_endpoint(aws.endpoint_url.as_deref(), &services);
    let poll = Duration::from_secs(siblings.poll_seconds);
    let options = Options {
        mark_unhealthy: siblings.mark_unhealthy,
        take_over: siblings.take_over_addresses,
        register_self: siblings.register_self.then_some(listen_port),
        listen_port,
    };
    // Resource names, no secrets: shown whole rather than as key-like text.
    crate::keys::show_in_diagnostics(&arn);
    log!(
        "siblings: watching target group {arn} every {} s (a target the load balancer reports unhealthy is \
         deregistered{}{})",
        poll.as_secs(),
        if options.mark_unhealthy { ", its instance marked unhealthy" } else { "" },
        if options.take_over { ", its address taken over when it is in this bastion's subnet" } else { "" }
    );
    if options.register_self.is_some() {
        log!("siblings: this bastion registers its own secondary addresses and deregisters them when it drains");
    }
    Some(std::thread::spawn(move || run(Client::new(env, region), &arn, poll, options, &counters, recorder, service)))
}

/// What `[siblings]` lets the poller do besides deregistering.
#[derive(Debug, Clone, Copy)]
struct Options {
    mark_unhealthy: bool,
    take_over: bool,
    /// `register_self`: the port to register with.
    register_self: Option<u16>,
    /// The WireGuard port (the same on every bastion of the group).
    listen_port: u16,
}

/// Whether `id` has the shape of an EC2 instance id (`i-` and 8 or 17 hex digits).
pub fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// This bastion as IMDS describes it.
struct Identity {
    /// Its instance id and primary private IPv4 (either may be its target id).
    fixed: Vec<String>,
    /// With address takeover or self-registration: its network interface and subnet.
    interface: Option<Interface>,
    /// Its interface's own secondary addresses (its ip targets): IMDS `local-ipv4s` beyond the
    /// primary, less the siblings' addresses it holds. Read again each time it (re)joins.
    own: Vec<Ipv4Addr>,
    /// The address EC2 last assigned it fresh, and when: IMDS may not list it yet (EC2 says a
    /// remapping is asynchronous), so it counts as its own for [`FRESH_GRACE`].
    fresh: Option<(Ipv4Addr, Instant)>,
}

/// How long an address EC2 has just assigned counts as this bastion's even where IMDS does not
/// list it yet.
const FRESH_GRACE: Duration = Duration::from_secs(60);

/// The network interface that takes addresses over, and the link that holds its address here.
struct Interface {
    eni: String,
    mac: String,
    primary: Ipv4Addr,
    subnet: Ipv4Network,
    link: u32,
}

impl Identity {
    fn from_imds(env: &Environment, interface_needed: bool) -> Result<Identity, String> {
        let imds = bastion_aws::imds::Imds::new(&env.imds_endpoint());
        let read = |path: &str| -> Result<Option<String>, String> {
            match imds.get(path) {
                Ok(text) if !text.trim().is_empty() && text.trim().len() < 64 => Ok(Some(text.trim().to_string())),
                Ok(_) | Err(bastion_aws::imds::ImdsError::NotFound(_)) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        };
        let instance = read("meta-data/instance-id")?;
        let local = read("meta-data/local-ipv4")?;
        let fixed: Vec<String> = instance.iter().chain(local.iter()).cloned().collect();
        if fixed.is_empty() {
            return Err("IMDS has neither meta-data/instance-id nor meta-data/local-ipv4".into());
        }
        if !interface_needed {
            return Ok(Identity { fixed, interface: None, own: Vec::new(), fresh: None });
        }
        let need = |path: &str| read(path)?.ok_or_else(|| format!("IMDS has no {path} (needed for ip targets)"));
        let primary: Ipv4Addr = local
            .as_deref()
            .and_then(|a| a.parse().ok())
            .ok_or("IMDS meta-data/local-ipv4 is not an IPv4 address (needed for ip targets)")?;
        let mac = need("meta-data/mac")?;
        if !mac.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!("IMDS meta-data/mac is not a MAC address: {mac:?}"));
        }
        let eni = need(&format!("meta-data/network/interfaces/macs/{mac}/interface-id"))?;
        if !eni.starts_with("eni-") {
            return Err(format!("IMDS gives {eni:?} as the interface id (expected eni-...)"));
        }
        let cidr = need(&format!("meta-data/network/interfaces/macs/{mac}/subnet-ipv4-cidr-block"))?;
        let subnet: Ipv4Network =
            cidr.parse().map_err(|_| format!("IMDS gives {cidr:?} as the subnet (expected a.b.c.d/n)"))?;
        let link = crate::netlink::route::link_with_address(IpAddr::V4(primary))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no link here holds this bastion's address {primary}"))?;
        crate::keys::show_in_diagnostics(&eni);
        log!("siblings: network interface {eni} ({}) in subnet {subnet}", link.name);
        let interface = Interface { eni, mac, primary, subnet, link: link.index };
        let mut me = Identity { fixed, interface: Some(interface), own: Vec::new(), fresh: None };
        me.read_own(env, &[])?;
        Ok(me)
    }

    /// The ids a target of this bastion can have: its instance id, its primary address, and
    /// its own secondary addresses.
    fn ids(&self) -> Vec<String> {
        self.fixed.iter().cloned().chain(self.own.iter().map(|a| a.to_string())).collect()
    }

    /// Reads its own secondary addresses from IMDS again (`held`: siblings' addresses it holds,
    /// which are not its own): adds those missing to its link, and takes off the link a
    /// secondary address (/32 in its subnet) that is no longer its interface's: one a sibling
    /// took over while this bastion was draining or down.
    fn read_own(&mut self, env: &Environment, held: &[Ipv4Addr]) -> Result<(), String> {
        let Some(interface) = &self.interface else { return Ok(()) };
        let imds = bastion_aws::imds::Imds::new(&env.imds_endpoint());
        let mut assigned = interface_addresses(&imds, &interface.mac)?;
        if let Some((address, _)) = self.fresh.filter(|(_, at)| at.elapsed() < FRESH_GRACE) {
            if !assigned.contains(&address) {
                assigned.push(address);
            }
        }
        let mut own = Vec::new();
        for address in assigned.iter().copied() {
            if address != interface.primary && !held.contains(&address) && !own.contains(&address) {
                own.push(address);
            }
        }
        let on_link = crate::netlink::route::addresses(interface.link).map_err(|e| e.to_string())?;
        for a in &on_link {
            let IpAddr::V4(address) = a.address else { continue };
            let secondary = a.prefix_len == 32 && interface.subnet.contains(address) && address != interface.primary;
            if secondary && !assigned.contains(&address) && !held.contains(&address) {
                crate::netlink::route::remove_address(interface.link, a.address, a.prefix_len)
                    .map_err(|e| format!("removing {address}: {e}"))?;
                log!(
                    "siblings: took {address} off this bastion's link: EC2 no longer assigns it to {} \
                     (a sibling took it over)",
                    interface.eni
                );
            }
        }
        // EC2 assigns them; the system configures them (DHCP brings the primary only).
        for &address in &own {
            if !on_link.iter().any(|a| a.address == IpAddr::V4(address)) {
                add_to_link(interface.link, address)?;
                log!("siblings: added this interface's secondary address {address} to its link (IMDS local-ipv4s)");
            }
        }
        self.own = own;
        Ok(())
    }
}

/// Adds `address`/32 to the link, unless it holds it already.
fn add_to_link(link: u32, address: Ipv4Addr) -> Result<(), String> {
    if crate::netlink::route::link_with_address(IpAddr::V4(address)).map_err(|e| e.to_string())?.is_some() {
        return Ok(());
    }
    crate::netlink::route::add_address(link, IpAddr::V4(address), 32).map_err(|e| format!("configuring {address}: {e}"))
}

/// The IPv4 addresses EC2 has assigned to the interface `mac` now (IMDS `local-ipv4s`).
fn interface_addresses(imds: &bastion_aws::imds::Imds, mac: &str) -> Result<Vec<Ipv4Addr>, String> {
    let text = imds
        .get(&format!("meta-data/network/interfaces/macs/{mac}/local-ipv4s"))
        .map_err(|e| format!("IMDS local-ipv4s: {e}"))?;
    text.lines()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| a.parse().map_err(|_| format!("IMDS local-ipv4s holds {a:?}, not an IPv4 address")))
        .collect()
}

/// A dead sibling's address this bastion holds.
struct Held {
    address: Ipv4Addr,
    since: Instant,
}

fn run(
    client: Client,
    arn: &str,
    poll: Duration,
    options: Options,
    counters: &Counters,
    recorder: crate::audit::Recorder,
    service: Box<dyn ServiceView>,
) {
    let mut poller = Poller {
        client,
        arn,
        options,
        counters,
        recorder,
        service,
        started: Instant::now(),
        planner: Planner::default(),
        me: None,
        held: Vec::new(),
        leaving: Vec::new(),
        registered: Vec::new(),
        last_standing: None,
    };
    let mut backoff = Backoff::new(poll * 2, MAX_BACKOFF, Duration::MAX);
    let mut wait = poll;
    let mut last_problem: Option<String> = None;
    loop {
        // A drain starting meanwhile ends the wait: the bastion takes itself out at once.
        let until = Instant::now() + wait;
        while Instant::now() < until && !poller.leaving() {
            std::thread::sleep(DRAIN_LOOK.min(until.saturating_duration_since(Instant::now())));
        }
        match poller.round() {
            Ok(()) => {
                if last_problem.take().is_some() {
                    log!("siblings: AWS answers again");
                }
                backoff.reset();
                wait = poll;
            }
            Err(problem) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                if last_problem.as_ref() != Some(&problem) {
                    log!("siblings: {problem} (trying again with backoff, up to {} s)", MAX_BACKOFF.as_secs());
                    last_problem = Some(problem);
                }
                wait = backoff.after_failure(Duration::ZERO);
            }
        }
    }
}

/// The poller's state between rounds.
struct Poller<'a> {
    client: Client,
    arn: &'a str,
    options: Options,
    counters: &'a Counters,
    /// Each action taken is an audit record too.
    recorder: crate::audit::Recorder,
    service: Box<dyn ServiceView>,
    started: Instant,
    planner: Planner,
    /// This bastion, once IMDS told.
    me: Option<Identity>,
    /// The addresses taken over and not given back yet.
    held: Vec<Held>,
    /// The leaving siblings relayed to (target id, WireGuard address), as the planner says.
    leaving: Vec<(String, SocketAddrV4)>,
    /// `register_self`: its addresses it registered (none while it drains).
    registered: Vec<Ipv4Addr>,
    /// What the last round logged about this bastion's own standing.
    last_standing: Option<Standing>,
}

impl Poller<'_> {
    /// Draining with its own addresses still registered.
    fn leaving(&self) -> bool {
        !self.registered.is_empty() && self.service.draining()
    }

    /// One read of the group's health, and the actions it calls for.
    fn round(&mut self) -> Result<(), String> {
        if self.me.is_none() {
            let interface_needed = self.options.take_over || self.options.register_self.is_some();
            let me = Identity::from_imds(self.client.env(), interface_needed)
                .map_err(|e| format!("cannot tell which target is this bastion: {e}"))?;
            me.fixed.iter().filter(|id| is_instance_id(id)).for_each(|id| crate::keys::show_in_diagnostics(id));
            log!("siblings: this bastion is target {}", me.ids().join(" or "));
            self.me = Some(me);
        }
        self.register_self()?;
        self.give_back_idle_addresses()?;
        let Some(me) = &self.me else { return Ok(()) };
        let rules = Rules {
            mark_unhealthy: self.options.mark_unhealthy,
            take_over_in: me.interface.as_ref().map(|i| i.subnet),
        };
        let targets: Vec<Target> = self
            .client
            .describe_target_health(self.arn)
            .map_err(|e| format!("DescribeTargetHealth: {e}"))?
            .into_iter()
            .map(|t| Target { id: t.id, port: t.port, state: t.state, reason: t.reason })
            .collect();
        for t in targets.iter().filter(|t| is_instance_id(&t.id)) {
            crate::keys::show_in_diagnostics(&t.id);
        }
        let ids = me.ids();
        let decision = self.planner.decide(&targets, &ids, rules, self.started.elapsed());
        if self.last_standing.as_ref() != Some(&decision.standing) {
            match &decision.standing {
                Standing::Healthy => {
                    log!("siblings: the load balancer reports this bastion healthy: acting on dead siblings")
                }
                Standing::NotATarget => log!("siblings: the load balancer does not list this bastion: not acting"),
                Standing::NotHealthy(state) => {
                    log!("siblings: the load balancer reports this bastion {state}: not acting")
                }
            }
            self.last_standing = Some(decision.standing.clone());
        }
        let healthy = targets.iter().filter(|t| t.state == "healthy").count();
        for action in &decision.actions {
            let mut reason = format!("the load balancer reports it unhealthy; {healthy} target(s) healthy");
            let (target, counter, what) = match action {
                Action::TakeOver { address, dead } => {
                    let interface = me.interface.as_ref().ok_or("no interface to take addresses over on")?;
                    if !dead {
                        reason =
                            format!("its target is deregistered (the sibling leaves); {healthy} target(s) healthy");
                    }
                    // A leaving sibling still holds its clients' sessions until they re-key here:
                    // what of them comes to the address goes to it, from the first datagram on.
                    let previous = if *dead { None } else { previous_holder(&self.client, &ids, *address)? };
                    let previous = previous.map(|p| SocketAddrV4::new(p, self.options.listen_port));
                    if previous.is_some() {
                        self.service.relay_from(*address, previous);
                    }
                    if let Err(e) = take_over(&self.client, interface, *address, *dead, healthy) {
                        self.service.relay_from(*address, None);
                        self.planner.take_over_failed(&address.to_string());
                        return Err(e);
                    }
                    if let Some(previous) = previous {
                        log!(
                            "siblings: datagrams of sessions this bastion does not hold that come to {address} go \
                             to {previous}, the sibling leaving, and its answers leave from {address}, until its \
                             clients have re-keyed here"
                        );
                    }
                    self.held.retain(|h| h.address != *address);
                    self.held.push(Held { address: *address, since: Instant::now() });
                    (address.to_string(), &self.counters.taken_over, "took_over_address")
                }
                Action::Deregister { id, port } => {
                    deregister(&self.client, self.arn, id, *port, healthy)?;
                    (id.clone(), &self.counters.deregistered, "deregistered")
                }
                Action::MarkUnhealthy { instance_id } => {
                    mark_unhealthy(&self.client, instance_id)?;
                    (instance_id.clone(), &self.counters.marked_unhealthy, "marked_unhealthy")
                }
                Action::MarkHolderUnhealthy { address } => {
                    let Some(instance_id) = holder(&self.client, &ids, &targets, *address)? else { continue };
                    mark_unhealthy(&self.client, &instance_id)?;
                    (instance_id, &self.counters.marked_unhealthy, "marked_unhealthy")
                }
                // Nothing changes in AWS: no audit record.
                Action::RelayToLeaving { id } => {
                    let to = match leaving_address(&self.client, id) {
                        Ok(Some(address)) => SocketAddrV4::new(address, self.options.listen_port),
                        Ok(None) => continue,
                        Err(e) => {
                            self.planner.relay_failed(id);
                            return Err(e);
                        }
                    };
                    self.leaving.push((id.clone(), to));
                    self.service.relay_to_leaving(self.leaving.iter().map(|(_, to)| *to).collect());
                    log!(
                        "siblings: datagrams of sessions this bastion does not hold go to {to} too, the sibling \
                         {id} leaving (its flows come to other targets when its deregistration delay ends), until \
                         its clients have re-keyed"
                    );
                    continue;
                }
                Action::StopRelayingTo { id } => {
                    self.leaving.retain(|(leaving, _)| leaving != id);
                    self.service.relay_to_leaving(self.leaving.iter().map(|(_, to)| *to).collect());
                    log!("siblings: no longer relaying to {id} (it left the group, or serves again)");
                    continue;
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.recorder.record(crate::audit::AuditEvent::SiblingAction { target, action: what.into(), reason });
        }
        Ok(())
    }

    /// `register_self`: registers this bastion's own secondary addresses while it serves, and
    /// deregisters them as soon as it drains. A drain that ends without the instance leaving
    /// (lifecycle Standby, then InService) registers them again; its interface's addresses are
    /// read again first, since a sibling may have taken them over meanwhile. With none left
    /// (taken over while it drained, or while its service was down) it has EC2 assign a fresh
    /// one, so that it serves new flows again.
    fn register_self(&mut self) -> Result<(), String> {
        let (Some(port), Some(me)) = (self.options.register_self, self.me.as_mut()) else { return Ok(()) };
        let draining = self.service.draining();
        if draining {
            while let Some(&address) = self.registered.first() {
                let id = address.to_string();
                self.client
                    .deregister_target(self.arn, &id, Some(port))
                    .map_err(|e| format!("DeregisterTargets {id}: {e}"))?;
                self.registered.remove(0);
                log!("siblings: deregistered this bastion's address {id} port {port}: this bastion drains");
                self.recorder.record(crate::audit::AuditEvent::SiblingAction {
                    target: id,
                    action: "deregistered_self".into(),
                    reason: "this bastion drains".into(),
                });
            }
            return Ok(());
        }
        if !self.registered.is_empty() {
            return Ok(());
        }
        let held: Vec<Ipv4Addr> = self.held.iter().map(|h| h.address).collect();
        me.read_own(self.client.env(), &held)?;
        if me.own.is_empty() {
            let interface = me.interface.as_ref().ok_or("register_self needs this bastion's network interface")?;
            let address = fresh_address(&self.client, interface)?;
            me.fresh = Some((address, Instant::now()));
            self.recorder.record(crate::audit::AuditEvent::SiblingAction {
                target: address.to_string(),
                action: "assigned_fresh_address".into(),
                reason: "none of this interface's secondary addresses is its own any more".into(),
            });
            me.own.push(address);
        }
        for &address in &me.own {
            let id = address.to_string();
            self.client.register_target(self.arn, &id, Some(port)).map_err(|e| format!("RegisterTargets {id}: {e}"))?;
            self.registered.push(address);
            log!("siblings: registered this bastion's address {id} port {port}: this bastion serves");
            self.recorder.record(crate::audit::AuditEvent::SiblingAction {
                target: id,
                action: "registered_self".into(),
                reason: "this bastion serves".into(),
            });
        }
        Ok(())
    }

    /// Gives back each taken-over address nothing came to for [`plan::GIVE_BACK_AFTER`].
    fn give_back_idle_addresses(&mut self) -> Result<(), String> {
        let Some(interface) = self.me.as_ref().and_then(|m| m.interface.as_ref()) else { return Ok(()) };
        while let Some(i) =
            self.held.iter().position(|h| plan::give_back(h.since.elapsed(), self.service.last_heard_on(h.address)))
        {
            let address = self.held[i].address;
            match self.client.unassign_private_ip(&interface.eni, &address.to_string()) {
                Ok(()) => {}
                // Moved to another interface since (another survivor's takeover): not ours to give.
                Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidParameterValue")) => {
                    log!("siblings: {address} is no longer on {} ({e})", interface.eni);
                }
                Err(e) => return Err(format!("UnassignPrivateIpAddresses {address}: {e}")),
            }
            remove_from_link(interface.link, address)?;
            self.service.relay_from(address, None);
            self.held.remove(i);
            self.counters.given_back.fetch_add(1, Ordering::Relaxed);
            log!(
                "siblings: gave {address} back to the subnet: nothing came to it for {} s",
                plan::GIVE_BACK_AFTER.as_secs()
            );
            self.recorder.record(crate::audit::AuditEvent::SiblingAction {
                target: address.to_string(),
                action: "gave_back_address".into(),
                reason: format!("nothing came to it for {} s", plan::GIVE_BACK_AFTER.as_secs()),
            });
        }
        Ok(())
    }
}

/// The WireGuard address of the leaving sibling `id`: its primary address, from EC2, for an
/// instance target (`None` when EC2 names no IPv4 address: terminated); the address itself for
/// an ip target.
fn leaving_address(client: &Client, id: &str) -> Result<Option<Ipv4Addr>, String> {
    if !is_instance_id(id) {
        let address =
            id.parse().map_err(|_| format!("the leaving target {id:?} is neither an instance nor an IPv4 address"))?;
        return Ok(Some(address));
    }
    let primary = client
        .primary_address_of_instance(id)
        .map_err(|e| format!("DescribeNetworkInterfaces of instance {id}: {e}"))?;
    let address = primary.and_then(|p| p.parse().ok());
    if address.is_none() {
        log!("siblings: EC2 gives no IPv4 address for the leaving instance {id}: not relaying to it");
    }
    Ok(address)
}

/// Removes `address` from the link, whatever its prefix there.
fn remove_from_link(link: u32, address: Ipv4Addr) -> Result<(), String> {
    let on_link = crate::netlink::route::addresses(link).map_err(|e| e.to_string())?;
    for a in on_link.iter().filter(|a| a.address == IpAddr::V4(address)) {
        crate::netlink::route::remove_address(link, a.address, a.prefix_len)
            .map_err(|e| format!("removing {address}: {e}"))?;
    }
    Ok(())
}

/// Has EC2 assign a free address of the subnet to this bastion's interface, and adds it to the
/// link.
fn fresh_address(client: &Client, interface: &Interface) -> Result<Ipv4Addr, String> {
    let text = client.assign_fresh_private_ip(&interface.eni).map_err(|e| format!("AssignPrivateIpAddresses: {e}"))?;
    let address: Ipv4Addr = text
        .parse()
        .ok()
        .filter(|a| interface.subnet.contains(*a))
        .ok_or_else(|| format!("EC2 assigned {text:?}, not an IPv4 address of subnet {}", interface.subnet))?;
    add_to_link(interface.link, address)?;
    log!(
        "siblings: EC2 assigned {address} to {} as this bastion's own address: none of its secondary addresses \
         is its own any more (a sibling took it over while this bastion drained or was down)",
        interface.eni
    );
    Ok(address)
}

/// Adds `address` to this bastion's link, then moves it to its interface (so no packet the
/// VPC delivers finds it missing); a refused move takes it off the link again.
fn take_over(
    client: &Client,
    interface: &Interface,
    address: Ipv4Addr,
    dead: bool,
    healthy: usize,
) -> Result<(), String> {
    crate::netlink::route::add_address(interface.link, IpAddr::V4(address), 32)
        .map_err(|e| format!("taking {address} over: {e}"))?;
    if let Err(e) = client.assign_private_ip(&interface.eni, &address.to_string()) {
        let _ = remove_from_link(interface.link, address);
        return Err(format!("AssignPrivateIpAddresses {address}: {e}"));
    }
    let why = if dead {
        format!("the load balancer reports it unhealthy (failed health checks), {healthy} target(s) healthy")
    } else {
        format!("its target is deregistered (draining: the sibling leaves), {healthy} target(s) healthy")
    };
    log!("siblings: took over address {address} of a sibling: {why}; its flows reach this bastion now");
    Ok(())
}

fn deregister(client: &Client, arn: &str, id: &str, port: Option<u16>, healthy: usize) -> Result<(), String> {
    client.deregister_target(arn, id, port).map_err(|e| format!("DeregisterTargets {id}: {e}"))?;
    log!(
        "siblings: deregistered target {id}{}: the load balancer reports it unhealthy (failed health checks), \
         {healthy} target(s) healthy; its flows end with the deregistration delay",
        port.map(|p| format!(" port {p}")).unwrap_or_default()
    );
    Ok(())
}

/// The instance to mark for a dead ip target's `address`: the one whose interface holds it
/// (EC2), as [`plan::holder_verdict`] allows.
fn holder(client: &Client, me: &[String], targets: &[Target], address: Ipv4Addr) -> Result<Option<String>, String> {
    let interface = client
        .interface_with_address(&address.to_string())
        .map_err(|e| format!("DescribeNetworkInterfaces {address}: {e}"))?;
    let Some(interface) = interface else {
        log!("siblings: no instance holds {address} any more (terminated?): nothing to mark unhealthy");
        return Ok(None);
    };
    if !is_instance_id(&interface.instance) {
        return Err(format!("EC2 names {:?} as the instance holding {address}", interface.instance));
    }
    crate::keys::show_in_diagnostics(&interface.instance);
    match plan::holder_verdict(&interface.instance, &interface.addresses, me, targets) {
        HolderVerdict::Mark => Ok(Some(interface.instance)),
        HolderVerdict::Itself => {
            log!("siblings: {address} is on this bastion's own interface already: not marking itself unhealthy");
            Ok(None)
        }
        HolderVerdict::Serving(healthy) => {
            log!(
                "siblings: {address} is on instance {} now, whose target {healthy} the load balancer reports \
                 healthy (a sibling took the address over): not marking it",
                interface.instance
            );
            Ok(None)
        }
    }
}

/// The primary address of the sibling whose interface holds `address` now (a leaving one,
/// before this bastion takes the address over), unless it is none, this bastion, or not an
/// IPv4 address.
fn previous_holder(client: &Client, me: &[String], address: Ipv4Addr) -> Result<Option<Ipv4Addr>, String> {
    let interface = client
        .interface_with_address(&address.to_string())
        .map_err(|e| format!("DescribeNetworkInterfaces {address}: {e}"))?;
    Ok(interface
        .filter(|i| !me.contains(&i.instance))
        .and_then(|i| i.primary)
        .and_then(|p| p.parse().ok())
        .filter(|p: &Ipv4Addr| !me.contains(&p.to_string())))
}

fn mark_unhealthy(client: &Client, instance_id: &str) -> Result<(), String> {
    client.set_instance_unhealthy(instance_id).map_err(|e| format!("SetInstanceHealth {instance_id}: {e}"))?;
    log!("siblings: marked instance {instance_id} unhealthy in its Auto Scaling group (it is replaced now)");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_ids_are_told_from_anything_else() {
        for id in ["i-0123abcd", "i-0123456789abcdef0"] {
            assert!(super::is_instance_id(id), "{id}");
        }
        for id in ["", "i-", "i-0123abc", "i-0123456789ABCDEF0", "10.0.1.1", "i-0123456789abcdef0x", "j-0123abcd"] {
            assert!(!super::is_instance_id(id), "{id}");
        }
    }
}
