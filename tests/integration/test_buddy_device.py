#!/usr/bin/env python3
"""The buddy device end to end (SPEC sections 6 and 7): airlockd drives
airlock-buddy-sim on a pseudo-terminal (auth none). A press on the device releases or
denies an `approve: device` request, the audit names the device, a device plugged in
late or re-plugged gets HELLO and the pending item again, and `approve: any` takes
either the CLI or the device.
"""

import os
import re
import signal
import subprocess
import threading
import time

import harness as h
from harness import check, eq, test

ID_RE = r"[0-9A-HJKMNP-TV-Z]{6}"
# "K3F9QX  POST api.example.test/x  agent=ci-bot rule=r credential=- body=5B (cli)  29s left"
PENDING_RE = re.compile(r"^(%s)  (\S+) (\S+)  agent=(\S+) rule=(\S+) .*\((\w+)\)" % ID_RE)
SIM = os.path.join(h.BIN_DIR, "airlock-buddy-sim")


# --- helpers (local to this file) ---------------------------------------------------------
class BgCurl:
    """curl through the proxy in the background, so the test can look at the queue while
    the request is held, and kill it to play a client that goes away."""

    def __init__(self, d, url, data=None, timeout=30):
        self.dir = h.make_tmpdir("airlock-bgcurl-")
        self.hfile = os.path.join(self.dir, "h")
        self.bfile = os.path.join(self.dir, "b")
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
            _, err = self.p.communicate(timeout=timeout or self.timeout + 5)
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


def wait_pending(d, n, timeout=8.0):
    """Polls until exactly n items are pending; returns them."""
    deadline = time.monotonic() + timeout
    while True:
        items = pending(d)
        if len(items) == n or time.monotonic() > deadline:
            eq(len(items), n, "pending items")
            return items
        time.sleep(0.1)


def wait_new_item(d, known, timeout=8.0):
    """Waits for one pending id not in known; returns (id, item)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = pending(d)
        new = [k for k in items if k not in known]
        if new:
            return new[0], items[new[0]]
        time.sleep(0.1)
    raise AssertionError("no new pending item within %.0fs" % timeout)


def audit_for(d, item_id, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for r in d.audit_records() if r.get("id") == item_id]
        if recs or time.monotonic() > deadline:
            check(recs, "no audit record with id %s" % item_id, d.audit_records()[-3:])
            return recs[-1]
        time.sleep(0.05)


def config(origin, rules, device_link=None, **approvals):
    ap = {"timeout": "30s", "max_pending": 64, "max_body": "1KiB"}
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
        deadline = time.monotonic() + timeout
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
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.t.join(2)


def press(sim, key):
    """Keys on the simulator's stdin: a short press (a) approves, a long one (d) denies."""
    sim.p.stdin.write(key)
    sim.p.stdin.flush()


def device_rule(origin, name="dev", approve="device", **kw):
    return h.rule(name, ports=[origin.port], action="allow", approve=approve, **kw)


def link_path():
    return os.path.join(h.make_tmpdir("airlock-buddy-"), "buddy")


# --- tests ------------------------------------------------------------------------------
@test
def device_press_releases_the_held_post():
    with h.Origin() as o:
        link = link_path()
        with h.Daemon(config(o, [device_rule(o)], device_link=link)) as d:
            sim = Sim(link, "--auto", "approve", "--delay", "300")
            try:
                sim.wait_line(r"^hello SIM1$")
                body = os.urandom(500)
                bg = BgCurl(d, url(o, "/deploy"), data=body)
                shown = sim.wait_line(r"^shown %s POST " % ID_RE)
                iid = shown.split()[1]
                check("/deploy" in shown and "api.example.test" in shown,
                      "shown text names the request", shown)
                sim.wait_line(r"^approved %s$" % iid)
                r = bg.result()
                eq(r.status, 200, "status after the device approved (%r)" % r)
                eq(r.json()["path"], "/deploy", "echo path")
                eq(len(o.requests), 1, "requests at origin")
                eq(o.requests[0]["body_sha256"], h.sha256_hex(body), "body at origin")
                rec = audit_for(d, iid)
                eq(rec.get("decision"), "allow", "audit decision")
                eq(rec.get("approver"), "device:SIM1", "audit approver")
                eq(pending(d), {}, "queue after approval")
            finally:
                sim.stop()
            eq(d.stop(), 0, "daemon exit status")


@test
def device_long_press_denies():
    with h.Origin() as o:
        link = link_path()
        with h.Daemon(config(o, [device_rule(o)], device_link=link)) as d:
            sim = Sim(link, "--auto", "deny", "--delay", "300")
            try:
                sim.wait_line(r"^hello SIM1$")
                bg = BgCurl(d, url(o, "/drop"), data=b"no")
                iid = sim.wait_line(r"^shown %s " % ID_RE).split()[1]
                sim.wait_line(r"^denied %s$" % iid)
                r = bg.result()
                eq(r.status, 403, "status after the device denied (%r)" % r)
                eq(r.headers.get("x-airlock-decision"), "approval-denied", "decision")
                eq(audit_for(d, iid).get("decision"), "approval-denied", "audit decision")
                eq(len(o.requests), 0, "requests at origin")
            finally:
                sim.stop()
            eq(d.stop(), 0, "daemon exit status")


@test
def late_plug_and_replug_show_the_item_again():
    with h.Origin() as o:
        link = link_path()
        with h.Daemon(config(o, [device_rule(o)], device_link=link)) as d:
            # No device at all: the item waits.
            bg = BgCurl(d, url(o, "/late"), data=b"1")
            iid, _ = wait_new_item(d, set())
            still_waiting(bg, o, 0, 1.5)
            sim = Sim(link, "--auto", "approve", "--delay", "300")
            try:
                sim.wait_line(r"^hello SIM1$", 6)
                sim.wait_line(r"^shown %s " % iid, 6)
                sim.wait_line(r"^approved %s$" % iid)
                eq(bg.result().status, 200, "late-plugged device approved")
                eq(audit_for(d, iid).get("approver"), "device:SIM1", "approver")
            finally:
                sim.stop()
            # Unplug while an item is on show (SIGKILL: no goodbye, a dangling link).
            sim = Sim(link)
            try:
                sim.wait_line(r"^hello SIM1$", 6)
                bg = BgCurl(d, url(o, "/replug"), data=b"2")
                iid2 = sim.wait_line(r"^shown %s " % ID_RE).split()[1]
            finally:
                sim.p.kill()
                sim.stop()
            time.sleep(1.0)
            check(iid2 in pending(d), "item left the queue when the device was unplugged")
            check(not bg.done(), "request finished while the device was unplugged")
            check(d.alive(), "daemon died on unplug")
            sim = Sim(link, "--auto", "approve", "--delay", "300")
            try:
                sim.wait_line(r"^hello SIM1$", 6)
                sim.wait_line(r"^shown %s " % iid2, 6)
                sim.wait_line(r"^approved %s$" % iid2)
                r = bg.result()
                eq(r.status, 200, "re-plugged device approved (%r)" % r)
                eq(r.json()["path"], "/replug", "echo path")
            finally:
                sim.stop()
            eq(len(o.requests), 2, "requests at origin")
            eq(d.stop(), 0, "daemon exit status")


@test
def approve_any_takes_cli_or_device():
    with h.Origin() as o:
        link = link_path()
        with h.Daemon(config(o, [device_rule(o, "either", approve="any")],
                             device_link=link)) as d:
            sim = Sim(link)  # interactive: keys on its stdin
            try:
                sim.wait_line(r"^hello SIM1$")
                bg = BgCurl(d, url(o, "/by-cli"), data=b"a")
                iid = sim.wait_line(r"^shown %s " % ID_RE).split()[1]
                eq(pending(d)[iid][3], "any", "pending mode")
                rc, out = cli(d, "approve", iid)
                eq(rc, 0, "CLI approve of an approve: any item (%s)" % out)
                eq(bg.result().status, 200, "status after the CLI approved")
                sim.wait_line(r"^cleared %s$" % iid)
                check(str(audit_for(d, iid).get("approver")).startswith("cli:"), "approver")
                bg = BgCurl(d, url(o, "/by-device"), data=b"b")
                iid2 = sim.wait_line(r"^shown (?!%s)%s " % (iid, ID_RE)).split()[1]
                press(sim, b"a")
                sim.wait_line(r"^approved %s$" % iid2)
                r = bg.result()
                eq(r.status, 200, "status after the device approved (%r)" % r)
                eq(r.json()["path"], "/by-device", "echo path")
                eq(audit_for(d, iid2).get("approver"), "device:SIM1", "approver")
            finally:
                sim.stop()
            eq(len(o.requests), 2, "requests at origin")
            eq(d.stop(), 0, "daemon exit status")


if __name__ == "__main__":
    h.run()
