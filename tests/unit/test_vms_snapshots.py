"""Checkpoints and forks on the fake backend: what is left on disk, the automatic checkpoint,
clean failures, names, and which frozen disks the collector keeps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from banger.errors import Conflict, InvalidArgument, NotFound, NotRunning, OperationFailed
from banger.vms import checkpoints
from banger.vms.fork import fork, fork_names
from banger.vms.model import VmState
from banger.vms.restore import saved_state
from banger.vms.snapshots import Snapshots
from tests.fakes.daemon import FakeDaemon, Progress, daemon_fixture

pytestmark = pytest.mark.timeout(60)
daemon = daemon_fixture(fast_start=True)


def frozen(daemon: FakeDaemon) -> set[str]:
    d = daemon.vms.templates.disks
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def test_a_live_checkpoint_keeps_the_vm_running_and_lists_it(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        snaps = Snapshots(daemon.vms)
        made = await snaps.create("web", "one", Progress())
        assert made.name == "one" and made.memory and not made.auto
        assert daemon.shown(vm).state == VmState.RUNNING
        assert [s.name for s in snaps.list("web")] == ["one"]
        assert daemon.backend.steps("web", "checkpoint") == ["checkpoint"]
        assert "checkpoint one taken" in daemon.events(vm)
        _, agent = await daemon.vms.agent_for("web")  # the agent answers again
        proc = await agent.exec(["true"])
        assert (await proc.wait()).code == 0
        with pytest.raises(Conflict, match="already has a checkpoint 'one'"):
            await snaps.create("web", "one", Progress())

    asyncio.run(scenario())


def test_a_failed_checkpoint_leaves_nothing(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        killed = checkpoints.root(daemon.vm_dir(vm)) / ".staging-old-1234"  # a killed daemon's
        killed.mkdir(parents=True)
        before = frozen(daemon)
        daemon.backend.fail("checkpoint")
        with pytest.raises(OperationFailed):
            await Snapshots(daemon.vms).create("web", "one", Progress())
        assert Snapshots(daemon.vms).list("web") == []
        assert list(checkpoints.root(daemon.vm_dir(vm)).iterdir()) == []
        assert frozen(daemon) == before
        assert daemon.shown(vm).state == VmState.RUNNING

    asyncio.run(scenario())


@pytest.mark.parametrize("bad", ["", "Bad", "-x", "a/b", "..", "x" * 64])
def test_bad_and_missing_names_are_one_line(daemon: FakeDaemon, bad: str) -> None:
    async def scenario() -> None:
        await daemon.create("web")
        snaps = Snapshots(daemon.vms)
        with pytest.raises(InvalidArgument, match="invalid checkpoint name"):
            await snaps.create("web", bad, Progress())
        with pytest.raises(NotFound, match="VM web has no checkpoint 'nope'"):
            await snaps.restore("web", "nope", discard=False, progress=Progress())
        with pytest.raises(NotFound, match="no checkpoint 'nope'"):
            await snaps.delete("web", "nope")
        with pytest.raises(NotFound):
            snaps.list("ghost")

    asyncio.run(scenario())


def test_restore_checkpoints_the_current_state_first(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        snaps = Snapshots(daemon.vms)
        await snaps.create("web", "one", Progress())
        res = await snaps.restore("web", "one", discard=False, progress=Progress())
        assert res.restored == "one" and res.auto is not None and res.auto.startswith("auto-")
        assert res.state == VmState.RUNNING
        listed = {s.name: s for s in snaps.list("web")}
        assert listed[res.auto].auto and listed[res.auto].memory
        assert daemon.events(vm)[-2].startswith("resumed from its saved state")
        assert not saved_state(daemon.vm_dir(vm)).exists()  # consumed; the checkpoint keeps its own
        assert (checkpoints.root(daemon.vm_dir(vm)) / "one" / checkpoints.MEMORY).exists()
        disk_base = daemon.backend.disk_base(daemon.vm_dir(vm))
        assert disk_base is not None and disk_base.name == snaps.find(vm, "one").disk
        # --discard: no new automatic checkpoint
        res = await snaps.restore("web", "one", discard=True, progress=Progress())
        assert res.auto is None and len(snaps.list("web")) == 2

    asyncio.run(scenario())


def test_a_failed_restore_leaves_the_vm_as_it_was(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        snaps = Snapshots(daemon.vms)
        await snaps.create("web", "one", Progress())
        disk = daemon.backend.disk_path(daemon.vm_dir(vm)).read_text()
        daemon.backend.fail("prepare_disk_on")  # before the VM is touched
        with pytest.raises(OperationFailed):
            await snaps.restore("web", "one", discard=False, progress=Progress())
        assert daemon.shown(vm).state == VmState.RUNNING
        assert daemon.backend.disk_path(daemon.vm_dir(vm)).read_text() == disk
        assert [s.name for s in snaps.list("web")] == ["one"]  # no stray automatic checkpoint
        assert not [p for p in checkpoints.root(daemon.vm_dir(vm)).iterdir()
                    if p.name.startswith(".")]
        daemon.backend.fail("restore")  # the checkpoint's memory does not load ...
        daemon.backend.fail("start")  # ... nor does its disk boot: back to the state before
        with pytest.raises(OperationFailed, match="web is back as it was"):
            await snaps.restore("web", "one", discard=False, progress=Progress())
        assert daemon.shown(vm).state == VmState.RUNNING
        assert daemon.events(vm)[-1].startswith("restored checkpoint auto-")

    asyncio.run(scenario())


def test_a_stopped_vm_checkpoints_its_disk_and_restores_stopped(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        await daemon.vms.stop("web", Progress())
        snaps = Snapshots(daemon.vms)
        made = await snaps.create("web", "cold", Progress())
        assert not made.memory
        res = await snaps.restore("web", "cold", discard=False, progress=Progress())
        assert res.state == VmState.STOPPED and res.auto is not None
        assert not saved_state(daemon.vm_dir(vm)).exists()
        await daemon.vms.start("web", Progress())
        assert daemon.shown(vm).state == VmState.RUNNING

    asyncio.run(scenario())


def test_frozen_disks_stay_while_a_checkpoint_or_disk_layers_on_them(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        vm = await daemon.create("web")
        snaps = Snapshots(daemon.vms)
        await snaps.create("web", "one", Progress())
        disk = snaps.find(vm, "one").disk
        daemon.vms.templates.collect_disks()
        assert disk in frozen(daemon)
        await snaps.delete("web", "one")
        assert disk not in frozen(daemon)
        await snaps.create("web", "two", Progress())
        await snaps.restore("web", "two", discard=True, progress=Progress())
        two = snaps.find(vm, "two").disk
        await snaps.delete("web", "two")
        assert two in frozen(daemon)  # the VM's disk is a layer on it now
        await daemon.vms.delete("web", force=True, progress=Progress())
        assert two not in frozen(daemon)

    asyncio.run(scenario())


def test_fork_makes_running_clones_with_their_own_identity(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        src = await daemon.create("web", publish=[])
        forks = await fork(daemon.vms, "web", None, 2, Progress())
        assert [f.name for f in forks] == ["web-fork-1", "web-fork-2"]
        for f in forks:
            assert f.state == VmState.RUNNING and f.id != src.id and f.ip != src.ip
            assert daemon.events(f)[-1] == "started from a fork of web"
            assert daemon.backend.steps(f.name)[:3] == ["prepare_disk_on", "restore", "resume"]
            root = daemon.vm_dir(f) / "guest-root" / "etc" / "hostname"
            assert root.read_text().strip() == f.name
        assert daemon.shown(src).state == VmState.RUNNING
        assert daemon.events(src)[-1] == "forked into web-fork-1, web-fork-2"
        assert not any((daemon.paths.state_dir / "forks").iterdir())  # scratch gone
        again = await fork(daemon.vms, "web", None, 1, Progress())
        assert [f.name for f in again] == ["web-fork-3"]

    asyncio.run(scenario())


def test_a_failed_fork_leaves_no_vm_and_no_disk(daemon: FakeDaemon) -> None:
    async def scenario() -> None:
        await daemon.create("web")
        before = frozen(daemon)
        daemon.backend.fail("share_memory")
        with pytest.raises(OperationFailed):
            await fork(daemon.vms, "web", "kid", 2, Progress())
        assert set(daemon.vms.repo.names()) == {"web"}
        assert frozen(daemon) == before
        daemon.backend.fail("resume")  # the first fork's restore fails: nothing stays
        with pytest.raises(OperationFailed):
            await fork(daemon.vms, "web", "kid", 2, Progress())
        assert set(daemon.vms.repo.names()) == {"web"}
        daemon.vms.templates.collect_disks()
        assert frozen(daemon) == before

    asyncio.run(scenario())


def test_fork_refuses_bad_names_counts_and_stopped_sources(daemon: FakeDaemon) -> None:
    assert fork_names("web", "kid", 3, set()) == ["kid-1", "kid-2", "kid-3"]
    assert fork_names("web", None, 2, {"web-fork-1"}) == ["web-fork-2", "web-fork-3"]
    with pytest.raises(Conflict, match="'kid' already exists"):
        fork_names("web", "kid", 1, {"kid"})
    with pytest.raises(InvalidArgument, match="invalid VM name"):
        fork_names("web", "Kid!", 1, set())
    with pytest.raises(InvalidArgument, match="fork count 0"):
        fork_names("web", None, 0, set())

    async def scenario() -> None:
        await daemon.create("web")
        await daemon.vms.stop("web", Progress())
        with pytest.raises(NotRunning, match="only a running VM forks"):
            await fork(daemon.vms, "web", None, 1, Progress())

    asyncio.run(scenario())


def test_checkpoint_meta_files_ignore_half_made_dirs(tmp_path: Path) -> None:
    (tmp_path / "snapshots" / ".staging-x-1").mkdir(parents=True)
    (tmp_path / "snapshots" / "y").mkdir()
    (tmp_path / "snapshots" / "y" / checkpoints.META).write_text("{not json")
    assert checkpoints.metas(tmp_path) == []


def test_a_backend_without_checkpoints_is_refused_in_one_line(daemon: FakeDaemon) -> None:
    class Bare:  # a Backend that cannot checkpoint, as Firecracker's is
        name = "firecracker"

    daemon.vms.backend = Bare()  # type: ignore[assignment]
    with pytest.raises(InvalidArgument, match="the firecracker backend cannot checkpoint or fork"):
        Snapshots(daemon.vms)

    async def scenario() -> None:
        with pytest.raises(InvalidArgument, match="firecracker backend"):
            await fork(daemon.vms, "web", None, 1, Progress())

    asyncio.run(scenario())


def test_a_fork_sweeps_what_a_killed_daemons_fork_left(daemon: FakeDaemon) -> None:
    from banger.vms import fork as forking

    stale = daemon.paths.state_dir / "forks" / "aaaa-bbbb"
    stale.mkdir(parents=True)
    ram = forking.ram_file(daemon.paths.state_dir, stale)
    ram.write_bytes(b"x")
    full = ram.with_name(ram.name.removesuffix(forking.RAM) + "full.snap")
    full.write_bytes(b"x")

    async def scenario() -> None:
        await daemon.create("web")
        await fork(daemon.vms, "web", None, 1, Progress())

    asyncio.run(scenario())
    assert not stale.exists() and not ram.exists() and not full.exists()
    assert not list(Path(forking.SHM).glob(f"{forking._tag(daemon.paths.state_dir)}*"))
