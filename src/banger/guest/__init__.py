"""The files banger puts into every image: the agent package, init wrapper, sshd drop-in."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

GUEST_LIB = "/usr/local/lib/banger"
INIT_PATH = f"{GUEST_LIB}/init"
AGENT_PACKAGE = "agent"  # its name in the guest, where GUEST_LIB is on sys.path
AGENT_DIR = f"{GUEST_LIB}/{AGENT_PACKAGE}"
AGENT_PORT_NAME = "banger.agent"
# Which guest files a root has (their digest); the initramfs skips the install when it matches.
GUEST_STAMP = f"{GUEST_LIB}/guest-files.digest"


@dataclass(frozen=True)
class GuestFile:
    path: str  # absolute path inside the guest
    data: bytes
    mode: int


# The agent package (banger.guest.agent here), shipped as is: stdlib-only, relative imports.
AGENT_MODULES = ("__init__.py", "__main__.py", "protocol.py", "core.py", "children.py",
                 "session.py", "network.py", "system_ops.py", "exec_ops.py", "sessions_log.py",
                 "sessions.py", "sessions_ops.py", "server.py")


def _read(package: str, name: str) -> bytes:
    return resources.files(package).joinpath(name).read_bytes()


def guest_files() -> list[GuestFile]:
    """Everything injected into an image, in a stable order."""
    return [
        *(GuestFile(f"{AGENT_DIR}/{name}", _read("banger.guest.agent", name), 0o644)
          for name in AGENT_MODULES),
        GuestFile(INIT_PATH, _read("banger.guest", "files/init"), 0o755),
        GuestFile(
            "/etc/ssh/sshd_config.d/banger.conf", _read("banger.guest", "files/sshd-banger.conf"), 0o644
        ),
    ]


def files_digest(files: Sequence[GuestFile]) -> str:
    """Changes whenever any of these files changes (templates and images key on it)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.path.encode() + b"\0" + oct(f.mode).encode() + b"\0" + f.data)
    return h.hexdigest()[:16]


def guest_files_digest() -> str:
    return files_digest(guest_files())


def stamp_file(digest: str) -> GuestFile:
    """The stamp the initramfs compares with the guest files it carries."""
    return GuestFile(GUEST_STAMP, f"{digest}\n".encode(), 0o644)
