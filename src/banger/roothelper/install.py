"""`banger system install | uninstall | status`: the root helper's group, config and units,
and the `.vm` DNS for every user (roothelper/dns_unit.py).

Install records what it created (/etc/banger/installed.json) so uninstall removes exactly that:
a `banger` group that existed before is left alone, a file changed since install is kept.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

import banger
from banger.errors import BangerError, ConfigError
from banger.net.privileged import HELPER_SOCKET, SOCKET_ENV, HelperClient
from banger.roothelper import dns_unit, units
from banger.roothelper.config import GROUP, RootConfig, check_root_config, render_root_config
from banger.roothelper.layout import Layout
from banger.roothelper.written import Written
from banger.runner import run

MAX_USER_CONFIG = 64 * 1024
TUN = Path("/dev/net/tun")


class Record(msgspec.Struct, forbid_unknown_fields=True):
    group_created: bool = False
    config_written: bool = False
    units: list[str] = []
    files: list[Written] = []  # written with their sha256: removed only while unchanged
    zone_dir_created: bool = False


def group_id(layout: Layout, name: str) -> int | None:
    if layout.root == Path("/"):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None
    for line in layout.at("/etc/group").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == name and len(parts) > 2:
            return int(parts[2])
    return None


def load_record(layout: Layout) -> Record:
    try:
        return msgspec.json.decode(layout.record.read_bytes(), type=Record)
    except FileNotFoundError:
        return Record()
    except (OSError, msgspec.DecodeError) as exc:
        raise ConfigError(f"{layout.record}: unreadable ({exc}); remove it and rerun") from None


def user_bridge(user: str | None) -> RootConfig:
    """The bridge settings of the invoking user's config.toml, else the defaults."""
    try:
        account = pwd.getpwnam(user) if user else None
    except KeyError:
        account = None
    if account is None:
        return RootConfig()
    return read_user_bridge(Path(account.pw_dir) / ".config" / "banger" / "config.toml",
                            account.pw_uid)


def read_user_bridge(file: Path, uid: int) -> RootConfig:
    """The file is the user's: opened without following a final symlink, read only if theirs."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return RootConfig()
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            raise ConfigError(f"{file} is not a regular file of uid {uid}'s; fix it and rerun")
        data = f.read(MAX_USER_CONFIG + 1)
    try:
        keys = tomllib.loads(data[:MAX_USER_CONFIG].decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise ConfigError(f"{file}: not valid TOML; fix it and rerun") from None
    default = RootConfig()
    picked = RootConfig(bridge_name=str(keys.get("bridge_name", default.bridge_name)),
                        bridge_cidr=str(keys.get("bridge_cidr", default.bridge_cidr)))
    return check_root_config(file, picked)


@dataclass
class Installer:
    layout: Layout
    user: str | None  # who ran sudo: added to the group
    record: Record = field(default_factory=Record)
    said: list[str] = field(default_factory=list)

    def install(self) -> list[str]:
        units.check_root_only(Path(banger.__file__).parent, Path(sys.prefix))
        self.record = load_record(self.layout)
        self._group()
        self._config()
        self._units()
        if tun_problem():
            self.said.append(f"warning: {tun_problem()}")
        self._dns()
        self.layout.record.write_bytes(msgspec.json.encode(self.record))
        return self.said

    def _group(self) -> None:
        if group_id(self.layout, GROUP) is None:
            run(["groupadd", "--system", *self.layout.prefix_args(), GROUP], what="groupadd")
            self.record.group_created = True
            self.said.append(f"created group {GROUP}")
        if self.user and self.user != "root":
            run(["usermod", "-aG", GROUP, *self.layout.prefix_args(), self.user], what="usermod")
            self.said.append(f"added {self.user} to group {GROUP}: log in again (or run "
                             f"`newgrp {GROUP}`) for it to apply")

    def _dns(self) -> None:
        gid = group_id(self.layout, GROUP)
        assert gid is not None  # _group made it
        made, said = dns_unit.install(self.layout, self.record.files, gid, GROUP)
        self.record.zone_dir_created = self.record.zone_dir_created or made
        self.said.extend(said)

    def _config(self) -> None:
        config = self.layout.config
        if config.exists():
            self.said.append(f"kept {config}")
            return
        config.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        cfg = user_bridge(self.user)
        config.write_text(render_root_config(cfg))
        self.record.config_written = True
        self.said.append(f"wrote {config} (bridge {cfg.bridge_name} {cfg.bridge_cidr})")

    def _units(self) -> None:
        helper = units.helper_executable()
        if self.layout.systemd():
            socket_file, service_file = self.layout.unit_files
            socket_file.write_text(units.socket_unit(HELPER_SOCKET, GROUP))
            service_file.write_text(units.service_unit(helper, Path("/etc/banger/root.toml")))
            self.record.units = [str(socket_file), str(service_file)]
            run(["systemctl", "daemon-reload"], what="systemctl")
            run(["systemctl", "enable", "--now", units.SOCKET_UNIT], what="systemctl")
            self.said.append(f"installed and started {units.SOCKET_UNIT} (the helper starts on "
                             "first use)")
            return
        self.said.append(f"no systemd here: start the helper as root with `{helper} --socket "
                         f"{HELPER_SOCKET} &` (e.g. from your init system's startup script)")


def tun_problem(device: Path = TUN) -> str:
    """Why a normal user's VMM could not open its tap, or ''."""
    try:
        mode = device.stat().st_mode
    except OSError:
        return f"{device} is missing: tap mode needs the tun module (modprobe tun)"
    if stat.S_IMODE(mode) & 0o006 != 0o006:
        return (f"{device} is mode {stat.S_IMODE(mode):04o}: users' VMMs cannot open their taps; "
                f"`chmod 0666 {device}` (Debian's default)")
    return ""


def uninstall(layout: Layout) -> list[str]:
    record = load_record(layout)
    said: list[str] = []
    if record.units and layout.systemd():
        run(["systemctl", "disable", "--now", units.SOCKET_UNIT, units.SERVICE_UNIT], check=False,
            what="systemctl")
    for unit in record.units:
        Path(unit).unlink(missing_ok=True)
        said.append(f"removed {unit}")
    said.extend(dns_unit.uninstall(layout, record.files, record.zone_dir_created))
    if (record.units or record.files) and layout.systemd():
        run(["systemctl", "daemon-reload"], what="systemctl")
    if record.config_written and layout.config.exists():
        layout.config.unlink()
        said.append(f"removed {layout.config}")
    if layout.socket.is_socket():
        layout.socket.unlink()
        said.append(f"removed {layout.socket}")
    if record.group_created and group_id(layout, GROUP) is not None:
        run(["groupdel", *layout.prefix_args(), GROUP], what="groupdel")
        said.append(f"removed group {GROUP}")
    layout.record.unlink(missing_ok=True)
    for leftover in (layout.config.parent, layout.socket.parent):
        if leftover.is_dir() and not any(leftover.iterdir()):
            leftover.rmdir()
    return said or ["nothing to remove: the root helper was not installed"]


class Status(msgspec.Struct):
    installed: bool
    systemd_units: bool
    config: str
    socket: str
    reachable: bool
    bridge: str
    cidr: str
    group: str
    member: bool
    problem: str
    tun: str  # why a user's VMM could not open a tap, or ''
    dns: dns_unit.DnsStatus


def status(layout: Layout) -> Status:
    socket_path = Path(os.environ.get(SOCKET_ENV) or layout.socket)
    units_there = all(f.exists() for f in layout.unit_files)
    gid = group_id(layout, GROUP)
    member = os.geteuid() == 0 or (gid is not None and gid in os.getgroups())
    bridge = cidr = problem = ""
    try:
        info = HelperClient(socket_path).bridge()
        bridge, cidr = info.name, info.cidr
    except BangerError as exc:
        problem = exc.message
    return Status(installed=layout.config.exists() or units_there, systemd_units=units_there,
                  config=str(layout.config), socket=str(socket_path), reachable=not problem,
                  bridge=bridge, cidr=cidr, group=GROUP, member=member, problem=problem,
                  tun=tun_problem(), dns=dns_unit.status(layout, _files(layout)))


def _files(layout: Layout) -> list[Written]:
    try:
        return load_record(layout).files
    except ConfigError:  # status still shows the rest
        return []
