"""Checks of the host: CPU, KVM, VMM binaries, devices, tools."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterator
from pathlib import Path

from banger.config import Config
from banger.doctor.check import Check
from banger.errors import BangerError
from banger.paths import Paths
from banger.runner import run, which
from banger.vmm.accel import probe_kvm

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


def qemu(paths: Paths, config: Config) -> Iterator[Check]:
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils")):
        path = which(tool)
        if path is None:
            yield Check(tool, "FAIL", "not found", APT_HINT.format(pkg=pkg))
        else:
            yield Check(tool, "PASS", f"{_version([path, '--version']) or '?'} ({path})")


def vmm(paths: Paths, config: Config) -> Iterator[Check]:
    """Which backend `vmm = auto|qemu|firecracker` selects here, and why."""
    from banger.vmm.select import choose_vmm

    try:
        choice = choose_vmm(config)
    except BangerError as exc:
        yield Check("vmm", "FAIL", exc.message, "install what is missing or set vmm = auto")
        return
    yield Check("vmm", "PASS", f"{choice.name} ({choice.reason})")


def firecracker(paths: Paths, config: Config) -> Iterator[Check]:
    from banger.vmm.firecracker.version import find_binary, probe_binary

    wanted = config.vmm == "firecracker"
    probe = probe_binary(config)
    if probe.path is None:
        yield Check("firecracker", "FAIL" if wanted else "WARN",
                    f"{probe.reason} (the qemu backend is used)",
                    "install Firecracker >= 1.8.0 from its GitHub releases to use it")
    elif not probe.usable:
        yield Check("firecracker", "FAIL" if wanted else "WARN", probe.reason,
                    "install Firecracker >= 1.8.0")
    else:
        yield Check("firecracker", "PASS", f"{probe.version_text} ({probe.path})")
    jailer = find_binary(config.jailer_bin, "jailer")
    if jailer:
        yield Check("jailer", "PASS", f"{_version([jailer, '--version']) or '?'} ({jailer})")
    elif config.jailer_enabled:
        yield Check("jailer", "FAIL", "jailer_enabled = true but no jailer binary found",
                    "install the jailer shipped with Firecracker or set jailer_bin")
    else:
        yield Check("jailer", "PASS", "not used (jailer_enabled = false)")
    kvm_probe = probe_kvm()
    if kvm_probe.usable:
        yield Check("firecracker kvm", "PASS", "/dev/kvm usable by firecracker")
    else:
        yield Check("firecracker kvm", "FAIL" if wanted else "WARN",
                    f"firecracker needs usable KVM: {kvm_probe.reason}",
                    "run on a host with usable KVM (bare metal or nested virtualisation)")


def devices(paths: Paths, config: Config) -> Iterator[Check]:
    tun = Path("/dev/net/tun")
    if not tun.exists():
        yield Check("/dev/net/tun", "WARN", "missing: tap networking unavailable", "modprobe tun")
    elif not os.access(tun, os.R_OK | os.W_OK):
        yield Check("/dev/net/tun", "WARN", "not usable by you: user-mode --nat and --allow "
                    "(slirp4netns) and tap as a normal user fail", "chmod 0666 /dev/net/tun "
                    "(Debian's default)")
    else:
        yield Check("/dev/net/tun", "PASS", "present")


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
        ("bootstrap", ["mmdebstrap"], "mmdebstrap", "FAIL",
         "needed to build the default image"),
        ("firewall", ["nft", "iptables"], "nftables", "WARN", "needed for --nat"),
        ("slirp4netns", ["slirp4netns"], "slirp4netns", "WARN", "needed for --nat in user mode"),
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


CHECKS = [architecture, vmm, qemu, firecracker, devices, e2fsprogs, tools]
