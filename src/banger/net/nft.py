"""banger's nftables tables on the host (root side: the root helper, or a root daemon): their
names, running a script in the bridge's namespace, and listing a table's tagged rules.

`inet banger` holds NAT and tap egress; `bridge banger` pins taps to their VMs (tappin.py) and
keeps egress VMs apart at layer 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from banger.runner import Result, arun

INET_TABLE = "inet banger"
BRIDGE_TABLE = "bridge banger"
BRIDGE_TABLE_DECLARATION = (f"table {BRIDGE_TABLE} {{\n"
                            "  chain pre { type filter hook prerouting priority -200; }\n"
                            "  chain between { type filter hook forward priority filter; }\n}\n")
ROOT = 0


@dataclass(frozen=True)
class TaggedRule:
    table: str
    chain: str
    handle: int
    comment: str


def in_netns(netns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


async def run_script(netns: str, script: str, *, check: bool = True) -> Result:
    """One nft transaction: all of the script happens, or none of it."""
    return await arun(in_netns(netns, ["nft", "-f", "-"]), input=script.encode(), check=check,
                      timeout=20, what="nft")


async def listing(netns: str, table: str) -> list[dict[str, object]] | None:
    """The table's items as nft lists them, without set elements; None when there is no table."""
    res = await arun(in_netns(netns, ["nft", "-t", "-j", "list", "table", *table.split()]),
                     check=False, timeout=20, what="nft")
    if not res.ok:
        return None
    items = json.loads(res.stdout).get("nftables", [])
    return [item for item in items if isinstance(item, dict)]


async def rules(netns: str, table: str) -> list[TaggedRule]:
    """Every rule of the table, with its comment ("" when it has none)."""
    return _rules_in(table, await listing(netns, table) or [])


def _rules_in(table: str, items: list[dict[str, object]]) -> list[TaggedRule]:
    found = []
    for item in items:
        rule = item.get("rule")
        if isinstance(rule, dict):
            found.append(TaggedRule(table, str(rule.get("chain")), int(rule.get("handle", -1)),
                                    str(rule.get("comment") or "")))
    return found


def deletions(found: list[TaggedRule]) -> str:
    return "".join(f"delete rule {r.table} {r.chain} handle {r.handle}\n" for r in found)


async def drop_if_unused(netns: str, table: str, keep: tuple[str, ...] = ("banger:base",)) -> None:
    """The table goes with its last rule and set (rules whose comment is in `keep` don't count)."""
    items = await listing(netns, table)
    if items is None or any("set" in item for item in items):
        return
    if all(rule.comment in keep for rule in _rules_in(table, items)):
        await run_script(netns, f"delete table {table}\n", check=False)
