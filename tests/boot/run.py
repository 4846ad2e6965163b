#!/usr/bin/env python3
"""`make run`: boots the appliance image under QEMU like a fresh EC2 instance, with a ready
WireGuard client for it.

1. Makes fresh keys (with a host build of bastion: `genkey`, `pubkey`) and writes, under
   --workdir: `user-data.toml` (the appliance's config, validated with `check-config`) and
   `bastion0.conf` (a wg-quick client config whose endpoint is QEMU's forwarded 127.0.0.1:51820).
2. Starts the IMDSv2 emulator (tests/imds/imds_emulator.py, when present) on 127.0.0.1:80 serving
   that user-data: the guest reaches it as http://169.254.169.254/ through QEMU's user network.
3. Boots the image (tests/boot/qemu.py), streaming the serial console. Ctrl-C presses the power
   button; the appliance drains and powers off.
"""

import argparse
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from qemu import Guest, interactive  # noqa: E402

EMULATOR = os.path.join(HERE, "..", "imds", "imds_emulator.py")
TUNNEL_NET = "10.100.0"


def bastion(binary, *args, stdin=None):
    out = subprocess.run([binary, *args], input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"run.py: {binary} {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout.strip()


def write_configs(binary, workdir, udp_port=51820, drain_seconds=5, reach=(), probes=()):
    """Fresh keys; writes `user-data.toml` (the appliance's config, checked with check-config)
    and `bastion0.conf` (a wg-quick client whose endpoint is QEMU's forwarded 127.0.0.1:udp_port)
    under workdir (mode 0700: the private keys are in there). reach: networks every peer may
    reach; probes: the self-test's TCP targets. Returns a dict of the paths and public keys."""
    os.makedirs(workdir, exist_ok=True)
    os.chmod(workdir, 0o700)
    server_key = bastion(binary, "genkey")
    client_key = bastion(binary, "genkey")
    server_pub = bastion(binary, "pubkey", stdin=server_key + "\n")
    client_pub = bastion(binary, "pubkey", stdin=client_key + "\n")
    toml_list = lambda items: "[" + ", ".join(f'"{i}"' for i in items) + "]"  # noqa: E731
    selftest = f"\n[selftest]\nprobes = {toml_list(probes)}\n" if probes else ""
    user_data = os.path.join(workdir, "user-data.toml")
    with open(os.open(user_data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f"""# Written by tests/boot/run.py: served as EC2 user-data by the IMDSv2 emulator.
[interface]
private_key = "{server_key}"
address = ["{TUNNEL_NET}.1/24"]
listen_port = 51820

[[peer]]
name = "make-run-client"
public_key = "{client_pub}"
allowed_ips = ["{TUNNEL_NET}.2/32"]

[nat]
masquerade = true
egress = "auto"
reach = {toml_list(reach)}

[health]
listen = "0.0.0.0:8080"
drain_seconds = {drain_seconds}
{selftest}""")
    check = subprocess.run([binary, "check-config", user_data], capture_output=True, text=True)
    if check.returncode == 0:
        print(f"run.py: {check.stdout.strip()}", file=sys.stderr)
    else:  # the appliance will say so on its console too; boot anyway so that can be seen
        print(f"run.py: WARNING: check-config rejects the generated config:\n{check.stdout}{check.stderr}",
              file=sys.stderr)
    client = os.path.join(workdir, "bastion0.conf")
    with open(os.open(client, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f"""[Interface]
PrivateKey = {client_key}
Address = {TUNNEL_NET}.2/32
MTU = 1420

[Peer]
PublicKey = {server_pub}
Endpoint = 127.0.0.1:{udp_port}
AllowedIPs = {TUNNEL_NET}.1/32
PersistentKeepalive = 25
""")
    client_key_file = os.path.join(workdir, "client.key")
    with open(os.open(client_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(client_key + "\n")
    return {
        "user_data": user_data,
        "config_ok": check.returncode == 0,
        "client_conf": client,
        "client_key_file": client_key_file,
        "client_key": client_key,
        "server_pub": server_pub,
        "client_pub": client_pub,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="aarch64")
    p.add_argument("--image", required=True)
    p.add_argument("--bastion", required=True, help="a bastion binary that runs on this machine")
    p.add_argument("--workdir", required=True)
    p.add_argument("--udp-port", type=int, default=51820)
    p.add_argument("--http-port", type=int, default=8080)
    a = p.parse_args()
    made = write_configs(a.bastion, a.workdir, a.udp_port)
    user_data, client, client_key = made["user_data"], made["client_conf"], made["client_key"]

    companion = None
    if os.path.exists(EMULATOR):
        log = os.path.join(a.workdir, "imds-requests.jsonl")
        companion = " ".join(shlex.quote(w) for w in [
            sys.executable, EMULATOR, "--bind", "127.0.0.1", "--port", "80", "--user-data", user_data, "--log", log])
        print(f"run.py: IMDSv2 emulator on 127.0.0.1:80 (the guest's 169.254.169.254), requests in {log}",
              file=sys.stderr)
    else:
        print("run.py: no IMDS emulator (tests/imds/imds_emulator.py) in this tree: the guest gets no user-data",
              file=sys.stderr)

    print(f"""
---------------------------------------------------------------------------------------------
WireGuard client config ({os.path.abspath(client)}):
{open(client).read().replace(client_key, '<private key: see the file>')}
Once the console says the service is up, from another terminal on this machine:
  wg-quick up {os.path.abspath(client)}   # then: ping {TUNNEL_NET}.1
      (without the wireguard kernel module, wg-quick falls back to wireguard-go)
  curl -i http://127.0.0.1:{a.http_port}/              # health (200 when the data plane works)
  wg-quick down {os.path.abspath(client)}
Ctrl-C here presses the power button: the appliance drains, then powers off.
---------------------------------------------------------------------------------------------
""", file=sys.stderr)
    guest = Guest(a.arch, a.image, os.path.join(a.workdir, "console.log"), echo=True,
                  udp_port=a.udp_port, http_port=a.http_port, companion=companion)
    conf = os.path.abspath(client)

    def ready(line):
        print(f"""
---------------------------------------------------------------------------------------------
run.py: the appliance is up ({line.split('bastion: ', 1)[-1]}). Connect from another terminal:
  wg-quick up {conf} && ping -c 3 {TUNNEL_NET}.1
  curl -i http://127.0.0.1:{a.http_port}/
  wg-quick down {conf}
Ctrl-C here: power button (drain, then power off).
---------------------------------------------------------------------------------------------
""", file=sys.stderr, flush=True)

    try:
        return 0 if interactive(guest, on_line=(r"bastion: selftest: PASS", ready)) == 0 else 1
    finally:
        guest.close()


if __name__ == "__main__":
    sys.exit(main())
