#!/usr/bin/env python3
"""Idle keep-alive connections for drain_moves_test.sh (issue 12).

  idle_clients.py VIP N DIR
opens N connections to VIP:80 and sends GET /whoami.txt on each (the body names the
back-end that answered), reads the answers, then writes DIR/ready and waits (up to
120 s) for DIR/go-K files, K = 1, 2, ...: for each it sends GET /whoami.txt again on
EVERY connection, reads the answers and writes DIR/round-K with one line per
connection: "INDEX BACKEND" (or "INDEX ERROR reason"). It never reconnects: a
connection the server closed or reset is an error. DIR/stop ends it.
"""

import os
import socket
import sys
import time

REQ = b"GET /whoami.txt HTTP/1.1\r\nHost: drain.test\r\n\r\n"


def read_response(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("EOF before the response head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("EOF in the body")
        rest += chunk
    if status != 200:
        raise ConnectionError("HTTP %d" % status)
    return rest[:length].decode().strip()


def ask_all(conns):
    out = []
    for i, s in enumerate(conns):
        try:
            s.sendall(REQ)
            out.append("%d %s" % (i, read_response(s)))
        except (OSError, ValueError, IndexError) as e:
            out.append("%d ERROR %s" % (i, str(e).replace(" ", "_") or type(e).__name__))
    return out


def main():
    vip, n, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    conns = []
    for _ in range(n):
        s = socket.create_connection((vip, 80), timeout=10)
        conns.append(s)
    first = ask_all(conns)
    with open(os.path.join(d, "round-0"), "w") as f:
        f.write("\n".join(first) + "\n")
    open(os.path.join(d, "ready"), "w").close()
    k = 1
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(os.path.join(d, "stop")):
        if os.path.exists(os.path.join(d, "go-%d" % k)):
            res = ask_all(conns)
            with open(os.path.join(d, "round-%d.tmp" % k), "w") as f:
                f.write("\n".join(res) + "\n")
            os.rename(os.path.join(d, "round-%d.tmp" % k), os.path.join(d, "round-%d" % k))
            k += 1
        time.sleep(0.02)


if __name__ == "__main__":
    main()
