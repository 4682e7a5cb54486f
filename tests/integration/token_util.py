"""A private hardware token for integration tests: a SoftHSM token directory or a swtpm
state directory, with the vault section of the config that points at it. Shared by the
vault, fault and device tests (a test file cannot import another: importing it registers
its tests)."""

import os
import re
import signal
import subprocess

import harness as h

SRC = h.SOURCE_DIR
PIN = "4711"


class Backend:
    """A private token: a SoftHSM token dir or a swtpm state dir, with its vault config."""

    def __init__(self, kind):
        self.kind = kind
        self.paused = None  # the pid of a swtpm that pause() stopped
        self.dir = h.make_tmpdir("airlock-token-")
        if kind == "pkcs11":
            subprocess.run([os.path.join(SRC, "scripts/softhsm-setup"), self.dir, "airlock", PIN,
                            "99999999"], check=True, stdout=subprocess.DEVNULL)
            os.environ["SOFTHSM2_CONF"] = os.path.join(self.dir, "softhsm2.conf")
            os.environ["AIRLOCK_PIN"] = PIN
            self.vault = {"backend": "pkcs11", "pkcs11": {
                "module": "/usr/lib/softhsm/libsofthsm2.so", "token": "pkcs11:token=airlock",
                "pin": "env:AIRLOCK_PIN"}}
        else:
            self.portfile = os.path.join(self.dir, "port")
            try:
                self.tcti = self.start_tpm()
            except BaseException:
                self.stop_tpm()  # swtpm-start may have started it before failing
                raise
            self.vault = {"backend": "tpm2", "tpm2": {"tcti": self.tcti}}

    def start_tpm(self):
        out = subprocess.run([os.path.join(SRC, "scripts/swtpm-start"), self.dir, self.portfile],
                             check=True, stdout=subprocess.PIPE, timeout=30)
        return out.stdout.decode().strip().splitlines()[-1]

    def stop_tpm(self):
        subprocess.run([os.path.join(SRC, "scripts/swtpm-stop"), self.dir], timeout=30)

    def pause(self):
        """Stops (SIGSTOP) the swtpm: a token that hangs mid-operation. resume() or
        close() lets it go on."""
        with open(os.path.join(self.dir, "swtpm.pid")) as f:
            self.paused = int(f.read().strip())
        os.kill(self.paused, signal.SIGSTOP)

    def resume(self):
        if self.paused is not None:
            os.kill(self.paused, signal.SIGCONT)
            self.paused = None

    def close(self):
        if self.kind == "tpm2":
            self.resume()
            self.stop_tpm()

    # "with Backend(k) as b, HashOrigin() as o:" stops the swtpm even when what follows
    # it in the with statement fails to start.
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def scan_memory(pid, needle):
    """Counts needle in every readable mapping of pid, read in 1 MiB chunks. Mappings
    over 4 GiB are sanitizer shadow reservations, not data, and are passed over."""
    hits, chunk = 0, 1 << 20
    with open("/proc/%d/maps" % pid) as maps:
        regions = [re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line) for line in maps
                   if "[vvar]" not in line]
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for m in regions:
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            if "r" not in m.group(3) or end - start > (4 << 30):
                continue
            tail = b""
            for off in range(start, end, chunk):
                try:
                    mem.seek(off)
                    data = mem.read(min(chunk, end - off))
                except OSError:
                    tail = b""
                    continue
                buf = tail + data
                hits += buf.count(needle)
                tail = data[-(len(needle) - 1):]
    return hits
