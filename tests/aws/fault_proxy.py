#!/usr/bin/env python3
"""A proxy in front of the AWS API emulator that answers some requests itself with the errors
the real services send under load, so the test can see the client retry them.

Every Nth request (--every) gets, in turn: EBS's throttling answer (HTTP 400,
`x-amzn-ErrorType: RequestThrottledException`, JSON with Message and Reason), a 503, and for
EC2 its `RequestLimitExceeded` (503, XML), for CloudWatch Logs its `ThrottlingException` (400,
JSON). The rest are forwarded unchanged. One JSON line per injected fault goes to --log.

While the file --hang-file exists, requests get no answer at all: the proxy holds each one
until the file is gone (at most 120 s), then closes the connection."""

import argparse
import http.client
import http.server
import json
import os
import threading
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--upstream", type=int, required=True)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--log", required=True)
    p.add_argument("--hang-file")
    a = p.parse_args()
    lock = threading.Lock()
    state = {"n": 0, "faults": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            auth = self.headers.get("Authorization", "")
            service = auth.split("Credential=", 1)[-1].split("/")[3] if "Credential=" in auth else "?"
            if a.hang_file and os.path.exists(a.hang_file):
                with open(a.log, "a") as log:
                    log.write(json.dumps({"fault": "hang", "service": service, "method": self.command, "path": self.path}) + "\n")
                deadline = time.time() + 120
                while os.path.exists(a.hang_file) and time.time() < deadline:
                    time.sleep(0.2)
                self.close_connection = True
                return
            with lock:
                state["n"] += 1
                fault = None
                if state["n"] % a.every == 0:
                    kind = state["faults"] % 3
                    state["faults"] += 1
                    fault = ["throttle", "unavailable", "throttle"][kind]
            if fault:
                if service == "logs" and fault == "throttle":
                    payload = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
                    status, headers = 400, {"Content-Type": "application/x-amz-json-1.1"}
                elif service == "ebs" and fault == "throttle":
                    payload = json.dumps({"Message": "Rate exceeded", "Reason": "ACCOUNT_THROTTLED"}).encode()
                    status, headers = 400, {"x-amzn-ErrorType": "RequestThrottledException:http://internal.amazon.com/coral/com.amazon.zeppelindataservice/", "Content-Type": "application/json"}
                elif fault == "throttle":
                    payload = b"<?xml version=\"1.0\"?><Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>fault</RequestID></Response>"
                    status, headers = 503, {"Content-Type": "text/xml"}
                else:
                    payload = b"Service Unavailable"
                    status, headers = 503, {"Content-Type": "text/plain"}
                with open(a.log, "a") as log:
                    log.write(json.dumps({"fault": fault, "service": service, "method": self.command, "path": self.path, "status": status}) + "\n")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            upstream = http.client.HTTPConnection("127.0.0.1", a.upstream, timeout=60)
            forwarded = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
            upstream.request(self.command, self.path, body=body, headers=forwarded)
            answer = upstream.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for k, v in answer.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            upstream.close()

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

    server = http.server.ThreadingHTTPServer(("127.0.0.1", a.listen), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
