"""Firecracker snapshots (the Snapshotter protocol) against Firecracker's spec and documented order.

No firecracker can run here, so tests/unit/fc_fake.py stands in for the process: the backend
really spawns it (in the VM dir, detached, as it spawns firecracker), talks HTTP to it, and it
refuses what Firecracker refuses (spec violations, calls out of order) and resolves the paths a
snapshot records the way Firecracker does: relative to its cwd.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from banger.errors import Conflict, InvalidArgument, NotFound, OperationFailed
from banger.vmm.base import BootArtifacts, NetworkAttachment, Snapshotter, VmHandles, VmSpec
from banger.vmm.firecracker import FirecrackerBackend
from banger.vmm.firecracker.plan import state_files
from banger.vmm.firecracker.snapshot import (
    check_restore,
    create_call,
    pause_call,
    rescan_call,
    restore_calls,
    resume_call,
    save_targets,
)
from banger.vmm.firecracker.version import BinaryProbe
from tests.unit.fc_contract import ApiPeer, Request, RequestValidator, load_spec
from tests.unit.test_firecracker_api import backend as jailed_backend

FAKE = Path(__file__).with_name("fc_fake.py")
MIB = 1024 * 1024
JSON_H = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator(load_spec())


def fake_backend(tmp: Path, version: tuple[int, int, int] = (1, 12, 0)) -> FirecrackerBackend:
    exe = tmp / "bin" / "firecracker"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    exe.chmod(0o755)
    config = jailed_backend(tmp, False).config
    return FirecrackerBackend(config, BinaryProbe(str(exe), version, "fake"))


def vm_spec(tmp: Path, vm_id: str, vm_dir: Path, tap: str | None = None) -> VmSpec:
    vm_dir.mkdir(parents=True, exist_ok=True)
    for name in ("vmlinux", "initramfs.img", "rootfs.ext4", "vmlinuz"):
        (tmp / name).write_bytes(b"x")
    boot = BootArtifacts(tmp / "vmlinuz", tmp / "initramfs.img", tmp / "rootfs.ext4",
                         tmp / "vmlinux")
    network = NetworkAttachment("tap", tap, "06:00:ac:10:00:02") if tap else None
    return VmSpec(vm_id, vm_id, 2, 128, 256, vm_dir, boot, network=network)


def events(vm_dir: Path) -> list[dict[str, Any]]:
    lines = (vm_dir / "fake-firecracker.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def calls(vm_dir: Path) -> list[tuple[str, str]]:
    return [tuple(e["request"]) for e in events(vm_dir) if "request" in e]


def only(vm_dir: Path, key: str) -> dict[str, Any]:
    found = [e for e in events(vm_dir) if key in e]
    assert len(found) == 1, found
    return found[0]


def build_template(fc: FirecrackerBackend, tmp: Path) -> Path:
    """What the core's Templates._build does: cold boot, save, kill, freeze, rename into place."""
    stage = tmp / "templates" / ".staging-t1"
    spec = vm_spec(tmp, "t1", stage, tap="tap-tpl")
    (stage / "root.ext4").write_bytes(b"template disk".ljust(4096, b"\0"))

    async def go() -> None:
        handles = await fc.start(spec)
        try:
            await fc.save_state(handles, stage / "memory.snap")
        finally:
            await fc.kill(handles)

    asyncio.run(go())
    assert calls(stage)[-2:] == [("PATCH", "/vm"), ("PUT", "/snapshot/create")]  # stays paused
    assert not [e for e in events(stage) if "refused" in e]
    os.replace(stage / "root.ext4", stage / "disk.ext4")
    (stage / "disk.ext4").chmod(0o444)
    final = tmp / "templates" / "t1"
    os.replace(stage, final)  # the recorded paths were relative: the move breaks nothing
    return final


def test_backend_is_a_snapshotter(tmp_path: Path) -> None:
    fc = fake_backend(tmp_path)
    assert isinstance(fc, Snapshotter)
    assert fc.state_version() == "firecracker 1.12.0"
    dest = tmp_path / "memory.snap"
    assert fc.state_files(dest) == (dest, tmp_path / "memory.snap.vmstate")


def test_two_vms_restore_one_template_each_onto_its_own_disk_tap_and_vsock(
        tmp_path: Path) -> None:
    fc = fake_backend(tmp_path)
    template = build_template(fc, tmp_path)
    memory, vmstate = state_files(template / "memory.snap")
    assert memory.stat().st_size == 128 * MIB and vmstate.is_file()
    assert not list(template.glob("*.part"))
    vms = {name: vm_spec(tmp_path, name, tmp_path / "vms" / name, tap=f"tap-{name}")
           for name in ("vma", "vmb")}

    async def go() -> dict[str, VmHandles]:
        started = {}
        for name, spec in vms.items():
            await fc.prepare_disk_on(spec, template / "disk.ext4", None)
            handles = await fc.start(dataclasses.replace(spec, incoming=memory))
            await fc.resume(handles, 5.0)
            started[name] = handles
        await fc.grow_live(started["vma"], 512)
        for handles in started.values():
            await fc.kill(handles)
        return started

    started = asyncio.run(go())
    for name, spec in vms.items():
        vm_dir = spec.vm_dir
        assert calls(vm_dir)[:4] == [("PUT", "/logger"), ("PUT", "/metrics"),
                                     ("PUT", "/snapshot/load"), ("PATCH", "/vm")]
        assert not [e for e in events(vm_dir) if "refused" in e]  # spec and order both held
        assert only(vm_dir, "opened_drive")["opened_drive"] == str(vm_dir / "root.ext4")
        assert only(vm_dir, "vsock")["vsock"] == str(vm_dir / "vsock.sock")
        assert only(vm_dir, "loaded")["tap"] == f"tap-{name}"
        assert started[name].agent_socket == str(vm_dir / "vsock.sock")
        assert (vm_dir / "root.ext4").read_bytes()[:13] == b"template disk"
        assert os.access(vm_dir / "root.ext4", os.W_OK)
    grown = only(vms["vma"].vm_dir, "rescanned")
    assert grown == {**grown, "rescanned": str(vms["vma"].vm_dir / "root.ext4"), "size": 512 * MIB}
    assert (template / "disk.ext4").stat().st_size == 4096  # the frozen base is never written


def test_stop_save_then_start_resumes_its_own_state(tmp_path: Path) -> None:
    fc = fake_backend(tmp_path)
    template = build_template(fc, tmp_path)
    spec = vm_spec(tmp_path, "vmc", tmp_path / "vms" / "vmc")
    saved = spec.vm_dir / "memory.snap"

    async def go() -> None:
        await fc.prepare_disk_on(spec, template / "disk.ext4", None)
        first = await fc.start(dataclasses.replace(spec, incoming=template / "memory.snap",
                                                   network=None))
        await fc.resume(first, 5.0)
        await fc.save_state(first, saved)  # `vm stop --save`
        await fc.kill(first)
        again = await fc.start(dataclasses.replace(spec, incoming=saved))  # `vm start`
        await fc.resume(again, 5.0)
        await fc.kill(again)

    asyncio.run(go())
    assert saved.is_file() and state_files(saved)[1].is_file()
    loads = [e for e in events(spec.vm_dir) if "loaded" in e]
    assert [e["loaded"] for e in loads] == [str(template / "memory.snap.vmstate"),
                                            str(saved) + ".vmstate"]
    assert not [e for e in events(spec.vm_dir) if "refused" in e]


def test_snapshot_requests_match_the_spec(tmp_path: Path, validator: RequestValidator) -> None:
    for jailer in (False, True):
        for tap in (None, "tap-x"):
            spec = vm_spec(tmp_path, "vmd", tmp_path / "vms" / "vmd", tap=tap)
            spec = dataclasses.replace(spec, incoming=tmp_path / "t" / "memory.snap")
            layout = jailed_backend(tmp_path, jailer).layout(spec)
            chroot = layout.chroot
            memory, vmstate = save_targets(spec.vm_dir / "memory.snap", chroot)
            sent = [*restore_calls(layout), resume_call(), pause_call(),
                    create_call(memory, vmstate), rescan_call(layout.disk)]
            for call in sent:
                validator.validate(Request(call.method, call.path, JSON_H, call.body))
            load = restore_calls(layout)[-1].body
            assert load["resume_vm"] is False  # banger resumes after its own checks
            assert ("network_overrides" in load) == (tap is not None)
            if jailer:  # chroot paths: the same in every VM's chroot
                assert load["snapshot_path"] == "/state.vmstate"
                assert layout.jail_inputs()[tmp_path / "t" / "memory.snap"] == \
                    layout.host("/state.mem")
                assert memory.api_path == "/state.mem.part" and chroot is not None
                assert memory.written == chroot / "state.mem.part"


def test_restore_refusals_are_one_line_and_before_launch(tmp_path: Path) -> None:
    fc = fake_backend(tmp_path, version=(1, 8, 0))
    spec = vm_spec(tmp_path, "vme", tmp_path / "vms" / "vme", tap="tap-e")
    (spec.vm_dir / "root.ext4").write_bytes(b"disk")
    memory, vmstate = state_files(tmp_path / "saved" / "memory.snap")
    memory.parent.mkdir()
    incoming = dataclasses.replace(spec, incoming=memory)

    def refused(kind: type[Exception], words: str) -> None:
        with pytest.raises(kind, match=words) as info:
            asyncio.run(fc.start(incoming))
        assert "\n" not in str(info.value)

    refused(NotFound, "no memory file")
    memory.write_bytes(b"x")
    refused(NotFound, "no device state file")
    vmstate.write_text("{}")
    refused(OperationFailed, "truncated")  # a memory file cut short (disk full, copy, ...)
    with open(memory, "wb") as f:
        f.truncate(128 * MIB)
    refused(InvalidArgument, r"firecracker >= 1\.12\.0 \(network_overrides\), not 1\.8\.0")
    assert not (spec.vm_dir / "firecracker.argv").exists()  # nothing was launched
    check_restore(dataclasses.replace(incoming, network=None), fc.binary())  # no NIC: 1.8 does


def test_a_load_firecracker_refuses_ends_the_process(tmp_path: Path) -> None:
    fc = fake_backend(tmp_path)
    spec = vm_spec(tmp_path, "vmf", tmp_path / "vms" / "vmf")
    (spec.vm_dir / "root.ext4").write_bytes(b"disk")
    dest = tmp_path / "bad" / "memory.snap"
    dest.parent.mkdir()
    with open(dest, "wb") as f:
        f.truncate(128 * MIB)
    state_files(dest)[1].write_text("not a snapshot")  # e.g. another firecracker's format
    with pytest.raises(OperationFailed, match=r"refused PUT /snapshot/load \(400\)"):
        asyncio.run(fc.start(dataclasses.replace(spec, incoming=dest)))
    assert not (spec.vm_dir / "vsock.sock").exists()


def test_a_failed_save_leaves_no_state_behind(tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    dest = tmp_path / "memory.snap"
    for stale in state_files(dest):
        stale.write_bytes(b"older state")
    handles = VmHandles("firecracker", os.getpid(), str(sock), str(tmp_path / "vsock.sock"))

    async def go() -> list[Request]:
        async with ApiPeer(sock, fault=(400, "No space left on device (os error 28)")) as peer:
            with pytest.raises(OperationFailed, match="No space left"):
                await fake_backend(tmp_path).save_state(handles, dest)
            return peer.requests

    requests = asyncio.run(go())
    # The pause is refused; the backend still asks to resume, so the guest runs on.
    assert [(r.method, r.path, r.body) for r in requests] == [
        ("PATCH", "/vm", {"state": "Paused"}), ("PATCH", "/vm", {"state": "Resumed"})]
    assert not list(tmp_path.glob("memory.snap*"))  # neither the old pair nor a partial one


def test_a_refused_snapshot_resumes_the_paused_guest(tmp_path: Path) -> None:
    sock = tmp_path / "api.sock"
    dest = tmp_path / "memory.snap"
    handles = VmHandles("firecracker", os.getpid(), str(sock), str(tmp_path / "vsock.sock"))

    def disk_full_on_create(request: Request) -> tuple[int, str]:
        if request.path == "/snapshot/create":
            return 400, "No space left on device (os error 28)"
        return 204, ""

    async def go() -> list[Request]:
        async with ApiPeer(sock, handler=disk_full_on_create) as peer:
            with pytest.raises(OperationFailed, match="No space left"):
                await fake_backend(tmp_path).save_state(handles, dest)
            return peer.requests

    requests = asyncio.run(go())
    assert [(r.method, r.path) for r in requests] == [
        ("PATCH", "/vm"), ("PUT", "/snapshot/create"), ("PATCH", "/vm")]
    assert requests[-1].body == {"state": "Resumed"}
    assert not list(tmp_path.glob("memory.snap*"))


def test_prepare_disk_on_never_replaces_a_vms_own_disk(tmp_path: Path) -> None:
    fc = fake_backend(tmp_path)
    spec = vm_spec(tmp_path, "vmg", tmp_path / "vms" / "vmg")
    base = tmp_path / "disk.ext4"
    base.write_bytes(b"base")
    base.chmod(0o444)
    asyncio.run(fc.prepare_disk_on(spec, base, 64))
    disk = spec.vm_dir / "root.ext4"
    assert disk.stat().st_size == 64 * MIB and disk.read_bytes()[:4] == b"base"
    assert os.access(disk, os.W_OK) and not list(spec.vm_dir.glob("*.tmp"))
    with pytest.raises(Conflict, match="never replaced"):
        asyncio.run(fc.prepare_disk_on(spec, base, None))
    disk.unlink()
    with pytest.raises(NotFound, match="template's disk"):
        asyncio.run(fc.prepare_disk_on(spec, tmp_path / "gone.ext4", None))


def test_the_fake_keeps_firecrackers_order(tmp_path: Path, validator: RequestValidator,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake is only worth its passes if it refuses what Firecracker refuses."""
    from tests.unit.fc_fake import FakeFirecracker

    monkeypatch.chdir(tmp_path)
    load = {"snapshot_path": "s", "mem_backend": {"backend_type": "File", "backend_path": "m"}}
    fresh = FakeFirecracker(validator)
    assert fresh.handle(Request("PATCH", "/vm", JSON_H, {"state": "Paused"}))[0] == 400
    assert fresh.handle(Request("PUT", "/snapshot/create", JSON_H,
                                {"snapshot_path": "s", "mem_file_path": "m"}))[0] == 400
    assert fresh.handle(Request("PUT", "/snapshot/load", JSON_H, {**load, "x": 1}))[0] == 400
    configured = FakeFirecracker(validator)
    machine = {"vcpu_count": 1, "mem_size_mib": 128}
    assert configured.handle(Request("PUT", "/machine-config", JSON_H, machine)) == (204, "")
    status, fault = configured.handle(Request("PUT", "/snapshot/load", JSON_H, load))
    assert status == 400 and "not allowed while configured" in fault
    assert configured.exit_code == 1  # a failed load ends firecracker
