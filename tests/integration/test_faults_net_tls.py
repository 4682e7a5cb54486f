#!/usr/bin/env python3
"""Network faults on intercepted TLS streams (issue 7): the same cuts, resets and stalls
as test_faults_net.py, with curl speaking HTTPS through the proxy and the proxy speaking
HTTPS to an origin signed by the test CA. A truncated response must never look complete
to the client, a stall before the head is 504 upstream-timeout, and a client that leaves
mid-download frees both sides.
"""

import contextlib
import os
import socket
import ssl
import subprocess
import time

import harness as h
from harness import check, eq, test
import fault_util as fu

PIN = "1234"
HOST = "api.example.test"
PKI = h.TLS_DIR
S = {}


@contextlib.contextmanager
def fixture():
    tls = (os.path.join(PKI, "server.pem"), os.path.join(PKI, "server.key"))
    # mute: plain TCP that never answers, so the proxy's TLS handshake to it never ends.
    with fu.FaultOrigin(tls=tls) as o, fu.FaultOrigin() as mute:
        tok = h.make_tmpdir("airlock-tok-")
        subprocess.run([os.path.join(h.SOURCE_DIR, "scripts", "softhsm-setup"), tok, "airlock",
                        PIN, "5678"], check=True, stdout=subprocess.DEVNULL, timeout=60)
        os.environ["SOFTHSM2_CONF"] = os.path.join(tok, "softhsm2.conf")
        os.environ["AIRLOCK_PIN"] = PIN
        # methods: a per-request condition, so CONNECT streams are intercepted.
        cfg = h.base_config([h.rule("api", ports=[o.port], methods=["GET", "POST"]),
                             h.rule("mute", ports=[mute.port], methods=["GET"])],
                            tls={"upstream_ca": os.path.join(PKI, "ca.pem")},
                            vault={"backend": "pkcs11", "pkcs11": {
                                "module": "/usr/lib/softhsm/libsofthsm2.so",
                                "token": "pkcs11:token=airlock", "pin": "env:AIRLOCK_PIN"}},
                            limits={"upstream_timeout": "1s", "idle_timeout": "5s",
                                    "connect_timeout": "1s"})
        d = h.Daemon(cfg, start=False)
        rc, out = h.run_airlock(["-c", d.config_path, "init"])
        eq(rc, 0, "airlock init: " + out)
        S["ca"] = os.path.join(d.tmpdir, "state", "ca.pem")
        S["origin"] = o
        S["mute"] = mute
        d.start()
        with d:
            eq(get(d, "/warm-up").status, 200, "intercepted request before the faults")
            yield d
            eq(d.stop(), 0, "airlockd exit status")


def url(path, origin=None):
    return "https://%s:%d%s" % (HOST, (origin or S["origin"]).port, path)


def get(d, path, timeout=10, origin=None):
    return h.curl(url(path, origin), proxy=d.proxy_url(), args=["--cacert", S["ca"]],
                  timeout=h.scaled(timeout))



def after_fault(d, fds):
    fu.wait_settled(d, 0, fds)
    r = get(d, "/after")
    eq((r.status, r.body), (200, b"ok /after 0\n"), "normal request after the fault")
    fu.wait_settled(d, 0, fds)


def audit(d, path, n0):
    return fu.audit_by_path(d, path, n0)


@test
def intercepted_upstream_reset_mid_body(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    t0 = time.monotonic()
    r = get(d, "/reset/100000/10000")
    check(time.monotonic() - t0 < h.scaled(5), "the cut response took too long to end")
    check(r.rc in (18, 56), "curl must report a partial transfer (%r)" % r)
    eq((r.status, len(r.body)), (200, 10000), "status and bytes before the reset")
    rec = audit(d, "/reset/100000/10000", n0)
    eq((rec["decision"], rec["status"], rec["bytes_down"]), ("allow", 200, 10000), "audit")
    after_fault(d, fds)


@test
def intercepted_upstream_close_mid_chunked_body(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    r = get(d, "/chunkcut/20000")
    check(r.rc in (18, 56), "curl must report a partial transfer (%r)" % r)
    eq(r.status, 200, "status")
    check(len(r.body) <= 20000, "more body than the origin sent", len(r.body))
    eq(audit(d, "/chunkcut/20000", n0)["decision"], "allow", "audit decision")
    after_fault(d, fds)


@test
def intercepted_upstream_silent_is_504(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    t0 = time.monotonic()
    r = get(d, "/stallhead")
    took = time.monotonic() - t0
    eq((r.status, r.headers.get("x-airlock-decision")), (504, "upstream-timeout"), "answer")
    check(took < h.scaled(5), "504 after %.1fs with upstream_timeout 1s" % took)
    rec = audit(d, "/stallhead", n0)
    eq((rec["decision"], rec["status"], rec["via"]), ("upstream-timeout", 504, "connect"),
       "audit")
    after_fault(d, fds)


@test
def upstream_tls_handshake_that_never_ends_is_504(d):
    # The dial succeeds, the upstream never answers the ClientHello: the connect
    # deadline's backstop (connect_timeout + 1s) answers 504 instead of dropping the client.
    fds, n0 = fu.baseline(d), len(d.audit_records())
    t0 = time.monotonic()
    r = get(d, "/hello", origin=S["mute"])
    took = time.monotonic() - t0
    eq((r.status, r.headers.get("x-airlock-decision"), r.headers.get("x-airlock-rule")),
       (504, "upstream-timeout", "mute"), "answer (%r)" % r)
    check(1.5 <= took < h.scaled(6), "504 after %.1fs with connect_timeout 1s" % took)
    rec = audit(d, "/hello", n0)
    eq((rec["decision"], rec["rule"], rec["status"]), ("upstream-timeout", "mute", 504), "audit")
    check(S["mute"].wait_open(0), "the stalled upstream was not closed", S["mute"].stats())
    after_fault(d, fds)


@test
def intercepted_upstream_silent_mid_body_is_cut(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    t0 = time.monotonic()
    r = get(d, "/stallbody/100000/5000")
    took = time.monotonic() - t0
    check(r.rc in (18, 56), "curl must report a partial transfer (%r)" % r)
    eq((r.status, len(r.body)), (200, 5000), "status and bytes before the stall")
    check(0.8 <= took < h.scaled(5), "cut after %.1fs with upstream_timeout 1s" % took)
    rec = audit(d, "/stallbody/100000/5000", n0)
    eq((rec["decision"], rec["status"], rec["bytes_down"]), ("allow", 200, 5000), "audit")
    after_fault(d, fds)


def tls_download(d, path, rcvbuf=None):
    """A raw client: CONNECT, TLS to airlock's leaf, GET path. Returns (raw, tls)."""
    o = S["origin"]
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(5)
    raw.connect(("127.0.0.1", d.http_port))
    raw.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\nProxy-Authorization: %s\r\n\r\n"
                 % (HOST, o.port, HOST, o.port, h.basic_auth())).encode())
    status, _, _, _ = h.read_http_response(raw, 5)
    eq(status, 200, "CONNECT")
    ctx = ssl.create_default_context(cafile=S["ca"])
    s = ctx.wrap_socket(raw, server_hostname=HOST)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (path, HOST, o.port)).encode())
    return raw, s


@test
def intercepted_client_that_stops_reading_is_cut_and_nothing_piles_up(d):
    # The TLS filter hands bytes to the socket below at once; back-pressure must still
    # hold there (nothing piles up in the daemon), and the send watchdog must cut a client
    # that takes nothing for idle_timeout (5s) instead of pinning both sides forever.
    fds, n0 = fu.baseline(d), len(d.audit_records())
    o = S["origin"]
    sent0 = o.stats()["bytes_sent"]
    raw, s = tls_download(d, "/bytes/50000000", rcvbuf=16384)
    try:
        check(s.recv(4096).startswith(b"HTTP/1.1 200"), "download did not start")
        t0 = time.monotonic()
        time.sleep(2.0)
        taken = o.stats()["bytes_sent"] - sent0
        check(taken < 16 << 20, "the daemon took %d MiB for a client that reads nothing"
              % (taken >> 20))
        deadline = t0 + h.scaled(15)
        while fu.active(d) > 0 and time.monotonic() < deadline:
            time.sleep(0.25)
        took = time.monotonic() - t0
        eq(fu.active(d), 0, "connections_active with a TLS client that stopped reading")
        check(4.0 <= took < h.scaled(10.0), "cut after %.1fs with idle_timeout 5s" % took)
    finally:
        raw.close()
    check(o.wait_open(0), "the origin connection was not closed", o.stats())
    rec = audit(d, "/bytes/50000000", n0)
    eq((rec["decision"], rec["status"]), ("allow", 200), "audit")
    check(0 < rec["bytes_down"] < 16 << 20, "audit bytes_down", rec["bytes_down"])
    after_fault(d, fds)


@test
def intercepted_client_gone_mid_download(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    o = S["origin"]
    raw, s = tls_download(d, "/bytes/50000000")
    got = b""
    deadline = time.monotonic() + 5
    while len(got) < 8192 and time.monotonic() < deadline:
        got += s.recv(4096)
    check(got.startswith(b"HTTP/1.1 200"), "download did not start", got[:60])
    raw.close()  # no close_notify: the client just disappears
    s.close()
    fu.wait_settled(d, 0, fds)
    check(o.wait_open(0), "the origin connection was not closed", o.stats())
    rec = audit(d, "/bytes/50000000", n0)
    eq((rec["decision"], rec["status"]), ("allow", 200), "audit")
    check(0 < rec["bytes_down"] < 50000000, "audit bytes_down", rec["bytes_down"])
    after_fault(d, fds)


if __name__ == "__main__":
    h.run(fixture)
