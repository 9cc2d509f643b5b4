"""FirecrackerBackend: raw root disks, a detached firecracker (or jailer) per VM, its REST API."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from pathlib import Path

from banger.config import Config
from banger.errors import Conflict, InvalidArgument, NotFound, OperationFailed
from banger.logfiles import tail_line
from banger.runner import arun
from banger.vmm.base import VmHandles, VmSpec
from banger.vmm.firecracker import snapshot
from banger.vmm.firecracker.api import FirecrackerApi
from banger.vmm.firecracker.plan import (
    AGENT_VSOCK_PORT,
    Jail,
    Layout,
    boot_calls,
    check_shape,
    disk_path,
    jail_id,
    launch_argv,
    state_files,
)
from banger.vmm.firecracker.version import BinaryProbe, find_binary, probe_binary
from banger.vmm.firecracker.vsock import connect_vsock
from banger.vmm.process import kill_pid, pid_alive, wait_gone

log = logging.getLogger("banger.vmm.firecracker")
MIB = 1024 * 1024
SOCKET_WAIT = 5.0
# `setsid` detaches firecracker from the daemon (it outlives a daemon restart and is never our
# zombie); `exec`-free background job so `$!` is firecracker's own pid. `>>` opens the console
# O_APPEND, so after the daemon truncates it (banger.logfiles.rotate) writes go to the new end.
SPAWN_SCRIPT = 'log=$1; shift; setsid "$@" </dev/null >>"$log" 2>&1 & echo $!'
SAVED_STATE_HINT = "the saved state cannot be restored"


class FirecrackerBackend:
    name = "firecracker"
    user_network = False

    def __init__(self, config: Config, binary: BinaryProbe | None = None,
                 reason: str = "vmm = firecracker") -> None:
        self.config = config
        self._binary = binary
        self.reason = reason

    # ---- disks

    async def prepare_disk(self, spec: VmSpec) -> None:
        disk = disk_path(spec.vm_dir)
        if disk.exists():
            return
        tmp = disk.with_suffix(".ext4.tmp")
        try:
            # A reflink costs nothing on btrfs/xfs; elsewhere a sparse copy skips the holes.
            await arun(["cp", "--reflink=auto", "--sparse=always", spec.boot.rootfs, tmp],
                       what="copying the image's root disk")
            await grow_ext4(tmp, spec.disk_mib)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(disk)

    async def resize_disk(self, spec: VmSpec) -> None:
        await grow_ext4(disk_path(spec.vm_dir), spec.disk_mib)

    def disk_base(self, vm_dir: Path) -> Path | None:
        """A VM's raw disk is a full (reflinked) copy: it needs no base once made."""
        return None

    def disk_path(self, vm_dir: Path) -> Path:
        """The VM's raw root disk (the core must not assume qemu's root.qcow2)."""
        return disk_path(vm_dir)

    async def prepare_disk_on(self, spec: VmSpec, base: Path, size_mib: int | None) -> None:
        """The VM's own raw disk: a reflink (or sparse) copy of the template's frozen disk."""
        disk = disk_path(spec.vm_dir)
        if disk.exists():
            raise Conflict(f"{disk} already exists; a VM's own disk is never replaced by a "
                           "template's")
        if not base.is_file():
            raise NotFound(f"the template's disk {base} is missing; prune the template")
        tmp = disk.with_suffix(".ext4.tmp")
        try:
            await arun(["cp", "--reflink=auto", "--sparse=always", base, tmp],
                       what="copying the template's disk")
            tmp.chmod(0o644)  # the frozen base is read-only; this copy is the VM's own disk
            if size_mib:
                snapshot.grow_raw(tmp, size_mib)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(disk)

    # ---- snapshots

    def state_version(self) -> str:
        """Firecracker restores only snapshots in its own data format: key templates by version."""
        return f"firecracker {self.binary().version_text}"

    def state_files(self, dest: Path) -> tuple[Path, ...]:
        """Every file a saved state at dest consists of (for the core to move or delete)."""
        return state_files(dest)

    async def save_state(self, handles: VmHandles, dest: Path) -> None:
        chroot = handles.extra.get("chroot")
        await snapshot.save(handles.control_socket, dest, Path(chroot) if chroot else None)

    async def resume(self, handles: VmHandles, timeout: float) -> None:
        """start() returned after /snapshot/load finished (it is synchronous): just run it."""
        if not self.is_alive(handles):
            raise OperationFailed(f"firecracker exited while loading; {SAVED_STATE_HINT}")
        async with FirecrackerApi(handles.control_socket, timeout=timeout) as api:
            await api.call(snapshot.resume_call())

    async def grow_live(self, handles: VmHandles, size_mib: int) -> None:
        disk, drive = handles.extra.get("disk"), handles.extra.get("drive")
        if not disk or not drive:
            raise OperationFailed("this VM was started by an older banger; restart it to grow "
                                  "its disk")
        snapshot.grow_raw(Path(disk), size_mib)
        async with FirecrackerApi(handles.control_socket) as api:
            await api.call(snapshot.rescan_call(drive))

    # ---- lifecycle

    def binary(self) -> BinaryProbe:
        if self._binary is None:
            self._binary = probe_binary(self.config)
        return self._binary

    def layout(self, spec: VmSpec) -> Layout:
        if not self.config.jailer_enabled:
            return Layout(spec)
        jailer = find_binary(self.config.jailer_bin, "jailer")
        if jailer is None:
            raise InvalidArgument("jailer_enabled = true but no jailer binary was found; install "
                                  "the jailer shipped with Firecracker or set jailer_bin")
        owner = spec.vm_dir.stat()  # the user who owns banger's state runs the jailed VMM
        return Layout(spec, Jail(jailer, spec.vm_dir / "jail",
                                 Path(self.binary().path or "firecracker").name,
                                 owner.st_uid, owner.st_gid))

    async def start(self, spec: VmSpec) -> VmHandles:
        """Boot, or with spec.incoming restore a saved state (left paused for resume())."""
        check_shape(spec)
        binary = self.binary()
        if not binary.usable or binary.path is None:
            raise InvalidArgument(f"cannot use firecracker: {binary.reason}; install "
                                  "Firecracker >= 1.8.0 or set vmm = qemu")
        if spec.incoming is not None:
            snapshot.check_restore(spec, binary)
        layout = self.layout(spec)
        # computed first: bad input fails before anything runs
        calls = boot_calls(layout) if spec.incoming is None else snapshot.restore_calls(layout)
        _remove_runtime_files(layout)
        _stage_files(layout)
        argv = launch_argv(layout, binary.path)
        (spec.vm_dir / "firecracker.argv").write_text("\n".join(argv) + "\n")
        pid = await spawn_detached(argv, spec.console_log, layout.cwd)
        handles = VmHandles("firecracker", pid, str(layout.host(layout.api_socket)),
                            str(layout.host(layout.vsock)),
                            extra={"marker": jail_id(spec), "vsock_port": str(AGENT_VSOCK_PORT),
                                   "jail": str(spec.vm_dir / "jail") if layout.jail else "",
                                   "chroot": str(layout.chroot or ""),
                                   "disk": str(disk_path(spec.vm_dir)), "drive": layout.disk})
        try:
            await self._wait_api_socket(handles, spec.console_log)
            async with FirecrackerApi(handles.control_socket) as api:
                for call in calls:
                    await api.call(call)
        except BaseException:
            await self.kill(handles)
            raise
        return handles

    async def _wait_api_socket(self, handles: VmHandles, console: Path) -> None:
        deadline = time.monotonic() + SOCKET_WAIT
        while not Path(handles.control_socket).exists():
            # No marker check: the pid was just spawned, and its cmdline reads empty mid-exec.
            if not pid_alive(handles.pid):
                raise OperationFailed(f"firecracker exited at start: {_tail(console)}")
            if time.monotonic() > deadline:
                raise OperationFailed(f"firecracker made no API socket within {SOCKET_WAIT:.0f}s: "
                                      f"{_tail(console)}")
            await asyncio.sleep(0.02)

    async def open_agent(self, handles: VmHandles,
                         timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        port = int(handles.extra.get("vsock_port", AGENT_VSOCK_PORT))
        return await connect_vsock(handles.agent_socket, port, timeout)

    def runtime_files(self, vm_dir: Path) -> tuple[Path, ...]:
        """None outside what kill() and start() remove: the API and vsock sockets, the jail."""
        return ()

    def is_alive(self, handles: VmHandles) -> bool:
        return pid_alive(handles.pid, _marker(handles))

    async def request_shutdown(self, handles: VmHandles) -> None:
        """Ctrl-Alt-Del through the emulated i8042: the guest reboots and, with reboot=k,
        Firecracker exits."""
        async with FirecrackerApi(handles.control_socket) as api:
            await api.action("SendCtrlAltDel")

    async def kill(self, handles: VmHandles) -> None:
        kill_pid(handles.pid, _marker(handles))
        await wait_gone(handles.pid, _marker(handles), 5.0)
        for path in (handles.control_socket, handles.agent_socket):
            Path(path).unlink(missing_ok=True)
        if handles.extra.get("jail"):
            shutil.rmtree(handles.extra["jail"], ignore_errors=True)

    async def wait_exit(self, handles: VmHandles, timeout: float) -> bool:
        return await wait_gone(handles.pid, _marker(handles), timeout)


def _marker(handles: VmHandles) -> str:
    """Firecracker's --id: in its command line with or without the jailer, guards pid reuse."""
    return handles.extra.get("marker") or handles.control_socket


async def grow_ext4(image: Path, size_mib: int) -> None:
    """Grow a raw ext4 image file and its filesystem to size_mib (never shrinks)."""
    size = size_mib * MIB
    if image.stat().st_size > size:
        raise InvalidArgument(f"the root disk is already larger than {size_mib} MiB; disks only "
                              "grow")
    os.truncate(image, size)
    fsck = await arun(["e2fsck", "-f", "-p", image], check=False, what="e2fsck")
    if fsck.returncode > 1:  # 1 = errors corrected
        raise OperationFailed(f"e2fsck of {image} failed ({fsck.returncode}): "
                              f"{fsck.stderr.strip() or fsck.stdout.strip()}")
    await arun(["resize2fs", image], what="resize2fs")


async def spawn_detached(argv: list[str], console_log: Path, cwd: Path) -> int:
    """Start argv in cwd in its own session, stdout/stderr (the serial console) appended to a
    file."""
    res = await arun(["sh", "-c", SPAWN_SCRIPT, "sh", str(console_log), *argv],
                     cwd=cwd, what="starting firecracker", timeout=10)
    try:
        return int(res.stdout.strip())
    except ValueError:
        raise OperationFailed(f"could not start {argv[0]}: {res.stderr.strip()}") from None


def _remove_runtime_files(layout: Layout) -> None:
    for api_path in (layout.api_socket, layout.vsock):
        layout.host(api_path).unlink(missing_ok=True)


def _stage_files(layout: Layout) -> None:
    """Create the log and metrics files (Firecracker opens them, never creates them) and, with
    the jailer, hard-link the VM's files into its chroot."""
    jail = layout.jail
    chroot = layout.chroot
    if jail is not None and chroot is not None:
        chroot.mkdir(parents=True, exist_ok=True)
        os.chown(chroot, jail.uid, jail.gid)
        for source, dest in layout.jail_inputs().items():
            dest.unlink(missing_ok=True)
            _link_or_copy(source, dest)
        os.chown(layout.host(layout.disk), jail.uid, jail.gid)  # the only file it writes
    for api_path in (layout.log, layout.metrics):
        path = layout.host(api_path)
        path.touch()
        if jail is not None:
            os.chown(path, jail.uid, jail.gid)


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:  # another filesystem: a copy (the chroot must hold real files)
        shutil.copy2(source, dest)


def _tail(path: Path, lines: int = 4) -> str:
    """The console's last lines (guest and firecracker text) as one clean line for an error."""
    return tail_line(path, lines, 8192) or "(no output)"
