"""Per-VM NAT in a banger-owned nftables table (iptables when nft is missing).

Rules carry the comment `banger:<vm id>:<owner uid>` so they can be found and removed by VM, and
only by the user whose VM it is (through the root helper); the table goes when its last VM rule
does. A base rule drops forwarding from the bridge for VMs without --nat.
"""

from __future__ import annotations

import logging

from banger.errors import OperationFailed
from banger.net.nft import INET_TABLE, deletions, drop_if_unused, in_netns, rules, run_script
from banger.runner import arun, which

log = logging.getLogger("banger.net.nat")
TABLE = INET_TABLE


def _tag(vm_id: str, owner: int) -> str:
    return f"banger:{vm_id}:{owner}"


async def enable(netns: str, bridge: str, vm_id: str, ip: str, owner: int) -> None:
    """MASQUERADE the VM's traffic leaving through anything but the bridge; allow forwarding."""
    await arun(in_netns(netns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]), what="sysctl")
    if not which("nft"):
        await _iptables_enable(netns, bridge, ip, _tag(vm_id, owner))
        return
    tag = _tag(vm_id, owner)
    await disable(netns, vm_id, owner)  # idempotent: never two copies
    await run_script(netns, f"""
table {TABLE} {{
  chain postrouting {{ type nat hook postrouting priority srcnat; }}
  chain forward {{ type filter hook forward priority filter; }}
}}
""")
    if not any(rule.comment == "banger:base" for rule in await rules(netns, TABLE)):
        await run_script(netns, f'add rule {TABLE} forward iifname "{bridge}" oifname != '
                                f'"{bridge}" drop comment "banger:base"\n')
    await run_script(netns, f"""
add rule {TABLE} postrouting ip saddr {ip} oifname != "{bridge}" masquerade comment "{tag}"
insert rule {TABLE} forward iifname "{bridge}" ip saddr {ip} accept comment "{tag}"
insert rule {TABLE} forward oifname "{bridge}" ip daddr {ip} ct state established,related \
  accept comment "{tag}"
""")
    log.info("NAT on for %s (%s)", vm_id, ip)


async def disable(netns: str, vm_id: str, owner: int) -> None:
    """Remove the VM's rules; drop the table when no VM rule is left. Safe when absent."""
    if not which("nft"):
        await _iptables_disable(netns, _tag(vm_id, owner))
        return
    mine = [rule for rule in await rules(netns, TABLE) if rule.comment == _tag(vm_id, owner)]
    if mine:
        await run_script(netns, deletions(mine))
    await drop_if_unused(netns, TABLE)


# ---- iptables fallback (hosts without nft)

async def _iptables_enable(netns: str, bridge: str, ip: str, comment: str) -> None:
    await _iptables_disable(netns, comment)
    tag = ["-m", "comment", "--comment", comment]
    for rule in (["-t", "nat", "-A", "POSTROUTING", "-s", ip, "!", "-o", bridge, "-j", "MASQUERADE"],
                 ["-I", "FORWARD", "-i", bridge, "-s", ip, "-j", "ACCEPT"],
                 ["-I", "FORWARD", "-o", bridge, "-d", ip, "-m", "conntrack", "--ctstate",
                  "ESTABLISHED,RELATED", "-j", "ACCEPT"]):
        await arun(in_netns(netns, ["iptables", *rule, *tag]), what="iptables")


async def _iptables_lines(netns: str, comment: str) -> list[tuple[str, str]]:
    found = []
    for table in ("nat", "filter"):
        res = await arun(in_netns(netns, ["iptables", "-t", table, "-S"]), what="iptables")
        found += [(table, line) for line in res.stdout.splitlines()
                  if _iptables_comment(line) == comment]
    return found


def _iptables_comment(line: str) -> str | None:
    """The rule's comment, exact: `banger:X:1` must not match `banger:X:1001`."""
    args = line.split()
    if "--comment" not in args[:-1]:
        return None
    return args[args.index("--comment") + 1].strip('"')


async def _iptables_disable(netns: str, comment: str) -> None:
    for table, line in await _iptables_lines(netns, comment):
        args = line.split()
        if args[0] != "-A":
            continue
        args = [a.strip('"') for a in args]
        try:
            await arun(in_netns(netns, ["iptables", "-t", table, "-D", *args[1:]]), what="iptables")
        except OperationFailed as exc:
            log.warning("could not remove %s: %s", line, exc.message)
