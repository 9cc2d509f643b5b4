"""`vm run --rm` owned by the daemon: the VM goes when its client process does, on the fake
backend (the owner is a real host process the test starts and kills)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator

import pytest

from banger.errors import NotFound
from banger.vms import monitor
from banger.vms.manager import VmManager
from banger.vms.model import VmState
from banger.vms.owner import Owner, OwnerWatch, alive, identify
from tests.fakes.daemon import FakeDaemon, daemon_fixture, request
from tests.fakes.daemon import Progress as Collect
from tests.polling import until, wait_until

pytestmark = pytest.mark.timeout(60)
daemon = daemon_fixture(fast_start=False)


@pytest.fixture
def client() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in for the `banger vm run --rm` CLI process."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def owner(proc: subprocess.Popen[bytes]) -> Owner:
    found = identify(proc.pid)
    assert found is not None
    return found


async def create_owned(daemon: FakeDaemon, name: str, who: Owner, **options: object) -> str:
    vm = await daemon.vms.create(request(name, **options), Collect(), lambda line: None,
                                 owner=who)
    return vm.id


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def gone(vms: VmManager, vm_id: str) -> bool:
    try:
        vms.repo.find(vm_id)
    except NotFound:
        return True
    return False


def test_an_owner_is_its_pid_and_start_and_a_reused_pid_is_not_it() -> None:
    me = identify(os.getpid())
    assert me is not None and me.pid == os.getpid() and alive(me)
    assert not alive(Owner(me.pid, me.start + "0"))  # same pid, other process
    assert identify(0) is None and identify(-1) is None
    zombie = subprocess.Popen(["true"])
    wait_until(lambda: proc_state(zombie.pid) == "Z", "the child to exit (not yet reaped)")
    assert identify(zombie.pid) is None
    zombie.wait()
    assert identify(zombie.pid) is None


def test_the_vm_is_deleted_when_its_client_is_killed(daemon: FakeDaemon,
                                                     client: subprocess.Popen[bytes]) -> None:
    async def scenario() -> None:
        vm_id = await create_owned(daemon, "web", owner(client))
        shown = daemon.vms.repo.find(vm_id)
        assert (shown.state, shown.owner_pid) == (VmState.RUNNING, client.pid)
        client.kill()
        await until(lambda: gone(daemon.vms, vm_id), "the VM to be deleted", timeout=15)
        assert not daemon.paths.vm_dir(vm_id).exists()
        await until(lambda: daemon.machine.running() == [], "its VMM to be gone")

    asyncio.run(scenario())


def test_a_vm_without_owner_outlives_any_client(daemon: FakeDaemon,
                                                 client: subprocess.Popen[bytes]) -> None:
    async def scenario() -> None:
        vm = await daemon.create("keep")
        assert vm.owner_pid is None and not daemon.vms.owners.watching(vm.id)
        await monitor.reconcile(await daemon.restart())
        assert daemon.shown(vm).state == VmState.RUNNING

    asyncio.run(scenario())


def test_the_clients_own_delete_ends_the_watch(daemon: FakeDaemon,
                                               client: subprocess.Popen[bytes]) -> None:
    async def scenario() -> None:
        vm_id = await create_owned(daemon, "web", owner(client))
        assert daemon.vms.owners.watching(vm_id)
        await daemon.vms.delete(vm_id, force=True, progress=Collect())
        assert not daemon.vms.owners.watching(vm_id)
        client.kill()
        client.wait()
        await daemon.vms.owners.settle()  # nothing fired: nothing to wait for
        assert daemon.vms.repo.all() == []

    asyncio.run(scenario())


def test_a_client_that_dies_mid_start_leaves_no_vm(daemon: FakeDaemon,
                                                   client: subprocess.Popen[bytes]) -> None:
    async def scenario() -> None:
        daemon.backend.fail("hang")  # the guest never answers: the start waits
        create = asyncio.ensure_future(create_owned(daemon, "web", owner(client)))
        await until(lambda: [vm.state for vm in daemon.vms.repo.all()] == [VmState.STARTING],
                    "the start to be under way")
        client.kill()
        create.cancel()  # what the server does when the client's connection drops
        with pytest.raises(asyncio.CancelledError):
            await create
        await until(lambda: daemon.vms.repo.all() == [], "the VM to be deleted", timeout=15)
        await daemon.vms.owners.settle()
        assert daemon.vms.repo.all() == [] and daemon.machine.running() == []

    asyncio.run(scenario())


def test_after_a_restart_a_gone_clients_vm_is_deleted_and_a_live_ones_watched(
        daemon: FakeDaemon, client: subprocess.Popen[bytes]) -> None:
    async def scenario() -> None:
        doomed = subprocess.Popen(["sleep", "300"])
        gone_id = await create_owned(daemon, "gone", owner(doomed))
        kept_id = await create_owned(daemon, "kept", owner(client))
        daemon.vms.owners.close()  # the daemon dies: nobody watches
        doomed.kill()
        doomed.wait()
        vms = await daemon.restart()
        await monitor.reconcile(vms)
        assert gone(vms, gone_id)  # before the daemon serves anything
        assert vms.repo.find(kept_id).state == VmState.RUNNING and vms.owners.watching(kept_id)
        client.kill()
        await until(lambda: gone(vms, kept_id), "the watched VM to be deleted", timeout=15)

    asyncio.run(scenario())


def test_without_pidfds_the_owner_is_polled(client: subprocess.Popen[bytes],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)

    async def scenario() -> None:
        fired: list[str] = []

        async def on_gone(vm_id: str) -> None:
            fired.append(vm_id)

        watch = OwnerWatch(on_gone, poll=0.01)
        watch.watch("a", owner(client))
        watch.watch("b", Owner(client.pid, "someone-else:1"))  # a reused pid fires at once
        await until(lambda: fired == ["b"], "the stale owner to fire")
        client.kill()
        await until(lambda: fired == ["b", "a"], "the killed owner to fire")
        assert not watch.watching("a")

    asyncio.run(scenario())
