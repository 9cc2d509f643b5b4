"""An agent from the host cache into a guest, over `vm cp`'s path (no guest network needed).

Guest layout: /usr/local/lib/banger-agents/<name>-<version>/ (the cached files and the
registry integrity in `.banger-integrity`) and /usr/local/bin/<name> linking to the binary.
A guest already holding the same integrity is not sent the files again: what the guest says is
a hint that saves a copy, never a decision about the host (a lying guest runs its own binary).
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import msgspec

from banger.agent.client import AgentClient
from banger.agents.cache import MARKER, AgentManifest, ship_dir_name
from banger.errors import OperationFailed
from banger.progress import Progress
from banger.textsafe import one_line
from banger.transfer import copy

GUEST_BASE = "/usr/local/lib/banger-agents"
GUEST_BIN = "/usr/local/bin"
INCOMING = f"{GUEST_BASE}/.incoming"
ANSWER_CAP = 4096
_LOCKS: dict[str, asyncio.Lock] = {}


class Installed(msgspec.Struct):
    vm: str
    name: str
    version: str
    path: str  # the binary in the guest
    shipped: bool  # False: the guest had this version already
    acp: list[str] | None  # argv after the binary for ACP; None: the agent has none
    ui: list[str]  # argv after the binary for its terminal UI


async def _sh(agent: AgentClient, script: str, *args: str) -> str:
    proc = await agent.exec(["sh", "-c", script, "sh", *args], timeout=60)
    out, err, status = await proc.communicate(max_output=ANSWER_CAP)
    if status.code != 0:
        detail = one_line(err.decode(errors="replace"), 300) or f"exit status {status.code}"
        raise OperationFailed(f"installing the agent in the guest failed: {detail}")
    return out.decode(errors="replace")


def guest_dir(m: AgentManifest) -> str:
    return f"{GUEST_BASE}/{ship_dir_name(m.name, m.version)}"


async def ship(agent: AgentClient, vm: str, m: AgentManifest, progress: Progress,
               disk: Path | None = None) -> bool:
    """Make the guest hold m's files; False when it said it had them already. `disk`: the
    VM's payload disk, `vm cp`'s fast way in."""
    dest = guest_dir(m)
    have = await _sh(agent, 'cat -- "$1/' + MARKER + '" 2>/dev/null || true', dest)
    if have.strip() == m.integrity:
        progress("install", 1.0, f"{m.name} {m.version} is in the guest already")
        return False
    await _sh(agent, 'rm -rf -- "$1" && mkdir -p -- "$1"', INCOMING)
    total = max(sum(f.size for f in m.files), 1)
    shown = -1

    def report(done: int, _total: int | None) -> None:
        nonlocal shown
        if done * 10 // total != shown:  # a tenth at a time: an editor's log keeps ~10 lines
            shown = done * 10 // total
            progress("ship", min(done / total, 0.99),
                     f"{done >> 20}/{total >> 20} MiB of {m.name} {m.version} into {vm}")

    await copy.push(agent, vm, m.dir, INCOMING, report, disk)
    name = ship_dir_name(m.name, m.version)
    await _sh(agent, 'set -e; rm -rf -- "$2"; mv -- "$1/$3" "$2"; rmdir -- "$1"; '
                     'chown -R 0:0 -- "$2"', INCOMING, dest, name)
    return True


async def install(agent: AgentClient, vm: str, m: AgentManifest, acp: list[str] | None,
                  ui: list[str], progress: Progress, disk: Path | None = None) -> Installed:
    async with _LOCKS.setdefault(vm, asyncio.Lock()):  # two installs must not share .incoming
        shipped = await ship(agent, vm, m, progress, disk)
    binary = f"{guest_dir(m)}/{m.binary}"
    # The link on PATH names the version last installed; `vm acp` runs the full path anyway.
    await _sh(agent, 'mkdir -p -- "$2" && ln -sfn -- "$1" "$2/$3"', binary, GUEST_BIN, m.name)
    progress("install", 1.0, f"{m.name} {m.version} at {shlex.quote(binary)}")
    return Installed(vm, m.name, m.version, binary, shipped, acp, ui)


__all__ = ["GUEST_BASE", "Installed", "guest_dir", "install", "ship"]
