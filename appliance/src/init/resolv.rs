//! `/etc/resolv.conf` from the DHCP lease, so that names resolve for the SSM client (the
//! service's only outside name: `ssm.REGION.amazonaws.com`, or a VPC endpoint's). The lease's
//! name servers come first (in a VPC: its resolver at the base address + 2), then the VPC
//! resolver's link-local address 169.254.169.253, which answers in every VPC; at most three, as
//! musl reads no more. [`resolv_conf`] decides the text; `write` is the one line of I/O.

use std::net::Ipv4Addr;
use std::path::Path;

/// The Amazon-provided resolver, reachable from every instance.
pub const VPC_RESOLVER: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 253);
/// musl's MAXNS.
const MAX_SERVERS: usize = 3;

/// The servers to use, in order: the lease's, then the VPC resolver; no duplicates.
pub fn servers(from_lease: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for s in from_lease.iter().chain([&VPC_RESOLVER]) {
        let usable = !s.is_unspecified() && !s.is_broadcast() && !s.is_multicast();
        if usable && !out.contains(s) && out.len() < MAX_SERVERS {
            out.push(*s);
        }
    }
    out
}

/// The file's text.
pub fn resolv_conf(servers: &[Ipv4Addr]) -> String {
    let mut text = String::from("# written by bastion init from the DHCP lease\n");
    for s in servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    text.push_str("options timeout:2 attempts:2\n");
    text
}

/// Writes the file atomically (a temporary file beside it, then a rename).
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_first_then_the_vpc_resolver_at_most_three() {
        let a = Ipv4Addr::new(10, 0, 0, 2);
        let b = Ipv4Addr::new(10, 0, 0, 3);
        let c = Ipv4Addr::new(10, 0, 0, 4);
        assert_eq!(servers(&[]), [VPC_RESOLVER]);
        assert_eq!(servers(&[a]), [a, VPC_RESOLVER]);
        assert_eq!(servers(&[a, VPC_RESOLVER, a]), [a, VPC_RESOLVER]);
        assert_eq!(servers(&[a, b, c, Ipv4Addr::new(10, 0, 0, 5)]), [a, b, c]);
        assert_eq!(servers(&[Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST]), [VPC_RESOLVER]);
        assert_eq!(
            resolv_conf(&[a, VPC_RESOLVER]),
            "# written by bastion init from the DHCP lease\nnameserver 10.0.0.2\nnameserver 169.254.169.253\n\
             options timeout:2 attempts:2\n"
        );
    }

    #[test]
    fn written_whole() {
        let dir = std::env::temp_dir().join(format!("bastion-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        write(&path, "nameserver 10.0.0.2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "nameserver 10.0.0.2\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
