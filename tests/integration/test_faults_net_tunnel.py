#!/usr/bin/env python3
"""Network faults inside blind tunnels (issue 7): CONNECT and SOCKS5 streams whose origin
cuts or resets mid-response, and whose client vanishes mid-download. The client must see
the stream end (never hang), the daemon must let go of both sides (connections_active and
its fd count back to the baseline), the tunnel must be audited, and the daemon must still
serve afterwards.
"""

import contextlib
import socket
import time

import harness as h
from harness import check, eq, test
import fault_util as fu

ORIGIN = None


@contextlib.contextmanager
def fixture():
    global ORIGIN
    with fu.FaultOrigin() as o:
        ORIGIN = o
        # A plain allow with no method/path condition: CONNECT and SOCKS5 get blind tunnels.
        cfg = h.base_config([h.rule("tunnel", ports=[o.port])],
                            limits={"idle_timeout": "5s", "upstream_timeout": "2s"})
        with h.Daemon(cfg) as d:
            yield d
            eq(d.stop(), 0, "airlockd exit status")



def connect_tunnel(d):
    return h.connect_tunnel(d, "api.example.test", ORIGIN.port)


def socks_tunnel(d):
    return h.socks_tunnel(d, "api.example.test", ORIGIN.port)


def origin_get(path):
    return ("GET %s HTTP/1.1\r\nHost: api.example.test:%d\r\n\r\n" % (path, ORIGIN.port)).encode()


def read_to_end(s, timeout=8.0):
    """(bytes, closed, seconds) reading until EOF/RST or timeout."""
    timeout = h.scaled(timeout)
    t0 = time.monotonic()
    data, closed = b"", False
    s.settimeout(0.2)
    while time.monotonic() - t0 < timeout:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    return data, closed, time.monotonic() - t0


def tunnel_record(d, n0, via):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        recs = [r for r in d.audit_records()[n0:] if r.get("via") == via]
        if recs:
            return recs[-1]
        time.sleep(0.05)
    raise AssertionError("no %s audit record" % via)


def after_fault(d, fds):
    fu.wait_settled(d, 0, fds)
    fu.still_serves(d, ORIGIN.port, "/after")
    fu.wait_settled(d, 0, fds)


def cut_mid_body(d, opener, via, kind):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    s = opener(d)
    try:
        s.sendall(origin_get("/%s/100000/10000" % kind))
        data, closed, took = read_to_end(s)
    finally:
        s.close()
    check(closed and took < h.scaled(5),
          "tunnel did not end after the origin's %s (%.1fs)" % (kind, took))
    head, _, body = data.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), "origin head through the tunnel", head[:60])
    eq(len(body), 10000, "body bytes before the %s" % kind)
    rec = tunnel_record(d, n0, via)
    eq((rec["decision"], rec["rule"]), ("allow", "tunnel"), "audit")
    eq(rec["bytes_down"], len(data), "audit bytes_down")
    after_fault(d, fds)


def client_gone(d, opener, via):
    fds, n0 = fu.baseline(d), len(d.audit_records())
    s = opener(d)
    s.sendall(origin_get("/bytes/50000000"))
    got = b""
    deadline = time.monotonic() + 5
    while len(got) < 8192 and time.monotonic() < deadline:
        got += s.recv(4096)
    check(got.startswith(b"HTTP/1.1 200"), "download did not start", got[:60])
    s.close()
    fu.wait_settled(d, 0, fds)
    check(ORIGIN.wait_open(0), "the origin side of the tunnel was not closed", ORIGIN.stats())
    rec = tunnel_record(d, n0, via)
    eq(rec["decision"], "allow", "audit decision")
    check(0 < rec["bytes_down"] < 50000000, "audit bytes_down", rec["bytes_down"])
    after_fault(d, fds)


@test
def connect_origin_reset_mid_body(d):
    cut_mid_body(d, connect_tunnel, "connect", "reset")


@test
def connect_origin_close_mid_body(d):
    cut_mid_body(d, connect_tunnel, "connect", "cut")


@test
def socks5_origin_reset_mid_body(d):
    cut_mid_body(d, socks_tunnel, "socks5", "reset")


@test
def connect_client_gone_mid_download(d):
    client_gone(d, connect_tunnel, "connect")


@test
def socks5_client_gone_mid_download(d):
    client_gone(d, socks_tunnel, "socks5")


if __name__ == "__main__":
    h.run(fixture)
