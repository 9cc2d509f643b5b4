"""What `banger system install` writes for the helper: systemd units, and the check that root
would only run code that root alone can change."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from banger.errors import Conflict

SOCKET_UNIT = "bangerd-root.socket"
SERVICE_UNIT = "bangerd-root.service"


def socket_unit(socket_path: Path, group: str) -> str:
    return f"""[Unit]
Description=banger root helper socket (tap networking for group {group})

[Socket]
ListenStream={socket_path}
SocketUser=root
SocketGroup={group}
SocketMode=0660
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""


def service_unit(helper: Path, config: Path) -> str:
    # The helper needs CAP_NET_ADMIN (links, taps, nft) and nothing else of root's.
    return f"""[Unit]
Description=banger root helper (bridge, taps and NAT for the banger group)
Requires={SOCKET_UNIT}
After={SOCKET_UNIT}

[Service]
ExecStart={helper} --config {config}
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
"""


def helper_executable() -> Path:
    """The bangerd-root next to the running interpreter (the same install as this banger)."""
    return Path(sys.executable).parent / "bangerd-root"


def _check_one(path: Path) -> None:
    """Root's, and writable by no one else (a root group may write; so may a sticky dir's users)."""
    st = path.lstat()
    mode = 0 if stat.S_ISLNK(st.st_mode) else st.st_mode  # a symlink's own mode means nothing
    sticky_dir = stat.S_ISDIR(mode) and mode & stat.S_ISVTX
    if st.st_uid != 0 or (mode & stat.S_IWGRP and st.st_gid != 0) or (
            mode & stat.S_IWOTH and not sticky_dir):
        raise Conflict(f"the root helper would run code that another user can change ({path}, "
                       f"uid {st.st_uid}); install banger where only root can write (e.g. "
                       "`sudo python3 -m venv /opt/banger` and `sudo /opt/banger/bin/pip install .`) "
                       "and run that banger's `system install`")


def check_root_only(*trees: Path) -> None:
    """Every file under each tree, each tree's ancestors and the interpreter: root's alone."""
    checked: set[Path] = set()
    for tree in (*trees, Path(os.path.realpath(sys.executable))):
        real = Path(os.path.realpath(tree))
        for ancestor in [real, *real.parents]:
            if ancestor not in checked:
                checked.add(ancestor)
                _check_one(ancestor)
        if real.is_dir():
            for top, dirs, files in os.walk(real):
                for name in (*dirs, *files):
                    _check_one(Path(top) / name)
