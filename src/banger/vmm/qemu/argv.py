"""The QEMU command line for a VM spec (pure function: easy to read and to test)."""

from __future__ import annotations

from pathlib import Path

from banger.guest import AGENT_PORT_NAME
from banger.vmm.base import VmSpec
from banger.vmm.cmdline import kernel_cmdline
from banger.vmm.qemu.snapshot import incoming_uri

__all__ = ["QEMU", "kernel_cmdline", "qemu_argv"]

QEMU = "qemu-system-x86_64"


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
        *(["-incoming", incoming_uri(spec.incoming)] if spec.incoming else []),
    ]
