//! `data-plane run --config FILE`: the data plane of `bastion run` alone (`tunnel::DataPlane`:
//! the TUN and its offloads, the UDP sockets, the workers around boringtun, the peers of the
//! config), with no NAT, health, control socket or self-test. It exists so that the bastion's
//! packet path can run where `bastion run` cannot: under QEMU user mode, which has no
//! NETLINK_NETFILTER sockets for the nftables table. `make bench` builds it for aarch64 and
//! offers it the load generator's traffic (the emulated ceiling, docs/performance.md). Not part
//! of the product: forwarding and the sink are the bench's. Runs until killed; other arguments
//! (`--socket`) are ignored.

use bastion_appliance::keys::PrivateKey;
use bastion_appliance::tunnel::DataPlane;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(config_path) = args.iter().position(|a| a == "--config").and_then(|i| args.get(i + 1)) else {
        eprintln!("data-plane: usage: data-plane run --config FILE");
        std::process::exit(2);
    };
    let config = bastion_appliance::config::load(std::path::Path::new(config_path)).unwrap_or_else(|e| {
        eprintln!("data-plane: {e}");
        std::process::exit(1);
    });
    let Some(private_key) = config.interface.private_key().cloned() else {
        eprintln!("data-plane: {config_path}: the key must be in the file (private_key), not in SSM");
        std::process::exit(1);
    };
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // The same spec `bastion run` starts its data plane with; the self-test's loopback-only peer
    // gets a key nobody holds (there is no self-test here).
    let nobody = PrivateKey::generate().public_key();
    let spec = bastion_appliance::service::plan::tunnel_spec(&config, &private_key, workers, nobody);
    let _data_plane = DataPlane::start(spec).unwrap_or_else(|e| {
        eprintln!("data-plane: {e}");
        std::process::exit(1);
    });
    println!("data-plane: {} up ({workers} workers)", config.interface.name);
    loop {
        std::thread::park();
    }
}
