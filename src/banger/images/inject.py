"""Put banger's guest files into a root filesystem tree, never writing outside it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from banger.durable import NEW_FILE
from banger.errors import InvalidArgument, OperationFailed
from banger.guest import GuestFile, files_digest, guest_files, stamp_file

MAX_LINKS = 40


def packaged_files() -> tuple[list[GuestFile], str]:
    """The packaged guest files and their digest (of this very read); clear error if missing."""
    try:
        files = guest_files()
        return files, files_digest(files)
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        msg = f"banger's guest files are incomplete ({exc}); reinstall banger"
        raise OperationFailed(msg) from exc


def resolve_in_root(root: Path, guest_path: str) -> Path:
    """Host path of the *parent* of `guest_path`, following symlinks as a chroot would."""
    parts = list(_components(guest_path))[:-1]
    current = PurePosixPath("/")
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            current = current.parent
            continue
        host = root / str(current / part).lstrip("/")
        if host.is_symlink():
            links += 1
            if links > MAX_LINKS:
                raise OperationFailed(f"too many symlinks resolving {guest_path} in the image")
            target = os.readlink(host)
            parts = list(_components(target)) + parts
            current = PurePosixPath("/") if target.startswith("/") else current
            continue
        current = current / part
    return root / str(current).lstrip("/")


def _components(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _check(f: GuestFile) -> None:
    if not f.path.startswith("/") or ".." in _components(f.path) or f.path.endswith("/"):
        raise InvalidArgument(f"guest file path {f.path!r} must be absolute and normalised")


def _make_dirs(root: Path, guest_dir: str) -> None:
    """Create missing directories one component at a time (0755), never through a symlink."""
    sofar = ""
    for part in _components(guest_dir):
        sofar += "/" + part
        host = resolve_in_root(root, sofar + "/x")
        if not host.exists():
            # parents: a dangling symlink may point at several missing dirs (all inside root)
            host.mkdir(mode=0o755, parents=True)
            os.chmod(host, 0o755)  # mkdir's mode is masked by the umask
        elif not host.is_dir():
            raise OperationFailed(f"{sofar} exists in the image but is not a directory")


def inject_file(root: Path, f: GuestFile) -> Path:
    """Write one file (replacing whatever is there, including a symlink) with its mode."""
    _check(f)
    parent_guest = str(PurePosixPath(f.path).parent)
    _make_dirs(root, parent_guest)
    parent = resolve_in_root(root, f.path)
    target = parent / PurePosixPath(f.path).name
    tmp = parent / f".banger-{secrets.token_hex(4)}"
    fd = os.open(tmp, NEW_FILE, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(f.data)
    os.chmod(tmp, f.mode)
    os.replace(tmp, target)
    return target


def inject_files(root: Path, files: Sequence[GuestFile]) -> list[Path]:
    """Inject every file and their stamp (the initramfs then skips its own install)."""
    return [inject_file(root, f) for f in [*files, stamp_file(files_digest(files))]]


SSH_HOSTKEYS_DROPIN = """\
# Managed by banger: every VM has its own host key (images are shared by clones). sshd waits
# until banger's agent has given the VM its identity: a template's clones get their own key
# before sshd ever starts. One ed25519 key: RSA keygen takes seconds under TCG.
[Service]
ExecStartPre=
ExecStartPre=-/usr/bin/timeout 60 /bin/sh -c 'until [ -e /run/banger/identity-ready ]; do sleep 0.1; done'
ExecStartPre=/bin/sh -c 'test -e /etc/ssh/ssh_host_ed25519_key || \\
  /usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
"""

FSTAB = """\
# Managed by banger: the initramfs mounts the root and banger's init wrapper
# mounts /proc, /sys, /dev, /run and /tmp. Add your own mounts below.
"""

RESOLV_CONF = """\
# Managed by banger: the agent writes the VM's resolvers here at boot.
"""

HOSTS = """\
127.0.0.1	localhost
127.0.1.1	banger
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
"""


def _write(root: Path, guest_path: str, text: str, mode: int = 0o644) -> None:
    inject_file(root, GuestFile(guest_path, text.encode(), mode))


def _replace_resolv_conf(root: Path) -> None:
    path = resolve_in_root(root, "/etc/resolv.conf") / "resolv.conf"
    if path.is_symlink():
        return  # systemd-resolved or similar manages it
    _write(root, "/etc/resolv.conf", RESOLV_CONF)


def prepare_guest(root: Path) -> None:
    """Make a tree a banger guest: fstab, hostname, machine-id, root's ssh dir, host keys."""
    _write(root, "/etc/fstab", FSTAB)
    _write(root, "/etc/hostname", "banger\n")
    _write(root, "/etc/hosts", HOSTS)
    # The bootstrap leaves the build host's resolvers here; they mean nothing in a VM.
    _replace_resolv_conf(root)
    # Empty machine-id: systemd generates a fresh one on each clone's first boot.
    _write(root, "/etc/machine-id", "", 0o444)
    dbus_id = resolve_in_root(root, "/var/lib/dbus/machine-id") / "machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")
    _make_dirs(root, "/root/.ssh")
    os.chmod(resolve_in_root(root, "/root/.ssh/x"), 0o700)
    _make_dirs(root, "/var/lib/banger")
    if (resolve_in_root(root, "/usr/sbin/sshd") / "sshd").exists():
        for key in (resolve_in_root(root, "/etc/ssh/x")).glob("ssh_host_*"):
            key.unlink()  # shared host keys would let one VM impersonate another
        _write(root, "/etc/systemd/system/ssh.service.d/banger-hostkeys.conf", SSH_HOSTKEYS_DROPIN)


__all__ = [
    "files_digest",
    "inject_file",
    "inject_files",
    "packaged_files",
    "prepare_guest",
    "resolve_in_root",
]
