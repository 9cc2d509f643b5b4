"""User-mode --nat runs QEMU in its own namespace: its args, the slirp4netns check and API client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.config import load_config
from banger.errors import OperationFailed, Unavailable
from banger.net.plan import VmNet
from banger.net.service import Network
from banger.paths import Paths, resolve_paths
from banger.vmm.base import BootArtifacts, NetworkAttachment, VmSpec
from banger.vmm.qemu import QemuBackend, slirp
from banger.vmm.qemu.argv import namespace_prefix, net_args
from banger.vmm.qemu.forward import launch_rules
from tests.unit import fake_slirp


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = resolve_paths({"BANGER_HOME": str(tmp_path)})
    p.config_dir.mkdir(parents=True)
    return p


def record(**kw: object) -> VmNet:
    base: dict[str, object] = dict(id="abc123def456", name="n", mode="user", ip="127.77.0.9",
                                   mac="52:54:00:00:00:09")
    return VmNet(**{**base, **kw})  # type: ignore[arg-type]


def spec_for(attachment: NetworkAttachment, vm_dir: Path) -> VmSpec:
    boot = BootArtifacts(vm_dir / "vmlinuz", vm_dir / "initrd", vm_dir / "rootfs.ext4")
    return VmSpec("abc123def456", "n", 1, 512, 1024, vm_dir, boot, network=attachment)


def test_nat_user_vm_forwards_only_inside_its_own_namespace(
        paths: Paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slirp, "which", lambda tool: f"/usr/bin/{tool}")
    net = Network(paths, load_config(paths), QemuBackend())
    vm = record(nat=True, publish=("18080:80", "18081:22"))
    attachment = asyncio.run(net.prepare(vm))
    assert attachment is not None and attachment.isolated and not attachment.restrict
    # No host address in QEMU's rules: it binds in its namespace; slirp4netns owns the host side.
    assert launch_rules(attachment) == ["tcp::22-:22", "tcp::80-:80"]
    prefix = namespace_prefix(spec_for(attachment, tmp_path))
    assert prefix[:2] == ["unshare", "--user"] and "--mount" in prefix
    assert str(tmp_path / "resolv.conf") in prefix  # QEMU resolves through slirp4netns
    assert prefix[-len(slirp.NO_CAPS) - 1:] == ["/usr/bin/setpriv", *slirp.NO_CAPS]  # no caps
    assert "restrict=off" in net_args(attachment)[1]


def test_user_vm_without_nat_is_unchanged(paths: Paths, tmp_path: Path) -> None:
    net = Network(paths, load_config(paths), QemuBackend())
    attachment = asyncio.run(net.prepare(record(publish=("18082:80",))))
    assert attachment is not None and not attachment.isolated and attachment.restrict
    assert namespace_prefix(spec_for(attachment, tmp_path)) == []
    assert "hostfwd=tcp:127.0.0.1:18082-:80" in net_args(attachment)[1]


def test_nat_without_slirp4netns_says_what_to_install(paths: Paths,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slirp, "which", lambda tool: None)
    net = Network(paths, load_config(paths), QemuBackend())
    with pytest.raises(Unavailable) as err:
        net.check_tools(record(nat=True))
    assert "apt-get install slirp4netns" in err.value.message and "\n" not in err.value.message
    net.check_tools(record(nat=False))  # only --nat needs it


@pytest.fixture
def fake_api(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """slirp4netns's API with queued replies."""
    replies: list[bytes] = []
    with fake_slirp.slirp_api(tmp_path, lambda request: replies.pop(0)):
        yield tmp_path, replies


def test_api_client_reads_forwards_and_reports_refusals(fake_api: tuple[Path, list[bytes]]) -> None:
    vm_dir, replies = fake_api
    replies.append(b'{"entries":[{"id":1,"proto":"tcp","host_addr":"127.77.0.9",'
                   b'"host_port":22,"guest_addr":"10.0.2.100","guest_port":22}]}')
    assert asyncio.run(slirp.forwards(vm_dir)) == {("127.77.0.9", 22)}
    replies.append(b'{"return":{"id":2}}')
    asyncio.run(slirp.add_forward(vm_dir, "127.0.0.1", 8080, 80))
    replies.append(b'{"error":{"desc":"bad request:\\n add_hostfwd failed\\u001b[2J"}}')
    with pytest.raises(OperationFailed) as err:
        asyncio.run(slirp.add_forward(vm_dir, "127.0.0.1", 8080, 80))
    assert "refused forward 127.0.0.1:8080" in err.value.message
    assert "\n" not in err.value.message and "\x1b" not in err.value.message
    replies.append(b'{"entries":[{"proto":"tcp","host_addr":"x","host_port":70000}]}')
    with pytest.raises(OperationFailed):
        asyncio.run(slirp.forwards(vm_dir))


def test_api_client_without_slirp4netns_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(OperationFailed) as err:
        asyncio.run(slirp.forwards(tmp_path))
    assert "restart the VM" in err.value.message
