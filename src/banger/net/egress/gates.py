"""The daemon's egress gates, one per running egress VM: prepared before launch (the firewall
file), opened after boot or a daemon restart, updated live, closed at stop."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from banger.errors import BangerError, InvalidArgument, Unavailable
from banger.net.egress import firewall
from banger.net.egress.gate import Denial, Gate, load_resolved, read_log, resolved_file
from banger.net.egress.resolver import upstream_server
from banger.net.egress.rules import Policy
from banger.runner import which

log = logging.getLogger("banger.net.egress")
FIREWALL_FILE = "egress.nft"


def check_supported(rules: Sequence[str], mode: str | None, nat: bool, vmm: str) -> None:
    """Refuse at create and `vm set` what egress rules cannot be enforced on."""
    if not rules:
        return
    if nat:
        raise InvalidArgument("--allow and --nat do not mix: --nat already allows everything; "
                              "drop one")
    if mode != "user":
        raise InvalidArgument("--allow is enforced in user-mode networking only for now; "
                              "add --net user")
    if vmm != "qemu":
        raise InvalidArgument(f"--allow needs the qemu VMM (this daemon uses {vmm})")
    for tool in ("nft", "slirp4netns", "nsenter"):
        if which(tool) is None:
            raise Unavailable(f"--allow needs {tool}: apt-get install "
                              f"{ {'nft': 'nftables', 'nsenter': 'util-linux'}.get(tool, tool)}")


class Gates:
    def __init__(self, upstream_dns: str) -> None:
        self.upstream = upstream_server(upstream_dns)
        self.gates: dict[str, Gate] = {}

    def prepare(self, vm_dir: Path, rules: Sequence[str]) -> str:
        """The firewall file QEMU's namespace loads before QEMU starts (a fresh start: names
        are resolved again)."""
        resolved_file(vm_dir).unlink(missing_ok=True)
        path = vm_dir / FIREWALL_FILE
        path.write_text(firewall.ruleset(Policy.of(rules), {}))
        return str(path)

    async def open(self, vm_id: str, vm_dir: Path, pid: int, rules: Sequence[str]) -> None:
        self.close(vm_id)
        gate = Gate(vm_dir, pid, Policy.of(rules), self.upstream)
        try:
            await gate.open()
        except BaseException:
            gate.close()
            raise
        self.gates[vm_id] = gate

    async def update(self, vm_id: str, rules: Sequence[str]) -> None:
        gate = self.gates.get(vm_id)
        if gate is not None:
            await gate.set_policy(Policy.of(rules))

    async def denied(self, vm_id: str, vm_dir: Path) -> list[Denial]:
        gate = self.gates.get(vm_id)
        if gate is not None:
            try:
                await gate.collect()
            except BangerError as exc:
                log.info("egress log of %s not read: %s", vm_id, exc.message)
        return read_log(vm_dir)

    def close(self, vm_id: str) -> None:
        gate = self.gates.pop(vm_id, None)
        if gate is not None:
            gate.close()

    def close_all(self) -> None:
        for vm_id in list(self.gates):
            self.close(vm_id)


__all__ = ["Gates", "check_supported", "load_resolved"]
