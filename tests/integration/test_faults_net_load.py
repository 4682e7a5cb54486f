#!/usr/bin/env python3
"""Network faults under load (issue 7): more connections than the default max_connections
(4096), and a storm of SIGHUPs, with good, changed and broken policies, while clients keep
making requests. The daemon must refuse the excess with 503 connection-limit and resume
afterwards, and every answer during the storm must be one the policy in force could give:
an inject rule is never forwarded without its credential, a gated request never without
approval.
"""

import os
import random
import resource
import signal
import socket
import subprocess
import threading
import time

import harness as h
from harness import check, eq, test
import fault_util as fu

DEFAULT_MAX_CONNECTIONS = 4096
EXTRA = 4
SRC = os.environ.get("AIRLOCK_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def raise_nofile(want):
    """Raises this process's soft RLIMIT_NOFILE (airlockd inherits it) to at least want."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise h.Skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, want))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# --- 4. more connections than max_connections -----------------------------------------
@test
def default_connection_limit_refuses_the_excess_and_recovers():
    if h.VALGRIND:
        raise h.Skip("4096 connections under valgrind (which also pins RLIMIT_NOFILE)")
    raise_nofile(2 * DEFAULT_MAX_CONNECTIONS + 1024)
    with fu.FaultOrigin() as o:
        # No max_connections: the default is under test. The header timeout only has to
        # outlast the test, so idle connections are not reaped while they are counted.
        cfg = h.base_config([h.rule("api", ports=[o.port])],
                            limits={"header_timeout": "120s"})
        with h.Daemon(cfg) as d:
            fu.wait_settled(d, 0)
            fds = fu.fd_count(d.proc.pid)
            n0 = len(d.audit_records())
            held = []
            try:
                t0 = time.monotonic()
                for _ in range(DEFAULT_MAX_CONNECTIONS):
                    held.append(socket.create_connection(("127.0.0.1", d.http_port), timeout=5))
                deadline = time.monotonic() + 30
                while fu.active(d) < DEFAULT_MAX_CONNECTIONS and time.monotonic() < deadline:
                    time.sleep(0.2)
                eq(fu.active(d), DEFAULT_MAX_CONNECTIONS, "connections_active at the limit")
                for i in range(EXTRA):
                    rep = fu.exchange(d.http_port, fu.request_bytes(o.port, "/over/%d" % i),
                                      timeout=5)
                    eq(rep.status, 503, "connection %d over the limit (%r)" % (
                        DEFAULT_MAX_CONNECTIONS + 1 + i, rep))
                    eq(rep.headers.get("x-airlock-decision"), "connection-limit", "decision")
                    check(rep.closed, "refused connection left open", rep)
                with socket.create_connection(("127.0.0.1", d.socks_port), timeout=5) as s:
                    s.sendall(b"\x05\x01\x02")
                    eq(h.recv_all(s, 5.0), b"\x05\xff", "SOCKS5 greeting over the limit")
                eq(fu.active(d), DEFAULT_MAX_CONNECTIONS, "refusals are not counted")
                # The admitted connections still work.
                held[0].sendall(fu.request_bytes(o.port, "/admitted"))
                status, _, body, _ = h.read_http_response(held[0], 5)
                eq((status, body), (200, b"ok /admitted 0\n"), "an admitted connection")
                took = time.monotonic() - t0
            finally:
                for s in held:
                    s.close()
            fu.wait_settled(d, 0, fds, timeout=30)
            fu.still_serves(d, o.port, "/after-limit")
            refused = [r for r in d.audit_records()[n0:] if r["decision"] == "connection-limit"]
            eq(len(refused), EXTRA + 1, "connection-limit audit records")
            eq(sorted(r["via"] for r in refused), ["http"] * EXTRA + ["socks5"], "their via")
            check(all(r["status"] == 503 for r in refused if r["via"] == "http"),
                  "status of the http refusals", refused)
            check(all(r["agent"] == "-" for r in refused), "agent of refusals", refused)
            check(took < 60, "4096 connections took %.1fs" % took)
            eq(h.run_airlock(["audit", "verify", d.audit_path])[0], 0, "audit chain verifies")
            eq(d.stop(), 0, "airlockd exit status")


def nofile_soft(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no Max open files line")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@test
def out_of_descriptors_pauses_accept_instead_of_spinning():
    if h.VALGRIND:
        raise h.Skip("valgrind keeps descriptors of its own and its CPU time is not ours")
    # Started with a soft limit of 1024, the daemon raises its own to fit max_connections.
    # Pushed below what it holds (prlimit), accept() fails with EMFILE while clients queue.
    with fu.FaultOrigin() as o:
        cfg = h.base_config([h.rule("api", ports=[o.port])])
        soft0, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft0, 1024), hard))
        try:
            d = h.Daemon(cfg)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft0, hard))
        with d:
            pid = d.proc.pid
            soft = nofile_soft(pid)
            check(soft >= min(hard, 2 * DEFAULT_MAX_CONNECTIONS + 64),
                  "airlockd left RLIMIT_NOFILE at %d for max_connections 4096" % soft)
            fu.wait_settled(d, 0)
            fds = fu.fd_count(pid)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (fds + 8, hard))
            socks = []
            try:
                for _ in range(24):
                    socks.append(socket.create_connection(("127.0.0.1", d.http_port),
                                                          timeout=5))
                time.sleep(0.3)
                log0, cpu0 = d.log_text().count("accept:"), cpu_seconds(pid)
                time.sleep(2.0)
                spent = cpu_seconds(pid) - cpu0
                lines = d.log_text().count("accept:") - log0
                check(lines > 0, "accept never failed: the test did not starve the daemon")
                check(spent < 0.5, "airlockd spent %.2fs CPU in 2s while out of fds" % spent)
                check(lines < 100, "%d accept error lines in 2s" % lines)
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
                # The connection queued last is accepted and served once fds are back.
                socks[-1].sendall(fu.request_bytes(o.port, "/queued"))
                status, _, body, _ = h.read_http_response(socks[-1], 5)
                eq((status, body), (200, b"ok /queued 0\n"), "the queued connection")
            finally:
                for s in socks:
                    s.close()
            fu.wait_settled(d, 0, fds)
            fu.still_serves(d, o.port, "/after-emfile")
            eq(d.stop(), 0, "airlockd exit status")


# --- 5. SIGHUP storm during traffic ---------------------------------------------------
SECRET = "storm-" + os.urandom(8).hex()
PIN = "4711"


def storm_config(d_listen, o, variant):
    """A: inject, gated and toggle allowed; B: inject and toggle denied; broken: refers to
    a credential that does not exist (the reload must fail and keep the old policy)."""
    p = o.port
    inject = h.rule("inject", ports=[p], path="/inject/*", action="inject", credential="svc",
                    allow_cleartext=True)
    toggle = h.rule("toggle", ports=[p], path="/toggle/*")
    if variant == "B":
        inject = h.rule("inject", ports=[p], path="/inject/*", action="deny")
        toggle = h.rule("toggle", ports=[p], path="/toggle/*", action="deny")
    if variant == "broken":
        inject["credential"] = "no-such-credential"
    rules = [inject,
             h.rule("gated", ports=[p], path="/gated/*", approve="cli"),
             toggle,
             h.rule("open", ports=[p], path="/open/*")]
    cfg = h.base_config(rules, listen=d_listen,
                        vault={"backend": "pkcs11", "pkcs11": {
                            "module": "/usr/lib/softhsm/libsofthsm2.so",
                            "token": "pkcs11:token=airlock", "pin": "env:AIRLOCK_PIN"}},
                        credentials={"svc": {"header": "Authorization",
                                             "format": "Bearer {secret}"}},
                        approvals={"timeout": "1s", "max_pending": 64, "max_body": "1KiB"})
    return cfg


def legit(kind, rep, origin_req):
    """None when rep is an answer the policy (A or B) could give to a /kind/ request, else
    the reason it is not. origin_req: what the origin recorded for it, or None."""
    dec = rep.headers.get("x-airlock-decision")
    forwarded = rep.status == 200 and dec is None
    if rep.status == 0:
        return "no response"
    if kind == "gated":
        if forwarded or origin_req is not None:
            return "gated request forwarded without approval"
        return None if (rep.status, dec) in ((403, "approval-timeout"),
                                             (429, "approval-queue-full")) else "unexpected"
    if forwarded != (origin_req is not None):
        return "response and origin disagree"
    if kind == "inject":
        if forwarded:
            auth = [v for k, v in origin_req["headers"] if k.lower() == "authorization"]
            return None if auth == ["Bearer " + SECRET] else "forwarded without its credential"
        return None if (rep.status, dec) in ((403, "deny"), (503, "vault-unavailable")) \
            else "unexpected"
    if kind == "toggle":
        return None if forwarded or (rep.status, dec) == (403, "deny") else "unexpected"
    return None if forwarded else "unexpected"  # open


class Clients:
    """Threads that make requests on fresh connections (and one kept-alive connection)
    until stopped; every answer is kept with its path."""

    KINDS = ("open", "toggle", "inject", "inject", "gated")

    def __init__(self, d, o, n=4):
        self.d, self.o = d, o
        self.lock = threading.Lock()
        self.results = []
        self.errors = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._fresh, args=(i,), daemon=True)
                        for i in range(n)]
        self.threads.append(threading.Thread(target=self._kept_alive, daemon=True))
        for t in self.threads:
            t.start()

    def _record(self, kind, path, rep):
        with self.lock:
            self.results.append((kind, path, rep))

    def _fresh(self, i):
        rnd = random.Random(i)
        for j in range(10000):  # bounded; stopped long before
            if self.stop.is_set():
                return
            kind = rnd.choice(self.KINDS)
            path = "/%s/t%d-%d" % (kind, i, j)
            try:
                rep = fu.exchange(self.d.http_port, fu.request_bytes(self.o.port, path), 8)
            except OSError as e:
                with self.lock:
                    self.errors.append((path, repr(e)))
                continue
            self._record(kind, path, rep)

    def _kept_alive(self):
        s = None
        for j in range(10000):
            if self.stop.is_set():
                break
            kind = ("open", "toggle", "inject")[j % 3]
            path = "/%s/ka-%d" % (kind, j)
            try:
                if s is None:
                    s = socket.create_connection(("127.0.0.1", self.d.http_port), timeout=5)
                s.sendall(fu.request_bytes(self.o.port, path))
                status, hdrs, body, _ = h.read_http_response(s, 8)
            except OSError:
                status, hdrs, body = 0, {}, b""
            if status == 0:
                with self.lock:
                    self.errors.append((path, "kept-alive connection ended"))
                s = None
                continue
            self._record(kind, path, fu.Reply(status, hdrs, body, False, 0))
            if hdrs.get("connection", "").lower() == "close":
                s.close()
                s = None
        if s is not None:
            s.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(20)
            check(not t.is_alive(), "a client thread hung")


@test
def sighup_storm_during_traffic_keeps_every_answer_legitimate():
    tok = h.make_tmpdir("airlock-token-")
    subprocess.run([os.path.join(SRC, "scripts/softhsm-setup"), tok, "airlock", PIN,
                    "99999999"], check=True, stdout=subprocess.DEVNULL)
    os.environ["SOFTHSM2_CONF"] = os.path.join(tok, "softhsm2.conf")
    os.environ["AIRLOCK_PIN"] = PIN
    with h.Origin() as o:
        listen = {"http": "127.0.0.1:%d" % h.free_port(),
                  "socks5": "127.0.0.1:%d" % h.free_port(), "control": "run/control.sock"}
        configs = {v: storm_config(listen, o, v) for v in ("A", "B", "broken")}
        with h.Daemon(configs["A"]) as d:
            eq(h.run_airlock(["-c", d.config_path, "init"])[0], 0, "airlock init")
            rc, out = h.run_airlock(["-c", d.config_path, "enroll", "svc"],
                                    input_bytes=SECRET.encode() + b"\n")
            eq(rc, 0, "enroll: " + out)
            rep = fu.exchange(d.http_port, fu.request_bytes(o.port, "/inject/first"), 8)
            eq(rep.status, 200, "injection works before the storm (%r)" % rep)
            log0 = len(d.log_text())
            clients = Clients(d, o)
            try:
                time.sleep(0.5)
                order = ["A", "B", "broken", "B", "A", "broken", "A"]
                for i in range(200):
                    d.write_config(configs[order[i % len(order)]])
                    d.proc.send_signal(signal.SIGHUP)
                    time.sleep(0.015)
                    check(d.alive(), "airlockd died during the storm", d.log_text()[-3000:])
                time.sleep(1.5)  # let held requests time out under the last policies
            finally:
                clients.finish()
            check(d.alive(), "airlockd died", d.log_text()[-3000:])
            log = d.log_text()[log0:]
            check("policy reloaded" in log and "reload failed" in log,
                  "the storm did both good and failed reloads", log[-2000:])
            results = list(clients.results)
            check(len(results) >= (10 if h.VALGRIND else 40), "too few requests during the "
                  "storm", len(results),
                  clients.errors[:5])
            check(len(clients.errors) <= len(results) // 20, "requests without an answer",
                  clients.errors[:10])
            by_path = {}
            for req in o.requests:
                by_path.setdefault(req["path"], []).append(req)
            bad = []
            kinds = set()
            for kind, path, rep in results:
                seen = by_path.get(path, [])
                if len(seen) > 1:
                    bad.append((path, "reached the origin %d times" % len(seen)))
                why = legit(kind, rep, seen[0] if seen else None)
                if why:
                    bad.append((path, why, rep))
                kinds.add((kind, rep.status))
            eq(bad[:5], [], "answers no policy could give")
            print("storm: %d answers %s, %d reloads, %d failed reloads" % (
                len(results), sorted(kinds), log.count("policy reloaded"),
                log.count("reload failed")), flush=True)
            for req in o.requests:
                check(not req["path"].startswith("/gated/"), "gated request at the origin", req)
                if req["path"].startswith("/inject/"):
                    auth = [v for k, v in req["headers"] if k.lower() == "authorization"]
                    eq(auth, ["Bearer " + SECRET], "credential of an injected request")
            # Both policies were in force at some point.
            check(("toggle", 200) in kinds and ("toggle", 403) in kinds,
                  "the storm never switched the policy", sorted(kinds))
            # Every answer has its audit record, with the same decision.
            recs = {}
            for r in d.wait_audit(len(results)):
                recs.setdefault(r.get("path"), r)
            for kind, path, rep in results:
                rec = recs.get(path)
                check(rec is not None, "no audit record for " + path)
                want = rep.headers.get("x-airlock-decision") or (
                    "inject" if kind == "inject" else "allow")
                eq((rec["decision"], rec["status"]), (want, rep.status), "audit of " + path)
            # Afterwards: a known policy, served normally.
            d.write_config(configs["A"])
            ok, _ = d.reload()
            check(ok, "final reload failed")
            r = h.curl("http://api.example.test:%d/inject/after" % o.port, proxy=d.proxy_url())
            eq(r.status, 200, "inject after the storm (%r)" % r)
            auth = [v for k, v in r.json()["headers"] if k.lower() == "authorization"]
            eq(auth, ["Bearer " + SECRET], "credential after the storm")
            fu.wait_settled(d, 0)
            eq(h.run_airlock(["audit", "verify", d.audit_path])[0], 0, "audit chain verifies")
            eq(d.stop(), 0, "airlockd exit status")


if __name__ == "__main__":
    h.run()
