#!/usr/bin/env python3
"""One TCP connection relayed between stdin/stdout and HOST:PORT.

QEMU's user network runs this for every guest connection to a `guestfwd` address (the
connection is this program's stdin and stdout), so the boot test can give the guest a host in
its "private subnet" other than 169.254.169.254, which is the metadata service's address and
never forwarded to by the appliance."""

import os
import selectors
import socket
import sys


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    upstream = socket.create_connection((host, port), timeout=10)
    upstream.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "guest")
    sel.register(upstream, selectors.EVENT_READ, "upstream")
    while True:
        for key, _ in sel.select(timeout=30):
            if key.data == "guest":
                data = os.read(0, 65536)
                if not data:
                    upstream.shutdown(socket.SHUT_WR)
                    sel.unregister(0)
                    continue
                upstream.sendall(data)
            else:
                data = upstream.recv(65536)
                if not data:
                    return
                while data:
                    data = data[os.write(1, data):]
        if not sel.get_map():
            return


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError):
        sys.exit(1)
