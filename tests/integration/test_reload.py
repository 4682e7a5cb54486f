#!/usr/bin/env python3
"""SIGHUP reload (SPEC section 2): a new rule takes effect on the next connection, a
broken file is reported as PATH:LINE:COL and the old policy keeps serving, a removed
rule stops matching; SIGTERM exits 0 and the audit chain verifies with one record per
decision made.
"""

import re

import harness as h
from harness import check, eq, test

S = {"decisions": 0}


def get(d, host, path="/"):
    S["decisions"] += 1
    return h.curl("http://%s:%d%s" % (host, S["origin"].port, path), proxy=d.proxy_url())


def config(with_extra):
    rules = [h.rule("api", ports=[S["origin"].port])]
    if with_extra:
        rules.append(h.rule("extra", host="extra.example.test", ports=[S["origin"].port]))
    cfg = h.base_config(rules, resolve={"api.example.test": "127.0.0.1",
                                        "extra.example.test": "127.0.0.1"})
    cfg["listen"] = S["listen"]  # same ports: listeners are not reloaded
    return cfg


@test
def reload_sequence():
    with h.Origin() as o:
        S["origin"] = o
        S["listen"] = h.base_config([])["listen"]
        with h.Daemon(config(False)) as d:
            r = get(d, "extra.example.test")
            eq(r.status, 403, "before reload: status")
            eq(r.headers.get("x-airlock-decision"), "no-rule", "before reload: decision")
            eq(get(d, "api.example.test").status, 200, "before reload: existing rule")

            # Add rule "extra" and reload.
            d.write_config(config(True))
            ok, log = d.reload()
            check(ok, "reload failed", log)
            check(d.config_path in log, "reload line does not name the file", log)
            r = get(d, "extra.example.test", "/after")
            eq(r.status, 200, "after reload: status (%s)" % r.headers)
            eq(r.json()["path"], "/after", "after reload: origin path")

            # A broken file: an unknown top-level key on a known line.
            good = h.to_yaml(config(True))
            bad_line = good.count("\n") + 1
            d.write_config(good + "bogus_key: 1\n")
            ok, log = d.reload()
            check(not ok, "a broken config was accepted", log)
            check(re.search(re.escape(d.config_path) + r":%d:\d+: " % bad_line, log),
                  "reload error lacks PATH:%d:COL" % bad_line, log)
            check(d.alive(), "daemon died on a broken config")
            eq(get(d, "extra.example.test").status, 200, "old policy after failed reload")
            eq(get(d, "nowhere.example.test").status, 403, "old policy still denies")

            # A YAML syntax error is reported with a position too.
            d.write_config(good.replace("rules:", "rules: [", 1))
            ok, log = d.reload()
            check(not ok, "a syntax error was accepted", log)
            check(re.search(re.escape(d.config_path) + r":\d+:\d+: ", log),
                  "syntax error lacks PATH:LINE:COL", log)
            eq(get(d, "extra.example.test").status, 200, "old policy after syntax error")

            # Removing the rule takes effect too.
            d.write_config(config(False))
            ok, log = d.reload()
            check(ok, "reload failed", log)
            r = get(d, "extra.example.test")
            eq(r.status, 403, "after removing the rule: status")
            eq(r.headers.get("x-airlock-decision"), "no-rule", "after removing: decision")

            records = len(d.wait_audit(S["decisions"]))
            eq(records, S["decisions"], "audit records (one per decision)")
            eq(d.stop(), 0, "exit status after SIGTERM")
            rc, out = h.run_airlock(["audit", "verify", d.audit_path])
            eq(rc, 0, "audit verify exit (%s)" % out)
            eq(out.strip(), "ok %d records" % S["decisions"], "audit verify output")


@test
def sigterm_finishes_request_in_flight():
    # SPEC section 2: SIGTERM stops accepting and finishes in-flight requests.
    import threading
    with h.Origin() as o:
        S["origin"] = o
        S["listen"] = h.base_config([])["listen"]
        with h.Daemon(config(False)) as d:
            box = {}
            t = threading.Thread(target=lambda: box.update(r=h.curl(
                "http://api.example.test:%d/slow/1500" % o.port, proxy=d.proxy_url())))
            t.start()
            deadline = h.time.monotonic() + 5
            while not o.requests and h.time.monotonic() < deadline:
                h.time.sleep(0.02)
            check(o.requests, "slow request never reached the origin")
            eq(d.stop(), 0, "exit status")
            t.join(15)
            eq(box["r"].status, 200, "in-flight request after SIGTERM (%s)" % box["r"].stderr)
            check(not h.wait_port(d.http_port, 0.5), "still listening after exit")


if __name__ == "__main__":
    h.run()
