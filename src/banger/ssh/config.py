"""`banger ssh-config`: a `Host *.vm` block, Included from ~/.ssh/config between markers."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

BEGIN = "# >>> banger ssh-config >>>"
END = "# <<< banger ssh-config <<<"


def host_block(key: Path, known_hosts: Path, banger: Sequence[str]) -> str:
    """banger: the command that runs the CLI (its ssh-proxy reaches the VM without DNS)."""
    proxy = shlex.join([*banger, "vm", "ssh-proxy"])
    return (f"Host *.vm\n"
            f"    User root\n"
            f"    ProxyCommand {_escape_percent(proxy)} '%h'\n"  # quoted: old ssh passes %h raw
            f"    IdentityFile {key}\n"
            f"    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {known_hosts}\n"
            f"    StrictHostKeyChecking accept-new\n")


def _escape_percent(command: str) -> str:
    return command.replace("%", "%%")  # ssh expands %-tokens in ProxyCommand


def _strip(text: str) -> str:
    lines, out, inside = text.splitlines(keepends=True), [], False
    for line in lines:
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif not inside:
            out.append(line)
    return "".join(out)


def install(user_config: Path, include_file: Path, block: str) -> bool:
    """Write the block file and put the Include first in ~/.ssh/config; False if unchanged."""
    include_file.parent.mkdir(parents=True, exist_ok=True)
    include_file.write_text(block)
    old = user_config.read_text() if user_config.exists() else ""
    # Include must come before any Host block to apply to every host pattern.
    new = f"{BEGIN}\nInclude {include_file}\n{END}\n" + _strip(old)
    if new == old:
        return False
    user_config.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    user_config.write_text(new)
    user_config.chmod(0o600)
    return True


def uninstall(user_config: Path, include_file: Path) -> bool:
    include_file.unlink(missing_ok=True)
    if not user_config.exists():
        return False
    old = user_config.read_text()
    new = _strip(old)
    if new != old:
        user_config.write_text(new)
    return new != old
