"""The files banger puts into every image: agent and its modules, init wrapper, sshd drop-in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

GUEST_LIB = "/usr/local/lib/banger"
INIT_PATH = f"{GUEST_LIB}/init"
AGENT_PORT_NAME = "banger.agent"


@dataclass(frozen=True)
class GuestFile:
    path: str  # absolute path inside the guest
    data: bytes
    mode: int


# What agent.py imports, shipped beside it (the agent is stdlib-only and runs as a script).
AGENT_MODULES = ("protocol.py", "guest_core.py", "guest_net.py", "guest_system.py", "guest_exec.py")


def _read(package: str, name: str) -> bytes:
    return resources.files(package).joinpath(name).read_bytes()


def guest_files() -> list[GuestFile]:
    """Everything injected into an image, in a stable order."""
    return [
        GuestFile(f"{GUEST_LIB}/agent.py", _read("banger.agent", "guest_agent.py"), 0o755),
        *(GuestFile(f"{GUEST_LIB}/{name}", _read("banger.agent", name), 0o644)
          for name in AGENT_MODULES),
        GuestFile(INIT_PATH, _read("banger.guest", "files/init"), 0o755),
        GuestFile(
            "/etc/ssh/sshd_config.d/banger.conf", _read("banger.guest", "files/sshd-banger.conf"), 0o644
        ),
    ]


def guest_files_digest() -> str:
    """Changes whenever any injected file changes (templates and images key on it)."""
    h = hashlib.sha256()
    for f in guest_files():
        h.update(f.path.encode() + b"\0" + oct(f.mode).encode() + b"\0" + f.data)
    return h.hexdigest()[:16]
