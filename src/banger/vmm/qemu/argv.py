"""The QEMU command line for a VM spec (pure function: easy to read and to test)."""

from __future__ import annotations

from pathlib import Path

from banger.guest import AGENT_PORT_NAME, INIT_PATH
from banger.vmm.base import VmSpec

QEMU = "qemu-system-x86_64"


def host_tsc_khz() -> int | None:
    """The host's TSC rate; under TCG the guest TSC ticks at it (QEMU reads the host TSC)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError, IndexError):
        pass
    return None


def kernel_cmdline(spec: VmSpec) -> str:
    args = [
        "console=ttyS0",
        "root=/dev/vda",
        "rootfstype=ext4",
        "rw",
        f"init={INIT_PATH}",
        f"banger.hostname={spec.name}",
        f"banger.vm_id={spec.vm_id}",
        "panic=-1",  # a guest panic ends QEMU (-no-reboot) instead of hanging the VM
        "quiet",
        "loglevel=4",
        *spec.kernel_args,
    ]
    khz = host_tsc_khz()
    if khz and spec.accel != "kvm":
        # Early TSC calibration against the emulated PIT sometimes hangs under TCG; skip it.
        args.append(f"tsc_early_khz={khz}")
    return " ".join(args)


def qemu_argv(spec: VmSpec, disk: Path, qmp_socket: Path, pidfile: Path) -> list[str]:
    accel = "kvm" if spec.accel == "kvm" else "tcg,thread=multi"
    return [
        QEMU,
        "-name", f"banger-{spec.name},debug-threads=on",
        "-M", "microvm,pit=on,pic=on,rtc=on",
        "-accel", accel,
        "-cpu", "host" if spec.accel == "kvm" else "max",
        "-smp", str(spec.vcpu),
        "-m", f"{spec.memory_mib}M",
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-no-reboot",
        "-chardev", f"file,id=console,path={spec.console_log},append=on",
        "-serial", "chardev:console",
        "-kernel", str(spec.boot.kernel),
        "-initrd", str(spec.boot.initrd),
        "-append", kernel_cmdline(spec),
        "-drive", f"id=root,file={disk},format=qcow2,if=none,discard=unmap,cache=writeback",
        "-device", "virtio-blk-device,drive=root",
        "-device", "virtio-rng-device",
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=agent,path={spec.agent_socket},server=on,wait=off",
        "-device", f"virtserialport,chardev=agent,name={AGENT_PORT_NAME}",
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        "-pidfile", str(pidfile),
        "-daemonize",
    ]
