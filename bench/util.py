#!/usr/bin/env python3
"""Helpers for bench/run: a free loopback port, a bounded wait for a listener, the CPU time
of a process tree, and the result table (name, value with unit, ratios to the direct run
and to the best peer of the same kind)."""

import os
import sys

# Free ports and the listener wait are the integration tests' (tests/integration/ports.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from ports import free_port, wait_port  # noqa: E402


LOWER_IS_BETTER = ("us", "ms", "MB")


def role(name, explicit=""):
    """direct, airlockd, peer (another proxy: "via X") or "" (compared with nothing)."""
    if explicit:
        return explicit
    if "direct" in name:
        return "direct"
    if "airlockd" in name:
        return "airlockd"
    return "peer" if " via " in name else ""


def table(rows):
    """rows: "name|unit|value|note[|base[|role]]". Rows of one unit form a group ("req/s@tls"
    prints as req/s; "us@p99" as us). Every row gets its ratio to the group's direct row;
    airlockd rows also to the group's best peer (highest, or lowest for us/ms/MB). base
    names another row whose ratio is added to the note."""
    parsed = []
    for r in rows:
        name, unit, value, note, base, rl = (r.split("|", 5) + ["", ""])[:6]
        parsed.append((name, unit, float(value or 0), note.strip().rstrip(";").strip(), base,
                       role(name, rl)))
    by_name = {p[0]: p[2] for p in parsed}
    direct, best = {}, {}
    for name, unit, v, _, _, rl in parsed:
        lower = unit.split("@")[0] in LOWER_IS_BETTER
        if rl == "direct":
            direct[unit] = v
        elif rl == "peer" and v > 0:
            if unit not in best or (v < best[unit][0] if lower else v > best[unit][0]):
                best[unit] = (v, name)
    print("%-46s %12s %-6s %7s %7s  %s" % ("benchmark", "result", "unit", "/direct", "/peer",
                                           "note"))
    for name, unit, v, note, base, rl in parsed:
        ref = direct.get(unit)
        r_direct = "%.2f" % (v / ref) if ref else "-"
        r_peer = "-"
        if rl == "airlockd" and unit in best:
            r_peer = "%.2f" % (v / best[unit][0])
            note = ("best peer: %s; %s" % (best[unit][1], note)).rstrip("; ")
        if base and by_name.get(base):
            note = ("%.2f x %s; %s" % (v / by_name[base], base, note)).rstrip("; ")
        print("%-46s %12.1f %-6s %7s %7s  %s" % (name, v, unit.split("@")[0], r_direct, r_peer,
                                                 note))


def cpu_seconds(pid):
    """User + system CPU seconds of pid and all its descendants (threads included)."""
    tick = os.sysconf("SC_CLK_TCK")
    kids, ticks = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(d))
        ticks[int(d)] = int(fields[11]) + int(fields[12])
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        total += ticks.get(p, 0)
        stack.extend(kids.get(p, []))
    return total / tick


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "free-port":
        print(free_port())
    elif cmd == "wait-port":
        sys.exit(0 if wait_port(int(sys.argv[2])) else 1)
    elif cmd == "table":
        table(sys.argv[2:])
    elif cmd == "cpu":
        print("%.3f" % cpu_seconds(int(sys.argv[2])))
    else:
        sys.exit(2)
