"""Helpers for the network fault tests (test_faults_net*.py): an origin that misbehaves on
purpose (cuts, resets and stalls), a raw proxy client that reports exactly what arrived
and whether the connection closed, and leak probes (daemon counters, open fds).

Everything talks to 127.0.0.1 only and every wait is bounded. Python 3 stdlib only.
"""

import os
import re
import socket
import ssl
import struct
import threading
import time

import harness as h
from harness import check, eq

STALL_MAX_S = 30.0  # a stalled origin handler gives up after this, whatever happens


class FaultOrigin(h.AcceptLoop):
    """A tiny HTTP/1.1 origin on 127.0.0.1 whose path picks a fault:

    /cut/N/K      Content-Length N, K body bytes, a pause, then FIN
    /reset/N/K    the same, then RST (SO_LINGER 0)
    /chunkcut/K   chunked, K bytes in chunks, a pause, then FIN without the last chunk
    /stallhead    reads the request, never answers
    /stallbody/N/K  Content-Length N, K bytes, then silence
    /interim/N    N interim 100 responses, then a 3-byte 200
    /early        413 before reading the request body, then close
    /armdrop      a normal answer, but the next request on the connection is read and
                  the connection closed without an answer (a kept-alive upstream that
                  goes away just as it is reused)
    /extra        a 3-byte response followed at once by a second, unrequested response
    /bytes/N      N bytes with Content-Length, sent in 64 KiB pieces
    anything else 200 "ok <path> <body length>\\n", keep-alive

    Request bodies framed by Content-Length are read whole first (however slowly they come).
    `closed_by_peer` counts stalled handlers that saw the proxy close its side, which is how
    a test knows the proxy really let go of the upstream connection."""

    PAUSE_S = 0.3
    BACKLOG = 256

    def __init__(self, tls=None):
        self.tls_ctx = None
        if tls is not None:  # (cert, key): HTTPS, the handshake in the connection's thread
            self.tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_ctx.load_cert_chain(*tls)
        self.lock = threading.Lock()
        self.paths = []
        self.accepts = 0
        self.open = 0
        self.closed_by_peer = 0
        self.interim_sent = 0
        self.bytes_sent = 0
        super().__init__()

    # --- bookkeeping -----------------------------------------------------------------
    def handle(self, c):
        with self.lock:
            self.accepts += 1
            self.open += 1
        threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def stats(self):
        with self.lock:
            return {"accepts": self.accepts, "open": self.open,
                    "interim_sent": self.interim_sent, "bytes_sent": self.bytes_sent,
                    "closed_by_peer": self.closed_by_peer, "paths": list(self.paths)}

    def wait_open(self, n, timeout=5.0):
        deadline = time.monotonic() + h.scaled(timeout)
        while time.monotonic() < deadline:
            if self.stats()["open"] == n:
                return True
            time.sleep(0.05)
        return self.stats()["open"] == n

    # --- one connection --------------------------------------------------------------
    def _read_request(self, c, buf):
        """(path, body length, bytes after the body) for one request, or None."""
        deadline = time.monotonic() + STALL_MAX_S
        while b"\r\n\r\n" not in buf:
            if len(buf) > 65536 or time.monotonic() > deadline:
                return None
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return None
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1] if len(lines[0].split(" ")) == 3 else "/"
        m = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head.decode("latin-1"))
        need = int(m.group(1)) if m and not path.startswith("/early") else 0
        got = len(buf)
        while got < need and time.monotonic() < deadline:
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return None
            got += len(chunk)
            buf += chunk
        if got < need:
            return None
        with self.lock:
            self.paths.append((path, need))
        return path, need, buf[need:]

    def _stall(self, c):
        """Holds the connection without a word until the peer closes it (or the cap)."""
        deadline = time.monotonic() + STALL_MAX_S
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                if not c.recv(65536):
                    with self.lock:
                        self.closed_by_peer += 1
                    return
            except socket.timeout:
                continue
            except OSError:
                with self.lock:
                    self.closed_by_peer += 1
                return

    def _serve(self, c):
        buf = b""
        try:
            if self.tls_ctx is not None:
                c.settimeout(10)
                c = self.tls_ctx.wrap_socket(c, server_side=True)
            c.settimeout(0.1)
            armed = False
            for _ in range(1000):  # bounded keep-alive
                req = self._read_request(c, buf)
                if req is None or armed:
                    return  # armed: close on the next request, unanswered
                path, body_len, buf = req
                if path.startswith("/armdrop"):
                    armed = True
                if not self._answer(c, path, body_len):
                    return
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass
            with self.lock:
                self.open -= 1

    def _answer(self, c, path, body_len):
        """Answers one request; False when the connection must end."""
        parts = path.split("?")[0].strip("/").split("/")
        kind, args = parts[0], [int(x) for x in parts[1:] if x.isdigit()]
        if kind in ("cut", "reset") and len(args) == 2:
            n, k = args
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      b"Content-Length: %d\r\n\r\n" % n + h.pattern_bytes(k))
            time.sleep(self.PAUSE_S)  # the proxy relays the part before the cut
            if kind == "reset":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if kind == "chunkcut" and len(args) == 1:
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            left = args[0]
            while left > 0:
                piece = min(left, 4096)
                c.sendall(b"%x\r\n" % piece + h.pattern_bytes(piece) + b"\r\n")
                left -= piece
            time.sleep(self.PAUSE_S)
            return False
        if kind == "stallhead":
            self._stall(c)
            return False
        if kind == "stallbody" and len(args) == 2:
            n, k = args
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + h.pattern_bytes(k))
            self._stall(c)
            return False
        if kind == "interim" and len(args) == 1:
            # N interim 100 responses (as fast as the proxy takes them), then the real one.
            burst = b"HTTP/1.1 100 Continue\r\n\r\n" * 1024
            c.settimeout(STALL_MAX_S)
            for _ in range(args[0] // 1024):
                c.sendall(burst)
                with self.lock:
                    self.interim_sent += len(burst)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nend")
            c.settimeout(0.1)
            return True
        if kind == "early":
            # Refuses an upload without reading it, then closes (RST: unread bytes).
            c.sendall(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n"
                      b"Connection: close\r\n\r\nbig\n")
            time.sleep(self.PAUSE_S)
            return False
        if kind == "extra":
            # One response plus the head and body of a second nobody asked for.
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nEVIL!\n")
            return True
        if kind == "bytes" and len(args) == 1:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      b"Content-Length: %d\r\n\r\n" % args[0])
            left = args[0]
            c.settimeout(STALL_MAX_S)  # a blocked send waits for the proxy to take it
            while left > 0 and not self._stop.is_set():
                piece = h.pattern_bytes(min(left, 65536))
                c.sendall(piece)  # raises once the proxy let go: the handler ends
                left -= len(piece)
                with self.lock:
                    self.bytes_sent += len(piece)
            c.settimeout(0.1)
            return True
        body = ("ok %s %d\n" % (path, body_len)).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)
        return True


# --- a raw client through the proxy ---------------------------------------------------
def request_bytes(origin_port, path, method="GET", body=None, host="api.example.test",
                  extra=()):
    lines = ["%s http://%s:%d%s HTTP/1.1" % (method, host, origin_port, path),
             "Host: %s:%d" % (host, origin_port),
             "Proxy-Authorization: " + h.basic_auth()]
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class Reply:
    """What one raw exchange produced: status, headers, body bytes, whether the proxy
    closed the connection, and how long it took until then."""

    def __init__(self, status, headers, body, closed, elapsed):
        self.status, self.headers, self.body = status, headers, body
        self.closed, self.elapsed = closed, elapsed

    def __repr__(self):
        return "Reply(status=%r, closed=%r, elapsed=%.2f, body=%d bytes, headers=%r)" % (
            self.status, self.closed, self.elapsed, len(self.body), self.headers)


def exchange(port, payload, timeout=10.0):
    """Sends payload on a fresh connection and reads until the proxy closes it or timeout.
    The body is everything after the head (not cut at Content-Length), so a proxy that
    sends too much or too little shows. Under valgrind the timeout is stretched."""
    timeout = h.scaled(timeout)
    t0 = time.monotonic()
    data, closed = b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.settimeout(0.1)
        while time.monotonic() - t0 < timeout and len(data) < 64 << 20:
            try:
                chunk = s.recv(262144)
            except socket.timeout:
                head = data.split(b"\r\n\r\n", 1)
                if len(head) == 2 and _complete(head[0], head[1]):
                    break  # a whole response on a kept-alive connection
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
    elapsed = time.monotonic() - t0
    if b"\r\n\r\n" not in data:
        return Reply(0, {}, data, closed, elapsed)
    head, body = data.split(b"\r\n\r\n", 1)
    blocks = h._parse_header_blocks(head + b"\r\n\r\n")
    status, hdrs = blocks[0] if blocks else (0, {})
    return Reply(status, hdrs, body, closed, elapsed)


def _complete(head, body):
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return m is not None and len(body) >= int(m.group(1))


# --- leak probes ----------------------------------------------------------------------
def status(d):
    """`airlock status` as a dict of its key: value lines."""
    rc, out = h.run_airlock(["-c", d.config_path, "status"], timeout=h.scaled(15))
    eq(rc, 0, "airlock status exit (%s)" % out)
    st = {}
    for line in out.splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            st[k.strip()] = v.strip()
    return st


def active(d):
    return int(status(d)["connections_active"])


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def baseline(d):
    """The daemon's open fd count with no proxy connection open."""
    wait_settled(d, 0)
    time.sleep(0.1)
    return fd_count(d.proc.pid)


def wait_settled(d, want_active=0, fd_baseline=None, timeout=8.0):
    """Waits until the daemon reports want_active proxy connections and (if given) its fd
    count is back to fd_baseline; fails with what it saw otherwise."""
    deadline = time.monotonic() + h.scaled(timeout)
    while True:
        n = active(d)
        fds = fd_count(d.proc.pid) if fd_baseline is not None else None
        if n == want_active and (fd_baseline is None or fds <= fd_baseline):
            return
        if time.monotonic() > deadline:
            raise AssertionError("daemon did not settle: connections_active %d (want %d), "
                                 "fds %s (baseline %s)" % (n, want_active, fds, fd_baseline))
        time.sleep(0.1)


def audit_by_path(d, path, n0=0, timeout=5.0):
    """The last audit record for path written after record n0 (waits for it)."""
    deadline = time.monotonic() + h.scaled(timeout)
    while True:
        recs = [r for r in d.audit_records()[n0:] if r.get("path") == path]
        if recs or time.monotonic() > deadline:
            check(recs, "no audit record for %s" % path, d.audit_records()[-3:])
            return recs[-1]
        time.sleep(0.05)


def still_serves(d, origin_port, path="/after"):
    """The daemon is alive and a normal request through it gets the origin's 200."""
    check(d.alive(), "airlockd died", d.log_text()[-2000:])
    r = exchange(d.http_port, request_bytes(origin_port, path), timeout=5)
    eq(r.status, 200, "normal request after the fault (%r)" % r)
    eq(r.body, ("ok %s 0\n" % path).encode(), "normal response body")
