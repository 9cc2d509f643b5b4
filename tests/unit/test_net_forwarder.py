"""Networking drives user-mode forwards through the backend's PortForwarder only; QEMU's
forwarder turns them into hostfwd rules (and slirp4netns forwards for an isolated VM)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.config import load_config
from banger.errors import Unavailable
from banger.net.plan import Publish, VmNet
from banger.net.service import Network
from banger.paths import Paths, resolve_paths
from banger.vmm.base import HostForward, PortForwarder, VmHandles
from banger.vmm.firecracker import FirecrackerBackend
from banger.vmm.qemu import QemuBackend, forward
from tests.unit import fake_slirp

VM_ID = "abc123def456"


class FakeForwarder:
    """A backend with a user-mode stack; records what networking asks of it."""

    name = "fake"

    def __init__(self) -> None:
        self.added: list[tuple[int, HostForward, bool]] = []
        self.restored: list[tuple[HostForward, ...]] = []

    def check_forwarding(self, isolated: bool) -> None:
        return None

    async def add_forward(self, handles: VmHandles, fwd: HostForward, isolated: bool) -> None:
        self.added.append((handles.pid, fwd, isolated))

    async def restore_forwards(self, handles: VmHandles, fwds: tuple[HostForward, ...],
                               isolated: bool) -> None:
        self.restored.append(fwds)


class NoForwarder:
    name = "tap-only"


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = resolve_paths({"BANGER_HOME": str(tmp_path)})
    p.config_dir.mkdir(parents=True)
    p.vm_dir(VM_ID).mkdir(parents=True)
    VmHandles("fake", 4242, str(p.vm_dir(VM_ID) / "ctl.sock"), "").save(p.vm_dir(VM_ID))
    return p


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def user_vm(**kw: object) -> VmNet:
    return VmNet(VM_ID, "web", "user", ip="127.77.0.9", **kw)  # type: ignore[arg-type]


def test_qemu_forwards_ports_and_firecracker_does_not() -> None:
    assert isinstance(QemuBackend(), PortForwarder)
    assert not isinstance(FirecrackerBackend.__new__(FirecrackerBackend), PortForwarder)


def test_forward_on_a_running_user_vm_goes_through_the_backend(paths: Paths) -> None:
    fake = FakeForwarder()
    net = Network(paths, load_config(paths), fake)  # type: ignore[arg-type]
    vm = user_vm(nat=True)
    asyncio.run(net.prepare(vm))
    host_port, guest_port = free_port(), free_port()
    asyncio.run(net.add_forward(vm, Publish(host_port, guest_port)))
    assert fake.added == [(4242, HostForward("127.0.0.1", host_port, guest_port), True),
                          (4242, HostForward("127.77.0.9", guest_port, guest_port), True)]
    assert asyncio.run(net.ensure_loopback_forward(vm, guest_port))  # once per run
    assert len(fake.added) == 2
    asyncio.run(net.activate(vm))  # a daemon restart renews every forward, loopback ones too
    assert HostForward("127.77.0.9", guest_port, guest_port) in fake.restored[-1]


def test_user_forward_without_a_forwarder_is_one_clear_error(paths: Paths) -> None:
    net = Network(paths, load_config(paths), NoForwarder())  # type: ignore[arg-type]
    vm = user_vm()
    with pytest.raises(Unavailable) as err:
        asyncio.run(net.add_forward(vm, Publish(free_port(), 80)))
    assert "tap-only backend cannot add forwards" in err.value.message
    assert asyncio.run(net.ensure_loopback_forward(vm, 8080)) is False  # `vm ports`: no endpoint


@pytest.fixture
def slirp_api(tmp_path: Path) -> Iterator[list[bytes]]:
    """slirp4netns's API, accepting every forward; keeps the requests it got."""
    seen: list[bytes] = []

    def accept(request: bytes) -> bytes:
        seen.append(request)
        return b'{"return":{"id":1}}'

    with fake_slirp.slirp_api(tmp_path, accept):
        yield seen


def test_isolated_qemu_forwards_each_guest_port_once_inside_its_namespace(
        tmp_path: Path, slirp_api: list[bytes]) -> None:
    rules: list[object] = []

    async def qmp(command: str, **args: object) -> object:
        rules.append(args["command-line"])
        return ""

    for host_port in (18080, 18081):
        asyncio.run(forward.add(qmp, tmp_path, HostForward("127.0.0.1", host_port, 80), True))
    assert rules == ["hostfwd_add net0 tcp::80-:80"]
    assert [b'"host_port":18080' in r for r in slirp_api] == [True, False]
    asyncio.run(forward.add(qmp, tmp_path, HostForward("127.0.0.1", 18082, 81), False))
    assert rules[-1] == "hostfwd_add net0 tcp:127.0.0.1:18082-:81" and len(slirp_api) == 2


def test_qemu_refusal_is_one_clean_line(tmp_path: Path) -> None:
    async def qmp(command: str, **args: object) -> object:
        return "Could not set up host forwarding rule\n\x1b[2J 'tcp::80-:80'\n"

    with pytest.raises(Unavailable) as err:
        asyncio.run(forward.add(qmp, tmp_path, HostForward("127.0.0.1", 18080, 80), False))
    assert "QEMU refused forward" in err.value.message
    assert "\n" not in err.value.message and "\x1b" not in err.value.message


def test_qemu_runtime_files_are_what_a_stopped_vm_leaves(tmp_path: Path) -> None:
    names = {path.name for path in QemuBackend().runtime_files(tmp_path)}
    assert {"qmp.sock", "agent.sock", "qemu.pid", "slirp.sock", "slirp4netns.pid"} <= names
    assert all(path.parent == tmp_path for path in QemuBackend().runtime_files(tmp_path))
