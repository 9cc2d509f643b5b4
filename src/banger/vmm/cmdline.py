"""The guest kernel command line shared by every backend (each adds its own few args)."""

from __future__ import annotations

from pathlib import Path

from banger.guest import INIT_PATH
from banger.vmm.base import VmSpec


def host_tsc_khz() -> int | None:
    """The host's TSC rate; under TCG the guest TSC ticks at it (QEMU reads the host TSC)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError, IndexError):
        pass
    return None


def base_kernel_args(spec: VmSpec) -> list[str]:
    """Console, root disk, banger's init wrapper and the VM's identity."""
    return [
        "console=ttyS0",
        "root=/dev/vda",
        "rootfstype=ext4",
        "rw",
        f"init={INIT_PATH}",
        f"banger.hostname={spec.name}",
        f"banger.vm_id={spec.vm_id}",
        "panic=-1",  # a guest panic reboots, which ends the VMM instead of hanging the VM
        "quiet",
        "loglevel=4",
    ]


def kernel_cmdline(spec: VmSpec, backend_args: list[str] | None = None) -> str:
    args = [*base_kernel_args(spec), *(backend_args or []), *spec.kernel_args]
    khz = host_tsc_khz()
    if khz and spec.accel != "kvm":
        # Early TSC calibration against the emulated PIT sometimes hangs under TCG; skip it.
        args.append(f"tsc_early_khz={khz}")
    return " ".join(args)
