"""vm.ssh_info, vm.ports, vm.forward: reaching a VM's network from the host."""

from __future__ import annotations

import asyncio
import contextlib
import time

from banger.daemon.context import Context
from banger.daemon.guest_ports import ports_of
from banger.daemon.registry import method
from banger.errors import BangerError, InvalidArgument, NotRunning, Unavailable
from banger.images.manifest import get_image
from banger.net.plan import parse_publish
from banger.rpc.methods import VmRef
from banger.rpc.methods.vm import (
    VM_FORWARD,
    VM_PORTS,
    VM_SSH_INFO,
    ForwardParams,
    ForwardResult,
    PortRow,
    PortsParams,
    SshInfo,
)
from banger.ssh.keys import ensure_key, host_alias, known_hosts
from banger.vms.manager import VmManager, net_view
from banger.vms.model import VmRecord, VmState

SSHD_WAIT = 30.0


def _running(mgr: VmManager, ref: str) -> VmRecord:
    vm = mgr.repo.find(ref)
    if vm.state != VmState.RUNNING:
        raise NotRunning(f"VM {vm.name} is {vm.state}; start it with `banger vm start {vm.name}`")
    if vm.net_mode is None:
        raise InvalidArgument(f"VM {vm.name} has no network (created before networking existed)")
    return vm


@method(VM_SSH_INFO)
async def vm_ssh_info(ctx: Context, p: VmRef) -> SshInfo:
    """How to ssh in, once sshd listens (it starts just after the VM gets its identity)."""
    mgr = ctx.daemon.vms
    vm = _running(mgr, p.vm)
    key = ctx.daemon.config.ssh_key
    await asyncio.to_thread(ensure_key, key)
    await _wait_for_sshd(mgr, vm)
    where = mgr.net.endpoint(net_view(vm))
    return SshInfo(name=vm.name, host=where.host, port=where.ssh_port, netns=where.netns,
                   key=str(key), known_hosts=str(known_hosts(ctx.daemon.paths.state_dir)),
                   alias=host_alias(vm.name), user="root")


async def _wait_for_sshd(mgr: VmManager, vm: VmRecord) -> None:
    has_sshd = None  # unknown (an OCI image, or one deleted since): just wait
    with contextlib.suppress(BangerError):
        has_sshd = get_image(mgr.paths, vm.image).has_package("openssh-server")
    if has_sshd is False:
        raise InvalidArgument(f"image {vm.image} has no ssh server; use `banger vm shell {vm.name}`")
    _, agent = await mgr.agent_for(vm.id)
    deadline = time.monotonic() + SSHD_WAIT
    while not any(p.port == 22 for p in await agent.ports()):
        if time.monotonic() > deadline:
            raise Unavailable(f"nothing listens on port 22 in {vm.name} after {SSHD_WAIT:.0f}s; "
                              f"see `banger vm exec {vm.name} -- systemctl status ssh`")
        await asyncio.sleep(0.2)


@method(VM_PORTS)
async def vm_ports(ctx: Context, p: PortsParams) -> list[PortRow]:
    mgr = ctx.daemon.vms
    vms = [_running(mgr, ref) for ref in p.vms]
    found = await asyncio.gather(*(ports_of(mgr, vm) for vm in vms))
    return [row for rows in found for row in rows]


@method(VM_FORWARD)
async def vm_forward(ctx: Context, p: ForwardParams) -> ForwardResult:
    """Publish a guest port on 127.0.0.1 now and on every later start."""
    mgr = ctx.daemon.vms
    pub = parse_publish(p.publish)
    async with mgr.lock(mgr.repo.find(p.vm).id):
        vm = _running(mgr, p.vm)
        if any(parse_publish(s).host_port == pub.host_port for s in vm.publish):
            raise InvalidArgument(f"{vm.name} already publishes host port {pub.host_port}")
        await mgr.net.add_forward(net_view(vm), pub)
        mgr.repo.update(vm.id, publish=[*vm.publish, str(pub)])
    return ForwardResult(vm.name, f"127.0.0.1:{pub.host_port}", pub.guest_port)
