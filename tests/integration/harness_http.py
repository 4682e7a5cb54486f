"""HTTP clients for the integration tests: the real curl binary (CurlResult), raw
sockets (recv_all, read_http_response, raw_http), Proxy-Authorization values and a
listener that counts connections. Part of harness.py, which re-exports every name here.
"""

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import ports
from harness_env import AGENT, TOKEN, make_tmpdir, scaled


_PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY",
              "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "CURL_HOME", "SSL_CERT_FILE",
              "CURL_CA_BUNDLE")


class CurlResult:
    """Unpacks as (status, headers, body, rc); also .stderr, .blocks (every header block
    in order, e.g. the CONNECT reply first), .write_out (-w output)."""

    def __init__(self, status, headers, body, rc, stderr, blocks, write_out):
        self.status, self.headers, self.body, self.rc = status, headers, body, rc
        self.stderr, self.blocks, self.write_out = stderr, blocks, write_out

    def __iter__(self):
        return iter((self.status, self.headers, self.body, self.rc))

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "CurlResult(status=%r, rc=%r, headers=%r, body=%r, stderr=%r)" % (
            self.status, self.rc, self.headers, self.body[:200], self.stderr[-300:])


def _parse_header_blocks(raw):
    blocks = []
    for part in re.split(rb"\r?\n\r?\n", raw):
        lines = part.decode("latin-1").splitlines()
        if not lines or not lines[0].startswith("HTTP/"):
            continue
        m = re.match(r"HTTP/\S+\s+(\d{3})", lines[0])
        hdrs = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                k = k.strip().lower()
                hdrs[k] = (hdrs[k] + ", " + v.strip()) if k in hdrs else v.strip()
        blocks.append((int(m.group(1)) if m else 0, hdrs))
    return blocks


def curl(url, proxy=None, socks5=None, proxy_user=None, args=(), headers=(), data=None,
         data_file=None, method=None, timeout=10, write_out=None, extra_urls=()):
    """Runs the real curl binary. proxy: an http:// proxy URL (may hold user:pass);
    socks5: "127.0.0.1:PORT" used with --socks5-hostname. Returns a CurlResult; the
    status and headers are those of the last response (the final one)."""
    d = make_tmpdir("airlock-curl-")
    hfile, bfile = os.path.join(d, "h"), os.path.join(d, "b")
    timeout = scaled(timeout)
    cmd = ["curl", "-s", "-S", "--max-time", str(timeout), "-D", hfile, "-o", bfile]
    if proxy:
        cmd += ["-x", proxy, "--noproxy", ""]
    if socks5:
        cmd += ["--socks5-hostname", socks5, "--noproxy", ""]
    if proxy_user:
        cmd += ["--proxy-user", proxy_user]
    for h in headers:
        cmd += ["-H", h]
    if data is not None:
        dpath = os.path.join(d, "data")
        with open(dpath, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        cmd += ["--data-binary", "@" + dpath]
    if data_file is not None:
        cmd += ["--data-binary", "@" + data_file]
    if method:
        cmd += ["-X", method]
    if write_out:
        cmd += ["-w", write_out]
    cmd += list(args) + [url]
    for u in extra_urls:
        cmd += ["-o", bfile + ".%d" % len(cmd), u]
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_ENV}
    env["HOME"] = d  # no ~/.curlrc
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                           timeout=timeout + 5)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = -1, b"", b"curl hung past its own --max-time"
    raw_h = open(hfile, "rb").read() if os.path.exists(hfile) else b""
    body = open(bfile, "rb").read() if os.path.exists(bfile) else b""
    blocks = _parse_header_blocks(raw_h)
    status, hdrs = blocks[-1] if blocks else (0, {})
    shutil.rmtree(d, ignore_errors=True)
    return CurlResult(status, hdrs, body, rc, err.decode("utf-8", "replace"), blocks,
                      out.decode("utf-8", "replace"))


# --- raw sockets ----------------------------------------------------------------------
def _recv_until(sock, deadline, done, data=b""):
    """Appends what sock sends to data until done(data), EOF, an error or the monotonic
    deadline; returns data."""
    sock.settimeout(0.2)
    while not done(data) and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock, timeout=5.0, limit=1 << 20):
    """Reads until EOF, limit bytes or timeout; returns what arrived."""
    return _recv_until(sock, time.monotonic() + scaled(timeout), lambda d: len(d) >= limit)


def read_http_response(sock, timeout=5.0):
    """Reads one HTTP response (headers + Content-Length body) from sock.
    Returns (status, headers dict lower-case, body, raw) or (0, {}, b"", raw) when the
    peer closed or timed out before a full header block."""
    deadline = time.monotonic() + scaled(timeout)
    data = _recv_until(sock, deadline, lambda d: b"\r\n\r\n" in d or len(d) >= 1 << 20)
    if b"\r\n\r\n" not in data:
        return 0, {}, b"", data
    head, rest = data.split(b"\r\n\r\n", 1)
    blocks = _parse_header_blocks(head + b"\r\n\r\n")
    if not blocks:
        return 0, {}, b"", data
    status, hdrs = blocks[0]
    n = int(hdrs.get("content-length", "0") or 0)
    rest = _recv_until(sock, deadline, lambda d: len(d) >= n, rest)
    return status, hdrs, rest[:n], data


def raw_http(port, payload, timeout=5.0):
    """Sends payload on a fresh connection to 127.0.0.1:port and reads one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(payload)
        except OSError:
            pass  # the proxy may answer and close before reading everything
        return read_http_response(s, timeout)


def basic_auth(user=AGENT, password=TOKEN):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


class AcceptLoop:
    """A TCP listener on a free 127.0.0.1 port whose thread accepts until close() and
    hands each connection to self.handle(conn), which owns it. A subclass sets its own
    fields before calling AcceptLoop.__init__ (the thread starts there)."""

    BACKLOG = 64

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ports.bind_free(self.sock)
        self.sock.listen(self.BACKLOG)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            try:
                self.handle(c)
            except OSError:
                c.close()  # the peer went away mid-answer; keep accepting

    def handle(self, conn):
        conn.close()

    def close(self):
        self._stop.set()
        self._t.join(2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CountingListener(AcceptLoop):
    """A TCP listener on 127.0.0.1 that only counts accepted connections (and closes
    them): proof that the proxy did or did not dial a target."""

    def __init__(self):
        self.accepts = 0
        super().__init__()

    def handle(self, conn):
        self.accepts += 1
        conn.close()


def connect_tunnel(d, host, port):
    """A socket through d's CONNECT tunnel to host:port, the 200 reply read byte by byte so
    that nothing of the tunnel is consumed; AssertionError if it is refused."""
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=5)
    s.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\nProxy-Authorization: %s\r\n\r\n"
               % (host, port, host, port, basic_auth())).encode())
    head = b""
    deadline = time.monotonic() + 5
    while b"\r\n\r\n" not in head and len(head) < 4096 and time.monotonic() < deadline:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        s.close()
        raise AssertionError("CONNECT refused | %r" % head)
    return s


def socks_tunnel(d, host, port):
    """A socket through d's SOCKS5 listener (user/pass as the test agent) to host:port;
    AssertionError if a step is refused."""
    s = socket.create_connection(("127.0.0.1", d.socks_port), timeout=5)
    user, pw, name = AGENT.encode(), TOKEN.encode(), host.encode()
    steps = ((b"\x05\x01\x02", 2, b"\x05\x02", "SOCKS5 method"),
             (b"\x01" + bytes([len(user)]) + user + bytes([len(pw)]) + pw, 2, b"\x01\x00",
              "SOCKS5 auth"),
             (b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", port), 10,
              b"\x05\x00", "SOCKS5 CONNECT"))
    for msg, n, want, what in steps:
        s.sendall(msg)
        got = s.recv(n)
        if got[:len(want)] != want:
            s.close()
            raise AssertionError("%s refused: got %r" % (what, got))
    return s
