"""Helpers for the fault tests on the vault, device and audit side (test_faults_vault.py,
test_faults_device.py): a keep-alive proxy client on a raw socket, a client thread that
sends requests continuously and records every answer, a tiny tmpfs (with an
RLIMIT_FSIZE fallback where mounting is not permitted), and a fake buddy device on a pty
that can stop in the middle of a line.

Everything talks to 127.0.0.1 only and every loop and wait is bounded.
"""

import contextlib
import errno
import hashlib
import hmac
import os
import pty
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty

import harness as h
import harness_daemon
from harness import check, eq
from approval_util import SIM
from token_util import Backend  # noqa: F401  (re-exported for the fault tests)


# --- private tokens ------------------------------------------------------------------------
SRC = h.SOURCE_DIR
SECRET = b"tok-" + os.urandom(12).hex().encode()


def vault_cli(d, *args, secret=None):
    return h.run_airlock(["-c", d.config_path] + list(args), input_bytes=secret)


def pair_sim(d, link):
    """Pairs airlock-buddy-sim (pairing mode) through `airlock buddy pair` (token present,
    daemon not running); returns the path of the key file the simulator now holds (the
    daemon has the key sealed in the vault as _buddy)."""
    keyfile = os.path.join(h.make_tmpdir("airlock-key-"), "key")
    p = subprocess.Popen([SIM, "--link", link, "--pairing", "--key-file", keyfile],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        ready = p.stdout.readline().decode()
        check(ready.startswith("ready ") and "pairing" in ready, "sim in pairing mode", ready)
        rc, out = vault_cli(d, "buddy", "pair")
        eq(rc, 0, "airlock buddy pair (%s)" % out)
    finally:
        p.terminate()
        p.communicate(timeout=5)
    check(os.path.exists(keyfile), "simulator stored the pair key")
    return keyfile


# --- a keep-alive client ------------------------------------------------------------------
class ProxyClient:
    """GETs through the HTTP proxy listener on one kept-alive connection (reopened when the
    proxy closes it). get() returns (status, headers, body); status 0 means no answer."""

    def __init__(self, d, host="api.example.test", port=None, timeout=10.0):
        self.d, self.host, self.port, self.timeout = d, host, port, timeout
        self.sock = None

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.d.http_port),
                                             timeout=self.timeout)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def get(self, path):
        req = ("GET http://%s:%d%s HTTP/1.1\r\nHost: %s:%d\r\nProxy-Authorization: %s\r\n"
               "\r\n" % (self.host, self.port, path, self.host, self.port, h.basic_auth()))
        for attempt in (0, 1):  # one retry: a kept-alive connection may have been closed
            if self.sock is None:
                self._connect()
            try:
                self.sock.sendall(req.encode())
                status, hdrs, body, _ = h.read_http_response(self.sock, self.timeout)
            except OSError:
                status, hdrs, body = 0, {}, b""
            if status == 0 or "close" in hdrs.get("connection", "").lower():
                self.close()
            if status != 0 or attempt == 1:
                return status, hdrs, body
        return 0, {}, b""


class Hammer:
    """A thread that GETs PATH_PREFIX/N continuously (N = 0, 1, ...) until stop() and keeps
    every answer as (n, status, decision, body)."""

    def __init__(self, d, origin_port, prefix="/h/", max_requests=20000):
        self.client = ProxyClient(d, port=origin_port)
        self.prefix = prefix
        self.max_requests = max_requests
        self.results = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.t.start()
        return self

    def _run(self):
        n = 0
        while not self._stop.is_set() and n < self.max_requests:
            status, hdrs, body = self.client.get("%s%d" % (self.prefix, n))
            with self.lock:
                self.results.append((n, status, hdrs.get("x-airlock-decision"), body))
            n += 1
        self.client.close()

    def count(self):
        with self.lock:
            return len(self.results)

    def snapshot(self):
        with self.lock:
            return list(self.results)

    def wait_more(self, k, timeout=20.0):
        """Waits until k more answers arrived than now (bounded)."""
        want = self.count() + k
        deadline = time.monotonic() + timeout
        while self.count() < want and time.monotonic() < deadline:
            time.sleep(0.02)
        check(self.count() >= want, "client thread stalled: %d answers, wanted %d" %
              (self.count(), want))

    def stop(self):
        self._stop.set()
        self.t.join(30)
        check(not self.t.is_alive(), "client thread did not stop")
        return self.snapshot()


# --- a tiny file system --------------------------------------------------------------------
class TinyDisk:
    """A directory whose file system fills up on demand.

    With mount permitted (CI runs as root): a tmpfs of `size` bytes; fill() writes a filler
    file until ENOSPC, free() deletes it. Otherwise (mode "rlimit"): a plain directory and
    the daemon runs with SIGXFSZ ignored and RLIMIT_FSIZE at rlimit_bytes, so its files
    fill up as requests flow (fill() does nothing); free() lifts the limit. (A limit lowered
    later would not do: RLIMIT_FSIZE caps the size, not the blocks the daemon reserved.)
    Always use it as a context manager: the tmpfs is unmounted in every case."""

    def __init__(self, size=1 << 20, rlimit_bytes=192 << 10):
        self.size = size
        self.rlimit_bytes = rlimit_bytes
        self.dir = h.make_tmpdir("airlock-tinydisk-")
        self.mode = None
        self.filler = os.path.join(self.dir, "filler")

    def __enter__(self):
        if os.environ.get("AIRLOCK_FAULT_NO_MOUNT") != "1":
            p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0700" % self.size,
                                "airlock-tinydisk", self.dir], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
            if p.returncode == 0:
                self.mode = "tmpfs"
                return self
            why = p.stdout.decode("utf-8", "replace").strip()
        else:
            why = "AIRLOCK_FAULT_NO_MOUNT=1"
        self.mode = "rlimit"
        print("NOTE: cannot mount a tmpfs (%s): falling back to RLIMIT_FSIZE with SIGXFSZ "
              "ignored" % why, flush=True)
        return self

    def __exit__(self, *exc):
        if self.mode == "tmpfs":
            for _ in range(50):  # bounded: a daemon that just exited may hold a file briefly
                if subprocess.run(["umount", self.dir], stderr=subprocess.DEVNULL).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["umount", "-l", self.dir])
                sys.stderr.write("tmpfs %s: lazy unmount\n" % self.dir)

    def start_daemon(self, d):
        """Starts d; in rlimit mode through a wrapper that sets RLIMIT_FSIZE and ignores
        SIGXFSZ, so the daemon gets EFBIG instead of being killed."""
        if self.mode != "rlimit":
            return d.start()
        wrapper = os.path.join(h.make_tmpdir("airlock-wrap-"), "airlockd")
        with open(wrapper, "w") as f:
            f.write("#!%s\nimport os, resource, signal, sys\n"
                    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                    "resource.setrlimit(resource.RLIMIT_FSIZE, (%d, resource.RLIM_INFINITY))\n"
                    "os.execv(%r, [%r] + sys.argv[1:])\n" %
                    (sys.executable, self.rlimit_bytes, h.AIRLOCKD, h.AIRLOCKD))
        os.chmod(wrapper, 0o755)
        # Daemon.start() reads harness_daemon.AIRLOCKD (h.AIRLOCKD is a copy of it)
        real, harness_daemon.AIRLOCKD = harness_daemon.AIRLOCKD, wrapper
        try:
            return d.start()
        finally:
            harness_daemon.AIRLOCKD = real

    def fill(self, d):
        if self.mode == "tmpfs":
            chunk = b"\0" * 4096
            with open(self.filler, "wb", buffering=0) as f:
                for _ in range(self.size // 4096 + 16):  # bounded by the fs size
                    try:
                        f.write(chunk)
                    except OSError as e:
                        check(e.errno == errno.ENOSPC, "filler: %s" % e)
                        break
            st = os.statvfs(self.dir)
            check(st.f_bavail == 0, "tmpfs still has %d free blocks" % st.f_bavail)

    def free(self, d):
        if self.mode == "tmpfs":
            os.unlink(self.filler)
        else:
            resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


# --- a fake buddy device on a pty ----------------------------------------------------------
class FakeDevice:
    """The device side of the buddy protocol, driven line by line by the test, so it can
    stop in the middle of a line or hold back a press: a pty whose slave path is symlinked
    at link. key: the 32-byte pair key (auth hmac), or None for auth none (macs "-")."""

    def __init__(self, link, devid="FAKE1", key=None):
        self.link, self.devid, self.key = link, devid, key
        self.master, slave = pty.openpty()
        tty.setraw(slave)
        self.slave_path = os.ttyname(slave)
        # Keep our own slave fd open until close(): the master then reads EAGAIN, not EIO,
        # before the daemon opens the tty.
        self.slave = slave
        os.set_blocking(self.master, False)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(self.slave_path, link)
        self.buf = b""
        self.lines = []

    def _read(self, timeout):
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line:
                self.lines.append(line.decode("ascii", "replace"))

    def wait_line(self, pattern, timeout=8.0):
        """The first line from the host matching pattern (consumed), or AssertionError."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for i, ln in enumerate(self.lines):
                if rx.search(ln):
                    del self.lines[:i + 1]
                    return ln
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("fake device never got /%s/; got %r" % (pattern,
                                                                               self.lines))
            self._read(min(left, 0.1))

    def send(self, data):
        os.write(self.master, data)

    def mac(self, kind, a, b):
        """SPEC section 7: first 32 hex chars of HMAC-SHA256(key, "KIND|a|b"); "-" without
        a key."""
        if self.key is None:
            return "-"
        return hmac.new(self.key, ("%s|%s|%s" % (kind, a, b)).encode(),
                        hashlib.sha256).hexdigest()[:32]

    def handshake(self):
        """Answers the daemon's HELLO challenge."""
        hnonce = self.wait_line(r"^HELLO 1 [0-9a-f]+$").split()[2]
        self.send(("HELLO 1 %s %s\n" % (self.devid, self.mac("HELLO", self.devid, hnonce)))
                  .encode())

    def wait_show(self, timeout=8.0):
        """(id, nonce, text) of the next SHOW."""
        _, iid, nonce, text = self.wait_line(r"^SHOW ", timeout).split(" ", 3)
        return iid, nonce, text

    def approve_line(self, iid, nonce):
        return ("APPROVE %s %s\n" % (iid, self.mac("APPROVE", iid, nonce))).encode()

    def unplug(self):
        """The cable is pulled: both ends of the pty close, the link goes away."""
        for fd in (self.slave, self.master):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.slave = self.master = -1
        with contextlib.suppress(FileNotFoundError):
            if os.readlink(self.link) == self.slave_path:
                os.unlink(self.link)


def kill_now(p):
    """SIGKILL and reap (no goodbye from the process)."""
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    p.wait(5)
