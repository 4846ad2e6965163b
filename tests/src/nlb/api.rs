//! The AWS APIs the bastions call about their siblings, answered from the load balancer model:
//! ELBv2 `DescribeTargetHealth`, `DeregisterTargets`, `RegisterTargets` and Auto Scaling
//! `SetInstanceHealth`, in the Query protocol (form body, XML answer), on an address of the
//! load balancer's namespace that the bastions reach as `[aws] endpoint_url`; and, with
//! [`ApiSetup::interfaces`], the "VPC": EC2 `AssignPrivateIpAddresses` (with
//! `AllowReassignment`) and `UnassignPrivateIpAddresses` move a secondary address between the
//! bastions' interfaces (`SecondaryPrivateIpAddressCount` hands out one of [`ApiSetup::free`]), and the load balancer's namespace delivers that address's packets to
//! the interface that holds it (a permanent neighbour entry naming its hardware address, as
//! the VPC's mapping does; an unassigned address goes nowhere), and lets packets from it come
//! only from that interface (EC2's source check: table `ip vpc`); each interface's IMDS
//! `local-ipv4s` follows; `DescribeNetworkInterfaces` names the instance holding an address.
//!
//! Only the shape AWS documents is accepted: a POST with a SigV4 `Authorization` header and a
//! known `Action` (anything else is answered with AWS's error XML). Every call is kept with its
//! time and caller, so tests assert on what the bastions did, and deregistration acts on the
//! model as the real one would (no new flows; the flows' fate is the model's [`super::FlowPolicy`]).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{NlbEventKind, Shared};

/// One call the emulator answered.
#[derive(Clone, Debug)]
pub struct ApiCall {
    pub at: Instant,
    /// The caller's address (which bastion).
    pub from: std::net::IpAddr,
    /// `DescribeTargetHealth`, `DeregisterTargets`...
    pub action: String,
    /// The target or instance id acted on (empty for DescribeTargetHealth).
    pub id: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// The target group's name and the ids of its targets (`ids[i]` is target i).
#[derive(Clone, Debug)]
pub struct ApiSetup {
    pub target_group_arn: String,
    pub ids: Vec<String>,
    /// The port registered with each target.
    pub port: u16,
    /// The bastions' network interfaces on the targets' segment, for EC2's address calls
    /// (empty: EC2 answers only DescribeNetworkInterfaces by instance, from `primaries`).
    pub interfaces: Vec<NetworkInterface>,
    /// With instance targets (no `interfaces`), target i's primary address: what
    /// DescribeNetworkInterfaces by `attachment.instance-id` answers for instance `ids[i]`.
    pub primaries: Vec<Ipv4Addr>,
    /// The subnet's free addresses, in the order AssignPrivateIpAddresses with
    /// `SecondaryPrivateIpAddressCount` hands them out.
    pub free: Vec<Ipv4Addr>,
}

/// One bastion's network interface as EC2 knows it.
#[derive(Clone, Debug)]
pub struct NetworkInterface {
    /// `eni-...`
    pub id: String,
    /// Its hardware address on the load balancer's bridge.
    pub mac: String,
    /// Its primary address (cannot move).
    pub primary: Ipv4Addr,
    /// Its secondary addresses at the start (they can).
    pub secondary: Vec<Ipv4Addr>,
    /// Where its IMDS reads `local-ipv4s` from: rewritten whenever an address moves.
    pub imds_file: Option<std::path::PathBuf>,
    /// The instance it is attached to.
    pub instance: String,
}

/// What EC2, Auto Scaling and the target group hold: the target ids, which interface holds each
/// secondary address (the delivery follows it), and which instance each interface is attached
/// to now.
pub(super) struct Cloud {
    setup: ApiSetup,
    interfaces: Vec<NetworkInterface>,
    holder: Mutex<HashMap<Ipv4Addr, Option<usize>>>,
    /// `setup.ids`, as replacements change them (instance targets).
    ids: Mutex<Vec<String>>,
    /// Interface i's instance, as replacements change it.
    instances: Mutex<Vec<String>>,
}

impl Cloud {
    fn new(shared: &Shared, setup: ApiSetup) -> Cloud {
        let cloud = Cloud {
            interfaces: setup.interfaces.clone(),
            holder: Mutex::new(HashMap::new()),
            ids: Mutex::new(setup.ids.clone()),
            instances: Mutex::new(setup.interfaces.iter().map(|i| i.instance.clone()).collect()),
            setup,
        };
        // EC2's source check: a packet from a secondary address leaves only from the
        // interface that holds it now (an address moved away is no longer the old holder's to
        // send from).
        let movable: Vec<String> = cloud
            .interfaces
            .iter()
            .flat_map(|i| i.secondary.iter())
            .chain(&cloud.setup.free)
            .map(|a| a.to_string())
            .collect();
        if !movable.is_empty() {
            let script = format!(
                "table ip vpc {{\n set movable {{ type ipv4_addr; elements = {{ {} }} }}\n \
                 set owned {{ type ipv4_addr . ether_addr; }}\n \
                 chain source_check {{ type filter hook prerouting priority -300; policy accept;\n  \
                 iifname \"br0\" ip saddr @movable ip saddr . ether saddr != @owned counter drop \
                 comment \"source check\"\n }}\n}}\n",
                movable.join(", ")
            );
            let out = shared.lb.exec_with_input(&["nft", "-f", "-"], script.as_bytes());
            assert!(out.success(), "the VPC's source check: {out}");
        }
        for (i, interface) in cloud.interfaces.iter().enumerate() {
            for &address in &interface.secondary {
                cloud.deliver(shared, address, Some(i));
            }
        }
        cloud
    }

    /// Sends `address`'s packets to interface `to` (`None`: nowhere).
    fn deliver(&self, shared: &Shared, address: Ipv4Addr, to: Option<usize>) {
        let owned = |verb: &str, i: usize| {
            let element = format!("{{ {address} . {} }}", self.interfaces[i].mac);
            let out = shared.lb.exec(&["nft", verb, "element", "ip", "vpc", "owned", &element]);
            assert!(out.success(), "the VPC's source check: {out}");
        };
        // The new holder may send from it as soon as its packets reach it; the old one no more.
        if let Some(i) = to {
            owned("add", i);
        }
        // A hardware address nobody has: an unassigned address's packets are lost.
        let mac = to.map_or("02:00:00:00:00:00", |i| self.interfaces[i].mac.as_str());
        let out = shared.lb.exec(&[
            "ip",
            "neigh",
            "replace",
            &address.to_string(),
            "lladdr",
            mac,
            "dev",
            "br0",
            "nud",
            "permanent",
        ]);
        assert!(out.success(), "VPC delivery of {address}: {out}");
        let mut holder = self.holder.lock().unwrap();
        if let Some(before) = holder.insert(address, to).flatten().filter(|&b| Some(b) != to) {
            owned("delete", before);
        }
        // What each interface's IMDS says from now on: its primary, then what it holds.
        for (i, interface) in self.interfaces.iter().enumerate() {
            let Some(file) = &interface.imds_file else { continue };
            let mut held: Vec<Ipv4Addr> = holder.iter().filter(|(_, h)| **h == Some(i)).map(|(a, _)| *a).collect();
            held.sort();
            let lines: Vec<String> = std::iter::once(interface.primary).chain(held).map(|a| a.to_string()).collect();
            std::fs::write(file, lines.join("\n")).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }

    /// A free address of the subnet, if any is left.
    fn free_address(&self) -> Option<Ipv4Addr> {
        let holder = self.holder.lock().unwrap();
        self.setup.free.iter().copied().find(|a| !holder.get(a).is_some_and(Option::is_some))
    }
}

/// Auto Scaling replacing the instance in `slot` with `instance` (here the new instance has the
/// slot's namespace, link and interface id): the old one's secondary addresses go back to the
/// subnet; with ip targets the new one comes with a free address (the launch template's one
/// secondary address), which it registers itself, and that address is returned; an instance
/// target is registered by Auto Scaling (the old one deregistered first, if it still was).
pub(super) fn replace_instance(shared: &Shared, slot: usize, instance: &str) -> Option<Ipv4Addr> {
    let cloud = shared.cloud.get().expect("the API emulator runs");
    if cloud.interfaces.is_empty() {
        let now = shared.started.elapsed();
        let model = &mut shared.model.lock().unwrap();
        model.deregister(slot, now);
        cloud.ids.lock().unwrap()[slot] = instance.to_string();
        model.register(slot, now);
        shared.place_new_flows(model);
        return None;
    }
    cloud.instances.lock().unwrap()[slot] = instance.to_string();
    let old: Vec<Ipv4Addr> =
        cloud.holder.lock().unwrap().iter().filter(|(_, h)| **h == Some(slot)).map(|(a, _)| *a).collect();
    for address in old {
        cloud.deliver(shared, address, None);
    }
    let address = cloud.free_address().expect("a free address for the replacement");
    cloud.deliver(shared, address, Some(slot));
    Some(address)
}

pub(super) fn serve(shared: Arc<Shared>, listen: SocketAddr, setup: ApiSetup) -> std::thread::JoinHandle<()> {
    let cloud = Arc::new(Cloud::new(&shared, setup));
    assert!(shared.cloud.set(cloud.clone()).is_ok(), "one API emulator per load balancer");
    let lb = shared.lb.name().to_string();
    let listener = crate::Netns::borrowed(&lb).enter(move || {
        let l = TcpListener::bind(listen).unwrap_or_else(|e| panic!("AWS API emulator on {listen}: {e}"));
        l.set_nonblocking(true).unwrap();
        l
    });
    std::thread::spawn(move || {
        while !shared.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, from)) => {
                    let shared = shared.clone();
                    let cloud = cloud.clone();
                    std::thread::spawn(move || {
                        let _ = handle(&shared, &cloud, stream, from);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}

fn handle(shared: &Shared, cloud: &Cloud, stream: TcpStream, from: SocketAddr) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        let mut signed = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "authorization" => signed = value.trim().starts_with("AWS4-HMAC-SHA256 Credential="),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length.min(1 << 20)];
        reader.read_exact(&mut body)?;
        let form = parse_form(&String::from_utf8_lossy(&body));
        let (status, xml, action, id) = if !request_line.starts_with("POST ") {
            (405, error("InvalidAction", "POST only"), String::new(), String::new())
        } else if !signed {
            (403, error("MissingAuthenticationToken", "no SigV4 Authorization header"), String::new(), String::new())
        } else {
            answer(shared, cloud, &form)
        };
        shared.api_calls.lock().unwrap().push(ApiCall { at: Instant::now(), from: from.ip(), action, id, status });
        let reason = if status == 200 { "OK" } else { "Error" };
        let mut out = stream.try_clone()?;
        write!(
            out,
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{xml}",
            xml.len()
        )?;
    }
}

fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(code: &str, message: &str) -> String {
    format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
         <RequestId>emulator</RequestId></ErrorResponse>"
    )
}

fn ec2_error(code: &str, message: &str) -> String {
    format!(
        "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>\
         <RequestID>emulator</RequestID></Response>"
    )
}

/// Interface `i` as DescribeNetworkInterfaces describes it: its instance and its addresses.
fn interface_item(cloud: &Cloud, i: usize) -> String {
    let interface = &cloud.interfaces[i];
    let held: Vec<Ipv4Addr> = {
        let holder = cloud.holder.lock().unwrap();
        holder.iter().filter(|(_, h)| **h == Some(i)).map(|(a, _)| *a).collect()
    };
    let instance = cloud.instances.lock().unwrap()[i].clone();
    addresses_item(&interface.id, &instance, interface.primary, &held)
}

fn addresses_item(eni: &str, instance: &str, primary: Ipv4Addr, secondary: &[Ipv4Addr]) -> String {
    let addresses: String = std::iter::once((primary, true))
        .chain(secondary.iter().map(|&a| (a, false)))
        .map(|(a, primary)| {
            format!("<item><privateIpAddress>{a}</privateIpAddress><primary>{primary}</primary></item>")
        })
        .collect();
    format!(
        "<item><networkInterfaceId>{eni}</networkInterfaceId><attachment><instanceId>{instance}</instanceId>\
         <deviceIndex>0</deviceIndex></attachment><privateIpAddressesSet>{addresses}</privateIpAddressesSet></item>"
    )
}

/// DescribeNetworkInterfaces filtered by `attachment.instance-id`: the instance's interface,
/// with ip targets (`interfaces`) or instance targets (`primaries`).
fn interfaces_of_instance(cloud: &Cloud, instance: &str) -> (u16, String) {
    let items = if cloud.interfaces.is_empty() {
        let ids = cloud.ids.lock().unwrap();
        ids.iter()
            .position(|id| id == instance)
            .and_then(|i| Some((i, *cloud.setup.primaries.get(i)?)))
            .map(|(i, primary)| addresses_item(&format!("eni-instance{i}"), instance, primary, &[]))
            .unwrap_or_default()
    } else {
        let slot = cloud.instances.lock().unwrap().iter().position(|id| id == instance);
        slot.map(|i| interface_item(cloud, i)).unwrap_or_default()
    };
    (200, interfaces_response(&items))
}

/// A DescribeNetworkInterfaces answer holding `items`.
fn interfaces_response(items: &str) -> String {
    format!(
        "<DescribeNetworkInterfacesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>emulator\
         </requestId><networkInterfaceSet>{items}</networkInterfaceSet></DescribeNetworkInterfacesResponse>"
    )
}

/// EC2's address calls: `(status, XML)`.
fn answer_ec2(shared: &Shared, cloud: &Cloud, action: &str, get: impl Fn(&str) -> Option<String>) -> (u16, String) {
    let xmlns = "xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"";
    if action == "DescribeNetworkInterfaces" {
        if get("Filter.1.Name").as_deref() != Some("addresses.private-ip-address") {
            return (
                400,
                ec2_error("InvalidParameterValue", "the emulator filters by addresses.private-ip-address only"),
            );
        }
        let address: Option<Ipv4Addr> = get("Filter.1.Value.1").and_then(|a| a.parse().ok());
        let holder = address.and_then(|a| {
            cloud
                .interfaces
                .iter()
                .position(|i| i.primary == a)
                .or_else(|| cloud.holder.lock().unwrap().get(&a).copied().flatten())
        });
        let items: String = holder.map(|i| interface_item(cloud, i)).unwrap_or_default();
        return (200, interfaces_response(&items));
    }
    let eni = get("NetworkInterfaceId").unwrap_or_default();
    let Some(interface) = cloud.interfaces.iter().position(|i| i.id == eni) else {
        return (
            400,
            ec2_error("InvalidNetworkInterfaceID.NotFound", &format!("The networkInterface ID '{eni}' does not exist")),
        );
    };
    let assigned = |eni: &str, address: Ipv4Addr| {
        format!(
            "<AssignPrivateIpAddressesResponse {xmlns}><requestId>emulator</requestId><networkInterfaceId>{eni}\
             </networkInterfaceId><assignedPrivateIpAddressesSet><item><privateIpAddress>{address}</privateIpAddress>\
             </item></assignedPrivateIpAddressesSet><return>true</return></AssignPrivateIpAddressesResponse>"
        )
    };
    if action == "AssignPrivateIpAddresses" && get("PrivateIpAddress.1").is_none() {
        // EC2 picks a free address of the subnet.
        if get("SecondaryPrivateIpAddressCount").as_deref() != Some("1") {
            return (400, ec2_error("InvalidParameterValue", "the emulator assigns one address at a time"));
        }
        let Some(address) = cloud.free_address() else {
            return (400, ec2_error("InsufficientFreeAddressesInSubnet", "no free address left in the subnet"));
        };
        cloud.deliver(shared, address, Some(interface));
        return (200, assigned(&eni, address));
    }
    let Some(address) = get("PrivateIpAddress.1").and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
        return (400, ec2_error("InvalidParameterValue", "PrivateIpAddress.1 must be an IPv4 address"));
    };
    if cloud.interfaces.iter().any(|i| i.primary == address) {
        return (400, ec2_error("InvalidParameterValue", &format!("{address} is a primary address")));
    }
    let holder = cloud.holder.lock().unwrap().get(&address).copied().flatten();
    if action == "AssignPrivateIpAddresses" {
        if holder.is_some_and(|h| h != interface) && get("AllowReassignment").as_deref() != Some("true") {
            return (400, ec2_error("PrivateIpAddressInUse", &format!("{address} is in use")));
        }
        cloud.deliver(shared, address, Some(interface));
        (200, assigned(&eni, address))
    } else {
        if holder != Some(interface) {
            return (400, ec2_error("InvalidParameterValue", &format!("{address} is not assigned to {eni}")));
        }
        cloud.deliver(shared, address, None);
        let body = format!(
            "<UnassignPrivateIpAddressesResponse {xmlns}><requestId>emulator</requestId><return>true</return>\
             </UnassignPrivateIpAddressesResponse>"
        );
        (200, body)
    }
}

/// `(status, XML, action, id)` for one call.
fn answer(shared: &Shared, cloud: &Cloud, form: &[(String, String)]) -> (u16, String, String, String) {
    let get = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let action = get("Action").unwrap_or_default();
    let id = get("Targets.member.1.Id")
        .or_else(|| get("InstanceId"))
        .or_else(|| get("PrivateIpAddress.1"))
        .or_else(|| get("Filter.1.Value.1"))
        .unwrap_or_default();
    if action == "DescribeNetworkInterfaces" && get("Filter.1.Name").as_deref() == Some("attachment.instance-id") {
        let (status, xml) = interfaces_of_instance(cloud, &id);
        return (status, xml, action, id);
    }
    let ec2 = ["AssignPrivateIpAddresses", "UnassignPrivateIpAddresses", "DescribeNetworkInterfaces"];
    if ec2.contains(&action.as_str()) && !cloud.interfaces.is_empty() {
        let (status, xml) = answer_ec2(shared, cloud, &action, get);
        return (status, xml, action, id);
    }
    let fail = |status, code: &str, message: &str| (status, error(code, message), action.clone(), id.clone());
    let group_ok = || get("TargetGroupArn").as_deref() == Some(cloud.setup.target_group_arn.as_str());
    let ids = cloud.ids.lock().unwrap().clone();
    let target = ids.iter().position(|t| *t == id);
    let now = shared.started.elapsed();
    let ok = |name: &str, inner: String| {
        (
            200,
            format!("<{name}Response><{name}Result>{inner}</{name}Result></{name}Response>"),
            action.clone(),
            id.clone(),
        )
    };
    match action.as_str() {
        "DescribeTargetHealth" | "DeregisterTargets" | "RegisterTargets" if !group_ok() => {
            fail(400, "TargetGroupNotFound", "One or more target groups not found")
        }
        "DescribeTargetHealth" => {
            let model = shared.model.lock().unwrap();
            let members: String = ids
                .iter()
                .enumerate()
                .filter_map(|(i, id)| {
                    let (state, reason) = model.reported_health(i, now)?;
                    let reason = if reason.is_empty() { String::new() } else { format!("<Reason>{reason}</Reason>") };
                    Some(format!(
                        "<member><Target><Id>{id}</Id><Port>{}</Port></Target><HealthCheckPort>traffic-port\
                         </HealthCheckPort><TargetHealth>{reason}<State>{state}</State></TargetHealth></member>",
                        cloud.setup.port
                    ))
                })
                .collect();
            ok("DescribeTargetHealth", format!("<TargetHealthDescriptions>{members}</TargetHealthDescriptions>"))
        }
        "DeregisterTargets" | "RegisterTargets" => {
            let Some(target) = target else {
                return fail(400, "InvalidTarget", "The target is not in the target group's VPC");
            };
            let model = &mut shared.model.lock().unwrap();
            if action == "DeregisterTargets" {
                let was_registered = model.reported_health(target, now).is_some_and(|(s, _)| s != "draining");
                model.deregister(target, now);
                if was_registered {
                    shared.event(NlbEventKind::Deregistered(target));
                }
            } else {
                model.register(target, now);
            }
            shared.place_new_flows(model);
            ok(&action, String::new())
        }
        "SetInstanceHealth" => {
            let an_instance = target.is_some() || cloud.instances.lock().unwrap().contains(&id);
            if !an_instance || !id.starts_with("i-") {
                return fail(400, "ValidationError", "Instance Id not found");
            }
            if get("HealthStatus").as_deref() != Some("Unhealthy") && get("HealthStatus").as_deref() != Some("Healthy")
            {
                return fail(400, "ValidationError", "HealthStatus must be Healthy or Unhealthy");
            }
            ok("SetInstanceHealth", String::new())
        }
        _ => fail(400, "InvalidAction", "unknown action"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn forms_decode_as_aws_encodes_them() {
        let form = super::parse_form(
            "Action=DeregisterTargets&TargetGroupArn=arn%3Aaws%3Atg%2Fx&Targets.member.1.Id=i-1&bad&%zz=1",
        );
        assert_eq!(form[0], ("Action".into(), "DeregisterTargets".into()));
        assert_eq!(form[1], ("TargetGroupArn".into(), "arn:aws:tg/x".into()));
        assert_eq!(form[2], ("Targets.member.1.Id".into(), "i-1".into()));
        assert_eq!(form[3], ("%zz".into(), "1".into()));
    }
}
