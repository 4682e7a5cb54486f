"""Shared helpers for the integration tests, the one module every test imports
(`import harness as h`, `from harness import check, eq, test`). The helpers live in
parts that this module re-exports, so every one of them is h.NAME:

  harness_env       paths, valgrind switches and scaled(), agent credentials, free ports,
                    temp dirs
  harness_config    to_yaml, base_config, rule
  harness_daemon    the airlockd process (start, reload, stop, audit), run_airlock,
                    audit_since
  harness_http      the real curl binary, raw sockets, basic_auth, AcceptLoop, CountingListener
  harness_valgrind  the `valgrind` ctest label (python3 harness.py --valgrind TEST.py)

and here: assertions, network isolation, and a tiny test runner whose last line is
"N passed, M failed".

Everything talks to 127.0.0.1 only and every wait is bounded. Python 3.11 stdlib only.
"""

import os
import shutil
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Re-exported for the tests (h.NAME); the noqa keeps linters from calling them unused.
from harness_env import (AGENT, AIRLOCK, AIRLOCKD, BIN_DIR, HERE, SLOW,  # noqa: E402,F401
                         SOURCE_DIR, TLS_DIR, TOKEN, TOKEN_SHA256, VALGRIND, VG_LOG_DIR,
                         free_port, make_tmpdir, scaled, sha256_hex)
from harness_config import base_config, rule, to_yaml  # noqa: E402,F401
from harness_daemon import (Daemon, DaemonError, _port_of, audit_since,  # noqa: E402,F401
                            run_airlock, wait_port)
from harness_http import (_PROXY_ENV, AcceptLoop, CountingListener, CurlResult,  # noqa: E402,F401
                          _parse_header_blocks, basic_auth, connect_tunnel, curl, raw_http,
                          read_http_response, recv_all, socks_tunnel)
from harness_valgrind import valgrind_main, valgrind_report  # noqa: E402,F401
import ports  # noqa: E402,F401
from origin import Origin, pattern_bytes  # noqa: E402,F401


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
    # python3 harness.py --valgrind TEST.py: the `valgrind` ctest label (harness_valgrind.py).
    if len(sys.argv) != 3 or sys.argv[1] != "--valgrind":
        sys.exit("usage: harness.py --valgrind TEST.py")
    sys.exit(valgrind_main(sys.argv[2]))
