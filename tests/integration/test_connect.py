#!/usr/bin/env python3
"""CONNECT end to end: HTTPS from real curl through an airlockd blind tunnel to a TLS
origin using the test PKI (curl verifies the origin's own certificate, so the bytes were
not touched); denied and rule-less CONNECTs get 403 and never dial the target; audit
records say via "connect". The blind relay (splice) also carries bytes sent with the
CONNECT head, half-closes, and websockets after a 101.
"""

import contextlib
import hashlib
import os
import socket
import threading
import time

import harness as h
from harness import check, eq, test

CA = os.path.join(h.TLS_DIR, "ca.pem")
TLS = (os.path.join(h.TLS_DIR, "server.pem"), os.path.join(h.TLS_DIR, "server.key"))
S = {}


class EofOrigin(h.AcceptLoop):
    """Accepts connections one at a time, reads each to EOF, then answers
    b"got LEN SHA256" and closes: it only answers once the client's half-close has come
    through the tunnel. With upgrade, it first reads a request head and answers
    101 Switching Protocols followed by b"server-first" (a websocket origin)."""

    def __init__(self, upgrade=False):
        self.upgrade = upgrade
        super().__init__()

    def handle(self, c):
        with c:
            c.settimeout(10)
            if self.upgrade:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\n\r\nserver-first")
            data = h.recv_all(c, timeout=10, limit=64 << 20)
            c.sendall(b"got %d %s" % (len(data), hashlib.sha256(data).hexdigest().encode()))


@contextlib.contextmanager
def fixture():
    with h.Origin(tls=TLS) as tls_o, h.Origin() as plain_o, h.CountingListener() as trap, \
            EofOrigin() as eof_o, EofOrigin(upgrade=True) as ws_o:
        S.update(tls=tls_o, plain=plain_o, trap=trap, eof=eof_o, ws=ws_o)
        rules = [
            h.rule("tls-api", ports=[tls_o.port], action="allow"),
            h.rule("plain-api", ports=[plain_o.port], action="allow"),
            h.rule("eof-api", ports=[eof_o.port], action="allow"),
            h.rule("ws-api", ports=[ws_o.port], action="allow"),
            h.rule("trap-deny", host="denied.example.test", ports=[trap.port], action="deny"),
        ]
        cfg = h.base_config(rules, resolve={"api.example.test": "127.0.0.1",
                                            "denied.example.test": "127.0.0.1"})
        with h.Daemon(cfg) as d:
            yield d


def https(path, port=None):
    return "https://api.example.test:%d%s" % (port or S["tls"].port, path)


def connect_raw(d, target, auth=True):
    """CONNECT target on a raw socket; returns (status, headers)."""
    req = "CONNECT %s HTTP/1.1\r\nHost: %s\r\n" % (target, target)
    if auth:
        req += "Proxy-Authorization: %s\r\n" % h.basic_auth()
    status, hdrs, _, _ = h.raw_http(d.http_port, (req + "\r\n").encode())
    return status, hdrs


@test
def https_through_blind_tunnel(d):
    n0, seen = len(d.audit_records()), len(S["tls"].requests)
    r = h.curl(https("/secure/path?q=1"), proxy=d.proxy_url(), args=["--cacert", CA])
    eq(r.rc, 0, "curl exit (%s)" % r.stderr)
    eq(r.blocks[0][0], 200, "CONNECT reply status")
    eq(r.status, 200, "origin status")
    echo = r.json()
    eq(echo["path"], "/secure/path", "path at TLS origin")
    eq(echo["query"], "q=1", "query at TLS origin")
    eq(len(S["tls"].requests), seen + 1, "requests at TLS origin")
    recs = d.wait_audit(n0 + 1)
    check(len(recs) > n0, "no audit record for the tunnel")
    rec = recs[n0]
    eq(rec.get("via"), "connect", "audit via")
    eq(rec.get("host"), "api.example.test", "audit host")
    eq(rec.get("port"), S["tls"].port, "audit port")
    eq(rec.get("agent"), "ci-bot", "audit agent")
    eq(rec.get("rule"), "tls-api", "audit rule")
    eq(rec.get("decision"), "allow", "audit decision")
    check("q=1" not in repr(rec), "query string in a tunnel audit record", rec)


@test
def blind_tunnel_shows_the_origin_certificate(d):
    # A plain allow rule is a blind tunnel (SPEC section 3 step 3): the client must see
    # the origin's own certificate, not one minted by airlock.
    import socket
    import ssl
    port = S["tls"].port
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=5)
    try:
        s.sendall(("CONNECT api.example.test:%d HTTP/1.1\r\nHost: api.example.test:%d\r\n"
                   "Proxy-Authorization: %s\r\n\r\n" % (port, port, h.basic_auth())).encode())
        status, _, _, raw = h.read_http_response(s)
        eq(status, 200, "CONNECT status")
        check(raw.endswith(b"\r\n\r\n"), "bytes after the CONNECT reply", raw)
        ctx = ssl.create_default_context(cafile=CA)
        s.settimeout(5)
        with ctx.wrap_socket(s, server_hostname="api.example.test") as t:
            der = t.getpeercert(binary_form=True)
            t.sendall(b"GET /cert HTTP/1.1\r\nHost: api.example.test\r\n"
                      b"Connection: close\r\n\r\n")
            eq(h.read_http_response(t)[0], 200, "status inside the tunnel")
    finally:
        s.close()
    with open(TLS[0]) as f:
        want = ssl.PEM_cert_to_DER_cert(f.read())
    eq(der, want, "certificate seen through the tunnel")


@test
def tunnel_carries_bulk_both_ways(d):
    body = os.urandom(2 * 1024 * 1024 + 3)
    r = h.curl(https("/up"), proxy=d.proxy_url(), args=["--cacert", CA], data=body,
               timeout=20)
    eq(r.status, 200, "status (%s)" % r.stderr)
    eq(r.json()["body_sha256"], h.sha256_hex(body), "upload sha256 at origin")
    r = h.curl(https("/bytes/8000000"), proxy=d.proxy_url(), args=["--cacert", CA],
               timeout=20)
    eq(r.status, 200, "status (%s)" % r.stderr)
    eq(h.sha256_hex(r.body), h.sha256_hex(h.pattern_bytes(8000000)), "download sha256")


@test
def half_close_and_early_bytes_through_tunnel(d):
    # Bytes sent with the CONNECT head go first; the client's EOF reaches the origin as a
    # half-close while the tunnel still carries the answer back; the audit counts both.
    n0 = len(d.audit_records())
    port = S["eof"].port
    early, body = b"early-bytes:", os.urandom(3 * 1024 * 1024 + 7)
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
    try:
        s.sendall(("CONNECT api.example.test:%d HTTP/1.1\r\nHost: api.example.test:%d\r\n"
                   "Proxy-Authorization: %s\r\n\r\n" % (port, port, h.basic_auth())).encode()
                  + early)
        status, _, _, raw = h.read_http_response(s, timeout=10)
        eq(status, 200, "CONNECT status")
        check(raw.endswith(b"\r\n\r\n"), "bytes after the CONNECT reply", raw)
        s.sendall(body)
        s.shutdown(socket.SHUT_WR)
        answer = h.recv_all(s, timeout=10)
    finally:
        s.close()
    sent = early + body
    want = b"got %d %s" % (len(sent), hashlib.sha256(sent).hexdigest().encode())
    eq(answer, want, "origin's answer after the half-close")
    recs = h.audit_since(d, n0, lambda x: x.get("port") == port)
    check(len(recs) == 1, "no audit record for the tunnel")
    eq(recs[0].get("bytes_up"), len(sent), "audit bytes_up")
    eq(recs[0].get("bytes_down"), len(want), "audit bytes_down")
    eq(recs[0].get("status"), 200, "audit status")


@test
def websocket_after_101_is_relayed_both_ways(d):
    # After a 101 the connection becomes a blind relay (spliced between the two sockets):
    # bytes the origin sent with its 101 arrive, an upload and the half-close go through,
    # the answer comes back, and the audit line has status 101 and the relayed bytes.
    n0 = len(d.audit_records())
    port = S["ws"].port
    body = os.urandom(1024 * 1024 + 5)
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
    try:
        s.sendall(("GET http://api.example.test:%d/ws HTTP/1.1\r\nHost: api.example.test:%d\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                   "Proxy-Authorization: %s\r\n\r\n" % (port, port, h.basic_auth())).encode())
        got, deadline = b"", time.monotonic() + h.scaled(10)
        while not got.endswith(b"server-first") and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        check(got.startswith(b"HTTP/1.1 101 "), "no 101 through the proxy", got)
        check(got.endswith(b"\r\n\r\nserver-first"), "origin's first bytes after the 101", got)
        s.sendall(body)
        s.shutdown(socket.SHUT_WR)
        answer = h.recv_all(s, timeout=10)
    finally:
        s.close()
    want = b"got %d %s" % (len(body), hashlib.sha256(body).hexdigest().encode())
    eq(answer, want, "origin's answer after the half-close")
    recs = h.audit_since(d, n0, lambda x: x.get("port") == port)
    check(len(recs) == 1, "no audit record for the websocket")
    eq(recs[0].get("status"), 101, "audit status")
    eq(recs[0].get("bytes_up"), len(body), "audit bytes_up")
    eq(recs[0].get("bytes_down"), len(b"server-first") + len(want), "audit bytes_down")


@test
def keep_alive_inside_tunnel(d):
    seen = len(S["tls"].requests)
    r = h.curl(https("/k1"), proxy=d.proxy_url(), args=["--cacert", CA],
               write_out="%{num_connects}\n", extra_urls=[https("/k2")])
    eq(r.rc, 0, "curl exit (%s)" % r.stderr)
    eq(r.write_out.split(), ["1", "0"], "connections (num_connects)")
    conns = {q["conn"] for q in S["tls"].requests[seen:]}
    eq(len(conns), 1, "origin connections for two requests in one tunnel")


@test
def plain_http_over_connect_tunnel(d):
    r = h.curl("http://api.example.test:%d/tunnelled" % S["plain"].port,
               proxy=d.proxy_url(), args=["--proxytunnel"])
    eq(r.rc, 0, "curl exit (%s)" % r.stderr)
    eq(r.blocks[0][0], 200, "CONNECT reply")
    eq(r.json()["path"], "/tunnelled", "path at origin")


@test
def denied_connect_is_403_and_never_dials(d):
    n0 = len(d.audit_records())
    trap = S["trap"]
    status, hdrs = connect_raw(d, "denied.example.test:%d" % trap.port)
    eq(status, 403, "status")
    eq(hdrs.get("x-airlock-decision"), "deny", "X-Airlock-Decision")
    eq(hdrs.get("x-airlock-rule"), "trap-deny", "X-Airlock-Rule")
    r = h.curl("https://denied.example.test:%d/" % trap.port, proxy=d.proxy_url(),
               args=["--cacert", CA])
    check(r.rc != 0, "curl succeeded through a denied CONNECT", r)
    eq(trap.accepts, 0, "connections the proxy made to the denied target")
    recs = h.audit_since(d, n0, lambda x: x.get("host") == "denied.example.test", 2)
    check(len(recs) >= 2, "denied CONNECTs not audited", recs)
    for rec in recs[:2]:
        eq(rec.get("via"), "connect", "audit via")
        eq(rec.get("decision"), "deny", "audit decision")
        eq(rec.get("rule"), "trap-deny", "audit rule")
        eq(rec.get("host"), "denied.example.test", "audit host")
        eq(rec.get("port"), trap.port, "audit port")
        eq(rec.get("status"), 403, "audit status")


@test
def connect_without_rule_is_403_no_rule(d):
    n0 = len(d.audit_records())
    trap = S["trap"]
    # api.example.test has rules, but none for the trap's port.
    status, hdrs = connect_raw(d, "api.example.test:%d" % trap.port)
    eq(status, 403, "status")
    eq(hdrs.get("x-airlock-decision"), "no-rule", "X-Airlock-Decision")
    status, hdrs = connect_raw(d, "unknown.example.test:443")
    eq(status, 403, "status (unknown host)")
    eq(hdrs.get("x-airlock-decision"), "no-rule", "X-Airlock-Decision (unknown host)")
    eq(trap.accepts, 0, "connections to the trap")
    recs = h.audit_since(d, n0, lambda x: x.get("port") in (trap.port, 443), 2)
    eq([x.get("decision") for x in recs[:2]], ["no-rule", "no-rule"], "decisions")


@test
def connect_needs_credentials(d):
    status, hdrs = connect_raw(d, "api.example.test:%d" % S["tls"].port, auth=False)
    eq(status, 407, "status")
    eq(hdrs.get("proxy-authenticate"), 'Basic realm="airlock"', "Proxy-Authenticate")
    r = h.curl(https("/"), proxy=d.proxy_url(password="wrong"), args=["--cacert", CA])
    eq(r.blocks[0][0] if r.blocks else 0, 407, "CONNECT status with a wrong password")


if __name__ == "__main__":
    h.run(fixture)
