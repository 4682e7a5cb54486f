#!/usr/bin/env python3
"""The hash-chained audit log (SPEC section 8) written by a real airlockd: verify says
`ok N records` for N decisions; an edit inside line 2 that keeps the JSON valid is found
and line 2 is named; a removed line is found; a restarted daemon continues the chain.
"""

import json
import os
import re

import harness as h
from harness import check, eq, test

S = {}


def config():
    o = S["origin"]
    return S.setdefault("cfg", h.base_config([
        h.rule("no-admin", ports=[o.port], path="/admin/*", action="deny"),
        h.rule("api", ports=[o.port]),
    ]))


def decisions(d):
    """Five decisions of different kinds; returns how many were made."""
    u = "http://api.example.test:%d" % S["origin"].port
    eq(h.curl(u + "/a?token=zzz", proxy=d.proxy_url()).status, 200, "allow")
    eq(h.curl(u + "/admin/x", proxy=d.proxy_url()).status, 403, "deny")
    eq(h.curl("http://nowhere.example.test/", proxy=d.proxy_url()).status, 403, "no-rule")
    eq(h.curl(u + "/b", proxy=d.proxy_url(password="bad")).status, 407, "auth")
    eq(h.curl(u + "/c", proxy=d.proxy_url(), data=b"BODY-MARKER-71").status, 200, "allow post")
    return 5


def verify(path):
    return h.run_airlock(["audit", "verify", path])


def lines_of(path):
    with open(path, "rb") as f:
        return f.read().split(b"\n")[:-1]


@test
def chain_verifies_detects_edits_and_continues():
    with h.Origin() as o:
        S["origin"] = o
        d = h.Daemon(config())
        with d:
            n = decisions(d)
            eq(len(d.wait_audit(n)), n, "audit records")
            eq(d.stop(), 0, "exit status")
        rc, out = verify(d.audit_path)
        eq((rc, out.strip()), (0, "ok %d records" % n), "verify")

        lines = lines_of(d.audit_path)
        eq(len(lines), n, "lines in the file")
        eq(json.loads(lines[0])["prev"], "0" * 64, "prev of the first line")
        for i in range(1, n):
            eq(json.loads(lines[i])["prev"], h.sha256_hex(lines[i - 1]),
               "prev of line %d" % (i + 1))
        check(b"zzz" not in b"".join(lines), "query string in the audit log")
        check(h.TOKEN.encode() not in b"".join(lines), "agent token in the audit log")
        check(b"BODY-MARKER-71" not in b"".join(lines), "request body in the audit log")

        # Tampered copies; the real file stays intact for the restart below.
        m = re.search(rb'"port":\s*(\d)', lines[1])
        check(m, "\"port\" field not found in line 2", lines[1])
        flip = b"1" if m.group(1) != b"1" else b"2"
        edits = {
            "port digit": lines[1][:m.start(1)] + flip + lines[1][m.end(1):],
            "host letter": lines[1].replace(b"api.example.test", b"apj.example.test", 1),
        }
        for what, new2 in edits.items():
            check(new2 != lines[1], "edit %s changed nothing" % what)
            json.loads(new2)  # still valid JSON: only the chain can tell
            tampered = os.path.join(d.tmpdir, "tampered.jsonl")
            with open(tampered, "wb") as f:
                f.write(b"\n".join([lines[0], new2] + lines[2:]) + b"\n")
            rc, out = verify(tampered)
            eq(rc, 1, "verify exit after editing the %s (%s)" % (what, out))
            check(re.search(r"(:2:|line 2\b)", out), "verify does not name line 2", out)

        dropped = os.path.join(d.tmpdir, "dropped.jsonl")
        with open(dropped, "wb") as f:
            f.write(b"\n".join([lines[0]] + lines[2:]) + b"\n")
        rc, out = verify(dropped)
        eq(rc, 1, "verify exit after removing line 2 (%s)" % out)

        # Restart on the same file: the chain continues from the last line.
        d2 = h.Daemon(config(), tmpdir=d.tmpdir)
        with d2:
            m = decisions(d2)
            eq(len(d2.wait_audit(n + m)), n + m, "audit records after restart")
            eq(d2.stop(), 0, "exit status after restart")
        rc, out = verify(d.audit_path)
        eq((rc, out.strip()), (0, "ok %d records" % (n + m)), "verify after restart")
        lines2 = lines_of(d.audit_path)
        eq(lines2[:n], lines, "old lines unchanged")
        eq(json.loads(lines2[n])["prev"], h.sha256_hex(lines[-1]),
           "first record after restart chains to the last one before")


if __name__ == "__main__":
    h.run()
