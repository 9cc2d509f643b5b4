"""banger's ed25519 key (made on first use), guests' host keys and the known_hosts file."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from banger.runner import arun, run

log = logging.getLogger("banger.ssh")


def ensure_key(key: Path) -> str:
    """The public key text; generates the key pair with ssh-keygen the first time."""
    pub = key.with_name(key.name + ".pub")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "banger", "-f", key],
            what="ssh-keygen")
        log.info("generated ssh key %s", key)
    return pub.read_text().strip()


async def new_host_key(comment: str) -> dict[str, str]:
    """A fresh ed25519 host key pair for a guest, made on the host where ssh-keygen is fast."""
    with tempfile.TemporaryDirectory(prefix="banger-hostkey-") as tmp:
        key = Path(tmp) / "key"
        await arun(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key],
                   what="ssh-keygen")
        return {"private": key.read_text(), "public": key.with_suffix(".pub").read_text()}


def known_hosts(state_dir: Path) -> Path:
    return state_dir / "ssh" / "known_hosts"


def host_alias(vm_name: str) -> str:
    """known_hosts entries are keyed by `<name>.vm`, whatever address ssh connects to."""
    return f"{vm_name}.vm"


def forget_host(state_dir: Path, vm_name: str) -> None:
    """Drop the VM's host keys (on delete): a new VM with the same name is a new host."""
    file = known_hosts(state_dir)
    if file.exists():
        run(["ssh-keygen", "-q", "-R", host_alias(vm_name), "-f", file], check=False,
            what="ssh-keygen -R")
        file.with_name(file.name + ".old").unlink(missing_ok=True)


def ssh_options(key: Path, state_dir: Path, vm_name: str) -> list[str]:
    """Key only, banger's known_hosts, accept a new host key, refuse a changed one."""
    return ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no",
            "-o", f"UserKnownHostsFile={known_hosts(state_dir)}",
            "-o", "StrictHostKeyChecking=accept-new", "-o", "HashKnownHosts=no",
            "-o", f"HostKeyAlias={host_alias(vm_name)}", "-o", "LogLevel=ERROR"]
