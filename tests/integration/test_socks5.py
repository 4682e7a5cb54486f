#!/usr/bin/env python3
"""SOCKS5 (RFC 1928/1929) end to end: real curl --socks5-hostname with username/password
through airlockd to real origins (plain and TLS), then raw sockets for every reply code
the contract names: 0x02 denied, 0x05 refused, 0x07 command, 0x08 address type, auth
status 0x01, method 0xFF. Denied targets are never dialled.
"""

import contextlib
import os
import socket
import struct
import time

import harness as h
import ports
from harness import check, eq, test

CA = os.path.join(h.TLS_DIR, "ca.pem")
TLS = (os.path.join(h.TLS_DIR, "server.pem"), os.path.join(h.TLS_DIR, "server.key"))
S = {}


@contextlib.contextmanager
def fixture():
    with h.Origin() as o, h.Origin(tls=TLS) as tls_o, h.CountingListener() as trap, \
            socket.socket() as slow:
        closed = h.free_port()  # nothing listens here: connection refused
        # Accepts nothing until a test says so: with one connection queued, a SYN to it
        # is dropped and the dialer waits for its retransmit (a dial that takes ~1 s).
        ports.bind_free(slow)
        slow.listen(0)
        S.update(origin=o, tls=tls_o, trap=trap, closed=closed, slow=slow)
        rules = [
            h.rule("api", ports=[o.port, tls_o.port, closed, slow.getsockname()[1]],
                   action="allow"),
            h.rule("trap-deny", host="denied.example.test", ports=[trap.port],
                   action="deny"),
        ]
        cfg = h.base_config(rules, resolve={"api.example.test": "127.0.0.1",
                                            "denied.example.test": "127.0.0.1"})
        with h.Daemon(cfg) as d:
            yield d


def socks(d):
    return "127.0.0.1:%d" % d.socks_port


def creds(password=h.TOKEN):
    return "%s:%s" % (h.AGENT, password)


# --- raw SOCKS5 ---------------------------------------------------------------------
def recv_n(s, n, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    while len(data) < n:
        try:
            chunk = s.recv(n - len(data))
        except (socket.timeout, OSError):
            break
        if not chunk:
            break
        data += chunk
    return data


def open_socks(d, methods=b"\x02"):
    s = socket.create_connection(("127.0.0.1", d.socks_port), timeout=5)
    s.sendall(b"\x05" + bytes([len(methods)]) + methods)
    return s, recv_n(s, 2)


def authenticate(s, user=h.AGENT, password=h.TOKEN):
    u, p = user.encode(), password.encode()
    s.sendall(b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p)
    return recv_n(s, 2)


def request(s, cmd=1, atyp=3, host="api.example.test", port=80, addr=None):
    if addr is None:
        hb = host.encode()
        addr = bytes([len(hb)]) + hb
    s.sendall(bytes([5, cmd, 0, atyp]) + addr + struct.pack(">H", port))
    return recv_n(s, 2)  # VER REP; the rest (BND.ADDR) is not needed here


def socks_reply(d, **kw):
    s, greet = open_socks(d)
    with s:
        eq(greet, b"\x05\x02", "method selection")
        eq(authenticate(s), b"\x01\x00", "auth status")
        return request(s, **kw)


# --- through curl ---------------------------------------------------------------------
@test
def curl_allowed_http(d):
    n0, seen = len(d.audit_records()), len(S["origin"].requests)
    r = h.curl("http://api.example.test:%d/socks/path?q=2" % S["origin"].port,
               socks5=socks(d), proxy_user=creds())
    eq(r.rc, 0, "curl exit (%s)" % r.stderr)
    eq(r.status, 200, "status")
    eq(r.json()["path"], "/socks/path", "path at origin")
    eq(len(S["origin"].requests), seen + 1, "requests at origin")
    recs = h.audit_since(d, n0, lambda x: x.get("port") == S["origin"].port)
    check(len(recs) > 0, "no audit record")
    rec = recs[0]
    eq(rec.get("via"), "socks5", "audit via")
    eq(rec.get("host"), "api.example.test", "audit host")
    eq(rec.get("port"), S["origin"].port, "audit port")
    eq(rec.get("agent"), "ci-bot", "audit agent")
    eq(rec.get("rule"), "api", "audit rule")
    eq(rec.get("decision"), "allow", "audit decision")


@test
def curl_allowed_https_and_keep_alive(d):
    seen = len(S["tls"].requests)
    u = "https://api.example.test:%d" % S["tls"].port
    r = h.curl(u + "/one", socks5=socks(d), proxy_user=creds(), args=["--cacert", CA],
               write_out="%{num_connects}\n", extra_urls=[u + "/two"])
    eq(r.rc, 0, "curl exit (%s)" % r.stderr)
    eq(r.write_out.split(), ["1", "0"], "connections (num_connects)")
    eq([q["path"] for q in S["tls"].requests[seen:]], ["/one", "/two"], "TLS origin paths")


@test
def curl_denied_and_wrong_password(d):
    seen = len(S["origin"].requests)
    r = h.curl("http://denied.example.test:%d/" % S["trap"].port, socks5=socks(d),
               proxy_user=creds())
    check(r.rc != 0 and r.status == 0, "curl got through a denied SOCKS5 target", r)
    r = h.curl("http://api.example.test:%d/" % S["origin"].port, socks5=socks(d),
               proxy_user=creds("wrong"))
    check(r.rc != 0 and r.status == 0, "curl got through with a wrong password", r)
    eq(len(S["origin"].requests), seen, "requests at origin")
    eq(S["trap"].accepts, 0, "connections to the denied target")


# --- raw reply codes ------------------------------------------------------------------
@test
def denied_host_reply_0x02(d):
    n0 = len(d.audit_records())
    eq(socks_reply(d, host="denied.example.test", port=S["trap"].port), b"\x05\x02",
       "reply for a deny rule")
    eq(socks_reply(d, host="unknown.example.test", port=443), b"\x05\x02",
       "reply for a host without rule")
    eq(S["trap"].accepts, 0, "connections to the denied target")
    recs = h.audit_since(d, n0, lambda x: x.get("decision") != "allow", 2)
    eq([(x.get("via"), x.get("decision")) for x in recs[:2]],
       [("socks5", "deny"), ("socks5", "no-rule")], "audit via/decision")
    eq(recs[0].get("rule"), "trap-deny", "audit rule")


@test
def refused_port_reply_0x05(d):
    eq(socks_reply(d, host="api.example.test", port=S["closed"]), b"\x05\x05",
       "reply when nothing listens")


@test
def success_then_data_flows(d):
    s, greet = open_socks(d)
    with s:
        eq(greet, b"\x05\x02", "method")
        eq(authenticate(s), b"\x01\x00", "auth")
        eq(request(s, host="api.example.test", port=S["origin"].port), b"\x05\x00", "reply")
        rest = recv_n(s, 2)  # RSV ATYP
        eq(len(rest), 2, "reply header")
        alen = {1: 4, 4: 16}.get(rest[1])
        if alen is None:
            alen = recv_n(s, 1)[0]
        eq(len(recv_n(s, alen + 2)), alen + 2, "BND.ADDR + BND.PORT")
        s.sendall(b"GET /raw-socks HTTP/1.1\r\nHost: api.example.test\r\n"
                  b"Connection: close\r\n\r\n")
        status, _, body, _ = h.read_http_response(s)
        eq(status, 200, "status over the SOCKS5 stream")
        check(b"/raw-socks" in body, "echo body", body)


def read_reply_rest(s):
    """The rest of a success reply after VER REP: RSV ATYP BND.ADDR BND.PORT."""
    rest = recv_n(s, 2)
    eq(len(rest), 2, "reply header")
    alen = {1: 4, 4: 16}.get(rest[1])
    if alen is None:
        alen = recv_n(s, 1)[0]
    eq(len(recv_n(s, alen + 2)), alen + 2, "BND.ADDR + BND.PORT")


@test
def whole_handshake_in_one_write(d):
    """Greeting, auth, request and the first bytes for the target in one segment: the
    listener hands the connection over with all of it (deferred accept), and every step
    is answered in order."""
    u, p, host = h.AGENT.encode(), h.TOKEN.encode(), b"api.example.test"
    with socket.create_connection(("127.0.0.1", d.socks_port), timeout=5) as s:
        s.sendall(b"\x05\x01\x02" + b"\x01" + bytes([len(u)]) + u + bytes([len(p)]) + p +
                  b"\x05\x01\x00\x03" + bytes([len(host)]) + host +
                  struct.pack(">H", S["origin"].port) +
                  b"GET /one-write HTTP/1.1\r\nHost: api.example.test\r\n"
                  b"Connection: close\r\n\r\n")
        eq(recv_n(s, 6), b"\x05\x02\x01\x00\x05\x00", "method, auth and reply")
        read_reply_rest(s)
        status, _, body, _ = h.read_http_response(s)
        eq(status, 200, "status over the SOCKS5 stream")
        check(b"/one-write" in body, "echo body", body)


@test
def greeting_after_a_silent_second(d):
    """A client that connects and says nothing is still handed over by the kernel (after
    the deferred-accept second) and answered when its greeting finally comes."""
    with socket.create_connection(("127.0.0.1", d.socks_port), timeout=5) as s:
        time.sleep(1.5)  # past TCP_DEFER_ACCEPT's 1 s: accepted with nothing to read
        s.sendall(b"\x05\x01\x02")
        eq(recv_n(s, 2), b"\x05\x02", "method")
        eq(authenticate(s), b"\x01\x00", "auth")
        eq(request(s, host="api.example.test", port=S["origin"].port), b"\x05\x00", "reply")


def early_data_while_dialing(d, early):
    """A client sends its request, `early` and a half-close, all before the reply, while the
    dial is still waiting: the target must get every byte then EOF, and its answer and EOF
    must come back after the reply."""
    slow = S["slow"]
    port = slow.getsockname()[1]
    n0 = len(d.audit_records())
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)  # fills the queue
    s, greet = open_socks(d)
    with s, filler:
        eq(greet, b"\x05\x02", "method")
        eq(authenticate(s), b"\x01\x00", "auth")
        host = b"api.example.test"
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host + struct.pack(">H", port) +
                  early)
        s.shutdown(socket.SHUT_WR)
        time.sleep(h.scaled(0.3))  # airlockd reads on while its SYN waits
        slow.settimeout(h.scaled(10))
        q, _ = slow.accept()
        q.close()  # the filler: room in the queue for the retransmitted SYN
        up, _ = slow.accept()
        with up:
            got = h.recv_all(up, 5, limit=len(early))
            eq(len(got), len(early), "bytes at the target")
            check(got == early, "bytes at the target differ")
            eq(recv_n(up, 1, h.scaled(5)), b"", "EOF at the target after the bytes")
            up.sendall(b"pong")
        rep = recv_n(s, 10)
        eq(rep[:2], b"\x05\x00", "reply")
        eq(h.recv_all(s, 5), b"pong", "answer, then EOF")
    recs = h.audit_since(d, n0, lambda x: x.get("port") == port)
    check(recs, "no audit record for the tunnel")
    eq((recs[0].get("decision"), recs[0].get("bytes_up"), recs[0].get("bytes_down")),
       ("allow", len(early), 4), "audit decision and byte counts")


@test
def half_close_while_dialing(d):
    # airlockd reads the client's EOF during the dial: a half-close, not a departure.
    early_data_while_dialing(d, b"GET / HTTP/1.0\r\n\r\n")


@test
def early_data_past_read_ahead_while_dialing(d):
    # 48 KiB: more than airlockd reads ahead of the reply (16 KiB); the rest waits.
    early_data_while_dialing(d, bytes(range(256)) * 192)


@test
def bind_and_udp_reply_0x07(d):
    eq(socks_reply(d, cmd=2, host="api.example.test", port=S["origin"].port), b"\x05\x07",
       "BIND")
    eq(socks_reply(d, cmd=3, host="api.example.test", port=S["origin"].port), b"\x05\x07",
       "UDP ASSOCIATE")


@test
def unknown_atyp_reply_0x08(d):
    eq(socks_reply(d, atyp=5, addr=b"\x7f\x00\x00\x01", port=S["origin"].port), b"\x05\x08",
       "ATYP 0x05")


@test
def wrong_password_auth_status_0x01(d):
    n0 = len(d.audit_records())
    for user, pw in ((h.AGENT, "wrong"), ("nobody", h.TOKEN), (h.AGENT, "")):
        s, greet = open_socks(d)
        with s:
            eq(greet, b"\x05\x02", "method")
            st = authenticate(s, user, pw)
            eq(st[:1], b"\x01", "auth reply version")
            check(len(st) == 2 and st[1] != 0, "auth accepted a bad password", user, pw, st)
            # After a failed auth the server must close; no request is served.
            try:
                s.sendall(b"\x05\x01\x00\x03\x10api.example.test" + struct.pack(">H", 80))
            except OSError:
                pass  # already closed: what we want
            eq(h.recv_all(s, 2.0), b"", "bytes after a failed auth")
    recs = d.wait_audit(n0 + 1)
    check(any(x.get("decision") == "auth-failed" and x.get("via") == "socks5"
              for x in recs[n0:]), "auth failure not audited", recs[n0:])


@test
def no_acceptable_method_0xff(d):
    for methods in (b"\x00", b"\x00\x01", b"\x80"):
        s, greet = open_socks(d, methods)
        with s:
            eq(greet, b"\x05\xff", "method reply for %r" % methods)
            eq(h.recv_all(s, 2.0), b"", "server closes after 0xFF")


@test
def daemon_survives_garbage(d):
    for junk in (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", b"\x05\x00", b"\x05\xff" + b"A" * 300,
                 b"GET / HTTP/1.1\r\n\r\n", b"\x05"):
        with socket.create_connection(("127.0.0.1", d.socks_port), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            h.recv_all(s, 2.0)
    check(d.alive(), "daemon died on garbage")
    eq(socks_reply(d, host="api.example.test", port=S["closed"]), b"\x05\x05",
       "still serving")


@test
def no_agents_means_method_0x00():
    with h.Origin() as o:
        cfg = h.base_config([h.rule("api", ports=[o.port])], agents=[])
        with h.Daemon(cfg) as d:
            s, greet = open_socks(d, b"\x00\x02")
            with s:
                eq(greet, b"\x05\x00", "method selection without agents")
                eq(request(s, host="api.example.test", port=o.port), b"\x05\x00", "reply")
            r = h.curl("http://api.example.test:%d/anon" % o.port, socks5=socks(d))
            eq(r.status, 200, "curl without credentials (%s)" % r.stderr)
            recs = d.wait_audit(2)
            check(recs and all(x.get("agent") == "-" for x in recs), "audit agent", recs)
            eq(d.stop(), 0, "exit status")


if __name__ == "__main__":
    h.run(fixture)
