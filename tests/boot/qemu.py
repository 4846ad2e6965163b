#!/usr/bin/env python3
"""Boots the appliance's disk image under QEMU the way EC2 boots it: UEFI firmware from pflash,
the image as a read-only NVMe disk, the serial console as the only output, user-mode networking
with the instance metadata address, and a QMP socket for the power button.

Used two ways:
  * `make run`: `python3 tests/boot/qemu.py --image out/aarch64/disk.img` streams the console;
    Ctrl-C presses the power button (QMP system_powerdown) and waits for the guest to power off;
    a second Ctrl-C quits QEMU.
  * tests: `from qemu import Guest` (start, wait_for a console line, powerdown, wait for exit).

Networking (-netdev user): the guest's DHCP lease is 169.254.169.15 with router and "host"
169.254.169.254; the guest's TCP connections to 169.254.169.254:PORT reach 127.0.0.1:PORT of the
network namespace QEMU runs in (where an IMDSv2 emulator can listen on port 80), and UDP 51820 /
TCP 8080 on 127.0.0.1 are forwarded into the guest (WireGuard, health).
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

FIRMWARE = {
    "aarch64": ("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),
    "x86_64": ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
}

# Console lines that mark the boot stages (for the timing report).
STAGES = [
    ("firmware done, kernel EFI stub", re.compile(r"EFI stub: Booting Linux Kernel")),
    ("first kernel line on the console", re.compile(r"\]\s*Booting Linux on|\] Linux version")),
    ("kernel runs /init", re.compile(r"Run /init as init process")),
]
KERNEL_TIME = re.compile(r"^\[\s*(\d+\.\d+)\]")


def qemu_command(arch, image, vars_copy, qmp_path, memory=512, udp_port=51820, http_port=8080, smp=2,
                 rng=False, services=()):
    """smp: 2 like a t4g.nano (the service starts one data-plane worker per CPU).
    rng: add a virtio-rng device. Off by default because EC2 has none: without it the firmware
    offers no EFI_RNG_PROTOCOL, the kernel's CRNG is not seeded at boot, and the service's
    first getrandom waits for the kernel's jitter entropy (≈1.2 s under TCG). With it, AAVMF
    hands the EFI stub a seed and `random: crng init done` is at 0.000000.
    services: (guest address, port, host port) triples: a guest connection to address:port is
    relayed (tests/boot/relay.py, one per connection) to 127.0.0.1:host port: hosts of the
    guest's "private subnet" besides 169.254.169.254."""
    code, _ = FIRMWARE[arch]
    net = (
        "user,id=n0,net=169.254.169.0/24,host=169.254.169.254,"
        f"hostfwd=udp:127.0.0.1:{udp_port}-:51820,hostfwd=tcp:127.0.0.1:{http_port}-:8080"
    )
    relay = os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay.py")
    for address, port, host_port in services:
        net += f",guestfwd=tcp:{address}:{port}-cmd:{sys.executable} {relay} 127.0.0.1 {host_port}"
    if arch == "aarch64":
        # neoverse-n1 is Graviton2's core (and much faster to emulate than -cpu max).
        machine = ["qemu-system-aarch64", "-M", "virt", "-cpu", "neoverse-n1"]
    else:
        machine = ["qemu-system-x86_64", "-M", "q35", "-cpu", "max"]
    return machine + [
        "-m", str(memory),
        "-smp", str(smp),
        "-nodefaults",
        "-display", "none",
        "-no-reboot",  # a kernel panic (or a reboot) ends QEMU instead of looping
        "-drive", f"if=pflash,format=raw,readonly=on,file={code}",
        "-drive", f"if=pflash,format=raw,file={vars_copy}",
        "-drive", f"if=none,id=disk0,format=raw,readonly=on,file={image}",
        "-device", "nvme,serial=bastion0,drive=disk0,bootindex=0",
        "-netdev", net,
        "-device", "virtio-net-pci,netdev=n0",
        "-chardev", "stdio,id=console,signal=off",
        "-serial", "chardev:console",
        "-qmp", f"unix:{qmp_path},server=on,wait=off",
    ] + (["-device", "virtio-rng-pci"] if rng else [])


class Guest:
    """One QEMU run. Console lines are kept with their time since QEMU started."""

    def __init__(self, arch, image, console_log=None, echo=False, udp_port=51820, http_port=8080, companion=None,
                 netns=None, smp=2, rng=False, services=()):
        """netns: run QEMU (and the companion) inside this network namespace, so its forwarded
        ports and the guest's 169.254.169.254 (= the namespace's 127.0.0.1) stay in there.
        smp, rng: see qemu_command."""
        if arch not in FIRMWARE:
            raise ValueError(f"unknown architecture {arch}")
        for path in FIRMWARE[arch] + (image,):
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path} is missing (make image installs the firmware packages)")
        self.arch, self.image, self.echo = arch, image, echo
        self.ports = (udp_port, http_port)
        self.smp, self.rng, self.services = smp, rng, services
        self.companion_cmd = companion
        self.prefix = ["ip", "netns", "exec", netns] if netns else []
        self.console_log = open(console_log, "w") if console_log else None
        self.lines = []  # (seconds since start, text)
        self.cond = threading.Condition()
        self.proc = None
        self.companion = None
        self.workdir = tempfile.mkdtemp(prefix="bastion-qemu-")

    def start(self):
        if self.companion_cmd:
            self.companion = subprocess.Popen(self.prefix + ["sh", "-c", self.companion_cmd], start_new_session=True)
        vars_copy = os.path.join(self.workdir, "vars.fd")
        shutil.copyfile(FIRMWARE[self.arch][1], vars_copy)  # fresh NVRAM, like a new instance
        self.qmp_path = os.path.join(self.workdir, "qmp.sock")
        cmd = qemu_command(self.arch, self.image, vars_copy, self.qmp_path, udp_port=self.ports[0],
                           http_port=self.ports[1], smp=self.smp, rng=self.rng, services=self.services)
        self.t0 = time.monotonic()
        # Its own session: the terminal's Ctrl-C reaches us, not QEMU.
        self.proc = subprocess.Popen(
            self.prefix + cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
        )
        threading.Thread(target=self._read_console, daemon=True).start()
        return self

    def _read_console(self):
        for raw in iter(self.proc.stdout.readline, b""):
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            t = time.monotonic() - self.t0
            with self.cond:
                self.lines.append((t, text))
                self.cond.notify_all()
            if self.console_log:
                self.console_log.write(f"{t:8.3f} {text}\n")
                self.console_log.flush()
            if self.echo:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, pattern, timeout, start_index=0):
        """Returns (index, seconds, line) of the first console line matching pattern at or after
        start_index, or None after timeout seconds or when QEMU has exited."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start_index
        with self.cond:
            while True:
                while i < len(self.lines):
                    t, text = self.lines[i]
                    if rx.search(text):
                        return i, t, text
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(min(left, 0.5))

    def qmp(self, command):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(self.qmp_path)
        f = s.makefile("rw")
        f.readline()  # greeting
        for cmd in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": cmd}) + "\n")
            f.flush()
            while True:  # skip asynchronous events until the reply
                reply = json.loads(f.readline())
                if "return" in reply or "error" in reply:
                    break
        s.close()
        return reply

    def powerdown(self):
        """The power button: what EC2 stop/terminate sends."""
        return self.qmp("system_powerdown")

    def quit(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.qmp("quit")
            except OSError:
                self.proc.kill()

    def wait(self, timeout=None):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.companion and self.companion.poll() is None:
            os.killpg(self.companion.pid, signal.SIGTERM)
            try:
                self.companion.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.companion.pid, signal.SIGKILL)
        if self.console_log:
            self.console_log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def kernel_clock_offset(self):
        """Seconds from QEMU start to the kernel's clock zero: the smallest (arrival time - printk
        timestamp) over the kernel's own lines (the serial port only ever delays a line). None
        before the first kernel line. The init's lines are left out: it stamps them with
        CLOCK_BOOTTIME, which under QEMU lags the kernel's printk clock by 0.1-0.5 s."""
        with self.cond:
            lines = list(self.lines)
        best = None
        for t, text in lines:
            m = KERNEL_TIME.match(text)
            if m and "] bastion: " not in text:
                d = t - float(m.group(1))
                best = d if best is None else min(best, d)
        return best

    def stages(self):
        """[(stage, seconds since QEMU start, kernel timestamp or None)] for the stages seen."""
        out = []
        with self.cond:
            lines = list(self.lines)
        for name, rx in STAGES:
            for t, text in lines:
                if rx.search(text):
                    m = KERNEL_TIME.match(text)
                    out.append((name, t, float(m.group(1)) if m else None))
                    break
        return out


def timing_report(guest):
    rows = []
    offset = guest.kernel_clock_offset()
    if offset is not None:
        rows.append((offset, "kernel clock zero (from the kernel's console timestamps)"))
    for name, t, kt in guest.stages():
        rows.append((t, name + (f" (kernel clock {kt:.3f} s)" if kt is not None else "")))
    if not rows:
        return "no boot stage seen"
    return "boot timings (wall clock since QEMU start):\n" + "\n".join(
        f"  {t:6.2f} s  {text}" for t, text in sorted(rows))


def interactive(guest, powerdown_timeout=60, on_line=None):
    """Streams the console until QEMU exits. The first Ctrl-C (or SIGTERM) presses the power
    button and waits up to powerdown_timeout seconds for the guest to power off; a second one
    quits QEMU. on_line = (regex, callback): callback(line) runs once, on the first console line
    that matches. Returns QEMU's exit code."""
    presses = 0
    pressed_at = None

    def on_interrupt(signum, frame):
        nonlocal presses, pressed_at
        presses += 1
        if presses == 1:
            pressed_at = time.monotonic()
            print("\nqemu.py: power button pressed (system_powerdown); waiting for the guest to power off"
                  " (Ctrl-C again quits QEMU)", file=sys.stderr)
            try:
                guest.powerdown()
            except OSError as e:
                print(f"qemu.py: QMP: {e}", file=sys.stderr)
        else:
            print("\nqemu.py: quitting QEMU", file=sys.stderr)
            guest.quit()

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_interrupt)
    guest.start()
    if on_line:
        def watch():
            seen = guest.wait_for(on_line[0], 24 * 3600)
            if seen:
                on_line[1](seen[2])
        threading.Thread(target=watch, daemon=True).start()
    while guest.wait(0.5) is None:
        if pressed_at and time.monotonic() - pressed_at > powerdown_timeout:
            print(f"qemu.py: no power-off within {powerdown_timeout:.0f} s; quitting QEMU", file=sys.stderr)
            pressed_at = None
            guest.quit()
    code = guest.proc.returncode
    time.sleep(0.2)  # let the console thread drain
    print(f"qemu.py: QEMU exited ({code})", file=sys.stderr)
    print(timing_report(guest), file=sys.stderr)
    return code


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="aarch64", choices=sorted(FIRMWARE))
    p.add_argument("--image", required=True)
    p.add_argument("--console-log", help="also write the console, with timestamps, here")
    p.add_argument("--udp-port", type=int, default=51820, help="host port forwarded to the guest's UDP 51820")
    p.add_argument("--http-port", type=int, default=8080, help="host port forwarded to the guest's TCP 8080")
    p.add_argument("--companion", help="a shell command to run alongside QEMU (the IMDSv2 emulator)")
    p.add_argument("--powerdown-timeout", type=float, default=60, help="seconds to wait for power-off")
    p.add_argument("--smp", type=int, default=2, help="vCPUs (a t4g.nano has 2)")
    p.add_argument("--rng", action="store_true", help="add a virtio-rng device (EC2 has none)")
    a = p.parse_args()
    guest = Guest(a.arch, a.image, a.console_log, echo=True, udp_port=a.udp_port, http_port=a.http_port,
                  companion=a.companion, smp=a.smp, rng=a.rng)
    print(f"qemu.py: booting {a.image} ({a.arch}); Ctrl-C presses the power button", file=sys.stderr)
    try:
        return 0 if interactive(guest, a.powerdown_timeout) == 0 else 1
    finally:
        guest.close()


if __name__ == "__main__":
    sys.exit(main())
