#!/usr/bin/env python3
"""The buddy device goes away in the middle of a press (issue 7, SPEC sections 6, 7 and
10). A held request is forwarded only after a decision line that the daemon received
whole and verified; a press that had not fully reached the daemon when the device went
away does not count. The item stays pending (its deadline keeps running), is shown again
with a fresh nonce when a device is back (hot-plug), can be decided from the CLI meanwhile
when its rule allows it, and otherwise ends at its deadline with approval-timeout. The
origin records every request it receives, so "not forwarded" is checked where it counts.
"""

import os
import re
import time

import harness as h
from harness import check, eq, test
from approval_util import (BgCurl, ID_RE, Sim, audit_for, cli, config, pending,
                           still_waiting, url)
from fault_dev_util import Backend, FakeDevice, kill_now, pair_sim, vault_cli


def device_rule(origin, approve="device"):
    return h.rule("dev", ports=[origin.port], action="allow", approve=approve)


def link_path():
    return os.path.join(h.make_tmpdir("airlock-buddy-"), "buddy")


def wait_log(d, pattern, timeout=8.0):
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = rx.search(d.log_text())
        if m:
            return m
        time.sleep(0.05)
    raise AssertionError("no log line /%s/; log tail:\n%s" % (pattern, d.log_text()[-1500:]))


def unplugged(d, bg, o, iid, seen=0):
    """The link is down and the item waits: still pending, nothing more at the origin."""
    wait_log(d, r"buddy: \S+: .*device closed, polling for it")
    still_waiting(bg, o, seen, 1.0)
    check(iid in pending(d), "item left the queue when the device went away", pending(d))
    check(d.alive(), "daemon died on unplug")


@test
def press_then_unplug_before_the_line_is_out():
    """A short press sends APPROVE on release (100 ms); the sim dies at once, so the line
    never leaves it. Should a loaded machine delay the kill past the release, the daemon
    may have received a whole, valid APPROVE: then, and only then, the request is
    forwarded, and the audit names the device."""
    with h.Origin() as o:
        link = link_path()
        with h.Daemon(config(o, [device_rule(o)], device_link=link)) as d:
            sim = Sim(link)
            sim.wait_line(r"^hello SIM1$")
            bg = BgCurl(d, url(o, "/press"), data=b"p=1")
            iid = sim.wait_line(r"^shown %s POST " % ID_RE).split()[1]
            sim.p.stdin.write(b"a")
            sim.p.stdin.flush()
            kill_now(sim.p)
            sim.stop()
            time.sleep(0.5)
            if re.search(r"buddy: device SIM1 approved %s" % iid, d.log_text()):
                print("  the APPROVE line got out before the kill: forwarded", flush=True)
                eq(bg.result().status, 200, "a whole APPROVE was received")
                eq(audit_for(d, iid).get("approver"), "device:SIM1", "approver")
                eq(len(o.requests), 1, "requests at the origin")
                return
            unplugged(d, bg, o, iid)
            # The device comes back: HELLO, the same item again, a press that gets through.
            sim = Sim(link, "--auto", "approve", "--delay", "300")
            try:
                sim.wait_line(r"^hello SIM1$", 6)
                sim.wait_line(r"^shown %s " % iid, 6)
                sim.wait_line(r"^approved %s$" % iid)
                r = bg.result()
                eq(r.status, 200, "approved after the device came back (%r)" % r)
                eq(r.json()["path"], "/press", "echo path")
            finally:
                sim.stop()
            eq(len(o.requests), 1, "requests at the origin")
            rec = audit_for(d, iid)
            eq((rec.get("decision"), rec.get("approver")), ("allow", "device:SIM1"), "audit")
            eq(d.stop(), 0, "daemon exit status")


@test
def half_a_line_then_unplug_then_cli_decides():
    """The device is pulled while its APPROVE line is on the wire: all of it but the
    newline (with auth none, "-" is the whole mac, so the line would be valid if the daemon
    took end-of-file for end-of-line). The half line is discarded, never acted on nor
    joined with the next device's bytes; the item is
    shown again with a fresh nonce on replug, and with `approve: any` the CLI decides it
    while the device is away. A device plugged in afterwards is not shown it."""
    with h.Origin() as o:
        link = link_path()
        with h.Daemon(config(o, [device_rule(o, approve="any")], device_link=link)) as d:
            dev = FakeDevice(link)
            try:
                dev.handshake()
                bg = BgCurl(d, url(o, "/half"), data=b"h=1")
                iid, nonce1, text = dev.wait_show()
                check("/half" in text, "SHOW names the request", text)
                dev.send(("APPROVE %s -" % iid).encode())
                time.sleep(0.3)  # let the daemon read the fragment before the cable goes
            finally:
                dev.unplug()
            unplugged(d, bg, o, iid)
            dev = FakeDevice(link, devid="FAKE2")
            try:
                # The daemon starts with an empty line so no half line survives on the
                # device's side either; a handshake glued to the old half line would fail.
                dev.handshake()
                iid2, nonce2, _ = dev.wait_show()
                eq(iid2, iid, "item shown again after replug")
                check(nonce2 != nonce1, "fresh nonce after replug", nonce1, nonce2)
                wait_log(d, r"device FAKE2 connected")
                check(not re.search(r"device \S+ approved", d.log_text()),
                      "a half line approved something")
            finally:
                dev.unplug()
            unplugged(d, bg, o, iid)
            rc, out = cli(d, "approve", iid)
            eq(rc, 0, "CLI approve while the device is away (%s)" % out)
            r = bg.result()
            eq(r.status, 200, "approved from the CLI (%r)" % r)
            rec = audit_for(d, iid)
            check(str(rec.get("approver")).startswith("cli:"), "approver", rec)
            eq([q["path"] for q in o.requests], ["/half"], "requests at the origin")
            dev = FakeDevice(link, devid="FAKE3")
            try:
                dev.handshake()
                wait_log(d, r"device FAKE3 connected")
                try:
                    shown = dev.wait_show(1.5)
                except AssertionError:
                    shown = None
                eq(shown, None, "a decided item shown on the returning device")
            finally:
                dev.unplug()
            eq(pending(d), {}, "queue at the end")
            eq(d.stop(), 0, "daemon exit status")


def paired_key(d, link):
    """The key the paired device holds (the daemon has it sealed in the vault as _buddy)."""
    with open(pair_sim(d, link)) as f:
        return bytes.fromhex(f.read().strip())


@test
def hmac_press_from_before_the_unplug_is_refused_after_replug():
    """auth hmac: the device had computed APPROVE for the nonce on show when it was pulled
    and sends it once it is back. That nonce was retired on unplug; the item is on show
    under a fresh one, so the late line is a replay and is ignored. Only a press for the
    new nonce releases the request."""
    b = Backend("pkcs11")
    with h.Origin() as o:
        link = link_path()
        cfg = config(o, [device_rule(o)])
        cfg["approvals"]["device"] = {"path": link, "auth": "hmac"}
        cfg["vault"] = b.vault
        d = h.Daemon(cfg, start=False)
        with d:
            eq(vault_cli(d, "init")[0], 0, "init")
            key = paired_key(d, link)
            d.start()
            dev = FakeDevice(link, key=key)
            try:
                dev.handshake()
                wait_log(d, r"device FAKE1 connected \(auth hmac\)")
                bg = BgCurl(d, url(o, "/hmac"), data=b"m=1")
                iid, nonce1, _ = dev.wait_show()
                stale = dev.approve_line(iid, nonce1)  # pressed, but the cable went first
            finally:
                dev.unplug()
            unplugged(d, bg, o, iid)
            dev = FakeDevice(link, key=key)
            try:
                dev.handshake()
                iid2, nonce2, _ = dev.wait_show()
                eq(iid2, iid, "item shown again after replug")
                check(nonce2 != nonce1, "fresh nonce after replug")
                dev.send(stale)
                wait_log(d, r"APPROVE %s ignored: replayed" % iid)
                dev.send(("APPROVE %s %s\n" % (iid, "0" * 32)).encode())
                wait_log(d, r"APPROVE %s ignored: wrong mac" % iid)
                still_waiting(bg, o, 0, 1.0)
                dev.send(dev.approve_line(iid, nonce2))
                r = bg.result()
                eq(r.status, 200, "approved with the fresh nonce (%r)" % r)
            finally:
                dev.unplug()
            eq([q["path"] for q in o.requests], ["/hmac"], "requests at the origin")
            eq(audit_for(d, iid).get("approver"), "device:FAKE1", "approver")
            eq(d.stop(), 0, "daemon exit status")


@test
def unplugged_for_good_ends_at_the_deadline():
    """`approve: device` and the device never comes back: the item waits out its
    deadline and ends as approval-timeout; nothing reaches the origin."""
    with h.Origin() as o:
        link = link_path()
        secs = int(h.scaled(3))  # outlives the checks below, also under valgrind
        with h.Daemon(config(o, [device_rule(o)], device_link=link,
                             timeout="%ds" % secs)) as d:
            sim = Sim(link)
            sim.wait_line(r"^hello SIM1$")
            bg = BgCurl(d, url(o, "/gone"), data=b"g=1")
            iid = sim.wait_line(r"^shown %s " % ID_RE).split()[1]
            sim.p.stdin.write(b"a")
            sim.p.stdin.flush()
            kill_now(sim.p)
            sim.stop()
            if re.search(r"buddy: device SIM1 approved %s" % iid, d.log_text()):
                raise h.Skip("the APPROVE line got out before the kill (loaded machine)")
            unplugged(d, bg, o, iid)
            r = bg.result()
            eq(r.status, 403, "status at the deadline (%r)" % r)
            eq(r.headers.get("x-airlock-decision"), "approval-timeout", "decision")
            eq(audit_for(d, iid).get("decision"), "approval-timeout", "audit decision")
            eq(o.requests, [], "requests at the origin")
            eq(pending(d), {}, "queue after the deadline")
            eq(d.stop(), 0, "daemon exit status")


if __name__ == "__main__":
    h.run()
