#!/usr/bin/env python3
"""Credential injection from the vault (SPEC section 4), on both token backends: SoftHSM
through PKCS#11 and swtpm through TPM 2.0. The origin answers only with a hash of the
Authorization header it received, so the secret's single legitimate copy ends at the
origin and the daemon's memory can be scanned for it afterwards.
"""

import hashlib
import http.server
import os
import shutil
import subprocess
import threading

import harness as h
from harness import check, eq, test
from token_util import PIN, Backend, scan_memory

SRC = os.environ.get("AIRLOCK_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
SECRET = b"tok-" + os.urandom(12).hex().encode()


class HashOrigin:
    """Answers every request with sha256 of its Authorization headers (joined by '|') and
    how many there were; never echoes a header value."""

    def __init__(self):
        seen = self.seen = []

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                auth = self.headers.get_all("Authorization") or []
                seen.append(len(auth))
                body = ("%d %s" % (len(auth), hashlib.sha256("|".join(auth).encode())
                                   .hexdigest())).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", h.free_port()), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def expected(secret=SECRET):
    return "1 " + hashlib.sha256(b"Bearer " + secret).hexdigest()


def config(origin, backend, **rule_kw):
    kw = {"credential": "gh", "allow_cleartext": True}
    kw.update(rule_kw)
    return h.base_config([h.rule("api", ports=[origin.port], action="inject", **kw)],
                         vault=backend.vault,
                         credentials={"gh": {"header": "Authorization",
                                             "format": "Bearer {secret}"}})


def cli(d, *args, secret=None):
    return h.run_airlock(["-c", d.config_path] + list(args), input_bytes=secret)


def get(d, origin, headers=()):
    return h.curl("http://api.example.test:%d/repos/x?q=1" % origin.port, proxy=d.proxy_url(),
                  headers=headers)


def enroll_and_list(kind):
    with Backend(kind) as b, HashOrigin() as o:
        with h.Daemon(config(o, b)) as d:
            eq(cli(d, "init")[0], 0, "init")
            eq(cli(d, "init")[0], 0, "init again (idempotent)")
            rc, out = cli(d, "enroll", "gh", secret=SECRET + b"\n")
            eq(rc, 0, "enroll: " + out)
            rc, out = cli(d, "list")
            eq(rc, 0, "list")
            check("gh" in out and kind in out, "list shows name and backend", out)
            check(SECRET.decode() not in out, "list never shows the secret", out)
            rc, out = cli(d, "enroll", "gh", secret=b"other\n")
            eq(rc, 1, "enroll over an existing name without --replace")
            eq(cli(d, "enroll", "gh", "--replace", secret=b"other\n")[0], 0, "enroll --replace")
            eq(cli(d, "remove", "gh")[0], 0, "remove")
            check("gh " not in cli(d, "list")[1], "removed credential is gone")


def injected_once_and_nowhere_else(kind):
    with Backend(kind) as b, HashOrigin() as o:
        with h.Daemon(config(o, b)) as d:
            eq(cli(d, "init")[0], 0, "init")
            eq(cli(d, "enroll", "gh", secret=SECRET + b"\n")[0], 0, "enroll")
            r = get(d, o, headers=["Authorization: Bearer from-the-client"])
            eq(r.status, 200, "injected request")
            eq(r.body.decode(), expected(), "origin saw exactly one injected header")
            recs = d.wait_audit(1)
            eq(recs[-1]["decision"], "inject", "audit decision")
            eq(recs[-1]["credential"], "gh", "audit credential")
            pid = d.proc.pid
            # Positive control: the scan does see the daemon's data (its policy's host).
            check(scan_memory(pid, b"api.example.test") > 0, "memory scan reads nothing")
            eq(scan_memory(pid, SECRET), 0, "secret bytes left in airlockd memory")
            for name in ("cmdline", "environ"):
                with open("/proc/%d/%s" % (pid, name), "rb") as f:
                    check(SECRET not in f.read(), "secret in /proc/PID/" + name)
            d.stop()
            for root, _, files in os.walk(d.tmpdir):
                for fn in files:
                    p = os.path.join(root, fn)
                    if os.path.isfile(p) and not os.path.islink(p):
                        with open(p, "rb") as f:
                            check(SECRET not in f.read(), "secret found in " + p)
            d.start()
            r = get(d, o)
            eq(r.body.decode(), expected(), "injection after a daemon restart")


@test
def pkcs11_enroll_list_replace_remove():
    enroll_and_list("pkcs11")


@test
def tpm2_enroll_list_replace_remove():
    enroll_and_list("tpm2")


@test
def pkcs11_injects_exactly_once_and_leaves_no_copy():
    injected_once_and_nowhere_else("pkcs11")


@test
def tpm2_injects_exactly_once_and_leaves_no_copy():
    injected_once_and_nowhere_else("tpm2")


@test
def cleartext_injection_needs_allow_cleartext():
    with Backend("pkcs11") as b, HashOrigin() as o:
        with h.Daemon(config(o, b, allow_cleartext=False)) as d:
            eq(cli(d, "init")[0], 0, "init")
            eq(cli(d, "enroll", "gh", secret=SECRET + b"\n")[0], 0, "enroll")
            r = get(d, o)
            eq(r.status, 403, "cleartext injection refused")
            eq(r.headers.get("x-airlock-decision"), "deny", "decision")
            eq(o.seen, [], "origin saw nothing")


def broken_token(kind, breaker, repair):
    with Backend(kind) as b, HashOrigin() as o:
        with h.Daemon(config(o, b)) as d:
            eq(cli(d, "init")[0], 0, "init")
            eq(cli(d, "enroll", "gh", secret=SECRET + b"\n")[0], 0, "enroll")
            eq(get(d, o).body.decode(), expected(), "injected before the fault")
            breaker(b, d)
            r = get(d, o)
            eq(r.status, 503, "request while the token is broken")
            eq(r.headers.get("x-airlock-decision"), "vault-unavailable", "decision")
            check(SECRET not in r.body, "secret in an error body")
            eq(len(o.seen), 1, "origin saw nothing while the token was broken")
            if repair is not None:
                repair(b, d)
                for _ in range(40):  # bounded: the daemon retries the token every 250 ms
                    r = get(d, o)
                    if r.status == 200:
                        break
                    h.time.sleep(0.25)
                eq(r.body.decode(), expected(), "injected again after the token came back")
            check(d.alive(), "daemon still running")


@test
def pkcs11_hold_keeps_the_secret_for_its_duration():
    """hold: 60s unseals once and formats later requests from the held copy, so they are
    injected even with the token gone; a hold: 0s credential on the same token is not."""
    with Backend("pkcs11") as b, HashOrigin() as o:
        cfg = config(o, b, credential="held")
        cfg["rules"].insert(0, h.rule("now", ports=[o.port], action="inject", credential="gh",
                                      path="/now", allow_cleartext=True))
        cfg["credentials"]["held"] = {"header": "Authorization", "format": "Bearer {secret}",
                                      "hold": "60s"}
        with h.Daemon(cfg) as d:
            eq(cli(d, "init")[0], 0, "init")
            eq(cli(d, "enroll", "gh", secret=SECRET + b"\n")[0], 0, "enroll gh")
            eq(cli(d, "enroll", "held", secret=SECRET + b"\n")[0], 0, "enroll held")
            eq(get(d, o).body.decode(), expected(), "first held injection")
            os.rename(os.path.join(b.dir, "tokens"), os.path.join(b.dir, "tokens.away"))
            for i in range(3):
                eq(get(d, o).body.decode(), expected(), "held injection %d, token gone" % i)
            r = h.curl("http://api.example.test:%d/now" % o.port, proxy=d.proxy_url())
            eq(r.status, 503, "hold: 0s credential with the token gone")
            eq(len(o.seen), 4, "origin saw only the held injections")


def flip_blob(b, d):
    p = os.path.join(d.tmpdir, "vault", "gh.sealed")
    data = bytearray(open(p, "rb").read())
    data[-5] ^= 0x40
    open(p, "wb").write(bytes(data))


@test
def pkcs11_altered_blob_is_503():
    broken_token("pkcs11", flip_blob, None)


@test
def tpm2_altered_blob_is_503():
    broken_token("tpm2", flip_blob, None)


@test
def pkcs11_token_removed_then_restored():
    def remove(b, d):
        os.rename(os.path.join(b.dir, "tokens"), os.path.join(b.dir, "tokens.away"))

    def restore(b, d):
        os.rename(os.path.join(b.dir, "tokens.away"), os.path.join(b.dir, "tokens"))
    broken_token("pkcs11", remove, restore)


@test
def tpm2_swtpm_stopped_then_restarted():
    broken_token("tpm2", lambda b, d: b.stop_tpm(), lambda b, d: b.start_tpm())


def put_primary(b, impostor):
    """Evicts the storage primary at 0x81000a1c and, with impostor, persists another
    storage key there (ECC P-256 without noDA: another key, another name). No client may
    be connected: swtpm serves one connection at a time."""
    env = dict(os.environ, TPM2TOOLS_TCTI=b.tcti)
    cmds = [["tpm2_evictcontrol", "-Q", "-C", "o", "-c", "0x81000a1c"]]
    if impostor:
        cmds += [["tpm2_createprimary", "-Q", "-C", "o", "-G", "ecc256:aes128cfb", "-c",
                  "other.ctx", "-a",
                  "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth"],
                 ["tpm2_evictcontrol", "-Q", "-C", "o", "-c", "other.ctx", "0x81000a1c"],
                 ["tpm2_flushcontext", "-t"]]
    for c in cmds:
        subprocess.run(c, env=env, cwd=b.dir, check=True, timeout=h.scaled(30),
                       stdout=subprocess.DEVNULL)


@test
def tpm2_substituted_primary_is_refused():
    """The storage primary's name is recorded at init and checked on every connection
    before its key salts a session: another key at the handle (what an attacker on the bus
    would answer ReadPublic with) gets 503 vault-unavailable in the daemon and exit 1 from
    the CLI; the SRK re-created from the same template matches the record again."""
    with Backend("tpm2") as b, HashOrigin() as o:
        with h.Daemon(config(o, b), start=False) as d:
            eq(cli(d, "init")[0], 0, "init")
            eq(cli(d, "enroll", "gh", secret=SECRET + b"\n")[0], 0, "enroll")
            rec = os.path.join(d.tmpdir, "vault", "tpm2-primary.name")
            eq(os.stat(rec).st_mode & 0o777, 0o600, "mode of the primary's record")
            put_primary(b, impostor=True)
            d.start()
            r = get(d, o)
            eq(r.status, 503, "request with another primary at the handle")
            eq(r.headers.get("x-airlock-decision"), "vault-unavailable", "decision")
            eq(o.seen, [], "origin saw nothing")
            check(d.alive(), "daemon still running")
            d.stop()
            mismatch = "storage primary at 0x81000a1c does not match the one recorded at init"
            for args in (["enroll", "x"], ["init"]):
                rc, out = cli(d, *args, secret=b"y\n")
                eq(rc, 1, " ".join(args) + " with another primary: " + out)
                check(mismatch in out, "the CLI names the mismatch", out)
            put_primary(b, impostor=False)
            eq(cli(d, "init")[0], 0, "init re-creates the same primary")
            d.start()
            eq(get(d, o).body.decode(), expected(), "injected with the primary back")


@test
def blob_copied_to_another_name_fails():
    with Backend("pkcs11") as b, HashOrigin() as o:
        cfg = config(o, b, credential="other")
        cfg["credentials"]["other"] = {"header": "Authorization", "format": "Bearer {secret}"}
        with h.Daemon(cfg) as d:
            eq(cli(d, "init")[0], 0, "init")
            eq(cli(d, "enroll", "gh", secret=SECRET + b"\n")[0], 0, "enroll")
            vault = os.path.join(d.tmpdir, "vault")
            shutil.copy(os.path.join(vault, "gh.sealed"), os.path.join(vault, "other.sealed"))
            r = get(d, o)
            eq(r.status, 503, "renamed blob refused")
            eq(o.seen, [], "origin saw nothing")


@test
def pkcs11_wrong_pin():
    with Backend("pkcs11") as b, HashOrigin() as o:
        try:
            with h.Daemon(config(o, b), start=False) as d:
                eq(cli(d, "init")[0], 0, "init")
                eq(cli(d, "enroll", "gh", secret=SECRET + b"\n")[0], 0, "enroll")
                os.environ["AIRLOCK_PIN"] = "0000"
                rc, out = cli(d, "list")
                d.start()
                r = get(d, o)
                eq(r.status, 503, "wrong PIN in the daemon")
                eq(r.headers.get("x-airlock-decision"), "vault-unavailable", "decision")
                rc, out = cli(d, "enroll", "x", secret=b"y\n")
                eq(rc, 1, "enroll with a wrong PIN")
                check("PIN" in out or "pin" in out, "the CLI names the PIN", out)
        finally:
            os.environ["AIRLOCK_PIN"] = PIN


if __name__ == "__main__":
    h.run()
