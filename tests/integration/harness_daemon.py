"""The airlockd process wrapper (start on free ports, SIGHUP reload, stop with the
sanitizer and valgrind checks, audit records) and the airlock CLI. Part of harness.py,
which re-exports every name here.

Daemon.start() reads this module's AIRLOCKD: to run airlockd through a wrapper, replace
harness_daemon.AIRLOCKD (replacing harness.AIRLOCKD changes nothing).
"""

import json
import os
import signal
import subprocess
import sys
import time

from harness_config import to_yaml
from harness_env import AGENT, AIRLOCK, AIRLOCKD, TOKEN, free_port, make_tmpdir, scaled
from harness_valgrind import valgrind_report
from ports import wait_port  # noqa: F401  (re-exported through harness)


class DaemonError(Exception):
    pass


def _port_of(listen_text):
    if not listen_text:
        return None
    return int(str(listen_text).rsplit(":", 1)[1])


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
