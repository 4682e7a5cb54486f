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
    parsed = [r.split("|", 3) for r in rows]
    direct = {}
    for name, unit, value, _ in parsed:
        if "direct" in name:
            direct[unit] = float(value)
    print("%-30s %14s %8s  %s" % ("benchmark", "result", "ratio", "note"))
    for name, unit, value, note in parsed:
        v = float(value)
        base = direct.get(unit)
        ratio = "%.2f" % (v / base) if base else "-"
        print("%-30s %9.1f %-4s %8s  %s" % (name, v, unit, ratio, note.strip()))


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
