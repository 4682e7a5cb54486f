#!/usr/bin/env python3
"""Blind tunnels (CONNECT and SOCKS5) relay small messages without Nagle delays: an
origin that writes a 100-byte message every few milliseconds (an SSH or websocket
stream, TCP_NODELAY on its socket) must see each one reach the client promptly. With
Nagle on airlockd's client socket, a message written while the previous one was still
unacknowledged waited for the client's delayed ACK, up to 40 ms (over a third of the
messages when the client delays its ACKs, as one that only listens does).
"""

import contextlib
import socket
import threading
import time

import harness as h
from harness import check, eq, test

MSGS = 80
GAP = 0.004
SIZE = 100
STALL = 0.025  # a delayed-ACK stall is ~40 ms; scheduling noise on a busy box is less
S = {}


class TickOrigin(h.AcceptLoop):
    """Per connection: waits for b"go", then writes MSGS messages of SIZE bytes GAP
    seconds apart, noting when each was written, and closes."""

    def __init__(self):
        self.sent = []
        super().__init__()

    def handle(self, c):
        with c:
            c.settimeout(10)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                if c.recv(2) != b"go":
                    return
                sent = []
                for i in range(MSGS):
                    sent.append(time.monotonic())
                    c.sendall(bytes([65 + i % 26]) * SIZE)
                    time.sleep(GAP)
                self.sent = sent
                time.sleep(0.2)
            except OSError:
                pass


@contextlib.contextmanager
def fixture():
    with TickOrigin() as o:
        S["origin"] = o
        cfg = h.base_config([h.rule("ticks", ports=[o.port])])
        with h.Daemon(cfg) as d:
            yield d


def connect_tunnel(d):
    return h.connect_tunnel(d, "api.example.test", S["origin"].port)


def socks_tunnel(d):
    return h.socks_tunnel(d, "api.example.test", S["origin"].port)


def delays(s):
    """Seconds from each message's write at the origin to its arrival at the client."""
    S["origin"].sent = []
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(h.scaled(5))
    s.sendall(b"go")
    got, data = [], b""
    while len(data) < MSGS * SIZE:
        # Delayed ACKs, as a client that only listens has them: what Nagle waits for.
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        chunk = s.recv(65536)
        if not chunk:
            break
        now = time.monotonic()
        data += chunk
        got += [now] * (len(data) // SIZE - len(got))
    eq(len(data), MSGS * SIZE, "bytes through the tunnel")
    eq(data, b"".join(bytes([65 + i % 26]) * SIZE for i in range(MSGS)), "message bytes")
    deadline = time.monotonic() + h.scaled(5)
    while len(S["origin"].sent) < MSGS and time.monotonic() < deadline:
        time.sleep(0.01)
    eq(len(S["origin"].sent), MSGS, "messages the origin wrote")
    return [g - w for g, w in zip(got, S["origin"].sent)]


def no_stalls(d, open_tunnel, via):
    s = open_tunnel(d)
    try:
        late = [x for x in delays(s) if x > h.scaled(STALL)]
    finally:
        s.close()
    # With Nagle on the relay about 30 of the 80 were held back; allow a loaded box 5.
    check(len(late) <= 5, "%s: %d of %d messages held back over %d ms (worst %.1f ms)" %
          (via, len(late), MSGS, STALL * 1000, max(late, default=0) * 1000))


@test
def connect_tunnel_has_no_nagle_stalls(d):
    no_stalls(d, connect_tunnel, "connect")


@test
def socks5_tunnel_has_no_nagle_stalls(d):
    no_stalls(d, socks_tunnel, "socks5")


if __name__ == "__main__":
    h.run(fixture)
