"""config.toml: typed keys, host-aware VM defaults, errors that name the file and the key."""

from __future__ import annotations

import ipaddress
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from banger.config import host
from banger.config.sizes import SIZE_HELP, parse_size_mib
from banger.egress_rules import parse_rules, parse_upstream
from banger.errors import ConfigError, InvalidArgument
from banger.paths import Paths

Vmm = Literal["auto", "qemu", "firecracker"]
Accel = Literal["auto", "kvm", "tcg"]
NetworkMode = Literal["auto", "tap", "user"]
LogLevel = Literal["debug", "info", "warning", "error"]

MAX_VCPU = 64
MAX_MEMORY_MIB = 256 * 1024
MAX_DISK_MIB = 4 * 1024 * 1024


class FileSync(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str
    guest: str
    mode: str | None = None


class RawVmDefaults(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    vcpu: int | None = None
    memory: str | int | None = None
    disk: str | int | None = None


class RawConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The keys of config.toml, as written."""

    vmm: Vmm = "auto"
    accel: Accel = "auto"
    default_image: str = "debian-bookworm"
    default_kernel: str = "debian-bookworm-cloud"
    vm_defaults: RawVmDefaults = RawVmDefaults()
    network_mode: NetworkMode = "auto"
    bridge_name: str = "br-banger"
    bridge_cidr: str = "10.77.0.0/24"
    netns: str = ""
    dns_listen: str = "127.0.0.1:42069"
    ui_listen: str = ""  # the web UI, loopback only; "": this user's own address, port 7777
    log_level: LogLevel = "info"
    ssh_key_path: str = ""
    debian_mirror: str = ""
    debian_allow_unsigned: bool = False  # unsafe: fetch Debian kernels without Release signatures
    file_sync: list[FileSync] = []
    firecracker_bin: str = ""
    jailer_bin: str = ""
    jailer_enabled: bool = False
    oci_insecure_registries: list[str] = []  # HOST[:PORT] pulled over plain HTTP / unverified TLS
    fast_start: bool = True
    egress_allow: list[str] = []  # --allow rules every user-mode VM gets unless it names its own
    egress_upstream_dns: str = ""  # ADDRESS[:PORT] egress VMs' names resolve through; "": host's


@dataclass(frozen=True)
class Setting:
    """A resolved value and where it came from (config, auto or builtin)."""

    value: int
    source: str


@dataclass(frozen=True)
class VmDefaults:
    vcpu: Setting
    memory_mib: Setting
    disk_mib: Setting


class Config(RawConfig, frozen=True, kw_only=True):
    """Every key of the file, typed, plus what was resolved from them and the host."""

    path: Path
    exists: bool
    sizes: VmDefaults  # vm_defaults resolved: auto-sized from the host where unset
    ssh_key: Path  # ssh_key_path resolved (default: the state dir's key)


def _allowed(struct: type[msgspec.Struct], key: str) -> str | None:
    hints = typing.get_type_hints(struct)
    hint = hints.get(key)
    args = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
    return ", ".join(args) if args else None


def _struct_at(path: list[str]) -> type[msgspec.Struct]:
    struct: type[msgspec.Struct] = RawConfig
    for part in path:
        nested = typing.get_type_hints(struct).get(part)
        if isinstance(nested, type) and issubclass(nested, msgspec.Struct):
            struct = nested
        elif typing.get_origin(nested) is list:
            struct = typing.get_args(nested)[0]
    return struct


def _explain(file: Path, exc: msgspec.ValidationError) -> ConfigError:
    text = str(exc)
    message, _, where = text.partition(" - at `$")
    parts = [p for p in re.split(r"[.\[\]]", where.rstrip("`")) if p and not p.isdigit()]
    unknown = re.match(r"Object contains unknown field `(.+)`", message)
    if unknown:
        key = ".".join([*parts, unknown.group(1)])
        allowed = ", ".join(_struct_at(parts).__struct_fields__)
        return ConfigError(f"{file}: unknown key '{key}' (allowed: {allowed})")
    key = ".".join(parts) or "(top level)"
    choices = _allowed(_struct_at(parts[:-1]), parts[-1]) if parts else None
    hint = f" (allowed: {choices})" if choices else ""
    return ConfigError(f"{file}: key '{key}': {message.rstrip('.')}{hint}")


def _check_values(file: Path, raw: RawConfig) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{file}: key '{key}': {why}")

    try:
        ipaddress.ip_network(raw.bridge_cidr, strict=True)
    except ValueError as exc:
        raise bad("bridge_cidr", f"{exc}; expected a network such as 10.77.0.0/24") from exc
    hostpart, _, port = raw.dns_listen.rpartition(":")
    if not hostpart or not port.isdigit() or not 0 < int(port) < 65536:
        raise bad("dns_listen", f"{raw.dns_listen!r} is not HOST:PORT such as 127.0.0.1:42069")
    try:
        if raw.ui_listen:
            ui_address(raw.ui_listen)
    except ValueError as exc:
        raise bad("ui_listen", str(exc)) from None
    if raw.debian_mirror and not re.match(r"^(https?|file)://", raw.debian_mirror):
        raise bad("debian_mirror", "expected an http://, https:// or file:// URL")
    if raw.ssh_key_path and not Path(raw.ssh_key_path).expanduser().is_absolute():
        raise bad("ssh_key_path", "must be an absolute path or start with ~/")
    for i, entry in enumerate(raw.file_sync):
        if not (entry.guest.startswith("~/") or entry.guest.startswith("/root/")):
            raise bad(f"file_sync[{i}].guest", "must start with ~/ or /root/")
        if entry.mode is not None and not re.fullmatch(r"0?[0-7]{3,4}", entry.mode):
            raise bad(f"file_sync[{i}].mode", "expected an octal mode such as 0600")
    try:
        parse_rules(raw.egress_allow)
    except InvalidArgument as exc:
        raise bad("egress_allow", exc.message) from None
    try:
        if raw.egress_upstream_dns:
            parse_upstream(raw.egress_upstream_dns)
    except InvalidArgument as exc:
        raise bad("egress_upstream_dns", exc.message) from None
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", raw.bridge_name):
        raise bad("bridge_name", "expected an interface name of 1-15 letters, digits, . _ -")



def ui_address(listen: str) -> tuple[str, int]:
    """ui_listen as (address, port); only loopback: the UI must never face a network."""
    host, _, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{listen!r} is not ADDRESS:PORT such as 127.0.0.1:7777")
    if not address.is_loopback:
        raise ValueError(f"{listen!r} is not a loopback address: the web UI listens on "
                         "127.0.0.0/8 or [::1] only")
    return str(address), int(port)


def _resolve_defaults(file: Path, raw: RawVmDefaults) -> VmDefaults:
    def size(key: str, value: str | int | None, auto: int, source: str) -> Setting:
        if value is None:
            return Setting(auto, source)
        try:
            return Setting(parse_size_mib(value, what=key), "config")
        except InvalidArgument as exc:
            raise ConfigError(f"{file}: key 'vm_defaults.{key}': expected {SIZE_HELP}") from exc

    if raw.vcpu is not None and not 0 < raw.vcpu <= MAX_VCPU:
        raise ConfigError(f"{file}: key 'vm_defaults.vcpu': expected 1..{MAX_VCPU}")
    auto_vcpu = min(4, host.cpu_count() // 4)
    vcpu = Setting(raw.vcpu, "config") if raw.vcpu else (
        Setting(auto_vcpu, "auto") if auto_vcpu >= 1 else Setting(1, "builtin")
    )
    auto_mem = min(8192, host.memory_mib() // 8 // 256 * 256)
    mem_default = Setting(auto_mem, "auto") if auto_mem >= 1024 else Setting(1024, "builtin")
    memory = size("memory", raw.memory, mem_default.value, mem_default.source)
    disk = size("disk", raw.disk, 8192, "builtin")
    return VmDefaults(vcpu, memory, disk)


def load_config(paths: Paths) -> Config:
    """Load and validate config.toml; a missing file means all defaults."""
    file = paths.config_file
    data: dict[str, Any] = {}
    exists = file.exists()
    if exists:
        try:
            data = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc.strerror}") from exc
    try:
        raw = msgspec.convert(data, RawConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise _explain(file, exc) from None
    _check_values(file, raw)
    key = Path(raw.ssh_key_path).expanduser() if raw.ssh_key_path else (
        paths.state_dir / "ssh" / "id_ed25519"
    )
    keys = {name: getattr(raw, name) for name in raw.__struct_fields__}
    return Config(**keys, path=file, exists=exists, sizes=_resolve_defaults(file, raw.vm_defaults),
                  ssh_key=key)
