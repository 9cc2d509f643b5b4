"""Pick the VMM backend from config: `auto` = firecracker when usable, else qemu. Says why."""

from __future__ import annotations

from dataclasses import dataclass

from banger.config import Config
from banger.errors import InvalidArgument
from banger.vmm.accel import KvmProbe, probe_kvm
from banger.vmm.base import Backend
from banger.vmm.firecracker.version import BinaryProbe, probe_binary


@dataclass(frozen=True)
class VmmChoice:
    name: str  # "qemu" | "firecracker"
    reason: str  # one line, shown by `banger doctor` and `banger vm show`
    binary: BinaryProbe | None = None


def choose_vmm(config: Config, kvm: KvmProbe | None = None,
               binary: BinaryProbe | None = None) -> VmmChoice:
    if config.vmm == "qemu":
        return VmmChoice("qemu", "vmm = qemu in config")
    binary = binary or probe_binary(config)
    kvm = kvm or probe_kvm()
    blockers = [text for ok, text in ((binary.usable, binary.reason),
                                      (kvm.usable, f"KVM unusable: {kvm.reason}")) if not ok]
    if config.vmm == "firecracker":
        if blockers:
            raise InvalidArgument(f"vmm = firecracker but {'; '.join(blockers)}; "
                                  "set vmm = auto or qemu")
        return VmmChoice("firecracker", f"vmm = firecracker in config ({binary.reason})", binary)
    if blockers:
        return VmmChoice("qemu", f"auto: qemu, because {'; '.join(blockers)}")
    return VmmChoice("firecracker", f"auto: {binary.reason} and KVM usable", binary)


def select_backend(config: Config) -> Backend:
    choice = choose_vmm(config)
    if choice.name == "firecracker":
        from banger.vmm.firecracker import FirecrackerBackend

        return FirecrackerBackend(config, choice.binary, choice.reason)
    from banger.vmm.qemu import QemuBackend

    return QemuBackend(choice.reason)
