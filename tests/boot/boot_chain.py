#!/usr/bin/env python3
"""Boot-chain test: the disk image boots under UEFI (AAVMF/OVMF, NVMe, read-only), the firmware
runs the UKI from the ESP's removable-media path, the kernel takes its console from the ACPI
SPCR table (no console= on the command line, arm64), unpacks the initramfs and executes our
/init. What /init then does is the init's business (tests of the init check that); this test only
requires that the kernel did not fail to execute it.

Each check reads the real serial console. Prints the boot timings and a closing
"boot-chain: N passed, N failed" line.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qemu import Guest, timing_report  # noqa: E402

BOOT_TIMEOUT = 240  # seconds; TCG on a loaded 2-core machine can be several times slower than 8 s


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="aarch64")
    p.add_argument("--image", required=True)
    p.add_argument("--log", help="console log file")
    # Unused ports by default, so the test never collides with `make run` on the same host.
    p.add_argument("--udp-port", type=int, default=0)
    p.add_argument("--http-port", type=int, default=0)
    a = p.parse_args()

    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""))

    udp = a.udp_port or 40000 + os.getpid() % 20000
    http = a.http_port or udp + 1
    with Guest(a.arch, a.image, a.log, udp_port=udp, http_port=http) as g:
        # The disk is the only boot source (no -kernel), so a kernel line means the firmware
        # found and ran the UKI; arm64's EFI stub also says so itself.
        started = g.wait_for(r"EFI stub: Booting Linux Kernel|\] Linux version", BOOT_TIMEOUT)
        check("firmware ran the UKI from the ESP (kernel started)", started is not None)
        run_init = g.wait_for(r"Run /init as init process", BOOT_TIMEOUT)
        check("kernel ran /init from the initramfs", run_init is not None)
        cmdline = g.wait_for(r"Kernel command line:", 1)
        if cmdline and a.arch == "aarch64":
            check("command line has no console=", "console=" not in cmdline[2], cmdline[2])
        elif cmdline:
            check("command line printed", True, cmdline[2])
        else:
            check("command line printed", False)
        if a.arch == "aarch64":
            spcr = g.wait_for(r"ACPI: SPCR: console:", 1)
            check("console announced by the firmware's SPCR table", spcr is not None, spcr[2] if spcr else "")
            ama = g.wait_for(r"printk: console \[ttyAMA0\] enabled", 1)
            check("kernel console is ttyAMA0 (the PL011 SPCR names)", ama is not None)
        unpack_failed = g.wait_for(r"Initramfs unpacking failed|junk in compressed archive", 0)
        check("initramfs unpacked cleanly", unpack_failed is None, unpack_failed[2] if unpack_failed else "")
        if run_init:
            # The kernel prints these within milliseconds when the exec fails (wrong architecture,
            # not executable, dynamic binary without its loader).
            failed = g.wait_for(r"Failed to execute /init|No working init found", 5, run_init[0])
            check("/init executed (no exec failure)", failed is None, failed[2] if failed else "")
            killed = g.wait_for(r"Attempted to kill init", 0, run_init[0])
            if killed:
                print(f"note  /init exited and the kernel panicked: {killed[2].strip()}")
        g.quit()
        g.wait(10)
        print(timing_report(g))
    passed, failed = results.count(True), results.count(False)
    print(f"boot-chain: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
