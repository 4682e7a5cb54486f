#!/usr/bin/env python3
"""The buddy device's pair key is unavailable when airlockd starts (SPEC sections 7 and 10):
with `auth: hmac` the daemon needs the key `_buddy` from the token before it may talk to
the device. While the SoftHSM token is away the device is not used: a held
`approve: device` request waits, a press on the device decides nothing, the CLI may
decide only what its rule allows, and nothing reaches the origin. The daemon tries the
key again (1 s doubling to 30 s) with one log line per state change, not per attempt;
once the token is back the link comes up, the device shows the waiting item and a press
releases it. A reload tries at once. The key is unsealed on the token worker: a token that
hangs (swtpm stopped) while the device pairs leaves the loop serving requests.
"""

import copy
import os
import re
import time

import harness as h
from harness import check, eq, test
from approval_util import (BgCurl, ID_RE, Sim, audit_for, cli, cli_rule, config,
                           device_line, pending, status_json, still_waiting, url,
                           wait_device_state, wait_new_item)
from fault_dev_util import Backend, FakeDevice, pair_sim, vault_cli

OFF_RE = r"buddy device: off, pair key unavailable: "
ON_RE = r"buddy device: pair key unsealed \(attempt \d+\); device on"


def wait_log(d, pattern, timeout=8.0, since=0):
    rx = re.compile(pattern)
    deadline = time.monotonic() + h.scaled(timeout)
    while time.monotonic() < deadline:
        m = rx.search(d.log_text()[since:])
        if m:
            return m
        time.sleep(0.05)
    raise AssertionError("no log line /%s/; log tail:\n%s" % (pattern, d.log_text()[-1500:]))


def press(sim, key=b"a"):
    sim.p.stdin.write(key)
    sim.p.stdin.flush()


class Token:
    """A private SoftHSM token whose directory can be taken away and put back (the
    daemon then finds no token at all, as with an unplugged one)."""

    def __init__(self):
        self.b = Backend("pkcs11")
        self.dir = os.path.join(self.b.dir, "tokens")
        self.away = self.dir + ".away"

    def remove(self):
        os.rename(self.dir, self.away)

    def restore(self):
        os.rename(self.away, self.dir)


def setup(o, tok, rules):
    """A stopped daemon with auth hmac, its vault initialised and the simulator paired:
    (daemon, device link path, key file, config)."""
    link = os.path.join(h.make_tmpdir("airlock-buddy-"), "buddy")
    cfg = config(o, rules)
    cfg["approvals"]["device"] = {"path": link, "auth": "hmac"}
    cfg["vault"] = tok.b.vault
    d = h.Daemon(cfg, start=False)
    eq(vault_cli(d, "init")[0], 0, "airlock init")
    return d, link, pair_sim(d, link), cfg


def no_hello(sim):
    check(not any(ln.startswith(("hello", "shown")) for ln in sim.text()),
          "the daemon talked to the device without the pair key", sim.text())


@test
def token_away_at_start_then_back():
    tok = Token()
    with h.Origin() as o:
        rules = [cli_rule(o, "anyrule", approve="any", path="/any*"),
                 h.rule("dev", ports=[o.port], action="allow", approve="device")]
        d, link, keyfile, _ = setup(o, tok, rules)
        tok.remove()
        with d:
            d.start()
            off = wait_log(d, OFF_RE + r"(.*) \(retrying")
            t_off = time.monotonic()
            # status says why the device is off: the same reason as the log line.
            dev = wait_device_state(d, "waiting_for_key")
            eq(dev.get("reason"), off.group(1), "waiting reason in status")
            check(dev.get("attempts", 0) >= 1, "attempts in status", dev)
            eq(dev.get("path"), link, "device path in status")
            line = device_line(d)
            check(re.match(r"device: waiting for the pair key \(\d+ attempts\): ", line) and
                  line.endswith(off.group(1)), "airlock status device line while waiting", line)
            sim = Sim(link, "--auth", "hmac", "--key-file", keyfile)
            try:
                bg = BgCurl(d, url(o, "/deploy"), data=b"d=1")
                iid, item = wait_new_item(d, set())
                eq(item[3], "device", "mode of the held item")
                # The device decides nothing: it was never told about the item.
                press(sim)
                still_waiting(bg, o, 0, 1.0)
                no_hello(sim)
                # Fail closed: the CLI may not decide an approve: device item either...
                rc, out = cli(d, "approve", iid)
                check(rc != 0 and "requires device approval" in out,
                      "CLI approve of a device item refused", rc, out)
                check(iid in pending(d), "device item left the queue", pending(d))
                # ... but decides an approve: any item, as always.
                bg_any = BgCurl(d, url(o, "/any1"), data=b"a=1")
                aid, _ = wait_new_item(d, {iid})
                eq(cli(d, "approve", aid)[0], 0, "CLI approve of an any item")
                eq(bg_any.result().status, 200, "any item released from the CLI")
                eq([q["path"] for q in o.requests], ["/any1"], "requests at the origin")
                # Attempts at about 0, 1, 3 and 7 s: wait past the third, then count lines.
                time.sleep(max(0.0, 3.5 - (time.monotonic() - t_off)))
                log = d.log_text()
                eq(len(re.findall(OFF_RE, log)), 1, "'key unavailable' lines after 3 attempts")
                noise = [ln for ln in log.splitlines() if not re.search(OFF_RE, ln) and
                         re.search(r"(?i)pkcs11|softhsm|p11-kit|token|vault|_buddy", ln)]
                eq(noise, [], "token lines besides the one 'key unavailable' line")
                no_hello(sim)
                still_waiting(bg, o, 1, 0.2)
                # The token is back: the next attempt (at most 30 s away; here about 7 s
                # after start) brings the link up and the device shows the waiting item.
                tok.restore()
                t_back = time.monotonic()
                sim.wait_line(r"^hello SIM1$", 40)
                shown = sim.wait_line(r"^shown %s POST " % iid, 5)
                check("/deploy" in shown, "shown text names the request", shown)
                print("  device up %.1fs after the token came back" %
                      (time.monotonic() - t_back), flush=True)
                wait_log(d, ON_RE)
                eq(wait_device_state(d, "connected").get("devid"), "SIM1", "device id in status")
                eq(device_line(d), "device: connected, device SIM1 on %s" % link,
                   "airlock status device line once connected")
                eq([q["path"] for q in o.requests], ["/any1"], "origin before the press")
                check(not bg.done(), "held request finished before the press")
                press(sim)
                sim.wait_line(r"^approved %s$" % iid)
                r = bg.result()
                eq(r.status, 200, "released by the press (%r)" % r)
                eq([q["path"] for q in o.requests], ["/any1", "/deploy"], "requests at origin")
                eq(audit_for(d, iid).get("approver"), "device:SIM1", "audit approver")
                eq(len(re.findall(OFF_RE, d.log_text())), 1, "'key unavailable' lines")
                eq(pending(d), {}, "queue at the end")
            finally:
                sim.stop()
            eq(d.stop(), 0, "daemon exit status")


@test
def reload_tries_the_key_at_once():
    """Still off after a reload: one more line saying so, then silence while the attempts
    go on failing. The token comes back while the next attempt is 15 s away; a reload
    brings the device up at once and it shows the item that waited."""
    tok = Token()
    with h.Origin() as o:
        d, link, keyfile, _ = setup(o, tok, [h.rule("dev", ports=[o.port], action="allow",
                                                    approve="device")])
        tok.remove()
        with d:
            d.start()
            wait_log(d, OFF_RE)
            sim = Sim(link, "--auth", "hmac", "--key-file", keyfile)
            try:
                bg = BgCurl(d, url(o, "/late"), data=b"l=1")
                iid, _ = wait_new_item(d, set())
                t_reload = time.monotonic()  # the daemon's reload is no earlier
                ok, new = d.reload()
                check(ok, "reload", new)
                wait_log(d, OFF_RE, since=len(d.log_text()) - len(new))
                # The backoff restarted at 1 s: attempts at +1, +3, +7 and +15 s, the next
                # one at +31 s. Each failed the same way: no more lines.
                time.sleep(16.0 - (time.monotonic() - t_reload))
                eq(len(re.findall(OFF_RE, d.log_text())), 2, "'key unavailable' lines")
                no_hello(sim)
                still_waiting(bg, o, 0, 0.1)
                tok.restore()
                before = len(d.log_text())
                ok, new = d.reload()
                check(ok, "reload", new)
                wait_log(d, ON_RE, 2.0, since=before)
                elapsed = time.monotonic() - t_reload
                check(elapsed < 26.0, "device up only %.1fs after the first reload (the "
                      "timer at +31 s, not the reload)" % elapsed)
                sim.wait_line(r"^shown %s POST " % iid, 5)
                eq(len(o.requests), 0, "requests at the origin before the press")
                press(sim)
                eq(bg.result().status, 200, "released by the press")
                eq([q["path"] for q in o.requests], ["/late"], "requests at the origin")
            finally:
                sim.stop()
            eq(d.stop(), 0, "daemon exit status")


def wait_count(sim, pattern, n, timeout=8.0):
    """Waits until the simulator printed n lines matching pattern."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + h.scaled(timeout)
    while time.monotonic() < deadline:
        if sum(1 for ln in sim.text() if rx.search(ln)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError("simulator printed /%s/ fewer than %d times: %r" % (pattern, n,
                                                                         sim.text()))


@test
def reload_to_hmac_while_the_token_is_away():
    """A reload that switches the device from auth none to auth hmac restarts the device
    side: the link closes, and without the key it stays off, so a press on the item the
    device still displays decides nothing. The token comes back: the link comes up under
    the key, shows the item again, and a press releases it."""
    tok = Token()
    with h.Origin() as o:
        d, link, keyfile, cfg_hmac = setup(o, tok, [h.rule("dev", ports=[o.port],
                                                           action="allow", approve="device")])
        cfg_none = copy.deepcopy(cfg_hmac)
        cfg_none["approvals"]["device"]["auth"] = "none"
        d.write_config(cfg_none)
        with d:
            d.start()
            sim = Sim(link, "--auth", "hmac", "--key-file", keyfile)
            try:
                wait_count(sim, r"^hello SIM1$", 1)
                wait_log(d, r"device SIM1 connected \(auth none\)")
                bg = BgCurl(d, url(o, "/switch"), data=b"s=1")
                iid = sim.wait_line(r"^shown %s POST " % ID_RE).split()[1]
                tok.remove()
                before = len(d.log_text())
                d.write_config(cfg_hmac)
                ok, new = d.reload()
                check(ok, "reload", new)
                wait_log(d, r"settings changed by the reload", since=before)
                wait_log(d, OFF_RE, since=before)
                # The press reaches a device that may still display the item, or may have
                # cleared it if the closing link's CLEAR got out first: either way the
                # daemon is not there to hear it.
                press(sim)
                time.sleep(h.scaled(0.3))
                pressed = sum(1 for ln in sim.text() if ln == "approved %s" % iid)
                still_waiting(bg, o, 0, 1.5)
                check(iid in pending(d), "item left the queue", pending(d))
                tok.restore()
                wait_count(sim, r"^hello SIM1$", 2, 20)
                wait_count(sim, r"^shown %s " % iid, 2, 5)
                wait_log(d, r"device SIM1 connected \(auth hmac\)", since=before)
                eq(len(o.requests), 0, "requests at the origin before the second press")
                press(sim)
                wait_count(sim, r"^approved %s$" % iid, pressed + 1)
                eq(bg.result().status, 200, "released by the press under the key")
                eq([q["path"] for q in o.requests], ["/switch"], "requests at the origin")
                eq(audit_for(d, iid).get("approver"), "device:SIM1", "audit approver")
            finally:
                sim.stop()
            eq(d.stop(), 0, "daemon exit status")


@test
def device_with_another_key_is_logged_once():
    """A device paired with another key answers every HELLO (one each 3 s) with a wrong
    mac: one warning, not one per HELLO; once it answers under the right key it is
    connected and the next such device gets its warning again."""
    tok = Token()
    with h.Origin() as o:
        d, link, keyfile, _ = setup(o, tok, [h.rule("dev", ports=[o.port], action="allow",
                                                    approve="device")])
        with open(keyfile) as f:
            key = bytes.fromhex(f.read().strip())
        with d:
            d.start()
            wait_log(d, r"buddy device: watching ")
            dev = FakeDevice(link, key=os.urandom(32))
            try:
                for _ in range(3):
                    dev.handshake()
                wait_log(d, r"HELLO from FAKE1 with a wrong mac ignored")
                st = wait_device_state(d, "connecting")
                check("wrong mac" in st.get("reason", ""), "wrong mac in status", st)
                eq(device_line(d), "device: connecting on %s: %s" % (link, st["reason"]),
                   "airlock status device line with the wrong key")
                time.sleep(0.5)
                eq(len(re.findall(r"wrong mac ignored", d.log_text())), 1,
                   "warnings for three wrong HELLO replies")
                dev.key = key
                dev.handshake()
                wait_log(d, r"device FAKE1 connected \(auth hmac\)")
                eq(wait_device_state(d, "connected").get("devid"), "FAKE1",
                   "device id in status")
            finally:
                dev.unplug()
            wait_log(d, r"end of file; device closed, polling for it")
            dev = FakeDevice(link, key=os.urandom(32))
            try:
                dev.handshake()
                deadline = time.monotonic() + h.scaled(8)
                while (len(re.findall(r"wrong mac ignored", d.log_text())) < 2 and
                       time.monotonic() < deadline):
                    time.sleep(0.05)
                eq(len(re.findall(r"wrong mac ignored", d.log_text())), 2,
                   "warnings after a new device with another key")
            finally:
                dev.unplug()
            eq(d.stop(), 0, "daemon exit status")



def timed(fn, *args, **kw):
    t0 = time.monotonic()
    r = fn(*args, **kw)
    return r, time.monotonic() - t0


@test
def a_stalled_token_does_not_block_the_loop():
    """swtpm stopped (SIGSTOP) when airlockd starts with auth hmac: the pair key's unseal
    waits on the token worker, not on the loop, so the daemon comes up and `airlock status`
    and a plain request are answered at once, before and after the unseal deadline
    (limits.unseal_timeout, short here) logs the device off with its reason. After SIGCONT
    a later attempt gets the key and the link comes up."""
    stall_ms = int(h.scaled(1.5) * 1000)
    with Backend("tpm2") as b, h.Origin() as o:
        link = os.path.join(h.make_tmpdir("airlock-buddy-"), "buddy")
        cfg = config(o, [h.rule("plain", ports=[o.port])])
        cfg["approvals"]["device"] = {"path": link, "auth": "hmac"}
        cfg["vault"] = b.vault
        cfg["limits"] = {"unseal_timeout": "%dms" % stall_ms}
        d = h.Daemon(cfg, start=False)
        eq(vault_cli(d, "init")[0], 0, "airlock init")
        keyfile = pair_sim(d, link)
        sim = Sim(link, "--auth", "hmac", "--key-file", keyfile)
        b.pause()
        try:
            with d:
                d.start()  # an unseal on the loop would hang start-up right here
                dev, secs = timed(status_json, d)
                eq((dev["device"].get("state"), dev["device"].get("reason")),
                   ("waiting_for_key", "unsealing the pair key"), "device while the key waits")
                check(secs < h.scaled(1.0), "status took %.2f s while the token hangs" % secs)
                r, secs = timed(h.curl, url(o, "/plain1"), proxy=d.proxy_url())
                eq(r.status, 200, "plain request while the token hangs")
                check(secs < h.scaled(1.0), "plain request took %.2f s while the token hangs"
                      % secs)
                wait_log(d, OFF_RE + "the token did not answer within %d ms" % stall_ms)
                dev = wait_device_state(d, "waiting_for_key")
                check("did not answer" in dev.get("reason", ""), "reason in status", dev)
                r, secs = timed(h.curl, url(o, "/plain2"), proxy=d.proxy_url())
                eq(r.status, 200, "plain request after the deadline")
                check(secs < h.scaled(1.0), "plain request took %.2f s after the deadline"
                      % secs)
                no_hello(sim)
                b.resume()
                # The next attempt is 1 s after the deadline (2 s more if the token was
                # still known stuck then).
                sim.wait_line(r"^hello SIM1$", 20)
                wait_log(d, ON_RE)
                eq(wait_device_state(d, "connected").get("devid"), "SIM1", "device in status")
                eq([q["path"] for q in o.requests], ["/plain1", "/plain2"], "requests at origin")
                eq(d.stop(), 0, "daemon exit status")
        finally:
            b.resume()
            sim.stop()


if __name__ == "__main__":
    h.isolate_network()
    h.run()
