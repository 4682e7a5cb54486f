#!/usr/bin/env python3
"""HTTP proxy (absolute-form) end to end: real curl -> airlockd -> real origin on
127.0.0.1. Covers allow with bodies (Content-Length and chunked), keep-alive, no-rule,
deny rules, proxy authentication (407), header hygiene towards the origin, the audit
record of every decision, and the interim 503 vault-unavailable for inject rules.
"""

import contextlib
import os
import re

import harness as h
from harness import check, eq, test

ORIGIN = None
ID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{6}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@contextlib.contextmanager
def fixture():
    global ORIGIN
    with h.Origin() as o:
        ORIGIN = o
        p = o.port
        rules = [
            h.rule("no-admin", ports=[p], path="/admin/*", action="deny"),
            h.rule("api", ports=[p], action="allow"),
            h.rule("blocked", host="blocked.example.test", ports=[p], action="deny"),
        ]
        cfg = h.base_config(rules, resolve={"api.example.test": "127.0.0.1",
                                            "blocked.example.test": "127.0.0.1"})
        with h.Daemon(cfg) as d:
            yield d


def url(path, host="api.example.test"):
    return "http://%s:%d%s" % (host, ORIGIN.port, path)


def audit_after(d, n0, k=1):
    recs = d.wait_audit(n0 + k)
    check(len(recs) >= n0 + k, "expected %d new audit records" % k, recs[n0:])
    return recs[n0:]


def check_record(rec, **want):
    for key in ("ts", "id", "agent", "via", "host", "port", "method", "path", "rule",
                "decision", "status", "prev"):
        check(key in rec, "audit record lacks %r" % key, rec)
    check(TS_RE.match(rec["ts"]), "ts not RFC 3339 UTC with ms", rec["ts"])
    check(ID_RE.match(rec["id"]), "id not 6 Crockford base32 chars", rec["id"])
    check(re.match(r"^[0-9a-f]{64}$", rec["prev"]), "prev not sha256 hex", rec["prev"])
    for k, v in want.items():
        eq(rec.get(k), v, "audit %s" % k)
    text = repr(rec)
    check(h.TOKEN not in text, "agent token leaked into the audit log")
    check("?" not in rec["path"], "query string leaked into the audit path", rec["path"])


def no_rule_name(rec):
    return rec.get("rule") in (None, "", "-")


@test
def allowed_get_returns_origin_body(d):
    n0, seen = len(d.audit_records()), len(ORIGIN.requests)
    r = h.curl(url("/hello/world?x=1&secret=s"), proxy=d.proxy_url())
    eq(r.rc, 0, "curl exit (%s)" % r.stderr)
    eq(r.status, 200, "status")
    echo = r.json()
    eq(echo["method"], "GET", "method at origin")
    eq(echo["path"], "/hello/world", "path at origin")
    eq(echo["query"], "x=1&secret=s", "query at origin")
    reqs = ORIGIN.requests[seen:]
    eq(len(reqs), 1, "requests at origin")
    eq(reqs[0]["target"], "/hello/world?x=1&secret=s", "origin-form target sent upstream")
    hosts = [v for k, v in reqs[0]["headers"] if k.lower() == "host"]
    eq(hosts, ["api.example.test:%d" % ORIGIN.port], "Host header at origin")
    rec = audit_after(d, n0)[0]
    check_record(rec, agent="ci-bot", via="http", host="api.example.test", port=ORIGIN.port,
                 method="GET", path="/hello/world", rule="api", decision="allow",
                 status=200)
    check("secret=s" not in repr(rec), "query leaked into audit")


@test
def post_content_length_body_intact(d):
    body = os.urandom(300 * 1024)
    r = h.curl(url("/upload"), proxy=d.proxy_url(), data=body,
               headers=["Content-Type: application/octet-stream"])
    eq(r.status, 200, "status (%s)" % r.stderr)
    echo = r.json()
    eq(echo["method"], "POST", "method")
    eq(echo["body_len"], len(body), "body length at origin")
    eq(echo["body_sha256"], h.sha256_hex(body), "body sha256 at origin")


@test
def post_chunked_body_intact(d):
    body = os.urandom(200 * 1024 + 17)
    r = h.curl(url("/upload-chunked"), proxy=d.proxy_url(), data=body,
               headers=["Transfer-Encoding: chunked", "Content-Type: application/x-bin"])
    eq(r.status, 200, "status (%s)" % r.stderr)
    echo = r.json()
    eq(echo["body_len"], len(body), "body length at origin")
    eq(echo["body_sha256"], h.sha256_hex(body), "body sha256 at origin")


@test
def large_and_chunked_responses_intact(d):
    r = h.curl(url("/bytes/3000000"), proxy=d.proxy_url(), timeout=20)
    eq(r.status, 200, "status (%s)" % r.stderr)
    eq(h.sha256_hex(r.body), h.sha256_hex(h.pattern_bytes(3000000)), "bytes body sha256")
    r = h.curl(url("/chunked/100001"), proxy=d.proxy_url())
    eq(r.status, 200, "status (%s)" % r.stderr)
    eq(r.body, h.pattern_bytes(100001), "chunked body")
    r = h.curl(url("/status/404"), proxy=d.proxy_url())
    eq(r.status, 404, "origin status passed through")


@test
def keep_alive_reuses_proxy_and_origin_connections(d):
    seen, conns = len(ORIGIN.requests), ORIGIN.connections
    r = h.curl(url("/ka/1"), proxy=d.proxy_url(), write_out="%{num_connects}\n",
               extra_urls=[url("/ka/2"), url("/ka/3")])
    eq(r.rc, 0, "curl exit (%s)" % r.stderr)
    eq(r.write_out.split(), ["1", "0", "0"], "new connections per URL (num_connects)")
    paths = [q["path"] for q in ORIGIN.requests[seen:]]
    eq(paths, ["/ka/1", "/ka/2", "/ka/3"], "requests at origin")
    # The proxy keeps its upstream alive too: three requests, one origin connection.
    eq(ORIGIN.connections - conns, 1, "TCP connections accepted by the origin")


@test
def pipelined_requests_are_answered_in_order(d):
    # Three requests in one write: each exchange is freed when it ends, and the next one,
    # already buffered, gets a fresh one (a refusal in the middle keeps the connection).
    import socket
    seen, n0 = len(ORIGIN.requests), len(d.audit_records())
    auth = "Proxy-Authorization: %s\r\n" % h.basic_auth()
    reqs = "".join("GET %s HTTP/1.1\r\nHost: api.example.test\r\n%s%s\r\n" % (url(p), auth, x)
                   for p, x in [("/pipe/1?q=1", ""), ("/admin/pipe", ""),
                                ("/pipe/" + "p" * 1500, "Connection: close\r\n")])
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=5) as s:
        s.sendall(reqs.encode())
        data = h.recv_all(s, 8.0)
    eq(re.findall(rb"^HTTP/1\.1 (\d{3}) ", data, re.M), [b"200", b"403", b"200"],
       "statuses in order")
    eq([q["path"] for q in ORIGIN.requests[seen:]], ["/pipe/1", "/pipe/" + "p" * 1500],
       "origin paths")
    recs = audit_after(d, n0, 3)
    eq([(x["path"], x["decision"]) for x in recs],
       [("/pipe/1", "allow"), ("/admin/pipe", "deny"), ("/pipe/" + "p" * 1500, "allow")],
       "audited paths and decisions")


@test
def host_without_rule_is_403_no_rule(d):
    n0, seen = len(d.audit_records()), len(ORIGIN.requests)
    r = h.curl("http://nowhere.example.test:%d/x" % ORIGIN.port, proxy=d.proxy_url())
    eq(r.status, 403, "status")
    eq(r.headers.get("x-airlock-decision"), "no-rule", "X-Airlock-Decision")
    check("x-airlock-rule" not in r.headers, "no rule decided, yet X-Airlock-Rule", r.headers)
    check(r.body.strip() and b"\n" not in r.body.strip(), "body is one line of text", r.body)
    eq(len(ORIGIN.requests), seen, "origin requests")
    rec = audit_after(d, n0)[0]
    check_record(rec, via="http", host="nowhere.example.test", decision="no-rule", status=403,
                 method="GET", path="/x")
    check(no_rule_name(rec), "no-rule record names a rule", rec)


@test
def deny_rule_is_403_with_rule_name(d):
    n0, seen = len(d.audit_records()), len(ORIGIN.requests)
    r = h.curl(url("/admin/users?id=1"), proxy=d.proxy_url())
    eq(r.status, 403, "status")
    eq(r.headers.get("x-airlock-decision"), "deny", "X-Airlock-Decision")
    eq(r.headers.get("x-airlock-rule"), "no-admin", "X-Airlock-Rule")
    r2 = h.curl(url("/", host="blocked.example.test"), proxy=d.proxy_url())
    eq(r2.status, 403, "status (host rule)")
    eq(r2.headers.get("x-airlock-decision"), "deny", "X-Airlock-Decision (host rule)")
    eq(r2.headers.get("x-airlock-rule"), "blocked", "X-Airlock-Rule (host rule)")
    eq(len(ORIGIN.requests), seen, "origin requests")
    recs = audit_after(d, n0, 2)
    check_record(recs[0], agent="ci-bot", via="http", host="api.example.test",
                 port=ORIGIN.port, method="GET", path="/admin/users", rule="no-admin",
                 decision="deny", status=403)
    check_record(recs[1], host="blocked.example.test", rule="blocked", decision="deny",
                 status=403)


@test
def bad_or_missing_credentials_are_407(d):
    n0, seen = len(d.audit_records()), len(ORIGIN.requests)
    cases = [("wrong password", d.proxy_url(password="not-the-token")),
             ("unknown agent", d.proxy_url(user="intruder")),
             ("no credentials", d.proxy_url(user=None))]
    for what, proxy in cases:
        r = h.curl(url("/auth"), proxy=proxy)
        eq(r.status, 407, "status (%s)" % what)
        eq(r.headers.get("proxy-authenticate"), 'Basic realm="airlock"',
           "Proxy-Authenticate (%s)" % what)
    eq(len(ORIGIN.requests), seen, "origin requests")
    recs = audit_after(d, n0, 3)
    for rec in recs[:3]:
        check_record(rec, via="http", decision="auth-failed", status=407)


@test
def proxy_and_hop_by_hop_headers_never_reach_origin(d):
    seen = len(ORIGIN.requests)
    r = h.curl(url("/headers"), proxy=d.proxy_url(),
               headers=["Connection: keep-alive, X-Hop", "X-Hop: drop-me",
                        "Proxy-Foo: bar", "X-Keep: kept"])
    eq(r.status, 200, "status (%s)" % r.stderr)
    got = ORIGIN.requests[seen:][0]["headers"]
    names = [k.lower() for k, _ in got]
    for bad in ("proxy-authorization", "proxy-connection", "proxy-foo", "x-hop"):
        check(bad not in names, "%s reached the origin" % bad, got)
    check(not any(h.TOKEN in v for _, v in got), "agent token reached the origin", got)
    check(["X-Keep", "kept"] in got or ["x-keep", "kept"] in got, "end-to-end header lost",
          got)


@test
def inject_without_vault_is_503_vault_unavailable():
    # Own daemon: a credential needs a vault section; this one points at a PKCS#11
    # module that does not exist, so the token is unavailable (SPEC section 4 and 10).
    with h.Origin() as o:
        cfg = h.base_config([h.rule("gh", ports=[o.port], action="inject",
                                    credential="github", allow_cleartext=True)])
        cfg["vault"] = {"backend": "pkcs11", "dir": "vault",
                        "pkcs11": {"module": "/nonexistent/airlock-test-no-module.so",
                                   "token": "pkcs11:token=airlock-none",
                                   "pin": "env:AIRLOCK_TEST_UNSET_PIN",
                                   "key_label": "airlock-vault"}}
        cfg["credentials"] = {"github": {"header": "Authorization",
                                         "format": "Bearer {secret}"}}
        with h.Daemon(cfg) as d:
            r = h.curl("http://api.example.test:%d/repos" % o.port, proxy=d.proxy_url())
            eq(r.status, 503, "status (%s)" % r.body)
            eq(r.headers.get("x-airlock-decision"), "vault-unavailable", "decision")
            eq(r.headers.get("x-airlock-rule"), "gh", "rule")
            eq(len(o.requests), 0, "requests at origin (never forward without the credential)")
            check(d.alive(), "daemon died")
            r = h.curl("http://api.example.test:%d/repos" % o.port, proxy=d.proxy_url())
            eq(r.status, 503, "status on retry")
            rec = audit_after(d, 0, 2)[0]
            check_record(rec, via="http", rule="gh", decision="vault-unavailable",
                         status=503)
            eq(d.stop(), 0, "exit status")


@test
def generated_response_keeps_connection_open(d):
    # SPEC section 10: a refusal of a well-formed bodiless request keeps the connection.
    seen = len(ORIGIN.requests)
    r = h.curl(url("/admin/no"), proxy=d.proxy_url(), write_out="%{http_code} %{num_connects}\n",
               extra_urls=[url("/after-deny")])
    eq(r.write_out.split(), ["403", "1", "200", "0"], "codes and new connections")
    eq([q["path"] for q in ORIGIN.requests[seen:]], ["/after-deny"], "origin paths")


@test
def upstream_refused_is_502_upstream_connect():
    closed = h.free_port()
    cfg = h.base_config([h.rule("closed", ports=[closed])])
    with h.Daemon(cfg) as d:
        r = h.curl("http://api.example.test:%d/" % closed, proxy=d.proxy_url())
        eq(r.status, 502, "status")
        eq(r.headers.get("x-airlock-decision"), "upstream-connect", "decision")
        eq(r.headers.get("x-airlock-rule"), "closed", "rule")
        rec = audit_after(d, 0)[0]
        check_record(rec, decision="upstream-connect", status=502, rule="closed")
        eq(d.stop(), 0, "exit status")


@test
def connection_limit_is_503():
    import socket
    cfg = h.base_config([h.rule("api", ports=[ORIGIN.port])],
                        limits={"max_connections": 2})
    with h.Daemon(cfg) as d:
        def req(path):
            return ("GET %s HTTP/1.1\r\nHost: api.example.test:%d\r\nProxy-Authorization: "
                    "%s\r\n\r\n" % (url(path), ORIGIN.port, h.basic_auth())).encode()
        held = []
        try:
            # Two kept-alive connections that were served: both certainly count.
            for i in range(2):
                s = socket.create_connection(("127.0.0.1", d.http_port), timeout=5)
                held.append(s)
                s.sendall(req("/held/%d" % i))
                eq(h.read_http_response(s)[0], 200, "held connection %d served" % i)
            status, hdrs, _, _ = h.raw_http(d.http_port, req("/over"))
            eq(status, 503, "status over the limit")
            eq(hdrs.get("x-airlock-decision"), "connection-limit", "decision")
            eq(hdrs.get("connection", "").lower(), "close", "Connection header")
        finally:
            for s in held:
                s.close()
        deadline = h.time.monotonic() + 5
        status = 0
        while status != 200 and h.time.monotonic() < deadline:
            status = h.curl(url("/under"), proxy=d.proxy_url()).status
            if status != 200:
                h.time.sleep(0.1)
        eq(status, 200, "status once connections were released")
        eq(d.stop(), 0, "exit status")


@test
def header_and_idle_timeouts_close_connections():
    import socket
    cfg = h.base_config([h.rule("api", ports=[ORIGIN.port])],
                        limits={"header_timeout": "1s", "idle_timeout": "2s"})
    with h.Daemon(cfg) as d:
        with socket.create_connection(("127.0.0.1", d.http_port), timeout=5) as s:
            t0 = h.time.monotonic()
            s.sendall(("GET %s HTTP/1.1\r\nHost: api.example.test\r\n" % url("/partial"))
                      .encode())
            h.recv_all(s, 6.0)
            took = h.time.monotonic() - t0
            check(0.8 <= took < 5.0, "header timeout 1s closed after %.2fs" % took)
        with socket.create_connection(("127.0.0.1", d.http_port), timeout=5) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: api.example.test\r\nProxy-Authorization: "
                       "%s\r\n\r\n" % (url("/idle"), h.basic_auth())).encode())
            status, _, _, _ = h.read_http_response(s)
            eq(status, 200, "status before idling")
            t0 = h.time.monotonic()
            rest = h.recv_all(s, 8.0)
            took = h.time.monotonic() - t0
            eq(rest, b"", "bytes while idle")
            check(1.5 <= took < 6.0, "idle timeout 2s closed after %.2fs" % took)
        eq(d.stop(), 0, "exit status")


@test
def no_agents_means_no_authentication():
    cfg = h.base_config([h.rule("api", ports=[ORIGIN.port])], agents=[])
    with h.Daemon(cfg) as d:
        r = h.curl(url("/anon"), proxy=d.proxy_url(user=None))
        eq(r.status, 200, "status without credentials (%s)" % r.stderr)
        rec = audit_after(d, 0)[0]
        check_record(rec, agent="-", decision="allow", status=200)
        eq(d.stop(), 0, "exit status")


@test
def every_decision_is_audited_in_order(d):
    recs = d.audit_records()
    check(len(recs) >= 10, "too few audit records", len(recs))
    ids = [x["id"] for x in recs]
    eq(len(set(ids)), len(ids), "audit ids unique")
    for x in recs:
        check_record(x)


if __name__ == "__main__":
    h.run(fixture)
