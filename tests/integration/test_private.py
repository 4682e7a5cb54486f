#!/usr/bin/env python3
"""The private-range guard (SPEC section 2 network:, section 3 step 2): names that
resolve to private, link-local, v4-mapped or unspecified addresses are refused with 403
private-address before any connection; allow_cidrs is the only exception; odd IPv4
literals are 400 bad-request; the proxy's own listeners are never a target.

The test re-executes itself in a network namespace with only loopback (unshare), so a
broken proxy that dials 10.0.0.1 or 169.254.169.254 sends nothing off this machine; where
namespaces are unavailable, the cases that would dial such addresses are skipped.
"""

import contextlib
import socket
import struct
import time

import harness as h
from harness import check, eq, test

ISOLATED = h.isolate_network()  # may exec: must run before anything else starts
S = {}
PRIVATE = {
    "p10.example.test": "10.0.0.1",
    "meta.example.test": "169.254.169.254",
    "mapped.example.test": "::ffff:10.0.0.1",
    "ll.example.test": "fe80::1",
}


@contextlib.contextmanager
def fixture():
    with h.Origin() as o, h.CountingListener() as trap:
        S.update(origin=o, trap=trap)
        resolve = {"api.example.test": "127.0.0.1", "zero.example.test": "0.0.0.0",
                   "mixed.example.test": ["127.0.0.1", "10.0.0.1"]}
        resolve.update(PRIVATE)
        cfg = h.base_config([], resolve=resolve)
        own = [h._port_of(cfg["listen"]["http"]), h._port_of(cfg["listen"]["socks5"])]
        S["own"] = own
        rules = [h.rule("priv-" + n.split(".")[0], host=n, ports=[80, o.port])
                 for n in PRIVATE]
        rules += [
            h.rule("api", ports=[o.port, trap.port] + own),
            h.rule("zero", host="zero.example.test", ports=[trap.port, o.port]),
            h.rule("mixed", host="mixed.example.test", ports=[o.port]),
            h.rule("literal", host="127.0.0.1", ports=[o.port]),
        ]
        cfg["rules"] = rules
        with h.Daemon(cfg) as d:
            yield d


def expect_private(r, what):
    eq(r.status, 403, "status (%s)" % what)
    eq(r.headers.get("x-airlock-decision"), "private-address", "decision (%s)" % what)


def socks_connect(d, host, port):
    with socket.create_connection(("127.0.0.1", d.socks_port), timeout=5) as s:
        s.sendall(b"\x05\x01\x02")
        eq(s.recv(2), b"\x05\x02", "socks method")
        u, p = h.AGENT.encode(), h.TOKEN.encode()
        s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
        eq(s.recv(2), b"\x01\x00", "socks auth")
        hb = host.encode()
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(hb)]) + hb + struct.pack(">H", port))
        return s.recv(2)


@test
def private_targets_refused_without_dialing(d):
    if not ISOLATED:
        raise h.Skip("no network namespace: would risk dialing non-loopback addresses")
    n0 = len(d.audit_records())
    for name in PRIVATE:
        t0 = time.monotonic()
        r = h.curl("http://%s/meta-data/" % name, proxy=d.proxy_url(), timeout=5)
        took = time.monotonic() - t0
        expect_private(r, name)
        check(took < h.scaled(2.0), "%s took %.2fs: a connection was attempted?" % (name, took))
    recs = d.wait_audit(n0 + len(PRIVATE))
    got = [(x.get("host"), x.get("decision")) for x in recs[n0:n0 + len(PRIVATE)]]
    eq(got, [(n, "private-address") for n in PRIVATE], "audit host/decision")


@test
def private_targets_refused_over_connect_and_socks5(d):
    if not ISOLATED:
        raise h.Skip("no network namespace: would risk dialing non-loopback addresses")
    n0 = len(d.audit_records())
    req = ("CONNECT meta.example.test:80 HTTP/1.1\r\nHost: meta.example.test:80\r\n"
           "Proxy-Authorization: %s\r\n\r\n" % h.basic_auth()).encode()
    t0 = time.monotonic()
    status, hdrs, _, _ = h.raw_http(d.http_port, req)
    eq(status, 403, "CONNECT status")
    eq(hdrs.get("x-airlock-decision"), "private-address", "CONNECT decision")
    eq(socks_connect(d, "mapped.example.test", 80), b"\x05\x02", "SOCKS5 reply")
    check(time.monotonic() - t0 < h.scaled(2.0),
          "refusals were slow: a connection was attempted?")
    recs = d.wait_audit(n0 + 2)
    eq([(x.get("via"), x.get("decision")) for x in recs[n0:n0 + 2]],
       [("connect", "private-address"), ("socks5", "private-address")], "audit")


@test
def unspecified_and_mixed_answers_refused(d):
    trap = S["trap"]
    r = h.curl("http://zero.example.test:%d/" % trap.port, proxy=d.proxy_url())
    expect_private(r, "0.0.0.0")
    r = h.curl("http://mixed.example.test:%d/" % S["origin"].port, proxy=d.proxy_url())
    expect_private(r, "a name with one private address among allowed ones")
    eq(trap.accepts, 0, "connections to 0.0.0.0 (which Linux routes to loopback)")


@test
def loopback_allowed_by_allow_cidrs(d):
    o = S["origin"]
    seen = len(o.requests)
    r = h.curl("http://api.example.test:%d/ok" % o.port, proxy=d.proxy_url())
    eq(r.status, 200, "status via name (%s)" % r.stderr)
    r = h.curl("http://127.0.0.1:%d/literal" % o.port, proxy=d.proxy_url())
    eq(r.status, 200, "status via IP literal (%s)" % r.stderr)
    eq([q["path"] for q in o.requests[seen:]], ["/ok", "/literal"], "origin paths")


@test
def loopback_refused_without_allow_cidrs():
    with h.Origin() as o:
        cfg = h.base_config([h.rule("api", ports=[o.port]),
                             h.rule("literal", host="127.0.0.1", ports=[o.port])],
                            network={"deny_private": True})
        with h.Daemon(cfg) as d:
            r = h.curl("http://api.example.test:%d/" % o.port, proxy=d.proxy_url())
            expect_private(r, "127.0.0.1 without allow_cidrs")
            r = h.curl("http://127.0.0.1:%d/" % o.port, proxy=d.proxy_url())
            expect_private(r, "literal 127.0.0.1 without allow_cidrs")
            status, hdrs, _, _ = h.raw_http(d.http_port, (
                "CONNECT api.example.test:%d HTTP/1.1\r\nHost: api.example.test:%d\r\n"
                "Proxy-Authorization: %s\r\n\r\n" % (o.port, o.port, h.basic_auth())).encode())
            eq((status, hdrs.get("x-airlock-decision")), (403, "private-address"), "CONNECT")
            eq(o.connections, 0, "connections to the origin")
            recs = d.wait_audit(3)
            eq([x.get("decision") for x in recs], ["private-address"] * 3, "audit")
            eq(d.stop(), 0, "exit status")


@test
def odd_ipv4_literals_are_bad_request(d):
    n0 = len(d.audit_records())
    auth = "Proxy-Authorization: %s\r\n" % h.basic_auth()
    # curl normalises these itself, so they go out on raw sockets exactly as written.
    cases = ["GET http://2130706433/ HTTP/1.1\r\nHost: 2130706433\r\n",
             "GET http://0x7f.0.0.1/ HTTP/1.1\r\nHost: 0x7f.0.0.1\r\n",
             "GET http://127.1/ HTTP/1.1\r\nHost: 127.1\r\n",
             "GET http://0177.0.0.1/ HTTP/1.1\r\nHost: 0177.0.0.1\r\n",
             "GET http://127.0.0.01/ HTTP/1.1\r\nHost: 127.0.0.01\r\n",
             "CONNECT 2130706433:%d HTTP/1.1\r\nHost: 2130706433:%d\r\n" % (
                 S["trap"].port, S["trap"].port),
             "CONNECT 0x7f000001:%d HTTP/1.1\r\nHost: 0x7f000001:%d\r\n" % (
                 S["trap"].port, S["trap"].port)]
    for c in cases:
        status, hdrs, _, _ = h.raw_http(d.http_port, (c + auth + "\r\n").encode())
        first = c.split("\r\n")[0]
        eq(status, 400, "status for %r" % first)
        eq(hdrs.get("x-airlock-decision"), "bad-request", "decision for %r" % first)
    eq(S["trap"].accepts, 0, "connections to loopback through odd literals")
    recs = d.wait_audit(n0 + len(cases))
    eq([x.get("decision") for x in recs[n0:n0 + len(cases)]],
       ["bad-request"] * len(cases), "audit decisions")


@test
def own_listeners_are_never_a_target(d):
    n0 = len(d.audit_records())
    http_port, socks_port = S["own"]
    for port in (http_port, socks_port):
        r = h.curl("http://api.example.test:%d/loop" % port, proxy=d.proxy_url())
        expect_private(r, "own port %d" % port)
    status, hdrs, _, _ = h.raw_http(d.http_port, (
        "CONNECT api.example.test:%d HTTP/1.1\r\nHost: api.example.test:%d\r\n"
        "Proxy-Authorization: %s\r\n\r\n" % (http_port, http_port, h.basic_auth())).encode())
    eq((status, hdrs.get("x-airlock-decision")), (403, "private-address"), "CONNECT to self")
    eq(socks_connect(d, "api.example.test", socks_port), b"\x05\x02", "SOCKS5 to self")
    time.sleep(0.3)
    recs = d.audit_records()
    eq(len(recs) - n0, 4, "audit records (one per attempt, no loop)")
    check(d.alive(), "daemon died")


if __name__ == "__main__":
    h.run(fixture)
