#!/usr/bin/env python3
"""HTTP/1.1 keep-alive clients for multi_handoff_test.sh (issue 12).

Every client keeps ONE TCP connection and never reconnects: a connection the server
closes early is an error, not something to paper over (http.client would reopen it
silently). Bodies are checked against a manifest of "PATH SHA256 SIZE" lines.

  keepalive_client.py MANIFEST VIP pipeline PATH...
      sends one GET per PATH in ONE write (the last asks Connection: close), then reads
      the responses in order: each 200 with the manifest's bytes, then EOF.
  keepalive_client.py MANIFEST VIP load SECONDS CLIENTS PATH...
      CLIENTS threads, each on its own connection, loop over PATH (each starting at a
      different offset) until SECONDS have passed; prints "requests N bytes B".
  keepalive_client.py MANIFEST VIP fallback PID HOME_PATH AWAY_PATH OTHER_PATH LIMIT_S
      on one connection: GET HOME_PATH (200); SIGSTOP PID (the only back-end of
      AWAY_PATH's group); GET AWAY_PATH: 503 or 504 within LIMIT_S; GET HOME_PATH (200);
      SIGCONT PID (in every case), 1.5 s for it to catch up; GET OTHER_PATH, AWAY_PATH,
      HOME_PATH (200 each). Every 200 byte-exact. Prints "fallback STATUS SECONDS".
  keepalive_client.py MANIFEST VIP dies PID HOME_PATH AWAY_PATH LIMIT_S
      on one connection: GET HOME_PATH (200); SIGSTOP PID (the only back-end of
      AWAY_PATH's group); send GET AWAY_PATH, so that a move to PID is under way;
      SIGKILL PID 0.2 s later; the answer to AWAY_PATH: 503 or 504 within LIMIT_S; then
      GET HOME_PATH twice (200, byte-exact). Prints "dies STATUS SECONDS".
Exit status 0 when every check held, 1 with the reason on stderr otherwise.
"""

import hashlib
import os
import select
import signal
import socket
import sys
import threading
import time

PORT = 80
TIMEOUT_S = 20.0


class Failure(Exception):
    pass


def load_manifest(path):
    want = {}
    with open(path) as f:
        for line in f:
            p, sha, size = line.split()
            want[p] = (sha, int(size))
    return want


def request(path, close=False):
    head = "GET %s HTTP/1.1\r\nHost: multi-handoff.test\r\nUser-Agent: keepalive_client\r\n" % path
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode()


class Conn:
    """One client connection; bytes past a response stay buffered for the next one."""

    def __init__(self, vip, timeout=TIMEOUT_S):
        self.sock = socket.create_connection((vip, PORT), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local = "%s:%d" % self.sock.getsockname()
        self.buf = bytearray()

    def _fill(self, what):
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise Failure("%s: no data for %.0f s" % (what, self.sock.gettimeout()))
        except OSError as e:
            raise Failure("%s: connection error: %s" % (what, e))
        if not data:
            raise Failure("%s: connection closed by the server (after %d buffered bytes)"
                          % (what, len(self.buf)))
        self.buf += data

    def response(self, what):
        """Reads one response: (status, headers dict, body bytes)."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > 65536:
                raise Failure("%s: no end of headers in %d bytes" % (what, len(self.buf)))
            self._fill(what + " (headers)")
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise Failure("%s: bad status line %r" % (what, lines[0]))
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" not in headers:
            raise Failure("%s: HTTP %s without Content-Length (headers %r)" % (what, parts[1], headers))
        n = int(headers["content-length"])
        while len(self.buf) < n:
            self._fill("%s (body: %d of %d bytes)" % (what, len(self.buf), n))
        body = bytes(self.buf[:n])
        del self.buf[:n]
        return int(parts[1]), headers, body

    def expect_eof(self, what):
        if self.buf:
            raise Failure("%s: %d unexpected bytes after the last response: %r"
                          % (what, len(self.buf), bytes(self.buf[:80])))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            raise Failure("%s: connection still open %.0f s after Connection: close"
                          % (what, self.sock.gettimeout()))
        except ConnectionResetError:
            raise Failure("%s: connection reset instead of closed after the last response" % what)
        if data:
            raise Failure("%s: %d unexpected bytes after the last response: %r"
                          % (what, len(data), data[:80]))


def check(want, path, status, body, what):
    if path not in want:
        raise Failure("%s: %s is not in the manifest" % (what, path))
    sha, size = want[path]
    if status != 200:
        raise Failure("%s: GET %s: HTTP %d, want 200 (body %r)" % (what, path, status, body[:60]))
    if len(body) != size or hashlib.sha256(body).hexdigest() != sha:
        raise Failure("%s: GET %s: %d bytes that differ from the file (%d bytes)"
                      % (what, path, len(body), size))


def get(conn, want, path, what):
    conn.sock.sendall(request(path))
    status, _, body = conn.response("%s GET %s" % (what, path))
    check(want, path, status, body, what)
    return len(body)


def pipeline(want, vip, paths):
    conn = Conn(vip)
    conn.sock.sendall(b"".join(request(p, close=(i == len(paths) - 1)) for i, p in enumerate(paths)))
    total = 0
    for i, p in enumerate(paths):
        what = "pipelined response %d of %d (%s)" % (i + 1, len(paths), conn.local)
        status, _, body = conn.response(what)
        check(want, p, status, body, what)
        total += len(body)
    conn.expect_eof("pipeline (%s)" % conn.local)
    print("pipeline %d responses %d bytes" % (len(paths), total))


def load(want, vip, seconds, clients, paths):
    errors = []
    done = [0] * clients
    nbytes = [0] * clients
    deadline = [0.0]

    # The clock starts once every client is connected (starting threads is not free).
    def go():
        deadline[0] = time.monotonic() + seconds

    start = threading.Barrier(clients + 1, action=go)

    def run(k):
        try:
            conn = Conn(vip)
        except OSError as e:
            errors.append("client %d: connect: %s" % (k, e))
            start.abort()
            return
        try:
            start.wait()
            i = k
            while time.monotonic() < deadline[0]:
                p = paths[i % len(paths)]
                nbytes[k] += get(conn, want, p, "client %d (%s) request %d" % (k, conn.local, done[k] + 1))
                done[k] += 1
                i += 1
        except (Failure, OSError, threading.BrokenBarrierError) as e:
            errors.append(str(e))
        finally:
            conn.sock.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    try:
        start.wait(timeout=30)
    except threading.BrokenBarrierError:
        errors.append("not every client connected within 30 s")
    for t in threads:
        t.join(seconds + 2 * TIMEOUT_S)
    print("requests %d bytes %d min_per_client %d" % (sum(done), sum(nbytes), min(done)))
    if any(t.is_alive() for t in threads):
        errors.append("a client is still running %.0f s after the end" % (2 * TIMEOUT_S))
    if errors:
        raise Failure("%d of %d clients failed; first: %s" % (len(errors), clients, errors[0]))
    if min(done) == 0:
        raise Failure("a client completed no request in %.0f s" % seconds)


def unavailable(conn, away, t0, limit, why):
    """The answer to the GET of `away` sent at t0: 503 or 504 within `limit` seconds (the
    move fell back); returns (status, seconds)."""
    status, _, body = conn.response("GET %s, %s (%s)" % (away, why, conn.local))
    secs = time.monotonic() - t0
    if status not in (503, 504):
        raise Failure("GET %s, %s: HTTP %d, want 503 or 504 (body %r)" % (away, why, status, body[:60]))
    if secs > limit:
        raise Failure("GET %s, %s: HTTP %d after %.2f s, want it within %.1f s"
                      % (away, why, status, secs, limit))
    return status, secs


def fallback(want, vip, pid, home, away, other, limit):
    conn = Conn(vip)
    what = "on the same connection (%s)" % conn.local
    get(conn, want, home, "before the stop, " + what)
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        conn.sock.sendall(request(away))
        status, secs = unavailable(conn, away, t0, limit, "its only back-end stopped")
        get(conn, want, home, "after the fallback, back-end still stopped, " + what)
    finally:
        os.kill(pid, signal.SIGCONT)
    # The stopped back-end wakes up to whatever it was sent during the failed move: none
    # of it may reach this connection, and moves (to it, too) work again.
    time.sleep(1.5)
    for p in (other, away, home):
        get(conn, want, p, "after the stopped back-end woke up, " + what)
    print("fallback %d %.3f" % (status, secs))


def dies(want, vip, pid, home, away, limit):
    conn = Conn(vip)
    what = "on the same connection (%s)" % conn.local
    get(conn, want, home, "before the death, " + what)
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        conn.sock.sendall(request(away))
        time.sleep(0.2)  # the move to the stopped back-end is under way (HANDOFF sent)
        # Nothing answered yet: the move has not fallen back before the death.
        if select.select([conn.sock], [], [], 0)[0]:
            raise Failure("GET %s was answered within 0.2 s, before its back-end was killed: "
                          "no move was under way at the death" % away)
    finally:
        os.kill(pid, signal.SIGKILL)
    status, secs = unavailable(conn, away, t0, limit, "its only back-end killed during the move")
    for _ in range(2):
        get(conn, want, home, "after the target died, " + what)
    print("dies %d %.3f" % (status, secs))


def main(argv):
    want = load_manifest(argv[1])
    vip, mode, args = argv[2], argv[3], argv[4:]
    try:
        if mode == "pipeline":
            pipeline(want, vip, args)
        elif mode == "load":
            load(want, vip, float(args[0]), int(args[1]), args[2:])
        elif mode == "fallback":
            fallback(want, vip, int(args[0]), args[1], args[2], args[3], float(args[4]))
        elif mode == "dies":
            dies(want, vip, int(args[0]), args[1], args[2], float(args[3]))
        else:
            raise SystemExit("unknown mode %r" % mode)
    except Failure as e:
        print("%s: %s" % (mode, e), file=sys.stderr)
        return 1
    except OSError as e:
        print("%s: %s" % (mode, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
