"""`system install`'s `.vm` part: the shared zone dir, bangerd-dns as a systemd DynamicUser, and
the host resolver's wiring; their removal; and what `system status` says of them."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import msgspec

from banger.dns.probe import answers
from banger.dns.zones import ZONE_DIR
from banger.roothelper import resolver
from banger.roothelper.layout import Layout
from banger.roothelper.written import Written, digest, remove_unchanged, write
from banger.runner import run

DNS_SERVICE = "bangerd-dns.service"
TMPFILES = "/etc/tmpfiles.d/banger.conf"
ZONE_MODE = 0o1775  # sticky: users replace only their own <uid>.json; group banger writes


def dns_executable() -> Path:
    return Path(sys.executable).parent / "bangerd-dns"


def service_unit(exe: Path, listen: str = resolver.DNS_LISTEN, zone_dir: Path = ZONE_DIR) -> str:
    # It parses files users write: no root, no capabilities, nothing writable.
    return f"""[Unit]
Description=banger .vm DNS for every user (NAME.vm, NAME.USER.vm from {zone_dir})

[Service]
ExecStart={exe} --listen {listen} --zone-dir {zone_dir}
DynamicUser=yes
CapabilityBoundingSet=
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def tmpfiles_conf(group: str, zone_dir: Path = ZONE_DIR) -> str:
    return (f"# written by `banger system install`: the .vm zone dir comes back after reboot\n"
            f"d {zone_dir.parent} 0755 root root -\nd {zone_dir} {ZONE_MODE:04o} root {group} -\n")


def manual_start(exe: Path, zone_dir: Path = ZONE_DIR) -> str:
    return (f"no systemd here: start the .vm DNS as an unprivileged user with `runuser -u nobody "
            f"-- {exe} --listen {resolver.DNS_LISTEN} --zone-dir {zone_dir} &`")


def make_zone_dir(path: Path, gid: int) -> bool:
    """root:GROUP 1775; True when made here. An existing symlink or non-directory is refused."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    made = False
    try:
        path.mkdir(mode=0o700)
        made = True
    except FileExistsError:
        if not stat.S_ISDIR(path.lstat().st_mode):
            raise
    os.chown(path, 0, gid, follow_symlinks=False)
    path.chmod(ZONE_MODE)
    return made


def install(layout: Layout, files: list[Written], gid: int, group: str) -> tuple[bool, list[str]]:
    """Zone dir, tmpfiles line, DNS unit, resolver file; (zone dir made, what to say)."""
    said = []
    zone = layout.at(ZONE_DIR)
    made = make_zone_dir(zone, gid)
    said.append(f"{'made' if made else 'kept'} {zone} (root:{group} {ZONE_MODE:04o}): users' "
                "daemons publish their VMs there")
    said.append(write(files, layout.at(TMPFILES), tmpfiles_conf(group), "tmpfiles"))
    exe = dns_executable()
    if layout.systemd():
        said.append(write(files, layout.at(f"/etc/systemd/system/{DNS_SERVICE}"),
                          service_unit(exe), "dns-unit"))
        run(["systemctl", "daemon-reload"], what="systemctl")
        run(["systemctl", "enable", "--now", DNS_SERVICE], what="systemctl")
        said.append(f"started {DNS_SERVICE} on {resolver.DNS_LISTEN}")
    else:
        said.append(manual_start(exe))
    wiring = resolver.detect(layout.at, resolver.running_programs())
    if wiring is None:
        said.append(resolver.manual_hint())
        return made, said
    said.append(write(files, layout.at(wiring.path), wiring.text, "resolver"))
    if layout.systemd():
        run(["systemctl", *wiring.reload], check=False, what="systemctl")
        said.append(f".vm wired into {wiring.name}")
    else:
        said.append(f".vm wired into {wiring.name}: restart it for the file to apply")
    return made, said


def uninstall(layout: Layout, files: list[Written], zone_made: bool) -> list[str]:
    """Stop the service, remove unchanged files (re-reading the resolver), the zone dir."""
    if layout.systemd() and any(w.role == "dns-unit" for w in files):
        run(["systemctl", "disable", "--now", DNS_SERVICE], check=False, what="systemctl")
    said = remove_unchanged(files)
    for w in files:  # the real root only (systemd): a resolver re-reads its config
        reload = resolver.RELOAD.get(w.path) if layout.systemd() else None
        if w.role == "resolver" and reload and not Path(w.path).exists():
            run(["systemctl", *reload], check=False, what="systemctl")
    zone = layout.at(ZONE_DIR)
    if zone_made and zone.is_dir() and not zone.is_symlink():
        shutil.rmtree(zone)  # fd-based on Linux: a user's symlink in it is removed, not followed
        said.append(f"removed {zone} (running daemons serve .vm themselves once restarted)")
    return said


class DnsStatus(msgspec.Struct):
    service: str
    zone_dir: str
    resolver: str


def status(layout: Layout, files: list[Written]) -> DnsStatus:
    unit = layout.at(f"/etc/systemd/system/{DNS_SERVICE}")
    up = answers(resolver.DNS_LISTEN)
    service = (f"answers on {resolver.DNS_LISTEN}" if up else f"nothing answers .vm on "
               f"{resolver.DNS_LISTEN}") + (f" ({DNS_SERVICE} installed)" if unit.exists() else "")
    zone = layout.at(ZONE_DIR)
    try:
        st = zone.lstat()
        zone_text = (f"{zone} mode {stat.S_IMODE(st.st_mode):04o} uid {st.st_uid} gid {st.st_gid}"
                     if stat.S_ISDIR(st.st_mode) else f"{zone} is not a directory")
    except FileNotFoundError:
        zone_text = f"{zone} missing: each daemon serves its own .vm (`sudo banger system install`)"
    wired = [w for w in files if w.role == "resolver"]
    if not wired:
        return DnsStatus(service, zone_text, "not wired by banger (`sudo banger system install`, "
                         "or docs/dns.md for other resolvers)")
    path = Path(wired[0].path)
    intact = path.exists() and digest(path.read_bytes()) == wired[0].sha256
    return DnsStatus(service, zone_text, f"{path}{'' if intact else ' (changed or missing)'}")

