"""The QEMU backend: microvm machine, QMP control, virtio-serial agent channel."""

from banger.vmm.qemu.backend import QemuBackend

__all__ = ["QemuBackend"]
