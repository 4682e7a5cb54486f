"""Helpers shared by the approval tests (test_approvals.py, test_buddy_device.py): a
background curl that can be held and killed, the CLI's pending list, audit lookups,
configs with approval rules, and a wrapper around airlock-buddy-sim.
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import harness as h
from harness import check, eq

ID_RE = r"[0-9A-HJKMNP-TV-Z]{6}"
# "K3F9QX  POST api.example.test/x  agent=ci-bot rule=r credential=- body=5B (cli)  29s left"
PENDING_RE = re.compile(r"^(%s)  (\S+) (\S+)  agent=(\S+) rule=(\S+) .*\((\w+)\)" % ID_RE)
SIM = os.path.join(h.BIN_DIR, "airlock-buddy-sim")

class BgCurl:
    """curl through the proxy in the background, so the test can look at the queue while
    the request is held, and kill it to play a client that goes away."""

    def __init__(self, d, url, data=None, timeout=30):
        self.dir = h.make_tmpdir("airlock-bgcurl-")
        self.hfile = os.path.join(self.dir, "h")
        self.bfile = os.path.join(self.dir, "b")
        timeout = h.scaled(timeout)
        cmd = ["curl", "-s", "-S", "--max-time", str(timeout), "-D", self.hfile,
               "-o", self.bfile, "-x", d.proxy_url(), "--noproxy", "", "-H", "Expect:"]
        if data is not None:
            dpath = os.path.join(self.dir, "data")
            with open(dpath, "wb") as f:
                f.write(data)
            cmd += ["--data-binary", "@" + dpath, "-H",
                    "Content-Type: application/octet-stream"]
        env = {k: v for k, v in os.environ.items() if k not in h._PROXY_ENV}
        env["HOME"] = self.dir
        self.p = subprocess.Popen(cmd + [url], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env)
        self.timeout = timeout

    def done(self):
        return self.p.poll() is not None

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(5)

    def result(self, timeout=None):
        """Waits (bounded) and returns a harness CurlResult."""
        try:
            _, err = self.p.communicate(timeout=h.scaled(timeout) if timeout else self.timeout + 5)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("background curl did not finish in time")
        raw = open(self.hfile, "rb").read() if os.path.exists(self.hfile) else b""
        body = open(self.bfile, "rb").read() if os.path.exists(self.bfile) else b""
        blocks = h._parse_header_blocks(raw)
        status, hdrs = blocks[-1] if blocks else (0, {})
        return h.CurlResult(status, hdrs, body, self.p.returncode,
                            err.decode("utf-8", "replace"), blocks, "")


def cli(d, *args):
    return h.run_airlock(["-c", d.config_path] + list(args), timeout=15)


def pending(d):
    """{id: (method, hostpath, rule, mode)} from `airlock pending`."""
    rc, out = cli(d, "pending")
    eq(rc, 0, "airlock pending exit status (%s)" % out)
    items = {}
    for line in out.splitlines():
        m = PENDING_RE.match(line)
        if m:
            items[m.group(1)] = (m.group(2), m.group(3), m.group(5), m.group(6))
    return items


def status_json(d):
    """The raw reply to {"op":"status"} on the control socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(h.scaled(10))
    try:
        sock.connect(os.path.join(d.tmpdir, "run", "control.sock"))
        sock.sendall(b'{"op":"status"}\n')
        buf = b""
        while not buf.endswith(b"\n") and len(buf) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
    finally:
        sock.close()
    return json.loads(buf)


def device_line(d):
    """The "device: ..." line of `airlock status`."""
    rc, out = cli(d, "status")
    eq(rc, 0, "airlock status exit (%s)" % out)
    lines = [l for l in out.splitlines() if l.startswith("device: ")]
    eq(len(lines), 1, "device lines in `airlock status` (%s)" % out)
    return lines[0]


def wait_device_state(d, state, timeout=6.0):
    """Polls status until the device reaches state; returns its JSON object."""
    deadline = time.monotonic() + h.scaled(timeout)
    while True:
        dev = status_json(d).get("device")
        if (dev or {}).get("state") == state or time.monotonic() >= deadline:
            eq((dev or {}).get("state"), state, "device state in status (%r)" % dev)
            return dev
        time.sleep(0.1)


def wait_pending(d, n, timeout=8.0):
    """Polls until exactly n items are pending; returns them."""
    deadline = time.monotonic() + h.scaled(timeout)
    while True:
        items = pending(d)
        if len(items) == n or time.monotonic() > deadline:
            eq(len(items), n, "pending items")
            return items
        time.sleep(0.1)


def wait_new_item(d, known, timeout=8.0):
    """Waits for one pending id not in known; returns (id, item)."""
    timeout = h.scaled(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = pending(d)
        new = [k for k in items if k not in known]
        if new:
            return new[0], items[new[0]]
        time.sleep(0.1)
    raise AssertionError("no new pending item within %.0fs" % timeout)


def audit_for(d, item_id, timeout=5.0):
    deadline = time.monotonic() + h.scaled(timeout)
    while True:
        recs = [r for r in d.audit_records() if r.get("id") == item_id]
        if recs or time.monotonic() > deadline:
            check(recs, "no audit record with id %s" % item_id, d.audit_records()[-3:])
            return recs[-1]
        time.sleep(0.05)


def config(origin, rules, device_link=None, **approvals):
    # The default approval timeout outlives a test's CLI calls even under valgrind.
    ap = {"timeout": "%ds" % h.scaled(30), "max_pending": 64, "max_body": "1KiB"}
    ap.update(approvals)
    if device_link is not None:
        ap["device"] = {"path": device_link, "auth": "none"}
    return h.base_config(rules, approvals=ap)


def cli_rule(origin, name="held", approve="cli", **kw):
    return h.rule(name, ports=[origin.port], action="allow", approve=approve, **kw)


def url(origin, path):
    return "http://api.example.test:%d%s" % (origin.port, path)


def still_waiting(bg, origin, seen, secs=1.0):
    time.sleep(secs)
    check(not bg.done(), "held request completed without approval", bg.done() and bg.result())
    eq(len(origin.requests), seen, "requests at origin while held")


class Sim:
    """airlock-buddy-sim on its own pty; its event lines are collected by a thread."""

    def __init__(self, link, *args):
        self.link = link
        self.lines = []
        self.lock = threading.Lock()
        self.p = subprocess.Popen([SIM, "--link", link, "--auth", "none"] + list(args),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.wait_line(r"^ready ", 5)

    def _read(self):
        for raw in self.p.stdout:
            with self.lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def text(self):
        with self.lock:
            return list(self.lines)

    def wait_line(self, pattern, timeout=8.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + h.scaled(timeout)
        while time.monotonic() < deadline:
            for ln in self.text():
                if rx.search(ln):
                    return ln
            time.sleep(0.05)
        raise AssertionError("simulator never printed /%s/; got %r" % (pattern, self.text()))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(h.scaled(5))
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.t.join(2)
        # A killed simulator leaves its link pointing at a pty number the next simulator
        # (of this or a concurrently running test) may be given: another daemon still
        # polling this link would then talk to that device. Unplugged means gone.
        slave = next((ln.split()[1] for ln in self.text() if ln.startswith("ready ")), None)
        with contextlib.suppress(OSError):
            if slave is not None and os.readlink(self.link) == slave:
                os.unlink(self.link)
