//! rtnetlink: links (index, state, MTU), addresses and routes of the current network namespace.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

/// What the kernel says about one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFF_UP is set (administratively up).
    pub up: bool,
    pub mtu: u32,
    /// The hardware address (empty for TUN and loopback).
    pub mac: Vec<u8>,
    /// IFF_LOOPBACK is set.
    pub loopback: bool,
}

/// Every link of the namespace.
pub fn links() -> io::Result<Vec<Link>> {
    todo!()
}

/// The link called `name`, or None when there is none.
pub fn link_by_name(name: &str) -> io::Result<Option<Link>> {
    let _ = name;
    todo!()
}

/// Sets the link administratively up or down.
pub fn set_link_up(index: u32, up: bool) -> io::Result<()> {
    let _ = (index, up);
    todo!()
}

pub fn set_mtu(index: u32, mtu: u32) -> io::Result<()> {
    let _ = (index, mtu);
    todo!()
}

/// Adds an address to a link; an address that is already there is not an error.
pub fn add_address(index: u32, address: IpAddr, prefix_len: u8) -> io::Result<()> {
    let _ = (index, address, prefix_len);
    todo!()
}

/// Installs (or replaces) the IPv4 default route through `gateway` on link `index`.
pub fn replace_default_route(gateway: Ipv4Addr, index: u32) -> io::Result<()> {
    let _ = (gateway, index);
    todo!()
}

/// The name of the interface that the main table's IPv4 default route leaves through, if any.
pub fn default_route_interface() -> io::Result<Option<String>> {
    todo!()
}
