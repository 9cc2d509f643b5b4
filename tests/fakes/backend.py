"""A VMM backend that runs in-process, for unit tests of VmManager, StartPath and the monitor.

Each "VM" is one host process (tests/fakes/guest.py) running banger's real guest agent on the
VM dir's agent.sock, so the daemon's real AgentClient talks to it; its stderr is the console
log. The backend implements Backend, Snapshotter and PortForwarder, keeps a call log and can be
told to fail at a chosen step. What it cannot show: anything of a real kernel, disk or network
(saved state is a small JSON file, disks are text files, published ports are merely held).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from banger.errors import OperationFailed, Unavailable
from banger.net.forward import PUBLISH_HOST
from banger.vmm.base import HostForward, VmHandles, VmSpec

GUEST = Path(__file__).with_name("guest.py")
STATE_MAGIC = "fake-vm-state"
# Steps of the VMM that fail(step) can break; guest faults are passed to the next VM process.
VMM_STEPS = ("prepare_disk", "start", "restore", "resume", "save_state", "prepare_disk_on",
             "request_shutdown", "open_agent", "add_forward", "restore_forwards", "unpause",
             "checkpoint", "share_memory")
GUEST_FAULTS = ("panic", "hang", "configure")


class FakeMachine:
    """The host's process table for fake VMs; shared by the backends of successive "daemons"."""

    def __init__(self) -> None:
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, argv: list[str], console: Path) -> int:
        with console.open("ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=log, start_new_session=True)
        self.processes[proc.pid] = proc
        return proc.pid

    def alive(self, pid: int) -> bool:
        proc = self.processes.get(pid)
        return proc is not None and proc.poll() is None

    def running(self) -> list[int]:
        """The fake VMs' processes that still run."""
        return [pid for pid in self.processes if self.alive(pid)]

    def signal(self, pid: int, signum: int) -> None:
        if self.alive(pid):
            os.kill(pid, signum)

    def shutdown(self) -> None:
        for pid in list(self.processes):
            self.signal(pid, signal.SIGKILL)
        for proc in self.processes.values():
            proc.wait(10)


@dataclass
class FakeBackend:
    machine: FakeMachine
    name: str = "fake"
    reason: str = "unit tests"
    user_network: bool = True
    calls: list[tuple[str, str]] = field(default_factory=list)  # (step, VM name), in order
    faults: dict[str, str] = field(default_factory=dict)  # step -> error message (one use)
    guest_faults: list[str] = field(default_factory=list)  # for the next VM processes, in order

    def fail(self, step: str, message: str = "") -> None:
        """Make the next `step` fail: a VMM step raises, a guest fault goes to the next VM."""
        if step in GUEST_FAULTS:
            self.guest_faults.append(step)
        elif step in VMM_STEPS:
            self.faults[step] = message or f"fake {step} failed"
        else:
            raise ValueError(f"unknown step {step!r}")

    def steps(self, vm: str, *only: str) -> list[str]:
        """The steps this backend ran for one VM, in order (only those named, if any)."""
        return [step for step, name in self.calls if name == vm and (not only or step in only)]

    def _step(self, step: str, vm: str) -> None:
        self.calls.append((step, vm))
        message = self.faults.pop(step, None)
        if message is not None:
            if step == "open_agent":
                raise Unavailable(message)
            raise OperationFailed(message)

    # ---- Backend

    def disk_path(self, vm_dir: Path) -> Path:
        return vm_dir / "disk.img"

    async def prepare_disk(self, spec: VmSpec) -> None:
        self._step("prepare_disk", spec.name)
        disk = self.disk_path(spec.vm_dir)
        if not disk.exists():
            if not spec.boot.rootfs.is_file():
                raise OperationFailed(f"no image rootfs at {spec.boot.rootfs}")
            disk.write_text(json.dumps({"copy_of": str(spec.boot.rootfs), "mib": spec.disk_mib}))

    async def start(self, spec: VmSpec) -> VmHandles:
        self._step("restore" if spec.incoming else "start", spec.name)
        argv = [sys.executable, str(GUEST), "--unix", str(spec.agent_socket),
                "--root", str(spec.vm_dir / "guest-root")]
        if spec.network is not None and spec.network.mode == "user":
            # Published ports only: every test home's first VM gets the same loopback address,
            # and real VMs on this host forward their ssh from it too.
            argv += [arg for fwd in spec.network.hostfwds if fwd.host == PUBLISH_HOST
                     for arg in ("--listen", f"{fwd.host}:{fwd.host_port}")]
        if self.guest_faults:
            argv += ["--fault", self.guest_faults.pop(0)]
        if spec.memory_file is not None and spec.incoming is None:
            spec.memory_file.write_bytes(b"\0" * 4096)  # the template's RAM, written through
        pid = self.machine.spawn(argv, spec.console_log)
        (spec.vm_dir / "fake.pid").write_text(f"{pid}\n")
        return VmHandles(self.name, pid, "", str(spec.agent_socket),
                         {"name": spec.name, "vm_dir": str(spec.vm_dir),
                          "incoming": str(spec.incoming or "")})

    def is_alive(self, handles: VmHandles) -> bool:
        return self.machine.alive(handles.pid)

    async def request_shutdown(self, handles: VmHandles) -> None:
        self._step("request_shutdown", handles.extra["name"])
        self.machine.signal(handles.pid, signal.SIGTERM)

    async def kill(self, handles: VmHandles) -> None:
        self.calls.append(("kill", handles.extra["name"]))
        self.machine.signal(handles.pid, signal.SIGKILL)
        await self.wait_exit(handles, 10.0)

    async def wait_exit(self, handles: VmHandles, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.is_alive(handles):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def resize_disk(self, spec: VmSpec) -> None:
        self._step("resize_disk", spec.name)
        disk = self.disk_path(spec.vm_dir)
        disk.write_text(json.dumps({**json.loads(disk.read_text()), "mib": spec.disk_mib}))

    async def open_agent(self, handles: VmHandles,
                         timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self._step("open_agent", handles.extra["name"])
        try:
            return await asyncio.wait_for(
                asyncio.open_unix_connection(handles.agent_socket), timeout)
        except (TimeoutError, OSError) as e:
            raise Unavailable(f"cannot connect to the guest agent: {e}") from None

    def runtime_files(self, vm_dir: Path) -> tuple[Path, ...]:
        return (vm_dir / "agent.sock", vm_dir / "fake.pid")

    # ---- Snapshotter

    async def save_state(self, handles: VmHandles, dest: Path) -> None:
        self._step("save_state", handles.extra["name"])
        self.machine.signal(handles.pid, signal.SIGSTOP)  # paused, as a saving VMM leaves it
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_text(json.dumps({"magic": STATE_MAGIC, "vm": handles.extra["name"]}))
        tmp.replace(dest)

    async def resume(self, handles: VmHandles, timeout: float) -> None:
        self._step("resume", handles.extra["name"])
        incoming = Path(handles.extra["incoming"])
        try:
            magic = json.loads(incoming.read_text()).get("magic")
        except (OSError, ValueError, AttributeError) as e:
            raise OperationFailed(f"fake: cannot load {incoming.name}: {e}") from None
        if magic != STATE_MAGIC:
            raise OperationFailed(f"fake: {incoming.name} is not a saved state")

    async def prepare_disk_on(self, spec: VmSpec, base: Path, size_mib: int | None) -> None:
        self._step("prepare_disk_on", spec.name)
        if not base.is_file():
            raise OperationFailed(f"no base disk {base}")
        self.disk_path(spec.vm_dir).write_text(json.dumps({"base": str(base),
                                                           "mib": size_mib or spec.disk_mib}))

    async def grow_live(self, handles: VmHandles, size_mib: int) -> None:
        self._step("grow_live", handles.extra["name"])

    def state_version(self) -> str:
        return "fake-1"

    def disk_base(self, vm_dir: Path) -> Path | None:
        try:
            base = json.loads(self.disk_path(vm_dir).read_text()).get("base")
        except (OSError, ValueError):
            return None
        return Path(base) if base else None

    def state_files(self, dest: Path) -> tuple[Path, ...]:
        return (dest,)

    # ---- Checkpointer

    async def checkpoint(self, handles: VmHandles | None, vm_dir: Path, base: Path,
                         state: Path | None, *, for_sharing: bool = False) -> None:
        self._step("checkpoint", handles.extra["name"] if handles else vm_dir.name)
        if handles is not None:
            self.machine.signal(handles.pid, signal.SIGSTOP)
        try:
            shutil.copyfile(self.disk_path(vm_dir), base)
            if handles is not None and state is not None:
                state.write_text(json.dumps({"magic": STATE_MAGIC, "vm": handles.extra["name"],
                                             "full": for_sharing}))
        finally:
            if handles is not None:
                self.machine.signal(handles.pid, signal.SIGCONT)

    def backing_file(self, disk: Path) -> Path | None:
        try:
            base = json.loads(disk.read_text()).get("base")
        except (OSError, ValueError, AttributeError):
            return None
        return Path(base) if base else None

    async def share_memory(self, spec: VmSpec, ram: Path, state: Path) -> None:
        self._step("share_memory", spec.name)
        assert spec.incoming is not None and json.loads(spec.incoming.read_text())["full"]
        ram.write_bytes(b"\0" * 4096)
        state.write_text(json.dumps({"magic": STATE_MAGIC, "vm": spec.name}))

    # ---- Pauser

    async def pause(self, handles: VmHandles) -> None:
        self._step("pause", handles.extra["name"])
        self.machine.signal(handles.pid, signal.SIGSTOP)

    async def unpause(self, handles: VmHandles) -> None:
        self._step("unpause", handles.extra["name"])
        self.machine.signal(handles.pid, signal.SIGCONT)

    # ---- PortForwarder

    def check_forwarding(self, isolated: bool) -> None:
        """Nothing to install: the fake needs no slirp4netns."""

    async def add_forward(self, handles: VmHandles, fwd: HostForward, isolated: bool) -> None:
        self._step("add_forward", handles.extra["name"])

    async def restore_forwards(self, handles: VmHandles, fwds: tuple[HostForward, ...],
                               isolated: bool) -> None:
        self._step("restore_forwards", handles.extra["name"])
