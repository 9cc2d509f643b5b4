"""VmManager on the fake backend: create, stop, start, kill, delete and a start that fails.

Cold boots only (fast_start off); the template and restore paths are in test_vms_start_paths.py.
"""

from __future__ import annotations

import asyncio

import pytest

from banger.errors import Conflict, NotFound, OperationFailed
from banger.net.forward import check_port_free
from banger.net.service import free_port
from banger.vms.model import VmState
from tests.fakes.daemon import FakeDaemon, Progress, daemon_fixture
from tests.polling import until

pytestmark = pytest.mark.timeout(60)
daemon = daemon_fixture(fast_start=False)
RUNTIME_FILES = ("handles.json", "agent.sock", "fake.pid")


def leftovers(daemon: FakeDaemon, vm_id: str) -> list[str]:
    """Per-run files still in the VM dir."""
    return [name for name in RUNTIME_FILES if (daemon.paths.vm_dir(vm_id) / name).exists()]


def test_create_boots_a_vm_the_daemon_can_talk_to(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        assert (vm.state, vm.last_error) == (VmState.RUNNING, None)
        _, agent = await daemon.vms.agent_for("web")
        assert (await agent.health()).ok
        key = daemon.vms.config.ssh_key.with_name("id_ed25519.pub").read_text()
        keys = daemon.vm_dir(vm) / "guest-root" / "root" / ".ssh" / "authorized_keys"
        assert keys.read_text() == key  # `banger vm ssh` will be let in
        steps = daemon.backend.steps("web")  # the agent is polled until it listens
        assert steps[:2] == ["prepare_disk", "start"] and set(steps[2:-1]) == {"open_agent"}
        assert steps[-1] == "restore_forwards"  # user-mode forwards made after boot

    asyncio.run(scenario())


def test_stop_powers_the_guest_off_and_keeps_only_the_disk(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        stopped = await daemon.vms.stop("web", Progress())
        assert (stopped.state, stopped.last_error) == (VmState.STOPPED, None)
        steps = daemon.backend.steps("web")
        assert "request_shutdown" not in steps and "kill" not in steps  # the guest went down itself
        assert "reboot: Power down" in (daemon.vm_dir(vm) / "console.log").read_text()
        assert leftovers(daemon, vm.id) == []
        assert daemon.backend.disk_path(daemon.vm_dir(vm)).exists()

    asyncio.run(scenario())


def test_start_after_stop_boots_the_same_disk(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        disk = daemon.backend.disk_path(daemon.vm_dir(vm))
        disk.write_text(disk.read_text() + " ")  # what the guest wrote
        written = disk.read_text()
        await daemon.vms.stop("web", Progress())
        started = await daemon.vms.start("web", Progress())
        assert started.state == VmState.RUNNING
        assert disk.read_text() == written

    asyncio.run(scenario())


def test_stop_without_an_agent_asks_the_vmm_to_quit(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        await daemon.restart()  # the new daemon has no agent connection yet
        daemon.backend.fail("open_agent")
        stopped = await daemon.vms.stop("web", Progress(), timeout=1.0)
        assert stopped.state == VmState.STOPPED
        assert daemon.backend.steps("web")[:2] == ["open_agent", "request_shutdown"]
        assert leftovers(daemon, vm.id) == []

    asyncio.run(scenario())


def test_kill_ends_the_vmm_and_its_runtime_files(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        pid = int((daemon.vm_dir(vm) / "fake.pid").read_text())
        killed = await daemon.vms.kill("web")
        assert killed.state == VmState.STOPPED
        assert not daemon.machine.alive(pid)
        assert leftovers(daemon, vm.id) == []

    asyncio.run(scenario())


def test_delete_refuses_a_running_vm_unless_forced(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        with pytest.raises(Conflict, match="stop it first or use `banger vm delete -f`"):
            await daemon.vms.delete("web", force=False, progress=Progress())
        await daemon.vms.delete("web", force=True, progress=Progress())
        with pytest.raises(NotFound):
            daemon.vms.repo.find("web")
        assert not daemon.vm_dir(vm).exists()
        assert daemon.machine.running() == []

    asyncio.run(scenario())


def test_a_guest_that_panics_leaves_an_error_and_nothing_running(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        daemon.backend.fail("panic")
        with pytest.raises(OperationFailed, match=r"fake exited during boot: .*Kernel panic"):
            await daemon.create("web")
        vm = daemon.vms.repo.find("web")
        assert vm.state == VmState.ERROR
        assert vm.last_error is not None and "Kernel panic" in vm.last_error
        assert "\n" not in vm.last_error
        assert leftovers(daemon, vm.id) == []

    asyncio.run(scenario())


def test_a_failed_start_stops_the_vmm_then_frees_files_and_ports(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        port = free_port("127.0.0.1")
        daemon.backend.fail("configure")  # the guest boots (holding the port), then fails
        with pytest.raises(OperationFailed, match="configure failed in the fake guest"):
            await daemon.create("web", publish=[f"{port}:80"])
        vm = daemon.vms.repo.find("web")
        assert vm.state == VmState.ERROR
        assert vm.last_error == "configure failed in the fake guest"
        assert daemon.backend.steps("web")[-1] == "kill"
        assert daemon.machine.running() == []
        assert leftovers(daemon, vm.id) == []
        check_port_free(port)  # the published port is the host's again
        assert (await daemon.vms.start("web", Progress())).state == VmState.RUNNING

    asyncio.run(scenario())


def test_a_running_vm_holds_its_published_port_until_stopped(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        port = free_port("127.0.0.1")
        await daemon.create("web", publish=[f"{port}:80"])
        with pytest.raises(Conflict):
            check_port_free(port)
        await daemon.vms.stop("web", Progress())
        check_port_free(port)

    asyncio.run(scenario())


def test_a_cancelled_start_is_undone_and_says_so(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        daemon.backend.fail("hang")  # the guest never answers: the start waits
        task = asyncio.create_task(daemon.create("web"))
        await until(lambda: daemon.machine.running() != [], "the VMM to run")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        vm = daemon.vms.repo.find("web")
        assert (vm.state, vm.last_error) == (VmState.STOPPED, "start cancelled")
        assert daemon.machine.running() == []
        assert leftovers(daemon, vm.id) == []

    asyncio.run(scenario())
