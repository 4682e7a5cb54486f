#!/usr/bin/env python3
"""Held requests and human approval through the control socket (SPEC sections 6 and 10):
a request on an `approve: cli` rule waits until `airlock approve ID`, deny/timeout/body
limit/queue full answers, client disconnect cancels the item, approval sources are kept
apart (cli vs device), one approval releases exactly one request, SIGTERM denies what
is pending, and a control-socket client with another uid never sees the queue.
"""

import os
import random
import re
import signal
import socket
import subprocess
import threading
import time

import harness as h
from harness import check, eq, test
from approval_util import (BgCurl, ID_RE, PENDING_RE, SIM, Sim, audit_for, cli, cli_rule, config,
                           pending, still_waiting, url, wait_new_item, wait_pending)


# --- tests ------------------------------------------------------------------------------
@test
def cli_approval_releases_the_held_post():
    with h.Origin() as o:
        with h.Daemon(config(o, [cli_rule(o)])) as d:
            body = os.urandom(700)
            bg = BgCurl(d, url(o, "/submit"), data=body)
            still_waiting(bg, o, 0)
            items = wait_pending(d, 1)
            (iid, (method, hostpath, rname, mode)), = items.items()
            eq(method, "POST", "pending method")
            check(hostpath.endswith("/submit"), "pending path", hostpath)
            eq(rname, "held", "pending rule")
            eq(mode, "cli", "pending mode")
            rc, out = cli(d, "approve", iid)
            eq(rc, 0, "airlock approve exit status (%s)" % out)
            r = bg.result()
            eq(r.status, 200, "status after approval (%r)" % r)
            echo = r.json()
            eq(echo["path"], "/submit", "echo path")
            eq(len(o.requests), 1, "requests at origin")
            eq(o.requests[0]["body_len"], len(body), "body length at origin")
            eq(o.requests[0]["body_sha256"], h.sha256_hex(body), "body sha256 at origin")
            rec = audit_for(d, iid)
            eq(rec.get("decision"), "allow", "audit decision")
            check(str(rec.get("approver", "")).startswith("cli:"), "audit approver", rec)
            eq(rec.get("rule"), "held", "audit rule")
            eq(pending(d), {}, "queue after approval")
            eq(d.stop(), 0, "daemon exit status")


@test
def deny_and_body_limit():
    with h.Origin() as o:
        with h.Daemon(config(o, [cli_rule(o)], max_body="1KiB")) as d:
            bg = BgCurl(d, url(o, "/deny-me"), data=b"x" * 10)
            iid, _ = wait_new_item(d, set())
            rc, out = cli(d, "deny", iid)
            eq(rc, 0, "airlock deny exit status (%s)" % out)
            r = bg.result()
            eq(r.status, 403, "status after deny (%r)" % r)
            eq(r.headers.get("x-airlock-decision"), "approval-denied", "decision header")
            eq(audit_for(d, iid).get("decision"), "approval-denied", "audit decision")
            # Over max_body: refused before it is ever queued.
            r = BgCurl(d, url(o, "/big"), data=b"y" * 4096).result()
            eq(r.status, 413, "status for a body over max_body (%r)" % r)
            eq(r.headers.get("x-airlock-decision"), "approval-body-too-large", "decision")
            eq(pending(d), {}, "queue after 413")
            eq(len(o.requests), 0, "requests at origin")
            rc, out = cli(d, "approve", "ZZZZZZ")
            check(rc != 0, "approving an unknown id succeeded", out)
            eq(d.stop(), 0, "daemon exit status")


@test
def queue_full_and_timeout():
    with h.Origin() as o:
        # Long enough for `airlock pending` to see the item, also under valgrind.
        secs = int(h.scaled(2))
        with h.Daemon(config(o, [cli_rule(o)], timeout="%ds" % secs, max_pending=1)) as d:
            t0 = time.monotonic()
            first = BgCurl(d, url(o, "/first"), data=b"1")
            iid, _ = wait_new_item(d, set())
            r = BgCurl(d, url(o, "/second"), data=b"2", timeout=10).result()
            eq(r.status, 429, "second held request with max_pending 1 (%r)" % r)
            eq(r.headers.get("x-airlock-decision"), "approval-queue-full", "decision")
            r = first.result()
            waited = time.monotonic() - t0
            eq(r.status, 403, "status at the deadline (%r)" % r)
            eq(r.headers.get("x-airlock-decision"), "approval-timeout", "decision")
            check(secs - 0.5 <= waited <= secs + 6, "timeout of %ds took %.1fs" % (secs, waited))
            eq(audit_for(d, iid).get("decision"), "approval-timeout", "audit decision")
            eq(pending(d), {}, "queue after timeout")
            eq(len(o.requests), 0, "requests at origin")
            eq(d.stop(), 0, "daemon exit status")


@test
def client_disconnect_cancels_the_item():
    with h.Origin() as o:
        with h.Daemon(config(o, [cli_rule(o)])) as d:
            bg = BgCurl(d, url(o, "/gone"), data=b"bye")
            iid, _ = wait_new_item(d, set())
            bg.kill()
            wait_pending(d, 0, timeout=5)
            eq(audit_for(d, iid).get("decision"), "approval-cancelled", "audit decision")
            rc, out = cli(d, "approve", iid)
            check(rc != 0, "approving a cancelled item succeeded", out)
            eq(len(o.requests), 0, "requests at origin")
            eq(d.stop(), 0, "daemon exit status")


@test
def approval_sources_are_kept_apart():
    with h.Origin() as o:
        link = os.path.join(h.make_tmpdir(), "buddy")
        rules = [cli_rule(o, "dev-only", approve="device", path="/dev/*"),
                 cli_rule(o, "cli-only", approve="cli", path="/cli/*")]
        with h.Daemon(config(o, rules, device_link=link)) as d:
            # approve: device — the CLI may not decide it.
            bg = BgCurl(d, url(o, "/dev/x"), data=b"d")
            iid, item = wait_new_item(d, set())
            eq(item[3], "device", "mode")
            rc, out = cli(d, "approve", iid)
            check(rc != 0, "CLI approved an approve: device item", out)
            time.sleep(0.3)
            check(iid in pending(d), "device item left the queue after a CLI approve")
            check(not bg.done(), "device item was released by the CLI")
            eq(len(o.requests), 0, "requests at origin")
            # approve: cli — a device pressing approve on everything it sees never gets it.
            sim = Sim(link, "--auto", "approve", "--delay", "100")
            try:
                sim.wait_line(r"^hello SIM1$")
                sim.wait_line(r"^approved %s$" % iid)  # the device item is the device's
                r = bg.result()
                eq(r.status, 200, "device item approved by the device (%r)" % r)
                bg2 = BgCurl(d, url(o, "/cli/y"), data=b"c")
                iid2, _ = wait_new_item(d, set())
                time.sleep(1.5)
                check(iid2 in pending(d), "cli item left the queue with a device running")
                check(not bg2.done(), "cli item was released by the device")
                check(not any(iid2 in ln for ln in sim.text()),
                      "the device was shown a cli-only item", sim.text())
                rc, out = cli(d, "approve", iid2)
                eq(rc, 0, "CLI approve of the cli item (%s)" % out)
                eq(bg2.result().status, 200, "cli item after CLI approve")
                check(str(audit_for(d, iid2).get("approver")).startswith("cli:"), "approver")
            finally:
                sim.stop()
            eq(d.stop(), 0, "daemon exit status")


@test
def one_approval_releases_exactly_one_request():
    with h.Origin() as o:
        with h.Daemon(config(o, [cli_rule(o)])) as d:
            bgs = {}
            for i in range(5):
                bgs["/p%d" % i] = BgCurl(d, url(o, "/p%d" % i), data=b"body %d" % i)
            items = wait_pending(d, 5)
            by_path = {}
            for iid, (_, hostpath, _, _) in items.items():
                path = "/" + hostpath.split("/", 1)[1]
                by_path[path] = iid
            eq(sorted(by_path), sorted(bgs), "pending paths")
            order = list(by_path)
            random.shuffle(order)
            left = set(order)
            for path in order:
                rc, out = cli(d, "approve", by_path[path])
                eq(rc, 0, "approve %s (%s)" % (path, out))
                r = bgs[path].result()
                eq(r.status, 200, "status for %s (%r)" % (path, r))
                eq(r.json()["path"], path, "response for its own path")
                eq(r.json()["body_sha256"], h.sha256_hex(b"body %s" % path[2:].encode()),
                   "body for its own path")
                left.discard(path)
                time.sleep(0.2)
                for other in left:
                    check(not bgs[other].done(), "%s released by the approval of %s" % (
                        other, path))
                eq(len(pending(d)), len(left),
                   "pending after approving %s" % path)
            eq(len(o.requests), 5, "requests at origin")
            eq(d.stop(), 0, "daemon exit status")


@test
def sigterm_denies_pending_items():
    with h.Origin() as o:
        d = h.Daemon(config(o, [cli_rule(o)]))
        try:
            bg = BgCurl(d, url(o, "/late"), data=b"z")
            iid, _ = wait_new_item(d, set())
            rc = d.stop()
            r = bg.result(timeout=15)
            eq(r.status, 403, "held client at SIGTERM (%r)" % r)
            eq(r.headers.get("x-airlock-decision"), "approval-denied", "decision")
            eq(rc, 0, "daemon exit status")
            eq(len(o.requests), 0, "requests at origin")
            eq(audit_for(d, iid).get("decision"), "approval-denied", "audit decision")
        finally:
            if d.proc is not None:
                d._kill()


def _foreign_client(sock):
    """In a forked child running as uid/gid 65534: connect, send {"op":"list"}, report
    what came back (no exec, so nothing needs to be readable by that uid)."""
    try:
        os.setgid(65534)
        os.setgroups([])
        os.setuid(65534)
    except OSError as e:
        return "SETUID-FAILED %s" % e
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(sock)
    except OSError as e:
        return "CONNECT-REFUSED %s" % e.strerror
    data = b""
    try:
        s.sendall(b'{"op":"list"}\n')
    except OSError as e:
        data += b"SEND-ERROR %s " % e.strerror.encode()
    try:
        # A refusal sent before the close stays readable after a failed send.
        while len(data) < 65536 and b"\n" not in data:
            c = s.recv(4096)
            if not c:
                break
            data += c
    except OSError as e:
        data += b" RECV-ERROR " + str(e).encode()
    return "REPLY " + data.decode("utf-8", "replace").strip()


def _as_nobody(sock):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.write(w, _foreign_client(sock).encode()[:60000])
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return out.decode("utf-8", "replace")


@test
def control_socket_refuses_other_uids():
    if os.geteuid() != 0:
        raise h.Skip("needs root to run a client as uid 65534")
    with h.Origin() as o:
        with h.Daemon(config(o, [cli_rule(o)])) as d:
            bg = BgCurl(d, url(o, "/secret-pending"), data=b"q")
            iid, _ = wait_new_item(d, set())
            sock = os.path.join(d.tmpdir, "run", "control.sock")
            eq(os.stat(sock).st_mode & 0o777, 0o600, "control socket mode")
            os.chmod(d.tmpdir, 0o755)
            os.chmod(os.path.dirname(sock), 0o755)
            # The socket's 0600 mode stops it first...
            out = _as_nobody(sock)
            check("CONNECT-REFUSED" in out or "permission denied" in out,
                  "uid 65534 was not refused at mode 0600", out)
            check(iid not in out and "pending" not in out, "foreign uid saw the queue", out)
            # ...and SO_PEERCRED stops it even when the mode would let it in.
            os.chmod(sock, 0o666)
            out = _as_nobody(sock)
            check(out.startswith("REPLY") or out.startswith("CONNECT-REFUSED"),
                  "foreign client failed oddly", out)
            check(iid not in out and "pending" not in out, "foreign uid saw the queue", out)
            check("permission denied" in out, "no refusal for uid 65534", out)
            os.chmod(sock, 0o600)
            check(iid in pending(d), "root's own CLI lost the item")
            rc, _ = cli(d, "deny", iid)
            eq(rc, 0, "deny as root")
            eq(bg.result().status, 403, "denied status")
            eq(d.stop(), 0, "daemon exit status")


if __name__ == "__main__":
    h.run()
