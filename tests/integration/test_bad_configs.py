#!/usr/bin/env python3
"""airlockd --check against the bad-config corpus: every file in tests/data/configs/bad
must exit 2 with "FILE:LINE:COL: ..." on stderr as its first-line "# expect:" comment
says, and tests/data/configs/good-minimal.yaml must exit 0. Python 3 stdlib only."""
import os
import subprocess
import sys

SOURCE = os.environ.get(
    "AIRLOCK_SOURCE_DIR",
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIGS = os.path.join(SOURCE, "tests", "data", "configs")
TIMEOUT_S = 20


def airlockd():
    bin_dir = os.environ.get("AIRLOCK_BIN_DIR")
    if not bin_dir:
        sys.exit("AIRLOCK_BIN_DIR is not set")
    path = os.path.join(bin_dir, "airlockd")
    if not os.access(path, os.X_OK):
        sys.exit("%s: not built" % path)
    return path


def check(binary, config):
    # A bounded run: --check never starts listeners, so it must finish quickly.
    return subprocess.run([binary, "--check", "-c", config], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def expectation(path):
    with open(path, encoding="utf-8") as f:
        first = f.readline().rstrip("\n")
    prefix = "# expect: "
    if not first.startswith(prefix):
        return None
    position, _, substring = first[len(prefix):].partition(" ")
    if not position.endswith(":") or position.count(":") != 2 or not substring:
        return None
    return position, substring


def run_bad(binary, path):
    exp = expectation(path)
    if exp is None:
        return "no valid '# expect: LINE:COL: substring' first line"
    position, substring = exp
    r = check(binary, path)
    if r.returncode != 2:
        return "exit status %d, expected 2 (stderr: %r)" % (r.returncode, r.stderr)
    want = path + ":" + position
    if want not in r.stderr:
        return "stderr %r lacks %r" % (r.stderr, want)
    if substring not in r.stderr:
        return "stderr %r lacks %r" % (r.stderr, substring)
    return None


def run_good(binary, path):
    r = check(binary, path)
    if r.returncode != 0:
        return "exit status %d, expected 0 (stderr: %r)" % (r.returncode, r.stderr)
    return None


def main():
    binary = airlockd()
    bad_dir = os.path.join(CONFIGS, "bad")
    cases = [(run_bad, os.path.join(bad_dir, n))
             for n in sorted(os.listdir(bad_dir)) if n.endswith(".yaml")]
    cases.append((run_good, os.path.join(CONFIGS, "good-minimal.yaml")))
    passed = failed = 0
    for fn, path in cases:
        try:
            why = fn(binary, path)
        except subprocess.TimeoutExpired:
            why = "timed out after %d s" % TIMEOUT_S
        if why is None:
            passed += 1
            print("ok   %s" % os.path.basename(path))
        else:
            failed += 1
            print("FAIL %s: %s" % (os.path.basename(path), why))
    if len(cases) < 15:
        failed += 1
        print("FAIL corpus has only %d cases" % len(cases))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
