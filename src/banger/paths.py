"""Where banger keeps things: XDG by default, everything under one root with BANGER_HOME."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from banger.errors import InvalidArgument

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

    def ensure(self) -> None:
        """Create the directories; the runtime dir is private (0700)."""
        for d in (self.config_dir, self.state_dir, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        ensure_private_dir(self.runtime_dir)


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"runtime dir {path} is not a directory; remove it and retry")
    if st.st_uid != os.getuid():
        raise InvalidArgument(f"runtime dir {path} is owned by uid {st.st_uid}, not you")
    if stat.S_IMODE(st.st_mode) != 0o700:
        path.chmod(0o700)


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
