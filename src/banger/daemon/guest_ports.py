"""A running VM's listening sockets and how the host reaches each: `vm ports` and the web UI's
VM page share this one implementation."""

from __future__ import annotations

import ipaddress

from banger.net.nsock import answers_http
from banger.net.plan import VmNet
from banger.rpc.methods.vm import PortRow
from banger.textsafe import clean
from banger.vms.manager import VmManager, net_view
from banger.vms.model import VmRecord

MAX_REACHED = 64  # guest ports given a host endpoint per search


async def _host_port(mgr: VmManager, vm: VmNet, guest_port: int) -> int | None:
    """The port on the VM's host-reachable address that reaches guest_port, if any."""
    if vm.mode == "tap":
        return guest_port
    if guest_port == 22:
        return mgr.net.endpoint(vm).ssh_port
    ok = await mgr.net.ensure_loopback_forward(vm, guest_port)
    return guest_port if ok else None


async def _reach(mgr: VmManager, vm: VmNet, guest_port: int) -> tuple[str, bool] | None:
    """`<name>.vm:port` reaching guest_port from the host, and whether it answers HTTP."""
    port = await _host_port(mgr, vm, guest_port)
    if port is None:
        return None
    where = mgr.net.endpoint(vm)
    return f"{vm.name}.vm:{port}", await answers_http(where.netns, where.host, port)


async def ports_of(mgr: VmManager, vm: VmRecord) -> list[PortRow]:
    """The guest agent's listening sockets, each with the endpoint the host reaches it at."""
    _, agent = await mgr.agent_for(vm.id)
    rows, reached = [], 0
    for entry in await agent.ports():
        # Built from the typed fields only: nothing the guest sends can set a host key.
        row = PortRow(proto=entry.proto, address=entry.address, port=entry.port, pid=entry.pid,
                      process=clean(entry.process, limit=120), vm=vm.name, endpoint=None,
                      http=False)
        guest_only = ipaddress.ip_address(entry.address).is_loopback
        # Each reached port is a host forward and a probe: a guest listening on thousands
        # must not make thousands of host listeners.
        if entry.proto.startswith("tcp") and not guest_only and reached < MAX_REACHED:
            reached += 1
            reach = await _reach(mgr, net_view(vm), entry.port)
            if reach is not None:
                row.endpoint, row.http = reach
        rows.append(row)
    return rows
