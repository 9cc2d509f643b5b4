"""/etc/banger/root.toml: the helper's own settings (the bridge it serves and who may call it)."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path

import msgspec

from banger.errors import ConfigError
from banger.textsafe import one_line

ROOT_CONFIG = Path("/etc/banger/root.toml")
GROUP = "banger"
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}", re.ASCII)


class RootConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    bridge_name: str = "br-banger"
    bridge_cidr: str = "10.77.0.0/24"
    group: str = GROUP


def check_root_config(file: Path, cfg: RootConfig) -> RootConfig:
    if not _IFNAME.fullmatch(cfg.bridge_name):
        raise ConfigError(f"{file}: key 'bridge_name': expected 1-15 letters, digits, . _ -")
    try:
        net = ipaddress.IPv4Network(cfg.bridge_cidr, strict=True)
    except ValueError as exc:
        raise ConfigError(f"{file}: key 'bridge_cidr': {exc}; expected e.g. 10.77.0.0/24") from None
    if net.prefixlen > 30 or not net.is_private:
        raise ConfigError(f"{file}: key 'bridge_cidr': expected a private IPv4 network of at "
                          "least 4 addresses, e.g. 10.77.0.0/24")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", cfg.group, re.ASCII):
        raise ConfigError(f"{file}: key 'group': expected a group name such as banger")
    return cfg


def load_root_config(file: Path = ROOT_CONFIG) -> RootConfig:
    """The file's settings; a missing file means the defaults."""
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        return RootConfig()
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {one_line(str(exc), 200)}") from None
    try:
        return check_root_config(file, msgspec.convert(data, RootConfig, strict=True))
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{file}: {one_line(str(exc), 200)}") from None


def render_root_config(cfg: RootConfig) -> str:
    return ("# banger's root helper (bangerd-root); written by `banger system install`\n"
            f'bridge_name = "{cfg.bridge_name}"\nbridge_cidr = "{cfg.bridge_cidr}"\n'
            f'group = "{cfg.group}"\n')
