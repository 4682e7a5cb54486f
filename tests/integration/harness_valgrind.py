"""The `valgrind` ctest label: valgrind_main() runs one test with our binaries wrapped
in valgrind, valgrind_report() fails a process on its own log. Part of harness.py (whose
`--valgrind TEST.py` entry point calls valgrind_main), which re-exports every name here.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

from harness_env import BIN_DIR, SOURCE_DIR, VALGRIND, VG_LOG_DIR


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
