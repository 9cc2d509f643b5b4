"""Fake daemons for the socket trust tests: they record what a client sends and never answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NOBODY = 65534
SYSTEM_PYTHON = Path("/usr/bin/python3")  # the venv's interpreter may be unreadable for nobody

# Accepts until stdin closes; one recv per connection: the request bytes, or b"" if none were sent.
FAKE_DAEMON = """
import select, socket, sys
srv = socket.socket(socket.AF_UNIX)
srv.bind(sys.argv[1])
srv.listen(8)
print("ready", flush=True)
conns = sent = 0
while True:
    ready, _, _ = select.select([srv, sys.stdin], [], [])
    if sys.stdin in ready:
        break
    conn, _ = srv.accept()
    conn.settimeout(10)
    conns += 1
    sent += len(conn.recv(65536))
    conn.close()
print(f"connections {conns} bytes {sent}", flush=True)
"""


class FakeDaemon:
    """A listener on `path`, run as `uid` (a separate process either way)."""

    def __init__(self, path: Path, uid: int | None = None) -> None:
        user = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}
        python = sys.executable if uid is None else str(SYSTEM_PYTHON)
        self.proc = subprocess.Popen([python, "-c", FAKE_DAEMON, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, **user)  # type: ignore[call-overload]
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def report(self) -> str:
        """Stop listening; 'connections N bytes M' for what clients did meanwhile."""
        out, _ = self.proc.communicate(input="stop\n", timeout=30)
        return str(out).strip()


def can_switch_users() -> str | None:
    """None when tests may run things as nobody; else why not (the skip reason)."""
    if os.geteuid() != 0:
        return "needs root to chown to nobody and run a process as another user"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"needs {SYSTEM_PYTHON} for a process running as nobody"
    return None
