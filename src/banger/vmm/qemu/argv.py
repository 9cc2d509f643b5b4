"""The QEMU command line for a VM spec (pure function: easy to read and to test)."""

from __future__ import annotations

import os
from pathlib import Path

from banger.guest import AGENT_PORT_NAME
from banger.vmm.base import NetworkAttachment, VmSpec
from banger.vmm.cmdline import kernel_cmdline
from banger.vmm.qemu.forward import launch_rules
from banger.vmm.qemu.slirp import namespace_argv

__all__ = ["PAYLOAD_NAME", "PAYLOAD_SERIAL", "QEMU", "kernel_cmdline", "qemu_argv"]

QEMU = "qemu-system-x86_64"
PAYLOAD_NAME = "payload.img"
PAYLOAD_SERIAL = "banger-payload"
# 0: QEMU's default. Measured (bench/pool.py, docs/fast-start.md): an idle clone's cache holds
# ~22 MiB; capping it at 16 MiB saved 6 MiB of PSS but made starts 1.5-2.5x slower (flushes).
TCG_TB_MIB = 0


def net_args(net: NetworkAttachment | None) -> list[str]:
    if net is None:
        return []
    if net.mode == "tap":
        netdev = f"tap,id=net0,ifname={net.tap},script=no,downscript=no"
    else:
        netdev = ",".join(["user,id=net0", f"restrict={'on' if net.restrict else 'off'}",
                           *(["ipv6=off"] if net.firewall else []),
                           *(f"hostfwd={rule}" for rule in launch_rules(net))])
    mac = f",mac={net.mac}" if net.mac else ""
    return ["-netdev", netdev, "-device", f"virtio-net-device,netdev=net0{mac}"]


def namespace_prefix(spec: VmSpec) -> list[str]:
    net = spec.network
    if net is None:
        return []
    if net.isolated:  # its own namespace: the guest's 10.0.2.2 is that namespace's loopback
        return namespace_argv(spec.vm_dir, net.firewall)
    # The tap lives in the configured netns, so QEMU must be started inside it to open it.
    return ["ip", "netns", "exec", net.netns] if net.netns else []


def memory_args(spec: VmSpec, share_ram: bool = False) -> list[str]:
    """RAM is always the backend object mem0, so saved states load whatever backs it.
    share_ram: a restore that writes the loaded RAM into memory_file (a fork's shared RAM)."""
    size = f"size={spec.memory_mib}M"
    if spec.memory_file is None:
        backend = f"memory-backend-ram,id=mem0,{size}"
    else:  # a template's RAM: shared while it boots, a private copy-on-write map in each clone
        share = "off" if spec.incoming and not share_ram else "on"
        backend = f"memory-backend-file,id=mem0,{size},mem-path={spec.memory_file},share={share}"
    return ["-object", backend]


def tcg_accel() -> str:
    """TCG with a capped translation cache: QEMU reserves 1 GiB for it by default and a VM's
    translated code keeps what it touched resident (bench/pool.py measures the cap's effect).
    BANGER_TCG_TB_MIB overrides the cap (0: QEMU's default), for benchmarks."""
    tb_mib = os.environ.get("BANGER_TCG_TB_MIB", str(TCG_TB_MIB))
    size = f",tb-size={int(tb_mib)}" if tb_mib.isdigit() and int(tb_mib) > 0 else ""
    return f"tcg,thread=multi{size}"


def qemu_argv(spec: VmSpec, disk: Path, qmp_socket: Path, pidfile: Path, *,
              share_ram: bool = False) -> list[str]:
    accel = "kvm" if spec.accel == "kvm" else tcg_accel()
    return [
        *namespace_prefix(spec),
        QEMU,
        "-name", f"banger-{spec.name},debug-threads=on",
        "-M", "microvm,pit=on,pic=on,rtc=on,memory-backend=mem0",
        "-accel", accel,
        "-cpu", "host" if spec.accel == "kvm" else "max",
        "-smp", str(spec.vcpu),
        "-m", f"{spec.memory_mib}M",
        *memory_args(spec, share_ram),
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-no-reboot",
        # append=on opens it O_APPEND: after the daemon truncates it (rotation) writes go to
        # the new end instead of leaving a hole the size of the old file.
        "-chardev", f"file,id=console,path={spec.console_log},append=on",
        "-serial", "chardev:console",
        "-kernel", str(spec.boot.kernel),
        "-initrd", str(spec.boot.initrd),
        "-append", kernel_cmdline(spec),
        "-drive", f"id=root,file={disk},format=qcow2,if=none,discard=unmap,cache=writeback",
        "-device", "virtio-blk-device,drive=root",
        # Bulk copies go through this disk at the guest's disk speed (banger.transfer.payload);
        # after root, so root stays /dev/vda. The guest finds it by its serial.
        "-drive", f"id=payload,file={spec.vm_dir / PAYLOAD_NAME},format=raw,if=none,"
                  "cache=writeback,discard=unmap",
        "-device", f"virtio-blk-device,drive=payload,serial={PAYLOAD_SERIAL}",
        "-device", "virtio-rng-device",
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=agent,path={spec.agent_socket},server=on,wait=off",
        "-device", f"virtserialport,chardev=agent,name={AGENT_PORT_NAME}",
        *net_args(spec.network),
        "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        "-pidfile", str(pidfile),
        "-daemonize",
        # Deferred: the snapshot capabilities are set over QMP before the state streams in.
        *(["-incoming", "defer"] if spec.incoming else []),
    ]
