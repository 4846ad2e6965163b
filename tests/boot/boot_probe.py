#!/usr/bin/env python3
"""Boot-probe test: an image built by bastion-image with the stand-in init `boot-probe` as /init
(tests/boot/probe-init) proves, in the real kernel, what the image promises the real init:

  * every module in /etc/bastion/modules loads with finit_module in the listed order;
  * the NIC driver binds (virtio_net under QEMU; ENA on EC2);
  * the power button (QEMU system_powerdown = EC2 stop/terminate) arrives as EV_KEY KEY_POWER on
    a /dev/input/event* device ("Power Button", ACPI PNP0C0C), and the machine powers off.

Prints a closing "boot-probe: N passed, N failed" line.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qemu import Guest, timing_report  # noqa: E402

BOOT_TIMEOUT = 240
POWER_OFF_TIMEOUT = 30


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="aarch64")
    p.add_argument("--image", required=True)
    p.add_argument("--log", help="console log file")
    a = p.parse_args()

    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""))

    udp = 40000 + os.getpid() % 20000
    with Guest(a.arch, a.image, a.log, udp_port=udp, http_port=udp + 1) as g:
        started = g.wait_for(r"^probe: started as pid 1", BOOT_TIMEOUT)
        check("the probe runs as /init", started is not None)
        loaded = g.wait_for(r"^probe: modules loaded (\d+)/(\d+)", 60)
        if loaded:
            done, total = loaded[2].split()[-1].split("/")
            check("every listed module loads, in order", done == total and int(total) > 0, loaded[2])
            for _, text in g.lines[: loaded[0]]:
                if text.startswith("probe: module /"):
                    print(f"      {text}")  # the module that failed, and why
        else:
            check("module list processed", False)
        nic = g.wait_for(r"^probe: net eth0 driver (virtio_net|ena)", 10)
        check("the NIC driver binds (eth0)", nic is not None, nic[2] if nic else "")
        button = g.wait_for(r'^probe: input "Power Button" handlers .*event\d', 10)
        check("the ACPI power button has an event device (evdev)", button is not None, button[2] if button else "")
        ready = g.wait_for(r"^probe: ready for the power button", 10)
        if ready:
            t = time.monotonic()
            g.powerdown()
            key = g.wait_for(r"^probe: KEY_POWER from", POWER_OFF_TIMEOUT, ready[0])
            check("system_powerdown arrives as KEY_POWER", key is not None, key[2] if key else "")
            code = g.wait(POWER_OFF_TIMEOUT)
            check("the guest powers off and QEMU exits by itself", code == 0,
                  f"{time.monotonic() - t:.1f} s after the button" if code == 0 else f"exit {code}")
        else:
            check("probe waits for the power button", False)
        print(timing_report(g))
    passed, failed = results.count(True), results.count(False)
    print(f"boot-probe: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
