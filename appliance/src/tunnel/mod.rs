//! The WireGuard data plane: our own device loop around boringtun's `noise::Tunn`.
