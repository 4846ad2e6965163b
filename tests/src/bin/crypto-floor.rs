//! `crypto-floor [SECONDS]`: seals and opens 1,420-byte packets with boringtun's `Tunn` on one
//! core for about SECONDS each (default 1.5) and prints `seal S open O` in CPU-s per GB. Built
//! for aarch64 too, so `make bench` can run it under QEMU user mode (see docs/performance.md).

fn main() {
    let seconds = match std::env::args().nth(1).map(|a| a.parse::<f64>()) {
        None => 1.5,
        Some(Ok(s)) if s > 0.0 && s.is_finite() => s,
        Some(_) => {
            eprintln!("crypto-floor: expected a positive number of seconds");
            std::process::exit(2);
        }
    };
    let (seal, open) = bastion_tests::crypto_floor::seal_and_open(seconds);
    println!("seal {seal:.4} open {open:.4}");
}
