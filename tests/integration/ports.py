"""Free loopback ports for the tests' (and bench/run's) listeners, taken below the kernel's
ephemeral range, and a bounded wait for a listener.

A port the kernel picks (bind to port 0) comes from the ephemeral range, which outgoing
connections share: under connection churn (a load test, a benchmark just before) every
port there can sit in TIME_WAIT and bind(0) fails with EADDRINUSE, or a port handed out
for a daemon's config is taken by a connect() before the daemon binds it. Ports below the
range are never picked by connect(), so a port found free here stays free for a listener.
"""

import random
import socket
import time

_given = set()
_rng = random.SystemRandom()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bind_free(sock, host="127.0.0.1"):
    """Binds sock to a free port on host below the ephemeral range, never one this
    process used before; returns the port."""
    low = _ephemeral_low()
    for _ in range(256):  # bounded; the range is mostly free
        port = _rng.randrange(10000, max(low, 10001))
        if port in _given:
            continue
        try:
            sock.bind((host, port))
        except OSError:
            continue
        _given.add(port)
        return port
    raise RuntimeError("no free port below %d after 256 tries" % low)


def free_port():
    """A port that was free a moment ago (see bind_free), for a daemon's config."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return bind_free(s)


def wait_port(port, timeout=10.0, proc=None):
    """True once 127.0.0.1:port accepts a TCP connection; False at timeout or if proc (a
    Popen) died first."""
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
