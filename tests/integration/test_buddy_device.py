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
from approval_util import (BgCurl, ID_RE, PENDING_RE, SIM, Sim, audit_for, cli, cli_rule, config,
                           device_line, pending, still_waiting, url, wait_device_state,
                           wait_new_item, wait_pending)


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
                dev = wait_device_state(d, "connected")
                eq(dev.get("devid"), "SIM1", "device id in status")
                eq(dev.get("path"), link, "device path in status")
                eq(device_line(d), "device: connected, device SIM1 on %s" % link,
                   "airlock status device line")
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
            # No device at all: the item waits, and status says the port is absent.
            dev = wait_device_state(d, "absent")
            eq(dev.get("path"), link, "configured path in status")
            check(link in dev.get("reason", ""), "absent reason names the port", dev)
            line = device_line(d)
            check(line.startswith("device: port absent (%s), polling: " % link),
                  "airlock status device line while absent", line)
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
            wait_device_state(d, "absent")
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


@test
def client_gone_clears_the_device():
    """The client disconnects while its item is on the device: the item is cancelled,
    the device gets CLEAR, and the audit says approval-cancelled."""
    with h.Origin() as o:
        link = link_path()
        with h.Daemon(config(o, [device_rule(o)], device_link=link)) as d:
            sim = Sim(link)  # no --auto: nobody presses
            try:
                sim.wait_line(r"^hello SIM1$")
                bg = BgCurl(d, url(o, "/gone"), data=b"x=1")
                iid = sim.wait_line(r"^shown %s POST " % ID_RE).split()[1]
                bg.kill()
                sim.wait_line(r"^cleared %s$" % iid)
                eq(pending(d), {}, "queue after the client left")
                eq(audit_for(d, iid).get("decision"), "approval-cancelled", "audit decision")
                eq(len(o.requests), 0, "origin saw nothing")
            finally:
                sim.stop()
            eq(d.stop(), 0, "daemon exit status")


if __name__ == "__main__":
    h.run()
