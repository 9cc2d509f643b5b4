"""Which resolver the host uses for names, and the file that sends `.vm` to bangerd-dns."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from banger.net.plan import nameservers

DNS_LISTEN = "127.0.0.1:42069"
RESOLVED_DROPIN = "/etc/systemd/resolved.conf.d/banger.conf"
DNSMASQ_CONF = "/etc/dnsmasq.d/banger.conf"
NM_DNSMASQ_CONF = "/etc/NetworkManager/dnsmasq.d/banger.conf"
RESOLVER_FILES = (RESOLVED_DROPIN, DNSMASQ_CONF, NM_DNSMASQ_CONF)
RELOAD = {RESOLVED_DROPIN: ("reload-or-restart", "systemd-resolved"),
          DNSMASQ_CONF: ("restart", "dnsmasq"), NM_DNSMASQ_CONF: ("reload", "NetworkManager")}
HEADER = "# written by `banger system install`: .vm names go to bangerd-dns\n"


@dataclass(frozen=True)
class Wiring:
    name: str  # what the host resolves with, as the user knows it
    path: str  # the file to write (an absolute path on the host)
    text: str
    reload: tuple[str, ...]  # the systemctl arguments that make it read the file


def render_resolved(listen: str = DNS_LISTEN) -> str:
    # `~vm` is routing-only: only *.vm goes to banger; a port in DNS= needs systemd >= 246.
    return f"{HEADER}[Resolve]\nDNS={listen}\nDomains=~vm\n"


def render_dnsmasq(listen: str = DNS_LISTEN) -> str:
    host, _, port = listen.rpartition(":")
    return f"{HEADER}server=/vm/{host}#{port}\n"


def manual_hint(listen: str = DNS_LISTEN) -> str:
    return ("no supported resolver found (systemd-resolved or dnsmasq): `.vm` is not wired into "
            f"the host's resolver. Send `.vm` to {listen} yourself, e.g. a dnsmasq with "
            f"`{render_dnsmasq(listen).splitlines()[-1]}` listed first in /etc/resolv.conf "
            "(docs/dns.md); `banger ssh-config --install` makes ssh work without DNS")


USER_UIDS = range(1000, 60001)  # login.defs' UID_MIN..UID_MAX: people, not services (nobody is 65534)


def running_programs(proc: Path = Path("/proc")) -> set[str]:
    """The command names (comm) of processes not run by a person's account (dnsmasq drops to
    nobody): any user can name a process `dnsmasq`, and install must not act on that."""
    names = set()
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid not in USER_UIDS:
                    names.add((entry / "comm").read_text().strip())
    return names


def detect(at: Callable[[str], Path], programs: set[str],
           listen: str = DNS_LISTEN) -> Wiring | None:
    """systemd-resolved when resolv.conf goes through it, else a dnsmasq on loopback (under
    NetworkManager or alone) whose config dir exists; None when neither."""
    resolv = at("/etc/resolv.conf")
    servers = nameservers(resolv)
    target = os.readlink(resolv) if resolv.is_symlink() else ""
    if "systemd-resolved" in programs and ("/run/systemd/resolve/" in target
                                           or "127.0.0.53" in servers):
        return Wiring("systemd-resolved", RESOLVED_DROPIN, render_resolved(listen),
                      RELOAD[RESOLVED_DROPIN])
    if "dnsmasq" not in programs or not any(s.startswith("127.") for s in servers):
        return None
    if "NetworkManager" in programs and at("/etc/NetworkManager/dnsmasq.d").is_dir():
        return Wiring("NetworkManager's dnsmasq", NM_DNSMASQ_CONF, render_dnsmasq(listen),
                      RELOAD[NM_DNSMASQ_CONF])
    if at("/etc/dnsmasq.d").is_dir():
        return Wiring("dnsmasq", DNSMASQ_CONF, render_dnsmasq(listen), RELOAD[DNSMASQ_CONF])
    return None
