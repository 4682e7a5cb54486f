#!/usr/bin/env python3
"""Strict HTTP/1.1 parsing on the proxy port (SPEC section 3): malformed and
request-smuggling shapes sent on raw sockets to an allowed URL get 400 or 431, carry
X-Airlock-Decision: bad-request, are audited, and never reach the origin (header-level
errors never even open an upstream connection). A good request still works afterwards.
"""

import contextlib

import harness as h
from harness import check, eq, test

S = {}


@contextlib.contextmanager
def fixture():
    with h.Origin() as o:
        S["origin"] = o
        cfg = h.base_config([h.rule("api", ports=[o.port])],
                            limits={"header_timeout": "5s", "idle_timeout": "10s"})
        with h.Daemon(cfg) as d:
            yield d


def target():
    return "http://api.example.test:%d/smuggle" % S["origin"].port


def req(lines, body=b"", line_end=b"\r\n", auth=True):
    """Request-line + header lines (str or bytes) + the blank line + body."""
    out = []
    for ln in lines:
        out.append(ln.encode("latin-1") if isinstance(ln, str) else ln)
    if auth:
        out.append(("Proxy-Authorization: " + h.basic_auth()).encode())
    return line_end.join(out) + line_end + line_end + body


def post(*headers, body=b""):
    return req(["POST %s HTTP/1.1" % target(), "Host: api.example.test:%d" % S["origin"].port]
               + list(headers), body)


def get(*headers, line=None):
    return req([line or "GET %s HTTP/1.1" % target(),
                "Host: api.example.test:%d" % S["origin"].port] + list(headers))


# (name, payload builder, expected status, header_level)
def cases():
    big_header = "X-Big: " + "a" * 4000
    return [
        ("cl-and-te", lambda: post("Content-Length: 5", "Transfer-Encoding: chunked",
                                   body=b"0\r\n\r\n"), 400, True),
        ("two-different-cl", lambda: post("Content-Length: 5", "Content-Length: 6",
                                          body=b"hello!"), 400, True),
        ("cl-list-conflict", lambda: post("Content-Length: 5, 6", body=b"hello!"), 400, True),
        ("cl-negative", lambda: post("Content-Length: -1"), 400, True),
        ("cl-hex", lambda: post("Content-Length: 0x5", body=b"hello"), 400, True),
        ("te-gzip", lambda: post("Transfer-Encoding: gzip", body=b"abc"), 400, True),
        ("te-chunked-identity", lambda: post("Transfer-Encoding: chunked, identity",
                                             body=b"0\r\n\r\n"), 400, True),
        ("te-chunked-then-identity-lines", lambda: post("Transfer-Encoding: chunked",
                                                        "Transfer-Encoding: identity",
                                                        body=b"0\r\n\r\n"), 400, True),
        ("obs-fold", lambda: get("X-Folded: a", " b"), 400, True),
        ("bare-lf", lambda: req(["GET %s HTTP/1.1" % target(),
                                 "Host: api.example.test:%d" % S["origin"].port],
                                line_end=b"\n"), 400, True),
        ("bare-lf-one-line", lambda: get(b"X-A: 1\nX-B: 2"), 400, True),
        ("nul-in-value", lambda: get(b"X-Nul: a\x00b"), 400, True),
        ("cr-in-value", lambda: get(b"X-Cr: a\rb"), 400, True),
        ("space-before-colon", lambda: get("X-Space : 1"), 400, True),
        ("bad-header-name", lambda: get("Bad[Name]: 1"), 400, True),
        ("empty-header-name", lambda: get(": nothing"), 400, True),
        ("http-2.0-version", lambda: get(line="GET %s HTTP/2.0" % target()), 400, True),
        ("http-garbage-version", lambda: get(line="GET %s HTXP/1.1" % target()), 400, True),
        ("double-space-request-line", lambda: get(line="GET  %s HTTP/1.1" % target()), 400,
         True),
        ("userinfo-in-absolute-form", lambda: get(
            line="GET http://user:pw@api.example.test:%d/ HTTP/1.1" % S["origin"].port), 400,
         True),
        ("request-line-over-8k", lambda: get(
            line="GET %s?%s HTTP/1.1" % (target(), "q" * 8300)), 431, True),
        ("headers-over-64k", lambda: get(*[big_header.replace("X-Big", "X-Big%d" % i)
                                           for i in range(18)]), 431, True),
        ("101-headers", lambda: get(*["X-H%d: v" % i for i in range(101)]), 431, True),
        ("chunk-size-zz", lambda: post("Transfer-Encoding: chunked",
                                       body=b"zz\r\nhello\r\n0\r\n\r\n"), 400, False),
        ("chunk-size-overflow", lambda: post(
            "Transfer-Encoding: chunked",
            body=b"10000000000000000000005\r\nhello\r\n0\r\n\r\n"), 400, False),
        ("chunk-missing-crlf", lambda: post("Transfer-Encoding: chunked",
                                            body=b"5\r\nhelloXX0\r\n\r\n"), 400, False),
    ]


@test
def malformed_requests_rejected(d):
    failures = []
    n_cases = 0
    for name, build, want, header_level in cases():
        n_cases += 1
        o = S["origin"]
        seen, conns, n0 = len(o.requests), o.connections, len(d.audit_records())
        status, hdrs, _, raw = h.raw_http(d.http_port, build(), timeout=8)
        recs = d.wait_audit(n0 + 1, timeout=3)
        problems = []
        if status != want:
            problems.append("status %s (want %d) %r" % (status, want, raw[:120]))
        elif hdrs.get("x-airlock-decision") != "bad-request":
            problems.append("decision %r" % hdrs.get("x-airlock-decision"))
        if len(o.requests) != seen:
            problems.append("origin received %r" % o.requests[seen:])
        if header_level and o.connections != conns:
            problems.append("an upstream connection was opened")
        new = recs[n0:]
        if not new or new[0].get("decision") != "bad-request" or new[0].get("status") != want:
            problems.append("audit %r" % new[:1])
        if not d.alive():
            problems.append("daemon died")
            failures.append("%s: %s" % (name, "; ".join(problems)))
            break
        if problems:
            failures.append("%s: %s" % (name, "; ".join(problems)))
    check(n_cases >= 16, "too few cases")
    check(not failures, "%d of %d cases wrong:\n  %s" % (len(failures), n_cases,
                                                          "\n  ".join(failures)))


@test
def good_request_still_works(d):
    o = S["origin"]
    seen = len(o.requests)
    status, hdrs, body, _ = h.raw_http(d.http_port, post("Content-Length: 5",
                                                          body=b"hello"))
    eq(status, 200, "status")
    eq(len(o.requests), seen + 1, "origin requests")
    eq(o.requests[-1]["body_sha256"], h.sha256_hex(b"hello"), "body at origin")
    status, _, _, _ = h.raw_http(d.http_port, post("Transfer-Encoding: chunked",
                                                   body=b"5\r\nhello\r\n0\r\n\r\n"))
    eq(status, 200, "status (chunked)")
    eq(o.requests[-1]["body_sha256"], h.sha256_hex(b"hello"), "chunked body at origin")
    r = h.curl("http://api.example.test:%d/after" % o.port, proxy=d.proxy_url())
    eq(r.status, 200, "curl after the malformed requests")


@test
def no_response_splitting_after_rejection(d):
    # A rejected request with a smuggled second request behind it: the proxy answers
    # once and closes, so the hidden request is never parsed or forwarded.
    o = S["origin"]
    seen = len(o.requests)
    hidden = get().replace(b"/smuggle", b"/hidden")
    payload = post("Content-Length: 5", "Transfer-Encoding: chunked",
                   body=b"0\r\n\r\n" + hidden)
    import socket
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=5) as s:
        s.sendall(payload)
        data = h.recv_all(s, 5.0)
    eq(data.count(b"HTTP/1.1 "), 1, "responses on the connection")
    check(data.startswith(b"HTTP/1.1 400"), "first response not 400", data[:100])
    check(b"connection: close" in data.lower(), "rejection without Connection: close")
    eq([q["path"] for q in o.requests[seen:]], [], "origin requests")


if __name__ == "__main__":
    h.run(fixture)
