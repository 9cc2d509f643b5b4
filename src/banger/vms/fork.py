"""Live forks: new running VMs from a running VM's memory and disk (docs/snapshots.md).

The source is checkpointed for an instant (its disk copied into a frozen base, its memory saved)
and runs on. A short-lived VMM loads that memory into a RAM file; each fork then restores the
way a template clone does — its disk a layer on the base, its RAM a copy-on-write map of the
file, its identity new (StartPath's clone path) — so forks share the source's memory pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

import msgspec

from banger.errors import BangerError, Conflict, InvalidArgument, NotRunning
from banger.progress import Progress
from banger.runner import arun
from banger.store.db import utcnow
from banger.vmm.base import Checkpointer, NetworkAttachment, Snapshotter, VmHandles
from banger.vms import events
from banger.vms.manager import VmManager, net_view
from banger.vms.model import VmRecord, VmState, validate_name
from banger.vms.snapshots import require_checkpointer
from banger.vms.start import Clone

log = logging.getLogger("banger.vms.fork")
MAX_FORKS = 16
SHM = "/dev/shm"
RAM = "memory.ram"  # the name templates' RAM files have (bench/pool.py's smaps split knows it)
_active: set[str] = set()  # scratch names of the forks under way in this daemon


def fork_names(source: str, name: str | None, count: int, taken: set[str]) -> list[str]:
    """NAME (one fork), NAME-1..NAME-K, or SOURCE-fork-N for the first free N."""
    if not 1 <= count <= MAX_FORKS:
        raise InvalidArgument(f"invalid fork count {count}: use 1..{MAX_FORKS}")
    if name:
        names = [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]
    else:
        free = (f"{source}-fork-{i}" for i in range(1, 10_000))
        names = [n for n in free if n not in taken][:count]
    for n in names:
        validate_name(n)
        if n in taken:
            raise Conflict(f"a VM named {n!r} already exists; pick another --name")
    return names


async def fork(mgr: VmManager, ref: str, name: str | None, count: int,
               progress: Progress) -> list[VmRecord]:
    backend = require_checkpointer(mgr)
    source = mgr.repo.find(ref)
    names = fork_names(source.name, name, count, set(mgr.repo.names()))
    if source.state != VmState.RUNNING:
        raise NotRunning(f"VM {source.name} is {source.state}; only a running VM forks "
                         f"(`banger vm start {source.name}`)")
    work = mgr.paths.state_dir / "forks" / f"{source.id}-{secrets.token_hex(4)}"
    _sweep(mgr.paths.state_dir)
    _active.add(work.name)
    work.mkdir(parents=True, mode=0o700)
    shm: Path | None = None
    try:
        shm = shm_dir(mgr.paths.state_dir, work)
        ram = (shm or work) / RAM
        mgr.templates.disks.mkdir(parents=True, exist_ok=True)
        suffix = mgr.backend.disk_path(mgr.paths.vm_dir(source.id)).suffix
        base = mgr.templates.disks / f"fork-{source.id}-{work.name[-8:]}{suffix}"
        with mgr.templates.pin(base):  # nothing layers on it until the forks' disks exist
            forks = await _fork(mgr, backend, source, names, work, base, ram, progress)
    finally:  # running forks keep their map of the RAM file: its pages live while they do
        if shm is not None:
            shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        _active.discard(work.name)
    events.record(mgr.paths.vm_dir(source.id), f"forked into {', '.join(names)}")
    return forks


async def _fork(mgr: VmManager, backend: Checkpointer, source: VmRecord, names: list[str],
                work: Path, base: Path, ram: Path, progress: Progress) -> list[VmRecord]:
    clone = await _capture(mgr, backend, source, work, base, ram, progress)
    # The load read every zero page of the file in: give them back while the forks start
    # (a private map of a punched page reads zeros, as the page was).
    dig = asyncio.create_task(arun(["fallocate", "--dig-holes", ram], what="fallocate"))
    try:
        return await _make(mgr, source, names, clone, progress)
    except BaseException:
        clone.disk.unlink(missing_ok=True)
        raise
    finally:
        try:
            await dig
        except BangerError as exc:  # the forks run; their RAM file is just larger
            log.warning("could not free the fork RAM file's zero pages: %s", exc.message)


def _tag(state_dir: Path) -> str:
    """Which daemon's: many homes (tests) of one user share /dev/shm."""
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:8]
    return f"banger-{os.getuid()}-{digest}-"


def shm_dir(state_dir: Path, work: Path) -> Path | None:
    """A private (0700, unpredictable) dir in /dev/shm for the RAM file and the full state, or
    None when the host has no tmpfs for it: loading a guest's RAM into a disk file took 3x as
    long (page cache writeback). /dev/shm is every user's: a predictable name there let another
    user plant the file QEMU then opens (and maps the guest's memory into)."""
    shm = Path(SHM)
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        return None
    return Path(tempfile.mkdtemp(prefix=f"{_tag(state_dir)}{work.name}-", dir=shm))


def _sweep(state_dir: Path) -> None:
    """What a killed daemon's forks left: scratch dirs and RAM dirs no fork here is using.
    In /dev/shm only our own dirs and files, never a link: anyone may put names there."""
    forks = state_dir / "forks"
    for d in forks.iterdir() if forks.is_dir() else ():
        if d.name not in _active:
            shutil.rmtree(d, ignore_errors=True)
    tag = _tag(state_dir)
    for f in Path(SHM).glob(f"{tag}*"):
        if "-".join(f.name.removeprefix(tag).split("-")[:2]) in _active:
            continue
        with contextlib.suppress(OSError):
            st = f.lstat()
            if st.st_uid != os.getuid():
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(f, ignore_errors=True)
            elif stat.S_ISREG(st.st_mode):  # an older daemon's RAM file
                f.unlink()


async def _capture(mgr: VmManager, backend: Checkpointer, source: VmRecord, work: Path,
                   base: Path, ram: Path, progress: Progress) -> Clone:
    """The source's disk as a frozen base, its memory as a RAM file plus device state."""
    vm_dir = mgr.paths.vm_dir(source.id)
    full = ram.with_name("full.snap")  # beside it: tmpfs too, and as private
    async with mgr.lock(source.id):
        source = mgr.repo.find(source.id)
        if source.state != VmState.RUNNING:
            raise NotRunning(f"VM {source.name} is {source.state}; only a running VM forks")
        handles = VmHandles.require(vm_dir, source.name)
        progress("fork", None, f"checkpointing {source.name}: memory and disk")
        await backend.checkpoint(handles, vm_dir, base, full, for_sharing=True)
    return await _load(mgr, backend, source, work, base, full, ram, progress)


async def _load(mgr: VmManager, backend: Checkpointer, source: VmRecord, work: Path, base: Path,
                full: Path, ram: Path, progress: Progress) -> Clone:
    """A short-lived VMM loads the full state into the RAM file and saves the device state."""
    try:
        spec = (await mgr.boot_inputs(source, progress))[0]
        nic = NetworkAttachment("user", mac=source.mac or "") if source.net_mode else None
        loader = dataclasses.replace(spec, vm_id=f"f{work.name[-8:]}", vm_dir=work / "loader",
                                     network=nic, incoming=full)
        loader.vm_dir.mkdir()
        assert isinstance(mgr.backend, Snapshotter)
        await mgr.backend.prepare_disk_on(loader, base, None)
        progress("fork", None, "mapping its memory for the forks")
        state = work / "memory.snap"
        await backend.share_memory(loader, ram, state)
        full.unlink()
    except BaseException:
        base.unlink(missing_ok=True)
        raise
    # The source's git identity is on its disk: `git config` twice costs a fork ~0.2 s of TCG.
    return Clone(base, state, ram, source.disk_mib, f"a fork of {source.name}",
                 has=("git_identity",))


async def _make(mgr: VmManager, source: VmRecord, names: list[str], clone: Clone,
                progress: Progress) -> list[VmRecord]:
    """One record per name, then the clones start side by side; on any failure every fork made
    goes too."""
    made: list[VmRecord] = []
    try:
        for name in names:
            if name in mgr.repo.names():
                raise Conflict(f"a VM named {name!r} already exists; pick another --name")
            vm = msgspec.structs.replace(
                source, id=secrets.token_hex(6), name=name, state=VmState.CREATED,
                created_at=utcnow(), updated_at=utcnow(), ip=None, mac=None, last_error=None,
                publish=[], owner_pid=None, owner_start=None)
            where = mgr.net.allocate(net_view(vm), mgr.repo.addresses())  # no await until insert
            vm = msgspec.structs.replace(vm, ip=where.ip, mac=where.mac)
            mgr.repo.insert(vm)
            made.append(vm)
        progress("fork", None, f"starting {', '.join(names)}")
        results = await asyncio.gather(*(mgr.start(vm.id, progress, clone=clone) for vm in made),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
    except BaseException:
        for vm in made:
            with contextlib.suppress(BangerError):
                await mgr.delete(vm.id, force=True, progress=lambda *_: None)
        raise
    return [mgr.repo.find(vm.id) for vm in made]
