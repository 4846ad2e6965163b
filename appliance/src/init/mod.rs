//! PID 1: the boot sequence of the appliance (mounts, modules, network, config, supervision,
//! shutdown). Runs when the binary is `/init`, or as `bastion init` for tests.
