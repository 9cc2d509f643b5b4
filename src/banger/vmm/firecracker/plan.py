"""What Firecracker is told, as pure functions: file layout, launch argv, API boot sequence.

With the jailer, Firecracker runs chrooted: every path it is given is relative to the chroot,
so each file has a host path (where banger puts it) and an API path (what Firecracker sees).
Without it, Firecracker runs in the VM dir and the paths a snapshot records (drive, vsock) are
relative to it, so one template's state restores into many VMs, each onto its own files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from banger.errors import InvalidArgument
from banger.vmm.base import VmSpec
from banger.vmm.cmdline import kernel_cmdline
from banger.vmm.firecracker.api import ApiCall

AGENT_VSOCK_PORT = 5252
GUEST_CID = 3  # every VM has its own vsock device, so every guest can use the first free CID
MAX_VCPU = 32  # MachineConfiguration.vcpu_count maximum in Firecracker's API
ROOT_DRIVE = "rootfs"
GUEST_IFACE = "eth0"
# reboot=k: a guest reboot (also what panic=-1 does) ends Firecracker through its i8042 device.
BACKEND_ARGS = ["reboot=k", "pci=off", f"banger.agent=vsock:{AGENT_VSOCK_PORT}"]
JAIL_FILES = {"kernel": "vmlinux", "initrd": "initrd.img", "disk": "root.ext4",
              "memory": "state.mem", "vmstate": "state.vmstate"}
VMSTATE_SUFFIX = ".vmstate"


def disk_path(vm_dir: Path) -> Path:
    return vm_dir / "root.ext4"


def state_files(dest: Path) -> tuple[Path, Path]:
    """A saved state is two files: guest memory at dest (the name the core checks and sizes),
    device state beside it."""
    return dest, dest.with_name(dest.name + VMSTATE_SUFFIX)


def jail_id(spec: VmSpec) -> str:
    """The jailer's --id (alphanumerics and hyphens, at most 64) and Firecracker's --id."""
    return f"banger-{spec.vm_id}"


@dataclass(frozen=True)
class Jail:
    binary: str
    chroot_base: Path
    exec_name: str  # last component of the firecracker binary: the jailer names dirs after it
    uid: int
    gid: int


@dataclass(frozen=True)
class Layout:
    """Host and API paths of one VM's Firecracker files."""

    spec: VmSpec
    jail: Jail | None = None

    @property
    def chroot(self) -> Path | None:
        if self.jail is None:
            return None
        return self.jail.chroot_base / self.jail.exec_name / jail_id(self.spec) / "root"

    def _runtime(self, name: str) -> str:
        """API path of a file Firecracker creates or writes (sockets, log, metrics)."""
        return f"/{name}" if self.jail else str(self.spec.vm_dir / name)

    def host(self, api_path: str) -> Path:
        chroot = self.chroot
        return chroot / api_path.lstrip("/") if chroot else self.spec.vm_dir / api_path

    @property
    def cwd(self) -> Path:
        """Where Firecracker runs (the jailer moves it into its chroot itself)."""
        return self.spec.vm_dir

    def _snapshotted(self, name: str) -> str:
        """API path of a file a snapshot records: the same for every VM (cwd- or chroot-relative)."""
        return f"/{name}" if self.jail else name

    @property
    def api_socket(self) -> str:
        return self._runtime("api.sock")

    @property
    def vsock(self) -> str:
        return self._snapshotted("vsock.sock")

    @property
    def log(self) -> str:
        return self._runtime("firecracker.log")

    @property
    def metrics(self) -> str:
        return self._runtime("firecracker.metrics")

    def _input(self, role: str, host_path: Path) -> str:
        return f"/{JAIL_FILES[role]}" if self.jail else str(host_path)

    @property
    def kernel(self) -> str:
        vmlinux = self.spec.boot.vmlinux
        if vmlinux is None:
            raise InvalidArgument("the kernel has no ELF vmlinux, which firecracker needs; "
                                  "delete and pull the kernel again or use vmm = qemu")
        return self._input("kernel", vmlinux)

    @property
    def initrd(self) -> str:
        return self._input("initrd", self.spec.boot.initrd)

    @property
    def disk(self) -> str:
        return self._snapshotted(JAIL_FILES["disk"])

    def _state(self, role: str) -> str:
        if self.spec.incoming is None:
            raise InvalidArgument("no saved state to restore")
        memory, vmstate = state_files(self.spec.incoming)
        return self._input(role, memory if role == "memory" else vmstate)

    @property
    def state_memory(self) -> str:
        return self._state("memory")

    @property
    def state_vmstate(self) -> str:
        return self._state("vmstate")

    def jail_inputs(self) -> dict[Path, Path]:
        """Files to link into the chroot: {source on the host: destination in the chroot}."""
        if self.jail is None:
            return {}
        inputs = {disk_path(self.spec.vm_dir): self.host(self.disk)}
        if self.spec.incoming is not None:  # a restore needs no kernel: it is in the memory
            memory, vmstate = state_files(self.spec.incoming)
            return {**inputs, memory: self.host(self.state_memory),
                    vmstate: self.host(self.state_vmstate)}
        return {**inputs, Path(self.spec.boot.vmlinux or ""): self.host(self.kernel),
                self.spec.boot.initrd: self.host(self.initrd)}


def launch_argv(layout: Layout, firecracker: str) -> list[str]:
    spec = layout.spec
    fc_args = ["--api-sock", layout.api_socket]
    if layout.jail is None:
        return [firecracker, *fc_args, "--id", jail_id(spec)]
    j = layout.jail
    return [j.binary, "--id", jail_id(spec), "--exec-file", firecracker,
            "--uid", str(j.uid), "--gid", str(j.gid),
            "--chroot-base-dir", str(j.chroot_base), "--", *fc_args]


def check_shape(spec: VmSpec) -> None:
    """Refuse what Firecracker cannot run, in one line, before anything is made."""
    if not 1 <= spec.vcpu <= MAX_VCPU:
        raise InvalidArgument(f"firecracker runs 1 to {MAX_VCPU} vcpus, not {spec.vcpu}; "
                              "use a smaller --vcpu")
    if spec.network is not None and spec.network.mode != "tap":
        raise InvalidArgument("firecracker has no user-mode networking; set network_mode = tap "
                              "(a normal user needs `sudo banger system install` once) or use "
                              "vmm = qemu")
    if spec.network is not None and not spec.network.tap:
        raise InvalidArgument("tap networking needs a tap device name for firecracker")


def boot_args(spec: VmSpec) -> str:
    # Firecracker always runs on KVM: the TCG-only TSC workaround does not apply.
    return kernel_cmdline(dataclasses.replace(spec, accel="kvm"), BACKEND_ARGS)


def observability_calls(layout: Layout) -> list[ApiCall]:
    """Logger and metrics: first on a boot, and the only calls allowed before a snapshot load."""
    return [
        ApiCall("PUT", "/logger", {"log_path": layout.log, "level": "Warning",
                                   "show_level": True, "show_log_origin": False}),
        ApiCall("PUT", "/metrics", {"metrics_path": layout.metrics}),
    ]


def boot_calls(layout: Layout) -> list[ApiCall]:
    """The API requests that boot a VM, in Firecracker's documented order."""
    spec = layout.spec
    check_shape(spec)
    calls = [
        *observability_calls(layout),
        ApiCall("PUT", "/machine-config", {"vcpu_count": spec.vcpu,
                                           "mem_size_mib": spec.memory_mib, "smt": False}),
        ApiCall("PUT", "/boot-source", {"kernel_image_path": layout.kernel,
                                        "initrd_path": layout.initrd,
                                        "boot_args": boot_args(spec)}),
        ApiCall("PUT", f"/drives/{ROOT_DRIVE}", {"drive_id": ROOT_DRIVE,
                                                 "path_on_host": layout.disk,
                                                 "is_root_device": True, "is_read_only": False,
                                                 "cache_type": "Writeback"}),
    ]
    if spec.network is not None:
        iface: dict[str, object] = {"iface_id": GUEST_IFACE, "host_dev_name": spec.network.tap}
        if spec.network.mac:
            iface["guest_mac"] = spec.network.mac
        calls.append(ApiCall("PUT", f"/network-interfaces/{GUEST_IFACE}", iface))
    calls += [
        ApiCall("PUT", "/vsock", {"guest_cid": GUEST_CID, "uds_path": layout.vsock}),
        ApiCall("PUT", "/actions", {"action_type": "InstanceStart"}),
    ]
    return calls
