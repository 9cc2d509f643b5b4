"""Every Firecracker API request the backend sends, for every VM shape, against Firecracker's spec.

No firecracker can run here (no binary; the host's KVM is PVM), so a Unix-socket HTTP peer
(tests/unit/fc_contract.py) stands in for the firecracker process: the backend's real API client
talks HTTP to it, and each recorded request is validated against firecracker-api.yaml with
openapi-spec-validator (the spec) and jsonschema (the bodies).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path

import pytest

from banger.config import load_config
from banger.errors import InvalidArgument, OperationFailed
from banger.paths import resolve_paths
from banger.vmm.base import BootArtifacts, NetworkAttachment, VmHandles, VmSpec
from banger.vmm.firecracker import FirecrackerBackend
from banger.vmm.firecracker.api import FirecrackerApi
from banger.vmm.firecracker.plan import Layout, boot_calls
from banger.vmm.firecracker.version import BinaryProbe
from tests.unit.fc_contract import ApiPeer, Request, RequestValidator, SpecViolation, load_spec

# Firecracker's getting-started / API docs: logger and metrics first (they must precede
# everything they should capture), then machine-config, boot-source, drives, network, vsock,
# and InstanceStart last.
BOOT_ORDER = ["/logger", "/metrics", "/machine-config", "/boot-source", "/drives/",
              "/network-interfaces/", "/vsock", "/actions"]
SHAPES = [(1, 128), (2, 1024), (32, 8192)]
TAP = NetworkAttachment("tap", "tap-bng0", "06:00:ac:10:00:02")


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator(load_spec())


def make_spec(tmp: Path, vcpu: int = 2, memory: int = 1024,
              network: NetworkAttachment | None = None, vmlinux: bool = True) -> VmSpec:
    vm_dir = tmp / "vms" / "0123456789ab"
    vm_dir.mkdir(parents=True, exist_ok=True)
    for name in ("vmlinux", "initramfs.img", "rootfs.ext4", "vmlinuz"):
        (tmp / name).write_bytes(b"x")
    (vm_dir / "root.ext4").write_bytes(b"x")
    boot = BootArtifacts(tmp / "vmlinuz", tmp / "initramfs.img", tmp / "rootfs.ext4",
                         tmp / "vmlinux" if vmlinux else None)
    return VmSpec("0123456789ab", "fc-test", vcpu, memory, 4096, vm_dir, boot, network=network)


def backend(tmp: Path, jailer: bool) -> FirecrackerBackend:
    home = tmp / "home"
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text(
        f'vmm = "firecracker"\njailer_enabled = {str(jailer).lower()}\n'
        f'jailer_bin = "/bin/true"\n')
    config = load_config(resolve_paths({"BANGER_HOME": str(home)}))
    return FirecrackerBackend(config, BinaryProbe("/opt/fc/firecracker", (1, 8, 0), "test"))


async def send_boot(layout: Layout, sock: Path) -> list[Request]:
    async with ApiPeer(sock) as peer, FirecrackerApi(str(sock)) as api:
        for call in boot_calls(layout):
            await api.call(call)
        return peer.requests


def order_of(path: str) -> int:
    return next(i for i, prefix in enumerate(BOOT_ORDER) if path.startswith(prefix))


@pytest.mark.parametrize(("shape", "network", "jailer"),
                         list(itertools.product(SHAPES, [None, TAP], [False, True])))
def test_boot_requests_match_spec_and_order(tmp_path: Path, validator: RequestValidator,
                                            shape: tuple[int, int],
                                            network: NetworkAttachment | None,
                                            jailer: bool) -> None:
    spec = make_spec(tmp_path, *shape, network=network)
    layout = backend(tmp_path, jailer).layout(spec)
    requests = asyncio.run(send_boot(layout, tmp_path / "api.sock"))
    for req in requests:
        validator.validate(req)
    paths = [r.path for r in requests]
    assert [order_of(p) for p in paths] == sorted(order_of(p) for p in paths)
    assert paths[-1] == "/actions" and requests[-1].body == {"action_type": "InstanceStart"}
    assert ("/network-interfaces/eth0" in paths) == (network is not None)
    machine = next(r.body for r in requests if r.path == "/machine-config")
    assert (machine["vcpu_count"], machine["mem_size_mib"]) == shape
    boot = next(r.body for r in requests if r.path == "/boot-source")
    assert "banger.agent=vsock:5252" in boot["boot_args"].split()
    assert "tsc_early_khz" not in boot["boot_args"]  # a TCG-only workaround
    drive = next(r.body for r in requests if r.path.startswith("/drives/"))
    if jailer:  # chroot-relative paths, and the files are where the chroot expects them
        assert boot["kernel_image_path"] == "/vmlinux" and drive["path_on_host"] == "/root.ext4"
        assert layout.chroot == spec.vm_dir / "jail" / "firecracker" / "banger-0123456789ab" / "root"
    else:  # drive and vsock relative to firecracker's cwd, the VM dir: snapshots restore anywhere
        assert boot["kernel_image_path"] == str(tmp_path / "vmlinux")
        assert drive["path_on_host"] == "root.ext4" and layout.cwd == spec.vm_dir
        assert layout.host(drive["path_on_host"]) == spec.vm_dir / "root.ext4"
        vsock = next(r.body for r in requests if r.path == "/vsock")
        assert layout.host(vsock["uds_path"]) == spec.vm_dir / "vsock.sock"


def test_stop_request_matches_spec(tmp_path: Path, validator: RequestValidator) -> None:
    sock = tmp_path / "api.sock"
    handles = VmHandles("firecracker", os.getpid(), str(sock), str(tmp_path / "vsock.sock"))

    async def go() -> list[Request]:
        async with ApiPeer(sock) as peer:
            await backend(tmp_path, False).request_shutdown(handles)
            return peer.requests

    requests = asyncio.run(go())
    for req in requests:
        validator.validate(req)
    assert [(r.path, r.body) for r in requests] == [("/actions", {"action_type": "SendCtrlAltDel"})]


def test_validator_is_not_a_rubber_stamp(validator: RequestValidator) -> None:
    json_h = {"content-type": "application/json"}
    bad = [
        Request("PUT", "/machine-config", json_h, {"vcpu_count": 2}),  # mem_size_mib missing
        Request("PUT", "/machine-config", json_h, {"vcpu_count": 33, "mem_size_mib": 1}),
        Request("PUT", "/machine-config", json_h, {"vcpu_count": 1, "mem_size_mib": 1, "x": 1}),
        Request("PUT", "/vsock", json_h, {"guest_cid": 2, "uds_path": "/v.sock"}),
        Request("PUT", "/drives/rootfs", json_h, {"drive_id": "other", "is_root_device": True}),
        Request("PUT", "/actions", json_h, {"action_type": "Reboot"}),
        Request("PUT", "/no-such-thing", json_h, {}),
    ]
    for req in bad:
        with pytest.raises(SpecViolation):
            validator.validate(req)


def test_refusals_are_one_line_and_before_any_request(tmp_path: Path) -> None:
    cases = [
        (make_spec(tmp_path, network=NetworkAttachment("user")), "user-mode networking"),
        (make_spec(tmp_path, vcpu=33), "1 to 32 vcpus"),
        (make_spec(tmp_path, vmlinux=False), "ELF vmlinux"),
    ]
    for spec, words in cases:
        with pytest.raises(InvalidArgument, match=words) as info:
            boot_calls(Layout(spec))
        assert "\n" not in info.value.message


def test_api_fault_message_reaches_the_user(tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"

    async def go() -> None:
        async with ApiPeer(sock, fault=(400, "Invalid kernel path")), \
                FirecrackerApi(str(sock)) as api:
            await api.put("/boot-source", {"kernel_image_path": "/nope"})

    with pytest.raises(OperationFailed, match=r"refused PUT /boot-source \(400\): Invalid kernel"):
        asyncio.run(go())


def test_jailer_enabled_without_binary_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(
        'jailer_enabled = true\njailer_bin = "/nonexistent/jailer"\n')
    config = load_config(resolve_paths({"BANGER_HOME": str(home)}))
    fc = FirecrackerBackend(config, BinaryProbe("/opt/fc/firecracker", (1, 8, 0), "test"))
    with pytest.raises(InvalidArgument, match="no jailer binary"):
        fc.layout(make_spec(tmp_path))
