"""Do `.vm` names resolve from the host (through its resolver, as ssh and curl would ask)?"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from banger.config import Config
from banger.doctor.check import Check
from banger.paths import Paths

FIX = ("`sudo banger system install` wires .vm into the host's resolver (systemd-resolved or "
       "dnsmasq); for ssh alone, `banger ssh-config --install` needs no DNS")
TIMEOUT = 3.0


def host_resolves(name: str, timeout: float = TIMEOUT) -> set[str]:
    """The IPv4 addresses the system resolver gives for name ({} on failure or timeout)."""
    found: set[str] = set()

    def ask() -> None:
        try:
            infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return
        found.update(str(info[4][0]) for info in infos)

    worker = threading.Thread(target=ask, daemon=True)  # getaddrinfo has no timeout of its own
    worker.start()
    worker.join(timeout)
    return set(found) if not worker.is_alive() else set()


def running_vms(paths: Paths) -> dict[str, str]:
    from banger.store import Store
    from banger.vms.repo import VmRepo

    if not paths.db_file.exists():
        return {}
    store = Store(paths.db_file, readonly=True)
    try:
        return VmRepo(store).running_addresses()
    finally:
        store.close()


def vm_names(paths: Paths, config: Config, *,
             resolve: Callable[[str], set[str]] = host_resolves) -> Iterator[Check]:
    from banger.dns.probe import answers
    from banger.dns.zones import zone_dir
    from banger.roothelper.resolver import DNS_LISTEN, RESOLVER_FILES

    running = running_vms(paths)
    if running:
        name, address = sorted(running.items())[0]
        got = resolve(f"{name}.vm")
        if address in got:
            yield Check(".vm names", "PASS", f"{name}.vm resolves to {address} from the host")
        else:
            seen = f"gives {', '.join(sorted(got))}" if got else "does not resolve"
            yield Check(".vm names", "WARN", f"{name}.vm {seen} from the host (want {address})",
                        FIX)
        return
    listen = DNS_LISTEN if zone_dir().is_dir() else config.dns_listen
    wired = [f for f in RESOLVER_FILES if Path(f).exists()]
    if answers(listen) and wired:
        yield Check(".vm names", "PASS", f".vm served on {listen}, wired in {wired[0]} (no "
                    "running VM to try a name)")
    elif not wired:
        yield Check(".vm names", "WARN", "the host's resolver does not send .vm to banger", FIX)
    else:
        yield Check(".vm names", "WARN", f"nothing answers .vm on {listen}",
                    "start bangerd-dns (`sudo banger system install`) or banger's daemon")


CHECKS = [vm_names]
