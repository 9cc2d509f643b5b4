"""A busybox initramfs (newc cpio, gzip) that loads the virtio modules and switch_roots.

The Debian cloud kernel builds virtio, virtio_blk, vsock & co. as modules, so the root disk
is invisible without an initramfs. Ours is tiny: busybox, those modules, modules.dep and
an /init script. It is written in Python so device nodes need no root privileges.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from banger.errors import OperationFailed
from banger.guest import GUEST_STAMP
from banger.runner import run, which

# Load order from HOST-NOTES (each module after what it needs), then fuse for virtiofs.
MODULES: tuple[str, ...] = (
    "virtio_ring", "virtio", "virtio_mmio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
    "virtio_pci", "virtio_blk", "failover", "net_failover", "virtio_net", "virtio_console",
    "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "virtio-rng",
    "fuse", "virtiofs",
)
DEFAULT_INIT = "/usr/local/lib/banger/init"
FALLBACK_INIT = "/sbin/init"
MODULE_LIST = "etc/banger/modules"
# Applets /init and a rescue shell need; linked to /bin/busybox inside the cpio.
APPLETS = (
    "sh", "mount", "umount", "insmod", "modprobe", "switch_root", "sleep", "usleep", "cat",
    "echo", "mkdir", "poweroff", "reboot", "grep", "findfs", "setsid", "cttyhack", "ls",
    "basename", "dmesg", "lsmod", "ps", "cp", "cmp", "chmod", "mv", "dirname",
)
# depmod writes a dozen index files; these are the ones modprobe/insmod users read.
KEEP_MODULE_FILES = ("modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin",
                     "modules.builtin", "modules.builtin.bin", "modules.order", "modules.softdep")

INIT_SCRIPT = r"""#!/bin/sh
# banger initramfs: load virtio modules, mount the root from the kernel command line and
# switch_root into banger's init wrapper (falling back to /sbin/init).
PATH=/bin:/sbin
export PATH
DEFAULT_INIT=@DEFAULT_INIT@
FALLBACK_INIT=@FALLBACK_INIT@
GUEST_STAMP=@GUEST_STAMP@

say() { echo "banger-initramfs: $*"; }

fail() {
    say "ERROR: $*"
    if grep -qw banger.shell /proc/cmdline 2>/dev/null; then
        say "starting a rescue shell (banger.shell is set); exit it to power off"
        setsid cttyhack sh
    else
        say "powering off in 5 s; add banger.shell to the kernel command line for a shell"
        sleep 5
    fi
    poweroff -f
    echo o > /proc/sysrq-trigger
    sleep 30
}

mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"

while read -r mod; do
    [ -f "$mod" ] || continue
    insmod "$mod" 2>/dev/null || say "could not load $(basename "$mod" .ko)"
done < /@MODULE_LIST@

root=""; fstype=""; flags=""; init=""
set -f
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root="${arg#root=}" ;;
        rootfstype=*) fstype="${arg#rootfstype=}" ;;
        rootflags=*) flags="${arg#rootflags=}" ;;
        init=*) init="${arg#init=}" ;;
    esac
done
set +f
[ -n "$root" ] || fail "no root= on the kernel command line"

find_root() {
    case "$root" in
        /dev/*) [ -b "$root" ] && echo "$root" ;;
        *=*) findfs "$root" 2>/dev/null ;;
        *) [ -b "/dev/$root" ] && echo "/dev/$root" ;;
    esac
}
dev=""
tries=0
while [ "$tries" -lt 50 ]; do
    dev=$(find_root)
    [ -n "$dev" ] && break
    usleep 100000
    tries=$((tries + 1))
done
[ -n "$dev" ] || fail "root device $root did not appear within 5 s (is the disk attached?)"

mount ${fstype:+-t "$fstype"} -o "rw${flags:+,$flags}" "$dev" /newroot \
    || fail "cannot mount $dev (type ${fstype:-auto}) on /newroot"

# The host appends banger's current guest files (agent, init wrapper) to this initramfs: put
# them into the root unless its stamp says it has them, so an upgraded banger needs no new image.
install_guest_files() {
    [ -r /banger-guest/files ] || return 0
    read -r want < /banger-guest/digest || return 0
    have=""
    [ -r "/newroot$GUEST_STAMP" ] && read -r have < "/newroot$GUEST_STAMP"
    [ "$have" = "$want" ] && return 0
    say "installing banger's guest files $want"
    ok=1
    while read -r mode path; do
        src="/banger-guest/root$path"
        dst="/newroot$path"
        cmp -s "$src" "$dst" 2>/dev/null && continue
        if ! { mkdir -p "$(dirname "$dst")" && cp "$src" "$dst.banger-new" \
            && chmod "$mode" "$dst.banger-new" && mv -f "$dst.banger-new" "$dst"; }; then
            say "could not install $path"
            ok=0
        fi
    done < /banger-guest/files
    # no stamp after a failure, so the next boot tries again
    [ "$ok" = 1 ] && echo "$want" > "/newroot$GUEST_STAMP"
}
install_guest_files

has_init() { [ -L "/newroot$1" ] || [ -x "/newroot$1" ]; }
init="${init:-$DEFAULT_INIT}"
if ! has_init "$init"; then
    say "$init is missing in the root; falling back to $FALLBACK_INIT"
    init="$FALLBACK_INIT"
    has_init "$init" || fail "no $init in the root filesystem on $dev"
fi

for d in dev proc sys; do
    if [ -d "/newroot/$d" ]; then
        mount --move "/$d" "/newroot/$d"
    else
        umount -l "/$d"
    fi
done
say "switching to $init"
exec switch_root /newroot "$init"
"""


def init_script() -> str:
    """The /init shell script, with banger's defaults filled in."""
    return (
        INIT_SCRIPT.replace("@DEFAULT_INIT@", DEFAULT_INIT)
        .replace("@FALLBACK_INIT@", FALLBACK_INIT)
        .replace("@MODULE_LIST@", MODULE_LIST)
        .replace("@GUEST_STAMP@", GUEST_STAMP)
    )


def module_key(name: str) -> str:
    """Module names treat '-' and '_' alike (virtio-rng == virtio_rng)."""
    return name.removesuffix(".ko").replace("-", "_")


def _sections(elf: bytes) -> dict[str, bytes]:
    """Section name -> contents of a little-endian ELF64 file (enough for .modinfo)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return {}
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    headers = []
    for i in range(shnum):
        base = shoff + i * shentsize
        name, _ = struct.unpack_from("<II", elf, base)
        offset, size = struct.unpack_from("<QQ", elf, base + 0x18)
        headers.append((name, offset, size))
    if not headers or shstrndx >= len(headers):
        return {}
    strtab = elf[headers[shstrndx][1] : headers[shstrndx][1] + headers[shstrndx][2]]
    out: dict[str, bytes] = {}
    for name, offset, size in headers:
        label = strtab[name : strtab.find(b"\x00", name)].decode("ascii", "replace")
        out[label] = elf[offset : offset + size]
    return out


def module_depends(ko: Path) -> list[str]:
    """The `depends=` of a .ko's .modinfo section, as module keys."""
    info = _sections(ko.read_bytes()).get(".modinfo", b"")
    for item in info.split(b"\x00"):
        if item.startswith(b"depends="):
            return [module_key(d) for d in item[8:].decode().split(",") if d]
    return []


def index_modules(moddir: Path) -> dict[str, Path]:
    """Module key -> path of every .ko under lib/modules/<version>."""
    return {module_key(p.name): p for p in sorted(moddir.rglob("*.ko"))}


def load_order(wanted: Iterable[str], available: dict[str, Path]) -> list[str]:
    """Wanted modules (missing ones dropped) plus their dependencies, each after its deps."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(key: str) -> None:
        if key in order or key in visiting or key not in available:
            return  # absent modules may be built in; /init skips them too
        visiting.add(key)
        for dep in module_depends(available[key]):
            visit(dep)
        order.append(key)

    for name in wanted:
        visit(module_key(name))
    return order


def python_modules_dep(moddir: Path) -> str:
    """modules.dep as depmod writes it: each module, then all it needs (nearest first)."""
    modules = index_modules(moddir)
    lines = []
    for key, path in modules.items():
        deps = [d for d in reversed(load_order([key], modules)) if d != key]
        rel = [modules[d].relative_to(moddir).as_posix() for d in deps]
        lines.append(f"{path.relative_to(moddir).as_posix()}: {' '.join(rel)}".rstrip())
    return "\n".join(lines) + "\n"


def write_modules_dep(root: Path, version: str) -> None:
    """modules.dep for root/lib/modules/<version>: depmod when installed, else Python."""
    moddir = root / "lib" / "modules" / version
    if which("depmod"):
        run(["depmod", "-b", root, version], what="depmod")
        for f in moddir.glob("modules.*"):
            if f.name not in KEEP_MODULE_FILES:
                f.unlink()
    else:
        (moddir / "modules.dep").write_text(python_modules_dep(moddir))


@dataclass(frozen=True)
class CpioEntry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _newc(entry: CpioEntry, ino: int) -> bytes:
    name = entry.name.encode() + b"\x00"
    fields = (ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, *entry.rdev, len(name), 0)
    head = b"070701" + b"".join(f"{v:08x}".encode() for v in fields) + name
    head += b"\x00" * (-len(head) % 4)
    return head + entry.data + b"\x00" * (-len(entry.data) % 4)


def cpio_bytes(entries: Iterable[CpioEntry]) -> bytes:
    """An uncompressed newc archive (what the kernel unpacks into its rootfs)."""
    parts = [_newc(e, i + 1) for i, e in enumerate(entries)]
    parts.append(_newc(CpioEntry("TRAILER!!!", 0), 0))
    return b"".join(parts)


def read_cpio(path: Path) -> dict[str, CpioEntry]:
    """Parse a (gzip-compressed) newc archive back into entries, for checks and tests."""
    raw = path.read_bytes()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    out: dict[str, CpioEntry] = {}
    pos = 0
    while pos + 110 <= len(data) and data[pos : pos + 6] == b"070701":
        f = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        name_end = pos + 110 + f[11]
        name = data[pos + 110 : name_end - 1].decode()
        start = name_end + (-name_end % 4)
        body = data[start : start + f[6]]
        pos = start + f[6] + (-(start + f[6]) % 4)
        if name == "TRAILER!!!":
            break
        out[name] = CpioEntry(name, f[1], body, (f[9], f[10]))
    return out


def _tree_entries(root: Path) -> list[CpioEntry]:
    entries = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            entries.append(CpioEntry(rel, stat.S_IFLNK | 0o777, str(p.readlink()).encode()))
        elif p.is_dir():
            entries.append(CpioEntry(rel, stat.S_IFDIR | 0o755))
        else:
            entries.append(CpioEntry(rel, stat.S_IFREG | (p.stat().st_mode & 0o755), p.read_bytes()))
    return entries


def _base_entries() -> list[CpioEntry]:
    dirs = ["bin", "sbin", "dev", "proc", "sys", "newroot", "etc", "etc/banger", "tmp"]
    entries = [CpioEntry(d, stat.S_IFDIR | 0o755) for d in dirs]
    # /dev/console must exist before /init runs, or the kernel gives init no stdio
    entries.append(CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(CpioEntry("dev/null", stat.S_IFCHR | 0o666, rdev=(1, 3)))
    entries += [CpioEntry(f"bin/{a}", stat.S_IFLNK | 0o777, b"busybox") for a in APPLETS]
    entries.append(CpioEntry("init", stat.S_IFREG | 0o755, init_script().encode()))
    return entries


def _stage_modules(tree: Path, moddir: Path, version: str, wanted: Iterable[str]) -> list[str]:
    available = index_modules(moddir)
    order = load_order(wanted, available)
    dest_root = tree / "lib" / "modules" / version
    for key in order:
        rel = available[key].relative_to(moddir)
        (dest_root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(available[key], dest_root / rel)
    for meta in ("modules.order", "modules.builtin"):
        if (moddir / meta).is_file():
            shutil.copyfile(moddir / meta, dest_root / meta)
    dest_root.mkdir(parents=True, exist_ok=True)
    write_modules_dep(tree, version)
    paths = [f"/lib/modules/{version}/{available[k].relative_to(moddir).as_posix()}" for k in order]
    (tree / MODULE_LIST).parent.mkdir(parents=True, exist_ok=True)
    (tree / MODULE_LIST).write_text("\n".join(paths) + "\n")
    return order


def build_initramfs(
    dest: Path,
    *,
    busybox: Path,
    moddir: Path,
    version: str,
    modules: Iterable[str] = MODULES,
) -> list[str]:
    """Write a gzip'd newc initramfs to dest; return the module keys it loads, in order.

    `moddir` is an unpacked lib/modules/<version> holding at least the wanted .ko files.
    """
    if not busybox.is_file():
        raise OperationFailed(f"busybox binary {busybox} is missing; pull busybox-static again")
    with tempfile.TemporaryDirectory(prefix="initramfs-", dir=dest.parent) as tmp:
        tree = Path(tmp)
        order = _stage_modules(tree, moddir, version, modules)
        entries = _base_entries()
        entries.append(CpioEntry("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()))
        seen = {e.name for e in entries}
        entries += [e for e in _tree_entries(tree) if e.name not in seen]
    blob = gzip.compress(cpio_bytes(entries), compresslevel=6, mtime=0)
    tmp_dest = dest.with_suffix(dest.suffix + ".tmp")
    tmp_dest.write_bytes(blob)
    tmp_dest.replace(dest)
    return order


__all__ = [
    "DEFAULT_INIT",
    "FALLBACK_INIT",
    "MODULES",
    "CpioEntry",
    "build_initramfs",
    "cpio_bytes",
    "index_modules",
    "init_script",
    "load_order",
    "module_depends",
    "module_key",
    "python_modules_dep",
    "read_cpio",
    "write_modules_dep",
]
