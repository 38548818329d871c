#!/usr/bin/env python3
"""A client that reads slowly and at a steady pace, for tests that need a download to
still be in flight a few seconds on (curl's --limit-rate lets bursts through: on a
loaded machine a 10 MB download "limited" to 1000k/s once ended in 0.95 s).

  slow_get.py HOST PORT PATH BODY_FILE RATE_BYTES_PER_S

One GET (Connection: close) with a 64 KiB receive buffer; reads at most RATE bytes per
second (in 10 ms steps); writes the body to BODY_FILE; prints "STATUS BODY_BYTES SECONDS"
like curl -w '%{http_code} %{size_download} %{time_total}'. HOST may be an IPv6
literal (without brackets)."""
import socket
import sys
import time


def main(argv):
    host, port, path, body_file, rate = argv[1], int(argv[2]), argv[3], argv[4], int(argv[5])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(30)
    t0 = time.monotonic()
    s.connect((host, port))
    hostname = "[%s]" % host if family == socket.AF_INET6 else host
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, hostname)).encode())
    step = max(1, rate // 100)  # bytes per 10 ms
    head, body, status = b"", 0, 0
    with open(body_file, "wb") as out:
        while True:
            chunk = s.recv(step)
            if not chunk:
                break
            if not status:
                head += chunk
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    continue
                status = int(head.split(b" ", 2)[1])
                chunk = head[end + 4:]
            out.write(chunk)
            body += len(chunk)
            time.sleep(0.01)
    print("%d %d %.3f" % (status, body, time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
