"""What each page shows, gathered from the daemon's state into plain values for the templates.

Everything here reads (repos, files, /proc); the lifecycle actions are in `actions.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from banger import __version__
from banger.config import host as host_facts
from banger.config.sizes import format_size_mib
from banger.daemon.guest_ports import ports_of
from banger.daemon.handlers.sessions import sessions_of
from banger.daemon.operations_repo import OperationRecord, OperationRepo
from banger.daemon.state import Daemon
from banger.daemon.webui.stats import DiskUse, ProcSampler, ProcStats, host_memory
from banger.errors import BangerError
from banger.images.manifest import list_images
from banger.kernels.manifest import list_kernels
from banger.logfiles import tail_bytes
from banger.net.plan import parse_publish
from banger.rpc.methods.vm import PortRow
from banger.textsafe import TerminalFilter, clean
from banger.vmm.base import VmHandles
from banger.vms import events
from banger.vms.manager import net_view
from banger.vms.model import VmRecord, VmState
from banger.vms.restore import saved_state

log = logging.getLogger("banger.daemon.webui")
CONSOLE_LINES = 100
PORTS_TIMEOUT = 5.0  # a page waits this long for the guest's ports; the search goes on behind
CONSOLE_BYTES = 64 * 1024
RECENT_OPS = 10
ACTIVE = (VmState.RUNNING, VmState.STARTING, VmState.STOPPING)


@dataclass(frozen=True)
class Port:
    label: str
    url: str | None  # a link the host's browser can open
    process: str = ""  # the listening process, as the guest named it (cleaned)


@dataclass
class Views:
    daemon: Daemon
    sampler: ProcSampler
    disk: DiskUse
    # One port search per VM at a time: page loads and refreshes share the running one.
    searches: dict[str, asyncio.Future[list[PortRow]]] = field(default_factory=dict)

    @staticmethod
    def of(daemon: Daemon) -> Views:
        return Views(daemon, ProcSampler(), DiskUse(daemon.paths.state_dir))

    def vms(self) -> list[VmRecord]:
        return self.daemon.vms.repo.all()

    def find(self, name: str) -> VmRecord | None:
        return next((vm for vm in self.vms() if vm.name == name), None)

    def vmm_stats(self, vm: VmRecord) -> ProcStats | None:
        """CPU and memory of the VM's VMM process (its pid from the VM's handles)."""
        if vm.state not in ACTIVE:
            return None
        handles = VmHandles.load(self.daemon.paths.vm_dir(vm.id))
        if handles is None or handles.pid <= 1:
            return None
        return self.sampler.sample(handles.pid)

    async def dashboard(self) -> dict[str, Any]:
        vms = self.vms()
        vm_mgr = self.daemon.vms
        paths = self.daemon.paths
        images = await asyncio.to_thread(list_images, paths)
        kernels = await asyncio.to_thread(list_kernels, paths)
        disk = await asyncio.to_thread(self.disk.bytes)
        running = [(vm, self.vmm_stats(vm)) for vm in vms if vm.state in ACTIVE]
        return {
            "version": __version__,
            "cores": host_facts.cpu_count(),
            "memory": host_memory(),
            "disk_mib": disk >> 20,
            "state_dir": str(paths.state_dir),
            "accel": vm_mgr.accel.upper(),
            "vmm": vm_mgr.backend.name,
            "vmm_reason": vm_mgr.backend.reason,
            "by_state": sorted(Counter(vm.state for vm in vms).items()),
            "vm_count": len(vms),
            "image_count": len(images),
            "kernel_count": len(kernels),
            "running": running,
            "operations": self.operations(),
        }

    def operations(self) -> list[OperationRecord]:
        return OperationRepo(self.daemon.store).recent(RECENT_OPS)

    def detail(self, vm: VmRecord, ui_host: str) -> dict[str, Any]:
        vm_dir = self.daemon.paths.vm_dir(vm.id)
        return {
            "vm": vm,
            "spec": f"{vm.vcpu} vCPU · {format_size_mib(vm.memory_mib)} memory · "
                    f"{format_size_mib(vm.disk_mib)} disk",
            "dns": f"{vm.name}.vm",
            "ports": self.published(vm, ui_host),
            "events": list(reversed(events.recent(vm_dir, limit=30))),
            "saved": self.saved(vm),
            "stats": self.vmm_stats(vm),
            "console": self.console(vm),
        }

    def saved(self, vm: VmRecord) -> bool:
        return saved_state(self.daemon.paths.vm_dir(vm.id)).exists()

    async def sessions(self, vm: VmRecord) -> list[dict[str, Any]]:
        """A running VM's guest sessions, as `vm show` lists them ([] when it cannot tell)."""
        if vm.state != VmState.RUNNING:
            return []
        return await sessions_of(self.daemon, vm.name)

    def published(self, vm: VmRecord, ui_host: str) -> list[Port]:
        """Published ports (HOST:GUEST on 127.0.0.1) and sshd, as the host reaches them.

        Links name the loopback by the other name than the UI's own (localhost vs 127.0.0.1):
        cookies are per host, not per port, so a guest's web server never gets the UI's cookie.
        """
        link_host = "127.0.0.1" if ui_host.rsplit(":", 1)[0] == "localhost" else "localhost"
        found: list[Port] = []
        for spec in vm.publish:
            with contextlib.suppress(BangerError):
                pub = parse_publish(spec)
                found.append(Port(f"127.0.0.1:{pub.host_port} → guest {pub.guest_port}",
                                  f"http://{link_host}:{pub.host_port}/"))
        if vm.state == VmState.RUNNING and vm.ip and vm.net_mode == "tap":
            found.append(Port(f"{vm.ip}:22 (ssh)", None))
        return found

    def _ended(self, key: str, search: asyncio.Future[list[PortRow]]) -> None:
        self.searches.pop(key, None)
        if not search.cancelled():
            search.exception()  # retrieved here; listening() logs it

    async def listening(self, vm: VmRecord, ui_host: str) -> list[Port] | None:
        """The guest's listening sockets as `banger vm ports` finds them (None: cannot tell now).

        An HTTP endpoint links to the address the host reaches it at (user mode: the VM's own
        loopback address, never the UI's, so the guest gets no cookie; tap: its IP, unless it is
        inside a network namespace the browser cannot enter).
        """
        if vm.state != VmState.RUNNING or vm.net_mode is None:
            return []
        search = self.searches.get(vm.id)
        if search is None:  # a finished search leaves the map: the next asks the guest again
            search = asyncio.ensure_future(ports_of(self.daemon.vms, vm))
            search.add_done_callback(functools.partial(self._ended, vm.id))
            self.searches[vm.id] = search
        try:  # shielded: a cancelled search could leave a loopback forward half recorded
            rows = await asyncio.wait_for(asyncio.shield(search), PORTS_TIMEOUT)
        except (BangerError, TimeoutError) as exc:
            log.debug("no ports for %s: %s", vm.name, exc)
            return None
        where = self.daemon.vms.net.endpoint(net_view(vm))
        own = ui_host.rsplit(":", 1)[0]
        browsable = where.host if where.host and not where.netns and where.host != own else None
        found: list[Port] = []
        for row in sorted(rows, key=lambda r: (r.port, r.proto)):
            if row.endpoint is None:
                found.append(Port(f"{row.proto} {row.address}:{row.port} (guest only)", None,
                                  row.process))
                continue
            port = row.endpoint.rsplit(":", 1)[1]
            url = f"http://{browsable}:{port}/" if browsable and row.http else None
            found.append(Port(f"{row.endpoint}{' (http)' if row.http else ''}", url, row.process))
        return found

    def console(self, vm: VmRecord) -> str:
        """The console log's last lines: escape sequences and controls removed."""
        raw = tail_bytes(self.daemon.paths.vm_dir(vm.id) / "console.log", CONSOLE_BYTES)
        text = TerminalFilter().feed(raw, final=True).decode(errors="replace")
        lines = [line.rstrip() for line in text.splitlines()]
        if len(raw) == CONSOLE_BYTES and lines:  # the first line was cut by the tail
            lines = lines[1:]
        return "\n".join(clean(line, limit=400) for line in lines[-CONSOLE_LINES:])
