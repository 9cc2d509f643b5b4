"""Checkpoints and forks on the fake backend: what is left on disk, the automatic checkpoint,
clean failures, names, and which frozen disks the collector keeps."""

from __future__ import annotations

import asyncio
import os
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
        # paused from its automatic checkpoint until stopped: no write in between is lost
        assert daemon.backend.steps("web", "pause", "unpause", "checkpoint")[-2:] == [
            "pause", "checkpoint"]
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
        assert daemon.backend.steps("web", "pause", "unpause", "checkpoint")[-3:] == [
            "pause", "checkpoint", "unpause"]  # it runs on
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
    shm = forking.shm_dir(daemon.paths.state_dir, stale)
    assert shm is not None
    (shm / forking.RAM).write_bytes(b"x")
    tag = forking._tag(daemon.paths.state_dir)
    old = Path(forking.SHM) / f"{tag}aaaa-cccc-{forking.RAM}"  # an older daemon's plain file
    old.write_bytes(b"x")

    async def scenario() -> None:
        await daemon.create("web")
        await fork(daemon.vms, "web", None, 1, Progress())

    asyncio.run(scenario())
    assert not stale.exists() and not shm.exists() and not old.exists()
    assert not list(Path(forking.SHM).glob(f"{tag}*"))


def test_a_forks_memory_is_in_a_private_dir_no_one_else_can_name(
        daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """/dev/shm is every user's: a name another user can predict there lets them plant the
    file the loader QEMU opens, and read or write the guest's memory through it."""
    from banger.vms import fork as forking

    seen: list[tuple[Path, int, int]] = []
    share = daemon.backend.share_memory

    async def spying(spec: object, ram: Path, state: Path) -> None:
        assert spec.incoming is not None  # type: ignore[attr-defined]
        full = spec.incoming  # type: ignore[attr-defined]
        assert full.parent == ram.parent
        st = ram.parent.stat()
        seen.append((ram, st.st_mode & 0o777, st.st_uid))
        await share(spec, ram, state)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon.backend, "share_memory", spying)

    async def scenario() -> None:
        await daemon.create("web")
        await fork(daemon.vms, "web", None, 1, Progress())
        await fork(daemon.vms, "web", None, 1, Progress())

    asyncio.run(scenario())
    (one, mode, uid), (two, _, _) = seen
    assert one.parent.parent == Path(forking.SHM) and mode == 0o700 and uid == os.getuid()
    assert one.name == forking.RAM and one.parent.name != two.parent.name
    assert not one.parent.exists() and not two.parent.exists()  # gone once the forks run


def test_a_fork_leaves_others_files_in_dev_shm_alone(
        daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names with this daemon's tag that it does not own (as if another user planted them), or
    links, are not touched: unlinking them raised and failed every later fork."""
    from banger.vms import fork as forking

    real = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real + 1)  # files of ours look foreign
    tag = forking._tag(daemon.paths.state_dir)
    planted = Path(forking.SHM) / f"{tag}aaaa-bbbb-{forking.RAM}"
    planted.write_bytes(b"x")
    link = Path(forking.SHM) / f"{tag}aaaa-dddd"
    link.symlink_to(daemon.paths.state_dir)
    try:
        async def scenario() -> None:
            await daemon.create("web")
            forks = await fork(daemon.vms, "web", None, 1, Progress())
            assert forks[0].state == VmState.RUNNING

        asyncio.run(scenario())
        assert planted.read_bytes() == b"x" and link.is_symlink()
        assert daemon.paths.state_dir.is_dir()
    finally:
        planted.unlink(missing_ok=True)
        link.unlink(missing_ok=True)


def test_another_vms_delete_leaves_a_checkpoint_or_fork_disk_being_made(
        daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vm delete` of any other VM collects frozen disks under its own lock: one a checkpoint
    or a fork is still making (nothing layers on it yet) must stay."""
    checkpoint = daemon.backend.checkpoint
    share = daemon.backend.share_memory
    others = iter(["a", "b"])

    async def delete_another() -> None:
        await daemon.vms.delete(next(others), force=True, progress=Progress())

    async def checkpoint_then_delete(*args: object, **kw: object) -> None:
        await checkpoint(*args, **kw)  # type: ignore[arg-type]
        await delete_another()

    async def share_then_delete(*args: object) -> None:
        await share(*args)  # type: ignore[arg-type]
        await delete_another()

    async def scenario() -> None:
        vm = await daemon.create("web")
        await daemon.create("a")
        await daemon.create("b")
        monkeypatch.setattr(daemon.backend, "checkpoint", checkpoint_then_delete)
        made = await Snapshots(daemon.vms).create("web", "one", Progress())
        assert Snapshots(daemon.vms).find(vm, made.name).disk in frozen(daemon)
        monkeypatch.setattr(daemon.backend, "checkpoint", checkpoint)
        monkeypatch.setattr(daemon.backend, "share_memory", share_then_delete)
        forks = await fork(daemon.vms, "web", "kid", 1, Progress())
        assert set(daemon.vms.repo.names()) == {"web", "kid"}
        base = daemon.backend.disk_base(daemon.vm_dir(forks[0]))
        assert base is not None and base.exists()

    asyncio.run(scenario())


def test_a_restore_that_fails_after_stopping_the_vm_keeps_the_automatic_checkpoint(
        daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the VM is stopped (or its saved state dropped) the automatic checkpoint may be the
    only copy of the state it had: a failure, or the client going away, keeps it."""
    cleanup = daemon.vms.cleanup
    fault: list[BaseException] = []

    async def failing_cleanup(vm: object) -> None:
        await cleanup(vm)  # type: ignore[arg-type]
        raise fault.pop()

    async def scenario() -> None:
        vm = await daemon.create("web")
        snaps = Snapshots(daemon.vms)
        await snaps.create("web", "one", Progress())
        monkeypatch.setattr(daemon.vms, "cleanup", failing_cleanup)
        fault.append(OperationFailed("fake cleanup failed"))
        with pytest.raises(OperationFailed, match=r"state before it is kept as checkpoint auto-"):
            await snaps.restore("web", "one", discard=False, progress=Progress())
        autos = [s for s in snaps.list("web") if s.auto]
        assert len(autos) == 1 and autos[0].memory
        assert daemon.events(vm)[-1] == (f"restoring checkpoint one failed; the state before "
                                         f"is checkpoint {autos[0].name}")
        daemon.vms.repo.set_state(vm.id, VmState.STOPPED)  # its VMM is gone: start it again
        await daemon.vms.start("web", Progress())
        fault.append(asyncio.CancelledError())  # the client's Ctrl-C, mid-restore
        with pytest.raises(asyncio.CancelledError):
            await snaps.restore("web", "one", discard=False, progress=Progress())
        assert len([s for s in snaps.list("web") if s.auto]) == 2
        monkeypatch.setattr(daemon.vms, "cleanup", cleanup)
        daemon.vms.repo.set_state(vm.id, VmState.STOPPED)
        res = await snaps.restore("web", autos[0].name, discard=True, progress=Progress(),
                                  run=True)
        assert res.state == VmState.RUNNING

    asyncio.run(scenario())
