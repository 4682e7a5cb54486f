#!/usr/bin/env python3
"""HTTPS load through an intercepting proxy, for bench/run (wrk cannot CONNECT): N threads,
each opens one connection to the proxy, sends CONNECT once, wraps the tunnel in TLS trusting
the proxy's CA, then sends keep-alive GETs for SECONDS. Prints "req/s errors".
Usage: tls_load.py PROXY_PORT HOST:PORT CA_PEM SECONDS [CONNS] [PROXY_AUTH]"""

import socket
import ssl
import sys
import threading
import time

RESP_MAX = 65536  # a response head or body larger than this counts as an error


def read_response(f):
    """Reads one response from file f; returns its status code (-1 on a malformed one)."""
    status = f.readline(RESP_MAX)
    parts = status.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return -1
    length = 0
    for _ in range(100):
        line = f.readline(RESP_MAX)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length > RESP_MAX:
        return -1
    if length and len(f.read(length)) != length:
        return -1
    return int(parts[1])


def worker(proxy_port, target, ctx, deadline, auth, counts, idx):
    host = target.rsplit(":", 1)[0]
    ok = errs = 0
    try:
        raw = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
        connect = "CONNECT %s HTTP/1.1\r\nHost: %s\r\n" % (target, target)
        if auth:
            connect += "Proxy-Authorization: %s\r\n" % auth
        raw.sendall((connect + "\r\n").encode())
        f = raw.makefile("rb")
        if read_response(f) != 200:
            raise OSError("CONNECT refused")
        f.close()
        tls = ctx.wrap_socket(raw, server_hostname=host)
        f = tls.makefile("rb")
        req = ("GET /tls HTTP/1.1\r\nHost: %s\r\nUser-Agent: tls_load\r\n\r\n" % target).encode()
        while time.monotonic() < deadline:
            tls.sendall(req)
            if read_response(f) == 200:
                ok += 1
            else:
                errs += 1
                break
        tls.close()
    except (OSError, ValueError) as e:
        sys.stderr.write("tls_load: connection %d: %s\n" % (idx, e))
        errs += 1
    counts[idx] = (ok, errs)


def main():
    proxy_port, target, ca, secs = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
    conns = int(sys.argv[5]) if len(sys.argv) > 5 else 8
    auth = sys.argv[6] if len(sys.argv) > 6 else ""
    ctx = ssl.create_default_context(cafile=ca)
    counts = [(0, 0)] * conns
    start = time.monotonic()
    deadline = start + secs
    threads = [threading.Thread(target=worker, args=(proxy_port, target, ctx, deadline, auth,
                                                     counts, i)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(secs + 30)
    elapsed = time.monotonic() - start
    print("%.1f %d" % (sum(c[0] for c in counts) / elapsed, sum(c[1] for c in counts)))


if __name__ == "__main__":
    main()
