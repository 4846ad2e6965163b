//! Network bring-up before DHCP: the loopback interface, and finding the primary interface —
//! the first non-loopback Ethernet link (lowest index), waited for because its driver (ENA,
//! virtio-net) may still be probing when init gets here.

use crate::netlink::route::{self, Link};
use std::time::{Duration, Instant};

/// Brings `lo` up (the kernel then adds 127.0.0.1/8 and ::1 by itself).
pub fn bring_up_loopback() {
    let result = route::link_by_name("lo").and_then(|lo| match lo {
        Some(lo) => route::set_link_up(lo.index, true),
        None => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no lo interface")),
    });
    match result {
        Ok(()) => crate::log!("network: lo up"),
        Err(e) => crate::log!("network: ERROR bring up lo: {e}"),
    }
}

/// The primary interface among `links`: `name` when given, else the lowest-index link that is
/// not loopback and has an Ethernet (6-byte, non-zero) hardware address — which leaves out
/// TUN devices such as wg0.
pub fn pick_primary<'a>(links: &'a [Link], name: Option<&str>) -> Option<&'a Link> {
    if let Some(name) = name {
        return links.iter().find(|l| l.name == name);
    }
    links.iter().filter(|l| !l.loopback && l.mac.len() == 6 && l.mac.iter().any(|&b| b != 0)).min_by_key(|l| l.index)
}

/// Waits until the primary interface exists, brings it up and returns it.
pub fn wait_for_primary(name: Option<&str>) -> Link {
    let started = Instant::now();
    let mut interval = Duration::from_secs(2);
    let mut next_note = interval;
    loop {
        match route::links() {
            Ok(links) => {
                if let Some(link) = pick_primary(&links, name) {
                    let link = link.clone();
                    match route::set_link_up(link.index, true) {
                        Ok(()) => crate::log!(
                            "network: primary interface {} (index {}, mac {}, mtu {}) up",
                            link.name,
                            link.index,
                            mac_text(&link.mac),
                            link.mtu
                        ),
                        Err(e) => crate::log!("network: ERROR bring up {}: {e}", link.name),
                    }
                    return link;
                }
            }
            Err(e) => crate::log!("network: ERROR list interfaces: {e}"),
        }
        if started.elapsed() >= next_note {
            crate::log!(
                "network: still no {} after {} s",
                name.map(|n| format!("interface {n}")).unwrap_or_else(|| "Ethernet interface".into()),
                started.elapsed().as_secs()
            );
            interval = (interval * 2).min(Duration::from_secs(60));
            next_note = started.elapsed() + interval;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn mac_text(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, mac: &[u8], loopback: bool) -> Link {
        Link { index, name: name.into(), up: false, mtu: 1500, mac: mac.to_vec(), loopback }
    }

    #[test]
    fn primary_is_the_first_ethernet_link() {
        let links = vec![
            link(1, "lo", &[0; 6], true),
            link(5, "eth1", &[2, 0, 0, 0, 0, 5], false),
            link(3, "wg0", &[], false),
            link(2, "eth0", &[2, 0, 0, 0, 0, 2], false),
        ];
        assert_eq!(pick_primary(&links, None).unwrap().name, "eth0");
        assert_eq!(pick_primary(&links, Some("eth1")).unwrap().index, 5);
        assert!(pick_primary(&links, Some("eth9")).is_none());
        assert!(pick_primary(&links[..3][..1], None).is_none());
    }
}
