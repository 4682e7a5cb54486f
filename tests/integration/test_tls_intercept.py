#!/usr/bin/env python3
"""Acceptance of TLS interception (issue 5, SPEC section 5) with one daemon, one SoftHSM
token and HTTPS origins on 127.0.0.1 signed by the test CA: per-request decisions and
injection inside TLS, keep-alive, SNI/Host checks, bad upstream certificates, `airlock
env`, and the blind tunnel. The origins answer with a hash of the Authorization headers
they saw, never the value, so the secret never travels back to the client.
"""

import hashlib
import http.server
import os
import socket
import ssl
import subprocess
import threading

import harness as h
import ports
from harness import check, eq, test

PKI = h.TLS_DIR
SECRET = b"ghp-" + os.urandom(12).hex().encode()
PIN = "1234"
HOST = "api.example.test"


def pki(name):
    return (os.path.join(PKI, name + ".pem"), os.path.join(PKI, name + ".key"))


def want_body(secret=SECRET):
    return ("1 " + hashlib.sha256(b"Bearer " + secret).hexdigest()).encode()


class HashOrigin:
    """HTTPS on 127.0.0.1 with cert/key; every request is answered with "N sha256" of its
    Authorization headers (joined by '|') and recorded as (method, path, N, hash). The
    TLS handshake runs in the connection's thread; accepts and handshake failures are
    counted so a test can tell "dialled and refused" from "never dialled"."""

    def __init__(self, cert):
        seen = self.seen = []
        self.accepts = 0
        self.tls_errors = 0
        me = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 15

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                if 0 < n <= 1 << 20:
                    self.rfile.read(n)
                auth = self.headers.get_all("Authorization") or []
                digest = hashlib.sha256("|".join(auth).encode()).hexdigest()
                seen.append((self.command, self.path, len(auth), digest))
                body = ("%d %s" % (len(auth), digest)).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _any

            def log_message(self, *a):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*pki(cert))

        class S(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, addr):
                me.accepts += 1
                request.settimeout(15)
                try:
                    request = ctx.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    me.tls_errors += 1
                    request.close()
                    return
                super().finish_request(request, addr)

        for attempt in range(16):  # bounded: a picked port can be taken before the bind
            try:
                self.srv = S(("127.0.0.1", ports.free_port()), H)
                break
            except OSError:
                if attempt == 15:
                    raise
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


class PlainOrigin(h.AcceptLoop):
    """Plain TCP on 127.0.0.1 answering anything with an HTTP/1.1 error, no TLS: what a
    TLS client makes of it is an OpenSSL error, not a certificate one."""

    def handle(self, conn):
        with conn:
            conn.settimeout(5)
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


class World:
    """The token, the origins and one daemon whose rules cover them all:
    main (deny /admin*, inject GET), blind (plain allow), and one origin per bad cert."""

    BAD = ("unknown", "expired", "wrongname")

    def __enter__(self):
        self.origins = []
        self.main = self._origin("server")
        self.blind = self._origin("server")
        self.bad = {name: self._origin(name) for name in self.BAD}
        self.plain = PlainOrigin()
        self.origins.append(self.plain)
        tok = h.make_tmpdir("airlock-tok-")
        subprocess.run([os.path.join(h.SOURCE_DIR, "scripts", "softhsm-setup"), tok, "airlock",
                        PIN, "5678"], check=True, stdout=subprocess.DEVNULL, timeout=60)
        os.environ["SOFTHSM2_CONF"] = os.path.join(tok, "softhsm2.conf")
        os.environ["AIRLOCK_PIN"] = PIN
        inject_ports = ([self.main.port] + [o.port for o in self.bad.values()] +
                        [self.plain.port])
        rules = [h.rule("nope", ports=[self.main.port], path="/admin*", action="deny"),
                 h.rule("read", ports=inject_ports, methods=["GET"], action="inject",
                        credential="gh"),
                 h.rule("blind", ports=[self.blind.port], action="allow")]
        cfg = h.base_config(rules, tls={"upstream_ca": pki("ca")[0]},
                            vault={"backend": "pkcs11", "pkcs11": {
                                "module": "/usr/lib/softhsm/libsofthsm2.so",
                                "token": "pkcs11:token=airlock", "pin": "env:AIRLOCK_PIN"}},
                            credentials={"gh": {"header": "Authorization",
                                                "format": "Bearer {secret}"}})
        self.d = h.Daemon(cfg, start=False)
        rc, out = self.cli("init")
        eq(rc, 0, "airlock init: " + out)
        rc, out = self.cli("enroll", "gh", input_bytes=SECRET + b"\n")
        eq(rc, 0, "airlock enroll: " + out)
        self.ca = os.path.join(self.d.tmpdir, "state", "ca.pem")
        check(os.path.exists(self.ca), "airlock init made no state/ca.pem")
        self.d.start()
        self.d.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            self.d.__exit__(*exc)
        finally:
            for o in self.origins:
                o.close()
        log = self.d.log_text().encode()
        check(SECRET not in log, "the secret is in the daemon log")

    def _origin(self, cert):
        o = HashOrigin(cert)
        self.origins.append(o)
        return o

    def cli(self, *args, input_bytes=None):
        return h.run_airlock(["-c", self.d.config_path] + list(args), input_bytes=input_bytes)

    def url(self, origin, path):
        return "https://%s:%d%s" % (HOST, origin.port, path)

    def get(self, url, socks=False, cacert=None, **kw):
        """curl through the HTTP proxy (or SOCKS5 with --socks5-hostname) trusting only
        cacert (default: airlock's CA)."""
        args = list(kw.pop("args", ())) + ["--cacert", cacert or self.ca]
        if socks:
            return h.curl(url, socks5="127.0.0.1:%d" % self.d.socks_port,
                          proxy_user="%s:%s" % (h.AGENT, h.TOKEN), args=args, **kw)
        return h.curl(url, proxy=self.d.proxy_url(), args=args, **kw)

    def audit_since(self, n, want, timeout=5.0):
        """Audit records after the first n once there are at least `want` of them."""
        return self.d.wait_audit(n + want, timeout)[n:]

    def audit_clean(self):
        check(SECRET not in open(self.d.audit_path, "rb").read(), "the secret is in the audit")


@test
def get_is_injected_post_has_no_rule_admin_is_denied(w):
    before_audit, before_seen = len(w.d.audit_records()), len(w.main.seen)
    for socks in (False, True):
        r = w.get(w.url(w.main, "/repos/x"), socks=socks)
        eq((r.rc, r.status), (0, 200), "GET on the read rule (socks=%s) %r" % (socks, r))
        eq(r.body, want_body(), "origin saw exactly one injected Authorization (socks=%s)"
           % socks)
    # A client-supplied Authorization is replaced, not added to.
    r = w.get(w.url(w.main, "/repos/y"), headers=["Authorization: Bearer forged"])
    eq((r.status, r.body), (200, want_body()), "client Authorization replaced")
    # Only airlock's CA signs what the client sees: the origin's own CA does not verify.
    r = w.get(w.url(w.main, "/repos/x"), cacert=pki("ca")[0])
    # rc 60: peer certificate not verified; the only response curl saw is the CONNECT 200.
    check(r.rc == 60 and len(r.blocks) == 1, "intercepted stream verified with the origin's CA",
          r)
    r = w.get(w.url(w.main, "/repos/x"), data=b"a=1")
    eq(r.status, 403, "POST with no rule")
    eq(r.headers.get("x-airlock-decision"), "no-rule", "POST decision")
    check("x-airlock-rule" not in r.headers, "no rule decided the POST", r.headers)
    for socks in (False, True):
        r = w.get(w.url(w.main, "/admin/x"), socks=socks)
        eq(r.status, 403, "deny rule wins over the allow (socks=%s)" % socks)
        eq(r.headers.get("x-airlock-decision"), "deny", "admin decision")
        eq(r.headers.get("x-airlock-rule"), "nope", "admin rule")
    eq([(m, p) for m, p, _, _ in w.main.seen[before_seen:]],
       [("GET", "/repos/x"), ("GET", "/repos/x"), ("GET", "/repos/y")],
       "only the allowed GETs reached the origin")
    recs = w.audit_since(before_audit, 6)
    got = [(x["via"], x["method"], x["path"], x["decision"], x.get("rule"),
            x.get("credential")) for x in recs]
    for want in [("connect", "GET", "/repos/x", "inject", "read", "gh"),
                 ("socks5", "GET", "/repos/x", "inject", "read", "gh"),
                 ("connect", "POST", "/repos/x", "no-rule", None, None),
                 ("connect", "GET", "/admin/x", "deny", "nope", None),
                 ("socks5", "GET", "/admin/x", "deny", "nope", None)]:
        check(any(g[:4] == want[:4] and g[4] == want[4] and
                  (want[5] is None or g[5] == want[5]) for g in got),
              "audit record %r missing" % (want,), got)
    w.audit_clean()


@test
def keep_alive_requests_are_decided_one_by_one(w):
    before_audit, before_seen = len(w.d.audit_records()), len(w.main.seen)
    r = w.get(w.url(w.main, "/repos/ka"), extra_urls=[w.url(w.main, "/admin/ka")],
              write_out="%{http_code} %{num_connects}\n")
    codes = [ln.split() for ln in r.write_out.strip().splitlines()]
    eq(codes, [["200", "1"], ["403", "0"]], "statuses and connects on one connection")
    eq([p for _, p, _, _ in w.main.seen[before_seen:]], ["/repos/ka"],
       "only the first request reached the origin")
    recs = [x for x in w.audit_since(before_audit, 2) if x.get("path") in
            ("/repos/ka", "/admin/ka")]
    eq([(x["via"], x["path"], x["decision"], x.get("rule"), x.get("status"))
        for x in recs],
       [("connect", "/repos/ka", "inject", "read", 200),
        ("connect", "/admin/ka", "deny", "nope", 403)], "both requests audited")
    eq(recs[0]["agent"], h.AGENT, "agent in the audit")
    check(recs[0]["id"] != recs[1]["id"], "each request has its own audit id", recs)


def raw_connect(w, port):
    s = socket.create_connection(("127.0.0.1", w.d.http_port), timeout=5)
    s.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\nProxy-Authorization: %s\r\n\r\n"
               % (HOST, port, HOST, port, h.basic_auth())).encode())
    status, _, _, raw = h.read_http_response(s, timeout=5)
    eq(status, 200, "CONNECT answer %r" % raw[:200])
    return s


def tls_over(s, w, sni):
    """Handshake over s with airlock's CA and the given SNI; the name check is off so
    that only the server can make it fail."""
    ctx = ssl.create_default_context(cafile=w.ca)
    ctx.check_hostname = False
    return ctx.wrap_socket(s, server_hostname=sni)


@test
def sni_and_host_must_name_the_target(w):
    # Control: the same raw path with the right SNI works end to end.
    s = tls_over(raw_connect(w, w.main.port), w, HOST)
    try:
        s.sendall(("GET /repos/raw HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (HOST, w.main.port))
                  .encode())
        status, _, body, _ = h.read_http_response(s, timeout=5)
        eq((status, body), (200, want_body()), "raw CONNECT with the right SNI")
    finally:
        s.close()
    before_audit, before_seen = len(w.d.audit_records()), len(w.main.seen)
    s = raw_connect(w, w.main.port)
    failed = None
    try:
        tls_over(s, w, "other.example.test").close()
    except (ssl.SSLError, OSError) as e:
        failed = e
    finally:
        s.close()
    check(failed is not None, "handshake with SNI other.example.test succeeded")
    recs = w.audit_since(before_audit, 1)
    check(any(x["decision"] == "host-mismatch" and x["host"] == HOST for x in recs),
          "SNI mismatch not audited as host-mismatch", recs)
    r = w.get(w.url(w.main, "/repos/x"), headers=["Host: other.example.test"])
    eq(r.status, 403, "Host header naming another host %r" % r)
    eq(r.headers.get("x-airlock-decision"), "host-mismatch", "Host decision")
    eq(len(w.main.seen), before_seen, "mismatches never reached the origin")


@test
def bad_upstream_certificates_are_502_without_the_credential(w):
    for name, o in w.bad.items():
        before_audit = len(w.d.audit_records())
        r = w.get(w.url(o, "/repos/x"))
        eq(r.status, 502, "upstream certificate %s %r" % (name, r))
        eq(r.headers.get("x-airlock-decision"), "upstream-tls", "decision (%s)" % name)
        eq(o.seen, [], "origin with %s certificate received a request" % name)
        check(o.accepts >= 1, "daemon never dialled the %s origin" % name)
        recs = w.audit_since(before_audit, 1)
        check(any(x["decision"] == "upstream-tls" and x["port"] == o.port for x in recs),
              "upstream-tls not audited (%s)" % name, recs)
    check("upstream tls %s:%d: certificate verify failed: certificate has expired"
          % (HOST, w.bad["expired"].port) in w.d.log_text(), "expired: reason not logged")
    # No certificate to blame: the reason libevent took off OpenSSL's queue is logged.
    r = w.get(w.url(w.plain, "/repos/x"))
    eq((r.status, r.headers.get("x-airlock-decision")), (502, "upstream-tls"), "not TLS %r" % r)
    check("upstream tls %s:%d: tls handshake failed: wrong version number"
          % (HOST, w.plain.port) in w.d.log_text(), "not TLS: reason not logged",
          [x for x in w.d.log_text().splitlines() if "upstream tls" in x])
    w.audit_clean()


@test
def env_routes_curl_and_python_with_no_flags(w):
    tf = os.path.join(w.d.tmpdir, "agent.token")
    with open(tf, "w") as f:
        f.write(h.TOKEN + "\n")
    os.chmod(tf, 0o600)
    clean = {k: v for k, v in os.environ.items() if k not in h._PROXY_ENV
             and k not in ("REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO",
                           "PIP_CERT")}
    clean["HOME"] = w.d.tmpdir  # no ~/.curlrc
    envcmd = [h.AIRLOCK, "-c", w.d.config_path, "env", "--agent", h.AGENT, "--token-file", tf]
    p = subprocess.run(envcmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                       env=clean)
    eq(p.returncode, 0, "airlock env: %s" % p.stderr.decode(errors="replace"))
    lines = p.stdout.decode().splitlines()
    check(lines and all(ln.startswith("export ") for ln in lines), "export lines", lines)
    names = {ln[7:].split("=", 1)[0] for ln in lines}
    for n in ("HTTPS_PROXY", "HTTP_PROXY", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        check(n in names, "airlock env prints no %s" % n, sorted(names))
    url = w.url(w.main, "/repos/env")
    before = len(w.main.seen)
    script = ('eval "$(%s)" || exit 9; curl -s --max-time 10 %s; echo; '
              'python3 -c "import urllib.request as u; '
              'print(u.urlopen(\'%s\', timeout=10).read().decode())"'
              % (" ".join("'%s'" % a for a in envcmd), url, url))
    out = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=60, env=clean)
    text = out.stdout.decode(errors="replace")
    eq(text.splitlines(), [want_body().decode()] * 2, "curl and python via airlock env")
    eq([(p, n) for _, p, n, _ in w.main.seen[before:]], [("/repos/env", 1)] * 2,
       "both requests reached the origin injected")


@test
def plain_allow_host_is_tunnelled_blind(w):
    before_audit = len(w.d.audit_records())
    url = w.url(w.blind, "/repos/blind")
    r = w.get(url, cacert=pki("ca")[0], headers=["Authorization: Bearer mine"])
    eq((r.rc, r.status), (0, 200), "origin's own certificate seen through the tunnel %r" % r)
    eq(r.body, ("1 " + hashlib.sha256(b"Bearer mine").hexdigest()).encode(),
       "the tunnel passes the client's bytes untouched (no injection)")
    r = w.get(url, socks=True, cacert=pki("ca")[0])
    eq((r.rc, r.status, r.body[:2]), (0, 200, b"0 "), "blind over SOCKS5, no credential")
    r = w.get(url)
    check(r.rc == 60 and len(r.blocks) == 1, "airlock's CA verified a blind tunnel", r)
    eq(len(w.blind.seen), 2, "only the verified requests reached the origin")
    recs = w.audit_since(before_audit, 3)
    blind = [x for x in recs if x["port"] == w.blind.port]
    check(len(blind) >= 2 and all(x["decision"] == "allow" and x.get("rule") == "blind"
                                  for x in blind), "blind tunnels audited as allow", blind)


if __name__ == "__main__":
    h.run(World)
