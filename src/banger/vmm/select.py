"""Pick the VMM backend from config: `auto` = firecracker when usable, else qemu."""

from __future__ import annotations

from banger.config import Config
from banger.errors import InvalidArgument
from banger.vmm.base import Backend


def select_backend(config: Config) -> Backend:
    from banger.vmm.qemu import QemuBackend

    if config.vmm == "firecracker":
        raise InvalidArgument("vmm = firecracker is not available yet; use vmm = qemu or auto")
    return QemuBackend()
