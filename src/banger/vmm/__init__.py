"""VM monitors: one backend interface, a qemu and a firecracker implementation."""
