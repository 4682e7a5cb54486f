#!/usr/bin/env python3
"""Storage faults while requests flow (issue 7): the credential token vanishes mid-run
(the SoftHSM token directory is removed; swtpm is killed) and the audit log's disk fills
up. Every answer is either right or the named 503; the origin, which records every
request it receives, never sees an inject-rule request without exactly the right
credential, nor a request that has no audit record; after the fault is repaired the
daemon serves again without a restart, and the audit chain still verifies.
"""

import json
import os
import time

import harness as h
from harness import check, eq, test
from fault_dev_util import SECRET, Backend, Hammer, ProxyClient, TinyDisk
from fault_dev_util import vault_cli as cli
from approval_util import BgCurl, audit_for, wait_new_item


def bearer_of(rec):
    return [v for k, v in rec["headers"] if k.lower() == "authorization"]


def inject_config(origin, backend):
    return h.base_config([h.rule("api", ports=[origin.port], action="inject", credential="gh",
                                 allow_cleartext=True)],
                         vault=backend.vault,
                         credentials={"gh": {"header": "Authorization",
                                             "format": "Bearer {secret}"}})


def check_answers(results, origin):
    """Every answer is an injected 200 or a 503 vault-unavailable; every request the origin
    got carried exactly the right credential once. Returns the statuses in order."""
    want = "Bearer " + SECRET.decode()
    for n, status, decision, body in results:
        check(SECRET not in body or status == 200, "secret in a generated body", n, body)
        if status == 200:
            echo = json.loads(body)
            eq(echo["path"], "/h/%d" % n, "echo path")
            eq(bearer_of(echo), [want], "credential the origin saw for /h/%d" % n)
        else:
            eq((status, decision), (503, "vault-unavailable"), "answer to /h/%d" % n)
    for rec in origin.requests:
        eq(bearer_of(rec), [want], "credential on %s at the origin" % rec["path"])
    return [r[1] for r in results]


def token_vanishes(kind, remove, restore):
    b = Backend(kind)
    try:
        with h.Origin() as o, h.Daemon(inject_config(o, b)) as d:
            eq(cli(d, "init")[0], 0, "init")
            eq(cli(d, "enroll", "gh", secret=SECRET + b"\n")[0], 0, "enroll")
            hm = Hammer(d, o.port).start()
            try:
                hm.wait_more(20)
                remove(b)
                # Until the daemon has noticed, answers may still be injections (the token
                # may have finished an operation it had started): wait for the 503s.
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    if sum(1 for r in hm.snapshot()[-10:] if r[1] == 503) == 10:
                        break
                    time.sleep(0.05)
                hm.wait_more(20)
                at_restore = hm.count()
                restore(b)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    tail = hm.snapshot()[at_restore:]
                    if sum(1 for r in tail[-10:] if r[1] == 200) == 10:
                        break
                    time.sleep(0.05)
            finally:
                results = hm.stop()
            statuses = check_answers(results, o)
            first_503 = statuses.index(503) if 503 in statuses else None
            check(first_503 is not None, "no 503 while the token was gone")
            check(statuses[:first_503].count(200) >= 20, "injected before the fault")
            check(statuses[-10:] == [200] * 10, "injection did not resume", statuses[-30:])
            eq(len(o.requests), statuses.count(200), "requests at the origin")
            check(d.alive(), "daemon still running")
            recs = d.wait_audit(len(results))
            decisions = [r["decision"] for r in recs]
            check(set(decisions) <= {"inject", "vault-unavailable"}, "audit decisions",
                  set(decisions))
            eq(decisions.count("inject"), statuses.count(200), "audited injections")
            print("  %s: %d answers, %d x 503 vault-unavailable" % (
                kind, len(statuses), statuses.count(503)), flush=True)
            eq(d.stop(), 0, "exit status")
    finally:
        b.close()


@test
def softhsm_token_dir_removed_mid_run():
    def remove(b):
        os.rename(os.path.join(b.dir, "tokens"), os.path.join(b.dir, "tokens.away"))

    def restore(b):
        os.rename(os.path.join(b.dir, "tokens.away"), os.path.join(b.dir, "tokens"))
    token_vanishes("pkcs11", remove, restore)


@test
def swtpm_killed_mid_run():
    def kill(b):
        with open(os.path.join(b.dir, "swtpm.pid")) as f:
            pid = int(f.read().strip())
        os.kill(pid, 9)
        for _ in range(100):  # bounded: wait until it is gone
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        os.unlink(os.path.join(b.dir, "swtpm.pid"))
    # swtpm-start reuses the port in the port file and the same state dir: a reboot of
    # the same TPM, so the sealed blob unseals again.
    token_vanishes("tpm2", kill, lambda b: b.start_tpm())


@test
def token_gone_while_an_inject_request_waits_for_approval():
    """The token goes away while an inject request is held: the approval releases it,
    the credential cannot be had, so it is answered 503 vault-unavailable and the origin
    sees nothing. Approved again once the token is back, it goes out injected."""
    b = Backend("pkcs11")
    try:
        with h.Origin() as o:
            cfg = inject_config(o, b)
            cfg["rules"][0]["approve"] = "cli"
            cfg["approvals"] = {"timeout": "30s", "max_pending": 8, "max_body": "1KiB"}
            with h.Daemon(cfg) as d:
                eq(cli(d, "init")[0], 0, "init")
                eq(cli(d, "enroll", "gh", secret=SECRET + b"\n")[0], 0, "enroll")
                u = "http://api.example.test:%d/held" % o.port
                tokens = os.path.join(b.dir, "tokens")
                for phase in ("gone", "back"):
                    bg = BgCurl(d, u, data=b"x=1")
                    iid, _ = wait_new_item(d, set())
                    if phase == "gone":
                        os.rename(tokens, tokens + ".away")
                    eq(cli(d, "approve", iid)[0], 0, "approve")
                    r = bg.result()
                    rec = audit_for(d, iid)
                    if phase == "gone":
                        eq((r.status, r.headers.get("x-airlock-decision")),
                           (503, "vault-unavailable"), "approved while the token is gone")
                        eq(rec.get("decision"), "vault-unavailable", "audit decision")
                        eq(o.requests, [], "requests at the origin")
                        os.rename(tokens + ".away", tokens)
                        time.sleep(0.3)  # the daemon retries the token at most every 250 ms
                    else:
                        eq(r.status, 200, "approved with the token back (%r)" % r)
                        eq(rec.get("decision"), "inject", "audit decision")
                check(str(rec.get("approver")).startswith("cli:"), "approver", rec)
                eq(len(o.requests), 1, "requests at the origin")
                eq(bearer_of(o.requests[0]), ["Bearer " + SECRET.decode()], "credential")
                eq(d.stop(), 0, "exit status")
    finally:
        b.close()


# --- the audit log's disk fills up ---------------------------------------------------------
def verify(path):
    return h.run_airlock(["audit", "verify", path])


@test
def audit_disk_full_denies_then_recovers():
    with TinyDisk(1 << 20) as disk, h.Origin() as o:
        audit_path = os.path.join(disk.dir, "audit.jsonl")
        cfg = h.base_config([h.rule("api", ports=[o.port])], audit={"path": audit_path})
        d = h.Daemon(cfg, start=False)
        try:
            disk.start_daemon(d)
            c = ProxyClient(d, port=o.port)
            for i in range(20):
                eq(c.get("/a/%d" % i)[0], 200, "before the disk filled")
            eq(len(d.wait_audit(20)), 20, "audit records before the fault")
            disk.fill(d)
            answers = []
            for i in range(3000):  # bounded: the daemon's reserve is far smaller
                status, hdrs, _ = c.get("/b/%d" % i)
                answers.append((status, hdrs.get("x-airlock-decision")))
                check(status in (200, 503), "answer while the disk is full", status, hdrs)
                if status == 503:
                    break
            eq(answers[-1], (503, "audit-unavailable"), "the disk filled up")
            for i in range(10):
                status, hdrs, _ = c.get("/c/%d" % i)
                eq((status, hdrs.get("x-airlock-decision")), (503, "audit-unavailable"),
                   "answer while the disk stays full")
            check(d.alive(), "daemon died on a full disk")
            log = [ln for ln in d.log_text().splitlines() if "denying requests" in ln]
            check(log and audit_path in log[0], "no clear log line about the audit log",
                  d.log_text()[-2000:])
            print("  log: " + log[0], flush=True)
            disk.free(d)
            for _ in range(20):  # bounded: the first answer after freeing may still be 503
                status, hdrs, _ = c.get("/d/x")
                if status == 200:
                    break
                eq(hdrs.get("x-airlock-decision"), "audit-unavailable", "decision")
            eq(status, 200, "served again once space was freed")
            for i in range(5):
                eq(c.get("/e/%d" % i)[0], 200, "after recovery")
            c.close()
            # Nothing was served unaudited: every request the origin got has its record.
            recs = d.wait_audit(len(o.requests))
            eq(d.stop(), 0, "exit status")
            recs = d.audit_records()
            allowed = sorted(r["path"] for r in recs if r["decision"] == "allow")
            served = sorted(r["path"] for r in o.requests)
            eq(sorted(set(served) - set(allowed)), [], "served but not audited")
            eq(sorted(set(allowed) - set(served)), [], "audited as allow but not served")
            eq(len(allowed), len(served), "records of served requests")
            check(any(r["decision"] == "audit-unavailable" for r in recs),
                  "no denial was audited")
            rc, out = verify(audit_path)
            eq((rc, out.strip()), (0, "ok %d records" % len(recs)), "chain across the gap")
            print("  %s: %d served before the first 503, %d records" % (
                disk.mode, len(answers) - 1, len(recs)), flush=True)
        finally:
            if d.alive():
                d._kill()


if __name__ == "__main__":
    h.run()
