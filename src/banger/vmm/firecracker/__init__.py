"""The Firecracker backend: REST API over a Unix socket, agent over hybrid vsock.

Verified against Firecracker's OpenAPI spec in tests; not booted in CI (no usable KVM there).
"""

from banger.vmm.firecracker.backend import FirecrackerBackend

__all__ = ["FirecrackerBackend"]
