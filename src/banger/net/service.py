"""The network side of a VM's life: plan at create, attach at start, tear down at stop/delete.

Called by the VmManager; everything here is idempotent so stop, kill, delete and reconcile can
all call teardown() without knowing what was set up.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from banger.config import Config
from banger.errors import BangerError, Conflict, InvalidArgument, Unavailable
from banger.net import plan
from banger.net.admin import Bridge
from banger.net.egress.gates import Gates, check_supported
from banger.net.forward import PUBLISH_HOST, Proxies, check_port_free
from banger.net.plan import VmNet
from banger.net.privileged import InProcess, PrivilegedNet, privileged_net
from banger.paths import Paths
from banger.ssh.keys import ensure_key
from banger.vmm.base import Backend, HostForward, NetworkAttachment, PortForwarder, VmHandles

log = logging.getLogger("banger.net")
SSH_PORT = 22


@dataclass(frozen=True)
class Endpoint:
    """Where the host reaches a VM: address, ssh port and (tap mode) the netns to enter."""

    host: str
    ssh_port: int
    netns: str


def host_nameservers() -> list[str]:
    return [s for s in plan.nameservers() if not s.startswith("127.")]


def free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Network:
    def __init__(self, paths: Paths, config: Config, backend: Backend) -> None:
        self.paths = paths
        self.config = config
        self.backend_name = backend.name
        # user mode's host forwards go through the VMM's own network stack
        self.forwarder = backend if isinstance(backend, PortForwarder) else None
        self.netns: str = config.netns
        self.bridge: str = config.bridge_name
        self.cidr: str = config.bridge_cidr
        self.proxies = Proxies()
        self.privileged: PrivilegedNet = privileged_net(Bridge(self.bridge, self.cidr, self.netns))
        self.egress = Gates(config.egress_upstream_dns, config.bridge_cidr, self.netns)

    # ---- create

    def mode(self, requested: str | None) -> str:
        """The VM's network mode; tap is refused early without the privilege for it."""
        resolved = plan.resolve_mode(requested, self.config.network_mode, self.netns)
        if resolved == "tap":
            self.check_tap_ready()
        return resolved

    def check_tap_ready(self) -> None:
        """Tap mode can run: in-process, or the root helper answers with the same subnet."""
        if self.netns and not isinstance(self.privileged, InProcess):
            raise InvalidArgument(f"netns {self.netns!r} in config.toml needs a root daemon (QEMU "
                                  "must enter it); clear netns to use the root helper")
        helper = self.privileged.bridge()
        if helper.cidr != self.cidr:
            raise Conflict(f"bridge_cidr {self.cidr} in config.toml is not the root helper's "
                           f"{helper.cidr}: set bridge_cidr = \"{helper.cidr}\" (or change "
                           "/etc/banger/root.toml)")

    def check_tools(self, vm: VmNet) -> None:
        """Refuse at create what cannot start (QEMU: user-mode --nat needs slirp4netns)."""
        check_supported(vm.egress, vm.mode, vm.nat, self.backend_name)
        if vm.mode == "user" and self.forwarder is not None:
            self.forwarder.check_forwarding(isolated=vm.isolated)

    def allocate(self, vm: VmNet, taken: dict[str, set[str]]) -> VmNet:
        """MAC and address (tap IP or user-mode loopback); call with no await before insert."""
        if vm.mode is None or vm.ip:
            return vm
        if vm.mode == "tap":
            ip = plan.allocate_ip(self.cidr, taken.get("tap", set()))
        else:
            ip = plan.allocate_loopback(taken.get("user", set()))
        return msgspec.structs.replace(vm, ip=ip, mac=vm.mac or plan.mac_for(vm.id))

    # ---- start

    def _runtime_file(self, vm: VmNet) -> Path:
        return self.paths.vm_dir(vm.id) / "net.json"

    def endpoint(self, vm: VmNet) -> Endpoint:
        if vm.mode == "tap":
            return Endpoint(vm.ip or "", SSH_PORT, self.netns)
        try:
            port = int(json.loads(self._runtime_file(vm).read_text())["ssh_port"])
        except (OSError, ValueError, KeyError):
            port = SSH_PORT
        return Endpoint(vm.ip or "", port, "")

    async def prepare(self, vm: VmNet) -> NetworkAttachment | None:
        """Bridge + tap (tap mode) or host forwards (user mode); refuses busy host ports."""
        if vm.mode is None:
            return None  # a VM created before networking existed
        for spec in vm.publish:
            check_port_free(plan.parse_publish(spec).host_port)
        if vm.mode == "tap":
            tap = plan.tap_name(vm.id)
            await self.privileged.bridge_up()
            await self.privileged.tap_add(tap, vm.ip or "", vm.mac or plan.mac_for(vm.id))
            if vm.egress:  # before the VMM starts: the VM's first packet meets its rules
                self.egress.fresh(self._runtime_file(vm).parent)
                await self.egress.ensure_tap(vm.id, self._runtime_file(vm).parent, vm.ip or "",
                                             vm.egress, self.privileged)
            return NetworkAttachment("tap", tap=tap, mac=vm.mac or plan.mac_for(vm.id),
                                     netns=self.netns)
        loop = vm.ip or ""
        ssh_port = self._ssh_port(loop)
        on_loopback = sorted({plan.parse_publish(spec).guest_port for spec in vm.publish}
                             - {SSH_PORT})
        state: dict[str, Any] = {"ssh_port": ssh_port, "loopback_ports": on_loopback}
        self.check_tools(vm)
        self._runtime_file(vm).parent.mkdir(parents=True, exist_ok=True)
        self._runtime_file(vm).write_text(json.dumps(state))
        firewall = (self.egress.prepare(self._runtime_file(vm).parent, vm.egress)
                    if vm.egress else "")
        return NetworkAttachment("user", mac=vm.mac or plan.mac_for(vm.id),
                                 hostfwds=self._host_forwards(vm, state),
                                 restrict=not vm.isolated, isolated=vm.isolated,
                                 firewall=firewall)

    def _host_forwards(self, vm: VmNet, state: dict[str, Any]) -> tuple[HostForward, ...]:
        """User mode: the forwards of ssh, the published ports and the loopback ports."""
        loop = vm.ip or ""
        fwds = [HostForward(loop, int(state["ssh_port"]), SSH_PORT)]
        for spec in vm.publish:
            pub = plan.parse_publish(spec)
            fwds.append(HostForward(PUBLISH_HOST, pub.host_port, pub.guest_port))
        fwds += [HostForward(loop, int(port), int(port)) for port in state.get("loopback_ports", [])]
        return tuple(fwds)

    def _ssh_port(self, loop: str) -> int:
        """22 on the VM's own loopback address unless the host already listens there."""
        try:
            check_port_free(SSH_PORT, loop)
            return SSH_PORT
        except Conflict:
            return free_port(loop)

    def guest_config(self, vm: VmNet) -> dict[str, Any]:
        """What the agent's `configure` op sets in the guest."""
        mac = vm.mac or plan.mac_for(vm.id)
        if vm.mode == "tap":
            prefix = ipaddress.IPv4Network(self.cidr).prefixlen
            gateway = str(plan.gateway_of(self.cidr))
            dns = [gateway] if vm.egress else host_nameservers() or [gateway]
            return {"mac": mac, "address": f"{vm.ip}/{prefix}", "gateway": gateway, "dns": dns}
        return {"mac": mac, "address": plan.USER_GUEST_ADDRESS, "gateway": plan.USER_GATEWAY,
                "dns": [plan.USER_DNS]}

    async def guest_setup(self, vm: VmNet) -> dict[str, Any]:
        """The agent `configure` arguments for the guest side: address, DNS and ssh key."""
        if vm.mode is None:
            return {}
        key = await asyncio.to_thread(ensure_key, self.config.ssh_key)
        return {"network": self.guest_config(vm), "authorized_keys": [key]}

    async def activate(self, vm: VmNet) -> None:
        """After boot (and after a daemon restart): NAT rules and forwards the VMM does not own."""
        if vm.mode == "user" and self.forwarder is not None:
            fwds = self._host_forwards(vm, self._runtime(vm))
            await self.forwarder.restore_forwards(self._handles(vm), fwds, vm.isolated)
        if vm.mode == "user" and vm.egress:
            await self.egress.open(vm.id, self._runtime_file(vm).parent, self._handles(vm).pid,
                                   vm.egress)
        if vm.mode != "tap" or not vm.ip:
            return
        if vm.egress:
            await self.egress.open_tap(vm.id, self._runtime_file(vm).parent, vm.ip, vm.egress,
                                       self.privileged)
        if vm.nat:
            await self.privileged.nat_enable(vm.id, vm.ip)
        self.proxies.close(vm.id)
        for spec in vm.publish:
            pub = plan.parse_publish(spec)
            await self.proxies.add(vm.id, self.netns, vm.ip, pub.host_port, pub.guest_port)

    async def add_forward(self, vm: VmNet, pub: plan.Publish) -> None:
        """Publish on a running VM: through the VMM (user mode) or a daemon proxy (tap)."""
        check_port_free(pub.host_port)
        if vm.mode == "tap":
            await self.proxies.add(vm.id, self.netns, vm.ip or "", pub.host_port, pub.guest_port)
            return
        await self._user_forward(vm, HostForward(PUBLISH_HOST, pub.host_port, pub.guest_port))
        await self.ensure_loopback_forward(vm, pub.guest_port)

    async def _user_forward(self, vm: VmNet, fwd: HostForward) -> None:
        if self.forwarder is None:
            raise Unavailable(f"the {self.backend_name} backend cannot add forwards to a running "
                              "user-mode VM")
        await self.forwarder.add_forward(self._handles(vm), fwd, vm.isolated)

    def _handles(self, vm: VmNet) -> VmHandles:
        return VmHandles.require(self.paths.vm_dir(vm.id), vm.name)

    async def ensure_loopback_forward(self, vm: VmNet, port: int) -> bool:
        """User mode: make `<name>.vm:port` reach the guest's port (once per VM run)."""
        state = self._runtime(vm)
        done = set(state.get("loopback_ports", []))
        if port in done or port == SSH_PORT:
            return True
        try:
            check_port_free(port, vm.ip or "")
            await self._user_forward(vm, HostForward(vm.ip or "", port, port))
        except BangerError as exc:
            log.info("no loopback forward for %s:%d: %s", vm.name, port, exc)
            return False
        state["loopback_ports"] = sorted(done | {port})
        self._runtime_file(vm).write_text(json.dumps(state))
        return True

    def _runtime(self, vm: VmNet) -> dict[str, Any]:
        try:
            data = json.loads(self._runtime_file(vm).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    # ---- stop / delete / reconcile

    async def teardown(self, vm: VmNet) -> None:
        """Remove everything the VM had on the host network; safe to call any number of times."""
        self.proxies.close(vm.id)
        self.egress.close(vm.id)
        if vm.mode == "tap":
            try:
                if vm.nat or vm.ip:
                    await self.privileged.nat_disable(vm.id)
                    # Whatever vm.egress says now: `vm set --deny` may have emptied it live.
                    await self.privileged.egress_disable(vm.id)
                await self.privileged.tap_delete(plan.tap_name(vm.id))
            except Unavailable as exc:  # a removed helper must not make VMs undeletable
                log.warning("left %s's tap, NAT and egress rules: %s", vm.name, exc.message)
        loopback_state = self._runtime(vm)
        loopback_state.pop("loopback_ports", None)
        if self._runtime_file(vm).exists():
            self._runtime_file(vm).write_text(json.dumps(loopback_state))

