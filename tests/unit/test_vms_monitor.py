"""After a daemon restart (reconcile) and while it runs (watch), on the fake backend."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import pytest

from banger.vms import monitor
from banger.vms.model import VmRecord, VmState
from tests.fakes.daemon import FakeDaemon, daemon_fixture
from tests.polling import until

pytestmark = pytest.mark.timeout(60)
daemon = daemon_fixture(fast_start=False)


def vmm_pid(daemon: FakeDaemon, vm: VmRecord) -> int:
    return int((daemon.vm_dir(vm) / "fake.pid").read_text())


def test_restart_re_adopts_a_running_vm_and_renews_its_forwards(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        vms = await daemon.restart()
        await monitor.reconcile(vms)
        assert daemon.shown(vm).state == VmState.RUNNING
        assert daemon.backend.steps("web") == ["restore_forwards"]
        _, agent = await vms.agent_for("web")  # reconnects on first use
        assert (await agent.health()).ok

    asyncio.run(scenario())


def test_restart_marks_a_vm_whose_vmm_died_meanwhile_stopped(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        daemon.machine.signal(vmm_pid(daemon, vm), signal.SIGKILL)
        vms = await daemon.restart()
        await until(lambda: daemon.machine.running() == [], "the VMM to die")
        await monitor.reconcile(vms)
        shown = daemon.shown(vm)
        assert (shown.state, shown.last_error) == (
            VmState.STOPPED, "was running when the daemon restarted; its VMM was gone")
        assert not (daemon.vm_dir(vm) / "handles.json").exists()
        assert not (daemon.vm_dir(vm) / "agent.sock").exists()

    asyncio.run(scenario())


def test_restart_cleans_up_a_start_it_interrupted(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web", start=False)
        daemon.vms.repo.set_state(vm.id, VmState.STARTING)  # the old daemon died mid-start
        await monitor.reconcile(await daemon.restart())
        assert daemon.shown(vm).state == VmState.STOPPED
        assert daemon.shown(vm).last_error == ("was starting when the daemon restarted; "
                                               "its VMM was gone")

    asyncio.run(scenario())


async def watching(daemon: FakeDaemon, scenario: Callable[[], Awaitable[None]]) -> None:
    watcher = asyncio.create_task(monitor.watch(daemon.vms, interval=0.02))
    try:
        await scenario()
    finally:
        watcher.cancel()


def test_a_guest_that_powers_itself_off_is_stopped(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        _, agent = await daemon.vms.agent_for("web")
        await agent.poweroff()  # `poweroff` typed in the guest
        await until(lambda: daemon.shown(vm).state != VmState.RUNNING, "the VM to stop")
        assert (daemon.shown(vm).state, daemon.shown(vm).last_error) == (VmState.STOPPED, None)
        assert not (daemon.vm_dir(vm) / "handles.json").exists()

    asyncio.run(watching(daemon, scenario))


def test_a_vmm_that_dies_leaves_the_vm_in_error_with_the_console(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        daemon.machine.signal(vmm_pid(daemon, vm), signal.SIGKILL)
        await until(lambda: daemon.shown(vm).state != VmState.RUNNING, "the VM to be marked")
        shown = daemon.shown(vm)
        assert shown.state == VmState.ERROR
        assert shown.last_error is not None
        assert shown.last_error.startswith("fake exited unexpectedly; last console lines: ")
        assert "\n" not in shown.last_error
        assert not (daemon.vm_dir(vm) / "agent.sock").exists()

    asyncio.run(watching(daemon, scenario))
