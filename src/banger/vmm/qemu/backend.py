"""QemuBackend: qcow2 overlay disks, a daemonized QEMU per VM, QMP for control."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
from pathlib import Path

from banger.errors import OperationFailed, Unavailable
from banger.runner import arun
from banger.vmm.base import HostForward, VmHandles, VmSpec
from banger.vmm.process import kill_pid, pid_alive, wait_gone
from banger.vmm.qemu import checkpoint, forward, qcow2, slirp, snapshot
from banger.vmm.qemu.argv import PAYLOAD_NAME, qemu_argv

log = logging.getLogger("banger.vmm.qemu")


DISK_NAME = "root.qcow2"
PAYLOAD_BYTES = 4 << 30  # larger copies take the agent's stream
SLIRP_PID = "slirp4netns_pid"  # in VmHandles.extra: the VM's slirp4netns (isolated --nat)


def qmp_path(spec: VmSpec) -> Path:
    return spec.vm_dir / "qmp.sock"


def _vm_dir(handles: VmHandles) -> Path:
    return Path(handles.control_socket).parent


def _make_payload(path: Path) -> None:
    """An empty sparse payload disk (its size is fixed for the VM's run; it holds no data)."""
    with open(path, "wb") as f:
        f.truncate(PAYLOAD_BYTES)


def _close(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


async def _stop_slirp(handles: VmHandles) -> None:
    """It exits with QEMU by itself (exit fd); this makes stop/kill deterministic."""
    if SLIRP_PID in handles.extra:
        await slirp.stop(_vm_dir(handles), int(handles.extra[SLIRP_PID]))


class QemuBackend:
    name = "qemu"
    user_network = True

    def __init__(self, reason: str = "vmm = qemu") -> None:
        self.reason = reason

    async def prepare_disk(self, spec: VmSpec) -> None:
        disk = self.disk_path(spec.vm_dir)
        if disk.exists():
            return
        tmp = disk.with_suffix(".qcow2.tmp")
        await arun(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                    "-b", spec.boot.rootfs, tmp, f"{spec.disk_mib}M"], what="qemu-img create")
        tmp.replace(disk)

    async def prepare_disk_on(self, spec: VmSpec, base: Path, size_mib: int | None) -> None:
        disk = self.disk_path(spec.vm_dir)
        tmp = disk.with_suffix(".qcow2.tmp")
        size = [f"{size_mib}M"] if size_mib else []
        await arun(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, tmp,
                    *size], what="qemu-img create")
        tmp.replace(disk)

    async def save_state(self, handles: VmHandles, dest: Path) -> None:
        await snapshot.save(handles.control_socket, dest)

    async def resume(self, handles: VmHandles, timeout: float) -> None:
        incoming = Path(handles.extra["incoming"])
        await snapshot.resume(handles.control_socket, incoming, timeout,
                              lambda: self.is_alive(handles))

    async def pause(self, handles: VmHandles) -> None:
        await self.qmp(handles, "stop")

    async def unpause(self, handles: VmHandles) -> None:
        await self.qmp(handles, "cont")

    async def grow_live(self, handles: VmHandles, size_mib: int) -> None:
        await self.qmp(handles, "block_resize", device="root", size=size_mib * 1024 * 1024)

    def state_version(self) -> str:
        return f"{snapshot.qemu_version()} +payload"  # the device set is part of saved state

    def state_files(self, dest: Path) -> tuple[Path, ...]:
        return (dest,)

    def disk_path(self, vm_dir: Path) -> Path:
        return vm_dir / DISK_NAME

    def payload_file(self, vm_dir: Path) -> Path | None:
        """The running VM's payload disk, when it was launched with one."""
        path = vm_dir / PAYLOAD_NAME
        return path if path.is_file() else None

    def disk_base(self, vm_dir: Path) -> Path | None:
        return qcow2.backing_file(self.disk_path(vm_dir))

    async def resize_disk(self, spec: VmSpec) -> None:
        await arun(["qemu-img", "resize", "-q", self.disk_path(spec.vm_dir), f"{spec.disk_mib}M"],
                   what="qemu-img resize")

    async def checkpoint(self, handles: VmHandles | None, vm_dir: Path, base: Path,
                         state: Path | None, *, for_sharing: bool = False) -> None:
        disk = self.disk_path(vm_dir)
        if handles is None:
            await checkpoint.copy_layer(disk, base)
        else:
            await checkpoint.live(handles.control_socket, disk, base, state,
                                  for_sharing=for_sharing)

    def backing_file(self, disk: Path) -> Path | None:
        return qcow2.backing_file(disk)

    async def share_memory(self, spec: VmSpec, ram: Path, state: Path) -> None:
        assert spec.incoming is not None
        handles = await self._launch(dataclasses.replace(spec, memory_file=ram), share_ram=True)
        try:
            await checkpoint.share(handles.control_socket, spec.incoming, state,
                                   lambda: self.is_alive(handles))
        finally:
            await self.kill(handles)

    async def start(self, spec: VmSpec) -> VmHandles:
        return await self._launch(spec)

    async def _launch(self, spec: VmSpec, *, share_ram: bool = False) -> VmHandles:
        pidfile = spec.vm_dir / "qemu.pid"
        for stale in (qmp_path(spec), spec.agent_socket, pidfile):
            stale.unlink(missing_ok=True)
        await asyncio.to_thread(_make_payload, spec.vm_dir / PAYLOAD_NAME)
        argv = qemu_argv(spec, self.disk_path(spec.vm_dir), qmp_path(spec), pidfile,
                         share_ram=share_ram)
        (spec.vm_dir / "qemu.argv").write_text("\n".join(argv) + "\n")
        isolated = spec.network is not None and spec.network.isolated
        if isolated:
            slirp.write_resolv_conf(spec.vm_dir, spec.network.firewall if spec.network else "")
            forward.record_ns_ports(spec.vm_dir, spec.network)
        # QEMU alone holds the write end: slirp4netns sees EOF and exits when QEMU ends.
        exit_r, exit_w = os.pipe() if isolated else (-1, -1)
        try:
            # -daemonize: QEMU outlives the daemon (re-adopted on restart), never our zombie.
            await arun(argv, what="qemu", timeout=60, pass_fds=(exit_w,) if isolated else ())
        except BaseException:
            _close(exit_r)
            raise
        finally:
            _close(exit_w)
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError) as exc:
            _close(exit_r)
            raise OperationFailed(f"qemu started but wrote no pid file {pidfile}") from exc
        extra = {"incoming": str(spec.incoming)} if spec.incoming else {}
        handles = VmHandles("qemu", pid, str(qmp_path(spec)), str(spec.agent_socket), extra)
        if isolated:
            await self._attach_slirp(spec.vm_dir, handles, exit_r)
        return handles

    async def _attach_slirp(self, vm_dir: Path, handles: VmHandles, exit_r: int) -> None:
        """Give QEMU's namespace its way out; a QEMU without it is killed, not left running."""
        try:
            handles.extra[SLIRP_PID] = str(await slirp.start(vm_dir, handles.pid, exit_r))
        except BaseException:
            await self.kill(handles)
            raise
        finally:
            os.close(exit_r)

    async def open_agent(self, handles: VmHandles,
                         timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The agent's virtio-serial port, exposed by QEMU as a Unix socket."""
        try:
            return await asyncio.wait_for(
                asyncio.open_unix_connection(handles.agent_socket), timeout)
        except (TimeoutError, OSError) as e:
            raise Unavailable(f"cannot connect to the guest agent at {handles.agent_socket}: "
                              f"{e}") from None

    def runtime_files(self, vm_dir: Path) -> tuple[Path, ...]:
        names = ("qmp.sock", "agent.sock", "qemu.pid", forward.NS_PORTS, PAYLOAD_NAME,
                 *slirp.RUNTIME_FILES)
        return tuple(vm_dir / name for name in names)

    def check_forwarding(self, isolated: bool) -> None:
        if isolated:
            slirp.require()

    async def add_forward(self, handles: VmHandles, fwd: HostForward, isolated: bool) -> None:
        await forward.add(functools.partial(self.qmp, handles), _vm_dir(handles), fwd, isolated)

    async def restore_forwards(self, handles: VmHandles, fwds: tuple[HostForward, ...],
                               isolated: bool) -> None:
        await forward.restore(_vm_dir(handles), fwds, isolated)

    def is_alive(self, handles: VmHandles) -> bool:
        return pid_alive(handles.pid, handles.control_socket)

    async def request_shutdown(self, handles: VmHandles) -> None:
        """QMP `quit`: ends QEMU at once (the guest was asked nicely before)."""
        await self.qmp(handles, "quit")

    async def kill(self, handles: VmHandles) -> None:
        kill_pid(handles.pid, handles.control_socket)
        await wait_gone(handles.pid, handles.control_socket, 5.0)
        await _stop_slirp(handles)

    async def wait_exit(self, handles: VmHandles, timeout: float) -> bool:
        gone = await wait_gone(handles.pid, handles.control_socket, timeout)
        if gone:
            await _stop_slirp(handles)
        return gone

    async def qmp(self, handles: VmHandles, command: str, **args: object) -> object:
        from qemu.qmp import QMPClient

        client = QMPClient(f"banger-{handles.pid}")
        try:
            await asyncio.wait_for(client.connect(handles.control_socket), 5.0)
            return await asyncio.wait_for(client.execute(command, args or None), 10.0)
        except (OSError, TimeoutError) as exc:
            raise OperationFailed(f"QMP {command} failed: {exc}") from exc
        except Exception as exc:  # qemu.qmp raises its own hierarchy (ConnectError, ExecuteError...)
            if command == "quit":
                return None  # QEMU exits while answering `quit`
            raise OperationFailed(f"QMP {command} failed: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                await client.disconnect()
