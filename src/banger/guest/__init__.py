"""The files banger puts into every image: agent, its protocol module, init wrapper, sshd drop-in."""

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


def _read(package: str, name: str) -> bytes:
    return resources.files(package).joinpath(name).read_bytes()


def guest_files() -> list[GuestFile]:
    """Everything injected into an image, in a stable order."""
    return [
        GuestFile(f"{GUEST_LIB}/agent.py", _read("banger.agent", "guest_agent.py"), 0o755),
        GuestFile(f"{GUEST_LIB}/protocol.py", _read("banger.agent", "protocol.py"), 0o644),
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
