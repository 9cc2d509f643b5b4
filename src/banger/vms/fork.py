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
    work.mkdir(parents=True)
    ram = ram_file(mgr.paths.state_dir, work)
    try:
        clone = await _capture(mgr, backend, source, work, ram, progress)
        # The load read every zero page of the file in: give them back while the forks start
        # (a private map of a punched page reads zeros, as the page was).
        dig = asyncio.create_task(arun(["fallocate", "--dig-holes", ram], what="fallocate"))
        try:
            forks = await _make(mgr, source, names, clone, progress)
        except BaseException:
            clone.disk.unlink(missing_ok=True)
            raise
        finally:
            try:
                await dig
            except BangerError as exc:  # the forks run; their RAM file is just larger
                log.warning("could not free the fork RAM file's zero pages: %s", exc.message)
    finally:  # running forks keep their map of the RAM file: its pages live while they do
        ram.unlink(missing_ok=True)
        ram.with_name(ram.name.removesuffix(RAM) + "full.snap").unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        _active.discard(work.name)
    events.record(mgr.paths.vm_dir(source.id), f"forked into {', '.join(names)}")
    return forks


def _tag(state_dir: Path) -> str:
    """Which daemon's: many homes (tests) of one user share /dev/shm."""
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:8]
    return f"banger-{os.getuid()}-{digest}-"


def ram_file(state_dir: Path, work: Path) -> Path:
    """In memory when the host has a tmpfs for it: loading a guest's RAM into a disk file took
    3x as long (page cache writeback). Holes are dug after the load, so it holds what the
    guest uses."""
    shm = Path(SHM)
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / f"{_tag(state_dir)}{work.name}-{RAM}"
    return work / RAM


def _sweep(state_dir: Path) -> None:
    """What a killed daemon's forks left: scratch dirs and RAM files no fork here is using."""
    forks = state_dir / "forks"
    for d in forks.iterdir() if forks.is_dir() else ():
        if d.name not in _active:
            shutil.rmtree(d, ignore_errors=True)
    for f in Path(SHM).glob(f"{_tag(state_dir)}*"):
        if "-".join(f.name.removeprefix(_tag(state_dir)).split("-")[:2]) not in _active:
            f.unlink(missing_ok=True)


async def _capture(mgr: VmManager, backend: Checkpointer, source: VmRecord, work: Path,
                   ram: Path, progress: Progress) -> Clone:
    """The source's disk as a frozen base, its memory as a RAM file plus device state."""
    vm_dir = mgr.paths.vm_dir(source.id)
    mgr.templates.disks.mkdir(parents=True, exist_ok=True)
    suffix = mgr.backend.disk_path(vm_dir).suffix
    base = mgr.templates.disks / f"fork-{source.id}-{work.name[-8:]}{suffix}"
    full = ram.with_name(ram.name.removesuffix(RAM) + "full.snap")  # beside it: tmpfs too
    async with mgr.lock(source.id):
        source = mgr.repo.find(source.id)
        if source.state != VmState.RUNNING:
            raise NotRunning(f"VM {source.name} is {source.state}; only a running VM forks")
        handles = VmHandles.require(vm_dir, source.name)
        progress("fork", None, f"checkpointing {source.name}: memory and disk")
        await backend.checkpoint(handles, vm_dir, base, full, for_sharing=True)
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
