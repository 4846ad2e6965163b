//! The issue's topology, built from namespaces:
//!
//! ```text
//!  client0 ─┐                                         ┌─ host0  10.0.1.10  fd00:1::a
//!  client1 ─┼─ internet (bridge) ── bastion ── vpc (bridge) ─┼─ host1  10.0.1.11  fd00:1::b
//!   192.0.2.101+i     192.0.2.1 pub0   priv0 10.0.1.1        └─ ...
//!   2001:db8::65+i    2001:db8::1            fd00:1::1
//! ```
//!
//! The bastion's default route points into the VPC subnet (to a router address nobody holds,
//! as in a VPC), so `egress = "auto"` resolves to `priv0`; each private host routes back through
//! the bastion. Forwarding is left off in the bastion namespace: the service (or the baseline)
//! turns it on itself. Every client gets its own key pair, and the bastion one, at build time.
//! Addresses are documentation ranges and private ranges that exist only in these namespaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::http::HttpServer;
use crate::link;
use crate::netns::Netns;
use crate::rundir::RunDir;
use crate::unique_name;
use crate::wireguard::{Keypair, WgConf, WgInterface, WgPeer};

pub const BASTION_PUBLIC_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const BASTION_PUBLIC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const BASTION_PRIVATE_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
pub const BASTION_PRIVATE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
/// The VPC router the bastion's default route names; no namespace holds it.
pub const VPC_ROUTER_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 254);
pub const VPC_ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0xfe);
pub const PRIVATE_NET_V4: &str = "10.0.1.0/24";
pub const PRIVATE_NET_V6: &str = "fd00:1::/64";
pub const TUNNEL_NET_V4: &str = "10.100.0.0/24";
pub const TUNNEL_NET_V6: &str = "fd00:100::/64";
pub const BASTION_TUNNEL_V4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
pub const BASTION_TUNNEL_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 1);
pub const LISTEN_PORT: u16 = 51820;
pub const HTTP_PORT: u16 = 80;
/// Peer names of clients 0, 1, 2...: what the bastion's config and logs call them.
pub const PEER_NAMES: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

/// A remote user: a namespace on the internet side with its own key pair.
pub struct Client {
    pub ns: Netns,
    pub name: &'static str,
    pub keys: Keypair,
    pub public_v4: Ipv4Addr,
    pub public_v6: Ipv6Addr,
    pub tunnel_v4: Ipv4Addr,
    pub tunnel_v6: Ipv6Addr,
}

/// A host in the private subnet running an HTTP server.
pub struct PrivateHost {
    // Declared before `ns`: the server stops before its namespace goes.
    pub server: HttpServer,
    pub ns: Netns,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl PrivateHost {
    pub fn http_v4(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.v4), self.server.port)
    }

    pub fn http_v6(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(self.v6), self.server.port)
    }
}

pub struct Topology {
    // Drop order is declaration order: processes (in hosts) before bare namespaces, the
    // scratch folder (with the logs) last.
    pub private_hosts: Vec<PrivateHost>,
    pub clients: Vec<Client>,
    pub bastion: Netns,
    pub bastion_keys: Keypair,
    pub internet: Netns,
    pub vpc: Netns,
    pub dir: RunDir,
    /// The prefix of this topology's names (namespaces `PREFIX-client0`, ...).
    pub prefix: String,
}

impl Topology {
    /// One client, one private host.
    pub fn build() -> Topology {
        Topology::with(1, 1)
    }

    pub fn with(clients: usize, private_hosts: usize) -> Topology {
        Topology::build_with(clients, private_hosts, true)
    }

    /// Like [`Topology::with`], but the bastion gets no link to the internet: something else
    /// (a load balancer, see [`crate::cluster`]) connects it and owns `192.0.2.1`.
    pub fn without_public_link(clients: usize, private_hosts: usize) -> Topology {
        Topology::build_with(clients, private_hosts, false)
    }

    fn build_with(clients: usize, private_hosts: usize, public_link: bool) -> Topology {
        crate::require_root_and_tools();
        assert!(clients <= PEER_NAMES.len() && private_hosts <= 200);
        let prefix = unique_name("");
        let dir = RunDir::new(&prefix);
        let ns = |role: &str| Netns::new(&format!("{prefix}-{role}"));

        // Each guard is moved into the struct as soon as it exists... but the struct needs all
        // of them; until then, locals drop in reverse order on a panic, which is just as safe.
        let internet = ns("internet");
        let vpc = ns("vpc");
        let bastion = ns("bastion");
        link::bridge(&internet, "br0");
        link::bridge(&vpc, "br0");

        if public_link {
            link::veth(&bastion, "pub0", &internet, "p-bastion");
            link::attach(&internet, "p-bastion", "br0");
            link::add_address(&bastion, "pub0", &format!("{BASTION_PUBLIC_V4}/24"));
            link::add_address(&bastion, "pub0", &format!("{BASTION_PUBLIC_V6}/64"));
        }
        link::veth(&bastion, "priv0", &vpc, "p-bastion");
        link::attach(&vpc, "p-bastion", "br0");
        link::add_address(&bastion, "priv0", &format!("{BASTION_PRIVATE_V4}/24"));
        link::add_address(&bastion, "priv0", &format!("{BASTION_PRIVATE_V6}/64"));
        link::add_route(&bastion, "default", Some(&VPC_ROUTER_V4.to_string()), "priv0");
        link::add_route(&bastion, "default", Some(&VPC_ROUTER_V6.to_string()), "priv0");

        let mut client_list = Vec::new();
        for (i, &name) in PEER_NAMES.iter().enumerate().take(clients) {
            let c = ns(&format!("client{i}"));
            let port = format!("p-client{i}");
            link::veth(&c, "eth0", &internet, &port);
            link::attach(&internet, &port, "br0");
            let public_v4 = Ipv4Addr::new(192, 0, 2, 101 + i as u8);
            let public_v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x65 + i as u16);
            link::add_address(&c, "eth0", &format!("{public_v4}/24"));
            link::add_address(&c, "eth0", &format!("{public_v6}/64"));
            client_list.push(Client {
                ns: c,
                name,
                keys: Keypair::generate(),
                public_v4,
                public_v6,
                tunnel_v4: Ipv4Addr::new(10, 100, 0, 2 + i as u8),
                tunnel_v6: Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 2 + i as u16),
            });
        }

        let mut hosts = Vec::new();
        for i in 0..private_hosts {
            let h = ns(&format!("host{i}"));
            let port = format!("p-host{i}");
            link::veth(&h, "eth0", &vpc, &port);
            link::attach(&vpc, &port, "br0");
            let v4 = Ipv4Addr::new(10, 0, 1, 10 + i as u8);
            let v6 = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 10 + i as u16);
            link::add_address(&h, "eth0", &format!("{v4}/24"));
            link::add_address(&h, "eth0", &format!("{v6}/64"));
            link::add_route(&h, "default", Some(&BASTION_PRIVATE_V4.to_string()), "eth0");
            link::add_route(&h, "default", Some(&BASTION_PRIVATE_V6.to_string()), "eth0");
            let server = HttpServer::start(&h, &dir, &format!("host{i}"), HTTP_PORT);
            hosts.push(PrivateHost { server, ns: h, v4, v6 });
        }

        Topology {
            private_hosts: hosts,
            clients: client_list,
            bastion,
            bastion_keys: Keypair::generate(),
            internet,
            vpc,
            dir,
            prefix,
        }
    }

    pub fn endpoint_v4(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(BASTION_PUBLIC_V4), LISTEN_PORT)
    }

    pub fn endpoint_v6(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(BASTION_PUBLIC_V6), LISTEN_PORT)
    }

    /// Starts client `i`'s wireguard-go with the bastion as its one peer at `endpoint`,
    /// routing the tunnel network and the private subnet (v4 and v6) into the tunnel. It
    /// sends nothing until traffic needs the tunnel, so start the bastion side first or after,
    /// but before the first packet.
    pub fn start_client_tunnel(&self, i: usize, endpoint: SocketAddr) -> WgInterface {
        self.start_client_tunnel_with(i, endpoint, None)
    }

    /// Like [`Topology::start_client_tunnel`], with the wireguard-go at `binary` when given.
    pub fn start_client_tunnel_with(
        &self,
        i: usize,
        endpoint: SocketAddr,
        binary: Option<&std::path::Path>,
    ) -> WgInterface {
        let client = &self.clients[i];
        let name = unique_name(&format!("c{i}"));
        let wg = match binary {
            Some(binary) => WgInterface::start_wireguard_go(&client.ns, &name, &self.dir, binary),
            None => WgInterface::start(&client.ns, &name, &self.dir),
        };
        wg.set_conf(&WgConf {
            private_key: client.keys.private.clone(),
            listen_port: None,
            peers: vec![WgPeer {
                public_key: self.bastion_keys.public.clone(),
                endpoint: Some(endpoint),
                allowed_ips: vec![
                    TUNNEL_NET_V4.into(),
                    PRIVATE_NET_V4.into(),
                    TUNNEL_NET_V6.into(),
                    PRIVATE_NET_V6.into(),
                ],
                ..WgPeer::default()
            }],
        });
        wg.add_address(&format!("{}/24", client.tunnel_v4));
        wg.add_address(&format!("{}/64", client.tunnel_v6));
        wg.up();
        wg.add_route(PRIVATE_NET_V4);
        wg.add_route(PRIVATE_NET_V6);
        wg
    }
}
