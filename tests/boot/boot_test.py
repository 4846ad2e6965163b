#!/usr/bin/env python3
"""The boot test: the real disk image boots under QEMU like a fresh EC2 instance and becomes a
working bastion, then drains and powers off on the power button.

Everything runs inside a network namespace of the test's own, with only `lo` (no route outside):
QEMU with user-mode networking (the guest's 169.254.169.254 is the namespace's 127.0.0.1), the
IMDSv2 emulator on 127.0.0.1:80 serving a fresh config as user-data, a TCP listener on
127.0.0.1:9000 that stands for an application in the private subnet (the guest reaches it as
169.254.169.100:9000 through QEMU's guestfwd; the self-test probes it and a client reaches it
through the tunnel), and a wireguard-go client. The test re-runs itself inside the namespace; the outer process creates the
namespace and, whatever happens, kills what is left in it and deletes it.

What it checks, each from the real thing (the serial console, the emulator's request log, HTTP
answers, packets through the tunnel):
  boot chain  the firmware runs the UKI from the ESP; no console= on the command line and the
              console from the ACPI SPCR table (aarch64); the initramfs unpacks; /init runs;
  init        every module of the image's /etc/bastion/modules loads, in order; the power
              button is watched; eth0 gets the DHCP lease; user-data comes from the emulated
              IMDS (PUT token, then GET with it); the service starts with one worker per vCPU;
              NAT is installed; `selftest: PASS` including the TCP probe; no ERROR line;
  host side   health 200 through the forwarded TCP port; a wireguard-go client handshakes
              through the forwarded UDP port, pings the tunnel address and opens a TCP
              connection through the bastion's NAT to the listener, but cannot reach the
              metadata address 169.254.169.254 through the tunnel, although it routes it there;
  shutdown    QMP system_powerdown: the console shows the drain, health answers 503 while the
              tunnel still forwards, the service stops, the guest powers off, and QEMU exits by
              itself within drain_seconds + 15 s.

Records the boot timings (QEMU start → firmware done → kernel → /init → … → health 200, and the
same from the kernel's clock zero) and writes them with the results to --summary (JSON).
Prints one PASS/FAIL line per check and a closing "boot-test: N passed, N failed".
"""

import argparse
import gzip
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from qemu import KERNEL_TIME, Guest  # noqa: E402
from run import TUNNEL_NET, write_configs  # noqa: E402

EMULATOR = os.path.join(HERE, "..", "imds", "imds_emulator.py")
INSIDE = "--inside-netns"
PROBE_PORT = 9000  # the listener on 127.0.0.1
APPLICATION = "169.254.169.100"  # where the guest reaches it (QEMU guestfwd, tests/boot/relay.py)
METADATA = "169.254.169.254"  # QEMU's host address: the IMDS emulator, never forwarded to
DRAIN_SECONDS = 5
BOOT_TIMEOUT = 300  # QEMU start → health 200; TCG on a loaded 2-core machine is slow
STEP_TIMEOUT = 30


# --- the namespace (outer process) ------------------------------------------------------------

def run_in_namespace(argv):
    """Creates the namespace, runs this script inside it, and always cleans up: every process
    still in the namespace is killed (by pid), the wireguard-go socket is removed, the
    namespace is deleted. Returns the inner run's exit code."""
    ns = f"bastion-boot-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    inner = None
    # A terminal's Ctrl-C reaches the inner run too: then it gets time to clean up by itself.
    # Anything else (SIGTERM to this process) is passed on at once.
    stops = (signal.SIGTERM, signal.SIGKILL)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        inner = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__),
                                  INSIDE, ns] + argv)
        return inner.wait()
    except KeyboardInterrupt:
        stops = (None,) + stops
        raise
    finally:
        if inner and inner.poll() is None:  # interrupted; the sweep below gets whatever is left
            for stop in stops:
                if stop:
                    inner.send_signal(stop)
                try:
                    inner.wait(15)
                    break
                except subprocess.TimeoutExpired:
                    pass
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
                print(f"boot-test: killed pid {pid}, left in {ns}", file=sys.stderr)
            except (ProcessLookupError, ValueError):
                pass
        for _ in range(50):  # the kills are asynchronous; the namespace goes with its last process
            if not subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split():
                break
            time.sleep(0.1)
        try:
            os.unlink(f"/var/run/wireguard/{client_interface(ns)}.sock")
        except FileNotFoundError:
            pass
        subprocess.run(["ip", "netns", "del", ns])


def client_interface(ns):
    return "btwg" + ns.rsplit("-", 1)[-1][-8:]


# --- what runs next to QEMU (inner process) ---------------------------------------------------

class Listener:
    """A TCP server on 127.0.0.1:PROBE_PORT: greets each connection with one line and records
    it, so the test knows the self-test's probe and the client's connection really arrived."""

    BANNER = b"bastion boot-test listener\n"

    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.accepted = []  # monotonic times
        self.lock = threading.Lock()

    def __enter__(self):
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted.append(time.monotonic())
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn):
        # Like an SSH server: a banner, then wait for the client to close. (A server that closes
        # first costs the self-test its 1 s close wait per probe under QEMU.)
        try:
            conn.settimeout(10)
            conn.sendall(self.BANNER)
            while conn.recv(4096):
                pass
        except OSError:
            pass
        finally:
            conn.close()

    def count(self):
        with self.lock:
            return len(self.accepted)

    def __exit__(self, *exc):
        self.sock.close()


class Process:
    """A child process in its own session, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, argv, **kw):
        self.argv, self.kw = argv, kw
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, start_new_session=True, **self.kw)
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class HealthWatch:
    """Polls GET http://127.0.0.1:PORT/ (QEMU's forwarded port) from QEMU start until the first
    200, recording when the first answer of each status came and with what body."""

    def __init__(self, port, t0_source):
        self.port, self.t0_source = port, t0_source
        self.first = {}  # status -> (seconds since QEMU start, body)
        self.done = threading.Event()
        self.stop = threading.Event()

    def __enter__(self):
        threading.Thread(target=self._poll, daemon=True).start()
        return self

    def _poll(self):
        while not self.stop.is_set():
            answer = http_get(self.port)
            if answer:
                status, body = answer
                if status not in self.first:
                    self.first[status] = (time.monotonic() - self.t0_source(), body)
                if status == 200:
                    self.done.set()
                    return
            self.stop.wait(0.2)

    def __exit__(self, *exc):
        self.stop.set()


def http_get(port, timeout=1):
    """(status, body) or None when nothing answers (QEMU accepts the forwarded connection even
    while no one listens in the guest, then closes it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        return r.status, r.read(4096).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def sh(*argv, check=True):
    out = subprocess.run(argv, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {out.returncode}: {out.stderr.strip()}")
    return out


def wait_port(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def module_list(initramfs):
    """Module names of /etc/bastion/modules in the image's initramfs (gzip, newc cpio), in order."""
    data = gzip.open(initramfs).read()
    off = 0
    while off + 110 <= len(data):
        if data[off:off + 6] != b"070701":
            raise ValueError(f"{initramfs}: not a newc cpio at offset {off}")
        size = int(data[off + 54:off + 62], 16)
        namesize = int(data[off + 94:off + 102], 16)
        name = data[off + 110:off + 110 + namesize - 1].decode()
        start = (off + 110 + namesize + 3) & ~3
        if name == "etc/bastion/modules":
            names = []
            for line in data[start:start + size].decode().splitlines():
                path = line.split("#", 1)[0].split()
                if path:
                    base = os.path.basename(path[0].lstrip("!"))
                    names.append(re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base).replace("-", "_"))
            return names
        if name == "TRAILER!!!":
            break
        off = (start + size + 3) & ~3
    raise ValueError(f"{initramfs} has no etc/bastion/modules")


# --- the test ---------------------------------------------------------------------------------

class Results:
    def __init__(self):
        self.checks = []

    def check(self, name, ok, detail=""):
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def counts(self):
        passed = sum(1 for c in self.checks if c["ok"])
        return passed, len(self.checks) - passed


def inside(a, ns):
    r = Results()
    timings = {}
    os.makedirs(a.workdir, exist_ok=True)
    for name in os.listdir(a.workdir):  # a fresh run: nothing of a previous one can pass for ours
        os.unlink(os.path.join(a.workdir, name))
    links = sh("ip", "-o", "link", "show").stdout.strip().splitlines()
    defaults = (sh("ip", "-4", "route", "show", "default").stdout + sh("ip", "-6", "route", "show", "default").stdout).strip()
    r.check("the test's namespace has only lo and no route outside", len(links) == 1 and not defaults,
            f"{len(links)} link(s); default routes: {defaults or 'none'}")

    made = write_configs(a.bastion, a.workdir, drain_seconds=DRAIN_SECONDS,
                         reach=[f"{APPLICATION}/32"], probes=[f"{APPLICATION}:{PROBE_PORT}"])
    r.check("fresh config passes check-config", made["config_ok"])
    user_data_size = os.path.getsize(made["user_data"])
    modules = module_list(a.initramfs)
    imds_log = os.path.join(a.workdir, "imds-requests.jsonl")
    console_log = os.path.join(a.workdir, "console.log")
    wg_if = client_interface(ns)

    with Listener(PROBE_PORT) as listener, \
            Process([sys.executable, EMULATOR, "--bind", "127.0.0.1", "--port", "80",
                     "--user-data", made["user_data"], "--log", imds_log], stdout=subprocess.DEVNULL):
        r.check("IMDSv2 emulator listens on 127.0.0.1:80", wait_port(80, 10))
        with Guest(a.arch, a.image, console_log, smp=a.smp, rng=a.rng,
                   services=[(APPLICATION, PROBE_PORT, PROBE_PORT)]) as g:
            try:
                with HealthWatch(8080, lambda: g.t0) as health:
                    boot(g, a, r, modules, user_data_size)
                    while not health.done.wait(0.5) and g.proc.poll() is None \
                            and time.monotonic() - g.t0 < BOOT_TIMEOUT:
                        pass
                    h = health.first.get(200)
                    r.check("health 200 through the forwarded TCP port", h,
                            f"{h[1]!r} at {h[0]:.2f} s" if h else f"answers seen: {health.first}")
                    if h:
                        timings["health_200"] = h[0]
                    if 503 in health.first:
                        timings["health_first_503"] = health.first[503][0]
                        timings["health_first_503_body"] = health.first[503][1]
                imds_requests(imds_log, r, user_data_size)
                probe = g.wait_for(r"bastion: selftest: PASS", 0)
                r.check("the self-test's probe reached the listener (through NAT and QEMU)", listener.count() >= 1,
                        f"{listener.count()} connection(s)")
                if probe:
                    r.check("selftest: PASS names the probe", f"probe {APPLICATION}:{PROBE_PORT}" in probe[2],
                            probe[2].split("bastion: ", 1)[1])
                if h:
                    with Process(["wireguard-go", "-f", wg_if], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL):
                        client(r, made, wg_if, listener)
                        shutdown(g, r, timings)
            except Exception as e:  # a broken step fails the test; the summary is still written
                r.check("the test ran to its end", False, f"{type(e).__name__}: {e}")
            # Guest.__exit__ kills QEMU if it is still running.

    no_errors(g, r)
    timings.update(console_timings(g))
    return r, timings, {"modules": modules, "console_log": console_log, "imds_log": imds_log}


def boot(g, a, r, modules, user_data_size):
    aarch64 = a.arch == "aarch64"
    stub = g.wait_for(r"EFI stub: Booting Linux Kernel|\] Linux version", BOOT_TIMEOUT)
    r.check("firmware ran the UKI from the ESP (kernel EFI stub)", stub)
    if not stub:
        return
    run_init = g.wait_for(r"Run /init as init process", BOOT_TIMEOUT)
    r.check("kernel ran /init from the initramfs", run_init)
    cmdline = g.wait_for(r"Kernel command line:", 0)
    if aarch64:
        r.check("kernel command line has no console=", cmdline and "console=" not in cmdline[2],
                cmdline[2].split("] ", 1)[-1] if cmdline else "no command line printed")
        spcr = g.wait_for(r"ACPI: SPCR: console:", 0)
        r.check("console announced by the firmware's SPCR table", spcr, spcr[2].split("] ", 1)[-1] if spcr else "")
        r.check("kernel console is ttyAMA0 (what SPCR names under QEMU)",
                g.wait_for(r"printk: console \[ttyAMA0\] enabled", 0))
    bad = g.wait_for(r"Initramfs unpacking failed|junk in compressed archive", 0)
    r.check("initramfs unpacked cleanly", not bad, bad[2] if bad else "")
    if not run_init:
        return
    started = g.wait_for(r"bastion: init: bastion \S+ starting as PID 1", STEP_TIMEOUT, run_init[0])
    failed = g.wait_for(r"Failed to execute /init|No working init found|Kernel panic", 0, run_init[0])
    r.check("/init is bastion, running as PID 1", started, failed[2] if failed else "")
    if not started:
        return

    loaded = g.wait_for(r"bastion: modules: loaded \d+", STEP_TIMEOUT)
    if loaded:
        m = re.search(r"modules: loaded (\d+) in \d+ ms \(([^)]*)\)(.*)", loaded[2])
        names = m.group(2).split() if m else []
        r.check(f"all {len(modules)} modules of the image's list loaded, in order", names == modules and not m.group(3),
                loaded[2].split("bastion: ", 1)[1] if names == modules else f"expected {modules}, got {loaded[2]}")
    else:
        r.check("modules loaded", False)
    button = g.wait_for(r"bastion: power: watching /dev/input/event\d+ \(Power Button\) for KEY_POWER", STEP_TIMEOUT)
    r.check("the init watches the ACPI power button (evdev)", button, button[2].split("bastion: ", 1)[1] if button else "")
    eth0 = g.wait_for(r"bastion: network: primary interface eth0 .* up", STEP_TIMEOUT)
    r.check("eth0 is up (virtio_net bound)", eth0)
    lease = g.wait_for(r"bastion: dhcp: eth0 lease: 169\.254\.169\.15/24 router 169\.254\.169\.254", STEP_TIMEOUT)
    r.check("DHCP lease from QEMU's DHCP server", lease, lease[2].split("bastion: ", 1)[1] if lease else "")
    dns = g.wait_for(r"bastion: dns: /etc/resolv\.conf: nameserver 169\.254\.169\.3, 169\.254\.169\.253", STEP_TIMEOUT)
    r.check("resolv.conf from the lease's name server and the VPC resolver", dns,
            dns[2].split("bastion: ", 1)[1] if dns else "")
    clock = g.wait_for(r"bastion: time: ", STEP_TIMEOUT)
    r.check("the clock is checked against the Amazon Time Sync Service (no answer under QEMU)", clock,
            clock[2].split("bastion: ", 1)[1] if clock else "")
    fetch = g.wait_for(r"bastion: config: fetching user-data from http://169\.254\.169\.254 \(IMDSv2\)", STEP_TIMEOUT)
    accepted = g.wait_for(r"bastion: config: accepted user-data \(\d+ bytes", STEP_TIMEOUT)
    r.check("the config came from the emulated IMDS (user-data, same size as served)",
            fetch and accepted and f"({user_data_size} bytes" in accepted[2],
            accepted[2].split("bastion: ", 1)[1] if accepted else "")
    service = g.wait_for(r"bastion: service: started pid \d+: bastion run --config /run/bastion/bastion\.toml "
                         r"\(user-data\)", STEP_TIMEOUT)
    r.check("the init started the service with the user-data config", service)
    wg = g.wait_for(r"bastion: tunnel: wg0 up with", STEP_TIMEOUT)
    r.check(f"wg0 up with one worker per vCPU ({a.smp})",
            wg and f"{TUNNEL_NET}.1/24" in wg[2] and f"{a.smp} workers" in wg[2],
            wg[2].split("bastion: ", 1)[1] if wg else "")
    nat = g.wait_for(r"bastion: nat: table inet bastion-wg0 installed \(egress eth0, masquerade on", STEP_TIMEOUT)
    r.check("NAT table installed (egress eth0 from the DHCP default route, masquerade)", nat)
    selftest = g.wait_for(r"bastion: selftest: (PASS|FAIL)", STEP_TIMEOUT * 2)
    r.check("selftest: PASS on the console", selftest and "PASS" in selftest[2],
            selftest[2].split("bastion: ", 1)[1] if selftest else "no selftest line")


def imds_requests(path, r, user_data_size):
    try:
        entries = [json.loads(line) for line in open(path)]
    except (OSError, ValueError) as e:
        r.check("the emulator logged the guest's requests", False, str(e))
        return
    put = next((i for i, e in enumerate(entries) if e["method"] == "PUT" and e["path"] == "/latest/api/token"
                and e["status"] == 200), None)
    get = next((i for i, e in enumerate(entries) if e["method"] == "GET" and e["path"] == "/latest/user-data"
                and e["status"] == 200), None)
    ok = put is not None and get is not None and put < get and entries[get]["token_sent"] \
        and entries[get]["token_valid"] and entries[get].get("bytes") == user_data_size
    r.check("emulator log: PUT /latest/api/token, then GET /latest/user-data with a valid token", ok,
            "; ".join(f"{e['method']} {e['path']} token={'valid' if e['token_valid'] else 'sent' if e['token_sent'] else 'none'}"
                      f" -> {e['status']}" for e in entries))


def client(r, made, wg_if, listener):
    sock = f"/var/run/wireguard/{wg_if}.sock"
    deadline = time.monotonic() + 10
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not r.check("wireguard-go client started", os.path.exists(sock)):
        return
    sh("wg", "set", wg_if, "private-key", made["client_key_file"], "peer", made["server_pub"],
       "endpoint", "127.0.0.1:51820", "allowed-ips", f"{TUNNEL_NET}.1/32,{APPLICATION}/32,{METADATA}/32")
    sh("ip", "address", "add", f"{TUNNEL_NET}.2/32", "dev", wg_if)
    sh("ip", "link", "set", wg_if, "mtu", "1420", "up")
    sh("ip", "route", "add", f"{TUNNEL_NET}.1/32", "dev", wg_if)
    sh("ip", "route", "add", f"{APPLICATION}/32", "dev", wg_if)
    sh("ip", "route", "add", f"{METADATA}/32", "dev", wg_if)
    ping = sh("ping", "-c", "3", "-i", "0.5", "-W", "10", f"{TUNNEL_NET}.1", check=False)
    received = re.search(r"(\d+) received", ping.stdout)
    r.check(f"wireguard-go client pings {TUNNEL_NET}.1 through the forwarded UDP port",
            received and received.group(1) == "3", (ping.stdout.strip().splitlines() or ["no output"])[-2:][0])
    hs = sh("wg", "show", wg_if, "latest-handshakes", check=False).stdout.split()
    r.check("the client completed a WireGuard handshake with the appliance",
            len(hs) == 2 and hs[0] == made["server_pub"] and hs[1].isdigit() and int(hs[1]) > 0)
    before = listener.count()
    try:
        with socket.create_connection((APPLICATION, PROBE_PORT), timeout=10) as s:
            banner = s.recv(100)
    except OSError as e:
        banner = repr(e).encode()
    r.check("the client reaches the listener through the tunnel and the bastion's NAT",
            banner == Listener.BANNER and listener.count() == before + 1, banner.decode(errors="replace").strip())
    # The same listener answers the metadata address (QEMU's host) too, but the appliance never
    # forwards a peer's packets there: the instance role's credentials live behind it on EC2.
    before = listener.count()
    try:
        with socket.create_connection((METADATA, PROBE_PORT), timeout=3) as s:
            stolen = f"connected, got {s.recv(100)!r}"
    except OSError as e:
        stolen = f"refused as it should be: {e}"
    r.check("the client cannot reach the metadata address through the tunnel",
            stolen.startswith("refused") and listener.count() == before, stolen)


def shutdown(g, r, timings):
    before = len(g.lines)
    pressed = time.monotonic()
    timings["powerdown_at"] = pressed - g.t0
    g.powerdown()
    draining = g.wait_for(r"bastion: shutdown: power button \(/dev/input/event\d+ Power Button\): draining",
                          STEP_TIMEOUT, before)
    r.check("system_powerdown reaches the init as KEY_POWER and starts the drain", draining,
            draining[2].split("bastion: ", 1)[1] if draining else "")
    if draining:
        answer = None
        while time.monotonic() - pressed < DRAIN_SECONDS - 1:
            answer = http_get(8080)
            if answer and answer[0] == 503:
                break
            time.sleep(0.1)
        r.check("health answers 503 during the drain", answer and answer[0] == 503, repr(answer))
        ping = sh("ping", "-c", "1", "-W", "2", f"{TUNNEL_NET}.1", check=False)
        r.check("the tunnel still forwards during the drain", ping.returncode == 0 and
                time.monotonic() - pressed < DRAIN_SECONDS, f"{time.monotonic() - pressed:.1f} s after the button")
    code = g.wait(DRAIN_SECONDS + 15 - (time.monotonic() - pressed))
    took = time.monotonic() - pressed
    r.check(f"QEMU exits by itself within drain_seconds + 15 s ({DRAIN_SECONDS + 15} s)", code == 0,
            f"exit {code} after {took:.1f} s" if code is not None else f"still running after {took:.1f} s")
    if code == 0:
        timings["powerdown_to_exit"] = took
    time.sleep(0.3)  # the console reader drains QEMU's last output
    for name, rx in [
        ("drain finished after drain_seconds", rf"bastion: drain finished after {DRAIN_SECONDS} s"),
        ("NAT table removed", r"bastion: nat: table inet bastion-wg0 removed"),
        ("wg0 removed", r"bastion: tunnel: wg0 removed"),
        ("service exited 0", r"bastion: shutdown: service \(pid \d+\) stopped: exit status 0"),
        ("init syncs and powers off", r"bastion: shutdown: sync and power off"),
        ("kernel powers down", r"reboot: Power down"),
    ]:
        r.check(f"console: {name}", g.wait_for(rx, 0, before))


def no_errors(g, r):
    bad = [text for _, text in g.lines
           if re.search(r"bastion: .*(ERROR|PANIC)|bastion: service: pid \d+ .* restarting|Kernel panic|Oops", text)]
    r.check("no ERROR, PANIC, service restart or kernel panic on the console", not bad, " | ".join(bad[:3]))


def console_timings(g):
    """Boot stages from the console, in seconds since QEMU start: for the kernel's own lines,
    the kernel clock zero plus the line's printk timestamp (early lines reach the serial port in
    a burst when the console comes up); for the init's lines, their arrival on the serial port
    (their own CLOCK_BOOTTIME stamps lag the kernel's clock by a varying amount under TCG)."""
    offset = g.kernel_clock_offset()
    out = {"kernel_clock_zero": offset}
    marks = [
        ("firmware_done", r"EFI stub: Booting Linux Kernel"),
        ("init_started", r"bastion: init: bastion \S+ starting as PID 1"),
        ("modules_loaded", r"bastion: modules: loaded"),
        ("dhcp_lease", r"bastion: dhcp: eth0 lease"),
        ("config_accepted", r"bastion: config: accepted user-data"),
        ("service_started", r"bastion: service: started"),
        ("crng_ready", r"random: crng init done"),
        ("wg0_up", r"bastion: tunnel: wg0 up"),
        ("health_listening", r"bastion: health: listening"),
        ("selftest_pass", r"bastion: selftest: PASS"),
    ]
    skews = []
    for key, rx in marks:
        seen = g.wait_for(rx, 0)
        if seen:
            out[key] = seen[1]
            m = KERNEL_TIME.match(seen[2])
            if m and offset is not None:
                if "] bastion: " in seen[2]:
                    skews.append(seen[1] - offset - float(m.group(1)))
                else:
                    out[key] = offset + float(m.group(1))
    run_init = g.wait_for(r"Run /init as init process", 0)
    if run_init:
        out["run_init_kernel_clock"] = float(KERNEL_TIME.match(run_init[2]).group(1))
    if skews:  # how far the init's CLOCK_BOOTTIME stamps lag the kernel's printk clock
        out["init_clock_lag"] = sorted(skews)[len(skews) // 2]
    return out


def report(timings):
    z = timings.get("kernel_clock_zero")
    rows = []

    def row(label, key):
        t = timings.get(key)
        if t is not None:
            rows.append((label, t, t - z if z is not None else None))

    row("firmware done (kernel EFI stub)", "firmware_done")
    if z is not None:
        rows.append(("kernel clock zero", z, 0.0))
    if "run_init_kernel_clock" in timings and z is not None:
        k = timings["run_init_kernel_clock"]
        rows.append(("kernel runs /init", z + k, k))
    for label, key in [("init starts (first init line)", "init_started"), ("modules loaded", "modules_loaded"),
                       ("DHCP lease", "dhcp_lease"), ("user-data accepted", "config_accepted"),
                       ("service started", "service_started"), ("kernel CRNG ready", "crng_ready"),
                       ("wg0 up", "wg0_up"), ("health listening", "health_listening"),
                       ("selftest: PASS", "selftest_pass"), ("first health 503", "health_first_503"),
                       ("health 200 (from the host)", "health_200")]:
        row(label, key)
    lines = ["boot timings (from the serial console): seconds since QEMU start | since the kernel's clock zero"]
    for label, t, k in sorted(rows, key=lambda row: row[1]):
        lines.append(f"  {t:7.2f} | {k:6.2f}  {label}" if k is not None else f"  {t:7.2f} |     -   {label}")
    if "powerdown_to_exit" in timings:
        lines.append(f"  system_powerdown → QEMU exited: {timings['powerdown_to_exit']:.2f} s"
                     f" (drain_seconds = {DRAIN_SECONDS})")
    if "init_clock_lag" in timings:
        lines.append(f"  (the init's own timestamps lag the kernel's by {timings['init_clock_lag']:.2f} s)")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="aarch64")
    p.add_argument("--image", required=True, help="out/<arch>/disk.img")
    p.add_argument("--initramfs", required=True, help="out/<arch>/initramfs.gz (for the module list)")
    p.add_argument("--bastion", required=True, help="a bastion binary that runs on this machine (keys, check-config)")
    p.add_argument("--workdir", required=True, help="console and emulator logs, keys (recreated each run)")
    p.add_argument("--summary", required=True, help="JSON summary to write")
    p.add_argument("--smp", type=int, default=2)
    p.add_argument("--rng", action="store_true", help="give the guest a virtio-rng device")
    p.add_argument(INSIDE, dest="ns", help=argparse.SUPPRESS)
    a = p.parse_args()

    def on_term(signum, frame):
        raise SystemExit(128 + signum)  # runs every finally/__exit__ on the way out

    signal.signal(signal.SIGTERM, on_term)
    if not a.ns:
        argv = [x for x in sys.argv[1:]]
        return run_in_namespace(argv)

    started = time.time()
    r, timings, files = inside(a, a.ns)
    passed, failed = r.counts()
    print(report(timings))
    summary = {
        "image": os.path.abspath(a.image),
        "arch": a.arch,
        "smp": a.smp,
        "virtio_rng": a.rng,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "load_average_1m": os.getloadavg()[0],
        "passed": passed,
        "failed": failed,
        "checks": r.checks,
        "timings_since_qemu_start": {k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()},
        "files": files,
    }
    with open(a.summary, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(f"summary: {a.summary}")
    print(f"boot-test: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
