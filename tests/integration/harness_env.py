"""The integration tests' environment: where the source, binaries and TLS fixtures are,
the valgrind switches (and scaled(), which stretches waits under valgrind), the agent
credentials every config uses, free ports and temp dirs removed at exit. Part of
harness.py, which re-exports every name here; tests import harness, not this module.
"""

import atexit
import hashlib
import os
import shutil
import sys
import tempfile

import ports

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("AIRLOCK_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BIN_DIR = os.environ.get("AIRLOCK_BIN_DIR") or os.path.join(SOURCE_DIR, "build", "cmd")
TLS_DIR = os.path.join(SOURCE_DIR, "tests", "data", "tls")
AIRLOCKD = os.path.join(BIN_DIR, "airlockd")
AIRLOCK = os.path.join(BIN_DIR, "airlock")

# Under AIRLOCK_VALGRIND=1 (the ctest label `valgrind`, see harness_valgrind.py) BIN_DIR
# holds wrappers that run each real binary under valgrind with its log in VG_LOG_DIR;
# every wait on one of our processes is multiplied by SLOW so the slowdown is not a flake.
VALGRIND = os.environ.get("AIRLOCK_VALGRIND") == "1"
VG_LOG_DIR = os.environ.get("AIRLOCK_VG_LOG_DIR", "")
SLOW = float(os.environ.get("AIRLOCK_TIME_SCALE") or (6 if VALGRIND else 1))


def scaled(seconds):
    """A wait on airlockd / airlock / the simulator, stretched under valgrind."""
    return seconds * SLOW


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
