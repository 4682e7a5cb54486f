#!/usr/bin/env python3
"""TLS interception (SPEC section 5) against a real HTTPS origin on 127.0.0.1 whose
certificate comes from the test CA given as upstream_ca: per-request decisions and
injection inside TLS through the HTTP proxy and SOCKS5, SNI and Host checks, upstream
certificate failures, `airlock env`, and the blind tunnel for plain-allow hosts.
"""

import hashlib
import os
import socket
import ssl
import subprocess

import harness as h
from harness import check, eq, test

SRC = os.environ.get("AIRLOCK_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
PKI = os.path.join(SRC, "tests", "data", "tls")
SECRET = b"ghp-" + os.urandom(10).hex().encode()
PIN = "2468"


def pki(name):
    return (os.path.join(PKI, name + ".pem"), os.path.join(PKI, name + ".key"))


def auth_hash(origin):
    """sha256 of the Authorization headers the origin saw last (never the value itself)."""
    hdrs = [v for k, v in origin.requests[-1]["headers"] if k.lower() == "authorization"]
    return len(hdrs), hashlib.sha256("|".join(hdrs).encode()).hexdigest()


def want_hash():
    return 1, hashlib.sha256(b"Bearer " + SECRET).hexdigest()


class Env:
    """A SoftHSM token, a daemon with interception and an enrolled credential."""

    def __init__(self, rules, origin_port):
        tok = h.make_tmpdir("airlock-tok-")
        subprocess.run([os.path.join(SRC, "scripts/softhsm-setup"), tok, "airlock", PIN, "13579"],
                       check=True, stdout=subprocess.DEVNULL)
        os.environ["SOFTHSM2_CONF"] = os.path.join(tok, "softhsm2.conf")
        os.environ["AIRLOCK_PIN"] = PIN
        cfg = h.base_config(rules, tls={"intercept": True, "upstream_ca": pki("ca")[0]},
                            vault={"backend": "pkcs11", "pkcs11": {
                                "module": "/usr/lib/softhsm/libsofthsm2.so",
                                "token": "pkcs11:token=airlock", "pin": "env:AIRLOCK_PIN"}},
                            credentials={"gh": {"header": "Authorization",
                                                "format": "Bearer {secret}"}})
        self.d = h.Daemon(cfg, start=False)
        c = ["-c", self.d.config_path]
        eq(h.run_airlock(c + ["init"])[0], 0, "airlock init")
        eq(h.run_airlock(c + ["enroll", "gh"], input_bytes=SECRET + b"\n")[0], 0, "enroll")
        self.ca = os.path.join(self.d.tmpdir, "state", "ca.pem")
        check(os.path.exists(self.ca), "airlock init made no CA")
        self.d.start()

    def get(self, url, socks=False, **kw):
        args = list(kw.pop("args", ())) + ["--cacert", self.ca]
        if socks:
            return h.curl(url, socks5="127.0.0.1:%d" % self.d.socks_port,
                          proxy_user="%s:%s" % (h.AGENT, h.TOKEN), args=args, **kw)
        return h.curl(url, proxy=self.d.proxy_url(), args=args, **kw)


def api_rules(port):
    return [h.rule("admin", ports=[port], path="/admin*", action="deny"),
            h.rule("read", ports=[port], methods=["GET"], action="inject", credential="gh")]


@test
def decisions_and_injection_inside_tls():
    with h.Origin(tls=pki("server")) as o:
        e = Env(api_rules(o.port), o.port)
        with e.d:
            base = "https://api.example.test:%d" % o.port
            for socks in (False, True):
                r = e.get(base + "/repos/x", socks=socks)
                eq(r.status, 200, "GET on the read rule (socks=%s)" % socks)
                eq(auth_hash(o), want_hash(), "injected exactly once (socks=%s)" % socks)
            seen = len(o.requests)
            r = e.get(base + "/repos/x", data=b"x=1")
            eq(r.status, 403, "POST with no rule")
            eq(r.headers.get("x-airlock-decision"), "no-rule", "POST decision")
            r = e.get(base + "/admin/users")
            eq(r.status, 403, "deny rule for a path")
            eq(r.headers.get("x-airlock-rule"), "admin", "deciding rule")
            eq(len(o.requests), seen, "denied requests never reached the origin")
            check(SECRET not in open(e.d.audit_path, "rb").read(), "secret in the audit log")


@test
def keep_alive_requests_are_decided_one_by_one():
    with h.Origin(tls=pki("server")) as o:
        e = Env(api_rules(o.port), o.port)
        with e.d:
            base = "https://api.example.test:%d" % o.port
            r = e.get(base + "/repos/a", extra_urls=[base + "/admin/b"],
                      write_out="%{http_code} %{num_connects}\n")
            codes = [ln.split() for ln in r.write_out.strip().splitlines()]
            eq([c[0] for c in codes], ["200", "403"], "statuses on one connection")
            eq(codes[1][1], "0", "second request reused the connection")
            recs = [x for x in e.d.wait_audit(2) if x["via"] == "connect"]
            eq([x["decision"] for x in recs[-2:]], ["inject", "deny"], "both audited")


@test
def sni_and_host_must_name_the_target():
    with h.Origin(tls=pki("server")) as o:
        e = Env(api_rules(o.port), o.port)
        with e.d:
            s = socket.create_connection(("127.0.0.1", e.d.http_port), timeout=5)
            s.sendall(("CONNECT api.example.test:%d HTTP/1.1\r\nHost: api.example.test\r\n"
                       "Proxy-Authorization: %s\r\n\r\n" % (o.port, h.basic_auth()))
                      .encode())
            check(b" 200 " in h.recv_all(s, timeout=2, limit=200), "CONNECT accepted")
            ctx = ssl.create_default_context(cafile=e.ca)
            ctx.check_hostname = False
            failed = False
            try:
                ctx.wrap_socket(s, server_hostname="other.example.test").do_handshake()
            except (ssl.SSLError, OSError):
                failed = True
            check(failed, "handshake with a foreign SNI succeeded")
            recs = e.d.wait_audit(1)
            eq(recs[-1]["decision"], "host-mismatch", "SNI mismatch audited")
            r = e.get("https://api.example.test:%d/repos/x" % o.port,
                      headers=["Host: other.example.test"])
            eq(r.status, 403, "Host header naming another host")
            eq(r.headers.get("x-airlock-decision"), "host-mismatch", "Host decision")


@test
def bad_upstream_certificates_are_502_and_get_no_credential():
    for cert in ("unknown", "expired", "wrongname"):
        with h.Origin(tls=pki(cert)) as o:
            e = Env(api_rules(o.port), o.port)
            with e.d:
                r = e.get("https://api.example.test:%d/repos/x" % o.port)
                eq(r.status, 502, "upstream cert %s" % cert)
                eq(r.headers.get("x-airlock-decision"), "upstream-tls", "decision (%s)" % cert)
                eq(len(o.requests), 0, "origin got a request over a bad certificate")


@test
def env_routes_curl_and_python_with_no_flags():
    with h.Origin(tls=pki("server")) as o:
        e = Env(api_rules(o.port), o.port)
        with e.d:
            tf = os.path.join(e.d.tmpdir, "agent.token")
            with open(tf, "w") as f:
                f.write(h.TOKEN + "\n")
            url = "https://api.example.test:%d/repos/env" % o.port
            script = ('eval "$(%s -c %s env --agent %s --token-file %s)" && '
                      'curl -s -o /dev/null -w "%%{http_code}" %s && echo && '
                      'python3 -c "import urllib.request as u; '
                      'print(u.urlopen(\'%s\').status)"' % (h.AIRLOCK, e.d.config_path,
                                                             h.AGENT, tf, url, url))
            env = {k: v for k, v in os.environ.items() if k not in h._PROXY_ENV}
            out = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=60, env=env)
            eq(out.stdout.decode().split(), ["200", "200"], "curl and python via env")
            eq(auth_hash(o), want_hash(), "python's request was injected")


@test
def plain_allow_host_is_tunnelled_blind():
    with h.Origin(tls=pki("server")) as o:
        e = Env([h.rule("blind", ports=[o.port], action="allow")], o.port)
        with e.d:
            url = "https://api.example.test:%d/x" % o.port
            r = h.curl(url, proxy=e.d.proxy_url(), args=["--cacert", pki("ca")[0]])
            eq(r.status, 200, "origin's own certificate seen through the tunnel")
            r = h.curl(url, proxy=e.d.proxy_url(), args=["--cacert", e.ca])
            check(r.rc != 0, "airlock's CA must not verify a blind tunnel", r.stderr)
            eq(len(o.requests), 1, "only the first request reached the origin")


if __name__ == "__main__":
    h.run()
