"""Where banger keeps things: XDG by default, everything under one root with BANGER_HOME."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from banger.errors import Conflict

HOME_ENV = "BANGER_HOME"


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    state_dir: Path
    cache_dir: Path
    runtime_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def db_file(self) -> Path:
        return self.state_dir / "banger.db"

    @property
    def vms_dir(self) -> Path:
        return self.state_dir / "vms"

    @property
    def images_dir(self) -> Path:
        return self.state_dir / "images"

    @property
    def kernels_dir(self) -> Path:
        return self.state_dir / "kernels"

    @property
    def downloads_dir(self) -> Path:
        return self.cache_dir / "downloads"

    @property
    def daemon_log(self) -> Path:
        return self.state_dir / "bangerd.log"

    @property
    def socket(self) -> Path:
        return self.runtime_dir / "bangerd.sock"

    @property
    def daemon_lock(self) -> Path:
        return self.runtime_dir / "bangerd.lock"

    @property
    def spawn_lock(self) -> Path:
        return self.runtime_dir / "spawn.lock"

    def vm_dir(self, vm_id: str) -> Path:
        return self.vms_dir / vm_id

    @property
    def private_dirs(self) -> tuple[Path, ...]:
        """What other users must not read: VM disks, keys, the database, downloads."""
        return (self.state_dir, self.cache_dir, self.vms_dir, self.images_dir, self.kernels_dir)

    def ensure(self) -> None:
        """Create the directories: state and cache 0700, the runtime dir checked to be ours."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for d in self.private_dirs:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)  # an existing one: permissions.py
        ensure_private_dir(self.runtime_dir)


SOCKET_DIR_FIX = "remove it, or set XDG_RUNTIME_DIR to a directory of your own"


def ensure_private_dir(path: Path) -> None:
    """Create the daemon socket dir (0700), or check that an existing one is only ours."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_private_dir(path)


def check_private_dir(path: Path) -> None:
    """The socket dir must be a real directory owned by this user; its mode is made 0700.

    Another user could pre-create it (the /tmp fallback) and serve a fake daemon in it.
    FileNotFoundError when it does not exist yet.
    """
    st = path.lstat()
    what = f"the daemon socket dir {path}"
    if stat.S_ISLNK(st.st_mode):
        raise Conflict(f"{what} is a symlink, not a directory; {SOCKET_DIR_FIX}")
    if not stat.S_ISDIR(st.st_mode):
        raise Conflict(f"{what} is not a directory; {SOCKET_DIR_FIX}")
    if st.st_uid != os.geteuid():
        raise Conflict(f"{what} is owned by uid {st.st_uid}, not you; {SOCKET_DIR_FIX}")
    if stat.S_IMODE(st.st_mode) != 0o700:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_ino != st.st_ino:
                raise Conflict(f"{what} changed while being checked; {SOCKET_DIR_FIX}")
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)


def resolve_paths(env: dict[str, str] | None = None) -> Paths:
    env = dict(os.environ) if env is None else env
    root = env.get(HOME_ENV)
    if root:
        base = Path(root).expanduser().resolve()
        return Paths(base / "config", base / "state", base / "cache", base / "run")
    home = Path(env.get("HOME") or Path.home())
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "banger"
    state = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state") / "banger"
    cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "banger"
    xdg_runtime = env.get("XDG_RUNTIME_DIR")
    runtime = Path(xdg_runtime) / "banger" if xdg_runtime else Path(f"/tmp/banger-{os.getuid()}")
    return Paths(config, state, cache, runtime)
