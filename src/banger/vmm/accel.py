"""Is KVM usable? Probed, never assumed: a PVM host's /dev/kvm creates VMs that then hang."""

from __future__ import annotations

import fcntl
import grp
import os
from dataclasses import dataclass
from pathlib import Path

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12


@dataclass(frozen=True)
class KvmProbe:
    present: bool
    usable: bool
    reason: str


def _cpu_has_virt() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return " vmx" in flags or " svm" in flags


def probe_kvm(dev: Path = Path("/dev/kvm"), sys_module: Path = Path("/sys/module")) -> KvmProbe:
    if not dev.exists():
        return KvmProbe(False, False, "/dev/kvm is missing")
    if (sys_module / "kvm_pvm").exists():
        return KvmProbe(True, False, "KVM is PVM (runs only PVM-patched guest kernels)")
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return KvmProbe(True, False, f"cannot open /dev/kvm: {exc.strerror}")
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION) != KVM_API_VERSION:
            return KvmProbe(True, False, "unexpected KVM API version")
        vm_fd = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm_fd)
    except OSError as exc:
        return KvmProbe(True, False, f"KVM_CREATE_VM failed: {exc.strerror}")
    finally:
        os.close(fd)
    if not _cpu_has_virt():
        return KvmProbe(True, False, "the CPU shows no vmx/svm flag (nested KVM unavailable)")
    return KvmProbe(True, True, "KVM usable")


def kvm_access_fix(dev: Path = Path("/dev/kvm"), groups: list[int] | None = None) -> str | None:
    """After opening `dev` failed: the fix when its group may open it; None when no group helps."""
    try:
        st = dev.stat()
    except OSError:
        return None
    if st.st_mode & 0o060 != 0o060:
        return None
    if st.st_gid in (os.getgroups() if groups is None else groups):
        return "log in again (your kvm group membership is not active in this session)"
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"add yourself to the {group} group: sudo usermod -aG {group} $USER, then log in again"


def choose_accel(configured: str, probe: KvmProbe | None = None) -> str:
    """`auto` picks kvm only when the probe proves it usable; never a kvm:tcg fallback."""
    if configured in ("kvm", "tcg"):
        return configured
    probe = probe or probe_kvm()
    return "kvm" if probe.usable else "tcg"
