"""Checks of the host: CPU, KVM, VMM binaries, devices, tools."""

from __future__ import annotations

import platform
import re
from collections.abc import Iterator
from pathlib import Path

from banger.config import Config
from banger.doctor.report import Check
from banger.paths import Paths
from banger.runner import run, which
from banger.vmm.accel import probe_kvm

FIRECRACKER_MIN = (1, 8, 0)
APT_HINT = "install it: apt-get install {pkg} (or `make install`)"


def _version(argv: list[str], pattern: str = r"(\d+\.\d+(?:\.\d+)?)") -> str | None:
    res = run(argv, check=False, timeout=10)
    m = re.search(pattern, res.stdout + res.stderr)
    return m.group(1) if m else None


def architecture(paths: Paths, config: Config) -> Iterator[Check]:
    arch = platform.machine()
    if arch in ("x86_64", "amd64"):
        yield Check("architecture", "PASS", arch)
    else:
        yield Check("architecture", "FAIL", arch, "banger supports x86_64 hosts only")


def kvm(paths: Paths, config: Config) -> Iterator[Check]:
    probe = probe_kvm()
    if probe.usable:
        yield Check("kvm", "PASS", "/dev/kvm present and usable")
    elif probe.present:
        yield Check("kvm", "WARN", "KVM unusable for stock kernels; TCG will be used (slow): "
                    f"{probe.reason}", "run on a host with usable KVM for full speed")
    else:
        yield Check("kvm", "WARN", "no /dev/kvm; TCG will be used (slow)",
                    "load kvm_intel/kvm_amd or enable nested virtualisation")


def qemu(paths: Paths, config: Config) -> Iterator[Check]:
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils")):
        path = which(tool)
        if path is None:
            yield Check(tool, "FAIL", "not found", APT_HINT.format(pkg=pkg))
        else:
            yield Check(tool, "PASS", f"{_version([path, '--version']) or '?'} ({path})")


def firecracker(paths: Paths, config: Config) -> Iterator[Check]:
    fc = config.firecracker_bin or which("firecracker")
    if not fc or not Path(fc).exists():
        yield Check("firecracker", "WARN", "not found (the qemu backend is used)",
                    "install Firecracker >= 1.8.0 from its GitHub releases to use it")
    else:
        ver = _version([fc, "--version"])
        parsed = tuple(int(x) for x in ver.split(".")) if ver else (0,)
        if parsed < FIRECRACKER_MIN:
            yield Check("firecracker", "FAIL", f"{ver or 'unknown version'} at {fc}: older than "
                        "1.8.0, which cannot describe virtio-mmio devices over ACPI",
                        "install Firecracker >= 1.8.0")
        else:
            yield Check("firecracker", "PASS", f"{ver} ({fc})")
    jailer = config.jailer_bin or which("jailer")
    if jailer and Path(jailer).exists():
        yield Check("jailer", "PASS", jailer)
    else:
        yield Check("jailer", "WARN", "not found", "install the jailer shipped with Firecracker")


def devices(paths: Paths, config: Config) -> Iterator[Check]:
    tun = Path("/dev/net/tun")
    yield (Check("/dev/net/tun", "PASS", "present") if tun.exists() else
           Check("/dev/net/tun", "WARN", "missing: tap networking unavailable", "modprobe tun"))
    vsock = Path("/dev/vhost-vsock")
    yield (Check("/dev/vhost-vsock", "PASS", "present") if vsock.exists() else
           Check("/dev/vhost-vsock", "WARN", "missing: the agent uses virtio-serial instead",
                 "modprobe vhost_vsock (needed only by firecracker)"))


def e2fsprogs(paths: Paths, config: Config) -> Iterator[Check]:
    mkfs = which("mkfs.ext4")
    if mkfs is None:
        yield Check("e2fsprogs", "FAIL", "mkfs.ext4 not found", APT_HINT.format(pkg="e2fsprogs"))
        return
    help_text = run([mkfs, "-V"], check=False).stderr
    ver = re.search(r"(\d+\.\d+(?:\.\d+)?)", help_text)
    missing = [t for t in ("debugfs", "resize2fs", "e2fsck") if which(t) is None]
    if missing:
        yield Check("e2fsprogs", "FAIL", f"missing {', '.join(missing)}",
                    APT_HINT.format(pkg="e2fsprogs"))
    elif ver and tuple(int(x) for x in ver.group(1).split(".")[:2]) < (1, 43):
        yield Check("e2fsprogs", "FAIL", f"{ver.group(1)}: mkfs.ext4 -d needs >= 1.43",
                    "upgrade e2fsprogs")
    else:
        yield Check("e2fsprogs", "PASS", f"{ver.group(1) if ver else '?'} (mkfs.ext4 -d, debugfs, "
                    "resize2fs)")


def tools(paths: Paths, config: Config) -> Iterator[Check]:
    wanted = [
        ("skopeo", ["skopeo"], "skopeo", "WARN", "needed for OCI image pulls"),
        ("bootstrap", ["mmdebstrap", "debootstrap"], "mmdebstrap", "FAIL",
         "needed to build the default image"),
        ("firewall", ["nft", "iptables"], "nftables", "WARN", "needed for --nat"),
        ("ip", ["ip"], "iproute2", "WARN", "needed for tap networking"),
        ("zstd", ["zstd"], "zstd", "WARN", "used for image bundles"),
    ]
    for name, candidates, pkg, severity, why in wanted:
        found = [c for c in candidates if which(c)]
        if found:
            yield Check(name, "PASS", ", ".join(found))
        else:
            yield Check(name, severity, f"{' or '.join(candidates)} not found: {why}",  # type: ignore[arg-type]
                        APT_HINT.format(pkg=pkg))


CHECKS = [architecture, kvm, qemu, firecracker, devices, e2fsprogs, tools]
