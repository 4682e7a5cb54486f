#!/usr/bin/env python3
"""TLS interception without waiting on the loop (SPEC 10, token worker; section 5):

- a leaf-cache miss parks the intercepted stream while the token worker unseals the CA
  key: with swtpm stopped (SIGSTOP) a plain request through the same daemon is answered at
  once while the interception waits; the intercepted handshake then fails with a TLS
  alert by the unseal deadline (limits.unseal_timeout, set short by a reload for that test;
  audited vault-unavailable), further misses fail at once
  while the token is stuck, and after SIGCONT a miss is minted and served;
- clients that hang up while parked are freed at once (no leak, nothing left behind);
- a small response inside an intercepted stream is one TLS record (the write coalescing
  in intercept.c), a generated one and a forwarded one.
"""

import contextlib
import copy
import os
import socket
import ssl
import struct
import threading
import time

import harness as h
from harness import check, eq, test
import fault_util as fu
from fault_dev_util import Backend
from fault_dev_util import vault_cli as cli

PKI = h.TLS_DIR
API = "api.example.test"
HOSTS = ("stall.example.test", "gone.example.test")  # one fresh leaf each
DEADLINE_S = 5.0  # the default limits.unseal_timeout
# a_stalled_token_parks_only_the_mint waits the deadline out, so it reloads a short one
# (stretched under valgrind like every other wait) and puts the default back after.
STALL_MS = int(h.scaled(1.5) * 1000)
STALL_S = STALL_MS / 1000.0
S = {}


def config(o, plain, b):
    rules = []
    for host in (API,) + HOSTS:
        # A per-request condition, so CONNECT streams are intercepted; /admin* is a
        # generated 403 that needs no upstream (the other hosts have no valid origin cert).
        rules.append(h.rule("nope-" + host, host=host, ports=[o.port], path="/admin*",
                            action="deny"))
        rules.append(h.rule("get-" + host, host=host, ports=[o.port], methods=["GET"]))
    rules.append(h.rule("plain", host="plain.example.test", ports=[plain.port]))
    cfg = h.base_config(rules, vault=b.vault, tls={"upstream_ca": os.path.join(PKI, "ca.pem")})
    for host in HOSTS + ("plain.example.test",):
        cfg["resolve"][host] = "127.0.0.1"
    return cfg


def reload_unseal_timeout(d, ms):
    """Reloads the daemon's config (same ports) with limits.unseal_timeout ms, or none."""
    cfg = copy.deepcopy(d.config)
    cfg.pop("limits", None)
    if ms is not None:
        cfg["limits"] = {"unseal_timeout": "%dms" % ms}
    elif "limits" in h.base_config([]):
        cfg["limits"] = h.base_config([])["limits"]  # the harness's (longer under valgrind)
    d.write_config(cfg)
    ok, new = d.reload()
    check(ok, "reload with unseal_timeout %s ms" % ms, new)


def connect(d, host, port, timeout=30.0):
    """A raw socket through which CONNECT host:port was answered 200."""
    raw = socket.create_connection(("127.0.0.1", d.http_port), timeout=timeout)
    raw.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\nProxy-Authorization: %s\r\n\r\n"
                 % (host, port, host, port, h.basic_auth())).encode())
    status, _, _, _ = h.read_http_response(raw, timeout)
    eq(status, 200, "CONNECT %s" % host)
    raw.settimeout(timeout)
    return raw


class RawTls:
    """TLS over a raw socket through memory BIOs, so the records the daemon sends can be
    counted. Trusts only airlock's CA."""

    def __init__(self, raw, host):
        self.raw = raw
        ctx = ssl.create_default_context(cafile=S["ca"])
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=host)
        self.pending = b""  # raw bytes not yet framed into whole records

    def _send_out(self):
        data = self.out.read()
        if data:
            self.raw.sendall(data)

    def start(self):
        """Sends the ClientHello and returns without waiting for the answer."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        self._send_out()

    def _feed(self):
        data = self.raw.recv(65536)
        if not data:
            raise ConnectionError("the daemon closed the connection")
        self.inc.write(data)
        self.pending += data
        n = 0
        while len(self.pending) >= 5:
            length = struct.unpack("!H", self.pending[3:5])[0]
            if len(self.pending) < 5 + length:
                break
            self.pending = self.pending[5 + length:]
            n += 1
        return n

    def handshake(self):
        self.start()
        for _ in range(100):  # bounded: a handshake is a few flights
            try:
                self.obj.do_handshake()
                self._send_out()
                return
            except ssl.SSLWantReadError:
                self._send_out()
                self._feed()
        raise AssertionError("handshake did not finish")

    def request(self, path, host):
        """GET path; returns (status, records the response came in)."""
        self.pending = b""
        self.obj.write(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
        self._send_out()
        buf, records = b"", 0
        for _ in range(1000):  # bounded
            records += self._feed()
            try:
                while True:
                    buf += self.obj.read(65536)
            except ssl.SSLWantReadError:
                pass
            if b"\r\n\r\n" in buf:
                head, body = buf.split(b"\r\n\r\n", 1)
                status = int(head.split(b" ", 2)[1])
                clen = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        clen = int(v.strip())
                if len(body) >= clen and not self.pending:
                    return status, records
        raise AssertionError("no complete response")


def handshake_outcome(d, host, port):
    """Intercepts host:port and tries the handshake: ("ok", secs, tls) or (error text, secs)."""
    raw = connect(d, host, port)
    t0 = time.monotonic()
    t = RawTls(raw, host)
    try:
        t.handshake()
        return ("ok", time.monotonic() - t0, t)
    except (ssl.SSLError, OSError) as e:
        raw.close()
        return (str(e), time.monotonic() - t0, None)


@test
def small_responses_are_one_tls_record_each():
    d, o = S["d"], S["o"]
    raw = connect(d, API, o.port)
    try:
        t = RawTls(raw, API)
        t.handshake()
        # A generated answer (status line and headers written one by one) and a forwarded
        # one (head rebuilt line by line), twice on the same kept-alive stream.
        for _ in range(2):
            eq(t.request("/admin/x", API), (403, 1), "generated 403: (status, records)")
            eq(t.request("/status/204", API), (204, 1), "forwarded 204: (status, records)")
    finally:
        raw.close()


@test
def a_stalled_token_parks_only_the_mint():
    d, o, plain, b = S["d"], S["o"], S["plain"], S["b"]
    host = HOSTS[0]
    n0 = len(d.audit_records())
    reload_unseal_timeout(d, STALL_MS)
    b.pause()
    try:
        res = {}

        def stuck():
            res["v"] = handshake_outcome(d, host, o.port)

        th = threading.Thread(target=stuck, daemon=True)
        th.start()
        time.sleep(h.scaled(0.3))  # the stream is parked on the worker by now
        t0 = time.monotonic()
        r = h.curl("http://plain.example.test:%d/plain" % plain.port, proxy=d.proxy_url())
        secs = time.monotonic() - t0
        eq(r.status, 200, "plain request while the leaf waits for the token")
        check(secs < h.scaled(1.0), "plain request took %.2f s while a mint waits" % secs)
        check("v" not in res, "the intercepted handshake ended before the deadline",
              res.get("v"))
        th.join(STALL_S + h.scaled(10))
        check("v" in res, "no end to the intercepted handshake")
        what, secs, _ = res["v"]
        check("internal error" in what.lower(), "the handshake must fail with an alert", what)
        # At the reloaded deadline: not before it, and well before the 5 s default.
        check(STALL_S - 0.5 < secs + 0.3 < STALL_S + h.scaled(2),
              "failed after %.2f s, not by the %.1f s deadline" % (secs, STALL_S))
        check("did not answer within %d ms" % STALL_MS in d.log_text(),
              "deadline of %d ms not logged" % STALL_MS)
        print("  plain request answered while the mint waited; handshake failed after %.2f s"
              % secs, flush=True)
        # The token is known stuck: the next miss fails at once, fail closed.
        what, secs, _ = handshake_outcome(d, host, o.port)
        check("internal error" in what.lower(), "second miss while stuck", what)
        check(secs < h.scaled(1.0), "fail-fast took %.2f s" % secs)
        recs = h.audit_since(d, n0, lambda r: r.get("host") == host, count=2)
        eq([r["decision"] for r in recs], ["vault-unavailable"] * 2, "audit of the failed mints")
    finally:
        b.resume()
    ok = None
    for i in range(100):  # bounded: about 20 s while the worker comes back
        what, _, t = handshake_outcome(d, host, o.port)
        if what == "ok":
            eq(t.request("/admin/after", host)[0], 403, "request on the minted stream")
            t.raw.close()
            ok = i
            break
        time.sleep(0.2)
    check(ok is not None, "no leaf minted after SIGCONT")
    reload_unseal_timeout(d, None)  # the default deadline again, for the other tests
    check(d.alive(), "daemon still running")


@test
def clients_that_hang_up_while_parked_are_freed():
    d, o, b = S["d"], S["o"], S["b"]
    host = HOSTS[1]
    eq(fu.active(d), 0, "connections before")
    b.pause()
    try:
        raws = []
        for _ in range(3):  # three misses share one unseal of the CA key
            raw = connect(d, host, o.port)
            RawTls(raw, host).start()
            raws.append(raw)
        time.sleep(h.scaled(0.3))
        eq(fu.active(d), 3, "parked connections")
        for raw in raws:
            raw.close()
        t0 = time.monotonic()
        while fu.active(d) > 0 and time.monotonic() - t0 < DEADLINE_S - 1:
            time.sleep(0.1)
        secs = time.monotonic() - t0
        eq(fu.active(d), 0, "connections after the clients hung up")
        check(secs < DEADLINE_S - 1, "freed only after %.2f s (the unseal deadline?)" % secs)
    finally:
        b.resume()
    for i in range(100):  # bounded: the cancelled unseal's answer is dropped unseen
        what, _, t = handshake_outcome(d, host, o.port)
        if what == "ok":
            eq(t.request("/admin/x", host)[0], 403, "request after the hang-ups")
            t.raw.close()
            break
        time.sleep(0.2)
    else:
        check(False, "no leaf minted after SIGCONT")
    check(d.alive(), "daemon still running")


@contextlib.contextmanager
def fixture():
    tls = (os.path.join(PKI, "server.pem"), os.path.join(PKI, "server.key"))
    with Backend("tpm2") as b, h.Origin(tls=tls) as o, h.Origin() as plain:
        d = h.Daemon(config(o, plain, b), start=False)
        rc, out = cli(d, "init")
        eq(rc, 0, "airlock init: %s" % out)
        S["ca"] = os.path.join(d.tmpdir, "state", "ca.pem")
        check(os.path.exists(S["ca"]), "airlock init made no state/ca.pem")
        d.start()
        with d:
            S.update(d=d, o=o, plain=plain, b=b)
            yield d
            eq(d.stop(), 0, "airlockd exit status")


if __name__ == "__main__":
    h.run(fixture)
