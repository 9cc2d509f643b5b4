"""The VMM backend interface the daemon uses. Backends: qemu and firecracker.

Small on purpose, like Lima's driver split: lifecycle is required; snapshots (Snapshotter) and
host port forwards into a user-mode network (PortForwarder) are optional protocols a backend may
also implement.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from banger.errors import NotRunning


@dataclass(frozen=True)
class BootArtifacts:
    kernel: Path  # bzImage for qemu
    initrd: Path
    rootfs: Path  # the image's read-only rootfs.ext4
    vmlinux: Path | None = None  # ELF, for firecracker


@dataclass(frozen=True)
class HostForward:
    """host:host_port on the host reaches guest_port in the guest (user-mode networking)."""

    host: str
    host_port: int
    guest_port: int


@dataclass(frozen=True)
class NetworkAttachment:
    """How the VM reaches the network: a host tap device, or the VMM's user-mode stack."""

    mode: str  # "tap" | "user"
    tap: str = ""
    mac: str = ""
    netns: str = ""  # tap mode: the tap (and so the VMM) lives in this network namespace
    hostfwds: tuple[HostForward, ...] = ()  # user mode: forwards set up at launch
    restrict: bool = True  # user mode: no outside access (off with --nat)
    # user mode with --nat or egress rules: the VMM's network stack must not reach the host's
    # loopback (QEMU: its own network namespace, out through slirp4netns).
    isolated: bool = False
    # isolated with egress rules: an nft file loaded in that namespace before the VMM starts
    firewall: str = ""


@dataclass(frozen=True)
class VmSpec:
    vm_id: str
    name: str
    vcpu: int
    memory_mib: int
    disk_mib: int
    vm_dir: Path
    boot: BootArtifacts
    accel: str = "tcg"
    kernel_args: tuple[str, ...] = ()
    network: NetworkAttachment | None = None
    incoming: Path | None = None  # restore this saved memory state instead of booting
    # Back guest RAM with this file: written through while a template boots (no incoming),
    # mapped copy-on-write when restoring from that template. Backends may ignore it.
    memory_file: Path | None = None

    @property
    def console_log(self) -> Path:
        return self.vm_dir / "console.log"

    @property
    def agent_socket(self) -> Path:
        return self.vm_dir / "agent.sock"


@dataclass
class VmHandles:
    """Transient handles of a running VM, kept in <vm_dir>/handles.json (never in SQLite)."""

    backend: str
    pid: int
    control_socket: str
    agent_socket: str
    extra: dict[str, str] = field(default_factory=dict)

    def save(self, vm_dir: Path) -> None:
        tmp = vm_dir / "handles.json.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(vm_dir / "handles.json")

    @staticmethod
    def load(vm_dir: Path) -> VmHandles | None:
        try:
            data = json.loads((vm_dir / "handles.json").read_text())
            return VmHandles(**data)
        except (OSError, ValueError, TypeError):
            return None

    @staticmethod
    def require(vm_dir: Path, name: str) -> VmHandles:
        """The running VM's handles, or NotRunning saying how to get a VMM back."""
        handles = VmHandles.load(vm_dir)
        if handles is None:
            raise NotRunning(f"VM {name} has no running VMM; restart it with "
                             f"`banger vm restart {name}`")
        return handles

    @staticmethod
    def clear(vm_dir: Path) -> None:
        (vm_dir / "handles.json").unlink(missing_ok=True)


class Backend(Protocol):
    name: str
    reason: str  # why this backend was selected (shown by doctor and `vm show`)
    user_network: bool  # has a user-mode (unprivileged) network stack

    def disk_path(self, vm_dir: Path) -> Path:
        """The VM's root disk file."""

    async def prepare_disk(self, spec: VmSpec) -> None:
        """Create the VM's root disk if missing; it persists across stop/start."""

    async def start(self, spec: VmSpec) -> VmHandles:
        """Launch the VMM; returns once the process runs (not once the guest is ready)."""

    def is_alive(self, handles: VmHandles) -> bool: ...

    async def request_shutdown(self, handles: VmHandles) -> None:
        """Ask the VMM to stop the guest (ACPI/quit); the guest agent is tried before this."""

    async def kill(self, handles: VmHandles) -> None: ...

    async def wait_exit(self, handles: VmHandles, timeout: float) -> bool:
        """True when the VMM process is gone within the timeout."""

    async def resize_disk(self, spec: VmSpec) -> None:
        """Grow the root disk to spec.disk_mib (the guest grows its filesystem on boot)."""

    async def open_agent(self, handles: VmHandles,
                         timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A byte stream to the guest agent (raises Unavailable while it does not answer)."""
        ...

    def runtime_files(self, vm_dir: Path) -> tuple[Path, ...]:
        """The per-run files (sockets, pid files) a stopped VM leaves; cleanup removes them."""


@runtime_checkable
class Snapshotter(Protocol):
    """Optional: backends that can save a running VM's memory and device state and restore it.

    A restore launches the VMM with `VmSpec.incoming` set; the disk must be in the state it had
    when the snapshot was taken.
    """

    async def save_state(self, handles: VmHandles, dest: Path) -> None:
        """Pause the guest and write its state to dest (atomically); the VMM stays paused.
        On failure nothing is left at dest and the guest runs again."""

    async def resume(self, handles: VmHandles, timeout: float) -> None:
        """Wait for an incoming restore to finish loading, then run the guest."""

    async def prepare_disk_on(self, spec: VmSpec, base: Path, size_mib: int | None) -> None:
        """Create the VM's disk as a copy-on-write layer on a frozen base disk."""

    async def grow_live(self, handles: VmHandles, size_mib: int) -> None:
        """Grow a running VM's root disk; the guest sees the new size at once."""

    def state_version(self) -> str:
        """Saved state only restores into the same VMM build: part of every template key."""

    def disk_base(self, vm_dir: Path) -> Path | None:
        """The frozen base disk the VM's disk is layered on (must outlive its template)."""

    def state_files(self, dest: Path) -> tuple[Path, ...]:
        """Every file a saved state at dest consists of (to move or delete them together)."""


@runtime_checkable
class Checkpointer(Protocol):
    """Optional: backends that can checkpoint a VM (a frozen copy of its disk and its memory at
    one paused instant) and fork it (vms/snapshots.py, vms/fork.py)."""

    async def checkpoint(self, handles: VmHandles | None, vm_dir: Path, base: Path,
                         state: Path | None, *, for_sharing: bool = False) -> None:
        """Write a read-only copy of the VM's disk to base (other disks are layered on it);
        when running (handles), pause first, save memory and device state to state (when
        given) and resume. for_sharing: state is for share_memory, not for a restore.
        On failure neither base nor state exists and the VM runs as before."""

    def backing_file(self, disk: Path) -> Path | None:
        """The disk file this disk is a layer on, if any."""

    async def share_memory(self, spec: VmSpec, ram: Path, state: Path) -> None:
        """Load spec.incoming (a checkpoint saved for_sharing) into the RAM file ram, and save
        the device state alone to state: what restores with memory_file=ram map copy-on-write."""


@runtime_checkable
class PayloadDisk(Protocol):
    """Optional: backends that give each VM a second, empty disk for bulk copies, which the
    host fills or reads as a file while the guest reads or writes it as a block device."""

    def payload_file(self, vm_dir: Path) -> Path | None:
        """The host file behind the running VM's payload disk (None: it has none)."""


@runtime_checkable
class Pauser(Protocol):
    """Optional: backends that can freeze a running guest's vCPUs and let them run again (the
    warm pool keeps restored clones paused, so they cost memory but no CPU)."""

    async def pause(self, handles: VmHandles) -> None: ...

    async def unpause(self, handles: VmHandles) -> None: ...


@runtime_checkable
class PortForwarder(Protocol):
    """Optional: backends with a user-mode network stack whose host forwards can grow while the
    VM runs. `isolated` is NetworkAttachment.isolated of the VM's launch."""

    def check_forwarding(self, isolated: bool) -> None:
        """Refuse early (one line saying what to install) what this host lacks for such a VM."""

    async def add_forward(self, handles: VmHandles, fwd: HostForward, isolated: bool) -> None:
        """One more host forward into the running VM."""

    async def restore_forwards(self, handles: VmHandles, fwds: tuple[HostForward, ...],
                               isolated: bool) -> None:
        """After launch and after a daemon restart: make the host side of fwds exist again
        where it does not die with the VMM; those already there stay."""
