#!/usr/bin/env python3
"""Opens N idle TCP connections to HOST:PORT, holds them HOLD seconds, and reports as JSON
how many were opened, refused, and closed by the server meanwhile.

Usage: idle_connections.py HOST:PORT N HOLD
Raises its own soft file-descriptor limit (up to the hard limit) to hold them.
"""
import errno
import json
import resource
import socket
import sys
import time


def main(target, count, hold):
    host, port = target.rsplit(":", 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 64
    if soft < want:
        limit = want if hard == resource.RLIM_INFINITY else min(hard, want)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    sockets, refused = [], 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect((host, int(port)))
            sockets.append(s)
        except OSError:
            refused += 1
            s.close()
    time.sleep(hold)  # the scenario: connections held idle for HOLD seconds
    closed = 0
    for s in sockets:
        s.setblocking(False)
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE):
                closed += 1
        s.close()
    print(json.dumps({"opened": len(sockets), "refused": refused, "closed_by_server": closed}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
