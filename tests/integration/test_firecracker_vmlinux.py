"""The ELF vmlinux banger extracts from Debian's real kernel is what Firecracker's loader needs."""

from __future__ import annotations

import struct

import pytest

from tests.vmtest import ensure_artifacts, vm_lock

PT_LOAD = 1
EM_X86_64 = 0x3E
HIMEM_START = 0x100000  # Firecracker refuses kernels that load below 1 MiB


@pytest.mark.vm
def test_debian_vmlinux_is_a_bootable_elf() -> None:
    with vm_lock():  # may pull the cached kernel (the image is not needed here)
        kernel_dir = ensure_artifacts() / "state" / "kernels" / "debian-bookworm-cloud"
    elf = (kernel_dir / "vmlinux").read_bytes()
    bzimage = (kernel_dir / "vmlinuz").read_bytes()
    assert elf[:4] == b"\x7fELF"
    assert elf[4] == 2 and elf[5] == 1  # ELF64, little-endian
    e_type, e_machine = struct.unpack_from("<HH", elf, 16)
    assert (e_type, e_machine) == (2, EM_X86_64)  # ET_EXEC for x86-64
    e_entry, e_phoff = struct.unpack_from("<QQ", elf, 24)
    e_phentsize, e_phnum = struct.unpack_from("<HH", elf, 54)
    loads = []
    for i in range(e_phnum):
        p_type, _, _, _, p_paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, e_phoff + i * e_phentsize)
        if p_type == PT_LOAD:
            loads.append((p_paddr, p_filesz))
    assert loads and min(p for p, _ in loads) >= HIMEM_START
    # Firecracker loads segments at their physical addresses and jumps to e_entry: it must
    # point into a loaded segment, at the kernel's preferred load address (startup_64).
    assert any(p <= e_entry < p + size for p, size in loads)
    pref_address = struct.unpack_from("<Q", bzimage, 0x258)[0]
    assert e_entry == pref_address == min(p for p, _ in loads)
