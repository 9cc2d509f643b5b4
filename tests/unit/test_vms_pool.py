"""The warm pool on the fake backend: refills bounded and one at a time, a matching create takes
a clone and re-personalises it, pool VMs are no VMs, a clone that cannot resume falls back, a
restarted daemon reaps the old clones and refills, and size 0 drains."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import msgspec
import pytest

from banger.vms import monitor
from banger.vms.manager import VmManager
from banger.vms.pool import MARKER, Busy
from banger.vms.pool_repo import Shape
from tests.fakes.daemon import FakeDaemon, daemon_fixture
from tests.polling import process_runs, until

pytestmark = pytest.mark.timeout(60)
daemon = daemon_fixture(fast_start=True)


def shape(vms: VmManager, vcpu: int | None = None) -> Shape:
    return vms.pool.shape_for(None, vcpu, None)


def hostname(daemon: FakeDaemon, name: str) -> str:
    vm = daemon.vms.repo.find(name)
    return (daemon.vm_dir(vm) / "guest-root" / "etc" / "hostname").read_text().strip()


def pool_calls(daemon: FakeDaemon) -> list[tuple[str, str]]:
    return [(step, vm) for step, vm in daemon.backend.calls if vm.startswith("pool-")]


def ready(vms: VmManager, s: Shape) -> int:
    return len(vms.pool.ready.get(s, []))


@contextlib.asynccontextmanager
async def refilling(vms: VmManager) -> AsyncIterator[None]:
    """The daemon's background refill loop, as bangerd runs it."""
    task = asyncio.create_task(vms.pool.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await vms.pool.shutdown()


def test_the_pool_fills_to_its_size_one_clone_at_a_time(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vms = daemon.vms
        s = shape(vms)
        async with refilling(vms):
            info = await vms.pool.set(s, 2)
            assert (info.size, info.image, info.net_mode) == (2, "fake-image", "user")
            await until(lambda: ready(vms, s) == 2, "two ready clones")
            calls = pool_calls(daemon)
            # one at a time: the second clone's restore comes after the first is paused
            order = [step for step, _ in calls if step in ("restore", "pause")]
            assert order == ["restore", "pause", "restore", "pause"]
            [listed] = vms.pool.shapes()
            assert (listed.size, listed.ready, listed.filling) == (2, 2, False)
            assert listed.pss_mib > 0  # the ready clones' host memory, measured
            # no more than asked: the loop is idle again with exactly two
            await vms.pool.set(s, 2)
            await until(lambda: not vms.pool.filling and vms.pool._wake.is_set() is False,
                        "the refill loop idle")
            assert [step for step, _ in pool_calls(daemon)].count("restore") == 2
            assert len(daemon.machine.running()) == 2

    asyncio.run(scenario())


def test_refill_waits_for_user_starts() -> None:
    async def scenario() -> None:
        busy = Busy(quiet=0.2)
        with busy():
            waiter = asyncio.create_task(busy.wait_idle())
            for _ in range(5):
                await asyncio.sleep(0)
            assert not waiter.done()
        ended = time.monotonic()
        await asyncio.wait_for(waiter, 2.0)
        assert time.monotonic() - ended >= 0.2  # and a quiet spell after the last start

    asyncio.run(scenario())


def test_a_matching_create_takes_a_clone_and_gives_it_its_identity(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vms = daemon.vms
        s = shape(vms)
        await vms.pool.set(s, 1)
        entry = await vms.pool.fill_one(s)
        assert entry is not None
        assert vms.repo.all() == []  # invisible: no record, so not in vm list, show or DNS
        assert (vms.paths.vm_dir(entry.id) / MARKER).exists()
        vm = await daemon.create("web")
        assert vm.id == entry.id and vm.state == "running"
        assert daemon.events(vm) == [f"started from the warm pool (template {entry.key.id})"]
        assert hostname(daemon, "web") == "web"  # re-personalised like a template clone
        assert ("unpause", f"pool-{entry.id}") in daemon.backend.calls
        assert ("add_forward", f"pool-{entry.id}") in daemon.backend.calls  # its ssh forward
        assert not (daemon.vm_dir(vm) / MARKER).exists()
        assert ready(vms, s) == 0
        assert [v.name for v in vms.repo.all()] == ["web"]

    asyncio.run(scenario())


def test_another_shape_does_not_take_the_clone(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vms = daemon.vms
        s = shape(vms)
        await vms.pool.set(s, 1)
        await vms.pool.fill_one(s)
        vm = await daemon.create("big", vcpu=2)
        assert daemon.events(vm)[0].startswith("started from template")
        bigger = await daemon.create("bigdisk", disk_mib=2048)
        assert not any("pool" in e for e in daemon.events(bigger))
        cold = await daemon.create("cold", cold=True)
        assert not any("pool" in e for e in daemon.events(cold))
        assert ready(vms, s) == 1

    asyncio.run(scenario())


def test_a_clone_of_a_changed_image_is_discarded_not_handed_out(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vms = daemon.vms
        s = shape(vms)
        await vms.pool.set(s, 1)
        entry = await vms.pool.fill_one(s)
        assert entry is not None
        entry.key = msgspec.structs.replace(entry.key, image_sha256="0" * 64)  # image re-pulled
        vm = await daemon.create("web")
        assert vm.id != entry.id
        assert daemon.events(vm)[0].startswith("started from template")
        await until(lambda: not process_runs(entry.handles.pid), "the stale clone killed")
        await until(lambda: not vms.paths.vm_dir(entry.id).exists(), "its dir removed")

    asyncio.run(scenario())


def test_a_clone_that_does_not_resume_is_discarded_and_the_vm_starts_anyway(
        daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vms = daemon.vms
        s = shape(vms)
        await vms.pool.set(s, 1)
        entry = await vms.pool.fill_one(s)
        assert entry is not None
        daemon.backend.fail("unpause")
        vm = await daemon.create("web")
        assert vm.state == "running"
        shown = daemon.events(vm)
        assert shown[0] == ("the pooled clone did not resume (fake unpause failed); starting "
                            "the usual way")
        assert shown[1].startswith("started from template")
        assert not process_runs(entry.handles.pid)
        assert hostname(daemon, "web") == "web"
        assert len(daemon.machine.running()) == 1

    asyncio.run(scenario())


def test_a_restarted_daemon_reaps_old_clones_and_refills(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        s = shape(daemon.vms)
        await daemon.vms.pool.set(s, 1)
        old = await daemon.vms.pool.fill_one(s)
        assert old is not None
        vms = await daemon.restart()  # the old daemon died: its clone's VMM still runs
        await monitor.reconcile(vms)
        assert not process_runs(old.handles.pid)
        assert not vms.paths.vm_dir(old.id).exists()
        async with refilling(vms):
            await until(lambda: ready(vms, s) == 1, "the pool refilled from the store")
            assert vms.pool.ready[s][0].id != old.id
        assert daemon.machine.running() == []  # gone with the daemon

    asyncio.run(scenario())


def test_size_zero_drains_the_pool(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vms = daemon.vms
        s = shape(vms)
        await vms.pool.set(s, 2)
        clones = [await vms.pool.fill_one(s), await vms.pool.fill_one(s)]
        info = await vms.pool.set(s, 0)
        assert (info.size, info.ready) == (0, 0)
        assert vms.pool.shapes() == []
        assert daemon.machine.running() == []
        assert all(c is not None and not vms.paths.vm_dir(c.id).exists() for c in clones)

    asyncio.run(scenario())


def test_bad_sizes_are_one_line(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        from banger.errors import InvalidArgument

        with pytest.raises(InvalidArgument, match="pool size must be 0 to 8"):
            await daemon.vms.pool.set(shape(daemon.vms), 9)

    asyncio.run(scenario())
