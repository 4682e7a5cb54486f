"""Shared helpers for the integration tests: free ports, temp dirs, a YAML writer, the
airlockd process (start, reload, stop, audit), the real curl binary, raw sockets, and a
tiny test runner whose last line is "N passed, M failed".

Everything talks to 127.0.0.1 only and every wait is bounded. Python 3.11 stdlib only.
"""

import atexit
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("AIRLOCK_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BIN_DIR = os.environ.get("AIRLOCK_BIN_DIR") or os.path.join(SOURCE_DIR, "build", "cmd")
TLS_DIR = os.path.join(SOURCE_DIR, "tests", "data", "tls")
AIRLOCKD = os.path.join(BIN_DIR, "airlockd")
AIRLOCK = os.path.join(BIN_DIR, "airlock")

# Under AIRLOCK_VALGRIND=1 (the ctest label `valgrind`, see valgrind_main() below) BIN_DIR
# holds wrappers that run each real binary under valgrind with its log in VG_LOG_DIR;
# every wait on one of our processes is multiplied by SLOW so the slowdown is not a flake.
VALGRIND = os.environ.get("AIRLOCK_VALGRIND") == "1"
VG_LOG_DIR = os.environ.get("AIRLOCK_VG_LOG_DIR", "")
SLOW = float(os.environ.get("AIRLOCK_TIME_SCALE") or (6 if VALGRIND else 1))


def scaled(seconds):
    """A wait on airlockd / airlock / the simulator, stretched under valgrind."""
    return seconds * SLOW

sys.path.insert(0, HERE)
import ports  # noqa: E402
from origin import Origin, pattern_bytes  # noqa: E402,F401  (re-exported for tests)

AGENT = "ci-bot"
TOKEN = "s3cret-agent-token"
TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


free_port = ports.free_port  # re-exported for the tests


# --- temp dirs ------------------------------------------------------------------------
_tmpdirs = []


def _cleanup_tmpdirs():
    if os.environ.get("AIRLOCK_KEEP_TMP") == "1":
        for d in _tmpdirs:
            sys.stderr.write("kept %s\n" % d)
        return
    for d in _tmpdirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup_tmpdirs)


def make_tmpdir(prefix="airlock-itest-"):
    """A fresh directory, removed at exit unless AIRLOCK_KEEP_TMP=1."""
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


# --- YAML -----------------------------------------------------------------------------
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _yaml_scalar(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, (int, float)):
        return repr(v)
    # A JSON string is a valid YAML double-quoted scalar; always quoting keeps "no",
    # "0x10", "10:20" and friends from being read as something else.
    return json.dumps(str(v), ensure_ascii=True)


def _yaml_key(k):
    k = str(k)
    return k if _PLAIN_KEY.match(k) and k.lower() not in ("y", "n", "yes", "no", "on",
                                                          "off", "true", "false", "null") \
        else json.dumps(k)


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists and scalars (strings always quoted)."""
    pad = " " * indent
    out = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}\n"
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:\n%s" % (pad, _yaml_key(k), to_yaml(v, indent + 2)))
            elif isinstance(v, dict):
                out.append("%s%s: {}\n" % (pad, _yaml_key(k)))
            elif isinstance(v, list):
                out.append("%s%s: []\n" % (pad, _yaml_key(k)))
            else:
                out.append("%s%s: %s\n" % (pad, _yaml_key(k), _yaml_scalar(v)))
        return "".join(out)
    if isinstance(obj, list):
        if not obj:
            return pad + "[]\n"
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2)
                out.append("%s- %s" % (pad, inner[indent + 2:]))
            else:
                out.append("%s- %s\n" % (pad, _yaml_scalar(v) if not isinstance(v, (dict, list))
                                         else ("{}" if isinstance(v, dict) else "[]")))
        return "".join(out)
    return pad + _yaml_scalar(obj) + "\n"


def base_config(rules, **over):
    """The standard test config (SPEC section 2) on free ports; keyword args replace
    top-level keys, a value of None removes the key."""
    cfg = {
        "version": 1,
        "listen": {
            "http": "127.0.0.1:%d" % free_port(),
            "socks5": "127.0.0.1:%d" % free_port(),
            "control": "run/control.sock",
        },
        "state_dir": "state",
        "agents": [{"name": AGENT, "token_sha256": TOKEN_SHA256}],
        "rules": rules,
        "default": "deny",
        "resolve": {"api.example.test": "127.0.0.1"},
        "network": {"deny_private": True, "allow_cidrs": ["127.0.0.1/32"]},
        "audit": {"path": "audit.jsonl"},
    }
    for k, v in over.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


def rule(name, host="api.example.test", ports=None, action="allow", **kw):
    r = {"name": name, "host": host}
    if ports is not None:
        r["ports"] = list(ports)
    r.update(kw)
    r["action"] = action
    return r


# --- the daemon -----------------------------------------------------------------------
class DaemonError(Exception):
    pass


def _port_of(listen_text):
    if not listen_text:
        return None
    return int(str(listen_text).rsplit(":", 1)[1])


def wait_port(port, timeout=10.0, proc=None):
    """True once 127.0.0.1:port accepts a TCP connection; False at timeout or if proc died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Daemon:
    """airlockd -c TMPDIR/airlock.yaml with its log captured in TMPDIR/airlockd.log.

    config is a dict (written with to_yaml) or YAML text; for text, pass http_port /
    socks_port so the harness knows what to wait for."""

    def __init__(self, config, tmpdir=None, http_port=None, socks_port=None, args=(),
                 start=True):
        self.tmpdir = tmpdir or make_tmpdir()
        for sub in ("run", "state"):
            os.makedirs(os.path.join(self.tmpdir, sub), mode=0o700, exist_ok=True)
        self.config_path = os.path.join(self.tmpdir, "airlock.yaml")
        self.log_path = os.path.join(self.tmpdir, "airlockd.log")
        self.args = list(args)
        self.proc = None
        self.http_port = http_port
        self.socks_port = socks_port
        self.audit_path = os.path.join(self.tmpdir, "audit.jsonl")
        self.write_config(config)
        if start:
            self.start()

    def write_config(self, config):
        """Replaces the config file atomically (the daemon reads it at start or SIGHUP)."""
        self.config = config if isinstance(config, dict) else None
        if isinstance(config, dict):
            text = to_yaml(config)
            listen = config.get("listen", {})
            self.http_port = _port_of(listen.get("http"))
            self.socks_port = _port_of(listen.get("socks5"))
            ap = config.get("audit", {}).get("path")
            if ap:
                self.audit_path = os.path.join(self.tmpdir, ap)
        else:
            text = config
        self.config_text = text
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.config_path)

    def start(self):
        """Starts airlockd and waits for its listeners. A free_port() can be taken by
        another process on this machine before the daemon binds it (a wider window under
        valgrind); with a dict config the daemon then gets fresh ports, at most twice."""
        for attempt in range(3):
            before = len(self.log_text())
            try:
                return self._start_once()
            except DaemonError:
                if attempt == 2 or self.config is None or "Address already in use" \
                        not in self.log_text()[before:]:
                    raise
            cfg = dict(self.config)
            cfg["listen"] = dict(cfg.get("listen", {}))
            for k in ("http", "socks5"):
                if cfg["listen"].get(k):
                    cfg["listen"][k] = "127.0.0.1:%d" % free_port()
            self.write_config(cfg)
        raise AssertionError("unreachable")

    def _start_once(self):
        if not os.access(AIRLOCKD, os.X_OK):
            raise DaemonError("airlockd not built: %s" % AIRLOCKD)
        self._logf = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self.proc = subprocess.Popen([AIRLOCKD, "-c", self.config_path] + self.args,
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT, cwd=self.tmpdir, env=env)
        for port in (self.http_port, self.socks_port):
            if port and not wait_port(port, scaled(10.0), self.proc):
                rc = self.proc.poll()
                if rc is None:
                    self._kill()
                self._logf.close()
                raise DaemonError("airlockd %s on port %d (exit %s); log:\n%s" % (
                    "died" if rc is not None else "did not listen", port, rc,
                    self.log_text()))
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def reload(self, timeout=10.0):
        """SIGHUP, then wait for "policy reloaded" or "reload failed" in the log.
        Returns (ok, text of the log written since the signal)."""
        timeout = scaled(timeout)
        before = len(self.log_text())
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.log_text()[before:]
            if "policy reloaded" in new:
                return True, new
            if "reload failed" in new:
                return False, new
            if self.proc.poll() is not None:
                raise DaemonError("airlockd died on SIGHUP; log:\n" + self.log_text())
            time.sleep(0.05)
        raise DaemonError("no reload line within %.0fs; log:\n%s" % (timeout, self.log_text()))

    def _kill(self):
        try:
            self.proc.kill()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def stop(self, timeout=15.0):
        """SIGTERM and wait; returns the exit status. Raises if it hangs or a sanitizer
        reported anything (under valgrind: any error or definite/indirect leak)."""
        if self.proc is None:
            return None
        timeout = scaled(timeout)
        pid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
                raise DaemonError("airlockd ignored SIGTERM for %.0fs; log:\n%s" % (
                    timeout, self.log_text()))
        rc = self.proc.returncode
        self.proc = None
        self._logf.close()
        log = self.log_text()
        if "ERROR: AddressSanitizer" in log or "ERROR: LeakSanitizer" in log \
                or "runtime error:" in log:
            raise DaemonError("sanitizer report in airlockd log:\n" + log)
        report = valgrind_report(pid)
        if report:
            raise DaemonError("valgrind report for airlockd (pid %d):\n%s" % (pid, report))
        return rc

    def audit_records(self):
        try:
            with open(self.audit_path, "rb") as f:
                lines = f.read().decode().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def wait_audit(self, n, timeout=5.0):
        """Audit records once there are at least n (writes may trail the response)."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            recs = self.audit_records()
            if len(recs) >= n or time.monotonic() > deadline:
                return recs
            time.sleep(0.05)

    def proxy_url(self, user=AGENT, password=TOKEN):
        if user is None:
            return "http://127.0.0.1:%d" % self.http_port
        return "http://%s:%s@127.0.0.1:%d" % (user, password, self.http_port)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.proc is None:
            return
        try:
            self.stop()
        except DaemonError as e:
            if exc_type is None:
                raise
            sys.stderr.write(str(e) + "\n")
        if exc_type is not None:
            sys.stderr.write("--- airlockd log (%s) ---\n%s\n" % (self.log_path,
                                                                self.log_text()))


def run_airlock(args, timeout=30, input_bytes=None):
    """The CLI: returns (exit status, stdout+stderr text)."""
    p = subprocess.Popen([AIRLOCK] + list(args),
                         stdin=None if input_bytes is None else subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(input_bytes, timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise
    report = valgrind_report(p.pid)
    if report:
        raise AssertionError("valgrind report for airlock %s:\n%s" % (" ".join(args), report))
    return p.returncode, out.decode("utf-8", "replace")


# --- curl -----------------------------------------------------------------------------
_PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY",
              "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "CURL_HOME", "SSL_CERT_FILE",
              "CURL_CA_BUNDLE")


class CurlResult:
    """Unpacks as (status, headers, body, rc); also .stderr, .blocks (every header block
    in order, e.g. the CONNECT reply first), .write_out (-w output)."""

    def __init__(self, status, headers, body, rc, stderr, blocks, write_out):
        self.status, self.headers, self.body, self.rc = status, headers, body, rc
        self.stderr, self.blocks, self.write_out = stderr, blocks, write_out

    def __iter__(self):
        return iter((self.status, self.headers, self.body, self.rc))

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "CurlResult(status=%r, rc=%r, headers=%r, body=%r, stderr=%r)" % (
            self.status, self.rc, self.headers, self.body[:200], self.stderr[-300:])


def _parse_header_blocks(raw):
    blocks = []
    for part in re.split(rb"\r?\n\r?\n", raw):
        lines = part.decode("latin-1").splitlines()
        if not lines or not lines[0].startswith("HTTP/"):
            continue
        m = re.match(r"HTTP/\S+\s+(\d{3})", lines[0])
        hdrs = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                k = k.strip().lower()
                hdrs[k] = (hdrs[k] + ", " + v.strip()) if k in hdrs else v.strip()
        blocks.append((int(m.group(1)) if m else 0, hdrs))
    return blocks


def curl(url, proxy=None, socks5=None, proxy_user=None, args=(), headers=(), data=None,
         data_file=None, method=None, timeout=10, write_out=None, extra_urls=()):
    """Runs the real curl binary. proxy: an http:// proxy URL (may hold user:pass);
    socks5: "127.0.0.1:PORT" used with --socks5-hostname. Returns a CurlResult; the
    status and headers are those of the last response (the final one)."""
    d = make_tmpdir("airlock-curl-")
    hfile, bfile = os.path.join(d, "h"), os.path.join(d, "b")
    timeout = scaled(timeout)
    cmd = ["curl", "-s", "-S", "--max-time", str(timeout), "-D", hfile, "-o", bfile]
    if proxy:
        cmd += ["-x", proxy, "--noproxy", ""]
    if socks5:
        cmd += ["--socks5-hostname", socks5, "--noproxy", ""]
    if proxy_user:
        cmd += ["--proxy-user", proxy_user]
    for h in headers:
        cmd += ["-H", h]
    if data is not None:
        dpath = os.path.join(d, "data")
        with open(dpath, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        cmd += ["--data-binary", "@" + dpath]
    if data_file is not None:
        cmd += ["--data-binary", "@" + data_file]
    if method:
        cmd += ["-X", method]
    if write_out:
        cmd += ["-w", write_out]
    cmd += list(args) + [url]
    for u in extra_urls:
        cmd += ["-o", bfile + ".%d" % len(cmd), u]
    env = {k: v for k, v in os.environ.items() if k not in _PROXY_ENV}
    env["HOME"] = d  # no ~/.curlrc
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                           timeout=timeout + 5)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = -1, b"", b"curl hung past its own --max-time"
    raw_h = open(hfile, "rb").read() if os.path.exists(hfile) else b""
    body = open(bfile, "rb").read() if os.path.exists(bfile) else b""
    blocks = _parse_header_blocks(raw_h)
    status, hdrs = blocks[-1] if blocks else (0, {})
    shutil.rmtree(d, ignore_errors=True)
    return CurlResult(status, hdrs, body, rc, err.decode("utf-8", "replace"), blocks,
                      out.decode("utf-8", "replace"))


# --- raw sockets ----------------------------------------------------------------------
def recv_all(sock, timeout=5.0, limit=1 << 20):
    """Reads until EOF, limit bytes or timeout; returns what arrived."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + scaled(timeout)
    data = b""
    while time.monotonic() < deadline and len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


def audit_since(d, n0, pred, count=1, timeout=5.0):
    """Audit records after the first n0 that match pred, once there are count of them: a
    blind tunnel is audited when both of its directions have ended, which can be after
    the next test has started."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        got = [r for r in d.audit_records()[n0:] if pred(r)]
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def read_http_response(sock, timeout=5.0):
    """Reads one HTTP response (headers + Content-Length body) from sock.
    Returns (status, headers dict lower-case, body, raw) or (0, {}, b"", raw) when the
    peer closed or timed out before a full header block."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + scaled(timeout)
    data = b""
    while b"\r\n\r\n" not in data and time.monotonic() < deadline and len(data) < 1 << 20:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    if b"\r\n\r\n" not in data:
        return 0, {}, b"", data
    head, rest = data.split(b"\r\n\r\n", 1)
    blocks = _parse_header_blocks(head + b"\r\n\r\n")
    if not blocks:
        return 0, {}, b"", data
    status, hdrs = blocks[0]
    n = int(hdrs.get("content-length", "0") or 0)
    while len(rest) < n and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        rest += chunk
    return status, hdrs, rest[:n], data


def raw_http(port, payload, timeout=5.0):
    """Sends payload on a fresh connection to 127.0.0.1:port and reads one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(payload)
        except OSError:
            pass  # the proxy may answer and close before reading everything
        return read_http_response(s, timeout)


def basic_auth(user=AGENT, password=TOKEN):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


class CountingListener:
    """A TCP listener on 127.0.0.1 that only counts accepted connections (and closes
    them): proof that the proxy did or did not dial a target."""

    def __init__(self):
        import threading
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ports.bind_free(self.sock)
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepts = 0
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepts += 1
            c.close()

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- valgrind ------------------------------------------------------------------------
_VG_SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) errors")


def _valgrind_log_report(path):
    """The log's text when valgrind counted an error (leaks of kind definite/indirect are
    errors), else None. A log with no summary is a process killed by SIGKILL."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    m = _VG_SUMMARY.search(text)
    return text if m and int(m.group(1)) else None


def valgrind_report(pid):
    """Under AIRLOCK_VALGRIND=1: the valgrind log of one of our processes that has exited,
    when it holds an error or a definite/indirect leak; otherwise None."""
    if not VALGRIND or not VG_LOG_DIR:
        return None
    return _valgrind_log_report(os.path.join(VG_LOG_DIR, "vg.%d.log" % pid))


_VG_WRAPPER = """#!/bin/sh
# airlock itest: the real %(name)s under valgrind (written by harness.py).
exec valgrind --leak-check=full --show-leak-kinds=definite,indirect \\
  --errors-for-leak-kinds=definite,indirect --error-exitcode=97 --num-callers=30 \\
  --suppressions=%(supp)s --log-file="$AIRLOCK_VG_LOG_DIR/vg.%%p.log" \\
  %(real)s "$@"
"""


def valgrind_main(test_path):
    """The ctest command of a `valgrind.<test>` case: runs test_path with AIRLOCK_BIN_DIR
    pointing at wrappers that start each of our binaries under valgrind, so every test
    (and every way a test spawns airlockd, airlock or airlock-buddy-sim) is covered.
    Daemon.stop() and run_airlock() fail on their own process's report; afterwards every
    log is checked again, so a report from any process fails the case."""
    if not shutil.which("valgrind"):
        print("valgrind is not installed")
        return 1
    work = tempfile.mkdtemp(prefix="airlock-vg-")
    wrap_dir, log_dir = os.path.join(work, "bin"), os.path.join(work, "logs")
    os.makedirs(wrap_dir)
    os.makedirs(log_dir)
    supp = os.path.join(SOURCE_DIR, "tests", "valgrind.supp")
    # AIRLOCK_VG_PROGRAMS names the binaries to run under valgrind ("all" or unset: every
    # one); the others are linked in as they are.
    only = [n for n in os.environ.get("AIRLOCK_VG_PROGRAMS", "").split() if n != "all"]
    for name in sorted(os.listdir(BIN_DIR)):
        real = os.path.join(BIN_DIR, name)
        if not (os.path.isfile(real) and os.access(real, os.X_OK)):
            continue
        w = os.path.join(wrap_dir, name)
        if only and name not in only:
            os.symlink(real, w)
            continue
        with open(w, "w") as f:
            f.write(_VG_WRAPPER % {"name": name, "supp": supp, "real": real})
        os.chmod(w, 0o755)
    env = dict(os.environ, AIRLOCK_VALGRIND="1", AIRLOCK_BIN_DIR=wrap_dir,
               AIRLOCK_VG_LOG_DIR=log_dir)
    try:
        rc = subprocess.run([sys.executable, test_path], env=env, stdin=subprocess.DEVNULL,
                            timeout=float(os.environ.get("AIRLOCK_VG_TIMEOUT", "1500"))
                            ).returncode
    except subprocess.TimeoutExpired:
        print("FAIL %s: no result within the valgrind time limit" % test_path)
        rc = 1
    logs = sorted(os.listdir(log_dir))
    bad = [(n, r) for n, r in ((n, _valgrind_log_report(os.path.join(log_dir, n)))
                               for n in logs) if r]
    for n, r in bad:
        print("--- valgrind report %s ---\n%s" % (n, r))
    print("valgrind: %d processes checked, %d with errors or leaks" % (len(logs), len(bad)))
    if not logs:
        print("FAIL: no process ran under valgrind")
        rc = rc or 1
    if os.environ.get("AIRLOCK_KEEP_TMP") == "1":
        print("kept %s" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if rc or bad else 0


# --- assertions and the runner --------------------------------------------------------
def check(cond, msg, *detail):
    if not cond:
        raise AssertionError(msg + ("" if not detail else " | " + " | ".join(
            repr(d) for d in detail)))


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: got %r, want %r" % (what, got, want))


_tests = []


class Skip(Exception):
    """Raised by a test that cannot run here (printed as SKIP, counted apart)."""


def isolate_network():
    """Re-executes this test in a fresh network namespace that has only loopback, so
    that even a broken proxy that dials a private or link-local address sends nothing
    off this machine (ENETUNREACH at once). Returns True once isolated, False when
    namespaces are unavailable (the caller then skips the cases that need isolation)."""
    if os.environ.get("AIRLOCK_NETNS") == "1":
        return True
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    for extra in ([], ["--map-root-user"]):
        probe = subprocess.run(["unshare", "--net"] + extra + ["--", "ip", "link", "set",
                                                               "lo", "up"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if probe.returncode == 0:
            env = dict(os.environ, AIRLOCK_NETNS="1")
            sys.stdout.flush()
            os.execvpe("unshare", ["unshare", "--net"] + extra + [
                "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
                sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:], env)
    return False


def test(fn):
    """Registers a test; tests run in file order. A test takes no argument, or one:
    the object the fixture passed to run() yields."""
    _tests.append(fn)
    return fn


def run(fixture=None):
    """Runs the registered tests; prints PASS/FAIL lines and "N passed, M failed";
    exits 1 when anything failed. fixture: a context-manager factory shared by all."""
    passed = failed = skipped = 0

    def one(fn, ctx):
        nonlocal passed, failed, skipped
        t0 = time.monotonic()
        try:
            if fn.__code__.co_argcount:
                fn(ctx)
            else:
                fn()
            passed += 1
            print("PASS %s (%.2fs)" % (fn.__name__, time.monotonic() - t0), flush=True)
        except Skip as e:
            skipped += 1
            print("SKIP %s: %s" % (fn.__name__, e), flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            print("FAIL %s: %s" % (fn.__name__, reason), flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()

    done = 0
    try:
        if fixture is None:
            for fn in _tests:
                one(fn, None)
                done += 1
        else:
            with fixture() as ctx:
                for fn in _tests:
                    one(fn, ctx)
                    done += 1
    except Exception as e:  # noqa: BLE001 - the fixture's set-up or tear-down failed
        traceback.print_exc(file=sys.stdout)
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if done < len(_tests):
            for fn in _tests[done:]:
                print("FAIL %s: fixture failed: %s" % (fn.__name__, why))
            failed += len(_tests) - done
        else:
            print("FAIL teardown: %s" % why)  # e.g. a sanitizer report at exit
            failed += 1
    if skipped:
        print("%d skipped" % skipped)
    # The last line is exactly "N passed, M failed" so scripts can parse it.
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    # python3 harness.py --valgrind TEST.py: the `valgrind` ctest label (see above).
    if len(sys.argv) != 3 or sys.argv[1] != "--valgrind":
        sys.exit("usage: harness.py --valgrind TEST.py")
    sys.exit(valgrind_main(sys.argv[2]))
