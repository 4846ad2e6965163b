#!/usr/bin/env python3
"""An IMDSv2 emulator for tests: the calls the bastion makes, with a real token check.

  PUT /latest/api/token   with X-aws-ec2-metadata-token-ttl-seconds: 1..21600  -> a fresh token
  GET /latest/user-data   with X-aws-ec2-metadata-token: <a live token>         -> the file's bytes
                          without a token, or with an unknown/expired one       -> 401
  GET /latest/meta-data/iam/security-credentials/[ROLE]   (with --role)          -> the role, its
                          credentials (new ones on every request, expiring after
                          --credentials-seconds)
  GET /latest/meta-data/placement/region                  (with --region)
  GET /latest/meta-data/autoscaling/target-lifecycle-state (with --lifecycle-file)
  GET /latest/meta-data/instance-id, /latest/meta-data/local-ipv4 (with --instance-id, --local-ipv4)
  GET /latest/meta-data/mac, .../network/interfaces/macs/MAC/interface-id and
      .../subnet-ipv4-cidr-block                            (with --mac, --interface-id, --subnet-cidr)

Like EC2's IMDS, a PUT carrying X-Forwarded-For is refused (403) and a PUT without a valid TTL
gets 400. Every request is logged as one JSON line to --log (method, path, whether a token header
was sent and whether it was valid, the status answered), so a test can prove the token was used.

--mode (or the first word of --mode-file, re-read on every request, so a test can change it while
the emulator runs) makes user-data misbehave:
  normal            serve --user-data (404 when no file is given)
  404               404 Not Found
  invalid-toml      200 with text that is not TOML
  never-ending      200, chunked, one chunk every 0.2 s, never finished
  huge              200 with a Content-Length of 1 MiB and that many bytes
  huge-unlabelled   200, no Content-Length, 1 MiB, then close

Python 3 standard library only.  Usage:
  imds_emulator.py --bind 10.0.0.1 --port 8775 --user-data cfg.toml --log requests.jsonl
"""

import argparse
import http.server
import json
import secrets
import sys
import threading
import time

TOKENS = {}  # token -> expiry (monotonic seconds)
LOCK = threading.Lock()
MODES = ("normal", "404", "invalid-toml", "never-ending", "huge", "huge-unlabelled")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    sys_version = ""

    def log_message(self, fmt, *args):  # the JSON log below replaces the default stderr lines
        pass

    def record(self, status, **extra):
        token = self.headers.get("X-aws-ec2-metadata-token")
        entry = {
            "method": self.command,
            "path": self.path,
            "token_sent": token is not None,
            "token_valid": token is not None and token_valid(token),
            "status": status,
        }
        entry.update(extra)
        with LOCK:
            with open(self.server.args.log, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def answer(self, status, body=b"", content_type="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def do_PUT(self):
        if self.path != "/latest/api/token":
            self.record(404)
            return self.answer(404, b"Not Found")
        if "X-Forwarded-For" in self.headers:
            self.record(403)
            return self.answer(403, b"Forbidden")
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            self.record(400, ttl=ttl)
            return self.answer(400, b"Bad Request: missing or invalid X-aws-ec2-metadata-token-ttl-seconds")
        token = secrets.token_urlsafe(40)
        with LOCK:
            TOKENS[token] = time.monotonic() + int(ttl)
        self.record(200, ttl=int(ttl))
        self.answer(200, token.encode())

    def do_GET(self):
        args = self.server.args
        if self.path.startswith("/latest/meta-data/"):
            token = self.headers.get("X-aws-ec2-metadata-token")
            if token is None or not token_valid(token):
                self.record(401)
                return self.answer(401, b"Unauthorized")
            creds = "/latest/meta-data/iam/security-credentials/"
            if args.role and self.path == creds:
                self.record(200)
                return self.answer(200, args.role.encode())
            if args.role and self.path == creds + args.role:
                expiry = time.gmtime(time.time() + args.credentials_seconds)
                body = json.dumps({
                    "Code": "Success",
                    "LastUpdated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "Type": "AWS-HMAC",
                    "AccessKeyId": "ASIA" + secrets.token_hex(8).upper(),
                    "SecretAccessKey": secrets.token_urlsafe(30),
                    "Token": secrets.token_urlsafe(60),
                    "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", expiry),
                }).encode()
                self.record(200)
                return self.answer(200, body, "application/json")
            if args.lifecycle_file and self.path == "/latest/meta-data/autoscaling/target-lifecycle-state":
                try:
                    with open(args.lifecycle_file) as f:
                        state = f.read().strip()
                except FileNotFoundError:
                    state = None
                if state:
                    self.record(200)
                    return self.answer(200, state.encode())
            fixed = {"/latest/meta-data/instance-id": args.instance_id, "/latest/meta-data/local-ipv4": args.local_ipv4}
            if args.mac:
                interface = "/latest/meta-data/network/interfaces/macs/%s/" % args.mac
                fixed["/latest/meta-data/mac"] = args.mac
                fixed[interface + "interface-id"] = args.interface_id
                fixed[interface + "subnet-ipv4-cidr-block"] = args.subnet_cidr
                addresses = args.local_ipv4 or ""
                if args.local_ipv4s_file:
                    try:
                        with open(args.local_ipv4s_file) as f:
                            addresses = f.read().strip()
                    except FileNotFoundError:
                        pass
                fixed[interface + "local-ipv4s"] = addresses
            if fixed.get(self.path):
                self.record(200)
                return self.answer(200, fixed[self.path].encode())
            if args.region and self.path == "/latest/meta-data/placement/region":
                self.record(200)
                return self.answer(200, args.region.encode())
            self.record(404)
            return self.answer(404, b"Not Found")
        if self.path != "/latest/user-data":
            self.record(404)
            return self.answer(404, b"Not Found")
        token = self.headers.get("X-aws-ec2-metadata-token")
        if token is None or not token_valid(token):
            self.record(401)
            return self.answer(401, b"Unauthorized")
        mode = current_mode(self.server.args)
        if mode == "404" or (mode == "normal" and not self.server.args.user_data):
            self.record(404, mode=mode)
            return self.answer(404, b"Not Found")
        if mode == "invalid-toml":
            self.record(200, mode=mode)
            return self.answer(200, b"[interface\nprivate_key = = oops\n")
        if mode == "huge":
            self.record(200, mode=mode)
            return self.answer(200, b"#" * (1 << 20))
        if mode == "huge-unlabelled":
            self.record(200, mode=mode)
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(16):
                    self.wfile.write(b"#" * (1 << 16))
            except OSError:
                pass
            self.close_connection = True
            return
        if mode == "never-ending":
            self.record(200, mode=mode)
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                # Bounded so a forgotten emulator stops by itself (10 minutes).
                for _ in range(3000):
                    self.wfile.write(b"2\r\n# \r\n")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            self.close_connection = True
            return
        with open(self.server.args.user_data, "rb") as f:
            body = f.read()
        self.record(200, mode=mode, bytes=len(body))
        self.answer(200, body)


def token_valid(token):
    with LOCK:
        expiry = TOKENS.get(token)
    return expiry is not None and expiry > time.monotonic()


def current_mode(args):
    if args.mode_file:
        try:
            with open(args.mode_file) as f:
                words = f.read().split()
            if words and words[0] in MODES:
                return words[0]
        except OSError:
            pass
    return args.mode


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--user-data", help="file served as user-data")
    p.add_argument("--log", required=True, help="JSON lines, one per request")
    p.add_argument("--mode", default="normal", choices=MODES)
    p.add_argument("--mode-file", help="file whose first word overrides --mode, read per request")
    p.add_argument("--role", help="the instance role's name (no role: 404)")
    p.add_argument("--credentials-seconds", type=int, default=21600, help="lifetime of the role's credentials")
    p.add_argument("--region", help="placement/region (none: 404)")
    p.add_argument("--instance-id", help="meta-data/instance-id (none: 404)")
    p.add_argument("--local-ipv4", help="meta-data/local-ipv4 (none: 404)")
    p.add_argument("--mac", help="meta-data/mac, and the interface's entries below (none: 404)")
    p.add_argument("--interface-id", help="network/interfaces/macs/MAC/interface-id")
    p.add_argument("--subnet-cidr", help="network/interfaces/macs/MAC/subnet-ipv4-cidr-block")
    p.add_argument("--local-ipv4s-file", help="network/interfaces/macs/MAC/local-ipv4s: the file's lines, read per request (EC2's emulator rewrites it; no file: --local-ipv4)")
    p.add_argument("--lifecycle-file", help="autoscaling/target-lifecycle-state: the file's text, read per request (no file: 404)")
    args = p.parse_args()
    server = http.server.ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    server.args = args
    print(f"imds emulator listening on {args.bind}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
