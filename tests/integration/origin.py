#!/usr/bin/env python3
"""A real HTTP/1.1 origin server for the integration tests (and a fallback for bench).

It listens on 127.0.0.1 only, keeps connections alive, reads request bodies framed by
Content-Length or chunked, and records every complete request it answered so tests can
prove what did (or did not) reach the origin through airlockd. Optional TLS.

Endpoints: /bytes/N (N bytes, Content-Length, streamed), /chunked/N (N bytes chunked),
/slow/MS (sleep, then echo), /status/CODE (that status, small body), anything else: a
JSON echo {method, path, query, headers, body_len, body_sha256, conn}.

In-process:  o = Origin(); o.start(); ... o.port, o.requests, o.connections; o.stop()
Script:      python3 origin.py --port N [--tls CERT KEY]
"""

import argparse
import hashlib
import http.server
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse

import ports

MAX_BODY = 256 * 1024 * 1024        # bounded: tests never send more than this
MAX_LINE = 64 * 1024
MAX_BYTES_RESPONSE = 1024 * 1024 * 1024
PATTERN = bytes(range(256)) * 256   # 64 KiB of a known pattern for /bytes and /chunked


def pattern_bytes(n):
    """The exact bytes /bytes/N and /chunked/N send, for tests that compare hashes."""
    reps, rest = divmod(n, len(PATTERN))
    return PATTERN * reps + PATTERN[:rest]


class BodyError(Exception):
    pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "airlock-test-origin/1"
    timeout = 30  # a stuck client cannot pin a thread forever

    def setup(self):
        super().setup()
        self.conn_id = self.server.register_conn(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.unregister_conn(self.connection)

    def log_message(self, fmt, *args):  # quiet: the tests print what matters
        if self.server.verbose:
            sys.stderr.write("origin: " + (fmt % args) + "\n")

    # --- request body -------------------------------------------------------------
    def _read_line(self):
        line = self.rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE or not line.endswith(b"\n"):
            raise BodyError("bad or truncated line")
        return line

    def _read_exact(self, n):
        data = self.rfile.read(n)
        if len(data) != n:
            raise BodyError("truncated body")
        return data

    def _read_chunked(self, h):
        total = 0
        while True:
            size_s = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise BodyError("bad chunk size") from None
            if size < 0 or total + size > MAX_BODY:
                raise BodyError("chunk too large")
            if size == 0:
                break
            h.update(self._read_exact(size))
            total += size
            if self._read_exact(2) != b"\r\n":
                raise BodyError("missing CRLF after chunk")
        for _ in range(100):  # trailers, bounded
            if self._read_line() in (b"\r\n", b"\n"):
                return total
        raise BodyError("too many trailers")

    def _read_body(self):
        h = hashlib.sha256()
        te = self.headers.get("Transfer-Encoding")
        cl = self.headers.get("Content-Length")
        if te is not None:
            if te.strip().lower() != "chunked":
                raise BodyError("unsupported transfer-encoding")
            return self._read_chunked(h), h.hexdigest()
        n = int(cl) if cl is not None else 0
        if n < 0 or n > MAX_BODY:
            raise BodyError("bad content-length")
        left = n
        while left > 0:
            data = self.rfile.read(min(left, 65536))
            if not data:
                raise BodyError("truncated body")
            h.update(data)
            left -= len(data)
        return n, h.hexdigest()

    # --- dispatch ------------------------------------------------------------------
    def _handle(self):
        try:
            body_len, body_sha = self._read_body()
        except (BodyError, ValueError, OSError) as e:
            self.server.record_bad(self.command, self.path, str(e), self.conn_id)
            self.close_connection = True
            return
        u = urllib.parse.urlsplit(self.path)
        rec = {
            "method": self.command,
            "target": self.path,
            "path": u.path,
            "query": u.query,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": body_len,
            "body_sha256": body_sha,
            "conn": self.conn_id,
            "version": self.request_version,
        }
        self.server.record(rec)
        parts = u.path.strip("/").split("/")
        try:
            if parts[0] == "bytes" and len(parts) == 2:
                return self._send_bytes(int(parts[1]), chunked=False)
            if parts[0] == "chunked" and len(parts) == 2:
                return self._send_bytes(int(parts[1]), chunked=True)
            if parts[0] == "slow" and len(parts) == 2:
                time.sleep(min(int(parts[1]), 60000) / 1000.0)
            if parts[0] == "status" and len(parts) == 2:
                return self._send_status(int(parts[1]))
        except ValueError:
            return self._send_status(400)
        echo = dict(rec)
        del echo["target"], echo["version"]
        self._send_simple(200, json.dumps(echo).encode() + b"\n", "application/json")

    def _send_simple(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Origin-Conn", str(self.conn_id))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_status(self, code):
        if code < 200 or code > 599:
            code = 400
        if code in (204, 304):
            self.send_response(code)
            self.send_header("X-Origin-Conn", str(self.conn_id))
            self.end_headers()
            return
        self._send_simple(code, b"status %d\n" % code)

    def _send_bytes(self, n, chunked):
        n = max(0, min(n, MAX_BYTES_RESPONSE))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("X-Origin-Conn", str(self.conn_id))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        left = n
        while left > 0:
            piece = PATTERN[: min(left, len(PATTERN))]
            if chunked:
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                self.wfile.write(piece)
            left -= len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle


class OriginServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr, tls_ctx=None, verbose=False):
        self.tls_ctx = tls_ctx
        self.verbose = verbose
        self.lock = threading.Lock()
        self.requests = []
        self.bad_requests = []
        self.accepts = 0
        self.open_conns = {}
        self.next_conn = 0
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = super().get_request()
        with self.lock:
            self.accepts += 1
        return sock, addr

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's own thread, so a slow or
        # hostile client cannot stall the accept loop.
        if self.tls_ctx is not None:
            request.settimeout(Handler.timeout)
            try:
                request = self.tls_ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                with self.lock:
                    self.bad_requests.append({"tls_error": str(e)})
                request.close()
                return
        super().finish_request(request, client_address)

    def register_conn(self, sock):
        with self.lock:
            self.next_conn += 1
            self.open_conns[self.next_conn] = sock
            return self.next_conn

    def unregister_conn(self, sock):
        with self.lock:
            for k, v in list(self.open_conns.items()):
                if v is sock:
                    del self.open_conns[k]

    def record(self, rec):
        with self.lock:
            self.requests.append(rec)

    def record_bad(self, method, path, why, conn):
        with self.lock:
            self.bad_requests.append({"method": method, "target": path, "error": why,
                                      "conn": conn})

    def close_all(self):
        with self.lock:
            socks = list(self.open_conns.values())
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Origin:
    """An origin on 127.0.0.1:port (0 = pick a free one), in a background thread."""

    def __init__(self, port=0, tls=None, verbose=False):
        ctx = tls_context(*tls) if tls else None
        for attempt in range(16):  # bounded: a picked port can be taken before the bind
            try:
                self.server = OriginServer(("127.0.0.1", port or ports.free_port()), ctx,
                                           verbose)
                break
            except OSError:
                if port or attempt == 15:
                    raise
        self.port = self.server.server_address[1]
        self.tls = tls is not None
        self.thread = None

    @property
    def requests(self):
        with self.server.lock:
            return list(self.server.requests)

    @property
    def bad_requests(self):
        with self.server.lock:
            return list(self.server.bad_requests)

    @property
    def connections(self):
        """TCP connections accepted so far."""
        with self.server.lock:
            return self.server.accepts

    def start(self):
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(5)
            self.thread = None
        self.server.close_all()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main():
    ap = argparse.ArgumentParser(description="test origin server (127.0.0.1 only)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    o = Origin(a.port, tuple(a.tls) if a.tls else None, a.verbose)
    print("origin listening on 127.0.0.1:%d%s" % (o.port, " (tls)" if a.tls else ""),
          flush=True)
    try:
        o.server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        o.server.server_close()


if __name__ == "__main__":
    main()
