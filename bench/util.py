#!/usr/bin/env python3
"""Helpers for bench/run: a free loopback port, a bounded wait for a listener, and the
result table (name, value with unit, ratio to the direct run of the same kind)."""

import socket
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def table(rows):
    """rows: "name|unit|value|note[|base]". The ratio column compares with the "direct" row
    of the same unit ("req/s@tls" has none: its rows print as req/s without a ratio); base
    names another row whose ratio is added to the note."""
    parsed = [(r.split("|", 4) + [""])[:5] for r in rows]
    direct, by_name = {}, {}
    for name, unit, value, _, _ in parsed:
        by_name[name] = float(value)
        if "direct" in name:
            direct[unit] = float(value)
    print("%-42s %14s %8s  %s" % ("benchmark", "result", "ratio", "note"))
    for name, unit, value, note, base in parsed:
        v = float(value)
        ref = direct.get(unit)
        ratio = "%.2f" % (v / ref) if ref else "-"
        note = note.strip()
        if base and by_name.get(base):
            note = ("%.2f x %s; %s" % (v / by_name[base], base, note)).rstrip("; ")
        print("%-42s %9.1f %-4s %8s  %s" % (name, v, unit.split("@")[0], ratio, note))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "free-port":
        print(free_port())
    elif cmd == "wait-port":
        sys.exit(0 if wait_port(int(sys.argv[2])) else 1)
    elif cmd == "table":
        table(sys.argv[2:])
    else:
        sys.exit(2)
