#!/usr/bin/env python3
"""Network faults, one at a time (issue 7): an upstream that cuts or resets the connection
mid-body, an upstream that stalls before or during its response (limits.upstream_timeout),
and a client that vanishes mid-download or while its request waits for approval.

Each test asserts the outcome the client sees (a truncated response is never passed off
as complete, a stall becomes 504 upstream-timeout or a cut connection), the audit record,
that the daemon let go of both sides (its connections_active counter and its open fds
return to the baseline) and that it still serves a normal request afterwards.
"""

import contextlib
import socket
import threading
import time

import harness as h
from harness import check, eq, test
from approval_util import cli, wait_new_item, wait_pending, audit_for
import fault_util as fu

ORIGIN = None
UPSTREAM_TIMEOUT_S = 1.0


@contextlib.contextmanager
def fixture():
    global ORIGIN
    with fu.FaultOrigin() as o:
        ORIGIN = o
        rules = [h.rule("held", ports=[o.port], path="/held/*", approve="cli"),
                 h.rule("api", ports=[o.port])]
        cfg = h.base_config(rules,
                            limits={"upstream_timeout": "1s", "header_timeout": "5s",
                                    "idle_timeout": "5s"},
                            approvals={"timeout": "30s", "max_pending": 8, "max_body": "1KiB"})
        with h.Daemon(cfg) as d:
            fu.still_serves(d, o.port, "/warm-up")
            yield d
            eq(d.stop(), 0, "airlockd exit status")



def url(path):
    return "http://api.example.test:%d%s" % (ORIGIN.port, path)


def after_fault(d, fds, path="/after"):
    fu.wait_settled(d, 0, fds)
    fu.still_serves(d, ORIGIN.port, path)
    fu.wait_settled(d, 0, fds)


def check_truncated(rep, declared, sent):
    eq(rep.status, 200, "status of the cut response (%r)" % rep)
    check(rep.closed, "the proxy kept the client connection open after a cut", rep)
    check(rep.elapsed < h.scaled(5.0), "cut response took %.2fs to end" % rep.elapsed)
    check(len(rep.body) < declared, "client got a complete-looking body", rep)
    eq(len(rep.body), sent, "bytes relayed before the cut")


# --- 1. the upstream goes away mid-body -----------------------------------------------
@test
def upstream_reset_mid_body_truncates(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    path = "/reset/100000/10000"
    rep = fu.exchange(d.http_port, fu.request_bytes(ORIGIN.port, path), timeout=8)
    eq(rep.headers.get("content-length"), "100000", "declared length passed through")
    check_truncated(rep, 100000, 10000)
    rec = fu.audit_by_path(d, path, n0)
    eq((rec["decision"], rec["rule"], rec["status"]), ("allow", "api", 200), "audit")
    eq(rec["bytes_down"], 10000, "audit bytes_down (what was relayed, not what was declared)")
    after_fault(d, fds)


@test
def upstream_close_mid_body_is_a_curl_error(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    path = "/cut/200000/30000"
    r = h.curl(url(path), proxy=d.proxy_url(), timeout=h.scaled(8))
    eq(r.rc, 18, "curl exit (18: partial file) (%r)" % r)
    eq(r.status, 200, "status")
    eq(len(r.body), 30000, "bytes before the cut")
    eq(r.body, h.pattern_bytes(30000), "the bytes that did arrive are the origin's")
    rec = fu.audit_by_path(d, path, n0)
    eq((rec["decision"], rec["status"], rec["bytes_down"]), ("allow", 200, 30000), "audit")
    after_fault(d, fds)


@test
def upstream_cut_chunked_body_never_ends_cleanly(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    path = "/chunkcut/20000"
    rep = fu.exchange(d.http_port, fu.request_bytes(ORIGIN.port, path), timeout=8)
    eq(rep.status, 200, "status (%r)" % rep)
    eq(rep.headers.get("transfer-encoding"), "chunked", "framing passed through")
    check(rep.closed and rep.elapsed < h.scaled(5.0), "connection not closed promptly", rep)
    check(not rep.body.endswith(b"0\r\n\r\n"), "proxy invented the last chunk", rep.body[-20:])
    r = h.curl(url(path), proxy=d.proxy_url(), timeout=h.scaled(8))
    eq(r.rc, 18, "curl exit for the cut chunked body (%r)" % r)
    rec = fu.audit_by_path(d, path, n0)
    eq((rec["decision"], rec["status"]), ("allow", 200), "audit")
    after_fault(d, fds)


@test
def upstream_bytes_past_the_response_never_answer_the_next_request(d):
    # An origin that sends a second, unrequested response right behind the first must
    # not have it delivered as the answer to the client's next request (desync).
    fds, n0 = fu.baseline(d), len(d.audit_records())
    accepts = ORIGIN.stats()["accepts"]
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=5) as s:
        s.sendall(fu.request_bytes(ORIGIN.port, "/extra"))
        eq(h.read_http_response(s, 5)[::2], (200, b"abc"), "first response")
        s.sendall(fu.request_bytes(ORIGIN.port, "/next"))
        status, _, body, _ = h.read_http_response(s, 5)
        eq((status, body), (200, b"ok /next 0\n"), "answer to the next request")
    eq(ORIGIN.stats()["accepts"] - accepts, 2, "upstream connections (the first not reused)")
    eq(fu.audit_by_path(d, "/extra", n0)["bytes_down"], 3, "audit bytes_down of /extra")
    after_fault(d, fds)


@test
def upstream_answering_before_the_upload_ends_closes_cleanly(d):
    # The origin answers 413 without reading an 8 MiB body and closes (an RST, since the
    # body is unread). The client gets that answer, its connection ends, nothing leaks.
    fds, n0 = fu.baseline(d), len(d.audit_records())
    body_len = 8 << 20
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=5)
    s.sendall(fu.request_bytes(ORIGIN.port, "/early", method="POST",
                               extra=["Content-Length: %d" % body_len]))
    sent = []

    def upload():
        try:
            s.sendall(b"x" * body_len)
            sent.append("all")
        except OSError as e:
            sent.append(e)

    t = threading.Thread(target=upload, daemon=True)
    t.start()
    try:
        status, _, body, _ = h.read_http_response(s, 8)
        t.join(10)
        check(not t.is_alive(), "upload still blocked: the proxy neither read nor closed")
    finally:
        s.close()
    eq((status, body), (413, b"big\n"), "the origin's early answer")
    check(isinstance(sent[0], OSError), "the proxy took the whole 8 MiB after the answer")
    rec = fu.audit_by_path(d, "/early", n0)
    eq((rec["decision"], rec["status"]), ("allow", 413), "audit")
    check(rec["bytes_up"] < body_len, "audit bytes_up", rec["bytes_up"])
    after_fault(d, fds)


@test
def endless_interim_responses_are_buffered_within_bounds(d):
    # 1xx responses for a client that reads nothing: the proxy must stop taking them from
    # the upstream (back-pressure) instead of buffering all of them.
    fds, n0 = fu.baseline(d), len(d.audit_records())
    total = 48 << 20
    before = ORIGIN.stats()["interim_sent"]
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.settimeout(5)
    s.connect(("127.0.0.1", d.http_port))
    try:
        s.sendall(fu.request_bytes(ORIGIN.port, "/interim/%d" % (total // 25)))
        time.sleep(3.0)
        # Socket buffers on both sides hold a few MiB; the rest must stay at the origin.
        taken = ORIGIN.stats()["interim_sent"] - before
        check(taken < 16 << 20, "the proxy took %d MiB of 1xx for a client that reads "
              "nothing" % (taken >> 20))
        check(d.alive(), "airlockd died")
    finally:
        s.close()
    fu.wait_settled(d, 0, fds)
    check(ORIGIN.wait_open(0), "the origin connection was not closed", ORIGIN.stats())
    check(fu.audit_by_path(d, "/interim/%d" % (total // 25), n0), "audit record")
    after_fault(d, fds)


@test
def stale_kept_alive_upstream_retries_a_get_once_but_never_a_post(d):
    # SPEC 10: an upstream that closes as a bodiless request is sent on it is redialed
    # once; a request with a body is never replayed (502, the origin saw it once).
    fds, n0 = fu.baseline(d), len(d.audit_records())
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=5) as s:
        for method, body, want in (("GET", None, 200), ("POST", b"once", 502)):
            seen = len(ORIGIN.stats()["paths"])
            s.sendall(fu.request_bytes(ORIGIN.port, "/armdrop"))
            eq(h.read_http_response(s, 5)[0], 200, "arming request")
            accepts = ORIGIN.stats()["accepts"]
            path = "/stale-" + method.lower()
            s.sendall(fu.request_bytes(ORIGIN.port, path, method=method, body=body))
            status, hdrs, rbody, _ = h.read_http_response(s, h.scaled(8))
            eq(status, want, "%s on a stale upstream (%r)" % (method, hdrs))
            paths = [p for p, _ in ORIGIN.stats()["paths"][seen:]]
            if method == "GET":
                eq(rbody, b"ok %s 0\n" % path.encode(), "answer after the redial")
                eq(paths, ["/armdrop", path, path], "origin: dropped once, then served")
                eq(ORIGIN.stats()["accepts"] - accepts, 1, "one redial")
            else:
                eq(hdrs.get("x-airlock-decision"), "upstream-connect", "decision")
                eq(paths, ["/armdrop", path], "origin: the POST exactly once, not replayed")
                eq(ORIGIN.stats()["accepts"] - accepts, 0, "no redial for a POST")
                break  # the 502 closed the client connection
    rec = fu.audit_by_path(d, "/stale-post", n0)
    eq((rec["decision"], rec["status"]), ("upstream-connect", 502), "audit of the POST")
    eq(fu.audit_by_path(d, "/stale-get", n0)["status"], 200, "audit of the GET")
    after_fault(d, fds)


# --- 2. the upstream stalls -----------------------------------------------------------
@test
def upstream_silent_before_head_is_504(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    gone = ORIGIN.stats()["closed_by_peer"]
    rep = fu.exchange(d.http_port, fu.request_bytes(ORIGIN.port, "/stallhead"), timeout=10)
    eq(rep.status, 504, "status (%r)" % rep)
    eq(rep.headers.get("x-airlock-decision"), "upstream-timeout", "decision header")
    eq(rep.headers.get("x-airlock-rule"), "api", "rule header")
    check(UPSTREAM_TIMEOUT_S * 0.8 <= rep.elapsed < UPSTREAM_TIMEOUT_S + h.scaled(3),
          "504 after %.2fs with upstream_timeout %.1fs" % (rep.elapsed, UPSTREAM_TIMEOUT_S))
    rec = fu.audit_by_path(d, "/stallhead", n0)
    eq((rec["decision"], rec["rule"], rec["status"]), ("upstream-timeout", "api", 504), "audit")
    deadline = time.monotonic() + h.scaled(5)
    while ORIGIN.stats()["closed_by_peer"] == gone and time.monotonic() < deadline:
        time.sleep(0.05)
    check(ORIGIN.stats()["closed_by_peer"] > gone, "proxy kept the stalled upstream open")
    after_fault(d, fds)


@test
def upstream_silent_mid_body_cuts_the_client(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    gone = ORIGIN.stats()["closed_by_peer"]
    path = "/stallbody/100000/5000"
    rep = fu.exchange(d.http_port, fu.request_bytes(ORIGIN.port, path), timeout=10)
    check_truncated(rep, 100000, 5000)
    check(rep.elapsed >= UPSTREAM_TIMEOUT_S * 0.8, "cut before the timeout", rep)
    rec = fu.audit_by_path(d, path, n0)
    eq((rec["decision"], rec["status"], rec["bytes_down"]), ("allow", 200, 5000), "audit")
    deadline = time.monotonic() + h.scaled(5)
    while ORIGIN.stats()["closed_by_peer"] == gone and time.monotonic() < deadline:
        time.sleep(0.05)
    check(ORIGIN.stats()["closed_by_peer"] > gone, "proxy kept the stalled upstream open")
    after_fault(d, fds)


@test
def slow_upload_is_not_an_upstream_stall(d):
    # The origin answers only after the whole body; the body takes 2.5 upstream_timeouts
    # to arrive. Bytes going up show the exchange is alive, so no 504.
    fds = fu.baseline(d)
    body = h.pattern_bytes(8 * 4096)
    payload = fu.request_bytes(ORIGIN.port, "/upload", method="POST", body=body)
    head = payload[:len(payload) - len(body)]
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=5) as s:
        s.sendall(head)
        for i in range(8):
            time.sleep(UPSTREAM_TIMEOUT_S * 2.5 / 8)
            s.sendall(body[i * 4096:(i + 1) * 4096])
        status, hdrs, rbody, _ = h.read_http_response(s, 5)
    eq(status, 200, "status of a slow upload (%s)" % hdrs.get("x-airlock-decision"))
    eq(rbody, b"ok /upload %d\n" % len(body), "origin got the whole body")
    after_fault(d, fds)


@test
def client_stalling_mid_upload_is_408_not_an_upstream_fault(d):
    # The client sends part of its body and then nothing: the origin waits for the rest,
    # so it is silent too, but the fault is the client's: 408, not 504 upstream-timeout.
    fds, n0 = fu.baseline(d), len(d.audit_records())
    with socket.create_connection(("127.0.0.1", d.http_port), timeout=5) as s:
        s.sendall(fu.request_bytes(ORIGIN.port, "/upload-stalled", method="POST",
                                   extra=["Content-Length: 1000"]) + b"x" * 10)
        t0 = time.monotonic()
        status, hdrs, _, _ = h.read_http_response(s, 8)
        took = time.monotonic() - t0
        rest = h.recv_all(s, 3)
    eq((status, hdrs.get("x-airlock-decision")), (408, "bad-request"), "answer")
    eq(hdrs.get("connection"), "close", "Connection header")
    eq(rest, b"", "bytes after the 408")
    check(UPSTREAM_TIMEOUT_S * 0.8 <= took < UPSTREAM_TIMEOUT_S + h.scaled(3),
          "408 after %.2fs" % took)
    rec = fu.audit_by_path(d, "/upload-stalled", n0)
    eq((rec["decision"], rec["status"], rec["bytes_up"]), ("bad-request", 408, 10), "audit")
    after_fault(d, fds)


# --- 3. the client vanishes -----------------------------------------------------------
@test
def client_gone_mid_download_frees_both_sides(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    path = "/bytes/50000000"
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=5)
    s.sendall(fu.request_bytes(ORIGIN.port, path))
    got = b""
    deadline = time.monotonic() + 5
    while len(got) < 8192 and time.monotonic() < deadline:
        got += s.recv(4096)
    check(got.startswith(b"HTTP/1.1 200"), "download did not start", got[:100])
    s.close()  # unread bytes in the socket: the kernel answers the next write with RST
    fu.wait_settled(d, 0, fds)
    check(ORIGIN.wait_open(0), "the origin connection was not closed", ORIGIN.stats())
    rec = fu.audit_by_path(d, path, n0)
    eq((rec["decision"], rec["status"]), ("allow", 200), "audit")
    check(0 < rec["bytes_down"] < 50000000, "audit bytes_down", rec["bytes_down"])
    after_fault(d, fds)


@test
def client_gone_mid_upload_frees_both_sides(d):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    opened = ORIGIN.stats()["accepts"]
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=5)
    s.sendall(fu.request_bytes(ORIGIN.port, "/upload-gone", method="POST",
                               extra=["Content-Length: %d" % (10 << 20)]))
    s.sendall(b"x" * (1 << 20))
    deadline = time.monotonic() + h.scaled(5)
    while ORIGIN.stats()["accepts"] == opened and time.monotonic() < deadline:
        time.sleep(0.05)
    s.close()
    fu.wait_settled(d, 0, fds)
    check(ORIGIN.wait_open(0), "the origin connection was not closed", ORIGIN.stats())
    eq([p for p, _ in ORIGIN.stats()["paths"] if p == "/upload-gone"], [],
       "a cut upload was completed at the origin")
    rec = fu.audit_by_path(d, "/upload-gone", n0)
    eq((rec["decision"], rec["status"]), ("allow", 499), "audit (client gone)")
    check(0 < rec["bytes_up"] <= 1 << 20, "audit bytes_up", rec["bytes_up"])
    after_fault(d, fds)


@test
def client_that_stops_reading_is_cut_after_idle_timeout(d):
    # A client that vanished without a FIN (or simply stopped reading) must not pin the
    # connection and its upstream forever: no byte taken for idle_timeout (5s) cuts it.
    fds, n0 = fu.baseline(d), len(d.audit_records())
    path = "/bytes/50000000"
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(5)
    s.connect(("127.0.0.1", d.http_port))
    try:
        s.sendall(fu.request_bytes(ORIGIN.port, path))
        check(s.recv(4096).startswith(b"HTTP/1.1 200"), "download did not start")
        t0 = time.monotonic()
        deadline = t0 + h.scaled(15)
        while fu.active(d) > 0 and time.monotonic() < deadline:
            time.sleep(0.25)
        took = time.monotonic() - t0
        eq(fu.active(d), 0, "connections_active with a client that stopped reading")
        check(4.0 <= took < h.scaled(10.0), "cut after %.1fs with idle_timeout 5s" % took)
    finally:
        s.close()
    check(ORIGIN.wait_open(0), "the origin connection was not closed", ORIGIN.stats())
    rec = fu.audit_by_path(d, path, n0)
    eq((rec["decision"], rec["status"]), ("allow", 200), "audit")
    check(0 < rec["bytes_down"] < 50000000, "audit bytes_down", rec["bytes_down"])
    after_fault(d, fds)


@test
def client_gone_while_held_cancels_the_item(d):
    fds = fu.baseline(d)
    seen = len(ORIGIN.stats()["paths"])
    s = socket.create_connection(("127.0.0.1", d.http_port), timeout=5)
    s.sendall(fu.request_bytes(ORIGIN.port, "/held/x", method="POST", body=b"payload"))
    iid, item = wait_new_item(d, set())
    eq(item[0], "POST", "pending method")
    eq(item[2], "held", "pending rule")
    eq(fu.active(d), 1, "connections_active while held")
    s.close()
    wait_pending(d, 0, timeout=5)
    rec = audit_for(d, iid)
    eq((rec["decision"], rec["rule"], rec["status"], rec["path"]),
       ("approval-cancelled", "held", 499, "/held/x"), "audit")
    rc, out = cli(d, "approve", iid)
    check(rc != 0, "approving a cancelled item succeeded", out)
    eq(fu.status(d).get("pending"), "0", "status pending")
    eq(ORIGIN.stats()["paths"][seen:], [], "requests that reached the origin")
    after_fault(d, fds)


if __name__ == "__main__":
    h.run(fixture)
